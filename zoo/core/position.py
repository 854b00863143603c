"""Position information: fixed sinusoids (Vaswani et al.) and learned embeddings (ViT, GPT)."""

from __future__ import annotations

import functools
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


def relative_sinusoidal_table(length: int, dim: int, *, device: torch.device | None = None,
                              dtype: torch.dtype = torch.float32) -> Tensor:
    """(2 * length - 1, dim): sinusoids of the relative distances length-1, ..., 1, 0, -1, ..., -(length-1)
    (ESPnet/WeNet order: row r holds distance (length - 1) - r), with the layout of
    :func:`sinusoidal_table` (sin on even, cos on odd features)."""
    distance = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(2 * length - 1, dim, device=device)
    table[:, 0::2] = torch.sin(distance * div)
    table[:, 1::2] = torch.cos(distance * div)[:, : dim // 2]
    return table.to(dtype)


@functools.lru_cache(maxsize=64)
def cached_table(kind: str, length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """:func:`sinusoidal_table` (``kind`` 'absolute') or :func:`relative_sinusoidal_table` ('relative'),
    made once per (length, width, device, dtype) and kept on ``device``: a forward pass neither rebuilds
    it nor copies it from the host. Callers must not modify it in place."""
    if kind == "absolute":
        return sinusoidal_table(length, dim).to(device, dtype)
    return relative_sinusoidal_table(length, dim, device=device, dtype=dtype)


def relative_position_index(q_len: int, k_len: int | None = None, device: torch.device | None = None) -> Tensor:
    """Long (q_len, k_len): the row of :func:`relative_sinusoidal_table` (of length max(q_len, k_len))
    holding distance i - j, i.e. ``(L - 1) - (i - j)``. Gathering with it is the exact equivalent of
    Transformer-XL's ``rel_shift``."""
    k_len = q_len if k_len is None else k_len
    length = max(q_len, k_len)
    i = torch.arange(q_len, device=device)[:, None]
    j = torch.arange(k_len, device=device)[None, :]
    return (length - 1) - (i - j)


class RelativePositionalEncoding(nn.Module):
    """Transformer-XL / Conformer relative positions for attention (Dai et al. 2019, section 3.3).

    Holds a linear projection W_R (no bias) of the fixed relative sinusoids and the learned global
    biases u (content) and v (position), one (head_dim,) vector per head. ``forward(q, k)`` returns
    the additive score term

        bias[b, h, i, j] = (u_h . k_j + (q_i + v_h) . p_{i-j}) / sqrt(head_dim),   p_d = W_R sin(d)

    so that softmax(q k^T / sqrt(d) + bias) = softmax(((q + u) k^T + (q + v) p^T) / sqrt(d)): the
    attention core scales its own q k^T by 1/sqrt(d), so the added terms are scaled the same way,
    and the u-term (which depends only on the key) is folded into the same bias.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.head_dim))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def position_embeddings(self, length: int, device=None, dtype=torch.float32) -> Tensor:
        """(H, 2L-1, Dh): projected relative sinusoids p, per head."""
        p = self.linear_pos(cached_table("relative", length, self.dim, torch.device(device or "cpu"), dtype))
        return p.view(2 * length - 1, self.num_heads, self.head_dim).transpose(0, 1)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """q (B, H, T, Dh), k (B, H, S, Dh) -> bias (B, H, T, S)."""
        T, S = q.shape[2], k.shape[2]
        scale = 1.0 / math.sqrt(self.head_dim)
        p = self.position_embeddings(max(T, S), q.device, q.dtype)  # (H, 2L-1, Dh)
        # (q + v) p^T for every (query, relative distance), then pick distance i - j for each key j.
        bd = (q + self.pos_bias_v[None, :, None, :]) @ p.transpose(-2, -1)[None]  # (B, H, T, 2L-1)
        index = relative_position_index(T, S, q.device)  # (T, S)
        bd = bd.gather(-1, index.expand(*bd.shape[:2], T, S))
        # u k^T: a per-(head, key) term, constant over queries.
        uk = (self.pos_bias_u[None, :, None, :] @ k.transpose(-2, -1))  # (B, H, 1, S)
        return (bd + uk) * scale
