"""The speech baselines: LAS, BiLSTM-CTC, the LSTM classifier and the keyword-spotting ResNet."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import baselines  # noqa: F401
import zoo  # noqa: F401
from baselines.rnn import PyramidalListener, stack_frames
from zoo.core.decoding import beam_search
from zoo.registry import SIZES, RegistryError, create_model, get_model_entry, list_models

PAD, BOS, EOS = 0, 1, 2
V = 13
CLS_SPEC = {"kind": "classification", "modality": "audio", "input_shape": (101, 40), "num_classes": 35}
TR_SPEC = {"kind": "transcription", "modality": "audio", "input_dim": 40, "vocab_size": V, "blank_id": 0,
           "pad_id": PAD, "bos_id": BOS, "eos_id": EOS, "max_tgt_len": 9, "max_frames": 400}
MODELS = {"las": TR_SPEC, "bilstm_ctc": TR_SPEC, "lstm_classifier": CLS_SPEC, "kws_resnet": CLS_SPEC}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small(name: str, **overrides) -> torch.nn.Module:
    """A narrow model in float64 and eval mode, for exact comparisons."""
    torch.manual_seed(0)
    cfg = {"kws_resnet": dict(width=8)}.get(name, dict(hidden_dim=16)) | overrides
    return create_model(name, MODELS[name], "tiny", **cfg).double().eval()


def padded_feats(lengths: list[int], width: int | None = None, dim: int = 40,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features (B, T, F) whose frames past each row's length are junk, and the padding mask."""
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    feats = torch.randn(len(lengths), width, dim, generator=g, dtype=torch.float64)
    return feats, torch.arange(width)[None, :] >= torch.tensor(lengths)[:, None]


def targets_in(B: int, L: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.full((B, 1), BOS), torch.randint(3, V, (B, L - 1), generator=g)], dim=1)


# --- registry ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_registered_as_audio_baselines(name):
    spec = MODELS[name]
    entry = get_model_entry(name)
    assert entry.family == "baseline" and entry.kinds == (spec["kind"],) and entry.modalities == ("audio",)
    assert set(entry.defaults) == {"lr", "weight_decay"}
    assert name in list_models(kind=spec["kind"], modality="audio")
    assert name not in list_models(kind=spec["kind"], modality="image")
    assert name not in list_models(kind="seq2seq")
    with pytest.raises(RegistryError):
        create_model(name, spec | {"modality": "image"})


def test_transcription_models_say_how_they_decode():
    assert create_model("las", TR_SPEC, hidden_dim=16).decoding == "attention"
    assert create_model("bilstm_ctc", TR_SPEC, hidden_dim=16).decoding == "ctc"


# --- fairness: parameters ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def conformer_params(kind: str, size: str) -> int:
    spec = CLS_SPEC if kind == "classification" else TR_SPEC
    return count(create_model("conformer", spec, size))  # not on "meta": its front end computes a shape


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", MODELS)
def test_parameters_match_the_conformer_within_ten_percent(name, size):
    spec = MODELS[name]
    with torch.device("meta"):  # counts without allocating or initialising
        ours = count(create_model(name, spec, size))
    reference = conformer_params(spec["kind"], size)
    assert abs(ours - reference) / reference <= 0.10, f"{name}/{size}: conformer {reference:,} vs {ours:,}"


# --- the pyramid ------------------------------------------------------------------------------------

def test_stack_frames_concatenates_consecutive_frames_and_drops_the_rest():
    x = torch.arange(2 * 7 * 3).view(2, 7, 3)
    out, lengths = stack_frames(x, torch.tensor([7, 4]), 2)
    assert out.shape == (2, 3, 6) and lengths.tolist() == [3, 2]
    assert torch.equal(out[0, 1], torch.cat([x[0, 2], x[0, 3]]))  # frames 2 and 3; frame 6 dropped
    assert stack_frames(x, None, 3)[0].shape == (2, 2, 9) and stack_frames(x, None, 1)[0] is x


def test_pyramid_lengths_shapes_and_zero_padding():
    listener = PyramidalListener(40, 16, (1, 2, 2, 2)).double().eval()
    assert listener.reduction == 8
    feats, pad = padded_feats([37, 20, 9, 3])
    out, lengths, (h, c) = listener(feats, (~pad).sum(1))
    # 37 -> 18 -> 9 -> 4, 20 -> 10 -> 5 -> 2, 9 -> 4 -> 2 -> 1, 3 -> 1 -> 0 -> 0
    assert out.shape == (4, 4, 16) and lengths.tolist() == [4, 2, 1, 0]
    assert h.shape == c.shape == (1, 4, 16)
    assert torch.equal(listener.output_lengths(torch.tensor([37, 20, 9, 3])), lengths)
    for row, n in zip(out, lengths.tolist()):
        assert (row[n:] == 0).all() and (row[:n] != 0).any(-1).all()
    out_full, full_lengths, _ = listener(feats)
    assert out_full.shape == (4, 4, 16) and full_lengths.tolist() == [4] * 4


# --- padding leaks nowhere ----------------------------------------------------------------------------

LENGTHS = [45, 33, 24]


def test_las_row_alone_equals_row_in_padded_batch():
    model = small("las")
    feats, pad = padded_feats(LENGTHS, width=52)
    tgt_in = targets_in(3, 6)
    logits = model(feats, pad, tgt_in)
    assert logits.shape == (3, 6, V)
    for i, n in enumerate(LENGTHS):
        alone = model(feats[i:i + 1, :n], None, tgt_in[i:i + 1])
        torch.testing.assert_close(alone, logits[i:i + 1], rtol=0, atol=1e-12)


def test_ctc_row_alone_equals_row_in_padded_batch():
    model = small("bilstm_ctc")
    feats, pad = padded_feats(LENGTHS, width=52)
    log_probs, out_lengths = model(feats, (~pad).sum(1))
    assert log_probs.shape == (3, 13, V) and out_lengths.tolist() == [n // 4 for n in LENGTHS]
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 13, dtype=torch.float64))
    for i, n in enumerate(LENGTHS):
        alone, alone_len = model(feats[i:i + 1, :n])
        assert alone_len.tolist() == [n // 4] and alone.shape[1] == n // 4
        torch.testing.assert_close(alone[0], log_probs[i, :n // 4], rtol=0, atol=1e-12)


def test_lstm_classifier_row_alone_equals_row_in_padded_batch():
    model = small("lstm_classifier")
    feats, pad = padded_feats(LENGTHS, width=52)
    logits = model(feats, (~pad).sum(1))
    assert logits.shape == (3, 35)
    for i, n in enumerate(LENGTHS):
        torch.testing.assert_close(model(feats[i:i + 1, :n]), logits[i:i + 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(101, 40), (98, 64)])
def test_kws_resnet_shapes(shape):
    model = create_model("kws_resnet", CLS_SPEC | {"input_shape": shape}, "tiny")
    assert model(torch.randn(2, *shape)).shape == (2, 35)


# --- CTC ----------------------------------------------------------------------------------------------

def test_ctc_loss_is_finite_and_output_long_enough_at_the_tiny_preset():
    torch.manual_seed(0)
    model = create_model("bilstm_ctc", TR_SPEC, "tiny")
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(100, 301, (6,), generator=g)  # 1-3 s of 10 ms frames
    feats = torch.randn(6, int(lengths.max()), 40, generator=g)
    tgt_lengths = torch.randint(1, 8, (6,), generator=g)  # 1-7 digits
    targets = torch.randint(3, V, (6, 7), generator=g)
    log_probs, out_lengths = model(feats, lengths)
    assert (out_lengths >= tgt_lengths).all() and torch.equal(out_lengths, lengths // 4)
    loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, tgt_lengths, blank=TR_SPEC["blank_id"])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --- LAS decoding ---------------------------------------------------------------------------------------

def test_las_decode_step_equals_teacher_forcing():
    model = small("las", dec_layers=2)
    feats, pad = padded_feats(LENGTHS, width=52, seed=1)
    tgt_in = targets_in(3, 7, seed=1)
    expected = model(feats, pad, tgt_in)
    state = model.init_state(feats, pad)
    steps = [model.decode_step(state, tgt_in[:, t]) for t in range(tgt_in.shape[1])]
    torch.testing.assert_close(torch.stack(steps, dim=1), expected, rtol=0, atol=1e-12)


def test_las_reorder_state_continues_the_selected_rows():
    model = small("las")
    feats, pad = padded_feats(LENGTHS, width=52, seed=2)
    tgt_in = targets_in(3, 6, seed=2)
    index = torch.tensor([2, 0, 0, 1])  # beam search keeps, drops and copies rows
    state = model.init_state(feats, pad)
    for t in range(3):
        model.decode_step(state, tgt_in[:, t])
    model.reorder_state(state, index)
    steps = [model.decode_step(state, tgt_in[index, t]) for t in range(3, 6)]
    expected = model(feats[index], pad[index], tgt_in[index])[:, 3:]
    torch.testing.assert_close(torch.stack(steps, dim=1), expected, rtol=0, atol=1e-12)


def test_las_greedy_equals_beam_of_one_untrained():
    model = small("las").train()
    feats, pad = padded_feats(LENGTHS + [16], width=52, seed=3)
    greedy = model.generate(feats, pad, max_len=9)
    assert model.training  # the mode is restored
    assert greedy.shape[0] == 4 and 1 <= greedy.shape[1] <= 9 and greedy.dtype == torch.long
    assert torch.equal(greedy, beam_search(model.eval(), feats, pad, 9, BOS, EOS, beam_size=1, pad=PAD))
    assert torch.equal(model.generate(feats, pad, max_len=9, beam_size=1), greedy)


# --- each model overfits a tiny batch ----------------------------------------------------------------

def train(model: torch.nn.Module, loss_fn, steps: int, lr: float) -> tuple[float, float]:
    """``steps`` Adam steps on one batch; the loss before and after."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    first = None
    for _ in range(steps):
        loss = loss_fn()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss_fn().item()


# kws_resnet's eval mode reads 13 BatchNorms' running statistics, which trail weights that move this
# fast by about 1 / momentum = 10 steps: 40 steps, not 30, before they describe the trained network
@pytest.mark.parametrize("name, steps", [("lstm_classifier", 30), ("kws_resnet", 40)])
def test_classifiers_overfit_a_tiny_batch(name, steps):
    torch.manual_seed(0)
    model = create_model(name, CLS_SPEC, "tiny", dropout=0.0)
    x, y = torch.randn(8, 101, 40), torch.arange(8) * 4  # 8 clips, 8 of the 35 classes
    first, last = train(model, lambda: F.cross_entropy(model(x), y), steps, 3e-3)
    assert last < 0.05 * first, f"{name}: {first:.3f} -> {last:.3f}"
    assert (model.eval()(x).argmax(-1) == y).all()


def test_bilstm_ctc_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = create_model("bilstm_ctc", TR_SPEC, "tiny", dropout=0.0)
    feats, pad = padded_feats([80, 64, 72, 48], seed=4)
    feats, lengths = feats.float(), (~pad).sum(1)
    targets = torch.tensor([[3, 4, 5], [6, 6, 0], [7, 8, 9], [10, 0, 0]])
    tgt_lengths = torch.tensor([3, 2, 3, 1])

    def loss_fn():
        log_probs, out_lengths = model(feats, lengths)
        return F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, tgt_lengths, blank=0)

    first, last = train(model, loss_fn, 60, 3e-3)
    # from uniform outputs (~2.6 nats a frame) to well below the all-blank plateau (~2.6 per token)
    assert last < 0.1 * first and last < 1.0, f"{first:.3f} -> {last:.3f}"


@pytest.fixture(scope="module")
def trained_las():
    """The tiny LAS trained on 4 utterances (random features) with transcripts of 1-4 tokens."""
    torch.manual_seed(0)
    model = create_model("las", TR_SPEC, "tiny", dropout=0.0)
    feats, pad = padded_feats([80, 64, 72, 48], seed=5)
    feats = feats.float()
    tgt = torch.tensor([[3, 4, 5, 6, EOS], [7, 7, EOS, PAD, PAD], [8, 9, 10, EOS, PAD], [11, EOS, PAD, PAD, PAD]])
    tgt_in = torch.cat([torch.full((4, 1), BOS), tgt[:, :-1]], dim=1)
    first, last = train(model, lambda: F.cross_entropy(model(feats, pad, tgt_in).flatten(0, 1), tgt.flatten(),
                                                        ignore_index=PAD), 40, 3e-3)
    return model, feats, pad, tgt, first, last


def test_las_overfits_a_tiny_batch_and_decodes_it(trained_las):
    model, feats, pad, tgt, first, last = trained_las
    assert last < 0.05 * first, f"{first:.3f} -> {last:.3f}"
    assert torch.equal(model.generate(feats, pad, max_len=9), tgt)
    assert model.training


def test_las_beam_search_ends_in_eos_then_pad(trained_las):
    model, feats, pad, tgt, _, _ = trained_las
    out = model.generate(feats, pad, max_len=9, beam_size=3)
    assert out.shape[0] == 4 and out.shape[1] <= 9 and out.dtype == torch.long
    is_eos = (out == EOS).long()
    seen = is_eos.cumsum(1)  # EOS tokens up to and including each position
    assert (seen[:, -1] >= 1).all()  # every row ends ...
    assert (out[seen - is_eos > 0] == PAD).all() and (out[seen == 0] >= 3).all()  # ... then PAD; text before
    assert torch.equal(out, tgt)
