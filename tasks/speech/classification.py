"""Keyword spotting (kind ``classification``, modality ``audio``; headline ``top1`` on the test split,
also ``top5``): the base of the tasks whose examples are fixed-length clips, featurised in chunks and
held in memory.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

import torch
from torch import Tensor

from ..base import Batch, Budget, ClassificationTask, TensorBatches
from .features import N_MELS, SAMPLE_RATE, SPEC_AUGMENT, SpecAugment, fit_length, log_mel_features, normalise, read_wav


@dataclass(frozen=True)
class Clip:
    """Where one example's audio is: a whole file (``start`` None), or the window of one clip length
    that starts at sample ``start`` of a longer recording (e.g. Speech Commands' ``_silence_`` crops)."""

    path: Path
    start: int | None = None


class AudioClassificationTask(ClassificationTask):
    """Fixed-length clips -> log-mel features held in memory: ``features[split]`` (N, T, F) and
    ``labels[split]`` (N,). Subclasses implement ``_manifest`` -> {split: (clips, labels (N,))} for
    train, val and test, and set ``classes`` there. ``setup`` reads ``chunk_size`` clips at a time
    and turns them into features, so the waveforms of a split are never all in memory (Speech
    Commands' training split would be 85k x 16000 float32 = 5.4 GB; its features are 1.4 GB)."""

    domain = "speech"
    modality = "audio"
    options: ClassVar[dict[str, Any]] = {"n_mels": N_MELS, "spec_augment": SPEC_AUGMENT}
    budget = Budget(epochs=4, batch_size=64)
    default_seeds = 1
    held = ("features", "labels")
    chunk_size: ClassVar[int] = 2048  # clips read and featurised at once: 2048 x 16000 float32 = 131 MB

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.features: dict[str, Tensor] = {}
        self.labels: dict[str, Tensor] = {}
        self.classes: list[str] = []
        self.augment = SpecAugment() if self.opts["spec_augment"] else None
        self._recordings: dict[Path, Tensor] = {}  # whole recordings that windows are cut from
        self.files: list[Path] = []  # the sound files setup read (each once), for a file-backed fingerprint

    @abstractmethod
    def _manifest(self) -> dict[str, tuple[list[Clip], Tensor]]:
        """{"train"|"val"|"test": (clips, int64 labels (N,))}; sets ``self.classes``."""

    def clip_samples(self) -> int:
        return SAMPLE_RATE

    def read_audio(self, path: Path) -> Tensor:
        """One sound file -> float32 mono waveform (n,) at 16 kHz: ``read_wav`` (soundfile)."""
        return read_wav(path, self.name)

    def _recording(self, path: Path) -> Tensor:
        if path not in self._recordings:
            self._recordings[path] = self.read_audio(path)
        return self._recordings[path]

    def _waves(self, clips: list[Clip]) -> Tensor:
        """clips -> float32 waveforms (len(clips), clip_samples())."""
        size = self.clip_samples()
        waves = torch.zeros(len(clips), size)
        for row, clip in enumerate(clips):
            if clip.start is None:
                waves[row] = fit_length(self.read_audio(clip.path), size)
            else:
                waves[row] = fit_length(self._recording(clip.path)[clip.start:clip.start + size], size)
        return waves

    def _load(self) -> dict[str, tuple[Tensor, Tensor]]:
        """{split: (waveforms (N, S), labels (N,))}, all in memory: for small data and inspection."""
        try:
            return {split: (self._waves(clips), labels) for split, (clips, labels) in self._manifest().items()}
        finally:
            self._recordings.clear()

    def setup(self) -> None:
        if self.features:
            return
        features, labels = {}, {}
        try:
            manifest = self._manifest()
            self.files = sorted({clip.path for clips, _ in manifest.values() for clip in clips})
            for split, (clips, split_labels) in manifest.items():
                feats = None
                for start in range(0, len(clips), self.chunk_size):
                    waves = self._waves(clips[start:start + self.chunk_size])  # (n, S)
                    chunk, _ = log_mel_features(waves, self.opts["n_mels"])  # (n, T, F), every frame real
                    if feats is None:
                        feats = torch.empty(len(clips), *chunk.shape[1:])
                    feats[start:start + len(chunk)] = chunk
                features[split], labels[split] = feats, split_labels
        finally:
            self._recordings.clear()
        normalise(features)
        self.features, self.labels = features, labels

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "modality": self.modality, "input_shape": tuple(self.features["train"].shape[1:]),
                "num_classes": len(self.classes)}

    def num_train_samples(self) -> int:
        return len(self.labels["train"])

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterable[Batch]:
        return TensorBatches((self.features["train"], self.labels["train"]), batch_size, generator=generator,
                             transform=self._augment if self.augment is not None else None)

    def _augment(self, x: Tensor) -> Tensor:
        """SpecAugment's masks, drawn from torch's global generator, which advances (a checkpoint keeps
        its state, so a resumed cell draws the same masks). Restoring it after each draw, as this once
        did, gave a model that draws no random numbers of its own the same masks at every batch."""
        return self.augment(x)

    def eval_batches(self, split: str, batch_size: int) -> Iterable[Batch]:
        return TensorBatches((self.features[split], self.labels[split]), batch_size)

