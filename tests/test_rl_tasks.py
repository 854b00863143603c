"""Offline RL tasks: windows, returns-to-go, padding, %BC data, rollouts in the real environment, and
the rl harness end to end."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import assert_items_reproduce, record_file

from harness.cli import main
from harness.records import items_path
from tasks import create_task, list_tasks

pytest.importorskip("gymnasium")

from tasks.rl.dataset import ENVS  # noqa: E402


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
    rtg, states, actions, timesteps, mask, targets, *_ = next(iter(cartpole.train_batches(64, torch.Generator().manual_seed(0))))
    assert states.shape == (64, 5, 4) and actions.shape == (64, 5, 2) and mask.shape == (64, 5)
    assert mask[:, -1].all()  # the window always ends on a real step
    assert (mask.float().diff(dim=1) >= 0).all()  # padding only on the left
    assert not mask.all()  # windows near an episode's end are shorter than K
    assert (states[~mask] == 0).all() and (actions[~mask] == 0).all()
    real = mask[:, 1:] & mask[:, :-1]
    assert ((timesteps[:, 1:] - timesteps[:, :-1])[real] == 1).all()  # consecutive steps
    assert torch.equal(actions[mask].argmax(-1), targets[mask])  # one-hot of the target action


def test_windows_carry_the_transitions_for_td_learners(cartpole):
    """Rewards (scaled), next states and true terminations at every step of the window."""
    g = torch.Generator().manual_seed(1)
    rtg, states, actions, timesteps, mask, targets, rewards, next_states, terminals = next(iter(cartpole.train_batches(64, g)))
    assert rewards.shape == terminals.shape == mask.shape and next_states.shape == states.shape
    scale = cartpole.td_reward_scale
    spread = float(cartpole.returns.max() - cartpole.returns.min())
    assert scale == pytest.approx(500 / spread)  # the return spread maps onto the 500-step episode
    assert torch.allclose(rewards[mask], torch.full_like(rewards[mask], scale))  # CartPole pays 1 a step
    real = mask[:, 1:] & mask[:, :-1]
    assert torch.allclose(next_states[:, :-1][real], states[:, 1:][real])  # s' is the next step's state
    ends = terminals[mask].bool()
    assert ends.any() and not terminals[~mask].any()


class TDProbe(nn.Module):
    """Records what the task hands a temporal-difference learner."""

    trajectory_fraction = 1.0
    learns_by_td = True

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, rtg, states, actions=None, timesteps=None, mask=None):
        raise AssertionError("a TD learner trains through td_loss, not forward")

    def td_loss(self, transitions):
        self.seen = transitions
        return self.w * 0 + transitions.rewards.sum()


def test_td_learners_get_uniformly_drawn_transitions(cartpole):
    """A temporal-difference learner gets B x K transitions drawn uniformly from the dataset (CORL's
    replay buffer): an episode's first step as often as any other, where the windows of the sequence
    models cover it K times less often (they run forward from a uniform start)."""
    probe = TDProbe()
    cartpole.check_model(probe, "probe")  # it declares what a TD learner needs
    cartpole.prepare(probe)
    try:
        batches = list(itertools.islice(cartpole.train_batches(64, torch.Generator().manual_seed(2)), 40))
        batch = batches[0]
        loss = cartpole.loss(probe, batch)
        seen = probe.seen
        assert batch.mask.all()  # every row a real transition
        assert seen.states.shape == (64 * 5, 4) and seen.actions.shape == (64 * 5, 2)
        assert torch.equal(seen.rewards, batch.rewards.flatten()) and torch.equal(seen.terminals, batch.terminals.flatten())
        assert loss.item() == pytest.approx(batch[6].sum().item())
        first_step = torch.cat([b[3].flatten() for b in batches]).eq(0).float().mean().item()
    finally:
        cartpole.prepare(None)
    uniform = len(cartpole.lengths) / int(cartpole.lengths.sum())  # episodes / steps
    assert 0.75 * uniform < first_step < 1.25 * uniform
    windows = list(itertools.islice(cartpole.train_batches(64, torch.Generator().manual_seed(2)), 40))
    covered = torch.cat([(b[3] == 0)[b[4]] for b in windows]).float().mean().item()
    assert covered < 0.5 * uniform  # about uniform / K with windows


def test_a_model_that_lacks_what_the_kind_needs_is_refused_in_one_line(cartpole):
    class Bare(nn.Module):
        def forward(self, *args):
            return args[1]

    with pytest.raises(ValueError, match=r"^model 'bare' does not declare trajectory_fraction, learns_by_td, which "
                                         r"offline_rl tasks need of a model \(tasks.base.TrajectoryLearner"):
        cartpole.check_model(Bare(), "bare")
    Bare.trajectory_fraction, Bare.learns_by_td = 1.0, True  # a TD learner without its step
    with pytest.raises(ValueError, match="learns by temporal differences but does not declare td_loss"):
        cartpole.check_model(Bare(), "bare")


def test_delayed_reward_moves_the_return_to_the_last_step(tmp_path):
    plain = create_task("cartpole-mixed", data_dir=tmp_path)
    delayed = create_task("cartpole-mixed-delayed", data_dir=tmp_path)
    plain.setup()
    delayed.setup()
    assert delayed.fingerprint() != plain.fingerprint()
    assert torch.equal(delayed.returns, plain.returns)  # the same episodes and returns
    s, n = int(delayed.starts[3]), int(delayed.lengths[3])
    rtg = delayed.arrays["rtg"][s:s + n, 0]
    assert torch.allclose(rtg, rtg[:1].expand(n))  # the whole return is still to come at every step
    rewards = delayed.arrays["rewards"][s:s + n]
    assert (rewards[:-1] == 0).all() and rewards[-1] > 0
    env = delayed.make_env()
    env.reset(seed=0)
    rewards, done = [], False
    while not done:
        _, r, terminated, truncated, _ = env.step(0)
        rewards.append(r)
        done = terminated or truncated
    assert rewards[:-1] == [0.0] * (len(rewards) - 1) and rewards[-1] == len(rewards)  # CartPole: 1 a step
    assert delayed.rollout(Scripted(0), [1, 2], 500) == pytest.approx(plain.rollout(Scripted(0), [1, 2], 500))


def test_controllability_is_paired_by_start():
    """Per start, the rank correlation of target and return, averaged over starts with a t interval:
    starts that differ a lot (some easy, some hard) do not dilute it, as they do a pooled correlation."""
    from scipy.stats import spearmanr
    from scipy.stats import t as student_t

    from tasks.rl.tasks import controllability

    targets = np.array([0.0, 1.0, 2.0, 3.0])
    achieved = targets[:, None] + np.array([0.0, 100.0, -50.0])  # (targets, starts)
    assert controllability(targets, achieved) == pytest.approx((1.0, 0.0))
    assert spearmanr(np.repeat(targets, 3), achieved.ravel()).statistic < 0.5  # what pooling would say
    assert controllability(targets, -achieved)[0] == pytest.approx(-1.0)
    achieved[:, 2] = 7.0  # a start whose return never changes: no control there
    mean, half_width = controllability(targets, achieved)
    assert mean == pytest.approx(2 / 3)
    assert half_width == pytest.approx(student_t.ppf(0.975, 2) * np.std([1, 1, 0], ddof=1) / np.sqrt(3))
    assert np.isnan(controllability(targets, achieved[:, :1])[1])  # one start: no interval


class TargetReader(nn.Module):
    """Plays CartPole's LQR expert while the return to go exceeds half the maximum, then always left:
    the higher the target, the longer it balances."""

    def __init__(self, task):
        super().__init__()
        self.mean, self.std = torch.as_tensor(task.state_mean), torch.as_tensor(task.state_std)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, rtg, states, actions, timesteps, mask):
        from tasks.rl.controllers import CARTPOLE_GAIN
        expert = ((states * self.std + self.mean) @ torch.tensor(CARTPOLE_GAIN, dtype=states.dtype) > 0).long()
        action = torch.where(rtg[..., 0] > 0.5, expert, 0)
        return F.one_hot(action, 2).float() + 0 * self.dummy


def test_examples_give_the_curve_and_its_controllability(cartpole):
    """The curve's targets run from the random policy's return to what the data show reachable; a
    model that reads the target is measured, one that does not gets NaN ('-'), not 0."""
    ignores = cartpole.examples(Scripted(1), torch.device("cpu"), 0)
    rows = ignores["tables"]["return_conditioning"]
    assert len(rows) == len(cartpole.curve_fractions) and all(r["episodes"] == 20 for r in rows)
    assert len({r["achieved_return"] for r in rows}) == 1  # a scripted policy ignores the target...
    assert np.isnan(ignores["metrics"]["controllability"]) and np.isnan(ignores["metrics"]["controllability_ci95"])
    targets = [r["target_return"] for r in rows]
    assert targets[0] == pytest.approx(cartpole.reference_scores()["random"])
    assert targets[-1] == pytest.approx(np.quantile(cartpole.returns.numpy(), 0.95, method="higher"))
    assert targets[-1] <= cartpole.returns.max().item()  # nothing beyond the data
    reads = cartpole.examples(TargetReader(cartpole), torch.device("cpu"), 0)
    achieved = [r["achieved_return"] for r in reads["tables"]["return_conditioning"]]
    assert achieved[-1] > achieved[0] + 50
    assert reads["metrics"]["controllability"] > 0.5 and reads["metrics"]["controllability_ci95"] < 0.3


def test_gamble_asks_for_a_return_only_luck_gives(tmp_path):
    """LuckyGamble's evaluation target is the data's 90th percentile, above the 10 that always playing
    safe guarantees (Paster et al.'s regime), and a return that some episodes in the data reached."""
    task = create_task("gamble-random", data_dir=tmp_path)
    task.setup()
    assert task.target_return == np.quantile(task.returns.numpy(), 0.9, method="higher") > 10
    assert (task.returns.numpy() == task.target_return).any()


def test_new_environments_are_tasks():
    names = set(list_tasks("rl"))
    assert {"keytodoor-random", "gamble-random"} <= set(list_tasks("rl", default_only=True))
    assert {"keytodoor-mixed", "cartpole-mixed-delayed", "pendulum-mixed-delayed", "mountaincar-mixed-delayed"} <= names
    assert create_task("keytodoor-random").opts["eval_episodes"] == 100  # short episodes: more of them
    assert create_task("pendulum-mixed").opts["eval_episodes"] == 10


def test_top_fraction_pool_for_percent_bc(cartpole):
    class Top10(nn.Module):
        trajectory_fraction, learns_by_td = 0.1, False

    class All(Top10):
        trajectory_fraction = 1.0

    cartpole.prepare(Top10())
    best = cartpole.returns[cartpole.pool]
    assert len(best) == round(0.1 * len(cartpole.returns))
    assert best.min() >= cartpole.returns.quantile(0.85)
    cartpole.prepare(All())
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
    assert sorted(df["model"]) == ["bc_mlp", "bc_top10", "decision_lstm", "decision_mamba", "decision_transformer",
                                   "iql"]
    assert set(df["metric"]) == {"normalized_return"}
    bc = df.set_index("model").loc["bc_mlp"]
    assert abs(bc["test_controllability"]) < 1e-9 or np.isnan(bc["test_controllability"])  # BC ignores the target
    assert "test_controllability" in (out / "leaderboard_rl.md").read_text()
    curve = pd.read_csv(out / "return_conditioning_rl.csv")
    assert len(curve) == 6 * 6 and {"target_return", "achieved_return", "achieved_normalized"} <= set(curve.columns)
    record = json.loads(record_file(out / "runs/rl/pendulum-mixed/decision_transformer-tiny-seed0.json").read_text())
    assert np.isfinite(record["test"]["return_mean"]) and record["test"]["return_mean"] < 0  # Pendulum costs
    assert assert_items_reproduce(out) == {"pendulum-mixed": "offline_rl"}
    items = np.load(items_path(record_file(out / "runs/rl/pendulum-mixed/decision_transformer-tiny-seed0.json")))
    assert items["raw_return"] == pytest.approx([record["test"]["return_mean"]])  # one episode, named by its seed
