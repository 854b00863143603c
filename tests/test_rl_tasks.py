"""Offline RL tasks: windows, returns-to-go, padding, %BC data, rollouts in the real environment, and
the rl harness end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import assert_items_reproduce, record_file

from harness.cli import main
from harness.records import items_path
from tasks import create_task, list_tasks
from tasks.rl.dataset import ENVS


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    task = create_task("cartpole-mixed", data_dir=tmp_path_factory.mktemp("data"), context_len=5, eval_episodes=2)
    task.setup()
    return task


def test_tasks_registered_for_each_env_and_quality():
    names = set(list_tasks("rl"))
    for short in ("cartpole", "pendulum", "mountaincar"):
        assert {f"{short}-expert", f"{short}-medium", f"{short}-mixed"} <= names
    assert "cartpole-mixed" in list_tasks("rl", default_only=True)


def test_returns_to_go_and_timesteps(cartpole):
    a, scale = cartpole.arrays, ENVS["CartPole-v1"]["return_scale"]
    s, n = int(cartpole.starts[0]), int(cartpole.lengths[0])
    rtg = a["rtg"][s:s + n, 0] * scale
    assert rtg[0].item() == pytest.approx(cartpole.returns[0].item(), rel=1e-5)  # the episode's return
    assert rtg[-1].item() == pytest.approx(1.0)  # CartPole pays 1 per step: the last step's rtg is 1
    assert torch.allclose(rtg[:-1] - rtg[1:], torch.ones(n - 1), atol=1e-4)
    assert a["timesteps"][s:s + n].tolist() == list(range(n))
    assert a["states"].mean(0).abs().max() < 1e-3 and (a["states"].std(0) - 1).abs().max() < 1e-2


def test_windows_are_left_padded_with_mask(cartpole):
    rtg, states, actions, timesteps, mask, targets = next(iter(cartpole.train_batches(64, torch.Generator().manual_seed(0))))
    assert states.shape == (64, 5, 4) and actions.shape == (64, 5, 2) and mask.shape == (64, 5)
    assert mask[:, -1].all()  # the window always ends on a real step
    assert (mask.float().diff(dim=1) >= 0).all()  # padding only on the left
    assert not mask.all()  # windows near an episode's end are shorter than K
    assert (states[~mask] == 0).all() and (actions[~mask] == 0).all()
    real = mask[:, 1:] & mask[:, :-1]
    assert ((timesteps[:, 1:] - timesteps[:, :-1])[real] == 1).all()  # consecutive steps
    assert torch.equal(actions[mask].argmax(-1), targets[mask])  # one-hot of the target action


def test_top_fraction_pool_for_percent_bc(cartpole):
    class Top10(nn.Module):
        trajectory_fraction = 0.1

    cartpole.prepare(Top10())
    best = cartpole.returns[cartpole.pool]
    assert len(best) == round(0.1 * len(cartpole.returns))
    assert best.min() >= cartpole.returns.quantile(0.85)
    cartpole.prepare(nn.Linear(1, 1))
    assert len(cartpole.pool) == len(cartpole.returns)


class Scripted(nn.Module):
    """Plays a fixed discrete action whatever it sees (logits with one hot winner)."""

    def __init__(self, action: int):
        super().__init__()
        self.action = action
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, rtg, states, actions, timesteps, mask):
        return torch.nn.functional.one_hot(torch.full(mask.shape, self.action), 2).float() + 0 * self.dummy


def test_rollout_in_the_real_environment(cartpole):
    returns = cartpole.rollout(Scripted(0), [1, 2, 3], target_return=500)
    assert len(returns) == 3 and (returns > 5).all() and (returns < 30).all()  # always pushing left falls fast
    metrics = cartpole.evaluate(Scripted(1), cartpole.eval_batches("test", 64))
    assert metrics["return_mean"] < 30 and metrics["normalized_return"] < 5
    again = cartpole.evaluate(Scripted(1), cartpole.eval_batches("test", 64))
    assert again == metrics  # fixed evaluation seeds


def test_rl_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["run", "rl", "--tasks", "pendulum-mixed", "--steps", "3", "--seeds", "1", "--quiet", "--out", str(out),
                 "--data-dir", str(tmp_path / "data"), "--task-opt", "context_len=4", "--task-opt", "eval_episodes=1"])
    assert code == 0
    df = pd.read_csv(out / "leaderboard_rl.csv")
    assert sorted(df["model"]) == ["bc_mlp", "bc_top10", "decision_lstm", "decision_transformer"]
    assert set(df["metric"]) == {"normalized_return"}
    curve = pd.read_csv(out / "return_conditioning_rl.csv")
    assert len(curve) == 4 * 6 and {"target_return", "achieved_return", "achieved_normalized"} <= set(curve.columns)
    record = json.loads(record_file(out / "runs/rl/pendulum-mixed/decision_transformer-tiny-seed0.json").read_text())
    assert np.isfinite(record["test"]["return_mean"]) and record["test"]["return_mean"] < 0  # Pendulum costs
    assert assert_items_reproduce(out) == {"pendulum-mixed": "offline_rl"}
    items = np.load(items_path(record_file(out / "runs/rl/pendulum-mixed/decision_transformer-tiny-seed0.json")))
    assert items["raw_return"] == pytest.approx([record["test"]["return_mean"]])  # one episode, named by its seed
