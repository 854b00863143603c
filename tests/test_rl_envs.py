"""Tests of the two small environments of tasks/rl/envs.py (KeyToDoor-v0, LuckyGamble-v0), their
controllers in tasks/rl/controllers.py and their datasets in tasks/rl/dataset.py. A few seconds in all.

The key-to-door rules are checked from the observations the environment returns (positions decoded
from the scaled coordinates), not from its private state.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from test_rl_data import assert_same  # noqa: E402

from tasks.rl import controllers as ctl  # noqa: E402
from tasks.rl import dataset as rd  # noqa: E402
from tasks.rl import envs  # noqa: E402

NEW_ENVS = ("KeyToDoor-v0", "LuckyGamble-v0")
G = envs.KEY_TO_DOOR_GRID
L1, L2, L3 = envs.KEY_STEPS, envs.DISTRACTOR_STEPS, envs.DOOR_STEPS
T = envs.KEY_TO_DOOR_STEPS
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


def cell(obs: np.ndarray, at: int = 3) -> tuple[int, int]:
    """A (row, col) cell decoded from the scaled pair ``obs[at:at + 2]``."""
    return int(round(float(obs[at]) * (G - 1))), int(round(float(obs[at + 1]) * (G - 1)))


def phase(obs: np.ndarray) -> int:
    one_hot = obs[0:3]
    assert sorted(one_hot.tolist()) == [0.0, 0.0, 1.0]
    return int(np.argmax(one_hot))


def toward(src: tuple[int, int], dst: tuple[int, int]) -> int:
    if dst[0] != src[0]:
        return UP if dst[0] < src[0] else DOWN
    return LEFT if dst[1] < src[1] else RIGHT


def play(env: gym.Env, seed: int, actions) -> list[tuple]:
    """``(obs, reward, terminated, truncated, info)`` after reset (reward None) and after each action;
    ``actions`` is a list or a function ``obs -> action``; stops at the end of the episode."""
    obs, info = env.reset(seed=seed)
    out = [(obs, None, False, False, info)]
    for i in range(T + 5):
        action = actions(obs) if callable(actions) else actions[i] if i < len(actions) else UP
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return out


# ----------------------------------------------------------------------------------------------
# registration, spaces, determinism
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", NEW_ENVS)
def test_registered_and_spaces_agree_with_envs(env_id):
    spec = rd.ENVS[env_id]
    assert env_id in gym.envs.registry and env_id in ctl.CONTROLLERS and env_id in rd.DEFAULT_EPISODES
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's env checker finds nothing to complain about
        envs.register_envs()  # idempotent: no "overriding environment" warning
        env = gym.make(env_id)
        obs, _ = env.reset(seed=0)
        env.step(0)
    assert gym.envs.registry[env_id].entry_point.startswith("tasks.rl.envs:")
    assert env.spec.max_episode_steps == spec["max_episode_steps"]
    assert spec["max_episode_steps"] == {"KeyToDoor-v0": 20, "LuckyGamble-v0": 10}[env_id]
    assert isinstance(env.observation_space, gym.spaces.Box)
    assert env.observation_space.dtype == np.float32 and env.observation_space.shape == (spec["obs_dim"],)
    assert obs.dtype == np.float32 and obs.shape == (spec["obs_dim"],) and env.observation_space.contains(obs)
    assert isinstance(env.action_space, gym.spaces.Discrete) and spec["discrete"]
    assert env.action_space.n == spec["act_dim"]
    assert spec["action_low"] is None and spec["action_high"] is None
    assert spec["target_return"] == spec["return_scale"] == {"KeyToDoor-v0": 1.0, "LuckyGamble-v0": 10.0}[env_id]
    env.close()


@pytest.mark.parametrize("env_id", NEW_ENVS)
def test_seeded_rollouts_are_deterministic(env_id):
    n_actions = rd.ENVS[env_id]["act_dim"]
    actions = np.random.default_rng(7).integers(n_actions, size=T).tolist()

    def rollout(seed):
        env = gym.make(env_id)
        steps = play(env, seed, actions)
        env.close()
        return ([s[0] for s in steps], [s[1:4] for s in steps])

    first, again = rollout(11), rollout(11)
    assert len(first[0]) == len(again[0])
    assert all(np.array_equal(a, b) for a, b in zip(first[0], again[0])) and first[1] == again[1]
    # other seeds: other layouts (KeyToDoor) or other gamble outcomes (LuckyGamble)
    others = [rollout(seed) for seed in range(12, 20)]
    assert any(len(o[0]) != len(first[0]) or o[1] != first[1]
               or not all(np.array_equal(a, b) for a, b in zip(o[0], first[0])) for o in others)


# ----------------------------------------------------------------------------------------------
# KeyToDoor-v0 rules
# ----------------------------------------------------------------------------------------------

def test_reset_layout():
    env = envs.KeyToDoorEnv()
    starts, keys = set(), set()
    for seed in range(300):
        obs, info = env.reset(seed=seed)
        assert phase(obs) == 0 and obs[5] == 1.0 and obs[10] == 0.0
        assert (obs[8:10] == 0).all() and info == {"phase": 0, "has_key": False}
        assert cell(obs) != cell(obs, 6)  # the key is on another cell than the agent
        starts.add(cell(obs))
        keys.add(cell(obs, 6))
    everywhere = {(r, c) for r in range(G) for c in range(G)}
    assert starts == keys == everywhere


def test_key_pickup_and_moves():
    env = envs.KeyToDoorEnv()
    for seed in range(100):  # a key at most 2 steps away, so that 3 steps of phase 1 are left after it
        obs, _ = env.reset(seed=seed)
        key, pos = cell(obs, 6), cell(obs)
        if abs(key[0] - pos[0]) + abs(key[1] - pos[1]) <= 2:
            break
    for _ in range(2):
        action = toward(pos, key)
        obs, reward, terminated, truncated, info = env.step(action)
        d_row, d_col = envs.MOVES[action]
        assert cell(obs) == (pos[0] + d_row, pos[1] + d_col)  # one cell, in the direction asked
        assert reward == 0.0 and not terminated and not truncated
        pos = cell(obs)
        if pos == key:
            break
        assert obs[5] == 1.0 and cell(obs, 6) == key and not info["has_key"]
    assert pos == key and info["has_key"]
    assert obs[5] == 0.0 and (obs[6:8] == 0).all()  # the key has disappeared
    away, back = (UP, DOWN) if key[0] > 0 else (DOWN, UP)
    obs, *_ = env.step(away)
    assert cell(obs) != key and obs[5] == 0.0
    obs, reward, *_ = env.step(back)
    assert phase(obs) == 0 and cell(obs) == key and obs[5] == 0.0 and reward == 0.0  # it stays gone


def test_wall_moves_stay_put():
    env = envs.KeyToDoorEnv()
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        for _ in range(L1 - 1):  # up and left into the corner (0, 0), then into its walls
            row, col = cell(obs)
            obs, *_ = env.step(UP if row > 0 else LEFT)
            assert cell(obs) in {(max(row - 1, 0), col), (row, max(col - 1, 0))}
        assert cell(obs) == (0, 0)
        obs, *_ = env.step(UP)  # the last step of phase 1 already moves to the next room; use phase 2
        while True:  # up to the top wall: at most 2 moves and a bump, within the 4 steps of phase 2
            before = cell(obs)
            obs, *_ = env.step(UP)
            assert phase(obs) == 1
            if cell(obs) == before:
                break  # against the wall: stays put
            assert cell(obs) == (before[0] - 1, before[1])
        assert cell(obs)[0] == 0


def test_phases_truncation_and_no_key_information():
    """Always "up": the phases change at t = L1 and L1 + L2, and the episode is truncated at T unless
    the door is straight above the door-room start."""
    env = gym.make("KeyToDoor-v0")
    truncated_seeds = []
    for seed in range(40):
        steps = play(env, seed, [UP] * T)
        for t, (obs, reward, terminated, truncated, info) in enumerate(steps):
            assert obs[10] == np.float32(t / T)
            assert phase(obs) == (0 if t < L1 else 1 if t < L1 + L2 else 2)
            if t >= L1:
                assert (obs[5:8] == 0).all()  # no key information after the first room
            if t == L1 + L2:
                assert cell(obs, 8) != cell(obs)  # the door is on another cell than the agent
            if phase(obs) < 2:
                assert (obs[8:10] == 0).all()  # no door outside the door room
            if t < len(steps) - 1:
                assert not terminated and not truncated and reward in (None, 0.0)
        obs, reward, terminated, truncated, info = steps[-1]
        if truncated:
            assert len(steps) - 1 == T and not terminated and reward == 0.0
            truncated_seeds.append(seed)
        else:
            assert terminated and cell(obs) == cell(obs, 8)  # on the door
            assert reward == float(info["has_key"])
    assert len(truncated_seeds) > 10
    # the environment itself stops too (not only gymnasium's TimeLimit wrapper)
    raw = envs.KeyToDoorEnv()
    steps = play(raw, truncated_seeds[0], [UP] * T)
    assert len(steps) - 1 == T and steps[-1][3] and not steps[-1][2]
    with pytest.raises(RuntimeError):
        raw.step(UP)


def _avoiding_seed() -> int:
    """A seed whose key is not straight above the start (so "up" x L1 never picks it up)."""
    env = envs.KeyToDoorEnv()
    for seed in range(100):
        obs, _ = env.reset(seed=seed)
        (row, col), key = cell(obs), cell(obs, 6)
        if not (key[1] == col and key[0] < row):
            return seed
    raise AssertionError("no seed found")


def test_door_pays_only_with_the_key_and_later_phases_cannot_tell():
    seed = _avoiding_seed()
    expert = ctl.CONTROLLERS["KeyToDoor-v0"]["expert"]

    def with_key(obs):
        return expert(obs, None)

    def without_key(obs):
        return UP if phase(obs) < 2 else expert(obs, None)

    env = gym.make("KeyToDoor-v0")
    got, missed = play(env, seed, with_key), play(env, seed, without_key)
    assert got[L1][4]["has_key"] and not missed[L1][4]["has_key"]
    # door: terminates, with reward 1 (key) or 0 (no key); no other reward
    for steps, reward in ((got, 1.0), (missed, 0.0)):
        assert steps[-1][2] and not steps[-1][3] and steps[-1][1] == reward
        assert all(s[1] == 0.0 for s in steps[1:-1])
        assert L1 + L2 < len(steps) - 1 <= T
    # from the distractor room on, the two episodes look exactly alike: same observations
    assert len(got) == len(missed)
    for (obs_a, *_), (obs_b, *_) in zip(got[L1:], missed[L1:]):
        assert np.array_equal(obs_a, obs_b)


def test_expert_always_succeeds_by_shortest_paths():
    data = rd.make_dataset("KeyToDoor-v0", "expert", seed=1, episodes=300)
    assert (data["episode_returns"] == 1.0).all() and data["terminals"].sum() == 300
    starts, ends = rd.episode_bounds(data)
    obs, nxt = data["observations"], data["next_observations"]
    for s, e in zip(starts, ends):
        first = obs[s]
        key_distance = sum(abs(a - b) for a, b in zip(cell(first), cell(first, 6)))
        picked = np.flatnonzero((obs[s:e, 5] == 1.0) & (nxt[s:e, 5] == 0.0) & (obs[s:e, 0] == 1.0))
        assert picked.tolist() == [key_distance - 1]  # the key after exactly its distance in steps
        door_room = s + L1 + L2
        door_distance = sum(abs(a - b) for a, b in zip(cell(obs[door_room]), cell(obs[door_room], 8)))
        assert e - door_room == door_distance  # and straight to the door


def test_random_walk_success_in_documented_band():
    exact = envs.key_to_door_random_success()
    assert exact == pytest.approx(0.4150153266 ** 2, abs=1e-9)
    assert 0.12 <= exact <= 0.22
    data = rd.make_dataset("KeyToDoor-v0", "random", seed=2, episodes=500)
    rate = data["episode_returns"].mean()
    assert 0.12 <= rate <= 0.22, rate
    assert set(np.unique(data["actions"])) == {0, 1, 2, 3}
    # the number in the module docstring: the default random dataset (10000 episodes, seed 0)
    default = rd.make_dataset("KeyToDoor-v0", "random")
    assert len(default["episode_returns"]) == 10000 and default["episode_returns"].sum() == 1745
    # medium: random in the first room only, so it succeeds iff it stumbles on the key (p = 0.415)
    medium = rd.make_dataset("KeyToDoor-v0", "medium", seed=2, episodes=400)
    assert medium["terminals"].sum() == 400  # it always reaches the door
    assert abs(medium["episode_returns"].mean() - envs.random_walk_hit_probability()) < 0.07


# ----------------------------------------------------------------------------------------------
# LuckyGamble-v0
# ----------------------------------------------------------------------------------------------

def test_gamble_rewards():
    env = gym.make("LuckyGamble-v0")
    safe, gamble = [], []
    for seed in range(300):
        obs, _ = env.reset(seed=seed)
        assert obs.tolist() == [0.0]
        for t in range(1, 11):
            action = (seed + t) % 2
            obs, reward, terminated, truncated, _ = env.step(action)
            (gamble if action else safe).append(reward)
            assert obs[0] == np.float32(t / 10) and not terminated
            assert truncated == (t == 10)
    safe, gamble = np.array(safe), np.array(gamble)
    assert (safe == 1.0).all()
    assert set(np.unique(gamble)) == {4.0, -1.0}
    assert abs(gamble.mean()) < 0.15 and abs((gamble == 4.0).mean() - 0.2) < 0.03
    with pytest.raises(RuntimeError):
        env.unwrapped.step(0)  # finished


def test_lucky_gamble_enumeration():
    dist = envs.lucky_gamble_random_returns()
    assert sum(p for p, _ in dist.values()) == 1
    assert sum(r * p for r, (p, _) in dist.items()) == 5  # the random policy's mean
    assert min(dist) == -10 and max(dist) == 40
    high = sum(p for r, (p, _) in dist.items() if r >= 10)
    high_gambled = sum(g for r, (_, g) in dist.items() if r >= 10)
    assert high == Fraction(217153373, 1250000000)  # 17.37%, as documented
    assert high - high_gambled == Fraction(1, 1024)  # only the all-safe episode gets there without gambling
    assert float(high_gambled / high) == pytest.approx(0.99438, abs=1e-5)
    assert envs.lucky_gamble_top_share_gambling() == 1
    # the data agree: a random dataset's high-return episodes gambled
    data = rd.make_dataset("LuckyGamble-v0", "random", seed=0, episodes=1000)
    returns = data["episode_returns"]
    assert abs((returns >= 10).mean() - float(high)) < 0.04
    starts, _ = rd.episode_bounds(data)
    gambles = np.add.reduceat(data["actions"], starts)
    assert (gambles[returns > 10] > 0).all()


# ----------------------------------------------------------------------------------------------
# datasets and reference scores
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", NEW_ENVS)
def test_datasets(env_id):
    spec = rd.ENVS[env_id]
    for quality in rd.QUALITIES:
        data = rd.make_dataset(env_id, quality, seed=0, episodes=40)
        rd.check_dataset(data)
        assert_same(data, rd.make_dataset(env_id, quality, seed=0, episodes=40))
        assert data["actions"].dtype == np.int64
        assert ((data["actions"] >= 0) & (data["actions"] < spec["act_dim"])).all()
        assert (data["episode_lengths"] <= spec["max_episode_steps"]).all()
        assert ((data["observations"] >= 0) & (data["observations"] <= 1)).all()
        summary = rd.summary(data)
        assert summary["env_id"] == env_id and summary["episodes"] == 40
    expert = rd.make_dataset(env_id, "expert", seed=0, episodes=20)["episode_returns"]
    assert (expert == spec["target_return"]).all()
    if env_id == "LuckyGamble-v0":
        means = {q: rd.make_dataset(env_id, q, seed=0, episodes=300)["episode_returns"].mean()
                 for q in ("expert", "medium", "random")}
        assert means["expert"] == 10.0
        assert abs(means["medium"] - 7.5) < 0.6 and abs(means["random"] - 5.0) < 0.8


def test_reference_scores():
    key_to_door = rd.reference_scores("KeyToDoor-v0")
    gamble = rd.reference_scores("LuckyGamble-v0")
    assert key_to_door["expert"] == 1.0 and 0.0 < key_to_door["random"] < 0.2
    assert gamble["expert"] == 10.0 and 4.0 < gamble["random"] < 6.0
    assert rd.normalized_score("LuckyGamble-v0", 10.0) == pytest.approx(100.0)
    assert rd.normalized_score("KeyToDoor-v0", key_to_door["random"]) == pytest.approx(0.0)
