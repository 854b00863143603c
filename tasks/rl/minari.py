"""Offline RL on Minari datasets (https://minari.farama.org): the D4RL successors, e.g.
``mujoco/hopper/medium-v0``, ``D4RL/pen/human-v2`` or any dataset made with ``minari.DataCollector``.

Optional dependency: ``pip install "attention-zoo[rl]"`` (``minari[hdf5]``). ``minari`` is imported
lazily, inside the methods, so importing ``tasks`` never needs it; without it, ``setup`` raises
``DatasetNotFoundError`` saying what to install. gymnasium too is only imported by the methods
(``tasks.rl._gym``).

Where the datasets live. Minari (0.5) resolves its root directory on every call, in
``minari.storage.datasets_root_dir.get_dataset_path``: the environment variable
``MINARI_DATASETS_PATH`` when it is set, else ``~/.minari/datasets``; a dataset ``ns/name-vN`` is the
folder ``<root>/ns/name-vN`` with its files under ``data/``. That variable is the only knob it offers
(``load_dataset``, ``download_dataset`` and ``DataCollector`` all read it). So this task honours
``--data-dir`` by setting ``MINARI_DATASETS_PATH=<data_dir>/minari`` *while it loads or downloads*,
unless the user has set the variable, which then wins; the variable is restored afterwards, so that
another task with another ``--data-dir`` in the same process is not mistaken for the user's choice.
Once loaded, a ``MinariDataset`` holds its absolute path and needs the variable no more.

``--download`` allows ``minari.download_dataset(id)`` (from the Farama servers) when the dataset is not
on disk; without it a missing dataset raises ``DatasetNotFoundError`` naming ``--download``.

The conversion to ``tasks.rl.dataset``'s flat format: an episode of T steps has T+1 observations; the
first T are the step's ``observations`` (the last one is the ``next_observations`` of the last step).
Observations of other spaces than a 1-D ``Box`` (``Dict``, ``Tuple``, ``Discrete``, n-D ``Box``) are
flattened exactly as ``gymnasium.spaces.flatten`` does, and the environment is then wrapped in
``FlattenObservation``. Actions: ``Discrete(n, start)`` -> int64 in ``0..n-1`` (the environment gets
``start`` added back); ``Box`` -> float32 ``(N, act_dim)`` (flattened; reshaped back for the
environment). ``terminals`` = the last step's termination, ``timeouts`` = the last step's truncation
when it did not terminate, and an episode with neither (a collection cut short) gets ``timeouts`` on
its last step; flags before an episode's last step are cleared, so that episodes are recovered
exactly from ``terminals | timeouts``.

The environment facts (``tasks.rl.dataset.ENVS``'s keys):

- ``discrete``/``act_dim``/``action_low``/``action_high`` from the dataset's action space (bounds as
  float32 arrays of shape ``(act_dim,)``; infinite bounds are replaced by the dataset's own action
  range in that dimension, so the [-1, 1] scaling stays finite);
- ``obs_dim`` from the (flattened) observation space;
- ``max_episode_steps`` from the evaluation environment's spec, else the longest episode;
- ``return_scale`` = min(1000, M) with M the largest |episode return| in the dataset (and
  |ref_max_score| when the dataset has one), at least 1: MuJoCo-sized returns (thousands) get the
  Decision Transformer paper's 1000, smaller ones are brought to returns-to-go within [-1, 1];
- ``target_return`` = the dataset's ``ref_max_score`` when it has one (D4RL's expert score), else
  its largest episode return.

Evaluation runs in ``dataset.recover_environment(eval_env=True)``: the evaluation environment when
the dataset's author named one (Minari computes ``ref_min_score``/``ref_max_score`` there), else the
environment that collected the data. Reference scores (normalised return 0 and 100): the dataset's
``ref_min_score``/``ref_max_score`` when Minari has them (D4RL convention), else the mean return of
the uniform random policy over ``random_episodes`` fixed-seed episodes and the dataset's largest
episode return as the "expert"; computed once per dataset and process.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import numpy as np

from ..base import DatasetError, DatasetNotFoundError, Option, files_fingerprint, register_task
from ._gym import require_gym
from .tasks import OfflineRLTask

if TYPE_CHECKING:
    import gymnasium as gym

DATASETS_PATH_VAR = "MINARI_DATASETS_PATH"
INSTALL_HINT = 'pip install "attention-zoo[rl]"'
DT_RETURN_SCALE = 1000.0  # the Decision Transformer's scale for the MuJoCo locomotion returns
REFERENCE_SEED = 40_000  # reset seeds of the random-policy reference episodes (apart from the eval seeds)

_REFERENCE_CACHE: dict[str, dict[str, float]] = {}  # data path -> {"random", "expert"}


def _import_minari() -> Any:
    try:
        import minari
    except ImportError as exc:
        raise DatasetNotFoundError(f"the minari tasks need minari ({exc}): {INSTALL_HINT}") from None
    return minari


@contextlib.contextmanager
def minari_datasets_path(data_dir: str | os.PathLike) -> Iterator[Path]:
    """While inside: ``MINARI_DATASETS_PATH`` = ``<data_dir>/minari`` unless the user set it (then it is
    left alone); yields the root Minari will use. The variable is restored on exit. Not thread-safe
    (it changes ``os.environ``), like Minari's own resolution."""
    if DATASETS_PATH_VAR in os.environ:  # the user's choice wins
        yield Path(os.environ[DATASETS_PATH_VAR]).expanduser()
        return
    root = Path(data_dir) / "minari"
    os.environ[DATASETS_PATH_VAR] = str(root)
    try:
        yield root
    finally:
        os.environ.pop(DATASETS_PATH_VAR, None)


# ------------------------------------------------------------------------------- space helpers

def _flat_dim(space: gym.Space) -> int:
    return int(require_gym().spaces.flatdim(space))


def _flatten_batch(space: gym.Space, value: Any, n: int) -> np.ndarray:
    """``n`` stacked values of ``space`` -> (n, flatdim) float32, as ``gym.spaces.flatten`` per row."""
    gym = require_gym()
    if isinstance(space, gym.spaces.Box):
        return np.asarray(value).reshape(n, -1).astype(np.float32)
    if isinstance(space, gym.spaces.Discrete):
        index = np.asarray(value).reshape(n).astype(np.int64) - int(space.start)
        out = np.zeros((n, int(space.n)), dtype=np.float32)
        out[np.arange(n), index] = 1
        return out
    if isinstance(space, gym.spaces.MultiBinary):
        return np.asarray(value).reshape(n, -1).astype(np.float32)
    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([_flatten_batch(sub, value[key], n) for key, sub in space.spaces.items()], axis=1)
    if isinstance(space, gym.spaces.Tuple):
        return np.concatenate([_flatten_batch(sub, value[i], n) for i, sub in enumerate(space.spaces)], axis=1)
    raise DatasetError(f"observation space {space} is not supported by the minari task")


def _is_flat_box(space: gym.Space) -> bool:
    return isinstance(space, require_gym().spaces.Box) and len(space.shape) == 1


def _take_first(value: Any, n: int) -> Any:
    """The first ``n`` entries of an episode's observations (an array, or a dict/tuple of them)."""
    if isinstance(value, dict):
        return {k: _take_first(v, n) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_take_first(v, n) for v in value)
    return value[:n]


# ------------------------------------------------------------------------------------ the task

@register_task
class MinariTask(OfflineRLTask):
    name = "minari"
    domain = "rl"
    offline = False
    default = False
    report = replace(OfflineRLTask.report, description=(
        "a Minari dataset (--task-opt dataset=ID, e.g. mujoco/hopper/medium-v0) rolled out in its "
        f"recovered environment; needs {INSTALL_HINT}, --download fetches it"))
    options = {"dataset": Option("mujoco/hopper/medium-v0", help="the Minari dataset id"), **OfflineRLTask.options}
    random_episodes: ClassVar[int] = 5  # random-policy episodes for the reference score (no ref_min_score)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dataset: Any = None  # the minari.MinariDataset, kept for make_env / reference_scores
        self._max_return: float | None = None

    # ------------------------------------------------------------------------------ data
    def _load_dataset(self) -> Any:
        minari = _import_minari()
        dataset_id = self.opts["dataset"]
        with minari_datasets_path(self.data_dir) as root:
            try:
                try:
                    return minari.load_dataset(dataset_id)
                except FileNotFoundError:
                    if not self.download:
                        raise DatasetNotFoundError(
                            f"Minari dataset {dataset_id!r} is not in {root}; pass --download to fetch it from the "
                            f"Farama servers (or set {DATASETS_PATH_VAR} to where it is)") from None
                try:
                    minari.download_dataset(dataset_id)
                except ValueError as exc:  # unknown id or version, incompatible with this minari
                    raise DatasetNotFoundError(f"cannot download Minari dataset {dataset_id!r}: {exc}") from None
                except Exception as exc:  # noqa: BLE001 - network, storage: report it as a dataset problem
                    raise DatasetError(f"downloading Minari dataset {dataset_id!r} into {root} failed: "
                                       f"{type(exc).__name__}: {exc}") from exc
                return minari.load_dataset(dataset_id)
            except DatasetError:
                raise
            except ImportError as exc:  # e.g. h5py missing for an hdf5 dataset
                raise DatasetNotFoundError(f"reading Minari dataset {dataset_id!r} needs {exc.name or exc}: "
                                           f"{INSTALL_HINT}") from None
            except Exception as exc:  # noqa: BLE001 - unreadable files, unsupported dataset version
                raise DatasetError(f"cannot read Minari dataset {dataset_id!r} from {root}: "
                                   f"{type(exc).__name__}: {exc}") from exc

    def load_data(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        dataset = self._load_dataset()
        gym = require_gym()
        obs_space, act_space = dataset.observation_space, dataset.action_space
        if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise DatasetError(f"Minari dataset {dataset.id!r}: action space {act_space} is not supported "
                               "(Discrete or Box only)")
        discrete = isinstance(act_space, gym.spaces.Discrete)
        obs_list, next_list, act_list, rew_list, term_list, tout_list, lengths, returns = ([] for _ in range(8))
        for episode in dataset.iterate_episodes():
            T = len(episode.rewards)
            if T == 0:
                continue
            observations = _flatten_batch(obs_space, _take_first(episode.observations, T + 1), T + 1)
            obs_list.append(observations[:T])
            next_list.append(observations[1:])
            if discrete:
                act_list.append(np.asarray(episode.actions).reshape(T).astype(np.int64) - int(act_space.start))
            else:
                act_list.append(np.asarray(episode.actions, dtype=np.float32).reshape(T, -1))
            rewards = np.asarray(episode.rewards, dtype=np.float64).reshape(T)
            rew_list.append(rewards.astype(np.float32))
            terminal, timeout = np.zeros(T, dtype=bool), np.zeros(T, dtype=bool)
            terminal[-1] = bool(np.asarray(episode.terminations).reshape(T)[-1])
            timeout[-1] = not terminal[-1]  # truncated, or cut short with neither flag
            term_list.append(terminal)
            tout_list.append(timeout)
            lengths.append(T)
            returns.append(float(rewards.sum()))
        if not lengths:
            raise DatasetError(f"Minari dataset {dataset.id!r} has no non-empty episode")
        lengths_arr = np.asarray(lengths, dtype=np.int64)
        starts = np.cumsum(lengths_arr) - lengths_arr
        n = int(lengths_arr.sum())
        episode_starts = np.zeros(n, dtype=bool)
        episode_starts[starts] = True
        data = {
            "observations": np.concatenate(obs_list),
            "next_observations": np.concatenate(next_list),
            "actions": np.concatenate(act_list),
            "rewards": np.concatenate(rew_list),
            "terminals": np.concatenate(term_list),
            "timeouts": np.concatenate(tout_list),
            "episode_starts": episode_starts,
            "timesteps": np.arange(n, dtype=np.int64) - np.repeat(starts, lengths_arr),
            "episode_returns": np.asarray(returns, dtype=np.float64),
            "episode_lengths": lengths_arr,
        }
        self.dataset = dataset
        self._max_return = float(data["episode_returns"].max())
        return data, self._env_info(dataset, data)

    def _env_info(self, dataset: Any, data: dict[str, np.ndarray]) -> dict[str, Any]:
        act_space = dataset.action_space
        meta = dataset.storage.metadata
        ref_max = meta.get("ref_max_score")
        gym = require_gym()
        spec = getattr(dataset, "_eval_env_spec", None) or dataset.env_spec
        max_steps = getattr(spec, "max_episode_steps", None) or int(data["episode_lengths"].max())
        info: dict[str, Any] = {"obs_dim": _flat_dim(dataset.observation_space), "max_episode_steps": int(max_steps)}
        if isinstance(act_space, gym.spaces.Discrete):
            info.update(discrete=True, act_dim=int(act_space.n), action_low=None, action_high=None)
        else:
            low = np.asarray(act_space.low, dtype=np.float32).reshape(-1).copy()
            high = np.asarray(act_space.high, dtype=np.float32).reshape(-1).copy()
            actions = data["actions"]
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                low = np.where(np.isfinite(low), low, actions.min(0)).astype(np.float32)
                high = np.where(np.isfinite(high), high, actions.max(0)).astype(np.float32)
            flat = high <= low  # a constant action dimension: any non-empty range keeps the scaling finite
            low, high = np.where(flat, low - 1, low).astype(np.float32), np.where(flat, high + 1, high).astype(np.float32)
            info.update(discrete=False, act_dim=int(low.size), action_low=low, action_high=high)
        magnitude = float(np.abs(data["episode_returns"]).max())
        if ref_max is not None:
            magnitude = max(magnitude, abs(float(ref_max)))
        info["return_scale"] = float(min(DT_RETURN_SCALE, max(magnitude, 1.0)))
        info["target_return"] = float(ref_max) if ref_max is not None else float(data["episode_returns"].max())
        return info

    def data_fingerprint(self) -> dict[str, Any]:
        """The dataset's files (under its ``storage.data_path``), besides the id among the options."""
        root = Path(self._dataset().storage.data_path)
        files = [p for p in root.rglob("*") if p.is_file()]
        return files_fingerprint(root, files)  # (not the generated datasets' recipe)

    # ------------------------------------------------------------------------------ environment
    def _dataset(self) -> Any:
        if self.dataset is None:
            self.setup()
        return self.dataset

    def _raw_env(self) -> gym.Env:
        dataset = self._dataset()
        try:
            return dataset.recover_environment(eval_env=True)
        except Exception as exc:  # noqa: BLE001 - e.g. mujoco not installed for a mujoco/* dataset
            raise DatasetError(f"cannot recreate the environment of Minari dataset {dataset.id!r}: "
                               f"{type(exc).__name__}: {exc}") from exc

    def make_env(self) -> gym.Env:
        from .wrappers import ActionAdapter
        gym = require_gym()
        dataset = self._dataset()
        env = self._raw_env()
        if not _is_flat_box(dataset.observation_space):
            env = gym.wrappers.FlattenObservation(env)
        space = dataset.action_space
        if (isinstance(space, gym.spaces.Discrete) and int(space.start) != 0) or \
                (isinstance(space, gym.spaces.Box) and len(space.shape) != 1):
            env = ActionAdapter(env, space)
        return env

    def reference_scores(self) -> dict[str, float]:
        dataset = self._dataset()
        key = str(dataset.storage.data_path)
        if key not in _REFERENCE_CACHE:
            meta = dataset.storage.metadata
            ref_min, ref_max = meta.get("ref_min_score"), meta.get("ref_max_score")
            if ref_min is not None and ref_max is not None:
                scores = {"random": float(ref_min), "expert": float(ref_max)}
            else:
                scores = {"random": self._random_return(), "expert": float(self._max_return)}
            if scores["expert"] - scores["random"] < 1e-8:
                warnings.warn(f"Minari dataset {dataset.id!r}: the expert reference return {scores['expert']} is not "
                              f"above the random one {scores['random']}", stacklevel=2)
                if math.isclose(scores["expert"], scores["random"], abs_tol=1e-8):  # would divide by zero
                    scores["expert"] = scores["random"] + 1.0
            _REFERENCE_CACHE[key] = scores
        return dict(_REFERENCE_CACHE[key])

    def _random_return(self) -> float:
        """Mean return of uniform random actions over ``random_episodes`` fixed-seed episodes."""
        from .dataset import episode_return
        env = self._raw_env()
        returns = []
        try:
            for i in range(self.random_episodes):
                env.action_space.seed(REFERENCE_SEED + i)
                returns.append(episode_return(env, lambda obs, rng: env.action_space.sample(), None, REFERENCE_SEED + i,
                                              max_steps=self.env_info["max_episode_steps"]))  # as long as a rollout
        finally:
            env.close()
        return float(np.mean(returns))
