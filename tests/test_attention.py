"""Tests of the shared attention core: zoo/core/attention.py, layers.py and position.py.

Everything runs on CPU with tiny tensors (B <= 3, T <= 9, E <= 32). Backend comparisons run in
float64 so that tolerances can be tight; the parity tests against ``torch.nn`` run in float32.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import zoo.core.attention as attn_mod
from zoo.core.attention import (BACKENDS, KVCache, MultiHeadAttention, attention_backend, causal_mask,
                                get_backend, set_backend)
from zoo.core.layers import DecoderBlock, EncoderBlock
from zoo.core.position import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, sinusoidal_table

B, T, S, E, H, MLP = 3, 6, 7, 16, 4, 24
BACKEND_NAMES = ["sdpa", "math"]
TIGHT = dict(rtol=1e-9, atol=1e-10)  # float64 comparisons
F32 = dict(rtol=1e-5, atol=1e-5)  # float32 parity with torch.nn


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
    oversubscription makes this file ~10x slower; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _restore_backend():
    """No test leaks a changed process-wide default backend into the next."""
    before = get_backend()
    yield
    set_backend(before)


def randomize_(module: nn.Module, seed: int = 0, std: float = 0.3) -> nn.Module:
    """Non-trivial values for every parameter (biases and LayerNorm affine included), so that a
    mis-wired bias or norm cannot hide behind a zero/one initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype) * std
            if name.endswith("norm.weight") or ("norm" in name and name.endswith("weight")):
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise if p.dim() == 1 else p + noise)
    return module


def make_mha(seed: int = 0, *, dropout: float = 0.0, double: bool = True) -> MultiHeadAttention:
    torch.manual_seed(seed)
    m = randomize_(MultiHeadAttention(E, H, dropout=dropout), seed)
    return (m.double() if double else m).eval()


def right_padding(lengths: list[int], total: int) -> torch.Tensor:
    """Bool (len(lengths), total), True at padding (positions >= the row's length)."""
    return torch.arange(total)[None, :] >= torch.tensor(lengths)[:, None]


def rand(*shape, seed: int, requires_grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(requires_grad)


def outputs_and_grads(module: nn.Module, fn, leaves: dict[str, torch.Tensor]):
    """Run ``fn()``, backpropagate a fixed random cotangent and return (output, {name: grad}) for
    the given input leaves and every parameter of ``module``."""
    module.zero_grad(set_to_none=True)
    for t in leaves.values():
        t.grad = None
    out = fn()
    cot = rand(*out.shape, seed=1234)
    (out * cot).sum().backward()
    grads = {f"input:{k}": v.grad.clone() for k, v in leaves.items()}
    grads.update({f"param:{k}": p.grad.clone() for k, p in module.named_parameters()})
    assert all(g is not None for g in grads.values())
    return out.detach(), grads


def assert_same(a, b, **tol):
    out_a, grads_a = a
    out_b, grads_b = b
    assert torch.isfinite(out_a).all()
    torch.testing.assert_close(out_a, out_b, **tol)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        assert torch.isfinite(grads_a[k]).all(), k
        torch.testing.assert_close(grads_a[k], grads_b[k], **tol, msg=lambda m, k=k: f"grad {k}: {m}")


# ----------------------------------------------------------------------------------------------
# 1. backend agreement (outputs and gradients), sdpa vs math
# ----------------------------------------------------------------------------------------------

MHA_CASES = {
    "plain": dict(),
    "causal": dict(causal=True),
    "padding": dict(padding=True),
    "bias_full": dict(bias="full"),
    "bias_broadcast": dict(bias="broadcast"),
    "causal_padding": dict(causal=True, padding=True),
    "causal_padding_bias_full": dict(causal=True, padding=True, bias="full"),
    "causal_padding_bias_broadcast": dict(causal=True, padding=True, bias="broadcast"),
    "cross": dict(cross=True),
    "cross_padding": dict(cross=True, padding=True),
    "cross_padding_bias": dict(cross=True, padding=True, bias="full"),
    # bottom-right aligned causality with T < S (the non-square path of sdpa_attention)
    "cross_causal_padding": dict(cross=True, causal=True, padding=True),
}


def build_case(spec: dict):
    """Inputs for one MHA_CASES entry: (leaves for gradients, forward kwargs)."""
    x = rand(B, T, E, seed=1, requires_grad=True)
    leaves = {"x": x}
    kw: dict = dict(causal=spec.get("causal", False))
    s_len = T
    if spec.get("cross"):
        s_len = S
        leaves["memory"] = kw["memory"] = rand(B, S, E, seed=2, requires_grad=True)
    if spec.get("padding"):
        # every row keeps key 0, so no query row is fully masked, causal or not
        kw["key_padding_mask"] = right_padding([s_len, s_len - 2, 2], s_len)
    if spec.get("bias") == "full":
        leaves["bias"] = kw["bias"] = rand(B, H, T, s_len, seed=3, requires_grad=True)
    elif spec.get("bias") == "broadcast":
        leaves["bias"] = kw["bias"] = rand(1, 1, T, s_len, seed=3, requires_grad=True)
    return leaves, kw


def mha_run(mha, leaves, kw, backend):
    kw = dict(kw)
    memory = kw.pop("memory", None)
    return outputs_and_grads(mha, lambda: mha(leaves["x"], memory, backend=backend, **kw), leaves)


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_backends_agree_outputs_and_gradients(case):
    mha = make_mha()
    leaves, kw = build_case(MHA_CASES[case])
    sdpa = mha_run(mha, leaves, kw, "sdpa")
    math_ = mha_run(mha, leaves, kw, "math")
    assert_same(sdpa, math_, **TIGHT)


@pytest.mark.parametrize("case", ["causal_padding_bias_full", "cross_padding"])
def test_backends_agree_in_float32(case):
    """The same agreement in the dtype models actually train in."""
    mha = make_mha(double=False)
    leaves, kw = build_case(MHA_CASES[case])
    leaves = {k: v.detach().float() for k, v in leaves.items()}
    kw = {k: (leaves[k] if k in leaves else v) for k, v in kw.items()}
    memory = kw.pop("memory", None)
    with torch.no_grad():
        a = mha(leaves["x"], memory, backend="sdpa", **kw)
        b = mha(leaves["x"], memory, backend="math", **kw)
    torch.testing.assert_close(a, b, **F32)


# A query row whose keys are all masked (causal + left padding, or a memory row that is all
# padding) gets zero output from both backends, and finite gradients: the math backend once gave NaN.


@pytest.mark.parametrize("case", ["causal_left_padding", "cross_row_all_padding"])
def test_fully_masked_query_rows_agree_and_keep_gradients_finite(case):
    mha = make_mha()
    x = rand(B, T, E, seed=1)
    if case == "causal_left_padding":
        # row 1 is left-padded by 2: its queries 0 and 1 see only padded keys under causality
        memory, kw = None, dict(causal=True, key_padding_mask=right_padding([T, T - 2, T], T).flip(-1))
        live = ~kw["key_padding_mask"]
    else:
        # row 2 has no real memory at all
        memory, kw = rand(B, S, E, seed=2), dict(key_padding_mask=right_padding([S, 4, 0], S))
        live = torch.tensor([True, True, False])[:, None].expand(B, T)
    results = {}
    for backend in BACKEND_NAMES:
        mha.zero_grad(set_to_none=True)
        out = mha(x, memory, backend=backend, **kw)
        out[live].sum().backward()  # a loss that ignores the dead query rows
        results[backend] = out.detach(), {k: p.grad for k, p in mha.named_parameters()}
    torch.testing.assert_close(results["math"][0][live], results["sdpa"][0][live], **TIGHT)
    torch.testing.assert_close(results["math"][0], results["sdpa"][0], **TIGHT, equal_nan=True)
    for k, g in results["math"][1].items():
        assert torch.isfinite(g).all(), f"math backend: NaN gradient in {k}"
        torch.testing.assert_close(g, results["sdpa"][1][k], **TIGHT)


def test_masks_actually_matter():
    """Guards the agreement tests against vacuity: each mask/bias changes the output."""
    mha = make_mha()
    x = rand(B, T, E, seed=1)
    with torch.no_grad():
        base = mha(x, backend="math")
        for kw in (dict(causal=True), dict(key_padding_mask=right_padding([T, 3, 2], T)),
                   dict(bias=rand(1, 1, T, T, seed=3))):
            assert not torch.allclose(base, mha(x, backend="math", **kw))


# ---- KV cache -------------------------------------------------------------------------------

SCHEDULES = {
    "one_at_a_time": [1] * T,
    "prefill3_then_steps": [3, 1, 1, 1],
    "chunks": [2, 3, 1],
}


def decode(mha, x, schedule, backend, *, padding=None, bias=None, causal=True):
    """Feed x (B, T, E) through ``mha`` in chunks of ``schedule`` with a KVCache; concat outputs."""
    assert sum(schedule) == x.shape[1]
    cache, outs, pos = KVCache(), [], 0
    for n in schedule:
        total = pos + n
        out = mha(x[:, pos:total], causal=causal, cache=cache, backend=backend,
                  key_padding_mask=None if padding is None else padding[:, :total],
                  bias=None if bias is None else bias[:, :, pos:total, :total])
        outs.append(out)
        pos = total
        assert cache.length == total
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("masks", ["none", "padding", "padding_bias"])
def test_kv_cache_matches_full_causal_pass_on_both_backends(schedule, masks):
    mha = make_mha()
    x = rand(B, T, E, seed=1, requires_grad=True)
    leaves = {"x": x}
    kw = {}
    if masks in ("padding", "padding_bias"):
        kw["padding"] = right_padding([T, 4, 2], T)
    if masks == "padding_bias":
        leaves["bias"] = kw["bias"] = rand(B, H, T, T, seed=3, requires_grad=True)
    sched = SCHEDULES[schedule]

    def full(backend):
        return lambda: mha(x, causal=True, backend=backend, key_padding_mask=kw.get("padding"),
                           bias=kw.get("bias"))

    reference = outputs_and_grads(mha, full("math"), leaves)
    for backend in BACKEND_NAMES:
        cached = outputs_and_grads(mha, lambda: decode(mha, x, sched, backend, **kw), leaves)
        uncached = outputs_and_grads(mha, full(backend), leaves)
        assert_same(cached, reference, **TIGHT)
        assert_same(uncached, reference, **TIGHT)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_single_step_decoding_needs_no_causal_flag(backend):
    """Documented: one query at a time sees exactly the cache, so causal=False gives the same."""
    mha = make_mha()
    x = rand(B, T, E, seed=1)
    with torch.no_grad():
        got = decode(mha, x, [1] * T, backend, causal=False)
        want = mha(x, causal=True, backend="math")
    torch.testing.assert_close(got, want, **TIGHT)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_cross_attention_cache_projects_memory_once(backend):
    mha = make_mha()
    x, memory = rand(B, T, E, seed=1), rand(B, S, E, seed=2)
    pad = right_padding([S, 5, 2], S)
    cache = KVCache()
    with torch.no_grad():
        want = mha(x, memory, key_padding_mask=pad, backend="math")
        steps = []
        for t in range(T):
            # after the first step the cached memory keys/values are used, whatever is passed
            mem = memory if t == 0 else torch.zeros_like(memory)
            steps.append(mha(x[:, t:t + 1], mem, key_padding_mask=pad, cache=cache, backend=backend))
            assert cache.length == S
    torch.testing.assert_close(torch.cat(steps, 1), want, **TIGHT)


# ---- the global backend switch ----------------------------------------------------------------


@pytest.fixture
def spies(monkeypatch):
    """Count calls of the two backend kernels as MultiHeadAttention dispatches to them."""
    calls = {"sdpa": 0, "math": 0}
    real_sdpa, real_math = attn_mod.sdpa_attention, attn_mod.math_attention

    def sdpa(*a, **k):
        calls["sdpa"] += 1
        return real_sdpa(*a, **k)

    def math_(*a, **k):
        calls["math"] += 1
        return real_math(*a, **k)

    monkeypatch.setattr(attn_mod, "sdpa_attention", sdpa)
    monkeypatch.setattr(attn_mod, "math_attention", math_)
    return calls


def test_default_backend_is_sdpa_and_dispatches_there(spies):
    assert get_backend() == "sdpa"
    assert set(BACKENDS) == {"sdpa", "math"}
    make_mha()(rand(1, 3, E, seed=0))
    assert spies == {"sdpa": 1, "math": 0}


def test_attention_backend_context_manager(spies):
    mha, x = make_mha(), rand(1, 3, E, seed=0)
    with attention_backend("math"):
        assert get_backend() == "math"
        mha(x)
        assert spies == {"sdpa": 0, "math": 1}
        mha(x, backend="sdpa")  # an explicit backend wins over the default
        assert spies == {"sdpa": 1, "math": 1}
        with attention_backend("sdpa"):  # nesting restores the outer choice
            assert get_backend() == "sdpa"
        assert get_backend() == "math"
    assert get_backend() == "sdpa"
    mha(x)
    assert spies == {"sdpa": 2, "math": 1}


def test_attention_backend_restores_on_exception():
    with pytest.raises(RuntimeError, match="boom"):
        with attention_backend("math"):
            raise RuntimeError("boom")
    assert get_backend() == "sdpa"


def test_set_backend_and_get_backend(spies):
    mha, x = make_mha(), rand(1, 3, E, seed=0)
    set_backend("math")
    assert get_backend() == "math"
    mha(x)
    assert spies == {"sdpa": 0, "math": 1}
    set_backend("sdpa")
    assert get_backend() == "sdpa"
    mha(x)
    assert spies == {"sdpa": 1, "math": 1}


def test_return_weights_goes_through_math_even_on_sdpa(spies):
    make_mha()(rand(1, 3, E, seed=0), backend="sdpa", return_weights=True)
    assert spies == {"sdpa": 0, "math": 1}


@pytest.mark.parametrize("how", ["set_backend", "attention_backend", "forward"])
def test_unknown_backend_raises_value_error_naming_accepted(how):
    with pytest.raises(ValueError) as err:
        if how == "set_backend":
            set_backend("flash")
        elif how == "attention_backend":
            with attention_backend("flash"):
                raise AssertionError("unreachable: entering the block must already fail")
        else:
            make_mha()(rand(1, 3, E, seed=0), backend="flash")
    message = str(err.value)
    assert "flash" in message and "sdpa" in message and "math" in message
    assert get_backend() == "sdpa"  # a rejected name changes nothing


def test_dim_not_divisible_by_heads_raises():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)


# ----------------------------------------------------------------------------------------------
# 2. causality and 3. padding
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("split", [1, 3, T - 1])
@pytest.mark.parametrize("padding", [False, True], ids=["nopad", "pad"])
def test_future_tokens_do_not_change_past_outputs(backend, split, padding):
    mha = make_mha()
    x = rand(B, T, E, seed=1)
    x2 = x.clone()
    x2[:, split:] = rand(B, T - split, E, seed=99)
    kpm = right_padding([T, 4, 2], T) if padding else None
    with torch.no_grad():
        a = mha(x, causal=True, key_padding_mask=kpm, backend=backend)
        b = mha(x2, causal=True, key_padding_mask=kpm, backend=backend)
    torch.testing.assert_close(a[:, :split], b[:, :split], rtol=0, atol=1e-12)
    assert not torch.allclose(a[:, split:], b[:, split:])  # the change did reach later positions


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("kind", ["self", "self_causal", "cross", "cross_bias"])
def test_padded_keys_do_not_influence_real_queries(backend, kind):
    mha = make_mha()
    cross = kind.startswith("cross")
    s_len = S if cross else T
    pad = right_padding([s_len, s_len - 3, 2], s_len)
    x, memory = rand(B, T, E, seed=1), rand(B, S, E, seed=2)
    bias = rand(B, H, T, s_len, seed=3) if kind == "cross_bias" else None
    junk = rand(B, s_len, E, seed=7) * 10
    with torch.no_grad():
        if cross:
            x2 = x
            mem2 = torch.where(pad[..., None], junk, memory)
            a = mha(x, memory, key_padding_mask=pad, bias=bias, backend=backend)
            b = mha(x2, mem2, key_padding_mask=pad, bias=bias, backend=backend)
            real_queries = torch.ones(B, T, dtype=torch.bool)
        else:
            # in self-attention the padded positions are also queries: their outputs may change
            x2 = torch.where(pad[..., None], junk, x)
            causal = kind == "self_causal"
            a = mha(x, key_padding_mask=pad, causal=causal, backend=backend)
            b = mha(x2, key_padding_mask=pad, causal=causal, backend=backend)
            real_queries = ~pad
    torch.testing.assert_close(a[real_queries], b[real_queries], rtol=0, atol=1e-12)
    # and without the mask the same change would have mattered
    with torch.no_grad():
        c = mha(x, memory if cross else None, backend=backend)
        d = mha(x2, mem2 if cross else None, backend=backend)
    assert not torch.allclose(c[real_queries], d[real_queries])


# ----------------------------------------------------------------------------------------------
# 4. parity with torch.nn.MultiheadAttention
# ----------------------------------------------------------------------------------------------


def copy_from_torch_mha(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        ours.in_proj.weight.copy_(ref.in_proj_weight)
        ours.in_proj.bias.copy_(ref.in_proj_bias)
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        ours.out_proj.bias.copy_(ref.out_proj.bias)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("case", ["self", "padding", "causal", "causal_padding", "cross", "cross_padding"])
def test_parity_with_torch_multihead_attention(backend, case):
    torch.manual_seed(0)
    ref = randomize_(nn.MultiheadAttention(E, H, batch_first=True), seed=5).eval()
    ours = MultiHeadAttention(E, H).eval()
    copy_from_torch_mha(ours, ref)
    x, memory = torch.randn(B, T, E), torch.randn(B, S, E)
    cross = case.startswith("cross")
    s_len = S if cross else T
    kpm = right_padding([s_len, s_len - 2, 3], s_len) if "padding" in case else None
    causal = "causal" in case
    attn_mask = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None
    kv = memory if cross else x
    with torch.no_grad():
        want, want_w = ref(x, kv, kv, key_padding_mask=kpm, attn_mask=attn_mask,
                           need_weights=True, average_attn_weights=False)
        got = ours(x, memory if cross else None, causal=causal, key_padding_mask=kpm, backend=backend)
        got2, got_w = ours(x, memory if cross else None, causal=causal, key_padding_mask=kpm,
                           backend=backend, return_weights=True)
    torch.testing.assert_close(got, want, **F32)
    torch.testing.assert_close(got2, want, **F32)
    torch.testing.assert_close(got_w, want_w, **F32)


def test_initialisation_follows_torch_multihead_attention():
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H)
    assert m.in_proj.weight.shape == (3 * E, E)
    assert torch.count_nonzero(m.in_proj.bias) == 0 and torch.count_nonzero(m.out_proj.bias) == 0
    bound = math.sqrt(6.0 / (E + 3 * E))  # xavier_uniform over the packed (3E, E) matrix
    assert m.in_proj.weight.abs().max() <= bound
    assert m.in_proj.weight.abs().max() > 0.8 * bound
    assert MultiHeadAttention(E, H, bias=False).in_proj.bias is None


# ----------------------------------------------------------------------------------------------
# 5. attention weights
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("case", ["plain", "causal", "padding", "causal_padding_bias_broadcast",
                                  "cross_padding_bias", "cross_causal_padding"])
def test_return_weights_are_distributions_with_zeros_at_masked_keys(backend, case):
    mha = make_mha()
    leaves, kw = build_case(MHA_CASES[case])
    memory = kw.pop("memory", None)
    x = leaves["x"]
    s_len = S if memory is not None else T
    with torch.no_grad():
        out, w = mha(x, memory, backend=backend, return_weights=True, **kw)
        plain = mha(x, memory, backend=backend, **kw)
    assert w.shape == (B, H, T, s_len)
    torch.testing.assert_close(out, plain, **TIGHT)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, T, dtype=w.dtype), **TIGHT)
    masked = torch.zeros(B, 1, T, s_len, dtype=torch.bool)
    if kw.get("causal"):
        masked |= ~causal_mask(T, s_len)
    if kw.get("key_padding_mask") is not None:
        masked |= kw["key_padding_mask"][:, None, None, :]
    masked = masked.expand_as(w)
    assert masked.any() == (case != "plain")
    assert (w[masked] == 0).all()
    assert (w[~masked] > 0).all()


@pytest.mark.parametrize("q_len,k_len", [(4, 4), (1, 5), (3, 7)])
def test_causal_mask_is_bottom_right_aligned(q_len, k_len):
    m = causal_mask(q_len, k_len)
    assert m.dtype == torch.bool and m.shape == (q_len, k_len)
    for i in range(q_len):
        absolute = k_len - q_len + i
        assert m[i].tolist() == [j <= absolute for j in range(k_len)]


# ----------------------------------------------------------------------------------------------
# 6. dropout
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_dropout_is_inactive_in_eval_mode(backend):
    with_dropout, without = make_mha(dropout=0.5), make_mha(dropout=0.0)
    x = rand(B, T, E, seed=1)
    with torch.no_grad():
        a = with_dropout.eval()(x, causal=True, backend=backend)
        b = with_dropout(x, causal=True, backend=backend)
        c = without.eval()(x, causal=True, backend=backend)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, **TIGHT)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("return_weights", [False, True])
def test_dropout_is_active_in_train_mode(backend, return_weights):
    mha = make_mha(dropout=0.5).train()
    x = rand(B, T, E, seed=1)
    torch.manual_seed(0)
    with torch.no_grad():
        a = mha(x, backend=backend, return_weights=return_weights)
        b = mha(x, backend=backend, return_weights=return_weights)
        ref = mha.eval()(x, backend=backend)
    if return_weights:
        a, b = a[0], b[0]
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, ref)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_train_mode_without_dropout_is_deterministic(backend):
    mha = make_mha(dropout=0.0).train()
    x = rand(B, T, E, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(mha(x, backend=backend), mha.eval()(x, backend=backend), **TIGHT)


# ----------------------------------------------------------------------------------------------
# 7. KVCache.reorder
# ----------------------------------------------------------------------------------------------


def test_kv_cache_append_and_reorder_select_batch_rows():
    cache = KVCache()
    assert cache.length == 0
    cache.reorder(torch.tensor([0]))  # empty: a no-op
    assert cache.k is None and cache.v is None
    k1, v1 = rand(3, H, 2, 4, seed=1), rand(3, H, 2, 4, seed=2)
    k2, v2 = rand(3, H, 1, 4, seed=3), rand(3, H, 1, 4, seed=4)
    cache.append(k1, v1)
    k, v = cache.append(k2, v2)
    assert cache.length == 3
    torch.testing.assert_close(k, torch.cat([k1, k2], 2), rtol=0, atol=0)
    torch.testing.assert_close(v, torch.cat([v1, v2], 2), rtol=0, atol=0)
    index = torch.tensor([2, 0, 0])
    cache.reorder(index)
    torch.testing.assert_close(cache.k, k[index], rtol=0, atol=0)
    torch.testing.assert_close(cache.v, v[index], rtol=0, atol=0)
    assert cache.length == 3


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_reordered_cache_continues_the_selected_hypotheses(backend):
    """Beam search: prefill a batch, keep rows [2, 0, 0], decode on; equals the full pass on x[index]."""
    mha = make_mha()
    x = rand(B, T, E, seed=1)
    index = torch.tensor([2, 0, 0])
    cache = KVCache()
    with torch.no_grad():
        head = mha(x[:, :3], causal=True, cache=cache, backend=backend)
        cache.reorder(index)
        tail = [mha(x[index, t:t + 1], causal=True, cache=cache, backend=backend) for t in range(3, T)]
        want = mha(x[index], causal=True, backend="math")
    torch.testing.assert_close(head[index], want[:, :3], **TIGHT)
    torch.testing.assert_close(torch.cat(tail, 1), want[:, 3:], **TIGHT)


# ----------------------------------------------------------------------------------------------
# 8. encoder and decoder blocks
# ----------------------------------------------------------------------------------------------


def make_block(cls, norm_first: bool, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return randomize_(cls(E, H, MLP, norm_first=norm_first, **kw), seed).double().eval()


@pytest.mark.parametrize("norm_first", [False, True], ids=["postnorm", "prenorm"])
@pytest.mark.parametrize("masks", ["none", "causal_padding_bias"])
def test_encoder_block_backends_agree(norm_first, masks):
    block = make_block(EncoderBlock, norm_first)
    x = rand(B, T, E, seed=1, requires_grad=True)
    leaves, kw = {"x": x}, {}
    if masks != "none":
        kw = dict(causal=True, key_padding_mask=right_padding([T, 4, 2], T))
        leaves["bias"] = kw["bias"] = rand(1, H, T, T, seed=3, requires_grad=True)
    results = []
    for backend in BACKEND_NAMES:
        with attention_backend(backend):
            results.append(outputs_and_grads(block, lambda: block(x, **kw), leaves))
    assert_same(*results, **TIGHT)


@pytest.mark.parametrize("norm_first", [False, True], ids=["postnorm", "prenorm"])
def test_decoder_block_backends_agree(norm_first):
    block = make_block(DecoderBlock, norm_first)
    x = rand(B, T, E, seed=1, requires_grad=True)
    memory = rand(B, S, E, seed=2, requires_grad=True)
    kw = dict(tgt_key_padding_mask=right_padding([T, 4, 2], T),
              memory_key_padding_mask=right_padding([S, 5, 3], S))
    results = []
    for backend in BACKEND_NAMES:
        with attention_backend(backend):
            results.append(outputs_and_grads(block, lambda: block(x, memory, **kw),
                                             {"x": x, "memory": memory}))
    assert_same(*results, **TIGHT)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("norm_first", [False, True], ids=["postnorm", "prenorm"])
@pytest.mark.parametrize("schedule", ["one_at_a_time", "prefill3_then_steps"])
def test_decoder_block_cached_decoding_equals_full_pass(backend, norm_first, schedule):
    block = make_block(DecoderBlock, norm_first)
    x, memory = rand(B, T, E, seed=1), rand(B, S, E, seed=2)
    tgt_pad, mem_pad = right_padding([T, 4, 2], T), right_padding([S, 5, 3], S)
    self_cache, cross_cache = KVCache(), KVCache()
    outs, pos = [], 0
    with attention_backend(backend), torch.no_grad():
        want = block(x, memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
        for n in SCHEDULES[schedule]:
            outs.append(block(x[:, pos:pos + n], memory, tgt_key_padding_mask=tgt_pad[:, :pos + n],
                              memory_key_padding_mask=mem_pad, self_cache=self_cache,
                              cross_cache=cross_cache))
            pos += n
    assert self_cache.length == T and cross_cache.length == S
    torch.testing.assert_close(torch.cat(outs, 1), want, **TIGHT)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("norm_first", [False, True], ids=["postnorm", "prenorm"])
def test_encoder_block_cached_causal_decoding_equals_full_pass(backend, norm_first):
    """EncoderBlock with causal=True is the GPT block; its cache must reproduce the full pass."""
    block = make_block(EncoderBlock, norm_first)
    x = rand(B, T, E, seed=1)
    cache, outs, pos = KVCache(), [], 0
    with attention_backend(backend), torch.no_grad():
        want = block(x, causal=True)
        for n in SCHEDULES["prefill3_then_steps"]:
            outs.append(block(x[:, pos:pos + n], causal=True, cache=cache))
            pos += n
    torch.testing.assert_close(torch.cat(outs, 1), want, **TIGHT)


def copy_from_torch_encoder_layer(ours: EncoderBlock, ref: nn.TransformerEncoderLayer) -> None:
    copy_from_torch_mha(ours.attn, ref.self_attn)
    ours.mlp.fc1.load_state_dict(ref.linear1.state_dict())
    ours.mlp.fc2.load_state_dict(ref.linear2.state_dict())
    ours.res_attn.norm.load_state_dict(ref.norm1.state_dict())
    ours.res_mlp.norm.load_state_dict(ref.norm2.state_dict())


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("norm_first", [False, True], ids=["postnorm", "prenorm"])
@pytest.mark.parametrize("masks", ["none", "padding", "causal"])
def test_encoder_block_matches_torch_transformer_encoder_layer(backend, norm_first, masks):
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(E, H, dim_feedforward=MLP, dropout=0.0, activation="relu",
                                     batch_first=True, norm_first=norm_first)
    ref = randomize_(ref, seed=6).eval()
    ours = EncoderBlock(E, H, MLP, activation="relu", norm_first=norm_first).eval()
    copy_from_torch_encoder_layer(ours, ref)
    x = torch.randn(B, T, E)
    pad = right_padding([T, 4, 2], T) if masks == "padding" else None
    causal = masks == "causal"
    src_mask = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None
    with torch.no_grad():
        want = ref(x, src_mask=src_mask, src_key_padding_mask=pad, is_causal=causal)
        with attention_backend(backend):
            got = ours(x, causal=causal, key_padding_mask=pad)
    torch.testing.assert_close(got, want, **F32)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("norm_first", [False, True], ids=["postnorm", "prenorm"])
def test_decoder_block_matches_torch_transformer_decoder_layer(backend, norm_first):
    torch.manual_seed(0)
    ref = nn.TransformerDecoderLayer(E, H, dim_feedforward=MLP, dropout=0.0, activation="relu",
                                     batch_first=True, norm_first=norm_first)
    ref = randomize_(ref, seed=7).eval()
    ours = DecoderBlock(E, H, MLP, norm_first=norm_first).eval()
    copy_from_torch_mha(ours.self_attn, ref.self_attn)
    copy_from_torch_mha(ours.cross_attn, ref.multihead_attn)
    ours.mlp.fc1.load_state_dict(ref.linear1.state_dict())
    ours.mlp.fc2.load_state_dict(ref.linear2.state_dict())
    ours.res_self.norm.load_state_dict(ref.norm1.state_dict())
    ours.res_cross.norm.load_state_dict(ref.norm2.state_dict())
    ours.res_mlp.norm.load_state_dict(ref.norm3.state_dict())
    x, memory = torch.randn(B, T, E), torch.randn(B, S, E)
    tgt_pad, mem_pad = right_padding([T, 4, 2], T), right_padding([S, 5, 3], S)
    with torch.no_grad():
        want = ref(x, memory, tgt_mask=torch.ones(T, T, dtype=torch.bool).triu(1),
                   tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad, tgt_is_causal=True)
        with attention_backend(backend):
            got = ours(x, memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
    torch.testing.assert_close(got, want, **F32)


# ----------------------------------------------------------------------------------------------
# 9. positions
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [6, 7, 1])
def test_sinusoidal_table_matches_formula(dim):
    length = 9
    table = sinusoidal_table(length, dim)
    assert table.shape == (length, dim)
    for pos in (0, 1, 5, length - 1):
        for col in range(dim):
            i = col // 2
            angle = pos / 10000 ** (2 * i / dim)
            expected = math.sin(angle) if col % 2 == 0 else math.cos(angle)
            assert table[pos, col].item() == pytest.approx(expected, abs=1e-6), (pos, col)
    if dim > 1:
        assert table[0, 0] == 0 and table[0, 1] == 1


def test_sinusoidal_encoding_offset():
    pe = SinusoidalPositionalEncoding(E, max_len=16)
    x = rand(2, 5, E, seed=1)
    torch.testing.assert_close(pe(x), x + sinusoidal_table(16, E)[:5].double(), **TIGHT)
    torch.testing.assert_close(pe(x, offset=4), x + sinusoidal_table(16, E)[4:9].double(), **TIGHT)
    # decoding piecewise with offsets equals encoding the whole sequence at once
    torch.testing.assert_close(torch.cat([pe(x[:, :2]), pe(x[:, 2:], offset=2)], 1), pe(x), **TIGHT)
    assert pe(x).dtype == torch.float64


def test_learned_positional_embedding_offset_and_length_check():
    torch.manual_seed(0)
    emb = LearnedPositionalEmbedding(6, E)
    x = torch.randn(2, 4, E)
    torch.testing.assert_close(emb(x), x + emb.weight[:4])
    torch.testing.assert_close(emb(x, offset=2), x + emb.weight[2:6])  # exactly fills the table
    with pytest.raises(ValueError, match="exceeds"):
        emb(torch.randn(2, 7, E))
    with pytest.raises(ValueError, match="exceeds"):
        emb(x, offset=3)
    assert 0 < emb.weight.std().item() < 0.1


@pytest.mark.parametrize("offset,length", [(3, 2), (4, 1)], ids=["broadcast", "empty"])
def test_sinusoidal_encoding_rejects_positions_beyond_max_len(offset, length):
    pe = SinusoidalPositionalEncoding(8, max_len=4)
    with pytest.raises((ValueError, IndexError)):
        pe(torch.zeros(2, length, 8), offset=offset)


def test_one_cached_query_builds_no_causal_mask(monkeypatch):
    """A causal query at the cache's last position sees every key: SDPA gets no mask tensor (its flash
    kernels stay eligible), and the output is the masked computation's."""
    calls = []
    sdpa = attn_mod.F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(attn_mod.F, "scaled_dot_product_attention", spy)
    q, k, v = rand(2, 4, 1, 8, seed=1), rand(2, 4, 5, 8, seed=2), rand(2, 4, 5, 8, seed=3)
    got = attn_mod.sdpa_attention(q, k, v, causal=True)
    assert calls[-1].get("attn_mask") is None and not calls[-1].get("is_causal")
    want, _ = attn_mod.math_attention(q, k, v, causal=True)
    torch.testing.assert_close(got, want, **TIGHT)
