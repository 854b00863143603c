"""The recurrent baselines: the LSTM language model and the attentional LSTM encoder-decoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import baselines  # noqa: F401
import zoo  # noqa: F401
from baselines.lstm import LSTMLanguageModel
from baselines.rnn import lstm_flops
from baselines.seq2seq import RNNSeq2Seq
from zoo.core.decoding import beam_search
from zoo.registry import SIZES, create_model, get_model_entry, list_models

PAD, BOS, EOS = 0, 1, 2


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lm_spec(vocab_size: int = 11) -> dict:
    return {"kind": "language_modeling", "vocab_size": vocab_size, "block_size": 128}


def s2s_spec(vocab_size: int = 13) -> dict:
    return {"kind": "seq2seq", "src_vocab_size": vocab_size, "tgt_vocab_size": vocab_size, "max_src_len": 32,
            "max_tgt_len": 32, "pad_id": PAD, "bos_id": BOS, "eos_id": EOS}


def tiny_lm(**overrides) -> LSTMLanguageModel:
    torch.manual_seed(0)
    cfg = dict(hidden_dim=16, num_layers=2) | overrides
    return create_model("lstm", lm_spec(), "tiny", **cfg).double().eval()


def tiny_s2s(vocab_size: int = 13, **overrides) -> RNNSeq2Seq:
    torch.manual_seed(0)
    cfg = dict(hidden_dim=16, enc_layers=2, dec_layers=2) | overrides
    return create_model("lstm_seq2seq", s2s_spec(vocab_size), "tiny", **cfg).double().eval()


def padded_batch(lengths: list[int], width: int, vocab_size: int = 13,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random right-padded sources (B, width) of tokens >= 3 and their padding mask."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab_size, (len(lengths), width), generator=g)
    pad = torch.arange(width)[None, :] >= torch.tensor(lengths)[:, None]
    return src.masked_fill(pad, PAD), pad


# --- registration and sizes ---------------------------------------------------------------------------

def test_registered_as_baselines_with_training_defaults():
    for name, kind in (("lstm", "language_modeling"), ("lstm_seq2seq", "seq2seq")):
        entry = get_model_entry(name)
        assert entry.family == "baseline" and entry.kinds == (kind,)
        assert entry.defaults == {"lr": 2e-3, "weight_decay": 0.0}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("vocab_size", [100, 256])
def test_lstm_matches_gpt_parameters_within_ten_percent(size, vocab_size):
    spec = {"kind": "language_modeling", "vocab_size": vocab_size, "block_size": 128}
    with torch.device("meta"):  # counts without allocating or initialising (base is 85M parameters)
        gpt, lstm = count(create_model("gpt", spec, size)), count(create_model("lstm", spec, size))
    assert abs(lstm - gpt) / gpt <= 0.10, f"V={vocab_size}/{size}: gpt {gpt:,} vs lstm {lstm:,}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("vocab_size", [16, 64])
def test_lstm_seq2seq_matches_transformer_parameters_within_ten_percent(size, vocab_size):
    spec = s2s_spec(vocab_size)
    with torch.device("meta"):
        tr, rnn = count(create_model("transformer", spec, size)), count(create_model("lstm_seq2seq", spec, size))
    assert abs(rnn - tr) / tr <= 0.10, f"V={vocab_size}/{size}: transformer {tr:,} vs lstm_seq2seq {rnn:,}"


# --- language model ----------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, {"embed_dim": 8}, {"tie_weights": False}, {"num_layers": 1}])
def test_lstm_lm_shapes_and_tying(overrides):
    model = tiny_lm(**overrides)
    idx = torch.randint(0, 11, (3, 7))
    assert model(idx).shape == (3, 7, 11)
    tied = model.head.out.weight is model.embed.weight
    assert tied == overrides.get("tie_weights", True)
    assert isinstance(model.head.proj, torch.nn.Linear) == ("embed_dim" in overrides)


def test_lstm_lm_state_continues_the_sequence():
    model = tiny_lm()
    idx = torch.randint(0, 11, (2, 9))
    full = model(idx)
    first, state = model.forward_with_state(idx[:, :4])
    rest, _ = model.forward_with_state(idx[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=0, atol=1e-12)


def test_lstm_generate_with_carried_state_equals_rerunning_the_prefix():
    model = tiny_lm(hidden_dim=32).train()
    with torch.no_grad():  # larger random weights than the initialisation: tokens depend on the whole past
        for p in model.parameters():
            p.normal_(0, 0.5)
    idx = torch.randint(0, 11, (3, 5))
    expected = idx
    with torch.no_grad():
        for _ in range(12):  # greedy, reading the whole sequence again at every step
            expected = torch.cat([expected, model.eval()(expected)[:, -1].argmax(-1, keepdim=True)], dim=1)
    model.train()
    out = model.generate(idx, 12, temperature=0)
    assert model.training  # the mode is restored
    assert torch.equal(out, expected)
    assert torch.equal(model.generate(idx, 12, temperature=0, use_cache=False), expected)


def test_lstm_generate_samples_reproducibly_within_top_k():
    model = tiny_lm()
    idx = torch.randint(0, 11, (4, 3))
    a = model.generate(idx, 10, temperature=0.8, top_k=3, generator=torch.Generator().manual_seed(1))
    b = model.generate(idx, 10, temperature=0.8, top_k=3, generator=torch.Generator().manual_seed(1),
                       use_cache=False)
    assert a.shape == (4, 13) and torch.equal(a[:, :3], idx) and torch.equal(a, b)
    logits = model(a[:, :-1])[:, 2:]  # the logits each new token was drawn from
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == a[:, 3:, None]).any(-1).all()


# --- encoder-decoder ---------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, {"num_heads": 4}, {"embed_dim": 8}, {"tie_weights": False},
                                       {"enc_layers": 1, "dec_layers": 3}, {"share_embeddings": False}])
def test_seq2seq_shapes(overrides):
    model = tiny_s2s(**overrides)
    src, src_pad = padded_batch([5, 3, 1], 6)
    tgt_in = torch.randint(3, 13, (3, 4))
    assert model(src, src_pad, tgt_in).shape == (3, 4, 13)
    assert model(src, None, tgt_in).shape == (3, 4, 13)
    assert (model.src_embed is model.tgt_embed) == overrides.get("share_embeddings", True)


def test_seq2seq_different_vocabularies_do_not_share():
    spec = s2s_spec() | {"src_vocab_size": 9, "tgt_vocab_size": 7}
    model = create_model("lstm_seq2seq", spec, "tiny", hidden_dim=8)
    assert model.src_embed is not model.tgt_embed
    assert model(torch.randint(0, 9, (2, 5)), None, torch.randint(0, 7, (2, 3))).shape == (2, 3, 7)


def test_seq2seq_padding_changes_no_logits():
    model = tiny_s2s()
    src, src_pad = padded_batch([6, 4, 2], 6)
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 13, (3, 4))], dim=1)
    logits = model(src, src_pad, tgt_in)
    # more padding columns, with junk (not PAD) tokens under the mask: nothing may leak
    more = torch.cat([src, torch.randint(3, 13, (3, 5))], dim=1)
    more_pad = torch.cat([src_pad, torch.ones(3, 5, dtype=torch.bool)], dim=1)
    more = more.masked_fill(more_pad & (torch.rand(more.shape) < 0.5), PAD)
    torch.testing.assert_close(model(more, more_pad, tgt_in), logits, rtol=0, atol=1e-12)
    # each row alone and unpadded gives the same logits as in the batch
    for i, n in enumerate([6, 4, 2]):
        alone = model(src[i:i + 1, :n], None, tgt_in[i:i + 1])
        torch.testing.assert_close(alone, logits[i:i + 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("num_heads", [1, 4])
def test_seq2seq_decode_step_equals_teacher_forcing(num_heads):
    model = tiny_s2s(num_heads=num_heads)
    src, src_pad = padded_batch([5, 6, 3], 6)
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 13, (3, 6))], dim=1)
    expected = model(src, src_pad, tgt_in)
    state = model.init_state(src, src_pad)
    steps = [model.decode_step(state, tgt_in[:, t]) for t in range(tgt_in.shape[1])]
    torch.testing.assert_close(torch.stack(steps, dim=1), expected, rtol=0, atol=1e-12)


def test_seq2seq_reorder_state_selects_rows():
    model = tiny_s2s()
    src, src_pad = padded_batch([5, 6, 3], 6)
    tokens = torch.tensor([BOS, BOS, BOS])
    state = model.init_state(src, src_pad)
    model.decode_step(state, tokens)
    index = torch.tensor([2, 0, 0])
    model.reorder_state(state, index)
    reference = model.init_state(src[index], src_pad[index])
    model.decode_step(reference, tokens)
    nxt = torch.tensor([4, 5, 6])
    torch.testing.assert_close(model.decode_step(state, nxt), model.decode_step(reference, nxt), rtol=0, atol=1e-12)


def test_seq2seq_greedy_equals_beam_search_of_one_untrained():
    model = tiny_s2s()
    src, src_pad = padded_batch([5, 6, 3, 1], 6, seed=3)
    greedy = model.generate(src, src_pad, max_len=9)
    beam = beam_search(model.eval(), src, src_pad, 9, BOS, EOS, beam_size=1, pad=PAD)
    assert greedy.shape[0] == 4 and 1 < greedy.shape[1] <= 9
    assert torch.equal(greedy, beam)


# --- FLOPs that FlopCounterMode does not see ---------------------------------------------------------

def test_lstm_flops_are_counted():
    lstm = torch.nn.LSTM(10, 20, num_layers=2, bidirectional=True, batch_first=True)
    with lstm_flops(lstm) as counted:
        lstm(torch.randn(3, 7, 10))
    per_step = 2 * 4 * 20 * ((10 + 20) + (40 + 20)) * 2
    assert counted() == per_step * 3 * 7


def test_lstm_flops_count_packed_steps_and_remove_their_hooks():
    lstm = torch.nn.LSTM(10, 20)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(3, 7, 10), torch.tensor([7, 3, 1]),
                                                     batch_first=True, enforce_sorted=False)
    with lstm_flops(torch.nn.Sequential(lstm)) as counted:
        lstm(packed)
        assert counted() == 2 * 4 * 20 * (10 + 20) * (7 + 3 + 1)
    lstm(packed)
    assert counted() == 2 * 4 * 20 * (10 + 20) * 11 and not lstm._forward_hooks


# One spec of every kind and modality the registered models serve.
SPECS = [
    {"kind": "classification", "modality": "image", "input_shape": (1, 8, 8), "num_classes": 10},
    {"kind": "classification", "modality": "audio", "input_shape": (101, 40), "num_classes": 35},
    {"kind": "transcription", "modality": "audio", "input_dim": 40, "vocab_size": 13, "blank_id": 0, "pad_id": 0,
     "bos_id": 1, "eos_id": 2, "max_tgt_len": 9, "max_frames": 400},
    {"modality": "text", **lm_spec()},
    {"modality": "text", **s2s_spec()},
    {"kind": "offline_rl", "modality": "state", "state_dim": 4, "act_dim": 2, "discrete": True, "max_ep_len": 500,
     "context_len": 20},
]


def test_every_model_that_runs_an_lstm_declares_its_flops():
    """extra_flops is declared exactly by the models with an nn.LSTM, and is the LSTM count."""
    with_lstm = set()
    for name in list_models():
        entry = get_model_entry(name)
        for spec in (s for s in SPECS if entry.supports(s["kind"], s["modality"])):
            model = create_model(name, spec)
            if any(isinstance(m, torch.nn.LSTM) for m in model.modules()):
                with_lstm.add(name)
                assert entry.extra_flops is lstm_flops, name
            else:
                assert entry.extra_flops is None, name
    assert with_lstm == {"lstm", "decision_lstm", "lstm_seq2seq", "las", "bilstm_ctc", "lstm_classifier"}
    model = tiny_lm()  # 2 layers of 16 over embeddings of 16
    with get_model_entry("lstm").extra_flops(model) as counted:
        model(torch.randint(0, 11, (3, 7)))
    assert counted() == 2 * (2 * 4 * 16 * (16 + 16)) * 3 * 7


# --- training: reversal of 8 fixed sequences -------------------------------------------------------

@pytest.fixture(scope="module")
def reversal():
    """A tiny model trained on 8 fixed reversal examples (lengths 2-6, right-padded)."""
    torch.manual_seed(0)
    lengths = [6, 5, 4, 3, 6, 2, 5, 4]
    src, src_pad = padded_batch(lengths, 6, vocab_size=10, seed=1)
    tgt = torch.full((8, 7), PAD)
    for i, n in enumerate(lengths):
        tgt[i, :n] = src[i, :n].flip(0)
        tgt[i, n] = EOS
    tgt_in = torch.cat([torch.full((8, 1), BOS), tgt[:, :-1]], dim=1)
    model = create_model("lstm_seq2seq", s2s_spec(10), "tiny", hidden_dim=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(200):
        loss = F.cross_entropy(model(src, src_pad, tgt_in).flatten(0, 1), tgt.flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, src, src_pad, tgt, loss.item()


def test_seq2seq_overfits_reversal_to_exact_match(reversal):
    model, src, src_pad, tgt, loss = reversal
    assert loss < 0.1
    out = model.generate(src, src_pad, max_len=10)
    assert model.training  # the mode is restored
    assert torch.equal(out, tgt), f"loss {loss:.4f}\n{out}\n{tgt}"
    # a long budget: decoding looks for the end after 64 steps, stops, and cuts the PAD columns
    assert torch.equal(model.generate(src, src_pad, max_len=500), tgt)
    assert torch.equal(model.generate(src, src_pad, max_len=500, beam_size=2), tgt)


def test_seq2seq_beam_search_ends_in_eos_then_pad(reversal):
    model, src, src_pad, tgt, _ = reversal
    out = model.generate(src, src_pad, max_len=10, beam_size=3)
    assert out.shape[0] == 8 and out.shape[1] <= 10 and out.dtype == torch.long
    for row in out:
        eos = (row == EOS).nonzero()
        assert len(eos) >= 1
        assert (row[eos[0, 0] + 1:] == PAD).all() and (row[:eos[0, 0]] >= 3).all()
    assert torch.equal(out, tgt)  # the trained model is sure of itself: the beam agrees with greedy
    assert torch.equal(model.generate(src, src_pad, max_len=10, beam_size=1),
                       beam_search(model.eval(), src, src_pad, 10, BOS, EOS, beam_size=1, pad=PAD))
