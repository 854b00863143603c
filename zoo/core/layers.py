"""Blocks shared by every transformer of the zoo: feed-forward, encoder and decoder blocks.

Both residual arrangements are here, because the families differ:
- post-norm (``norm_first=False``), as in Vaswani et al. and ``torch.nn.Transformer``:
  ``x = norm(x + sublayer(x))``;
- pre-norm (``norm_first=True``), as in ViT and GPT-2: ``x = x + sublayer(norm(x))``.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import KVCache, MultiHeadAttention

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
    """Self-attention then feed-forward, each in a residual. With ``causal=True`` in forward it is
    also the block of a decoder-only LM (GPT)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, dropout: float = 0.0,
                 attn_dropout: float = 0.0, activation: str = "gelu", norm_first: bool = True,
                 norm_eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout, bias=bias)
        self.mlp = FeedForward(dim, mlp_dim, activation=activation, dropout=dropout, bias=bias)
        self.res_attn = _Residual(dim, norm_first, dropout, norm_eps, bias)
        self.res_mlp = _Residual(dim, norm_first, dropout, norm_eps, bias)

    def forward(self, x: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None,
                bias: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        x = self.res_attn(x, lambda h: self.attn(h, causal=causal, key_padding_mask=key_padding_mask,
                                                  bias=bias, cache=cache))
        return self.res_mlp(x, self.mlp)


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
