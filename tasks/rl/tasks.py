"""Offline reinforcement learning: learn from a fixed dataset of episodes, evaluate by rolling the
policy out in the real gymnasium environment.

The tasks are registered without gymnasium (``tasks.rl._gym``): the modules that need it
(``tasks.rl.dataset``, ``tasks.rl.wrappers``) are imported in the methods that load the data, make an
environment or compute the reference scores, so a task used without gymnasium stops with a one-line
``DatasetError`` saying how to install it.

Datasets come from ``tasks.rl.dataset``: the behaviour policies of ``tasks.rl.controllers``, of graded
quality (``expert``, ``medium``, ``mixed`` = random + medium + a few expert episodes) for CartPole-v1
(discrete), Pendulum-v1 and MountainCarContinuous-v0 (continuous), and for CartPole and Pendulum also
``replay`` (the buffer of a cross-entropy-method learner until it reaches about the medium level,
like D4RL's medium-replay: no expert episodes), generated deterministically and cached under
``--data-dir``/rl. Task names are ``<env>-<quality>``, e.g. ``cartpole-mixed``.

The model contract (kind ``offline_rl``), as in the Decision Transformer: forward(returns_to_go
(B, K, 1), states (B, K, S), actions (B, K, A), timesteps (B, K), mask (B, K)) -> action predictions
(B, K, A): tanh-bounded actions for continuous control, logits for discrete actions. States are
z-scored with the dataset's mean and std; returns-to-go are undiscounted and divided by the
environment's ``return_scale``; continuous actions are scaled to [-1, 1]; discrete actions are
one-hot; windows of K steps are left-padded (mask 0), as in kzl/decision-transformer.

Headline metric: the D4RL-normalised return, 100 * (return - random) / (expert - random), with the
random and expert policies measured in the same environment; also the raw return. The evaluation
rolls out ``eval_episodes`` fixed-seed episodes in lock step, conditioned on the task's
``target_return`` (the expert's; LuckyGamble's: the data's 90th percentile, which only luck reaches);
``examples`` records the return-conditioning curve (achieved return against target, targets within
what the data show reachable) and its controllability (per start, paired across targets).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr, t as student_t
from torch import Tensor, nn

from ..base import (Batch, Budget, ItemLog, Option, Task, TaskReport, TDLearner, TrajectoryLearner, missing_members,
                    register_task)
from ._gym import require_gym

if TYPE_CHECKING:
    import gymnasium as gym

TEST_SEED, VAL_SEED, CURVE_SEED = 10_000, 20_000, 30_000


class Trajectories(NamedTuple):
    """A training batch of B windows of K steps (left-padded where ``mask`` is False), each (B, K, ...):
    what a trajectory learner reads, the targets it is scored on, and the transitions' fields a TD
    learner reads (``Transitions``)."""

    returns_to_go: Tensor  # (B, K, 1) scaled
    states: Tensor  # (B, K, state_dim) z-scored
    actions: Tensor  # (B, K, act_dim) one-hot or in [-1, 1]
    timesteps: Tensor  # (B, K) long
    mask: Tensor  # (B, K) bool, True at real steps
    targets: Tensor  # (B, K) class ids, or (B, K, act_dim): the actions to predict
    rewards: Tensor  # (B, K) scaled
    next_states: Tensor  # (B, K, state_dim)
    terminals: Tensor  # (B, K) 1 where the episode truly ended


class Transitions(NamedTuple):
    """N transitions for a temporal-difference learner (``tasks.base.TDLearner.td_loss``): states
    (N, S), actions (N, A), rewards (N,), next_states (N, S), terminals (N,), real (N,) 1 for a
    transition and 0 for padding."""

    states: Tensor
    actions: Tensor
    rewards: Tensor
    next_states: Tensor
    terminals: Tensor
    real: Tensor


class OfflineRLTask(Task):
    domain = "rl"
    kind = "offline_rl"
    requires = (TrajectoryLearner,)
    modality = "state"
    metric = "normalized_return"
    report = TaskReport(metric_units={"normalized_return": "% of expert return"},
                        report_iqm=True,  # rollouts are noisy: seeds are also summarised by their IQM (rliable)
                        leaderboard_metrics=("controllability",),
                        example_plots={"return_conditioning": ("target_return", "achieved_return")})
    offline = True
    env_id: ClassVar[str]
    quality: ClassVar[str]
    options = {"context_len": Option(20, minimum=1, help="steps of history a model sees (K)"),
               "eval_episodes": Option(10, minimum=1, help="fixed-seed episodes rolled out for the test score")}
    budget = Budget(steps=1000, batch_size=64)
    default_seeds = 1  # the default rl run (4 tasks x 4 models, rollouts included) must fit 10 CPU minutes
    eval_interval: ClassVar[int] = 250
    val_episodes: ClassVar[int] = 3
    # The return-conditioning curve: targets from the random policy's return (0) to the return that the
    # data show reachable (1): the ``curve_top_quantile`` of the dataset's episode returns.
    curve_fractions: ClassVar[tuple[float, ...]] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    curve_top_quantile: ClassVar[float] = 0.95
    curve_episodes: ClassVar[int] = 20  # starts per target point, the same seeds at every target
    delayed: ClassVar[bool] = False  # the DT paper's delayed return: all reward at the episode's end

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrays: dict[str, Tensor] = {}
        self.pool: Tensor | None = None
        self.learns_by_td = False

    # ------------------------------------------------------------------------------------- data
    def load_data(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The flat dataset (``tasks.rl.dataset``'s format) and the environment's facts (an ``ENVS`` entry)."""
        from .dataset import ENVS, load_or_make  # here, not at the top: it needs gymnasium
        return load_or_make(self.data_dir, self.env_id, self.quality), ENVS[self.env_id]

    def make_env(self) -> gym.Env:
        from .dataset import make_env
        from .wrappers import DelayedReward
        env = make_env(self.env_id)
        return DelayedReward(env) if self.delayed else env

    def data_fingerprint(self) -> dict[str, Any]:
        """The generated dataset's recipe: environment, behaviour quality, seed, episodes, the format
        version of ``tasks.rl.dataset`` and the gymnasium that rolled it out."""
        from .dataset import FORMAT_VERSION, default_episodes
        return {"env_id": self.env_id, "quality": self.quality, "seed": 0,
                "episodes": default_episodes(self.env_id, self.quality), "format_version": FORMAT_VERSION,
                "gymnasium": require_gym().__version__, **({"delayed": True} if self.delayed else {})}

    def reference_scores(self) -> dict[str, float]:
        """The returns that normalise to 0 (random) and 100 (expert)."""
        from .dataset import reference_scores
        return reference_scores(self.env_id)

    def setup(self) -> None:
        if self.arrays:
            return
        data, self.env_info = self.load_data()
        info = self.env_info
        obs = data["observations"].astype(np.float32)
        self.state_mean, self.state_std = obs.mean(0), obs.std(0) + 1e-6
        ends = np.flatnonzero(data["terminals"] | data["timeouts"]) + 1  # episode boundaries
        starts = np.concatenate([[0], ends[:-1]])
        rewards = data["rewards"].astype(np.float64)
        if self.delayed:  # the whole return on each episode's last step, nothing before
            totals = np.add.reduceat(rewards, starts)
            rewards = np.zeros_like(rewards)
            rewards[ends - 1] = totals
        rtg = np.empty_like(rewards)
        timesteps = np.empty(len(rewards), dtype=np.int64)
        for s, e in zip(starts, ends):  # undiscounted return-to-go within each episode
            rtg[s:e] = np.cumsum(rewards[s:e][::-1])[::-1]
            timesteps[s:e] = np.arange(e - s)
        self.arrays = {
            "states": torch.from_numpy((obs - self.state_mean) / self.state_std),
            "actions": self._encode_actions(torch.from_numpy(data["actions"])),
            "targets": torch.from_numpy(data["actions"] if info["discrete"] else self._scale(data["actions"])),
            "rtg": torch.from_numpy(rtg / info["return_scale"]).float()[:, None],
            "timesteps": torch.from_numpy(np.minimum(timesteps, info["max_episode_steps"] - 1)),
        }
        self.starts, self.lengths = torch.from_numpy(starts), torch.from_numpy(ends - starts)
        self.returns = torch.from_numpy(np.add.reduceat(rewards, starts))
        # Transitions for temporal-difference learners (baselines.iql): the reward scaled so that the
        # dataset's spread of returns maps onto the episode length (about 1 a step, as CORL's
        # 1000 / (max return - min return) does for 1000-step MuJoCo), the next state, and whether the
        # episode truly ended there (a time-out still bootstraps).
        spread = float(self.returns.max() - self.returns.min())
        self.td_reward_scale = info["max_episode_steps"] / (spread if spread > 0 else max(abs(float(self.returns.max())), 1.0))
        next_obs = data["next_observations"].astype(np.float32)
        self.arrays.update({
            "rewards": torch.from_numpy(rewards * self.td_reward_scale).float(),
            "next_states": torch.from_numpy((next_obs - self.state_mean) / self.state_std),
            "terminals": torch.from_numpy(data["terminals"].astype(np.float32)),
        })
        self.dataset_stats = {"episodes": len(starts), "steps": int(ends[-1]),
                              "dataset_return_mean": float(self.returns.mean()),
                              "dataset_return_max": float(self.returns.max())}
        self.prepare(None)

    def _scale(self, actions: np.ndarray) -> np.ndarray:  # env range -> [-1, 1]
        low, high = self.env_info["action_low"], self.env_info["action_high"]
        return (2 * (actions - low) / (high - low) - 1).astype(np.float32)

    def _unscale(self, actions: np.ndarray) -> np.ndarray:  # [-1, 1] -> env range
        low, high = self.env_info["action_low"], self.env_info["action_high"]
        return low + (np.clip(actions, -1, 1) + 1) / 2 * (high - low)

    def _encode_actions(self, actions: Tensor) -> Tensor:
        if self.env_info["discrete"]:
            return F.one_hot(actions.long(), self.env_info["act_dim"]).float()
        return torch.from_numpy(self._scale(actions.numpy()))

    @property
    def spec(self) -> dict[str, Any]:
        info = self.env_info  # set by setup
        return {"kind": self.kind, "state_dim": info["obs_dim"], "act_dim": info["act_dim"],
                "discrete": info["discrete"], "max_ep_len": info["max_episode_steps"],
                "context_len": self.opts["context_len"]}

    @property
    def target_return(self) -> float:
        """The return that the validation and test episodes ask for: the environment's ``target_return``
        (the expert's), or where it declares a ``target_quantile``, that quantile of the dataset's
        episode returns (a return some episodes in the data reached; LuckyGamble's is above what
        skill can guarantee, Paster et al.'s regime)."""
        quantile = self.env_info.get("target_quantile")
        if quantile is None:
            return float(self.env_info["target_return"])
        return float(np.quantile(self.returns.numpy(), quantile, method="higher"))

    def check_model(self, model: nn.Module, name: str = "") -> None:
        """A trajectory learner (``requires``); one that ``learns_by_td`` is a TD learner too."""
        super().check_model(model, name)
        if model.learns_by_td:
            missing = missing_members(model, TDLearner)
            if missing:
                raise ValueError(f"model {name or type(model).__name__!r} learns by temporal differences but does not "
                                 f"declare {', '.join(missing)} (tasks.base.TDLearner)")

    def prepare(self, model: nn.Module | None) -> None:
        """%BC: a model whose ``trajectory_fraction`` is below 1 trains on the best episodes only. A model
        that ``learns_by_td`` (``baselines.iql``) trains on transitions drawn uniformly (``train_batches``).
        Both are declared by the model (``tasks.base.TrajectoryLearner``), read here once."""
        fraction = model.trajectory_fraction if model is not None else 1.0
        keep = max(1, round(fraction * len(self.returns)))
        self.pool = self.returns.argsort(descending=True)[:keep]
        self.learns_by_td = bool(model.learns_by_td) if model is not None else False
        self.pool_steps = torch.cat([torch.arange(int(self.starts[e]), int(self.starts[e] + self.lengths[e]))
                                     for e in self.pool.tolist()])  # the pool's steps, for uniform draws

    def num_train_samples(self) -> int:
        return int(self.lengths[self.pool].sum())

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.eval_interval

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """Windows of K steps: an episode drawn in proportion to its length, a uniform start (kzl's
        ``get_batch``: a window runs forward from its start and is left-padded near the episode's end, so
        step t of an episode is covered in proportion to min(t + 1, K)). For a temporal-difference
        learner each row holds K transitions drawn uniformly from the pool's steps instead, as CORL's
        replay buffer samples them: the same batch shape, every step equally likely."""
        K = self.opts["context_len"]
        for _ in range(self.eval_interval):
            if self.learns_by_td:
                pick = torch.randint(len(self.pool_steps), (batch_size, K), generator=generator)
                index, mask = self.pool_steps[pick], torch.ones(batch_size, K, dtype=torch.bool)
            else:
                index, mask = self._windows(batch_size, K, generator)
            a = self.arrays
            yield Trajectories(a["rtg"][index] * mask[..., None], a["states"][index] * mask[..., None],
                               a["actions"][index] * mask[..., None], a["timesteps"][index] * mask, mask,
                               a["targets"][index], a["rewards"][index] * mask,
                               a["next_states"][index] * mask[..., None], a["terminals"][index] * mask)

    def _windows(self, batch_size: int, K: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(index (B, K) into the flat arrays, mask (B, K), False at the left padding) of B windows."""
        lengths = self.lengths[self.pool]
        episode = self.pool[torch.multinomial(lengths.double(), batch_size, replacement=True, generator=generator)]
        length = self.lengths[episode]
        start = (torch.rand(batch_size, generator=generator) * length).long()
        valid = torch.minimum(length - start, torch.tensor(K))  # (B,): real steps in the window
        pos = torch.arange(K) - (K - valid)[:, None]  # (B, K): < 0 is left padding
        mask = pos >= 0
        return self.starts[episode][:, None] + start[:, None] + pos.clamp(min=0), mask

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Sequence and behaviour-cloning models: the action loss at the real steps. A model that
        ``learns_by_td`` (a temporal-difference learner, ``baselines.iql``; ``prepare`` reads it once)
        gets the batch's B K uniformly drawn transitions (state, action, scaled reward, next state,
        terminal, 1 where real) and returns its own objective. Padding is weighted out, never cut out:
        shapes stay fixed and nothing is read back from the device."""
        b = Trajectories(*batch)
        real = b.mask.flatten().float()  # (B K,)
        if self.learns_by_td:  # (set by ``prepare``; the trainer's step runs it inside DDP's forward)
            return model.td_loss(Transitions(b.states.flatten(0, 1), b.actions.flatten(0, 1), b.rewards.flatten(),
                                             b.next_states.flatten(0, 1), b.terminals.flatten(), real))
        pred = model(b.returns_to_go, b.states, b.actions, b.timesteps, b.mask).flatten(0, 1)  # (B K, A)
        if self.env_info["discrete"]:
            per_step = F.cross_entropy(pred, b.targets.flatten().long(), reduction="none")
        else:
            per_step = F.mse_loss(pred, b.targets.flatten(0, 1), reduction="none").mean(-1)
        return (per_step * real).sum() / real.sum()

    # ------------------------------------------------------------------------------- evaluation
    def eval_batches(self, split: str, batch_size: int) -> Iterable[Batch]:
        """One batch: the seeds of the episodes to roll out."""
        if split == "val":
            return [(torch.arange(VAL_SEED, VAL_SEED + self.val_episodes),)]
        return [(torch.arange(TEST_SEED, TEST_SEED + self.opts["eval_episodes"]),)]

    @torch.no_grad()
    def rollout(self, model: nn.Module, seeds: list[int], target_return: float | np.ndarray) -> np.ndarray:
        """Roll out one episode per seed, all in lock step (one batched forward per step), each
        conditioned on ``target_return`` (one for all, or one per seed)."""
        info, K = self.env_info, self.opts["context_len"]
        device = next(model.parameters()).device
        envs = [self.make_env() for _ in seeds]
        N, T, A = len(envs), info["max_episode_steps"], info["act_dim"]
        states = torch.zeros(N, T + 1, info["obs_dim"], device=device)
        actions = torch.zeros(N, T + 1, A, device=device)
        rtg = torch.zeros(N, T + 1, 1, device=device)
        returns, done = np.zeros(N), np.zeros(N, dtype=bool)
        obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)])
        rtg[:, 0, 0] = torch.as_tensor(target_return, dtype=torch.float32, device=device).expand(N) / info["return_scale"]
        mean, std = torch.as_tensor(self.state_mean, device=device), torch.as_tensor(self.state_std, device=device)
        for t in range(T):
            states[:, t] = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean) / std
            lo = max(0, t + 1 - K)
            window = slice(lo, t + 1)
            n = t + 1 - lo
            pad = K - n
            mask = torch.zeros(N, K, dtype=torch.bool, device=device)
            mask[:, pad:] = True
            timesteps = torch.zeros(N, K, dtype=torch.long, device=device)
            timesteps[:, pad:] = torch.arange(lo, t + 1, device=device)
            padded = [F.pad(x[:, window], (0, 0, pad, 0)) for x in (rtg, states, actions)]
            pred = model(padded[0], padded[1], padded[2], timesteps, mask)[:, -1]  # (N, A)
            if info["discrete"]:
                act_index = pred.argmax(-1)
                actions[:, t] = F.one_hot(act_index, A).float()
                env_actions = act_index.cpu().numpy()
            else:
                actions[:, t] = pred.clamp(-1, 1)
                env_actions = self._unscale(actions[:, t].cpu().numpy())
            rewards = np.zeros(N)
            for i, env in enumerate(envs):
                if done[i]:
                    continue
                obs_i, r, terminated, truncated, _ = env.step(env_actions[i])
                obs[i], rewards[i] = obs_i, r
                returns[i] += r
                done[i] = terminated or truncated
            rtg[:, t + 1] = rtg[:, t] - torch.as_tensor(rewards, dtype=torch.float32, device=device)[:, None] / info["return_scale"]
            if done.all():
                break
        for env in envs:
            env.close()
        return returns

    def _normalize(self, returns: np.ndarray) -> np.ndarray:
        ref = self.reference_scores()
        return 100 * (returns - ref["random"]) / (ref["expert"] - ref["random"])

    def evaluate(self, model: nn.Module, batches: Iterable[Batch], items: ItemLog | None = None) -> dict[str, float]:
        seeds = [int(s) for (batch,) in batches for s in batch.tolist()]
        returns = self.rollout(model, seeds, self.target_return)
        normalized = self._normalize(returns)
        if items is not None:  # per episode, named by its environment seed: the normalized and the raw return
            items.add(normalized, item=seeds, raw_return=returns)
        return {"normalized_return": float(normalized.mean()), "normalized_return_std": float(normalized.std()),
                "return_mean": float(returns.mean()), "return_std": float(returns.std()),
                "dataset_return_mean": self.dataset_stats["dataset_return_mean"]}

    def curve_targets(self) -> np.ndarray:
        """The return-conditioning curve's targets: ``curve_fractions`` of the way from the random
        policy's mean return to the ``curve_top_quantile`` of the dataset's episode returns (what the
        data show is reachable: 5% of its episodes got at least that; no target beyond the data)."""
        low = self.reference_scores()["random"]
        high = float(np.quantile(self.returns.numpy(), self.curve_top_quantile, method="higher"))
        return np.array([low + f * (high - low) for f in self.curve_fractions])

    @torch.no_grad()
    def reads_target(self, model: nn.Module, device: torch.device) -> bool:
        """Whether the model's action predictions depend on the returns to go at all: one batch of
        training windows, as they are and with every return to go one return scale higher. BC, %BC and
        IQL read the states only and predict exactly the same actions."""
        batch = next(iter(self.train_batches(16, torch.Generator().manual_seed(0))))
        rtg, states, actions, timesteps, mask = (x.to(device) for x in batch[:5])
        return not torch.equal(model(rtg, states, actions, timesteps, mask),
                               model(rtg + mask[..., None], states, actions, timesteps, mask))

    def examples(self, model: nn.Module, device: torch.device, seed: int) -> dict[str, Any]:
        """The return-conditioning curve: what the policy achieves when asked for other returns
        (``curve_targets``), from ``curve_episodes`` fixed starts (the same seeds at every target, all
        rolled out together), and its summary, the *controllability* (``controllability``): per start,
        Spearman's rank correlation between the targets and the returns achieved from that start,
        averaged over the starts, with a 95% t interval over the starts (``controllability_ci95``, its
        half-width). NaN ("-" on the leaderboard) for a model whose actions do not depend on the target
        (``reads_target``: BC, %BC, IQL), which is not measured, not 0."""
        targets = self.curve_targets()
        seeds = list(range(CURVE_SEED, CURVE_SEED + self.curve_episodes))
        returns = self.rollout(model, seeds * len(targets), np.repeat(targets, len(seeds)))
        per_target = returns.reshape(len(targets), len(seeds))  # (targets, starts)
        rows = [{"target_return": float(t), "achieved_return": float(r.mean()), "achieved_std": float(r.std()),
                 "achieved_normalized": float(self._normalize(r).mean()), "episodes": len(seeds)}
                for t, r in zip(targets, per_target)]
        reads = self.reads_target(model, device)
        control, half_width = controllability(targets, per_target) if reads else (math.nan, math.nan)
        return {"tables": {"return_conditioning": rows},
                "metrics": {"controllability": control, "controllability_ci95": half_width},
                "target_return": self.target_return, **self.dataset_stats}


def controllability(targets: np.ndarray, achieved: np.ndarray) -> tuple[float, float]:
    """Control over the return, paired by start: ``targets`` (T,) and ``achieved`` (T, S), the return
    achieved from each of S starts at each target. Per start, Spearman's rank correlation between the
    targets and that start's returns (1: asking for more always got more; 0: the target made no
    difference there, which includes a start whose return never changed); then the mean over the
    starts and the half-width of its 95% Student-t interval over the starts (NaN with one start).
    Pairing by start keeps the differences between starts (some are easy, some hard) out of it, which
    a correlation pooled over all episodes mixes in."""
    if np.ptp(targets) == 0:
        raise ValueError("controllability needs at least two different targets")
    per_start = np.array([0.0 if np.ptp(column) == 0 else spearmanr(targets, column).statistic
                          for column in np.asarray(achieved, dtype=float).T])
    n = len(per_start)
    half_width = (float(student_t.ppf(0.975, n - 1) * per_start.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan)
    return float(per_start.mean()), half_width


SHORT_NAMES = {"CartPole-v1": "cartpole", "Pendulum-v1": "pendulum", "MountainCarContinuous-v0": "mountaincar",
               "KeyToDoor-v0": "keytodoor", "LuckyGamble-v0": "gamble"}
# The datasets each environment has as a task: the classic-control ones at three qualities, CartPole and
# Pendulum also as a learner's replay buffer (tasks.rl.controllers.FAMILIES); Key-to-Door
# from random walks, as in the DT paper (and mixed: a few expert and medium episodes among them); the
# gamble from a uniform-random policy, as in Paster et al. 2022.
QUALITIES = {"KeyToDoor-v0": ("random", "mixed"), "LuckyGamble-v0": ("random",),
             "CartPole-v1": ("expert", "medium", "mixed", "replay"),
             "Pendulum-v1": ("expert", "medium", "mixed", "replay")}
DELAYED = {"cartpole-mixed", "pendulum-mixed", "mountaincar-mixed"}  # also as <name>-delayed
# The quick `harness run rl` (one seed, within 10 CPU minutes); suites/published.toml runs them all.
DEFAULT_TASKS = {"cartpole-mixed", "pendulum-mixed", "keytodoor-random", "gamble-random"}
# Episodes of 10-20 steps cost little to roll out: their test scores average 100 episodes, not 10.
EVAL_EPISODES = {"KeyToDoor-v0": 100, "LuckyGamble-v0": 100}
WHAT = {"KeyToDoor-v0": "credit assignment: the key picked up in room 1 opens the door in room 3",
        "LuckyGamble-v0": "stochastic rewards: the data's high returns are luck, playing safe is optimal"}
# For the report: what each dataset asks of the four kinds of learner (sequence models conditioned on
# the return: DT, Decision LSTM; cloning: BC, %BC; temporal differences: IQL). What the learners reach
# on them is measured, not written here: the leaderboards and reports show it from the records.
ABOUT = {
    "mixed": "Random, medium and expert episodes (40/50/10%) of three fixed controllers. The medium "
             "controller is systematically different from the expert, so cloning everything (BC) copies "
             "a blend; the best 10% by return are exactly the expert's episodes, so %BC is cloning the "
             "expert (an oracle filter here; see the replay datasets); the DT must find the expert by "
             "asking for its return, IQL by its values.",
    "medium": "One medium controller only: nothing better to find in the data. BC is the natural "
              "learner; return conditioning and filtering can only pick its luckier episodes.",
    "expert": "Expert episodes only: every learner should clone them.",
    "KeyToDoor-v0": "Random walks (the DT paper's Key-to-Door): only the walks that stumbled on the "
                    "key and then on the door (17%) pay. BC copies the walk and fails; %BC keeps "
                    "those that paid; the DT asks for a return of 1, and must tie the door's reward "
                    "to the key picked up 5-19 steps earlier, which it sees in its context; IQL must "
                    "propagate the reward back through the distractor room by temporal differences.",
    "LuckyGamble-v0": "Uniform-random play of safe (+1) and gamble (+4 with p = 0.2, else -1) for 10 "
                      "steps: every return above 10 is luck, and the top 10% by return all gambled. The "
                      "evaluation asks for the data's 90th percentile, the return of the episodes %BC "
                      "keeps: more than playing safe guarantees, so a return-conditioned model is asked "
                      "to repeat luck (Paster et al. 2022). Playing safe (10) is optimal; a critic that "
                      "averages the outcomes (IQL) should find it, and the return-conditioning curve shows "
                      "where a DT starts to gamble.",
    "replay": "The buffer of a learning agent, as D4RL's medium-replay is SAC's: the cross-entropy method "
              "over the controller family's parameters, every episode of every iteration until its mean "
              "return reaches about the medium controller's. Many poor and mediocre episodes, a few "
              "good ones, none from the expert: the best 10% are the learner's, not the expert's, so "
              "%BC is no oracle filter here. BC clones the whole learning history; the DT must ask for "
              "returns the data reached; IQL must stitch.",
    "delayed": " Delayed variant (the DT paper's): every reward arrives at the episode's last step, so "
               "temporal-difference learning must carry it back through the whole episode, while the DT's "
               "return to go stays the episode's return throughout and BC and %BC do not read rewards.",
}


def dataset_task(env_id: str, quality: str, delayed: bool = False) -> type[OfflineRLTask]:
    """The task of ``env_id``'s ``quality`` dataset (``-delayed``: all reward at the episode's end), as a
    registered subclass of ``OfflineRLTask`` named like 'cartpole-mixed'."""
    name = f"{SHORT_NAMES[env_id]}-{quality}" + ("-delayed" if delayed else "")
    what = f"{env_id} ({WHAT[env_id]})" if env_id in WHAT else env_id
    options = OfflineRLTask.options
    if env_id in EVAL_EPISODES:
        options = {**options, "eval_episodes": replace(options["eval_episodes"], default=EVAL_EPISODES[env_id])}
    about = ABOUT.get(env_id, ABOUT.get(quality, "")) + (ABOUT["delayed"] if delayed else "")
    description = (f"{what}, {quality} behaviour dataset{', all reward at the end' if delayed else ''}; "
                   "offline, rolled out in gymnasium")
    namespace = {"name": name, "env_id": env_id, "quality": quality, "delayed": delayed, "options": options,
                 "default": name in DEFAULT_TASKS, "__module__": __name__,
                 "report": replace(OfflineRLTask.report, description=description, about=about)}
    return register_task(type(name.title().replace("-", ""), (OfflineRLTask,), namespace))


DATASET_TASKS = [dataset_task(env_id, quality, delayed)
                 for env_id, short in SHORT_NAMES.items()
                 for quality in QUALITIES.get(env_id, ("expert", "medium", "mixed"))
                 for delayed in ((False, True) if f"{short}-{quality}" in DELAYED else (False,))]
