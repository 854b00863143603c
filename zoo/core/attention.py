"""The one multi-head attention of attention-zoo.

Every transformer in the zoo (ViT, the encoder-decoder Transformer, GPT, the Decision Transformer,
the Conformer) attends through :class:`MultiHeadAttention`. It does self and cross attention, causal
and key-padding masks, an additive float bias (relative positions), a key/value cache for
incremental decoding and attention dropout, through one of two backends:

``sdpa`` (default)
    ``torch.nn.functional.scaled_dot_product_attention``, which dispatches to FlashAttention,
    memory-efficient or cuDNN kernels on GPU. When causality is the only mask, it is passed as
    ``is_causal=True`` rather than as a mask tensor, so that the flash kernels stay eligible.
``math``
    The textbook ``softmax(Q K^T / sqrt(d)) V``, written out. It is the readable reference that the
    tests hold every other backend to.

Choose the backend per call (``attn(x, backend="math")``), or for everything inside a block of code
(``with attention_backend("math"): model(x)``), or for the process (``set_backend("math")``).

Mask conventions (the same as ``torch.nn.MultiheadAttention``): ``key_padding_mask`` is a bool
tensor (B, S) that is True where a key is padding and must be ignored; ``bias`` is a float tensor
broadcastable to (B, H, T, S) that is added to the attention scores, or a function of the projected
queries and keys that returns one (relative positions: made from the same q and k the scores are).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BACKENDS = ("sdpa", "math")
_default_backend = "sdpa"


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; accepted: {', '.join(BACKENDS)}")
    return name


def set_backend(name: str) -> None:
    """Set the process-wide default attention backend ('sdpa' or 'math')."""
    global _default_backend
    _default_backend = _check_backend(name)


def get_backend() -> str:
    """The backend used by calls that do not name one."""
    return _default_backend


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Use backend ``name`` for every attention call inside the ``with`` block."""
    global _default_backend
    previous, _default_backend = _default_backend, _check_backend(name)
    try:
        yield
    finally:
        _default_backend = previous


class KVCache:
    """Keys and values of the positions seen so far, for one attention layer.

    Self-attention appends the new step's keys/values on every call; cross-attention computes the
    memory's keys/values on the first call and reuses them afterwards. ``length`` is the number of
    cached positions, which is also the position offset of the next query.
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None  # (B, H, S, Dh)
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search keeps the surviving hypotheses)."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


def lengths_to_padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Bool (B, max_len), True at the positions past each row's length: a ``key_padding_mask``."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def causal_mask(q_len: int, k_len: int, device: torch.device | None = None) -> Tensor:
    """Bool (q_len, k_len), True where query i may see key j.

    Queries are the last ``q_len`` positions of ``k_len`` (bottom-right aligned), which is what
    incremental decoding with a cache needs: query i sits at absolute position k_len - q_len + i.
    """
    offset = k_len - q_len
    i = torch.arange(q_len, device=device)[:, None]
    j = torch.arange(k_len, device=device)[None, :]
    return j <= i + offset


def math_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d) + masks + bias) V, written out.

    q: (B, H, T, Dh), k and v: (B, H, S, Dh). Returns the output (B, H, T, Dh) and the attention
    weights (B, H, T, S).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    masked = None  # bool, True where a query may not see a key
    if causal:
        masked = ~causal_mask(q.shape[2], k.shape[2], q.device)
    if key_padding_mask is not None:
        pad = key_padding_mask[:, None, None, :]
        masked = pad if masked is None else masked | pad
    if masked is not None:
        # A query that may see no key at all (left padding under a causal mask, an empty memory)
        # gets zero output, as SDPA gives, instead of the NaN of a softmax over only -inf.
        empty = masked.all(dim=-1, keepdim=True)
        scores = scores.masked_fill(masked, float("-inf")).masked_fill(empty, 0.0)
    weights = scores.softmax(dim=-1)
    if masked is not None:
        weights = weights.masked_fill(empty, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


def sdpa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """The same computation through ``F.scaled_dot_product_attention``."""
    T, S = q.shape[2], k.shape[2]
    causal = causal and T > 1  # one query, the cache's last position, sees every key: no mask to build
    if bias is None and key_padding_mask is None and (not causal or T == S):
        # Only (square) causality: let SDPA apply it itself, keeping the flash kernels eligible.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
    allowed = None  # bool, broadcastable to (B, H, T, S); True where attending is allowed
    if causal:
        allowed = causal_mask(T, S, q.device)
    if key_padding_mask is not None:
        keep = ~key_padding_mask[:, None, None, :]
        allowed = keep if allowed is None else allowed & keep
    if bias is None:
        mask = allowed
    else:
        mask = bias.to(q.dtype)
        if allowed is not None:
            mask = mask.masked_fill(~allowed, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017, section 3.2.2).

    Args:
        dim: model width E; queries, keys and values all have this width.
        num_heads: H; the head width is E // H.
        dropout: dropout on the attention weights (training only).
        bias: whether the projections have biases.

    The query/key/value projections are stored packed, as ``in_proj`` (3E x E), in the layout of
    ``torch.nn.MultiheadAttention.in_proj_weight``, so self-attention runs one matrix multiply and
    weights copy over one to one.
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.reset_parameters()

    def new_cache(self) -> KVCache:
        """An empty cache for generation (the mixer slot's own: ``MambaMixer.new_cache`` is its SSM's)."""
        return KVCache()

    def reset_parameters(self) -> None:
        """The initialisation of ``torch.nn.MultiheadAttention``: Xavier-uniform packed projection,
        zero biases."""
        nn.init.xavier_uniform_(self.in_proj.weight)
        if self.in_proj.bias is not None:
            nn.init.zeros_(self.in_proj.bias)
            nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape  # (B, T, E) -> (B, H, T, Dh)
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        bias: Tensor | Callable[[Tensor, Tensor], Tensor] | None = None,
        cache: KVCache | None = None,
        backend: str | None = None,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from ``x`` (B, T, E) to itself, or to ``memory`` (B, S, E) for cross-attention.

        causal: query i only sees keys up to its own position (positions count from the start of
            the cache, so causal decoding one token at a time needs no mask at all).
        key_padding_mask: bool (B, S_total), True at keys to ignore (cached keys included).
        bias: float, broadcastable to (B, H, T, S_total), added to the scores; or a function
            ``bias(q (B, H, T, Dh), k (B, H, S_total, Dh))`` returning one, called with this call's
            own projections (no second matmul for a bias that depends on them).
        cache: a :class:`KVCache` for incremental decoding (updated in place).
        backend: 'sdpa' or 'math'; None uses the current default (see :func:`attention_backend`).
        return_weights: also return the attention weights (B, H, T, S); uses the math backend.
        Returns (B, T, E), or (output, weights) with ``return_weights``.
        """
        backend = _check_backend(backend) if backend is not None else _default_backend
        E = self.dim
        w, b = self.in_proj.weight, self.in_proj.bias
        if memory is None:  # self-attention: one packed projection
            q, k, v = self._heads_split(self.in_proj(x))
            if cache is not None:
                k, v = cache.append(k, v)
        else:  # cross-attention: queries from x, keys and values from memory (cached once)
            q = self._heads(F.linear(x, w[:E], None if b is None else b[:E]))
            if cache is not None and cache.k is not None:
                k, v = cache.k, cache.v
            else:
                kv = F.linear(memory, w[E:], None if b is None else b[E:])
                k, v = (self._heads(t) for t in kv.chunk(2, dim=-1))
                if cache is not None:
                    cache.append(k, v)
        if callable(bias):
            bias = bias(q, k)
        dropout_p = self.dropout if self.training else 0.0
        masks = dict(causal=causal, key_padding_mask=key_padding_mask, bias=bias, dropout_p=dropout_p)
        if backend == "math" or return_weights:
            out, weights = math_attention(q, k, v, **masks)
        else:
            out, weights = sdpa_attention(q, k, v, **masks), None
        B, H, T, Dh = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(B, T, H * Dh))
        return (out, weights) if return_weights else out

    def _heads_split(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = qkv.chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)
