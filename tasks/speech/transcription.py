"""Transcription (kind ``transcription``, modality ``audio``; headline ``wer``, word error rate on
the test split, lower is better; also ``cer``, the character error rate of the same texts, and
``ser``, the share of wrong utterances): the base of the tasks whose examples are utterances of
words. The tokens are the words; CTC models decode best-path (or prefix beam search with
``beam_size`` > 1), attention models greedily (or with beam search).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.core import lengths_to_padding_mask
from zoo.core.decoding import ctc_beam_search, ctc_greedy_decode

from ..base import (Batch, Budget, DecodedExamples, Decoder, Generator, ItemLog, Option, Task, TaskReport,
                    TensorBatches, missing_members)
from .features import N_MELS, SPEC_AUGMENT, SpecAugment, log_mel_features, normalise

BLANK = PAD = 0  # CTC blank and decoder padding share id 0
BOS, EOS = 1, 2
SPECIALS = ["<blank>", "<s>", "</s>"]


def error_rates(hypotheses: list[list[str]], references: list[list[str]]) -> tuple[int, int]:
    """(total edit distance, total reference length) over pairs of token lists (torchaudio)."""
    from torchaudio.functional import edit_distance
    return (sum(edit_distance(r, h) for h, r in zip(hypotheses, references)),
            sum(len(r) for r in references))


class TranscriptionTask(DecodedExamples, Task):
    """Utterances -> word sequences. ``features[split]`` (N, T_max, F) with ``frames[split]`` (N,),
    ``targets[split]`` (N, L_max) word ids (PAD after the words) with ``target_lengths[split]``.
    Subclasses implement ``_load`` -> {split: (list of 1-D waveforms, list of transcripts)}."""

    domain = "speech"
    kind = "transcription"
    modality = "audio"
    metric = "wer"
    higher_is_better = False
    report = TaskReport(metric_units={"wer": "word error rate", "cer": "character error rate"})
    options: ClassVar[dict[str, Any]] = {"n_mels": N_MELS, "spec_augment": SPEC_AUGMENT, "beam_size": Option(
        1, minimum=1, help="beam width of the decoding at evaluation (1: greedy / best path)")}
    budget = Budget(epochs=6, batch_size=32)
    default_seeds = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.features: dict[str, Tensor] = {}
        self.frames: dict[str, Tensor] = {}
        self.targets: dict[str, Tensor] = {}
        self.target_lengths: dict[str, Tensor] = {}
        self.texts: dict[str, list[str]] = {}
        self.words: list[str] = []
        self.augment = SpecAugment() if self.opts["spec_augment"] else None

    @abstractmethod
    def _load(self) -> dict[str, tuple[list[Tensor], list[str]]]:
        """{split: (1-D float waveforms at 16 kHz, transcripts)} for train, val and test."""

    def setup(self) -> None:
        if self.features:
            return
        data = self._load()
        self.words = sorted({w for _, texts in data.values() for t in texts for w in t.split()})
        self.tokens = SPECIALS + self.words
        index = {w: i for i, w in enumerate(self.tokens)}
        for split, (waves, texts) in data.items():
            self.features[split], self.frames[split] = log_mel_features(waves, self.opts["n_mels"])
            ids = [[index[w] for w in t.split()] for t in texts]
            self.target_lengths[split] = torch.tensor([len(i) for i in ids])
            self.targets[split] = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
            for row, i in enumerate(ids):
                self.targets[split][row, :len(i)] = torch.tensor(i)
            self.texts[split] = list(texts)
        normalise(self.features, self.frames)

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "modality": self.modality, "input_dim": self.features["train"].shape[2],
                "vocab_size": len(self.tokens), "blank_id": BLANK, "pad_id": PAD, "bos_id": BOS, "eos_id": EOS,
                "max_tgt_len": max(int(t.max()) for t in self.target_lengths.values()) + 1,
                "max_frames": max(int(f.max()) for f in self.frames.values())}

    def num_train_samples(self) -> int:
        return len(self.texts["train"])

    on_host = (1, 3)  # frames and target lengths: packed LSTMs and CTC read them on the host
    requires = (Decoder,)

    def check_model(self, model: nn.Module, name: str = "") -> None:
        """A decoder (``requires``); one that decodes with attention also generates."""
        super().check_model(model, name)
        if model.decoding != "ctc" and missing_members(model, Generator):
            raise ValueError(f"model {name or type(model).__name__!r} decodes with {model.decoding!r} but has no "
                             f"generate (tasks.base.Generator)")

    @staticmethod
    def _trim(batch: Batch) -> Batch:
        """Cut the frames and target columns that are padding in every row of the batch."""
        feats, frames, targets, target_lengths = batch
        return feats[:, :int(frames.max())], frames, targets[:, :int(target_lengths.max())], target_lengths

    def _tensors(self, split: str) -> tuple[Tensor, ...]:
        return self.features[split], self.frames[split], self.targets[split], self.target_lengths[split]

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        batches = map(self._trim, TensorBatches(self._tensors("train"), batch_size, generator=generator))
        return (self._augment(b) for b in batches) if self.augment is not None else batches

    def _augment(self, batch: Batch) -> Batch:
        feats, frames, *rest = batch
        feats = self.augment(feats)  # from torch's global generator, which advances (see classification.py)
        real = torch.arange(feats.shape[1])[None, :] < frames[:, None]
        return (feats * real[..., None], frames, *rest)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        return map(self._trim, TensorBatches(self._tensors(split), batch_size))

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        feats, frames, targets, target_lengths = batch
        if model.decoding == "ctc":  # declared by the model (tasks.base.Decoder, checked when it was built)
            log_probs, out_lengths = model(feats, frames)
            return F.ctc_loss(log_probs.float().transpose(0, 1), targets, out_lengths, target_lengths,
                              blank=BLANK, zero_infinity=True)
        tgt = F.pad(targets, (1, 1), value=PAD)  # BOS words EOS, PAD after
        tgt[:, 0] = BOS
        tgt.scatter_(1, (target_lengths + 1).to(tgt.device, non_blocking=True)[:, None], EOS)
        logits = model(feats, lengths_to_padding_mask(frames, feats.shape[1]), tgt[:, :-1])
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=PAD)

    def decode_batch(self, model: nn.Module, feats: Tensor, frames: Tensor) -> list[list[int]]:
        """Token ids (no specials) for each utterance of the batch."""
        beam = self.opts["beam_size"]
        if model.decoding == "ctc":
            log_probs, out_lengths = model(feats, frames)
            if beam == 1:
                return ctc_greedy_decode(log_probs, out_lengths, BLANK)
            return ctc_beam_search(log_probs, out_lengths, beam, BLANK)
        out = model.generate(feats, lengths_to_padding_mask(frames, feats.shape[1]), max_len=self.spec["max_tgt_len"], beam_size=beam)
        hyps = []
        for row in out.tolist():
            row = row[:row.index(EOS)] if EOS in row else row
            hyps.append([t for t in row if t >= len(SPECIALS)])
        return hyps

    def _words(self, ids: list[int]) -> list[str]:
        return [self.tokens[i] for i in ids if i >= len(SPECIALS)]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], items: ItemLog | None = None) -> dict[str, float]:
        hyps, refs = [], []
        for feats, frames, targets, target_lengths in batches:
            hyps += [self._words(h) for h in self.decode_batch(model, feats, frames)]
            refs += [self._words(t[:n]) for t, n in zip(targets.tolist(), target_lengths.tolist())]
        word_errors, words = error_rates(hyps, refs)
        if items is not None:  # per utterance: its word errors over its reference words (WER is their ratio)
            per_utterance = [error_rates([h], [r]) for h, r in zip(hyps, refs)]
            items.add([e for e, _ in per_utterance], weight=[w for _, w in per_utterance])
        char_errors, chars = error_rates([list(" ".join(h)) for h in hyps], [list(" ".join(r)) for r in refs])
        return {"wer": word_errors / words, "cer": char_errors / chars,
                "ser": sum(h != r for h, r in zip(hyps, refs)) / len(refs)}

    def examples(self, model: nn.Module, device: torch.device, seed: int) -> dict[str, Any]:
        feats, frames, targets, target_lengths = self._trim(tuple(t[:8] for t in self._tensors("test")))
        hyps = self.decode_batch(model, feats.to(device), frames)  # frames stay on the host
        return {"decoded": [{"source": f"test utterance {i}", "target": self.texts["test"][i],
                             "output": " ".join(self._words(h))} for i, h in enumerate(hyps)]}

