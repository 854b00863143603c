"""Position information: fixed sinusoids (Vaswani et al.) and learned embeddings (ViT, GPT)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """(length, dim): PE[pos, 2i] = sin(pos / 10000^(2i/dim)), PE[pos, 2i+1] = cos(same)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return table


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to x (B, T, E); ``offset`` shifts positions (cached decoding)."""

    def __init__(self, dim: int, max_len: int = 4096) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        if offset + x.shape[1] > self.table.shape[0]:
            raise ValueError(f"sequence of {offset + x.shape[1]} positions exceeds max_len {self.table.shape[0]}")
        return x + self.table[offset : offset + x.shape[1]].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned (max_len, E) table to x (B, T, E); initialised N(0, 0.02) as in BERT/ViT/GPT-2."""

    def __init__(self, max_len: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, dim) * init_std)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        if offset + x.shape[1] > self.weight.shape[0]:
            raise ValueError(f"sequence of {offset + x.shape[1]} positions exceeds the {self.weight.shape[0]} "
                             "learned positions")
        return x + self.weight[offset : offset + x.shape[1]]
