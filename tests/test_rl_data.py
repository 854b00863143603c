"""Tests of the offline-RL dataset maker in tasks/rl/dataset.py and of
its behaviour controllers in tasks/rl/controllers.py.

Small datasets (a few episodes each) keep the whole file to a few seconds. Episode boundaries and
returns are re-derived here from ``terminals | timeouts`` and the rewards, not taken from the
module's own ``check_dataset``.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from tasks.rl import controllers as ctl  # noqa: E402
from tasks.rl import dataset as rd  # noqa: E402

ENV_IDS = ("CartPole-v1", "Pendulum-v1", "MountainCarContinuous-v0")
# Small episode counts per environment: a few thousand steps per dataset.
SMALL = {"CartPole-v1": 6, "Pendulum-v1": 5, "MountainCarContinuous-v0": 4}
STEP_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
             "episode_starts", "timesteps", "policies")


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key]), key


def test_envs_match_gymnasium():
    # the classic-control environments tested here, and tasks/rl/envs.py's own (tests/test_rl_envs.py)
    all_ids = set(ENV_IDS) | {"KeyToDoor-v0", "LuckyGamble-v0"}
    assert set(rd.ENVS) == all_ids == set(ctl.CONTROLLERS) == set(rd.DEFAULT_EPISODES)
    for env_id, spec in rd.ENVS.items():
        env = gym.make(env_id)
        assert spec["obs_dim"] == env.observation_space.shape[0]
        assert spec["max_episode_steps"] == env.spec.max_episode_steps
        assert spec["discrete"] == isinstance(env.action_space, gym.spaces.Discrete)
        if spec["discrete"]:
            assert spec["act_dim"] == env.action_space.n
        else:
            assert spec["act_dim"] == env.action_space.shape[0]
            assert spec["action_low"] == float(env.action_space.low[0])
            assert spec["action_high"] == float(env.action_space.high[0])
        assert spec["return_scale"] > 0
        assert abs(spec["target_return"]) <= spec["return_scale"]
        env.close()


def test_hard_coded_gains_are_the_lqr_solutions():
    pytest.importorskip("scipy")
    assert np.allclose(ctl.lqr_gain_cartpole(), ctl.CARTPOLE_GAIN, rtol=0, atol=1e-6)
    assert np.allclose(ctl.lqr_gain_pendulum(), ctl.PENDULUM_GAIN, rtol=0, atol=1e-6)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_deterministic_and_seed_dependent(env_id):
    np.random.seed(12345)
    global_state = np.random.get_state()[1].copy()
    first = rd.make_dataset(env_id, "mixed", seed=3, episodes=SMALL[env_id])
    second = rd.make_dataset(env_id, "mixed", seed=3, episodes=SMALL[env_id])
    assert_same(first, second)
    assert np.array_equal(np.random.get_state()[1], global_state)  # the global RNG is never used
    other = rd.make_dataset(env_id, "mixed", seed=4, episodes=SMALL[env_id])
    assert not np.array_equal(first["observations"][0], other["observations"][0])
    assert int(first["seed"]) == 3 and str(first["env_id"]) == env_id and str(first["quality"]) == "mixed"


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("quality", rd.QUALITIES)
def test_arrays_and_episode_boundaries(env_id, quality):
    spec = rd.ENVS[env_id]
    data = rd.make_dataset(env_id, quality, seed=0, episodes=SMALL[env_id])
    rd.check_dataset(data)
    n = len(data["rewards"])
    assert data["observations"].shape == data["next_observations"].shape == (n, spec["obs_dim"])
    assert data["observations"].dtype == np.float32 and data["rewards"].dtype == np.float32
    if spec["discrete"]:
        assert data["actions"].shape == (n,) and data["actions"].dtype == np.int64
        assert set(np.unique(data["actions"])) <= {0, 1}
    else:
        assert data["actions"].shape == (n, spec["act_dim"]) and data["actions"].dtype == np.float32
        assert (data["actions"] >= spec["action_low"]).all() and (data["actions"] <= spec["action_high"]).all()
    for key in ("terminals", "timeouts", "episode_starts"):
        assert data[key].dtype == np.bool_
    # Episodes, recovered from terminals | timeouts alone.
    done = data["terminals"] | data["timeouts"]
    assert done[-1] and not (data["terminals"] & data["timeouts"]).any()
    ends = np.flatnonzero(done) + 1
    starts = np.concatenate([[0], ends[:-1]])
    assert len(ends) == SMALL[env_id] == len(data["episode_returns"])
    assert np.array_equal(np.flatnonzero(data["episode_starts"]), starts)
    assert np.array_equal(ends - starts, data["episode_lengths"])
    assert (ends - starts <= spec["max_episode_steps"]).all()
    for i, (s, e) in enumerate(zip(starts, ends)):
        assert np.isclose(data["rewards"][s:e].astype(np.float64).sum(), data["episode_returns"][i], atol=1e-3)
        assert np.array_equal(data["timesteps"][s:e], np.arange(e - s))
        assert (data["policies"][s:e] == data["episode_policies"][i]).all()
        # consecutive steps chain: the next observation of a step is the observation of the next
        assert np.array_equal(data["next_observations"][s:e - 1], data["observations"][s + 1:e])
        # a timeout happens exactly at the time limit
        if data["timeouts"][e - 1]:
            assert e - s == spec["max_episode_steps"]


def test_quality_ordering():
    episodes = {"CartPole-v1": {"expert": 3, "medium": 10, "random": 20},
                "Pendulum-v1": {"expert": 20, "medium": 20, "random": 20},
                "MountainCarContinuous-v0": {"expert": 5, "medium": 12, "random": 3}}
    for env_id, counts in episodes.items():
        mean = {q: rd.make_dataset(env_id, q, seed=0, episodes=n)["episode_returns"].mean()
                for q, n in counts.items()}
        assert mean["expert"] > mean["medium"] > mean["random"], (env_id, mean)


def test_cartpole_medium_is_systematically_different():
    data = rd.make_dataset("CartPole-v1", "medium", seed=0, episodes=10)
    expert = np.array([ctl.cartpole_expert(obs, None) for obs in data["observations"]])
    medium = np.array([ctl.cartpole_medium(obs, None) for obs in data["observations"]])
    assert np.array_equal(medium, data["actions"])
    assert (expert != medium).mean() > 0.15
    # the expert keeps the cart on the track for the full 500 steps; the medium policy drives it off
    assert data["terminals"].sum() == 10 and not data["timeouts"].any()
    assert (np.abs(data["next_observations"][data["terminals"], 0]) > 2.4).all()


def test_mixed_contains_all_three_policies():
    data = rd.make_dataset("CartPole-v1", "mixed", seed=0, episodes=10)
    assert set(np.unique(data["policies"])) == {0, 1, 2}
    counts = np.bincount(data["episode_policies"], minlength=3)
    assert counts.tolist() == [4, 5, 1]  # random, medium, expert: MIXED_FRACTIONS of 10
    assert rd.summary(data)["policy_episodes"] == {"random": 4, "medium": 5, "expert": 1, "learner": 0}
    # the expert episode scores 500, random ones far less
    returns = data["episode_returns"]
    assert (returns[data["episode_policies"] == 2] == 500).all()
    assert returns[data["episode_policies"] == 0].max() < 200
    with pytest.raises(ValueError):
        rd.make_dataset("CartPole-v1", "mixed", episodes=2)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_replay_is_a_learners_buffer_until_the_medium_level(env_id):
    """The default replay dataset is the cross-entropy method's every episode, iteration by iteration,
    up to the first iteration whose mean return is 90% of the way from the random policy's to the
    medium controller's; no expert episode, and its best 10% are not the expert's quality."""
    data = rd.make_dataset(env_id, "replay")
    rd.check_dataset(data)
    assert_same(data, rd.make_dataset(env_id, "replay"))  # deterministic
    assert (data["episode_policies"] == rd.POLICY_NAMES.index("learner")).all()
    returns = data["episode_returns"]
    assert len(returns) == rd.default_episodes(env_id, "replay") and len(returns) % rd.REPLAY_POPULATION == 0
    ref = rd.reference_scores(env_id)
    medium = rd.evaluate_policy(env_id, ctl.CONTROLLERS[env_id]["medium"], 100).mean()
    level = ref["random"] + 0.9 * (medium - ref["random"])
    means = returns.reshape(-1, rd.REPLAY_POPULATION).mean(1)  # per iteration
    assert means[-1] >= level and (means[:-1] < level).all(), (means, level)
    assert means[0] < ref["random"] + 0.3 * (medium - ref["random"])  # it starts near random
    top = np.sort(returns)[::-1][:len(returns) // 10]
    assert top.mean() < ref["expert"]
    prefix = rd.make_dataset(env_id, "replay", episodes=2 * rd.REPLAY_POPULATION)  # the first two iterations
    assert np.array_equal(prefix["episode_returns"], returns[:2 * rd.REPLAY_POPULATION])


def test_replay_exists_where_a_family_does():
    assert rd.qualities("CartPole-v1")[-1] == rd.qualities("Pendulum-v1")[-1] == "replay"
    assert "replay" not in rd.qualities("MountainCarContinuous-v0")
    with pytest.raises(ValueError, match="replay"):
        rd.make_dataset("MountainCarContinuous-v0", "replay", episodes=20)
    expert = ctl.FAMILIES["CartPole-v1"].make(np.array(ctl.FAMILIES["CartPole-v1"].expert))
    obs = np.array([0.1, -0.2, 0.05, 0.3], dtype=np.float32)
    assert expert(obs, None) == ctl.cartpole_expert(obs, None)
    family = ctl.FAMILIES["Pendulum-v1"]
    assert np.array_equal(family.make(np.array(family.expert))(np.array([0.0, 1.0, 0.5]), None),
                          ctl.pendulum_expert(np.array([0.0, 1.0, 0.5]), None))


def test_unknown_names_raise():
    with pytest.raises(ValueError):
        rd.make_dataset("Acrobot-v1", "expert", episodes=1)
    with pytest.raises(ValueError):
        rd.make_dataset("CartPole-v1", "medium-replay", episodes=1)


def test_save_load_round_trip(tmp_path):
    data = rd.make_dataset("Pendulum-v1", "mixed", seed=1, episodes=4)
    path = rd.save_dataset(tmp_path / "sub" / "pend", data)
    assert path == tmp_path / "sub" / "pend.npz"
    assert sorted(p.name for p in path.parent.iterdir()) == ["pend.json", "pend.npz"]  # no temp files left
    loaded = rd.load_dataset(path)
    assert_same(data, loaded)
    with np.load(path, allow_pickle=False) as f:  # plain arrays, no pickles
        assert set(f.files) == set(data)
    meta = json.loads((tmp_path / "sub" / "pend.json").read_text())
    assert meta["format_version"] == rd.FORMAT_VERSION
    assert (meta["env_id"], meta["quality"], meta["seed"]) == ("Pendulum-v1", "mixed", 1)
    assert meta["episodes"] == 4 and meta["steps"] == 800
    assert np.isclose(meta["return_mean"], data["episode_returns"].mean())
    assert np.isclose(meta["return_min"], data["episode_returns"].min())
    assert sum(meta["policy_episodes"].values()) == 4


def test_load_or_make_cache(tmp_path):
    args = (tmp_path, "CartPole-v1", "mixed", 2)
    path = rd.dataset_path(*args, episodes=5)
    assert path == tmp_path / "rl" / "CartPole-v1-mixed-seed2-ep5.npz"
    assert rd.dataset_path(*args) == tmp_path / "rl" / "CartPole-v1-mixed-seed2.npz"
    fresh = rd.make_dataset("CartPole-v1", "mixed", 2, episodes=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither the first make nor the reuse warns
        made = rd.load_or_make(*args, episodes=5)
        assert path.exists() and path.with_suffix(".json").exists()
        stamp = path.stat().st_mtime_ns
        cached = rd.load_or_make(*args, episodes=5)
    assert_same(made, fresh)
    assert_same(cached, fresh)
    assert path.stat().st_mtime_ns == stamp  # reused, not rewritten

    path.write_bytes(b"this is not a zip file")  # garbage npz
    with pytest.warns(UserWarning, match="regenerating"):
        assert_same(rd.load_or_make(*args, episodes=5), fresh)
    assert_same(rd.load_dataset(path), fresh)  # and the cache is repaired

    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "seed": 7}))  # a JSON for another seed
    with pytest.warns(UserWarning, match="seed"):
        assert_same(rd.load_or_make(*args, episodes=5), fresh)
    assert json.loads(sidecar.read_text())["seed"] == 2

    sidecar.write_text("{ not json")
    with pytest.warns(UserWarning):
        assert_same(rd.load_or_make(*args, episodes=5), fresh)

    other = rd.make_dataset("CartPole-v1", "mixed", 3, episodes=5)  # a valid npz of another seed...
    rd.save_dataset(tmp_path / "other.npz", other)
    path.write_bytes((tmp_path / "other.npz").read_bytes())  # ...under this name, old JSON kept
    with pytest.warns(UserWarning, match="checksum"):
        assert_same(rd.load_or_make(*args, episodes=5), fresh)

    sidecar.unlink()  # npz without its JSON
    with pytest.warns(UserWarning):
        assert_same(rd.load_or_make(*args, episodes=5), fresh)


def test_reference_scores():
    for env_id in ENV_IDS:
        rd._reference_scores.cache_clear()
        first = rd.reference_scores(env_id, episodes=3, seed=5)
        assert rd._reference_scores.cache_info().misses == 1
        again = rd.reference_scores(env_id, episodes=3, seed=5)
        assert rd._reference_scores.cache_info().hits == 1
        rd._reference_scores.cache_clear()
        assert rd.reference_scores(env_id, episodes=3, seed=5) == first == again
        assert first["random"] < first["expert"]
        assert rd.normalized_score(env_id, first["expert"], episodes=3, seed=5) == pytest.approx(100.0)
        assert rd.normalized_score(env_id, first["random"], episodes=3, seed=5) == pytest.approx(0.0)
    assert rd.reference_scores("CartPole-v1", episodes=3, seed=5)["expert"] == 500.0
