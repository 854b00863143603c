"""Implicit Q-Learning (Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit
Q-Learning"), the temporal-difference baseline of the offline-RL domain; CORL's single-file
``algorithms/offline/iql.py`` is the reference this follows.

Three learners on one batch of transitions (s, a, r, s', done), each with its own loss on its own
parameters:

- **V(s)** by expectile regression towards the target critic: L_V = E[|tau - 1(u < 0)| u^2] with
  u = min(Q1', Q2')(s, a) - V(s) and tau = 0.7 (CORL's locomotion value). tau > 0.5 makes V an upper
  expectile of Q over the data's actions: a maximum over in-distribution actions, without querying
  actions the data never took.
- **Twin Q(s, a)** by mean-squared TD error towards r + gamma (1 - done) V(s'), gamma = 0.99; the
  target critic (Q1', Q2') follows the twins by Polyak averaging, tau_target = 0.005 per step.
- **The policy** by advantage-weighted regression: L_pi = E[exp(beta (Q' - V)) * -log pi(a | s)],
  beta = 3, the weight clipped at 100. Continuous actions: CORL's default Gaussian policy, mean =
  tanh(MLP(s)) and a state-independent log standard deviation; discrete actions: a categorical policy
  over logits, the Q networks output one value per action.

The three losses depend on disjoint parameters (what one learner reads from another is detached), so
their sum under one optimizer is the three updates of CORL's three Adam optimizers. Departures from
CORL, for the harness's equal-budget rule: one AdamW and the task's warm-up + cosine schedule for all
three learners (CORL: constant rate for V and Q, cosine for the policy), the harness's gradient clip, and
the task's batches (every real step of its windows is a transition). Rewards arrive scaled by the task
(``OfflineRLTask.td_reward_scale``: the dataset's return range maps onto the episode length, CORL's
1000 / (max return - min return) for 1000-step MuJoCo episodes).

The target critic lives in buffers (``target_q1_*``, ``target_q2_*``): saved and restored with the
model, moved with it, not counted as parameters, not trained. ``td_loss`` first moves it towards the twins, so each call
is one training step, as CORL's ``soft_update`` after each step.

Acting: ``forward`` takes the Decision Transformer's arguments, reads the states only and returns the
policy's mean action (tanh-bounded) or its logits, position by position; the task rolls it out as any
of its models.
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


class IQL(nn.Module):
    """Policy, value and twin critics of IQL; ``td_loss`` is the training objective."""

    def __init__(self, state_dim: int, act_dim: int, *, hidden_dim: int = 256, num_layers: int = 2,
                 discrete: bool = False, dropout: float = 0.0, discount: float = 0.99, expectile: float = 0.7,
                 beta: float = 3.0, target_tau: float = 0.005, context_len: int | None = None) -> None:
        super().__init__()
        if not 0.0 < expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {expectile}")
        self.state_dim, self.act_dim, self.discrete, self.context_len = state_dim, act_dim, discrete, context_len
        self.discount, self.expectile, self.beta, self.target_tau = discount, expectile, beta, target_tau
        hidden = [hidden_dim] * num_layers
        q_in, q_out = (state_dim, act_dim) if discrete else (state_dim + act_dim, 1)
        self.actor = mlp([state_dim, *hidden, act_dim], dropout)  # CORL: actor dropout (0 by default)
        self.log_std = None if discrete else nn.Parameter(torch.zeros(act_dim))
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

    learns_by_td = True  # the offline-RL task trains it on transitions (forward's ``transitions``)

    def forward(self, returns_to_go: Tensor | None, states: Tensor, actions: Tensor | None = None,
                timesteps: Tensor | None = None, mask: Tensor | None = None,
                transitions: tuple[Tensor, ...] | None = None) -> Tensor:
        """The Decision Transformer's signature; only states (B, K, state_dim) are read.
        Returns (B, K, act_dim): the policy's mean action (tanh), or its logits when discrete.
        With ``transitions`` = (rewards, next_states, terminals[, real]) for N (state, action) rows, the training
        loss instead (``td_loss``): through ``forward``, so that DDP and torch.compile see the step."""
        if transitions is not None:
            return self.td_loss(states, actions, *transitions)
        out = self.actor(states)
        return out if self.discrete else torch.tanh(out)

    def log_prob(self, states: Tensor, actions: Tensor) -> Tensor:
        """log pi(a | s) for (N, S) states and (N, A) actions (one-hot when discrete) -> (N,)."""
        if self.discrete:
            return (F.log_softmax(self.actor(states), -1) * actions).sum(-1)
        std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        mean = torch.tanh(self.actor(states))  # validate_args off: its support check reads a value back
        return torch.distributions.Normal(mean, std, validate_args=False).log_prob(actions).sum(-1)

    # ----------------------------------------------------------------------------- the loss
    def td_loss(self, states: Tensor, actions: Tensor, rewards: Tensor, next_states: Tensor,
                terminals: Tensor, real: Tensor | None = None) -> Tensor:
        """One IQL step on N transitions: states (N, S), actions (N, A) (one-hot when discrete, in
        [-1, 1] when continuous), rewards (N,) (scaled by the task), next_states (N, S), terminals (N,)
        (1 where the episode truly ended: no bootstrap); ``real`` (N,), 1 for a transition and 0 for
        padding, which every mean then leaves out (a fixed N: no data-dependent shapes, no host sync).
        The sum of the value, critic and policy losses."""
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
        policy_loss = -_mean(weight * self.log_prob(states, actions), real)
        return value_loss + q_loss + policy_loss


def _mean(values: Tensor, real: Tensor | None) -> Tensor:
    """The mean of ``values`` (N,) over the rows where ``real`` is 1 (all rows without it)."""
    return values.mean() if real is None else (values * real).sum() / real.sum()


# CORL's hyperparameters (locomotion): settable with --model-opt, e.g. expectile=0.9 (its antmaze value).
IQL_DEFAULTS = dict(discount=0.99, expectile=0.7, beta=3.0, target_tau=0.005)

# Sizes: the policy, the value and the twin critics together (the target critic is not counted: it
# is not trained) within 10% of the Decision Transformer of the same size, as BC is; CORL's networks
# are 2 hidden layers of 256.
IQL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_dim=205, num_layers=2, dropout=0.0, **IQL_DEFAULTS),
    "small": dict(hidden_dim=400, num_layers=2, dropout=0.0, **IQL_DEFAULTS),
    "base": dict(hidden_dim=770, num_layers=3, dropout=0.0, **IQL_DEFAULTS),
}


# CORL: Adam lr 3e-4 for all three learners, no weight decay.
@register_model("iql", family="baseline", kinds=("offline_rl",), lr=3e-4, weight_decay=0.0,
                presets=IQL_PRESETS, width="hidden_dim",
                bounds={"dropout": DROPOUT, "num_layers": (1, None), "discount": Range(0.0, 1.0),
                        "expectile": Range(0.0, 1.0, min_open=True, max_open=True), "beta": Range(0.0, None),
                        "target_tau": Range(0.0, 1.0, min_open=True)})
def iql(spec: dict[str, Any], **cfg: Any) -> IQL:
    """Implicit Q-Learning (Kostrikov et al. 2021): expectile value, twin critics, advantage-weighted policy."""
    return IQL(spec["state_dim"], spec["act_dim"], discrete=bool(spec.get("discrete", False)),
               context_len=spec.get("context_len"), **cfg)
