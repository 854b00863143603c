"""Behaviour-cloning baselines of the Decision Transformer paper (Chen et al. 2021, section 5).

``bc_mlp``: behaviour cloning with an MLP from the current state alone: each position of the window
is mapped on its own, state s_t (B, K, state_dim) -> action a_t (B, K, act_dim), through hidden layers
with ReLU and dropout (as kzl/decision-transformer's ``MLPBCModel``, but reading one state, not the
K concatenated last ones), tanh on continuous actions, logits for discrete ones. ``forward`` takes
the Decision Transformer's arguments so that a task trains both alike; it ignores the returns to go,
actions, timesteps and mask (the loss masks padding).

``bc_top10``: "%BC" of the paper, the same network trained only on the best 10% of the trajectories
by return. The model declares ``trajectory_fraction = 0.1`` (``bc_mlp``: 1.0) and ``learns_by_td =
False``, what the offline-RL task needs of it (``tasks.base.TrajectoryLearner``); the task reads them
once, when the model is built, to filter its data.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from zoo.trajectory import DT_PAPER_RECIPE
from zoo.options import DROPOUT
from zoo.registry import register_model


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers through ``sizes``, each but the last followed by ReLU and dropout (the offline-RL
    baselines' network: BC's policy, IQL's policy, value and critics)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class BCMLP(nn.Module):
    """state (B, K, state_dim) -> action (B, K, act_dim), position by position."""

    learns_by_td = False  # imitation of the data's actions (trajectory_fraction: set per instance)

    def __init__(self, state_dim: int, act_dim: int, *, hidden_dim: int = 256, num_layers: int = 3,
                 dropout: float = 0.1, discrete: bool = False, trajectory_fraction: float = 1.0,
                 context_len: int | None = None) -> None:
        super().__init__()
        if not 0.0 < trajectory_fraction <= 1.0:
            raise ValueError(f"trajectory_fraction must be in (0, 1], got {trajectory_fraction}")
        self.state_dim, self.act_dim, self.discrete = state_dim, act_dim, discrete
        self.trajectory_fraction, self.context_len = trajectory_fraction, context_len
        self.net = mlp([state_dim, *[hidden_dim] * num_layers, act_dim], dropout)  # num_layers hidden layers
        if not discrete:
            self.net.append(nn.Tanh())

    def forward(self, returns_to_go: Tensor | None, states: Tensor, actions: Tensor | None = None,
                timesteps: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The Decision Transformer's signature; only states (B, K, state_dim) are read.
        Returns (B, K, act_dim): tanh-squashed actions, or logits when discrete."""
        return self.net(states)


# Sizes: matched to the Decision Transformer of the same size within 10% in parameters, the DT's
# timestep table included, for both specs the tests check (max_ep_len 500 and 200); the DT's count
# depends on max_ep_len and this one's hardly at all, so each width sits between the two.
BC_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_dim=292, num_layers=3, dropout=0.0),
    "small": dict(hidden_dim=560, num_layers=3, dropout=0.1),
    "base": dict(hidden_dim=1120, num_layers=5, dropout=0.1),
}


# num_layers counts the hidden layers: 0 is a linear policy (state -> action), the plainest BC there is.
BC_BOUNDS = {"dropout": DROPOUT, "num_layers": (0, None)}


def _bc(spec: dict[str, Any], trajectory_fraction: float, cfg: dict[str, Any]) -> BCMLP:
    return BCMLP(spec["state_dim"], spec["act_dim"], discrete=bool(spec.get("discrete", False)),
                 trajectory_fraction=trajectory_fraction, context_len=spec.get("context_len"), **cfg)


# ``small``: the DT paper trains its BC baselines with the DT's own recipe (experiment.py).
@register_model("bc_mlp", family="baseline", kinds=("offline_rl",), lr=1e-3, weight_decay=1e-4,
                size_defaults={"small": DT_PAPER_RECIPE},
                presets=BC_PRESETS, width="hidden_dim", bounds=BC_BOUNDS)
def bc_mlp(spec: dict[str, Any], **cfg: Any) -> BCMLP:
    """Behaviour cloning: an MLP from the current state to the action, on all trajectories."""
    return _bc(spec, 1.0, cfg)


@register_model("bc_top10", family="baseline", kinds=("offline_rl",), lr=1e-3, weight_decay=1e-4,
                size_defaults={"small": DT_PAPER_RECIPE},
                presets=BC_PRESETS, width="hidden_dim", bounds=BC_BOUNDS)
def bc_top10(spec: dict[str, Any], **cfg: Any) -> BCMLP:
    """%BC (Chen et al. 2021): behaviour cloning on the top 10% of trajectories by return."""
    return _bc(spec, 0.1, cfg)
