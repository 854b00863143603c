"""Tests of zoo/transformer.py (the encoder-decoder Transformer and GPT) and zoo/core/decoding.py.

- parity: the encoder/decoder stacks against ``torch.nn.Transformer`` with copied weights (post- and
  pre-norm), GPT against Hugging Face's ``GPT2LMHeadModel`` through ``GPT.from_hf``;
- decoding: cached vs uncached generation (GPT, encoder-decoder), ``decode_step`` vs teacher forcing,
  beam search (beam 1 == greedy, beam >= greedy, an exhaustive beam == brute-force search), padding
  invariance;
- the registered factories, weight tying and GPT-2 initialisation;
- a tiny GPT overfitting a repeated string.

Everything is tiny (dim <= 32, <= 2 layers, vocab <= 50) and runs on CPU in float32.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

import zoo
from zoo.core import KVCache, attention_backend, get_backend, set_backend
from zoo.core.decoding import beam_search, greedy_decode
from zoo.registry import RegistryError
from zoo.transformer import GPT, EncoderDecoderTransformer

F32 = dict(rtol=1e-5, atol=1e-5)
BACKENDS = ["math", "sdpa"]
PAD, BOS, EOS = 0, 1, 2

# encoder-decoder configuration for the parity and decoding tests
D, HEADS, LAYERS, FF = 32, 4, 2, 48


@pytest.fixture(autouse=True)
def _restore_backend():
    """No test leaks a changed process-wide attention backend."""
    before = get_backend()
    yield
    set_backend(before)


def randomize_(module: nn.Module, seed: int, std: float = 0.2) -> nn.Module:
    """Perturb every parameter (biases and LayerNorm affines included), so that a mis-wired bias or
    norm cannot hide behind a zero/one initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


# ----------------------------------------------------------------------------------------------
# 1. EncoderDecoderTransformer vs torch.nn.Transformer
# ----------------------------------------------------------------------------------------------


def _copy_linear(dst: nn.Linear, weight: Tensor, bias: Tensor) -> None:
    dst.weight.copy_(weight)
    dst.bias.copy_(bias)


def _copy_mha(dst: nn.Module, src: nn.MultiheadAttention) -> None:
    _copy_linear(dst.in_proj, src.in_proj_weight, src.in_proj_bias)
    _copy_linear(dst.out_proj, src.out_proj.weight, src.out_proj.bias)


def _copy_norm(dst: nn.LayerNorm, src: nn.LayerNorm) -> None:
    _copy_linear(dst, src.weight, src.bias)


@torch.no_grad()
def copy_torch_transformer_(ours: EncoderDecoderTransformer, ref: nn.Transformer) -> None:
    """Copy the weights of ``torch.nn.Transformer`` ``ref`` into the stacks of ``ours``."""
    assert len(ours.encoder) == len(ref.encoder.layers) and len(ours.decoder) == len(ref.decoder.layers)
    for o, r in zip(ours.encoder, ref.encoder.layers):
        _copy_mha(o.attn, r.self_attn)
        _copy_linear(o.mlp.fc1, r.linear1.weight, r.linear1.bias)
        _copy_linear(o.mlp.fc2, r.linear2.weight, r.linear2.bias)
        _copy_norm(o.res_attn.norm, r.norm1)
        _copy_norm(o.res_mlp.norm, r.norm2)
    for o, r in zip(ours.decoder, ref.decoder.layers):
        _copy_mha(o.self_attn, r.self_attn)
        _copy_mha(o.cross_attn, r.multihead_attn)
        _copy_linear(o.mlp.fc1, r.linear1.weight, r.linear1.bias)
        _copy_linear(o.mlp.fc2, r.linear2.weight, r.linear2.bias)
        _copy_norm(o.res_self.norm, r.norm1)
        _copy_norm(o.res_cross.norm, r.norm2)
        _copy_norm(o.res_mlp.norm, r.norm3)
    _copy_norm(ours.enc_norm, ref.encoder.norm)
    _copy_norm(ours.dec_norm, ref.decoder.norm)


def _pair(norm_first: bool, seed: int = 0) -> tuple[EncoderDecoderTransformer, nn.Transformer]:
    torch.manual_seed(seed)
    ref = nn.Transformer(d_model=D, nhead=HEADS, num_encoder_layers=LAYERS, num_decoder_layers=LAYERS,
                         dim_feedforward=FF, dropout=0.0, activation="relu", batch_first=True,
                         norm_first=norm_first)
    randomize_(ref, seed + 1)
    ours = EncoderDecoderTransformer(20, 20, dim=D, num_heads=HEADS, enc_layers=LAYERS, dec_layers=LAYERS,
                                     mlp_dim=FF, dropout=0.0, activation="relu", norm_first=norm_first,
                                     final_norm=True, max_len=32)
    copy_torch_transformer_(ours, ref)
    return ours.eval(), ref.eval()


def _src_batch(seed: int = 0, vocab: int = 20) -> tuple[Tensor, Tensor]:
    """(3, 7) source tokens and their padding mask; row 0 is unpadded, rows 1-2 padded at the end."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (3, 7), generator=g)
    lengths = torch.tensor([7, 4, 2])
    pad = torch.arange(7)[None, :] >= lengths[:, None]
    return src.masked_fill(pad, PAD), pad


def _decoder_stack(model: EncoderDecoderTransformer, tgt_emb: Tensor, memory: Tensor, pad: Tensor) -> Tensor:
    x = tgt_emb
    for block in model.decoder:
        x = block(x, memory, memory_key_padding_mask=pad)
    return model.dec_norm(x)


def test_copy_helper_copies_every_parameter():
    """Every parameter of our stacks receives a distinct parameter of torch's (embeddings and the
    head have no counterpart in torch.nn.Transformer), and nothing of torch's is left over."""
    ours, ref = _pair(norm_first=False)
    left = [p.detach() for p in ref.parameters()]
    for name, p in ours.named_parameters():
        if "embed" in name or name.startswith("head"):
            continue
        match = [i for i, r in enumerate(left) if r.shape == p.shape and torch.equal(r, p.detach())]
        assert len(match) == 1, name
        left.pop(match[0])
    assert left == []


@pytest.mark.filterwarnings("ignore:.*nested[ _]tensor:UserWarning")  # torch internals
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_matches_torch_transformer(norm_first, backend):
    ours, ref = _pair(norm_first)
    src, pad = _src_batch()
    tgt = torch.randint(3, 20, (3, 5), generator=torch.Generator().manual_seed(1))
    T = tgt.shape[1]
    with attention_backend(backend), torch.no_grad():
        src_emb = ours._embed(ours.src_embed, src)
        tgt_emb = ours._embed(ours.tgt_embed, tgt)
        memory = ours.encode(src, pad)
        # torch's no-grad fast path zeroes padded positions of the encoder output: compare real ones
        ref_memory = ref.encoder(src_emb, src_key_padding_mask=pad)
        torch.testing.assert_close(memory[~pad], ref_memory[~pad], **F32)
        out = _decoder_stack(ours, tgt_emb, memory, pad)
        ref_out = ref(src_emb, tgt_emb, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
                      src_key_padding_mask=pad, memory_key_padding_mask=pad)
        torch.testing.assert_close(out, ref_out, **F32)
        # forward() is the same stacks followed by the head
        torch.testing.assert_close(ours(src, pad, tgt), ours.head(out), **F32)
    # with autograd on, torch takes its slow path, which computes padded positions too
    with attention_backend(backend):
        torch.testing.assert_close(ours.encode(src, pad), ref.encoder(src_emb, src_key_padding_mask=pad), **F32)


# ----------------------------------------------------------------------------------------------
# 2. GPT vs Hugging Face GPT-2
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                     eos_token_id=0, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    randomize_(model, seed=1)
    return model.eval()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gpt_from_hf_matches_gpt2(hf_gpt2, backend):
    ours = GPT.from_hf(hf_gpt2).eval()
    assert ours.lm_head.weight is ours.wte.weight
    assert ours.block_size == 16 and len(ours.blocks) == 2
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), attention_backend(backend):
        expected = hf_gpt2(idx).logits
        torch.testing.assert_close(ours(idx), expected, **F32)
        torch.testing.assert_close(ours(idx[:, :5]), expected[:, :5], **F32)  # a shorter sequence


def test_gpt_from_hf_copies_not_shares(hf_gpt2):
    """from_hf returns an independent model: training it leaves the HF model unchanged."""
    ours = GPT.from_hf(hf_gpt2)
    before = hf_gpt2.transformer.wte.weight.clone()
    with torch.no_grad():
        ours.wte.weight.add_(1.0)
    torch.testing.assert_close(hf_gpt2.transformer.wte.weight, before, rtol=0, atol=0)


def _hf_gpt2(**setting):
    """A tiny random GPT2LMHeadModel with ``setting`` in its config, every weight moved off its init."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(**{**dict(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                               eos_token_id=0, attn_implementation="eager"), **setting})
    torch.manual_seed(0)
    return randomize_(transformers.GPT2LMHeadModel(config), seed=1).eval()


@pytest.mark.parametrize("setting, message", [
    (dict(tie_word_embeddings=False),
     "tie_word_embeddings=False: its lm_head differs from the token embedding (supported: tied, as GPT's head is)"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True (supported: False)"),
    (dict(add_cross_attention=True), "add_cross_attention=True (supported: False)"),
    (dict(activation_function="gelu"), "activation_function='gelu' (supported: gelu_new, gelu_pytorch_tanh)"),
    (dict(activation_function="relu"), "activation_function='relu' (supported: gelu_new, gelu_pytorch_tanh)"),
    (dict(scale_attn_weights=False), "scale_attn_weights=False (supported: True)"),
    (dict(scale_attn_by_inverse_layer_idx=True, tie_word_embeddings=False),
     "scale_attn_by_inverse_layer_idx=True (supported: False); tie_word_embeddings=False: its lm_head differs from "
     "the token embedding (supported: tied, as GPT's head is)"),
], ids=["untied", "inverse_layer_idx", "cross_attention", "gelu", "relu", "unscaled", "two"])
def test_gpt_from_hf_refuses_what_it_cannot_copy(setting, message):
    with pytest.raises(ValueError) as info:
        GPT.from_hf(_hf_gpt2(**setting))
    assert str(info.value) == f"unsupported GPT-2 config: {message}"


def test_gpt_from_hf_refuses_a_model_without_an_lm_head():
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="GPT.from_hf takes a GPT2LMHeadModel"):
        GPT.from_hf(transformers.GPT2Model(_hf_gpt2().config))


@pytest.mark.parametrize("setting", [dict(reorder_and_upcast_attn=True), dict(n_inner=48),
                                     dict(layer_norm_epsilon=1e-2), dict(activation_function="gelu_pytorch_tanh"),
                                     dict(tie_word_embeddings=False, tie_equal=True)],
                         ids=["reorder_and_upcast", "n_inner", "eps", "gelu_pytorch_tanh", "untied_but_equal"])
def test_gpt_from_hf_copies_the_settings_it_can(setting):
    """Settings GPT expresses (or, reorder_and_upcast_attn, that change only float32 rounding) convert exactly."""
    tie_equal = setting.pop("tie_equal", False)
    hf = _hf_gpt2(**setting)
    if tie_equal:
        with torch.no_grad():
            hf.lm_head.weight.copy_(hf.transformer.wte.weight)
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(GPT.from_hf(hf).eval()(idx), hf(idx).logits, **F32)


# ----------------------------------------------------------------------------------------------
# 3. generation
# ----------------------------------------------------------------------------------------------


def _gpt(seed: int = 0, block_size: int = 8, vocab: int = 50) -> GPT:
    torch.manual_seed(seed)
    model = GPT(vocab, block_size, dim=32, depth=2, num_heads=4)
    return randomize_(model, seed + 100, std=0.3).eval()  # large weights: decisive argmaxes


@pytest.mark.parametrize("backend", BACKENDS)
def test_gpt_cached_forward_matches_full_forward(backend):
    model = _gpt()
    idx = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), attention_backend(backend):
        full = model(idx)
        caches = [KVCache() for _ in model.blocks]
        parts = [model(idx[:, :3], caches), model(idx[:, 3:4], caches), model(idx[:, 4:], caches)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, **F32)
    with pytest.raises(ValueError, match="block_size"):
        model(idx[:, :1], caches)  # a 9th position does not exist


def _reference_greedy(model: GPT, idx: Tensor, steps: int) -> Tensor:
    """Greedy continuation by full forward passes over the last block_size tokens."""
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(idx[:, -model.block_size:])[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], dim=1)
    return idx


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("prompt_len, steps", [(3, 4), (3, 13), (10, 4)],
                         ids=["within_block", "sliding_window", "prompt_longer_than_block"])
def test_gpt_generate_greedy_cache_equals_no_cache(backend, prompt_len, steps):
    model = _gpt()  # block_size 8
    prompt = torch.randint(0, 50, (3, prompt_len), generator=torch.Generator().manual_seed(4))
    with attention_backend(backend):
        cached = model.generate(prompt, steps, temperature=0)
        uncached = model.generate(prompt, steps, temperature=0, use_cache=False)
        reference = _reference_greedy(model, prompt, steps)
    assert cached.shape == (3, prompt_len + steps)
    assert torch.equal(cached[:, :prompt_len], prompt)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, reference)


@pytest.mark.parametrize("top_k", [None, 5])
@pytest.mark.parametrize("steps", [4, 13], ids=["within_block", "sliding_window"])
def test_gpt_generate_sampling_cache_equals_no_cache(steps, top_k):
    model = _gpt()
    prompt = torch.randint(0, 50, (3, 2), generator=torch.Generator().manual_seed(5))
    kw = dict(temperature=1.5, top_k=top_k)
    a = model.generate(prompt, steps, generator=torch.Generator().manual_seed(7), **kw)
    b = model.generate(prompt, steps, use_cache=False, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a, b)
    c = model.generate(prompt, steps, generator=torch.Generator().manual_seed(8), **kw)
    assert not torch.equal(a, c)  # it does sample (another seed, another continuation)


@pytest.mark.parametrize("temperature, top_k", [(0.7, None), (1.5, None), (1.5, 3)])
def test_gpt_sampling_distribution(temperature, top_k):
    """4000 one-token continuations follow softmax(logits / temperature), restricted to the top k."""
    torch.manual_seed(0)
    model = randomize_(GPT(8, 8, dim=32, depth=1, num_heads=4), 1, std=0.1).eval()
    prompt = torch.tensor([[3, 5]])
    with torch.no_grad():
        logits = model(prompt)[0, -1] / temperature
    if top_k is not None:
        logits[logits < logits.topk(top_k).values[-1]] = float("-inf")
    expected = logits.softmax(-1)
    n = 4000
    out = model.generate(prompt.expand(n, -1), 1, temperature=temperature, top_k=top_k,
                         generator=torch.Generator().manual_seed(0))[:, -1]
    freq = torch.bincount(out, minlength=8).float() / n
    assert (freq[expected == 0] == 0).all()
    assert 0.5 * (freq - expected).abs().sum() < 0.04, (freq, expected)


def test_gpt_generate_top_k_1_is_greedy_and_restores_mode():
    model = _gpt().train()
    prompt = torch.randint(0, 50, (2, 3), generator=torch.Generator().manual_seed(6))
    out = model.generate(prompt, 10, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(0))
    assert model.training
    assert torch.equal(out, _reference_greedy(model.eval(), prompt, 10))


def _ed(seed: int = 0, vocab: int = 12, norm_first: bool = True, eos_bias: float = 1.5,
        sharpness: float = 2.0) -> EncoderDecoderTransformer:
    """A randomly initialised model for the decoding tests. Its head is replaced by an untied Linear
    with a bias on EOS (raising or lowering its probability) and weights scaled by ``sharpness``, so
    that hypotheses end at varied lengths rather than all running to max_len."""
    torch.manual_seed(seed)
    model = EncoderDecoderTransformer(vocab, vocab, dim=D, num_heads=HEADS, enc_layers=LAYERS, dec_layers=LAYERS,
                                      mlp_dim=FF, dropout=0.0, norm_first=norm_first, max_len=32, pad_id=PAD,
                                      bos_id=BOS, eos_id=EOS)
    randomize_(model, seed + 100, std=0.1)
    head = nn.Linear(D, vocab)
    with torch.no_grad():
        head.weight.copy_(model.head.weight * sharpness)  # sharper distributions: decisive argmaxes
        head.bias.zero_()
        head.bias[EOS] = eos_bias
    model.head = head
    return model.eval()


def test_ed_embedding_is_scaled_and_positioned():
    """Token embeddings times sqrt(d_model) plus the sinusoids of the paper; ``offset`` (cached
    decoding) shifts the positions."""
    model = _ed()
    tokens = torch.randint(3, 12, (2, 6), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(6, dtype=torch.float32)[:, None]
    i = torch.arange(0, D, 2, dtype=torch.float32)
    pe = torch.zeros(6, D)
    pe[:, 0::2] = torch.sin(pos / 10000 ** (i / D))
    pe[:, 1::2] = torch.cos(pos / 10000 ** (i / D))
    with torch.no_grad():
        expected = model.tgt_embed(tokens) * math.sqrt(D) + pe
        torch.testing.assert_close(model._embed(model.tgt_embed, tokens), expected, **F32)
        torch.testing.assert_close(model._embed(model.tgt_embed, tokens[:, 3:5], 3), expected[:, 3:5], **F32)


def _reference_greedy_ed(model: EncoderDecoderTransformer, src: Tensor, pad: Tensor, max_len: int) -> Tensor:
    """Greedy decoding without a cache: forward() over the whole prefix at every step."""
    B = src.shape[0]
    tgt = torch.full((B, 1), BOS)
    done = torch.zeros(B, dtype=torch.bool)
    out = []
    with torch.no_grad():
        for _ in range(max_len):
            nxt = model(src, pad, tgt)[:, -1].argmax(-1).masked_fill(done, PAD)
            out.append(nxt)
            tgt = torch.cat([tgt, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_ed_greedy_generate_equals_uncached_loop(norm_first, backend):
    seen_eos = False
    for seed in range(3):
        model = _ed(seed, norm_first=norm_first)
        src, pad = _src_batch(seed, vocab=12)
        with attention_backend(backend):
            out = model.generate(src, pad, max_len=10)
            ref = _reference_greedy_ed(model, src, pad, 10)
        assert torch.equal(out, ref)
        seen_eos |= bool((out == EOS).any())
    assert seen_eos  # the check covers rows that finish, not only max_len runs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_ed_decode_step_equals_teacher_forcing(norm_first, backend):
    model = _ed(norm_first=norm_first)
    src, pad = _src_batch(vocab=12)
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 12, (3, 7))], dim=1)
    with torch.no_grad(), attention_backend(backend):
        expected = model(src, pad, tgt_in)
        state = model.init_state(src, pad)
        steps = torch.stack([model.decode_step(state, tgt_in[:, t]) for t in range(tgt_in.shape[1])], dim=1)
    assert state["offset"] == tgt_in.shape[1]
    torch.testing.assert_close(steps, expected, **F32)


def _sequence_logprob(model: EncoderDecoderTransformer, src: Tensor, pad: Tensor | None, hyp: Tensor,
                      length_penalty: float = 0.0) -> Tensor:
    """Teacher-forced log p(hyp | src), summed up to and including each row's first EOS, divided by
    the GNMT length penalty ((5 + n) / 6) ** alpha of that length n."""
    tgt_in = torch.cat([torch.full((hyp.shape[0], 1), BOS), hyp[:, :-1]], dim=1)
    with torch.no_grad():
        logp = model(src, pad, tgt_in).log_softmax(-1).gather(-1, hyp[..., None])[..., 0]  # (B, L)
    is_eos = (hyp == EOS).long()
    before_eos = (is_eos.cumsum(1) - is_eos) == 0  # positions up to and including the first EOS
    n = before_eos.sum(1).float()
    return (logp * before_eos).sum(1) / ((5.0 + n) / 6.0) ** length_penalty


@pytest.mark.parametrize("length_penalty", [0.0, 0.6])
def test_beam_size_1_equals_greedy(length_penalty):
    for seed in range(3):
        model = _ed(seed)
        src, pad = _src_batch(seed, vocab=12)
        greedy = greedy_decode(model, src, pad, 10, BOS, EOS, PAD)
        beam = beam_search(model, src, pad, 10, BOS, EOS, beam_size=1, length_penalty=length_penalty, pad=PAD)
        assert torch.equal(beam, greedy)


def test_beam_search_scores_at_least_greedy():
    """With length_penalty=0, beam 4's hypothesis is at least as probable as greedy's on these
    examples (not a theorem for every model, but any failure here deserves a look)."""
    better = 0
    for seed in range(4):
        model = _ed(seed)
        src, pad = _src_batch(seed, vocab=12)
        greedy = greedy_decode(model, src, pad, 8, BOS, EOS, PAD)
        beam = beam_search(model, src, pad, 8, BOS, EOS, beam_size=4, length_penalty=0.0, pad=PAD)
        lp_greedy = _sequence_logprob(model, src, pad, greedy)
        lp_beam = _sequence_logprob(model, src, pad, beam)
        assert (lp_beam >= lp_greedy - 1e-5).all(), (seed, lp_beam, lp_greedy)
        better += int((lp_beam > lp_greedy + 1e-4).sum())
        # after EOS a row holds only PAD
        after = ((beam == EOS).long().cumsum(1) - (beam == EOS).long()) > 0
        assert (beam[after] == PAD).all()
    assert better > 0  # the examples include rows where the beam finds something better


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 2.0])
def test_exhaustive_beam_equals_brute_force(length_penalty):
    """A beam as wide as the number of hypotheses prunes nothing: it must return the exact
    highest-scoring sequence (log-probability / GNMT length penalty), found here by enumerating them
    all (V = 5, max_len = 4). The models are flat, with EOS discouraged, so that hypotheses of
    different lengths compete and the length penalty changes the winner."""
    V, L = 5, 4
    every = torch.tensor(list(itertools.product(range(V), repeat=L)))  # (V^L, L)
    n = every.shape[0]
    winners, penalty_mattered = set(), 0
    for seed in range(3):
        model = _ed(seed, vocab=V, norm_first=False, sharpness=0.5, eos_bias=-2.0)
        src, pad = _src_batch(seed, vocab=V)
        beam = beam_search(model, src, pad, L, BOS, EOS, beam_size=V ** (L - 1), length_penalty=length_penalty,
                           pad=PAD)
        beam_score = _sequence_logprob(model, src, pad, beam, length_penalty)
        for b in range(src.shape[0]):
            args = (model, src[b:b + 1].expand(n, -1), pad[b:b + 1].expand(n, -1), every)
            scores = _sequence_logprob(*args, length_penalty)
            torch.testing.assert_close(beam_score[b], scores.max(), **F32)
            winners.add(tuple(every[scores.argmax()].tolist()))
            penalty_mattered += int(scores.argmax() != _sequence_logprob(*args, 0.0).argmax())
    assert len(winners) > 1
    assert (penalty_mattered > 0) == (length_penalty > 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_beam_generate_batched_equals_rows_alone(backend):
    """Beam search on a padded batch returns, per row, what it returns for that row alone."""
    model = _ed(1)
    src, pad = _src_batch(1, vocab=12)
    with attention_backend(backend):
        batch = model.generate(src, pad, max_len=8, beam_size=3)
        for b in range(3):
            n = int((~pad[b]).sum())
            alone = model.generate(src[b:b + 1, :n], None, max_len=8, beam_size=3)
            L = alone.shape[1]
            assert torch.equal(batch[b, :L], alone[0])
            assert (batch[b, L:] == PAD).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_source_padding_changes_no_decoder_logits(backend):
    model = _ed(2)
    src, pad = _src_batch(2, vocab=12)
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 12, (3, 5))], dim=1)
    g = torch.Generator().manual_seed(9)
    # three more padded columns, holding arbitrary tokens, and arbitrary tokens under the old padding
    more = torch.cat([src.masked_scatter(pad, torch.randint(3, 12, (int(pad.sum()),), generator=g)),
                      torch.randint(3, 12, (3, 3), generator=g)], dim=1)
    more_pad = torch.cat([pad, torch.ones(3, 3, dtype=torch.bool)], dim=1)
    with torch.no_grad(), attention_backend(backend):
        logits = model(src, pad, tgt_in)
        torch.testing.assert_close(model(more, more_pad, tgt_in), logits, **F32)
        for b in range(3):  # and each row alone, unpadded
            n = int((~pad[b]).sum())
            torch.testing.assert_close(model(src[b:b + 1, :n], None, tgt_in[b:b + 1]), logits[b:b + 1], **F32)
        assert torch.equal(model.generate(more, more_pad, 8), model.generate(src, pad, 8))


# ----------------------------------------------------------------------------------------------
# 4. registered factories, tying, initialisation
# ----------------------------------------------------------------------------------------------

S2S_SPEC = {"kind": "seq2seq", "src_vocab_size": 20, "tgt_vocab_size": 20, "max_src_len": 10, "max_tgt_len": 12,
            "pad_id": 0, "bos_id": 1, "eos_id": 2}
LM_SPEC = {"kind": "language_modeling", "vocab_size": 40, "block_size": 16}
SMALL_S2S = dict(dim=32, num_heads=4, enc_layers=1, dec_layers=2, mlp_dim=48)


def test_create_transformer_shares_embeddings():
    model = zoo.create_model("transformer", S2S_SPEC, **SMALL_S2S)
    assert isinstance(model, EncoderDecoderTransformer)
    assert model.src_embed.weight is model.tgt_embed.weight is model.head.weight  # the tiny preset ties
    assert (model.pad_id, model.bos_id, model.eos_id) == (0, 1, 2)
    assert len(model.encoder) == 1 and len(model.decoder) == 2 and model.dim == 32
    assert model.pos.table.shape[0] >= 12  # room for every source/target position
    n_unique = sum(p.numel() for p in model.parameters())
    assert n_unique == sum(p.numel() for n, p in model.named_parameters(remove_duplicate=False)
                           if n not in ("tgt_embed.weight", "head.weight"))
    # still tied after an optimiser step
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    src = torch.randint(3, 20, (2, 10))
    model(src, None, torch.randint(3, 20, (2, 12))).sum().backward()
    opt.step()
    assert model.src_embed.weight is model.tgt_embed.weight is model.head.weight
    out = model.generate(src, None, max_len=12)
    assert out.shape[0] == 2 and out.shape[1] <= 12


def test_create_transformer_separate_vocabularies():
    spec = dict(S2S_SPEC, tgt_vocab_size=15)
    model = zoo.create_model("transformer", spec, **SMALL_S2S)
    assert model.src_embed.weight is not model.tgt_embed.weight
    assert model.head.weight is not model.tgt_embed.weight
    assert model.src_embed.num_embeddings == 20 and model.tgt_embed.num_embeddings == 15
    assert model.head.out_features == 15
    logits = model(torch.randint(3, 20, (2, 6)), None, torch.randint(3, 15, (2, 4)))
    assert logits.shape == (2, 4, 15)
    with pytest.raises(ValueError, match="share_embeddings"):
        EncoderDecoderTransformer(20, 15, dim=32, num_heads=4, share_embeddings=True)
    model = zoo.create_model("transformer", S2S_SPEC, share_embeddings=False, **SMALL_S2S)
    assert model.src_embed.weight is not model.tgt_embed.weight


def test_create_gpt():
    model = zoo.create_model("gpt", LM_SPEC, dim=32, depth=2, num_heads=4)
    assert isinstance(model, GPT)
    assert model.lm_head.weight is model.wte.weight
    assert model.block_size == 16 and model.wpe.num_embeddings == 16 and model.wte.num_embeddings == 40
    assert len(model.blocks) == 2
    assert model(torch.randint(0, 40, (2, 16))).shape == (2, 16, 40)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.randint(0, 40, (1, 17)))


def test_factories_reject_bad_requests():
    with pytest.raises(RegistryError, match="unknown config key"):
        zoo.create_model("gpt", LM_SPEC, dim=32, depth=2, num_heads=4, not_a_key=1)
    with pytest.raises(RegistryError, match="seq2seq"):
        zoo.create_model("transformer", dict(S2S_SPEC, kind="language_modeling"), **SMALL_S2S)
    with pytest.raises(RegistryError, match="language_modeling"):
        zoo.create_model("gpt", dict(LM_SPEC, kind="seq2seq"))
    assert {"gpt", "transformer"} <= set(zoo.list_models(family="transformer"))


def test_gpt_init_is_gpt2():
    depth = 2
    torch.manual_seed(0)
    model = GPT(50, 16, dim=32, depth=depth, num_heads=4)
    resid = torch.cat([p.flatten() for b in model.blocks for p in (b.attn.out_proj.weight, b.mlp.fc2.weight)])
    other = torch.cat([p.flatten() for b in model.blocks for p in (b.attn.in_proj.weight, b.mlp.fc1.weight)]
                      + [model.wte.weight.flatten(), model.wpe.weight.flatten()])
    assert resid.std().item() == pytest.approx(0.02 / math.sqrt(2 * depth), rel=0.08)
    assert other.std().item() == pytest.approx(0.02, rel=0.05)
    assert abs(resid.mean().item()) < 2e-3 and abs(other.mean().item()) < 2e-3
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
        elif "norm" in name or name.startswith("ln_f"):
            assert torch.all(p == 1), name


def test_gpt_without_bias_has_no_bias_anywhere():
    """nanoGPT's ``bias=False``: no biases in the Linears nor the LayerNorms (ln_f honours it)."""
    model = GPT(10, 8, dim=16, depth=1, num_heads=2, bias=False)
    assert model.ln_f.bias is None
    assert [n for n, _ in model.named_parameters() if n.endswith("bias")] == []


# ----------------------------------------------------------------------------------------------
# 5. training sanity
# ----------------------------------------------------------------------------------------------


def test_gpt_overfits_a_repeated_string():
    """Windows of "hello world! ..." at all 13 phases: two characters of context determine the
    next one (the first prediction of a window is ambiguous, so it is left out of the loss)."""
    period = "hello world! "
    chars = sorted(set(period))
    data = torch.tensor([chars.index(c) for c in period * 4])
    block = 16
    span = torch.arange(len(period))[:, None] + torch.arange(block)
    x, y = data[span], data[span + 1]  # (13, 16)
    torch.manual_seed(0)
    model = GPT(len(chars), block, dim=32, depth=2, num_heads=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):  # train on to 0.02, so that no argmax is left at the margin
        loss = nn.functional.cross_entropy(model(x)[:, 1:].flatten(0, 1), y[:, 1:].flatten())
        losses.append(loss.item())
        if losses[-1] < 0.02:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] > 2.0  # it started from chance (log 10 = 2.3)
    assert min(losses) < 0.1, f"loss {min(losses):.3f} after 150 steps"
    assert losses[-1] < 0.02, f"loss {losses[-1]:.3f} after {len(losses)} steps"
    out = model.generate(x[:, :2], block - 2, temperature=0)
    assert torch.equal(out, x)  # it recites the string from any two-character prompt
