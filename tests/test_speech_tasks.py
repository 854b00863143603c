"""Speech tasks (tasks/speech/): features, SpecAugment, CTC decoding, the offline synthetic tasks,
and a tiny end-to-end run of the speech domain."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_items_reproduce

import baselines  # noqa: F401
import zoo
from tasks import speech
from tasks.speech import SpecAugment, log_mel_features, normalise, split_by_voice, validation_voices
from zoo.core.decoding import ctc_beam_search, ctc_greedy_decode, ctc_prefix_beam_search

pytest.importorskip("espeakng_loader")  # the synthetic tasks need no soundfile (tests/test_optional_deps.py)
pytest.importorskip("scipy")

from tasks.speech import synth as ss  # noqa: E402

TINY_CONFORMER = {"d_model": 32, "num_layers": 1, "ffn_dim": 64, "num_heads": 2}


# ----------------------------------------------------------------------------- CTC decoding

def _log(rows):
    return torch.tensor(rows, dtype=torch.float64).clamp_min(1e-12).log()


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    # frames' argmax: 1 1 0 1 2 2 0 0 -> "1 1" separated by a blank stay two labels
    best = [1, 1, 0, 1, 2, 2, 0, 0]
    lp = torch.stack([F.one_hot(torch.tensor(b), 3).double() * 0.9 + 0.05 for b in best]).log()
    assert ctc_greedy_decode(lp[None]) == [[1, 1, 2]]
    assert ctc_greedy_decode(lp[None], torch.tensor([3])) == [[1]]            # only the real frames
    assert ctc_greedy_decode(lp[None], blank=1) == [[0, 2, 0]]
    assert ctc_prefix_beam_search(lp, beam_size=3) == [1, 1, 2]


def test_ctc_beam_search_sums_paths_where_greedy_does_not():
    # best path is (blank, blank, 2) -> [2] with p = .36, but [1, 2] has three paths: .16 + .24 + .24 = .64
    lp = _log([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.0, 0.0, 1.0]])
    assert ctc_greedy_decode(lp[None]) == [[2]]
    assert ctc_beam_search(lp[None], beam_size=4) == [[1, 2]]


def _brute_force_best(lp: torch.Tensor, blank: int = 0) -> tuple[int, ...]:
    """Sum the probability of every alignment per label sequence; the most probable sequence."""
    T, V = lp.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        labels = tuple(c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1]))
        totals[labels] = totals.get(labels, 0.0) + math.exp(sum(lp[t, c].item() for t, c in enumerate(path)))
    return max(totals, key=totals.get)


@pytest.mark.parametrize("seed", range(6))
def test_ctc_prefix_beam_search_is_exact_with_a_wide_beam(seed):
    g = torch.Generator().manual_seed(seed)
    lp = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 1.5).log_softmax(-1)
    assert tuple(ctc_prefix_beam_search(lp, beam_size=64)) == _brute_force_best(lp)


# ----------------------------------------------------------------------------- features

def test_log_mel_frames_padding_and_normalisation():
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(16000, generator=g), torch.randn(8000, generator=g) * 0.1]
    feats, frames = log_mel_features(waves, n_mels=24)
    assert feats.shape == (2, 101, 24) and frames.tolist() == [101, 51]
    assert torch.all(feats[1, 51:] == 0)
    alone, _ = log_mel_features(waves[1:], n_mels=24)                 # padding does not leak into real frames
    torch.testing.assert_close(feats[1, :51], alone[0])
    features, lengths = {"train": feats.clone(), "test": feats[:1].clone()}, {"train": frames, "test": frames[:1]}
    normalise(features, lengths)
    real = torch.cat([features["train"][0], features["train"][1, :51]])
    torch.testing.assert_close(real.mean(0), torch.zeros(24), atol=1e-4, rtol=0)
    torch.testing.assert_close(real.std(0), torch.ones(24), atol=1e-4, rtol=0)
    assert torch.all(features["train"][1, 51:] == 0)


def test_spec_augment_masks_each_example_independently():
    torch.manual_seed(0)
    x = torch.ones(16, 101, 40)
    y = SpecAugment(freq_masks=1, freq_width=10, time_masks=1, time_width=20)(x)
    assert y.shape == x.shape and set(y.unique().tolist()) <= {0.0, 1.0}
    masked_bins = (y == 0).all(dim=1)     # (B, F): whole frequency bands
    masked_frames = (y == 0).all(dim=2)   # (B, T): whole time spans
    assert masked_bins.any() and masked_frames.any()
    assert len({tuple(r.tolist()) for r in (y == 0).flatten(1)}) > 1     # iid masks, not one for the batch
    assert torch.equal(SpecAugment(0, 10, 0, 20)(x), x)


def test_each_training_batch_draws_new_masks_also_for_a_model_that_draws_no_random_numbers():
    """The masks come from torch's global generator, which advances: a model without dropout (the
    keyword-spotting ResNet) once got one set of masks for every batch, as the generator was restored."""
    from tasks.speech.tasks import SynthCommands
    task = object.__new__(SynthCommands)  # no data needed: only its augmentation
    task.augment = SpecAugment()
    torch.manual_seed(0)
    x = torch.ones(8, 101, 40)
    first, second = task._augment(x), task._augment(x)
    assert not torch.equal(first, second)


def test_validation_voices_are_training_voices_with_unheard_combinations():
    val = validation_voices()
    assert len(val) == 5 and set(val) <= set(ss.TRAIN_VOICES)
    assert len({v.split("+")[0] for v in val}) == 5 and len({v.split("+")[1] for v in val}) == 5
    rows = [{"voice": v, "split": ss.voice_split(v)} for v in ss.VOICES]
    parts = split_by_voice(rows)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [45, 5, 15]
    voices = {s: {r["voice"] for r in parts[s]} for s in parts}
    assert voices["train"].isdisjoint(voices["val"]) and voices["train"].isdisjoint(voices["test"])


# ----------------------------------------------------------------------------- the synthetic tasks

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("speech_data")


@pytest.fixture(scope="module")
def commands(data_dir):
    task = speech.SynthCommands(data_dir=data_dir, clips_per_voice=1)
    task.setup()
    return task


@pytest.fixture(scope="module")
def digits(data_dir):
    task = speech.SynthDigits(data_dir=data_dir, utterances_per_voice=2)
    task.setup()
    return task


def test_synth_commands_splits_and_spec(commands):
    assert commands.spec == {"kind": "classification", "modality": "audio", "input_shape": (101, 40),
                             "num_classes": 35}
    sizes = {s: len(commands.labels[s]) for s in ("train", "val", "test")}
    assert sizes == {"train": 35 * 45, "val": 35 * 5, "test": 35 * 15}
    for split in sizes:   # every word in every split, once per voice
        assert torch.bincount(commands.labels[split], minlength=35).unique().numel() == 1
    batch = next(iter(commands.train_batches(64, torch.Generator().manual_seed(0))))
    assert batch[0].shape == (64, 101, 40) and (batch[0] == 0).any()        # SpecAugment at work
    clean = next(iter(commands.eval_batches("test", 64)))[0]
    assert not (clean == 0).all(dim=1).any()                                 # no masks at evaluation


def test_synth_digits_targets_and_metrics(digits):
    spec = digits.spec
    assert digits.tokens == ["<blank>", "<s>", "</s>"] + sorted(ss.DIGIT_WORDS)
    assert spec["vocab_size"] == 13 and spec["blank_id"] == spec["pad_id"] == 0 and spec["input_dim"] == 40
    assert [len(digits.texts[s]) for s in ("train", "val", "test")] == [90, 10, 30]
    for split in ("train", "test"):
        for i, text in enumerate(digits.texts[split]):
            n = int(digits.target_lengths[split][i])
            assert digits._words(digits.targets[split][i, :n].tolist()) == text.split()
            assert torch.all(digits.targets[split][i, n:] == 0)
    assert spec["max_tgt_len"] == int(digits.target_lengths["train"].max().clamp_min(
        digits.target_lengths["test"].max())) + 1
    # metrics of a perfect and of a wrong decoder
    batches = list(digits.eval_batches("test", 8))

    class Oracle(torch.nn.Module):
        decoding = "ctc"

        def __init__(self, targets):
            super().__init__()
            self.targets = iter(targets)

        def forward(self, feats, frames):  # frames alternate label, blank: a perfect CTC path
            tgt, n = next(self.targets)
            lp = torch.full((len(feats), 2 * tgt.shape[1] + 1, 13), -30.0)
            lp[:, :, 0] = 0.0
            for r in range(len(feats)):
                for j in range(int(n[r])):
                    lp[r, 2 * j, tgt[r, j]], lp[r, 2 * j, 0] = 0.0, -30.0
            return lp, torch.full((len(feats),), lp.shape[1])

    perfect = digits.evaluate(Oracle([(b[2], b[3]) for b in batches]), batches)
    assert perfect == {"wer": 0.0, "cer": 0.0, "ser": 0.0}
    shifted = [(torch.where(b[2] > 0, (b[2] - 3 + 1) % 10 + 3, 0), b[3]) for b in batches]   # every word wrong
    wrong = digits.evaluate(Oracle(shifted), batches)
    assert wrong["wer"] == 1.0 and wrong["ser"] == 1.0 and 0 < wrong["cer"] < 1.0


@pytest.mark.parametrize("name", ["conformer", "las", "bilstm_ctc"])
def test_transcription_models_train_and_decode_on_synth_digits(digits, name):
    if name not in zoo.list_models(kind="transcription", modality="audio"):
        pytest.fail(f"{name} is not registered for audio transcription")
    torch.manual_seed(0)
    model = zoo.create_model(name, digits.spec, size="tiny")
    digits.check_model(model, name)  # as the trainer does: it declares how it decodes
    batch = next(iter(digits.train_batches(8, torch.Generator().manual_seed(0))))
    loss = digits.loss(model, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    model.eval()
    for beam in (1, 3):
        digits.opts["beam_size"] = beam
        metrics = digits.evaluate(model, digits.eval_batches("val", 4))
        assert set(metrics) == {"wer", "cer", "ser"} and metrics["ser"] <= 1.0 and metrics["wer"] >= 0
    digits.opts["beam_size"] = 1


def test_speech_models_are_not_offered_to_image_tasks():
    audio = set(zoo.list_models(kind="classification", modality="audio"))
    image = set(zoo.list_models(kind="classification", modality="image"))
    assert "conformer" in audio and "conformer" not in image and "vit" not in audio and "resnet" not in audio


def test_harness_runs_the_speech_domain_end_to_end(data_dir, tmp_path):
    from harness.cli import main
    out = tmp_path / "results"
    code = main(["run", "speech", "--models", "conformer", "--steps", "3", "--data-dir", str(data_dir),
                 "--task-opt", "clips_per_voice=1", "--task-opt", "utterances_per_voice=2", "--task-opt", "beam_size=2",
                 *[a for k, v in TINY_CONFORMER.items() for a in ("--model-opt", f"{k}={v}")],
                 "--out", str(out), "--quiet"])
    assert code == 0
    text = (out / "leaderboard_speech.csv").read_text()
    assert "synth_commands" in text and "synth_digits" in text
    record = json.loads(next((out / "runs" / "speech" / "synth_digits").glob("*.json")).read_text())
    assert record["metric"] == "wer" and record["higher_is_better"] is False
    assert {"wer", "cer", "ser"} <= set(record["test"]) and record["config"]["task_options"]["beam_size"] == 2
    assert len(record["examples"]["decoded"]) == 8
    assert assert_items_reproduce(out) == {"synth_commands": "classification", "synth_digits": "transcription"}
    items = np.load(next((out / "runs" / "speech" / "synth_digits").glob("*.items.npz")))
    assert record["metric_value"] == pytest.approx(items["value"].sum() / items["weight"].sum(), abs=1e-12)
    assert (items["weight"] >= 1).all()  # reference words per utterance: WER is a ratio of sums


def test_bad_speech_task_options_are_one_line_errors(data_dir, capsys):
    from harness.cli import main
    assert main(["run", "speech", "--tasks", "synth_digits", "--task-opt", "beam_size=0",
                 "--data-dir", str(data_dir)]) == 2
    assert "option beam_size must be an integer >= 1, got 0" in capsys.readouterr().err
