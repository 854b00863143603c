"""The ``minari`` task (tasks/rl/minari.py) on a tiny CartPole dataset written in Minari's own on-disk
format by Minari's own ``create_dataset_from_buffers``: the flat arrays, the spec, a training batch, a rollout in the
recovered environment, the data path and the missing-dataset errors."""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

minari = pytest.importorskip("minari")
gym = pytest.importorskip("gymnasium")
from minari.data_collector import EpisodeBuffer  # noqa: E402

from tasks import DatasetNotFoundError, create_task  # noqa: E402
from tasks.rl.minari import DATASETS_PATH_VAR  # noqa: E402

DATASET_ID = "cartpole/test-v0"
TIME_LIMIT = 30  # short episodes: some terminate, some are truncated at 30
EPISODES = 8  # and a ninth cut short after 5 steps, with neither flag


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(data_dir, episodes): the dataset under data_dir/minari and what was written, step by step."""
    data_dir = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    episodes = []
    env = gym.make("CartPole-v1", max_episode_steps=TIME_LIMIT)
    for i in range(EPISODES + 1):
        obs, _ = env.reset(seed=100 + i)
        ep = {"obs": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
        while True:
            action = int(rng.integers(2))
            obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(("obs", "actions", "rewards", "terminations", "truncations"),
                                  (obs, action, reward, terminated, truncated)):
                ep[key].append(value)
            if terminated or truncated or (i == EPISODES and len(ep["actions"]) == 5):
                break  # the last episode is cut short after 5 steps, with neither flag
        ep["terminated"], ep["truncated"] = ep["terminations"][-1], ep["truncations"][-1]
        episodes.append(ep)
    # minari's own writer (DataCollector needs jax, minari[create]; this does not): EpisodeBuffers
    buffers = [EpisodeBuffer(id=i, seed=100 + i, observations=np.stack(ep["obs"]),
                                    actions=np.asarray(ep["actions"], dtype=np.int64), rewards=ep["rewards"],
                                    terminations=ep["terminations"], truncations=ep["truncations"])
               for i, ep in enumerate(episodes)]
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setenv(DATASETS_PATH_VAR, str(data_dir / "minari"))
        warnings.simplefilter("ignore")  # no author, code link, eval env...: fine for a test
        minari.create_dataset_from_buffers(DATASET_ID, buffers, env=env, algorithm_name="random")
    env.close()
    return data_dir, episodes


@pytest.fixture(scope="module")
def task(written):
    data_dir, _ = written
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(DATASETS_PATH_VAR, raising=False)  # the task finds it through --data-dir
        t = create_task("minari", data_dir=data_dir, dataset=DATASET_ID, context_len=4, eval_episodes=1)
        t.setup()
        assert DATASETS_PATH_VAR not in os.environ  # set only while loading, then restored
    return t


class ConstantPolicy(nn.Module):
    def __init__(self, act_dim: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(act_dim))

    def forward(self, rtg, states, actions, timesteps, mask):
        return self.logits.expand(*states.shape[:2], -1)


def test_flat_arrays_equal_the_episodes_written(task, written):
    data_dir, episodes = written
    assert (data_dir / "minari" / DATASET_ID / "data").is_dir()
    data, info = task.load_data()
    lengths = [len(ep["actions"]) for ep in episodes]
    assert data["episode_lengths"].tolist() == lengths
    np.testing.assert_array_equal(data["observations"], np.concatenate([np.stack(ep["obs"][:-1]) for ep in episodes]))
    np.testing.assert_array_equal(data["next_observations"], np.concatenate([np.stack(ep["obs"][1:]) for ep in episodes]))
    assert data["actions"].dtype == np.int64
    assert data["actions"].tolist() == [a for ep in episodes for a in ep["actions"]]
    np.testing.assert_allclose(data["rewards"], [r for ep in episodes for r in ep["rewards"]])
    ends = np.cumsum(lengths) - 1
    done = data["terminals"] | data["timeouts"]
    assert np.flatnonzero(done).tolist() == ends.tolist()  # every episode ends, and only at its end
    assert not (data["terminals"] & data["timeouts"]).any()
    assert data["terminals"][ends].tolist() == [ep["terminated"] for ep in episodes]
    assert data["timeouts"][ends[-1]] and not episodes[-1]["truncated"] and not episodes[-1]["terminated"]
    assert any(ep["terminated"] for ep in episodes) and any(ep["truncated"] for ep in episodes)
    returns = [sum(ep["rewards"]) for ep in episodes]
    assert info["target_return"] == pytest.approx(max(returns))
    assert info["return_scale"] == pytest.approx(max(returns))  # small returns: rtg within [0, 1]
    assert task.returns.tolist() == pytest.approx(returns)


def test_spec_and_training_batch(task):
    assert task.spec == {"kind": "offline_rl", "state_dim": 4, "act_dim": 2, "discrete": True,
                         "max_ep_len": TIME_LIMIT, "context_len": 4}
    batch = next(iter(task.train_batches(8, torch.Generator().manual_seed(0))))
    rtg, states, actions, timesteps, mask, targets, rewards, next_states, terminals = batch
    assert rtg.shape == (8, 4, 1) and states.shape == (8, 4, 4) and actions.shape == (8, 4, 2)
    assert timesteps.shape == mask.shape == targets.shape == rewards.shape == terminals.shape == (8, 4)
    assert next_states.shape == states.shape  # the transitions a TD learner (IQL) trains on
    assert mask[:, -1].all() and torch.isfinite(states).all()


def test_rollout_in_the_recovered_environment(task):
    model = ConstantPolicy(2)
    returns = task.rollout(model, [0], task.env_info["target_return"])
    assert returns.shape == (1,) and np.isfinite(returns).all() and 1 <= returns[0] <= TIME_LIMIT
    ref = task.reference_scores()
    assert ref["expert"] == pytest.approx(float(task.returns.max()))  # no ref scores in this dataset
    assert np.isfinite(ref["random"]) and ref == task.reference_scores()
    metrics = task.evaluate(model, task.eval_batches("test", 1))
    assert np.isfinite(metrics["normalized_return"])


def test_missing_dataset_needs_download(tmp_path, monkeypatch):
    monkeypatch.delenv(DATASETS_PATH_VAR, raising=False)
    with pytest.raises(DatasetNotFoundError, match="--download"):
        create_task("minari", data_dir=tmp_path, dataset="cartpole/absent-v0").setup()
    assert DATASETS_PATH_VAR not in os.environ


def test_user_datasets_path_wins_and_missing_minari_is_explained(written, tmp_path, monkeypatch):
    data_dir, episodes = written
    monkeypatch.setenv(DATASETS_PATH_VAR, str(data_dir / "minari"))
    t = create_task("minari", data_dir=tmp_path, dataset=DATASET_ID, context_len=4)  # another --data-dir
    t.setup()
    assert t.dataset_stats["episodes"] == len(episodes)
    assert os.environ[DATASETS_PATH_VAR] == str(data_dir / "minari")
    monkeypatch.setitem(sys.modules, "minari", None)  # as if not installed
    with pytest.raises(DatasetNotFoundError, match=r'pip install "attention-zoo\[rl\]"'):
        create_task("minari", data_dir=tmp_path, dataset=DATASET_ID).setup()
