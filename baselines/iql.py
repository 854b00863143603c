"""Implicit Q-Learning (Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit
Q-Learning"), the temporal-difference baseline of the offline-RL domain; CORL's single-file
``algorithms/offline/iql.py`` (and its ``configs/offline/iql/*``) is the reference this follows.

Three learners on one batch of transitions (s, a, r, s', done), each with its own loss on its own
parameters:

- **V(s)** by expectile regression towards the target critic: L_V = E[|tau - 1(u < 0)| u^2] with
  u = min(Q1', Q2')(s, a) - V(s) and tau = 0.7 (CORL's ``iql_tau`` in 17 of its 18 locomotion
  configs). tau > 0.5 makes V an upper expectile of Q over the data's actions: a maximum over
  in-distribution actions, without querying actions the data never took.
- **Twin Q(s, a)** by mean-squared TD error towards r + gamma (1 - done) V(s'), gamma = 0.99; the
  target critic (Q1', Q2') follows the twins by Polyak averaging, ``target_tau`` per step.
- **The policy** by advantage-weighted regression: L_pi = E[exp(beta (Q' - V)) * bc(s, a)], beta = 3,
  the weight clipped at 100. ``actor="gaussian"`` (CORL's ``GaussianPolicy``): bc = -log pi(a | s),
  mean tanh(MLP(s)) and a state-independent log standard deviation; ``actor="deterministic"`` (CORL's
  ``DeterministicPolicy``, ``iql_deterministic: true``): bc = ||tanh(MLP(s)) - a||^2. Discrete actions
  (no CORL counterpart): a categorical policy over logits whatever ``actor`` says, and the Q networks
  output one value per action.

CORL's locomotion configs (halfcheetah, hopper, walker2d x random, medium, medium-replay,
medium-expert, expert, full-replay; checked at CORL's last commit): 16 of the 18 use the Gaussian actor
and tau 0.005 with unscaled rewards; hopper-medium and hopper-medium-replay use the deterministic actor,
tau 0.001 and scaled rewards (hopper-medium-expert: beta 6, iql_tau 0.5). The defaults here are the
majority's: ``actor="gaussian"``, ``target_tau=0.005``; ``--model-opt actor=deterministic
--model-opt target_tau=0.001`` is the hopper recipe.

As CORL: no gradient clipping (registered ``grad_clip=None``: the harness's default clip of the total
norm at 1.0 would tie the three learners' steps together, a large Q gradient shrinking the actor's
and V's), no warm-up (``warmup_frac=0``), Adam's lr 3e-4 without weight decay, transitions drawn
uniformly from the dataset (``tasks.rl.tasks.OfflineRLTask.train_batches``), states z-scored. The
three losses depend on disjoint parameters (what one learner reads from another is detached), so
their sum under one optimizer is the three updates of CORL's three optimizers; CORL's order (V, then Q
with next V computed before V's step, then the policy with V's advantage before its step, then the
target) is the same computation on the same parameters. Departures from CORL that remain:

- one AdamW (weight decay 0: Adam's update) and one schedule for all three learners, the harness's
  cosine decay to 0 over the run (CORL: constant lr for V and Q, cosine over 1M steps for the policy);
- the budget: the task's 1000 steps of batch_size x K = 64 x 20 = 1280 transitions (CORL: 1M steps
  of 256);
- rewards always scaled by the task (``OfflineRLTask.td_reward_scale``, the dataset's return range
  mapped onto the episode length: CORL's ``normalize_reward`` for locomotion, which it turns on only
  for hopper-medium and -medium-replay);
- state normalisation adds 1e-6 to the std (CORL: 1e-3);
- network sizes matched to the Decision Transformer's parameters (``IQL_PRESETS``; CORL: 2 x 256);
- discrete actions (categorical policy, Q per action), which CORL does not have;
- evaluation: the harness's fixed-seed rollouts of the mean action, the last checkpoint.

The target critic lives in buffers (``target_q1_*``, ``target_q2_*``): saved and restored with the
model, moved with it, not counted as parameters, not trained. ``td_loss`` first moves it towards the
twins, so each call is one training step, as CORL's ``soft_update`` after each step.

Acting: ``forward`` takes the Decision Transformer's arguments, reads the states only and returns the
policy's mean action (tanh-bounded) or its logits, position by position; the task rolls it out as any
of its models. Training: ``forward(..., transitions=...)`` returns ``td_loss`` (through forward, so
that DDP and torch.compile see the step).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from zoo.options import DROPOUT, Range
from zoo.registry import register_model

from .mlp import mlp

EXP_ADV_MAX = 100.0  # CORL's clip on the advantage weight
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # CORL's GaussianPolicy
ACTORS = ("gaussian", "deterministic")  # CORL's GaussianPolicy and DeterministicPolicy


class IQL(nn.Module):
    """Policy, value and twin critics of IQL; ``td_loss`` is the training objective."""

    def __init__(self, state_dim: int, act_dim: int, *, hidden_dim: int = 256, num_layers: int = 2,
                 discrete: bool = False, dropout: float = 0.0, discount: float = 0.99, expectile: float = 0.7,
                 beta: float = 3.0, target_tau: float = 0.005, actor: str = "gaussian",
                 context_len: int | None = None) -> None:
        super().__init__()
        if not 0.0 < expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {expectile}")
        if actor not in ACTORS:
            raise ValueError(f"actor must be one of {', '.join(ACTORS)}, got {actor!r}")
        self.actor_kind = "categorical" if discrete else actor
        self.state_dim, self.act_dim, self.discrete, self.context_len = state_dim, act_dim, discrete, context_len
        self.discount, self.expectile, self.beta, self.target_tau = discount, expectile, beta, target_tau
        hidden = [hidden_dim] * num_layers
        q_in, q_out = (state_dim, act_dim) if discrete else (state_dim + act_dim, 1)
        self.actor = mlp([state_dim, *hidden, act_dim], dropout)  # CORL: actor dropout (0 by default)
        self.log_std = nn.Parameter(torch.zeros(act_dim)) if self.actor_kind == "gaussian" else None
        self.q1, self.q2 = mlp([q_in, *hidden, q_out]), mlp([q_in, *hidden, q_out])
        self.value = mlp([state_dim, *hidden, 1])
        for name, p in self._critic_params().items():  # the target critic starts as a copy of the twins
            self.register_buffer(self._target_name(name), p.detach().clone())

    # ----------------------------------------------------------------------------- the parts
    @staticmethod
    def _target_name(name: str) -> str:
        return "target_" + name.replace(".", "_")

    def _critic_params(self) -> dict[str, Tensor]:
        return {f"q{i}.{n}": p for i, q in ((1, self.q1), (2, self.q2)) for n, p in q.named_parameters()}

    @torch.no_grad()
    def update_target(self) -> None:
        """Polyak averaging: target <- (1 - tau) target + tau twins."""
        for name, p in self._critic_params().items():
            getattr(self, self._target_name(name)).lerp_(p, self.target_tau)

    def _q(self, net: str, states: Tensor, actions: Tensor, target: bool) -> Tensor:
        """Q(s, a) of ``q1``/``q2`` (or their targets) for (N, S) states and (N, A) actions (one-hot
        when discrete) -> (N,)."""
        module = getattr(self, net)
        x = states if self.discrete else torch.cat([states, actions], -1)
        if target:
            params = {n: getattr(self, self._target_name(f"{net}.{n}")) for n, _ in module.named_parameters()}
            out = functional_call(module, params, (x,))
        else:
            out = module(x)
        return (out * actions).sum(-1) if self.discrete else out.squeeze(-1)

    trajectory_fraction = 1.0  # every episode (tasks.base.TrajectoryLearner)
    learns_by_td = True  # the offline-RL task trains it on uniformly drawn transitions, through ``td_loss``

    def forward(self, returns_to_go: Tensor | None, states: Tensor, actions: Tensor | None = None,
                timesteps: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The Decision Transformer's signature; only states (B, K, state_dim) are read.
        Returns (B, K, act_dim): the policy's mean action (tanh), or its logits when discrete."""
        out = self.actor(states)
        return out if self.discrete else torch.tanh(out)

    def log_prob(self, states: Tensor, actions: Tensor) -> Tensor:
        """log pi(a | s) for (N, S) states and (N, A) actions (one-hot when discrete) -> (N,); the
        categorical or the Gaussian policy."""
        if self.discrete:
            return (F.log_softmax(self.actor(states), -1) * actions).sum(-1)
        std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        mean = torch.tanh(self.actor(states))  # validate_args off: its support check reads a value back
        return torch.distributions.Normal(mean, std, validate_args=False).log_prob(actions).sum(-1)

    def cloning_loss(self, states: Tensor, actions: Tensor) -> Tensor:
        """The per-transition loss that the advantage weights: -log pi(a | s), or the squared error of
        the deterministic actor's action (CORL's ``_update_policy``) -> (N,)."""
        if self.actor_kind == "deterministic":
            return (torch.tanh(self.actor(states)) - actions).square().sum(-1)
        return -self.log_prob(states, actions)

    # ----------------------------------------------------------------------------- the loss
    def td_loss(self, transitions: Any) -> Tensor:
        """One IQL step on N transitions (``tasks.base.TDLearner``; a ``tasks.rl.tasks.Transitions``, or
        any tuple of its fields in its order): states (N, S), actions (N, A) (one-hot when discrete, in
        [-1, 1] when continuous), rewards (N,) (scaled by the task), next_states (N, S), terminals (N,)
        (1 where the episode truly ended: no bootstrap); ``real`` (N,), 1 for a transition and 0 for
        padding, which every mean then leaves out (a fixed N: no data-dependent shapes, no host sync).
        The sum of the value, critic and policy losses."""
        states, actions, rewards, next_states, terminals, *rest = transitions
        real = rest[0] if rest else None
        self.update_target()
        with torch.no_grad():
            target_q = torch.minimum(self._q("q1", states, actions, True), self._q("q2", states, actions, True))
            next_v = self.value(next_states).squeeze(-1)
            td_target = rewards + self.discount * (1.0 - terminals.float()) * next_v
        v = self.value(states).squeeze(-1)
        u = target_q - v
        value_loss = _mean(torch.abs(self.expectile - (u < 0).float()) * u.square(), real)
        q_loss = (_mean((self._q("q1", states, actions, False) - td_target).square(), real)
                  + _mean((self._q("q2", states, actions, False) - td_target).square(), real)) / 2
        weight = torch.exp(self.beta * u.detach()).clamp(max=EXP_ADV_MAX)
        policy_loss = _mean(weight * self.cloning_loss(states, actions), real)
        return value_loss + q_loss + policy_loss


def _mean(values: Tensor, real: Tensor | None) -> Tensor:
    """The mean of ``values`` (N,) over the rows where ``real`` is 1 (all rows without it)."""
    return values.mean() if real is None else (values * real).sum() / real.sum()


# CORL's hyperparameters (the majority of its locomotion configs): settable with --model-opt, e.g.
# expectile=0.9 (its antmaze value), or actor=deterministic target_tau=0.001 (hopper-medium(-replay)).
IQL_DEFAULTS = dict(discount=0.99, expectile=0.7, beta=3.0, target_tau=0.005, actor="gaussian")

# Sizes: the policy, the value and the twin critics together (the target critic is not counted: it
# is not trained) within 10% of the Decision Transformer of the same size, as BC is; CORL's networks
# are 2 hidden layers of 256.
IQL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_dim=205, num_layers=2, dropout=0.0, **IQL_DEFAULTS),
    "small": dict(hidden_dim=400, num_layers=2, dropout=0.0, **IQL_DEFAULTS),
    "base": dict(hidden_dim=770, num_layers=3, dropout=0.0, **IQL_DEFAULTS),
}


# CORL: Adam lr 3e-4 for all three learners, no weight decay, no warm-up, no gradient clipping.
@register_model("iql", family="baseline", kinds=("offline_rl",), lr=3e-4, weight_decay=0.0, warmup_frac=0.0,
                grad_clip=None, presets=IQL_PRESETS, width="hidden_dim",
                bounds={"dropout": DROPOUT, "num_layers": (1, None), "discount": Range(0.0, 1.0),
                        "expectile": Range(0.0, 1.0, min_open=True, max_open=True), "beta": Range(0.0, None),
                        "target_tau": Range(0.0, 1.0, min_open=True)},
                choices={"actor": ACTORS})
def iql(spec: dict[str, Any], **cfg: Any) -> IQL:
    """Implicit Q-Learning (Kostrikov et al. 2021): expectile value, twin critics, advantage-weighted policy."""
    return IQL(spec["state_dim"], spec["act_dim"], discrete=bool(spec.get("discrete", False)),
               context_len=spec.get("context_len"), **cfg)
