"""The offline-RL dataset format: generation (rolling out ``tasks.rl.controllers`` on three
classic-control environments and two small ones of ``tasks.rl.envs``), checking, storage, loading, and
the reference scores that normalise returns. numpy and gymnasium only (no torch, no network): every
dataset is generated here, deterministically. Without gymnasium, importing it raises
``tasks.rl._gym``'s DatasetError: the tasks import it only when they set up or roll out.

Environments (``ENVS``): CartPole-v1 (2 actions), Pendulum-v1 (torque in [-2, 2]),
MountainCarContinuous-v0 (force in [-1, 1]), and, registered with gymnasium by ``tasks.rl.envs``
(imported here), KeyToDoor-v0 (4 moves; the Decision Transformer paper's credit-assignment task: the
key picked up in the first room pays at the door 5-19 steps later) and LuckyGamble-v0 (safe +1 or a
zero-mean gamble; return-conditioning on luck), each with an ``expert``, a ``medium`` and a ``random``
behaviour policy (``tasks.rl.controllers.CONTROLLERS``).

Datasets: ``make_dataset(env_id, quality, seed=0, episodes=None)`` with quality ``expert``,
``medium``, ``random`` or ``mixed`` (``MIXED_FRACTIONS`` of the episodes come from random, medium and
expert, in a shuffled order), and, for CartPole and Pendulum (``qualities(env_id)``), ``replay``: the
buffer of a learning agent, as D4RL's medium-replay is SAC's (``replay_rollouts``: the
cross-entropy method over the parameters of ``tasks.rl.controllers.FAMILIES``, every episode of its
first ``episodes / REPLAY_POPULATION`` iterations; by default until its mean return first reaches 90%
of the way from the random policy's to the medium controller's). ``episodes=None`` takes
``DEFAULT_EPISODES`` (about 20k-60k steps per dataset for the classic-control environments; a few
hundred to 2000 short episodes, at most 20 steps each, for KeyToDoor and LuckyGamble). A dataset is a
dict of flat numpy arrays in D4RL/Minari style, N steps and E episodes:

=====================  ================  =============================================================
key                    shape, dtype      meaning
=====================  ================  =============================================================
observations           (N, obs_dim) f32  the observation the action was taken in
actions                (N, act_dim) f32  continuous environments; ``(N,) int64`` for discrete ones
rewards                (N,) f32
next_observations      (N, obs_dim) f32  the observation after the step
terminals              (N,) bool         true termination (pole fell, goal reached)
timeouts               (N,) bool         truncation at the time limit (never together with terminals)
episode_starts         (N,) bool         the first step of each episode
timesteps              (N,) int64        step index within its episode (0, 1, ...)
policies               (N,) int8         behaviour of the step: index into ``POLICY_NAMES`` (random,
                                         medium, expert, learner: the replay learner's episodes)
episode_returns        (E,) f64          undiscounted return of each episode (the env's own sum)
episode_lengths        (E,) int64
episode_policies       (E,) int8
env_id, quality, seed  0-d str/str/int64 what the dataset is
=====================  ================  =============================================================

Every episode ends with exactly one of ``terminals`` / ``timeouts`` True, and no step before its end has
either; so episodes are also recoverable from ``terminals | timeouts``.

Determinism: the episode reset seeds, the policy's generator (the replay learner's draws too) and the
mixed schedule all come from one
``np.random.SeedSequence([seed, crc32(env_id), crc32(quality)])``; the global RNGs are never touched.
The controllers use hard-coded gains, so a machine with or without scipy makes the same data.

On disk (``save_dataset`` / ``load_dataset`` / ``load_or_make``), format version ``FORMAT_VERSION``:
``<name>.npz`` written by ``np.savez_compressed`` (no object arrays: it loads with
``allow_pickle=False``) and a sidecar ``<name>.json`` with env_id, quality, seed, episodes, steps,
return mean/std/min/max, per-policy episode counts, the arrays' dtypes and shapes, and the SHA-256 of
the ``.npz``. Both are written atomically (a temporary file in the same folder, then ``os.replace``).
``load_or_make(data_dir, env_id, quality, seed)`` caches under
``data_dir/rl/<env_id>-<quality>-seed<seed>.npz`` and regenerates, with a warning, a cache it cannot
trust (unreadable npz, missing or mismatched JSON, wrong checksum, inconsistent arrays).

Scores: ``reference_scores(env_id)`` = mean returns of the random and the expert policy over
evaluation episodes (cached in memory); ``normalized_score(env_id, score)`` =
``100 * (score - random) / (expert - random)`` as in D4RL.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import secrets
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from . import envs  # noqa: F401 - registers KeyToDoor-v0 and LuckyGamble-v0 with gymnasium
from ._gym import require_gym
from .controllers import CONTROLLERS, FAMILIES, Policy

gym = require_gym()  # this module is imported only where an RL task makes or scores its data

FORMAT_VERSION = 1

Dataset = dict[str, np.ndarray]

# ----------------------------------------------------------------------------------------------
# environments
# ----------------------------------------------------------------------------------------------

ENVS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(
        discrete=True, act_dim=2, obs_dim=4, action_low=None, action_high=None, max_episode_steps=500,
        return_scale=500.0,  # returns 0..500 -> returns-to-go in 0..1
        target_return=500.0),  # the expert scores 500 (the maximum) every episode
    "Pendulum-v1": dict(
        discrete=False, act_dim=1, obs_dim=3, action_low=-2.0, action_high=2.0, max_episode_steps=200,
        return_scale=1000.0,  # returns about -1900..0 -> returns-to-go in about -1.9..0
        target_return=-150.0),  # the expert averages -130 to -150 over random starts (each 0 to -365)
    "MountainCarContinuous-v0": dict(
        discrete=False, act_dim=1, obs_dim=2, action_low=-1.0, action_high=1.0, max_episode_steps=999,
        return_scale=100.0,  # returns about -100..100
        target_return=92.0),  # the expert: 100 for the goal minus 0.1 per full-force step (~80 steps)
    "KeyToDoor-v0": dict(
        discrete=True, act_dim=4, obs_dim=11, action_low=None, action_high=None,
        max_episode_steps=envs.KEY_TO_DOOR_STEPS,  # 20 = 8 + 4 + 8: a K = 20 context holds an episode
        return_scale=1.0,  # returns 0 or 1
        target_return=1.0),  # the expert fetches the key and opens the door every episode
    "LuckyGamble-v0": dict(
        discrete=True, act_dim=2, obs_dim=1, action_low=None, action_high=None,
        max_episode_steps=envs.LUCKY_GAMBLE_STEPS,  # 10
        return_scale=10.0,  # returns -10..40, mostly 0..15
        target_return=10.0,  # the expert plays safe: 10 exactly, the best expected return
        # The evaluation asks for the 90th percentile of the data's returns (11 on gamble-random): above
        # the 10 that skill guarantees, a return that only luck produced in the data (Paster et al. 2022)
        # and the return of the top 10% that %BC clones.
        target_quantile=0.9),
}

QUALITIES = ("expert", "medium", "mixed", "random")  # every environment has these
REPLAY = "replay"  # also, where ``tasks.rl.controllers.FAMILIES`` has a family for the environment
POLICY_NAMES = ("random", "medium", "expert", "learner")  # the codes stored in ``policies``: 0, 1, 2, 3
MIXED_FRACTIONS = {"random": 0.4, "medium": 0.5, "expert": 0.1}  # of the episodes of ``mixed``
# The replay learner: the cross-entropy method, REPLAY_POPULATION candidates an iteration, one episode
# each, the REPLAY_ELITE best refit the Gaussian; its exploration decays by REPLAY_DECAY an iteration.
REPLAY_POPULATION, REPLAY_ELITE, REPLAY_DECAY = 20, 4, 0.9

# Episodes per dataset: about 30k steps each (CartPole random episodes last ~22 steps, MountainCar
# random ones 999; Pendulum's always 200).
DEFAULT_EPISODES: dict[str, dict[str, int]] = {
    # replay: REPLAY_POPULATION x the iterations until the learner's mean return first reaches 90% of
    # the way from the random policy's to the medium controller's (tests/test_rl_data.py checks it)
    "CartPole-v1": {"expert": 60, "medium": 150, "mixed": 200, "random": 1000, "replay": 160},
    "Pendulum-v1": {"expert": 150, "medium": 150, "mixed": 150, "random": 150, "replay": 140},
    "MountainCarContinuous-v0": {"expert": 400, "medium": 75, "mixed": 50, "random": 30},
    # the small environments: 10k random-walk episodes on key-to-door (the DT paper's larger dataset),
    # 2000 random gamble episodes, a few hundred of the others; each takes about a second or less
    "KeyToDoor-v0": {"expert": 300, "medium": 300, "mixed": 500, "random": 10000},
    "LuckyGamble-v0": {"expert": 300, "medium": 300, "mixed": 500, "random": 2000},
}


def make_env(env_id: str) -> gym.Env:
    """``gym.make(env_id)`` with its standard time limit, for a known ``env_id``."""
    _check_env(env_id)
    return gym.make(env_id)


def _check_env(env_id: str) -> None:
    if env_id not in ENVS:
        raise ValueError(f"unknown environment {env_id!r}; known: {', '.join(ENVS)}")


def qualities(env_id: str) -> tuple[str, ...]:
    """The dataset qualities of ``env_id``: ``QUALITIES``, and ``replay`` where it has a family."""
    _check_env(env_id)
    return QUALITIES + ((REPLAY,) if env_id in FAMILIES else ())


def _check_quality(quality: str, env_id: str) -> None:
    if quality not in qualities(env_id):
        raise ValueError(f"unknown dataset quality {quality!r} for {env_id}; known: {', '.join(qualities(env_id))}")


# ----------------------------------------------------------------------------------------------
# rollouts and datasets
# ----------------------------------------------------------------------------------------------

def _seed_sequence(seed: int, *names: str) -> np.random.SeedSequence:
    """A seed sequence for ``seed`` and some names (crc32: the same in every process)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    return np.random.SeedSequence([int(seed), *(zlib.crc32(name.encode()) for name in names)])


def _episode_seeds(seq: np.random.SeedSequence, episodes: int) -> list[int]:
    return [int(s) for s in seq.generate_state(episodes, dtype=np.uint32)]


def _rollouts(env_id: str, policies: list[Policy], codes: list[int], reset_seeds: list[int],
              rng: np.random.Generator) -> Dataset:
    """Run one episode per policy ``fn(obs, rng)``, resetting with the matching seed; ``codes`` are the
    episodes' ``POLICY_NAMES`` indices. The flat arrays of the dataset (without its metadata)."""
    spec = ENVS[env_id]
    env = make_env(env_id)
    obs_list, act_list, rew_list, next_list, term_list, tout_list = [], [], [], [], [], []
    ep_returns, ep_lengths = [], []
    try:
        for policy, reset_seed in zip(policies, reset_seeds):
            obs, _ = env.reset(seed=reset_seed)
            episode_return, length = 0.0, 0
            while True:
                action = policy(obs, rng)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                obs_list.append(obs)
                act_list.append(action)
                rew_list.append(reward)
                next_list.append(next_obs)
                term_list.append(bool(terminated))
                tout_list.append(bool(truncated) and not terminated)
                episode_return += float(reward)
                length += 1
                if terminated or truncated:
                    break
                obs = next_obs
            ep_returns.append(episode_return)
            ep_lengths.append(length)
    finally:
        env.close()
    lengths = np.asarray(ep_lengths, dtype=np.int64)
    n = int(lengths.sum())
    starts = np.zeros(n, dtype=bool)
    starts[np.cumsum(lengths) - lengths] = True
    codes = np.asarray(codes, dtype=np.int8)
    obs_dim = spec["obs_dim"]
    return {
        "observations": np.asarray(obs_list, dtype=np.float32).reshape(n, obs_dim),
        "actions": (np.asarray(act_list, dtype=np.int64).reshape(n) if spec["discrete"]
                    else np.asarray(act_list, dtype=np.float32).reshape(n, spec["act_dim"])),
        "rewards": np.asarray(rew_list, dtype=np.float32).reshape(n),
        "next_observations": np.asarray(next_list, dtype=np.float32).reshape(n, obs_dim),
        "terminals": np.asarray(term_list, dtype=bool).reshape(n),
        "timeouts": np.asarray(tout_list, dtype=bool).reshape(n),
        "episode_starts": starts,
        "timesteps": (np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)),
        "policies": np.repeat(codes, lengths),
        "episode_returns": np.asarray(ep_returns, dtype=np.float64),
        "episode_lengths": lengths,
        "episode_policies": codes,
    }


def _explore(policy: Policy, random_policy: Policy, epsilon: float) -> Policy:
    """``policy``, but a ``random_policy`` action with probability ``epsilon`` at each step."""
    if epsilon <= 0.0:
        return policy
    return lambda obs, rng: random_policy(obs, rng) if rng.random() < epsilon else policy(obs, rng)


def replay_rollouts(env_id: str, episodes: int, reset_seeds: list[int], rng: np.random.Generator) -> Dataset:
    """The buffer of a learning agent, D4RL's medium-replay in miniature: the cross-entropy method over
    the parameters of the environment's controller family (``tasks.rl.controllers.FAMILIES``), every
    episode of every iteration kept. Each iteration draws ``REPLAY_POPULATION`` parameter vectors from
    a Gaussian (the family's start), plays each for one episode with epsilon-random exploration, and
    refits the Gaussian (mean and std) to the ``REPLAY_ELITE`` best; epsilon decays by
    ``REPLAY_DECAY``. Episode ``i`` comes from iteration ``i // REPLAY_POPULATION``. With the default
    number of episodes it stops at the first iteration whose mean return is about the medium
    controller's: many mediocre episodes, a few good, none from the expert."""
    family = FAMILIES[env_id]
    mean, std = np.array(family.mean, dtype=np.float64), np.array(family.std, dtype=np.float64)
    parts, epsilon = [], family.epsilon
    for first in range(0, episodes, REPLAY_POPULATION):
        n = min(REPLAY_POPULATION, episodes - first)
        params = mean + std * rng.standard_normal((n, len(mean)))
        policies = [_explore(family.make(p), CONTROLLERS[env_id]["random"], epsilon) for p in params]
        part = _rollouts(env_id, policies, [POLICY_NAMES.index("learner")] * n, reset_seeds[first:first + n], rng)
        elite = params[np.argsort(part["episode_returns"], kind="stable")[-REPLAY_ELITE:]]
        mean, std, epsilon = elite.mean(0), elite.std(0), epsilon * REPLAY_DECAY
        parts.append(part)
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def mixed_schedule(episodes: int, rng: np.random.Generator) -> list[str]:
    """The behaviour policy of each episode of a ``mixed`` dataset: ``MIXED_FRACTIONS`` of
    ``episodes`` (rounded half up; at least one expert and one random episode), shuffled."""
    if episodes < 3:
        raise ValueError(f"a mixed dataset needs at least 3 episodes, not {episodes}")
    n_expert = max(1, int(MIXED_FRACTIONS["expert"] * episodes + 0.5))
    n_random = max(1, int(MIXED_FRACTIONS["random"] * episodes + 0.5))
    names = ["random"] * n_random + ["medium"] * (episodes - n_random - n_expert) + ["expert"] * n_expert
    return [names[i] for i in rng.permutation(episodes)]


def default_episodes(env_id: str, quality: str) -> int:
    """``DEFAULT_EPISODES[env_id][quality]``, after checking both names."""
    _check_env(env_id)
    _check_quality(quality, env_id)
    return DEFAULT_EPISODES[env_id][quality]


def make_dataset(env_id: str, quality: str, seed: int = 0, episodes: int | None = None) -> Dataset:
    """A dataset of ``episodes`` episodes (default ``DEFAULT_EPISODES``) of the ``quality`` behaviour
    on ``env_id``; see the module docstring for its arrays. Same arguments, same arrays."""
    default = default_episodes(env_id, quality)  # checks both names
    n = default if episodes is None else int(episodes)
    if n < 1:
        raise ValueError(f"episodes must be at least 1, not {episodes!r}")
    reset_seq, policy_seq, schedule_seq = _seed_sequence(seed, env_id, quality).spawn(3)
    reset_seeds, rng = _episode_seeds(reset_seq, n), np.random.default_rng(policy_seq)
    if quality == REPLAY:
        data = replay_rollouts(env_id, n, reset_seeds, rng)
    else:
        behaviour = (mixed_schedule(n, np.random.default_rng(schedule_seq)) if quality == "mixed"
                     else [quality] * n)
        data = _rollouts(env_id, [CONTROLLERS[env_id][name] for name in behaviour],
                         [POLICY_NAMES.index(name) for name in behaviour], reset_seeds, rng)
    data["env_id"] = np.array(env_id)
    data["quality"] = np.array(quality)
    data["seed"] = np.array(seed, dtype=np.int64)
    return data


def episode_bounds(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)``: episode ``i`` is the steps ``starts[i]:ends[i]``."""
    ends = np.cumsum(data["episode_lengths"])
    return ends - data["episode_lengths"], ends


def check_dataset(data: Dataset) -> None:
    """Raise ``ValueError`` unless ``data`` is a well-formed dataset: every array present with its
    dtype and a consistent length, each episode ending with exactly one of terminal/timeout and
    none before, starts/timesteps/policies consistent with the episode arrays, and each episode's
    return equal to the sum of its float32 rewards (to float32 precision)."""
    required = {"observations": np.float32, "rewards": np.float32, "next_observations": np.float32,
                "terminals": np.bool_, "timeouts": np.bool_, "episode_starts": np.bool_,
                "timesteps": np.int64, "policies": np.int8, "episode_returns": np.float64,
                "episode_lengths": np.int64, "episode_policies": np.int8, "env_id": np.str_,
                "quality": np.str_, "seed": np.int64}
    for key, dtype in required.items():
        if key not in data:
            raise ValueError(f"dataset lacks {key!r}")
        if data[key].dtype.type is not dtype:
            raise ValueError(f"{key} has dtype {data[key].dtype}, expected {np.dtype(dtype)}")
    env_id = str(data["env_id"])
    if env_id not in ENVS:
        raise ValueError(f"unknown environment {env_id!r}")
    spec = ENVS[env_id]
    n, e = len(data["rewards"]), len(data["episode_lengths"])
    act_shape = (n,) if spec["discrete"] else (n, spec["act_dim"])
    act_dtype = np.int64 if spec["discrete"] else np.float32
    shapes = {"observations": (n, spec["obs_dim"]), "next_observations": (n, spec["obs_dim"]),
              "actions": act_shape, "terminals": (n,), "timeouts": (n,), "episode_starts": (n,),
              "timesteps": (n,), "policies": (n,), "episode_returns": (e,), "episode_policies": (e,)}
    for key, shape in shapes.items():
        if key not in data or data[key].shape != shape:
            raise ValueError(f"{key} has shape {getattr(data.get(key), 'shape', None)}, expected {shape}")
    if data["actions"].dtype.type is not act_dtype:
        raise ValueError(f"actions have dtype {data['actions'].dtype}, expected {np.dtype(act_dtype)}")
    lengths = data["episode_lengths"]
    if e == 0 or (lengths < 1).any() or int(lengths.sum()) != n:
        raise ValueError("episode_lengths do not cover the steps")
    starts, ends = episode_bounds(data)
    done = data["terminals"] | data["timeouts"]
    if (data["terminals"] & data["timeouts"]).any():
        raise ValueError("a step is both terminal and timeout")
    if not np.array_equal(np.flatnonzero(done), ends - 1):
        raise ValueError("episodes do not end exactly at their terminal/timeout steps")
    if not np.array_equal(np.flatnonzero(data["episode_starts"]), starts):
        raise ValueError("episode_starts disagree with episode_lengths")
    if not np.array_equal(data["timesteps"], np.arange(n) - np.repeat(starts, lengths)):
        raise ValueError("timesteps do not count from 0 in each episode")
    if not np.array_equal(data["policies"], np.repeat(data["episode_policies"], lengths)):
        raise ValueError("policies disagree with episode_policies")
    if ((data["episode_policies"] < 0) | (data["episode_policies"] >= len(POLICY_NAMES))).any():
        raise ValueError("unknown policy code")
    sums = np.add.reduceat(data["rewards"].astype(np.float64), starts)
    if not np.allclose(sums, data["episode_returns"], rtol=1e-5, atol=1e-3):
        raise ValueError("episode_returns are not the sums of the rewards")


def summary(data: Dataset) -> dict[str, Any]:
    """What the JSON sidecar says about a dataset (without the file checksum)."""
    returns = data["episode_returns"]
    counts = np.bincount(data["episode_policies"].astype(np.int64), minlength=len(POLICY_NAMES))
    return {
        "format": "attention-zoo offline-RL dataset",
        "format_version": FORMAT_VERSION,
        "env_id": str(data["env_id"]) if "env_id" in data else None,
        "quality": str(data["quality"]) if "quality" in data else None,
        "seed": int(data["seed"]) if "seed" in data else None,
        "episodes": int(len(returns)),
        "steps": int(len(data["rewards"])),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "policy_names": list(POLICY_NAMES),
        "policy_episodes": {name: int(c) for name, c in zip(POLICY_NAMES, counts)},
        "arrays": {key: {"dtype": str(value.dtype), "shape": list(value.shape)} for key, value in data.items()},
        "gymnasium_version": gym.__version__,
    }


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------

def _atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file next to ``path``, then ``os.replace`` it onto ``path``. The
    file is created as ``open`` would (0666 less the umask, e.g. 0644), not 0600 as ``mkstemp``'s are,
    so that a --data-dir shared between users stays readable by all of them."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _npz_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a dataset file: ``x.npz`` -> ``x.json``."""
    return _npz_path(path).with_suffix(".json")


def save_dataset(path: str | os.PathLike, data: Dataset) -> Path:
    """Write ``data`` to ``path`` (``.npz`` appended if missing; folders created) and its JSON sidecar,
    each atomically; returns the ``.npz`` path. Object arrays are refused (the format has no pickles)."""
    path = _npz_path(path)
    for key, value in data.items():
        if np.asarray(value).dtype.hasobject:
            raise ValueError(f"{key} is an object array; the format stores no pickles")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **data)
    payload = buffer.getvalue()
    meta = summary(data)
    meta["npz_file"] = path.name
    meta["npz_sha256"] = hashlib.sha256(payload).hexdigest()
    _atomic_write(path, payload)
    _atomic_write(sidecar_path(path), (json.dumps(meta, indent=2) + "\n").encode())
    return path


def load_dataset(path: str | os.PathLike) -> Dataset:
    """The arrays of a ``.npz`` dataset file (``allow_pickle=False``), fully read into memory."""
    with np.load(_npz_path(path), allow_pickle=False) as f:
        return {key: f[key] for key in f.files}


def load_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of a dataset file, as a dict."""
    return json.loads(sidecar_path(path).read_text())


def dataset_path(data_dir: str | os.PathLike, env_id: str, quality: str, seed: int = 0,
                 episodes: int | None = None) -> Path:
    """``data_dir/rl/<env_id>-<quality>-seed<seed>.npz`` (``...-ep<episodes>.npz`` for a
    non-default number of episodes)."""
    name = f"{env_id}-{quality}-seed{seed}"
    if episodes is not None and episodes != default_episodes(env_id, quality):
        name += f"-ep{episodes}"
    return Path(data_dir) / "rl" / f"{name}.npz"


def _load_cached(path: Path, expected: dict[str, Any]) -> Dataset:
    """The cached dataset at ``path`` if its sidecar matches ``expected`` and the file its checksum;
    raises otherwise."""
    meta = load_sidecar(path)
    if not isinstance(meta, dict):
        raise ValueError("the JSON sidecar is not an object")
    for key, value in expected.items():
        if meta.get(key) != value:
            raise ValueError(f"the JSON sidecar has {key}={meta.get(key)!r}, expected {value!r}")
    if hashlib.sha256(path.read_bytes()).hexdigest() != meta.get("npz_sha256"):
        raise ValueError("the .npz does not match the checksum in its JSON sidecar")
    data = load_dataset(path)
    check_dataset(data)
    found = {"env_id": str(data["env_id"]), "quality": str(data["quality"]), "seed": int(data["seed"]),
             "episodes": len(data["episode_returns"]), "steps": len(data["rewards"])}
    for key, value in found.items():
        if meta.get(key) != value:
            raise ValueError(f"the .npz has {key}={value!r} but its JSON sidecar {meta.get(key)!r}")
    return data


def load_or_make(data_dir: str | os.PathLike, env_id: str, quality: str, seed: int = 0,
                 episodes: int | None = None) -> Dataset:
    """The dataset ``make_dataset(env_id, quality, seed, episodes)``, cached at ``dataset_path(...)``.

    A cache whose files are both absent is made silently. One that cannot be trusted (an
    unreadable or inconsistent ``.npz``, a missing, unparsable or mismatched JSON sidecar, a wrong
    checksum) is regenerated with a ``UserWarning``. If the cache cannot be written, the dataset is
    returned anyway, with a warning.
    """
    default = default_episodes(env_id, quality)  # checks both names
    n = default if episodes is None else int(episodes)
    path = dataset_path(data_dir, env_id, quality, seed, n)
    if path.exists() or sidecar_path(path).exists():
        expected = {"format_version": FORMAT_VERSION, "env_id": env_id, "quality": quality,
                    "seed": int(seed), "episodes": n}
        try:
            return _load_cached(path, expected)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the cache, remake it
            warnings.warn(f"offline-RL dataset cache {path} is unusable ({type(exc).__name__}: {exc}); "
                          "regenerating it", stacklevel=2)
    data = make_dataset(env_id, quality, seed, n)
    try:
        save_dataset(path, data)
    except OSError as exc:
        warnings.warn(f"could not write the offline-RL dataset cache {path}: {exc}", stacklevel=2)
    return data


# ----------------------------------------------------------------------------------------------
# evaluation and reference scores
# ----------------------------------------------------------------------------------------------

def evaluate_policy(env_id: str, policy: Policy, episodes: int = 10, seed: int = 0) -> np.ndarray:
    """The returns (float64, one per episode) of ``policy(obs, rng)`` on ``env_id``. The reset seeds
    and the generator come from ``seed`` (and not from the policy), so different policies
    evaluated with the same ``seed`` face the same starts."""
    _check_env(env_id)
    reset_seq, policy_seq = _seed_sequence(seed, env_id, "evaluate").spawn(2)
    rng = np.random.default_rng(policy_seq)
    env = make_env(env_id)
    try:
        returns = [episode_return(env, policy, rng, reset_seed) for reset_seed in _episode_seeds(reset_seq, episodes)]
    finally:
        env.close()
    return np.asarray(returns, dtype=np.float64)


def episode_return(env: gym.Env, policy: Policy, rng: np.random.Generator, reset_seed: int,
                   max_steps: int | None = None) -> float:
    """Play one episode of ``policy(obs, rng)`` from ``env.reset(seed=reset_seed)``; its return.
    It ends at termination, truncation, or after ``max_steps`` steps."""
    obs, _ = env.reset(seed=reset_seed)
    total, steps = 0.0, 0
    while max_steps is None or steps < max_steps:
        obs, reward, terminated, truncated, _ = env.step(policy(obs, rng))
        total += float(reward)
        steps += 1
        if terminated or truncated:
            break
    return total


@functools.lru_cache(maxsize=None)
def _reference_scores(env_id: str, episodes: int, seed: int) -> tuple[float, float]:
    controllers = CONTROLLERS[env_id]
    return (float(evaluate_policy(env_id, controllers["random"], episodes, seed).mean()),
            float(evaluate_policy(env_id, controllers["expert"], episodes, seed).mean()))


def reference_scores(env_id: str, episodes: int = 100, seed: int = 0) -> dict[str, float]:
    """``{"random": ..., "expert": ...}``: the mean returns of the random and the expert policy over
    ``episodes`` evaluation episodes (``evaluate_policy``); computed once per arguments and process."""
    _check_env(env_id)
    random_score, expert_score = _reference_scores(env_id, int(episodes), int(seed))
    return {"random": random_score, "expert": expert_score}


def normalized_score(env_id: str, score: float, episodes: int = 100, seed: int = 0) -> float:
    """D4RL's normalisation: ``100 * (score - random) / (expert - random)`` (``reference_scores``);
    0 is the random policy, 100 the expert."""
    ref = reference_scores(env_id, episodes, seed)
    return 100.0 * (score - ref["random"]) / (ref["expert"] - ref["random"])
