"""The trajectory tokens and heads shared by the Decision Transformer (``zoo.decision_transformer``)
and the Decision LSTM (``baselines.lstm``; Siebenborn et al. 2022 swap the GPT for an LSTM, all else
equal).

A trajectory window of K steps becomes 3K tokens (R_1, s_1, a_1, R_2, s_2, a_2, ...), where R_t is the
return to go. Each modality has its own linear embedding, a learned *timestep* embedding (the step's
index in its episode) is added to all three tokens of a step, a LayerNorm follows, a causal trunk
reads the sequence, and the action a_t is predicted from the hidden state of the state token s_t.

``TrajectoryModel``: those tokens and heads; subclasses provide ``trunk``: (B, 3K, H) tokens and a
(B, 3K) mask -> (B, 3K, H). ``trajectory_spec``: the constructor arguments an ``offline_rl`` spec
gives every trajectory model.

Initialisation of the tokens and heads (``init``, one of ``INITS``; the trunk keeps its own):

- ``"kzl"``: kzl/decision-transformer's: the outer ``nn.Linear`` embeddings and heads at PyTorch's
  defaults (Kaiming-uniform weights, uniform biases) and the timestep table at ``nn.Embedding``'s
  N(0, 1), whose rows (norm ~sqrt(H)) outweigh a state's embedding. Its 100k steps at lr 1e-4 wash
  that out; a short run may not.
- ``"hf"``: Hugging Face's ``DecisionTransformerModel.post_init``: every embedding and head, the
  timestep table included, N(0, 0.02) with zero biases (GPT-2's init).
- ``"timestep"``: PyTorch's defaults as ``"kzl"``, but the timestep table N(0, 0.02): the per-step
  code no longer dominates the tokens, the rest starts as in the original.

``DEFAULT_INIT`` is the one chosen on validation returns across the offline-RL tasks (see
``zoo.decision_transformer``'s presets); weights copied from a reference (``from_hf``) make it moot.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn


INITS = ("kzl", "hf", "timestep")
DEFAULT_INIT = "timestep"  # the best mean validation return, 7 offline-RL tasks x 3 seeds (zoo.decision_transformer)
GPT2_STD = 0.02  # GPT-2's (and HF's ``initializer_range``) normal std


def init_tokens_and_heads_(model: TrajectoryModel, init: str) -> None:
    """Initialise ``model``'s embeddings and heads as ``init`` says (``INITS``; see the module
    docstring). The modules were just built, so PyTorch's defaults are already in place."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if init == "kzl":
        return
    nn.init.normal_(model.embed_timestep.weight, std=GPT2_STD)
    if init == "timestep":
        return
    for module in (model.embed_return, model.embed_state, model.embed_action,
                   model.predict_state, model.predict_action[0], model.predict_return):
        nn.init.normal_(module.weight, std=GPT2_STD)
        nn.init.zeros_(module.bias)


class TrajectoryModel(nn.Module, metaclass=ABCMeta):
    """Return-conditioned policy over interleaved (R, s, a) tokens; the trunk is a subclass's.

    Args:
        state_dim, act_dim: sizes of a state and of an action (number of actions when ``discrete``).
        hidden_dim: token width H.
        max_ep_len: timesteps run from 0 to max_ep_len - 1 (the timestep embedding table).
        discrete: actions are one-hot inputs and ``forward`` returns logits.
        action_tanh: squash continuous predictions into (-1, 1); default ``not discrete``.
        dropout: on the embedded tokens (GPT-2's embedding dropout).
        context_len: the K the model is trained with (kept for the task; nothing here depends on it).
        init: how the tokens and heads start, one of ``INITS`` (see the module docstring).
    """

    trajectory_fraction = 1.0  # trains on every episode (what an offline-RL task needs declared)
    learns_by_td = False  # learns by imitation of the windows, not by temporal differences

    def __init__(self, state_dim: int, act_dim: int, *, hidden_dim: int, max_ep_len: int,
                 discrete: bool = False, action_tanh: bool | None = None, dropout: float = 0.0,
                 context_len: int | None = None, init: str = DEFAULT_INIT) -> None:
        super().__init__()
        self.state_dim, self.act_dim, self.hidden_dim = state_dim, act_dim, hidden_dim
        self.max_ep_len, self.discrete, self.context_len = max_ep_len, discrete, context_len
        action_tanh = not discrete if action_tanh is None else action_tanh
        self.embed_timestep = nn.Embedding(max_ep_len, hidden_dim)
        self.embed_return = nn.Linear(1, hidden_dim)
        self.embed_state = nn.Linear(state_dim, hidden_dim)
        self.embed_action = nn.Linear(act_dim, hidden_dim)
        self.embed_ln = nn.LayerNorm(hidden_dim)
        self.embed_dropout = nn.Dropout(dropout)
        # Heads. Only the action is trained by the DT paper; state and return heads exist, as in the
        # official code and HF, reading the action token (the next state/return given s_t and a_t).
        self.predict_state = nn.Linear(hidden_dim, state_dim)
        self.predict_action = nn.Sequential(nn.Linear(hidden_dim, act_dim),
                                            nn.Tanh() if action_tanh else nn.Identity())
        self.predict_return = nn.Linear(hidden_dim, 1)
        self.init = init
        init_tokens_and_heads_(self, init)

    @abstractmethod
    def trunk(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, 3K, H) embedded tokens, mask (B, 3K) bool True at real tokens -> (B, 3K, H),
        causally: output i depends on tokens 0..i only."""

    def encode(self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor,
               mask: Tensor | None = None) -> Tensor:
        """The trunk's hidden states regrouped by modality: (B, 3, K, H), [:, 0] at the return
        tokens, [:, 1] at the state tokens, [:, 2] at the action tokens."""
        B, K = states.shape[:2]
        H = self.hidden_dim
        if mask is None:
            mask = torch.ones(B, K, dtype=torch.bool, device=states.device)
        time = self.embed_timestep(timesteps)  # (B, K, H)
        tokens = torch.stack((self.embed_return(returns_to_go) + time,  # (B, K, H) each
                              self.embed_state(states) + time,
                              self.embed_action(actions) + time), dim=2)  # (B, K, 3, H)
        x = self.embed_dropout(self.embed_ln(tokens.reshape(B, 3 * K, H)))  # (R_1, s_1, a_1, R_2, ...)
        token_mask = mask.bool().repeat_interleave(3, dim=1)  # (B, 3K): the 3 tokens of a step
        x = self.trunk(x, token_mask)  # (B, 3K, H)
        return x.reshape(B, K, 3, H).transpose(1, 2)  # (B, 3, K, H)

    def forward_all(self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor,
                    mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(state_preds (B, K, state_dim), action_preds (B, K, act_dim), return_preds (B, K, 1)),
        HF's order."""
        x = self.encode(returns_to_go, states, actions, timesteps, mask)
        return self.predict_state(x[:, 2]), self.predict_action(x[:, 1]), self.predict_return(x[:, 2])

    def forward(self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor,
                mask: Tensor | None = None) -> Tensor:
        """returns_to_go (B, K, 1), states (B, K, state_dim), actions (B, K, act_dim) float (one-hot
        when discrete; zeros where unknown or padded), timesteps (B, K) long, mask (B, K) bool or
        float, 1 at real steps and 0 at (left) padding; None: all real.
        Returns the action predictions (B, K, act_dim): a_t from the state token s_t."""
        x = self.encode(returns_to_go, states, actions, timesteps, mask)
        return self.predict_action(x[:, 1])


# The DT paper's training recipe (kzl/decision-transformer gym/experiment.py), for its models and its
# BC baselines alike: AdamW lr 1e-4, weight decay 1e-4, linear warm-up over 10k of its 100k updates (a
# tenth of the budget, whatever the budget), then the rate held constant (its LambdaLR is
# min((t + 1) / warmup, 1): no decay), gradient norm clipped at 0.25. The ``small`` size of the
# offline-RL models trains on it (``register_model(size_defaults=...)``).
DT_PAPER_RECIPE = dict(lr=1e-4, weight_decay=1e-4, warmup_frac=0.1, grad_clip=0.25, schedule="warmup_constant")


def trajectory_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments an ``offline_rl`` spec gives every trajectory model."""
    return dict(max_ep_len=spec["max_ep_len"], discrete=bool(spec.get("discrete", False)),
                context_len=spec.get("context_len"))
