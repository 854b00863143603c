"""The selective state-space mixer (zoo/core/ssm.py): the scans against a plain sequential loop,
padding, the generation cache, the call rules, and parity with mambapy (the dev-dependency reference).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.core import MambaMixer, SSMCache
from zoo.core.ssm import linear_scan

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


# --------------------------------------------------------------------------- references and helpers


def loop_ssm(x, dt, A, B, C, D, h=None):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t; y_t = C_t h_t + D x_t, one step at a time.
    x, dt: (B, T, Di); A: (Di, N); B, C: (B, T, N); D: (Di,); h: (B, Di, N). Returns y, last h."""
    Bsz, T, Di = x.shape
    h = x.new_zeros(Bsz, Di, A.shape[1]) if h is None else h
    ys = []
    for t in range(T):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
    return torch.stack(ys, dim=1), h


def reference_mixer(m: MambaMixer, x):
    """The mixer written out with the loop scan (no padding, no cache)."""
    xs, z = m.in_proj(x).chunk(2, dim=-1)

    def direction(xs, conv, x_proj, dt_proj, A_log, D):
        T = xs.shape[1]
        xc = F.silu(conv(xs.transpose(1, 2))[..., :T]).transpose(1, 2)
        dt, B, C = x_proj(xc).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
        return loop_ssm(xc, F.softplus(dt_proj(dt)), -torch.exp(A_log), B, C, D)[0]

    y = direction(xs, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D)
    if m.bidirectional:
        y_b = direction(xs.flip(1), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_log_b, m.D_b)
        y = (y + y_b.flip(1)) / 2
    return m.out_proj(y * F.silu(z))


def loop_ssm_state(m: MambaMixer, x):
    """The final SSM state of the whole sequence, through the loop."""
    xs, _ = m.in_proj(x).chunk(2, dim=-1)
    xc = F.silu(m.conv1d(xs.transpose(1, 2))[..., : x.shape[1]]).transpose(1, 2)
    dt, B, C = m.x_proj(xc).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    return loop_ssm(xc, F.softplus(m.dt_proj(dt)), -torch.exp(m.A_log), B, C, m.D)[1]


def make_mixer(dim=16, *, seed=0, dtype=torch.float32, **kwargs) -> MambaMixer:
    """A mixer whose SSM parameters are moved off their symmetric init (distinct A per channel,
    D != 1, larger step sizes), so that an index mix-up cannot hide."""
    torch.manual_seed(seed)
    m = MambaMixer(dim, **{"d_state": 8, **kwargs}).to(dtype)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith(("A_log", "D", "dt_proj")):
                p.add_(0.3 * torch.randn_like(p))
    return m


def run(fn, module, x, cotangent):
    """Output, input gradient and every parameter gradient of <fn(x), cotangent>."""
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out = fn(x)
    (out * cotangent).sum().backward()
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters()}


def assert_same_run(a, b, tol):
    (out_a, dx_a, g_a), (out_b, dx_b, g_b) = a, b
    torch.testing.assert_close(out_a, out_b, atol=tol, rtol=tol)
    torch.testing.assert_close(dx_a, dx_b, atol=tol, rtol=tol)
    assert g_a.keys() == g_b.keys()
    for name in g_a:
        torch.testing.assert_close(g_a[name], g_b[name], atol=tol, rtol=tol, msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------- the scan


@pytest.mark.parametrize("chunk_size", [2, 4, 64])  # 64 > T: one chunk; 2 and 4: recursive levels
@pytest.mark.parametrize("with_h0", [False, True])
def test_linear_scan_matches_loop_forward_and_backward(chunk_size, with_h0):
    torch.manual_seed(0)
    B, T, M = 2, 37, 5
    a = torch.rand(B, T, M, dtype=torch.float64).requires_grad_()
    u = torch.randn(B, T, M, dtype=torch.float64).requires_grad_()
    h0 = torch.randn(B, M, dtype=torch.float64).requires_grad_() if with_h0 else None
    cot = torch.randn(B, T, M, dtype=torch.float64)
    inputs = [a, u] + ([h0] if with_h0 else [])

    h = linear_scan(a, u, h0, chunk_size)
    grads = torch.autograd.grad((h * cot).sum(), inputs)
    state, ref = (h0 if with_h0 else torch.zeros(B, M, dtype=torch.float64)), []
    for t in range(T):
        state = a[:, t] * state + u[:, t]
        ref.append(state)
    ref = torch.stack(ref, dim=1)
    ref_grads = torch.autograd.grad((ref * cot).sum(), inputs)
    torch.testing.assert_close(h, ref, atol=1e-12, rtol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("chunk_size", [4, 64])
def test_mixer_matches_sequential_loop_forward_and_backward(dtype, bidirectional, chunk_size):
    m = make_mixer(bidirectional=bidirectional, chunk_size=chunk_size, dtype=dtype)
    torch.manual_seed(1)
    x = torch.randn(2, 29, 16, dtype=dtype)
    cot = torch.randn(2, 29, 16, dtype=dtype)
    ours = run(lambda t: m(t, causal=not bidirectional), m, x, cot)
    ref = run(lambda t: reference_mixer(m, t), m, x, cot)
    assert_same_run(ours, ref, TOL[dtype])


def test_long_sequences_and_extreme_steps_stay_exact():
    """4096 tokens with step sizes from ~1e-5 (a decay of ~1 kept over the whole sequence) to ~40
    (dt*A down to -640: exp underflows to exactly 0): no overflow, no NaN, equal to the loop."""
    m = MambaMixer(4, d_state=16, chunk_size=16)  # A from -1 to -16
    with torch.no_grad():
        m.dt_proj.bias.copy_(torch.tensor([-12.0, -6.0, 0.0, 2.0, 5.0, 10.0, 20.0, 40.0]))
    torch.manual_seed(0)
    T = 4096
    x = torch.randn(1, T, 4)
    cot = torch.randn(1, T, 4)
    ours = run(lambda t: m(t, causal=True), m, x, cot)
    for tensor in (ours[0], ours[1], *ours[2].values()):
        assert torch.isfinite(tensor).all()
    ref = run(lambda t: reference_mixer(m, t), m, x, cot)
    assert_same_run(ours, ref, 1e-4)


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_leaves_real_positions_exact(side, bidirectional):
    m = make_mixer(bidirectional=bidirectional, chunk_size=4)
    torch.manual_seed(2)
    lengths, T = [11, 6, 1], 11
    x = torch.randn(len(lengths), T, 16)
    pad = torch.zeros(len(lengths), T, dtype=torch.bool)
    for i, n in enumerate(lengths):
        if side == "left":
            pad[i, : T - n] = True
        else:
            pad[i, n:] = True
    x[pad] = 100 * torch.randn(int(pad.sum()), 16)  # large garbage at the padded positions
    out = m(x, causal=not bidirectional, key_padding_mask=pad)
    assert (out[pad] == 0).all()
    for i in range(len(lengths)):
        alone = m(x[i : i + 1, ~pad[i]], causal=not bidirectional)
        torch.testing.assert_close(out[i : i + 1, ~pad[i]], alone, atol=1e-6, rtol=1e-6)


def test_padding_gets_no_gradient():
    m = make_mixer()
    x = torch.randn(2, 9, 16, requires_grad=True)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[0, :4] = True
    pad[1, 7:] = True
    m(x, causal=True, key_padding_mask=pad).sum().backward()
    assert (x.grad[pad] == 0).all()
    assert (x.grad[~pad] != 0).any(dim=-1).all()


# --------------------------------------------------------------------------- the generation cache


def test_cache_token_by_token_equals_parallel():
    m = make_mixer(chunk_size=4)
    x = torch.randn(2, 20, 16)
    full = m(x, causal=True)
    cache = SSMCache()
    steps = [m(x[:, t : t + 1], causal=True, cache=cache) for t in range(20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 20
    assert cache.conv_state.shape == (2, m.d_inner, m.d_conv - 1)
    assert cache.ssm_state.shape == (2, m.d_inner, m.d_state)
    torch.testing.assert_close(cache.ssm_state, loop_ssm_state(m, x), atol=1e-5, rtol=1e-5)


def test_cache_prompt_then_chunk_then_steps_equals_parallel():
    m = make_mixer(chunk_size=4)
    x = torch.randn(2, 19, 16)
    full = m(x, causal=True)
    cache = SSMCache()
    parts = [m(x[:, :9], causal=True, cache=cache), m(x[:, 9:12], causal=True, cache=cache)]  # prompt, 3 tokens
    parts += [m(x[:, t : t + 1], causal=True, cache=cache) for t in range(12, 19)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 19


def test_cache_prompt_shorter_than_the_conv():
    m = make_mixer()
    x = torch.randn(1, 6, 16)
    cache = SSMCache()
    parts = [m(x[:, :2], causal=True, cache=cache)]
    parts += [m(x[:, t : t + 1], causal=True, cache=cache) for t in range(2, 6)]
    torch.testing.assert_close(torch.cat(parts, dim=1), m(x, causal=True), atol=1e-5, rtol=1e-5)


def test_cache_reorder_follows_the_selected_rows():
    m = make_mixer()
    x = torch.randn(3, 10, 16)
    cache = SSMCache()
    m(x[:, :6], causal=True, cache=cache)
    index = torch.tensor([2, 0, 0])
    cache.reorder(index)
    steps = [m(x[index, t : t + 1], causal=True, cache=cache) for t in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), m(x[index], causal=True)[:, 6:], atol=1e-5, rtol=1e-5)
    SSMCache().reorder(index)  # an empty cache: nothing to select


@pytest.mark.parametrize("side", ["left", "right"])
def test_cache_with_a_padded_prompt_continues_each_row_exactly(side):
    """Batched generation from prompts of different lengths: after a padded prompt, each row's
    next tokens get what they get after its own prompt alone."""
    m = make_mixer()
    lengths, T, new = [7, 3, 1], 7, 4
    prompt, cont = torch.randn(3, T, 16), torch.randn(3, new, 16)
    pad = torch.zeros(3, T, dtype=torch.bool)
    for i, n in enumerate(lengths):
        if side == "left":
            pad[i, : T - n] = True
        else:
            pad[i, n:] = True
    cache = SSMCache()
    m(prompt, causal=True, key_padding_mask=pad, cache=cache)
    steps = []
    for t in range(new):  # the attention convention: a mask over every token so far
        mask = torch.cat([pad, torch.zeros(3, t + 1, dtype=torch.bool)], dim=1)
        steps.append(m(cont[:, t : t + 1], causal=True, key_padding_mask=mask, cache=cache))
    steps = torch.cat(steps, dim=1)
    for i in range(3):
        alone = m(torch.cat([prompt[i : i + 1, ~pad[i]], cont[i : i + 1]], dim=1), causal=True)
        torch.testing.assert_close(steps[i : i + 1], alone[:, -new:], atol=1e-5, rtol=1e-5)


def test_a_padded_step_leaves_the_cache_unchanged():
    m = make_mixer()
    cache = SSMCache()
    m(torch.randn(2, 5, 16), causal=True, cache=cache)
    conv, ssm = cache.conv_state.clone(), cache.ssm_state.clone()
    out = m(torch.randn(2, 1, 16), causal=True, key_padding_mask=torch.tensor([[True], [False]]), cache=cache)
    assert (out[0] == 0).all()
    assert torch.equal(cache.conv_state[0], conv[0]) and torch.equal(cache.ssm_state[0], ssm[0])
    assert not torch.equal(cache.ssm_state[1], ssm[1])


# --------------------------------------------------------------------------- construction and call rules


def test_parameters_and_initialisation_follow_the_reference():
    m = MambaMixer(40, bidirectional=True)
    assert (m.d_inner, m.d_state, m.d_conv, m.dt_rank) == (80, 16, 4, math.ceil(40 / 16))
    assert m.in_proj.bias is None and m.out_proj.bias is None and m.conv1d.bias is not None
    assert m.conv1d.padding == (3,) and m.conv1d.groups == 80
    for suffix in ("", "_b"):
        dt_proj, A_log, D = (getattr(m, name + suffix) for name in ("dt_proj", "A_log", "D"))
        assert dt_proj.weight.abs().max() <= m.dt_rank ** -0.5
        dt = F.softplus(dt_proj.bias)
        assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
        assert torch.equal(A_log, torch.log(torch.arange(1, 17.0)).repeat(80, 1))
        assert torch.equal(D, torch.ones(80))
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes["x_proj.weight"] == (m.dt_rank + 32, 80) and shapes["dt_proj.weight"] == (80, m.dt_rank)
    assert shapes["in_proj.weight"] == (160, 40) and shapes["out_proj.weight"] == (40, 80)


def test_call_rules():
    uni, bi = make_mixer(), make_mixer(bidirectional=True)
    x = torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match="causal by construction"):
        uni(x)
    with pytest.raises(ValueError, match="bidirectional"):
        bi(x, causal=True)
    with pytest.raises(ValueError, match="cache"):
        bi(x, cache=SSMCache())
    with pytest.raises(ValueError, match="bias"):
        uni(x, causal=True, bias=torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="key_padding_mask"):
        uni(x, causal=True, key_padding_mask=torch.zeros(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="chunk_size"):
        MambaMixer(16, chunk_size=1)
    assert bi(x).shape == uni(x, causal=True).shape == (1, 4, 16)


def test_low_precision_input_scans_in_float32():
    m = make_mixer()
    x = torch.randn(2, 12, 16)
    out = m.to(torch.bfloat16)(x.to(torch.bfloat16), causal=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), make_mixer()(x, causal=True), atol=0.05, rtol=0.05)


# --------------------------------------------------------------------------- parity with mambapy


def mambapy_block(dim=16, d_state=8, bidirectional=False):
    """mambapy's mixer block (``MambaBlock`` is exactly the mixer: its ResidualBlock adds the norm
    and residual around it), with SSM parameters moved off their init."""
    module = pytest.importorskip("mambapy.vim" if bidirectional else "mambapy.mamba")
    torch.manual_seed(0)
    config = module.MambaConfig(d_model=dim, n_layers=1, d_state=d_state)
    block = module.VMambaBlock(config) if bidirectional else module.MambaBlock(config)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.startswith(("A_log", "D", "dt_proj")):
                p.add_(0.3 * torch.randn_like(p))
    return block


@pytest.mark.parametrize("bidirectional", [False, True])
def test_parity_with_mambapy_parallel_forward_and_backward(bidirectional):
    block = mambapy_block(bidirectional=bidirectional)
    mixer = MambaMixer(16, d_state=8, bidirectional=bidirectional, chunk_size=8)
    mixer.load_state_dict(block.state_dict())  # strict: the same names and shapes
    torch.manual_seed(3)
    x, cot = torch.randn(2, 27, 16), torch.randn(2, 27, 16)
    ours = run(lambda t: mixer(t, causal=not bidirectional), mixer, x, cot)
    theirs = run(block, block, x, cot)
    assert_same_run(ours, theirs, 1e-5)


def test_parity_with_mambapy_step_forward_and_backward():
    block = mambapy_block()
    mixer = MambaMixer(16, d_state=8)
    mixer.load_state_dict(block.state_dict())
    torch.manual_seed(4)
    x, cot = torch.randn(2, 10, 16), torch.randn(2, 10, 16)

    def ours(t):
        cache = SSMCache()
        return torch.cat([mixer(t[:, i : i + 1], causal=True, cache=cache) for i in range(t.shape[1])], dim=1)

    def theirs(t):
        state = (None, torch.zeros(t.shape[0], block.config.d_inner, block.config.d_conv - 1))
        outs = []
        for i in range(t.shape[1]):
            y, state = block.step(t[:, i], state)
            outs.append(y)
        return torch.stack(outs, dim=1)

    assert_same_run(run(ours, mixer, x, cot), run(theirs, block, x, cot), 1e-5)
