"""The selective state-space mixer (Mamba, Gu & Dao 2023, arXiv 2312.00752): the second occupant of
the core's mixer slot, beside :class:`~zoo.core.attention.MultiHeadAttention`.

What the paper says (section 3, Algorithm 2, Figure 3). Per channel d of the inner width and state
index n, a diagonal linear recurrence whose step size and input/output maps depend on the input
(the "selection" that time-invariant S4 lacks):

    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t        (zero-order hold for A, Euler for B)
    y_t = C_t h_t + D x_t

with dt_t = softplus(dt_proj(x_proj(x_t))) per channel, B_t and C_t (N values each) from the same
``x_proj``, A = -exp(A_log) real and negative (S4D-real init: A_log[d, n] = log(n + 1)), D a skip.
The block around it: ``in_proj`` to two branches of width d_inner = expand * dim, x and the gate z;
x through a short causal depthwise ``conv1d`` and SiLU, then the scan; output ``y * silu(z)`` and
``out_proj``. Initialisation as in the reference ``mamba_simple.py``: ``dt_proj`` weight uniform in
+-dt_rank^-0.5, its bias the inverse softplus of a dt drawn log-uniformly in [dt_min, dt_max]
(floored at dt_init_floor), D = 1, projections without bias, conv with bias. Parameter names and
shapes are those of ``mambapy`` (and of the reference), so its weights load with ``load_state_dict``.

What this implementation chooses:

Scan (training, and prompts): a *chunked* scan of the linear recurrence h_t = a_t h_{t-1} + u_t
(a_t = exp(dt_t A), u_t = dt_t B_t x_t), in pure PyTorch. The time axis is cut into chunks of
``chunk_size`` steps. (1) Every chunk runs the recurrence from a zero state, all chunks at once, one
step per position of a chunk, keeping only its final state and its total decay (the product of its
a_t). (2) These n (decay, state) pairs are chained by the same scan one level up (recursively), which
gives the state entering each chunk. (3) Every chunk runs the recurrence again from its entering
state, writing h in place, one fused multiply-add per position. So T steps take about
2 * chunk_size * log_chunk_size(T) tensor operations in sequence, and the work stays linear in T.
Only products of decays in [0, 1] and sums are ever formed, never a division by a decay or the exp
of a positive number (the "cumulative sum of log a, then divide by the prefix" form overflows once
dt*A is far from zero), so it is as safe as the sequential loop for any length and any dt: long
products underflow to their true limit, 0. The backward pass is the same scan run backwards in time
(the adjoint recurrence g_t = dL/dh_t + a_{t+1} g_{t+1}) in a custom autograd function, so no graph
of T small steps is built. The scan runs in float32 (float64 for float64 inputs) whatever the input
precision. Compared with mambapy's Blelloch scan (log-depth, power-of-two padding) this does fewer
passes over the (B, T, d_inner, N) tensors: ``scripts/ssm_speed.py`` times both.

Generation: :class:`SSMCache` holds the last d_conv - 1 conv inputs and the state h. A cached call
of one token takes the recurrent step; a cached call of several tokens (the prompt, or a chunk of
forced tokens later) runs the chunked scan from the cached states.

Padding: ``key_padding_mask`` (B, T), True at padding, as in the attention core. A padded position
is invisible: its conv input is zeroed and its step size set to dt = 0, so exp(dt A) = 1 and
dt B x = 0 and the state passes through it unchanged; its output is zero. Positions before the
first real token (left padding, as the Decision Transformer pads) and after the last one (right
padding) are therefore exact: the real positions get what they get with no padding at all. Padding
between real tokens is not (the conv window would see the zeros). With a cache, the mask covers
this call's tokens, or all tokens so far as attention's does (then its last T columns are used);
the conv state keeps the last real inputs, so a padded step leaves both states as they were.

Causality: a mixer built with ``bidirectional=False`` is causal by construction and must be called
with ``causal=True`` (a ValueError otherwise, rather than a silently causal encoder).
``bidirectional=True`` is Vim's "bimamba v2" (Zhu et al. 2024; hustvl/Vim ``mamba_simple.py``,
mambapy ``vim.py``): a second scan over the reversed sequence with its own ``conv1d_b``, ``x_proj_b``,
``dt_proj_b``, ``A_log_b`` and ``D_b``, sharing ``in_proj`` (and so the gate z) and ``out_proj``. The
two gated outputs are averaged, out_proj((y_fwd * silu(z) + flip(y_bwd) * silu(z)) / 2), as Vim's
released models do (``if_devide_out=True``) and mambapy's ``divide_output=True`` default (the Vim paper's
Algorithm 1 writes the plain sum; the factor 2 only rescales out_proj at init). It is for non-causal
uses: it refuses ``causal=True`` and a cache. Unlike hustvl/Vim and mambapy, which leave
``dt_proj_b`` at PyTorch's default Linear init, both directions get the reference dt init.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _chunked_scan(a: Tensor, u: Tensor, h0: Tensor | None, chunk_size: int, reverse: bool = False) -> Tensor:
    """h_t = a_t * h_{t-1} + u_t along dim 1 from h_{-1} = h0 (zero when None); with ``reverse``,
    h_t = a_t * h_{t+1} + u_t from h_T = h0. No autograd.

    a, u: (B, T, M) with a in [0, 1]; h0: (B, M). Returns h (B, T, M).
    """
    Bsz, T, M = u.shape
    L = min(chunk_size, T)
    n = -(-T // L)  # number of chunks
    if n * L != T:  # whole chunks: a padded step (a = 1, u = 0) carries the state through unchanged
        a, u = F.pad(a, (0, 0, 0, n * L - T), value=1.0), F.pad(u, (0, 0, 0, n * L - T))
    a, u = a.reshape(Bsz, n, L, M), u.reshape(Bsz, n, L, M)
    first, *rest = range(L - 1, -1, -1) if reverse else range(L)
    incoming = None if h0 is None else h0[:, None]  # (B, n or 1, M): the state entering each chunk
    if n > 1:
        # (1) Every chunk from a zero state, all chunks at once: its final state and its total decay.
        end, decay = u[:, :, first], a[:, :, first]  # (B, n, M)
        for k in rest:
            end, decay = torch.addcmul(u[:, :, k], a[:, :, k], end), decay * a[:, :, k]
        # (2) The true final states of the chunks: the same scan over n steps.
        ends = _chunked_scan(decay, end, h0, chunk_size, reverse)  # (B, n, M)
        start = ends.new_zeros(Bsz, 1, M) if h0 is None else h0[:, None]
        incoming = torch.cat([ends[:, 1:], start] if reverse else [start, ends[:, :-1]], dim=1)
    # (3) The scan proper, every chunk from its incoming state.
    h = torch.empty_like(u)  # (B, n, L, M)
    if incoming is None:
        h[:, :, first] = u[:, :, first]
    else:
        torch.addcmul(u[:, :, first], a[:, :, first], incoming, out=h[:, :, first])
    previous = first
    for k in rest:
        torch.addcmul(u[:, :, k], a[:, :, k], h[:, :, previous], out=h[:, :, k])
        previous = k
    return h.reshape(Bsz, n * L, M)[:, :T]


class _LinearScan(torch.autograd.Function):
    """The chunked scan with its adjoint as backward: for h_t = a_t h_{t-1} + u_t,
    g_t = dL/dh_t + a_{t+1} g_{t+1} (the scan backwards in time), dL/du_t = g_t,
    dL/da_t = g_t h_{t-1}, dL/dh0 = a_0 g_0."""

    @staticmethod
    def forward(ctx, a: Tensor, u: Tensor, h0: Tensor | None, chunk_size: int) -> Tensor:
        h = _chunked_scan(a, u, h0, chunk_size)
        ctx.save_for_backward(a, h, h0)
        ctx.chunk_size = chunk_size
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h, h0 = ctx.saved_tensors
        a_next = F.pad(a[:, 1:], (0, 0, 0, 1))  # (B, T, M): a_{t+1}, 0 past the end
        g = _chunked_scan(a_next, grad_h.contiguous(), None, ctx.chunk_size, reverse=True)  # (B, T, M)
        grad_a = torch.empty_like(a)
        torch.mul(g[:, 1:], h[:, :-1], out=grad_a[:, 1:])
        if h0 is None:
            grad_a[:, 0] = 0.0
            grad_h0 = None
        else:
            torch.mul(g[:, 0], h0, out=grad_a[:, 0])
            grad_h0 = a[:, 0] * g[:, 0]
        return grad_a, g, grad_h0, None


def linear_scan(a: Tensor, u: Tensor, h0: Tensor | None = None, chunk_size: int = 32) -> Tensor:
    """h_t = a_t * h_{t-1} + u_t along dim 1 (h_{-1} = h0, zero when None), differentiable.

    a, u: (B, T, ...) with a in [0, 1]; h0: (B, ...). Returns h (B, T, ...).
    """
    shape = u.shape
    flat = (shape[0], shape[1], -1)
    h0 = None if h0 is None else h0.reshape(shape[0], -1)
    h = _LinearScan.apply(a.contiguous().view(flat), u.contiguous().view(flat), h0, chunk_size)
    return h.view(shape)


def selective_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                   h0: Tensor | None = None, chunk_size: int = 32) -> tuple[Tensor, Tensor]:
    """The selective SSM over a whole sequence (the parallel form).

    x, dt: (B, T, Di); A: (Di, N), negative; B, C: (B, T, N); D: (Di,); h0: (B, Di, N) or None.
    Returns y (B, T, Di) and the last state h_{T-1} (B, Di, N).
    """
    a = torch.exp(dt[..., None] * A)  # (B, T, Di, N)
    u = (dt * x)[..., None] * B[:, :, None, :]  # (B, T, Di, N)
    h = linear_scan(a, u, h0, chunk_size)  # (B, T, Di, N)
    y = (h @ C[..., None]).squeeze(-1) + D * x  # (B, T, Di)
    return y, h[:, -1]


def selective_step(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                   h: Tensor | None) -> tuple[Tensor, Tensor]:
    """One recurrent step. x, dt: (B, Di); A: (Di, N); B, C: (B, N); D: (Di,); h: (B, Di, N) or None
    (zero). Returns y (B, Di) and the new state (B, Di, N)."""
    h_new = (dt * x)[..., None] * B[:, None, :]  # (B, Di, N)
    if h is not None:
        h_new = h_new + torch.exp(dt[..., None] * A) * h
    return (h_new @ C[..., None]).squeeze(-1) + D * x, h_new


class SSMCache:
    """The recurrent state of one :class:`MambaMixer` for generation.

    ``conv_state`` (B, d_inner, d_conv - 1): the last conv inputs; ``ssm_state`` (B, d_inner, d_state):
    h. Both are None until the first call. ``length`` counts the tokens consumed (padding included,
    as :class:`~zoo.core.attention.KVCache` counts cached positions): the position offset of the
    next token.
    """

    def __init__(self) -> None:
        self.conv_state: Tensor | None = None  # (B, Di, K - 1)
        self.ssm_state: Tensor | None = None  # (B, Di, N)
        self.length = 0

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search keeps the surviving hypotheses)."""
        if self.ssm_state is not None:
            self.conv_state = self.conv_state.index_select(0, index)
            self.ssm_state = self.ssm_state.index_select(0, index)


class MambaMixer(nn.Module):
    """The Mamba block's mixer (Gu & Dao 2023, Figure 3): (B, T, dim) -> (B, T, dim).

    Args:
        dim: model width E.
        d_state: N, the state size per channel.
        d_conv: kernel width of the causal depthwise conv.
        expand: d_inner = expand * dim.
        dt_rank: width of the low-rank dt projection; None: ceil(dim / 16).
        dt_min, dt_max, dt_init_floor: the range of the initial step sizes (see reset_parameters).
        bidirectional: Vim's forward + backward scans for non-causal uses (see the module docstring).
        chunk_size: chunk length of the parallel scan (a speed knob; results do not depend on it).

    Parameters: ``in_proj`` (2 d_inner x E), ``conv1d`` (d_inner x 1 x d_conv, bias), ``x_proj``
    ((dt_rank + 2N) x d_inner), ``dt_proj`` (d_inner x dt_rank, bias), ``A_log`` (d_inner x N),
    ``D`` (d_inner), ``out_proj`` (E x d_inner); with ``bidirectional`` also ``conv1d_b``,
    ``x_proj_b``, ``dt_proj_b``, ``A_log_b``, ``D_b``: mambapy's ``MambaBlock`` / ``VMambaBlock``
    layout, so ``mixer.load_state_dict(block.state_dict())`` copies its weights.
    """

    def __init__(self, dim: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, bidirectional: bool = False, chunk_size: int = 32) -> None:
        super().__init__()
        if chunk_size < 2:
            raise ValueError(f"chunk_size must be at least 2, got {chunk_size}")
        self.dim, self.d_state, self.d_conv = dim, d_state, d_conv
        self.d_inner = expand * dim
        self.dt_rank = math.ceil(dim / 16) if dt_rank is None else dt_rank
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.bidirectional, self.chunk_size = bidirectional, chunk_size
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        self.conv1d, self.x_proj, self.dt_proj = self._direction_layers()
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        if bidirectional:
            self.conv1d_b, self.x_proj_b, self.dt_proj_b = self._direction_layers()
            self.A_log_b = nn.Parameter(torch.empty(self.d_inner, d_state))
            self.D_b = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, d_inner={self.d_inner}, d_state={self.d_state}, d_conv={self.d_conv}, "
                f"dt_rank={self.dt_rank}, bidirectional={self.bidirectional}, chunk_size={self.chunk_size}")

    def _direction_layers(self) -> tuple[nn.Conv1d, nn.Linear, nn.Linear]:
        conv = nn.Conv1d(self.d_inner, self.d_inner, self.d_conv, groups=self.d_inner, padding=self.d_conv - 1)
        x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        return conv, x_proj, dt_proj

    def _direction(self, backward: bool) -> tuple[nn.Conv1d, nn.Linear, nn.Linear, Tensor, Tensor]:
        if backward:
            return self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_log_b, self.D_b
        return self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D

    def new_cache(self) -> SSMCache:
        """An empty cache for generation (the mixer slot's own, as ``MultiHeadAttention.new_cache``)."""
        if self.bidirectional:
            raise ValueError("a bidirectional mixer has no generation cache (it reads the whole sequence)")
        return SSMCache()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The reference init of the SSM parameters (the projections and convs keep PyTorch's
        defaults, as in the reference): ``dt_proj`` weight uniform in +-dt_rank^-0.5; its bias
        softplus^-1(dt) with dt log-uniform in [dt_min, dt_max], floored at dt_init_floor, so that the
        initial step sizes span that range; A_log = log(1..N) per channel (S4D-real); D = 1.
        Sets ``_no_weight_decay`` on A_log and D and ``_no_reinit`` on the dt bias, as the reference
        does, for model-level init and optimiser code that honours them."""
        for backward in (False, True) if self.bidirectional else (False,):
            _, _, dt_proj, A_log, D = self._direction(backward)
            bound = self.dt_rank ** -0.5
            nn.init.uniform_(dt_proj.weight, -bound, bound)
            log_lo, log_hi = math.log(self.dt_min), math.log(self.dt_max)
            dt = torch.exp(torch.rand(self.d_inner) * (log_hi - log_lo) + log_lo).clamp(min=self.dt_init_floor)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt), stable for small dt
            dt_proj.bias._no_reinit = True
            A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
            D.fill_(1.0)
            A_log._no_weight_decay = D._no_weight_decay = True

    def forward(self, x: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None,
                bias: Tensor | None = None, cache: SSMCache | None = None) -> Tensor:
        """Mix ``x`` (B, T, E) along time; returns (B, T, E). The mixer slot's call, as attention's.

        causal: must be True for a unidirectional mixer (it is causal by construction) and False for
            a bidirectional one.
        key_padding_mask: bool (B, T), True at padding (with a cache: (B, T) or (B, cache.length + T)).
            Padded positions leave the state untouched and output zeros (module docstring).
        bias: must be None: an SSM has no attention scores to add a bias to.
        cache: an :class:`SSMCache` (unidirectional only), updated in place.
        """
        if bias is not None:
            raise ValueError("MambaMixer takes no additive bias (an SSM has no attention scores); pass bias=None")
        if self.bidirectional and (causal or cache is not None):
            raise ValueError("a bidirectional MambaMixer sees the future: it cannot be causal=True or use a cache; "
                             "build it with bidirectional=False for causal uses")
        if not self.bidirectional and not causal:
            raise ValueError("MambaMixer(bidirectional=False) is causal by construction: call it with causal=True, "
                             "or build it with bidirectional=True for non-causal uses")
        Bsz, T, _ = x.shape
        pad = key_padding_mask
        if pad is not None:
            past = 0 if cache is None else cache.length
            if pad.shape[0] != Bsz or pad.shape[1] not in (T, past + T):
                raise ValueError(f"key_padding_mask has shape {tuple(pad.shape)}; expected ({Bsz}, {T})"
                                 + (f" or ({Bsz}, {past + T})" if past else ""))
            pad = pad[:, pad.shape[1] - T:].to(device=x.device, dtype=torch.bool)  # (B, T)
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, Di) each
        if pad is not None:
            xs = xs.masked_fill(pad[..., None], 0.0)
        y = self._mix(xs, pad, backward=False, cache=cache)  # (B, T, Di)
        if self.bidirectional:
            y_b = self._mix(xs.flip(1), None if pad is None else pad.flip(1), backward=True, cache=None)
            y = (y + y_b.flip(1)) / 2
        out = self.out_proj(y * F.silu(z))  # (B, T, E)
        if pad is not None:
            out = out.masked_fill(pad[..., None], 0.0)
        if cache is not None:
            cache.length += T
        return out

    def _mix(self, xs: Tensor, pad: Tensor | None, *, backward: bool, cache: SSMCache | None) -> Tensor:
        """conv -> SiLU -> selective SSM for one direction. xs (B, T, Di), zero at padding -> (B, T, Di)."""
        conv, x_proj, dt_proj, A_log, D = self._direction(backward)
        Bsz, T, Di = xs.shape
        K = self.d_conv
        seq = xs.transpose(1, 2)  # (B, Di, T)
        if cache is not None:  # prepend the last K-1 inputs (zeros before the first call)
            past = cache.conv_state if cache.conv_state is not None else seq.new_zeros(Bsz, Di, K - 1)
            seq = torch.cat([past, seq], dim=2)  # (B, Di, K-1+T)
        start = seq.shape[2] - T
        xc = F.silu(conv(seq)[..., start:start + T]).transpose(1, 2)  # (B, T, Di): causal cut
        dt, B, C = x_proj(xc).split([self.dt_rank, self.d_state, self.d_state], dim=-1)  # (B, T, R|N|N)
        dt = F.softplus(dt_proj(dt))  # (B, T, Di)
        if pad is not None:
            dt = dt.masked_fill(pad[..., None], 0.0)  # exp(0 A) = 1, 0 B x = 0: the state passes through
        # The scan runs in float32 at least, whatever the input precision.
        dtype = torch.promote_types(xc.dtype, torch.float32)
        xc_s, dt, B, C = xc.to(dtype), dt.to(dtype), B.to(dtype), C.to(dtype)
        A, D = -torch.exp(A_log.to(dtype)), D.to(dtype)  # (Di, N), (Di,)
        if cache is None:
            y, _ = selective_scan(xc_s, dt, A, B, C, D, chunk_size=self.chunk_size)
        else:
            if T == 1:
                y, h = selective_step(xc_s[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, cache.ssm_state)
                y = y[:, None]
            else:
                y, h = selective_scan(xc_s, dt, A, B, C, D, cache.ssm_state, chunk_size=self.chunk_size)
            cache.ssm_state = h
            cache.conv_state = _last_real_inputs(seq, pad, K - 1)
        return y.to(xs.dtype)


def _last_real_inputs(seq: Tensor, pad: Tensor | None, width: int) -> Tensor:
    """The conv state after a call: the last ``width`` columns of seq (B, Di, width + T) up to the
    last real token of each row (all of the old state where the row's tokens are all padding)."""
    if pad is None:
        return seq[..., seq.shape[2] - width:].contiguous()  # a copy: the state must not hold all of seq
    T = pad.shape[1]
    steps = torch.arange(1, T + 1, device=pad.device)
    end = width + (steps * ~pad).amax(dim=1)  # (B,): one past the last real column of seq
    index = end[:, None] - width + torch.arange(width, device=pad.device)  # (B, width)
    return seq.gather(2, index[:, None, :].expand(-1, seq.shape[1], -1))
