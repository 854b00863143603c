"""Blocks shared by every transformer of the zoo: the token mixer slot, feed-forward, encoder and
decoder blocks.

Both residual arrangements are here, because the families differ:
- post-norm (``norm_first=False``), as in Vaswani et al. and ``torch.nn.Transformer``:
  ``x = norm(x + sublayer(x))``;
- pre-norm (``norm_first=True``), as in ViT and GPT-2: ``x = x + sublayer(norm(x))``.

The mixer slot (:func:`token_mixer`) is the one place where tokens mix: ``"attention"`` (the default,
:class:`~zoo.core.attention.MultiHeadAttention`) or ``"ssm"`` (the selective state-space mixer,
:class:`~zoo.core.ssm.MambaMixer`; bidirectional where a model mixes without causality, as Vim does).
Both take the same call (x, causal=, key_padding_mask=, bias=, cache=) and make their own cache
(``new_cache()``), so one option turns a block, and every family built of blocks, into its SSM variant
with the same masks, caches and recipe around it. An ``mlp_dim`` of 0 leaves the feed-forward out: a
block of the mixer alone, as the Mamba LM and Vim stack them.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import KVCache, MultiHeadAttention
from .ssm import MambaMixer, SSMCache

MIXERS = ("attention", "ssm")

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": F.relu,
    "silu": F.silu,
}


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; accepted: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def token_mixer(kind: str, dim: int, num_heads: int, *, dropout: float = 0.0, bias: bool = True,
                bidirectional: bool = False, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> nn.Module:
    """The mixer slot's occupant: multi-head attention (``num_heads``, ``dropout`` on its weights,
    ``bias``), or the selective SSM (Mamba: ``d_state``, ``d_conv``, ``expand``; ``bidirectional`` for
    models that mix without causality)."""
    if kind == "attention":
        return MultiHeadAttention(dim, num_heads, dropout=dropout, bias=bias)
    if kind == "ssm":
        return MambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand, bidirectional=bidirectional)
    raise ValueError(f"unknown token mixer {kind!r}; accepted: {', '.join(MIXERS)}")


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear(E, F) -> activation -> dropout -> Linear(F, E)."""

    def __init__(self, dim: int, hidden_dim: int, *, activation: str = "gelu", dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.act = get_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, E) -> (B, T, E)
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class _Residual(nn.Module):
    """One residual sub-layer with its norm, pre- or post-norm."""

    def __init__(self, dim: int, norm_first: bool, dropout: float, norm_eps: float, bias: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=norm_eps, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        if self.norm_first:
            return x + self.dropout(fn(self.norm(x)))
        return self.norm(x + self.dropout(fn(x)))


class EncoderBlock(nn.Module):
    """The token mixer (``attn``: self-attention by default, or the SSM, see :func:`token_mixer`), then
    feed-forward (none where ``mlp_dim`` is 0), each in a residual. With ``causal=True`` in forward it
    is also the block of a decoder-only LM (GPT, the Mamba LM)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, dropout: float = 0.0,
                 attn_dropout: float = 0.0, activation: str = "gelu", norm_first: bool = True,
                 norm_eps: float = 1e-5, bias: bool = True, mixer: str = "attention", bidirectional: bool = False,
                 d_state: int = 16) -> None:
        super().__init__()
        self.attn = token_mixer(mixer, dim, num_heads, dropout=attn_dropout, bias=bias, bidirectional=bidirectional,
                                d_state=d_state)
        self.mlp = FeedForward(dim, mlp_dim, activation=activation, dropout=dropout, bias=bias) if mlp_dim else None
        self.res_attn = _Residual(dim, norm_first, dropout, norm_eps, bias)
        self.res_mlp = _Residual(dim, norm_first, dropout, norm_eps, bias) if mlp_dim else None

    def forward(self, x: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None,
                bias: Tensor | None = None, cache: KVCache | SSMCache | None = None) -> Tensor:
        x = self.res_attn(x, lambda h: self.attn(h, causal=causal, key_padding_mask=key_padding_mask,
                                                  bias=bias, cache=cache))
        return x if self.mlp is None else self.res_mlp(x, self.mlp)


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention to the encoder's memory, feed-forward."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, dropout: float = 0.0,
                 attn_dropout: float = 0.0, activation: str = "relu", norm_first: bool = False,
                 norm_eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout, bias=bias)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout, bias=bias)
        self.mlp = FeedForward(dim, mlp_dim, activation=activation, dropout=dropout, bias=bias)
        self.res_self = _Residual(dim, norm_first, dropout, norm_eps, bias)
        self.res_cross = _Residual(dim, norm_first, dropout, norm_eps, bias)
        self.res_mlp = _Residual(dim, norm_first, dropout, norm_eps, bias)

    def forward(self, x: Tensor, memory: Tensor, *, tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None,
                self_cache: KVCache | None = None, cross_cache: KVCache | None = None) -> Tensor:
        x = self.res_self(x, lambda h: self.self_attn(h, causal=True, cache=self_cache,
                                                       key_padding_mask=tgt_key_padding_mask))
        x = self.res_cross(x, lambda h: self.cross_attn(h, memory, cache=cross_cache,
                                                         key_padding_mask=memory_key_padding_mask))
        return self.res_mlp(x, self.mlp)
