"""Keyword spotting on real recordings: Google Speech Commands v2 and your own wav folders.

- ``speech_commands``: Speech Commands v2 (Warden 2018, "Speech Commands: A Dataset for
  Limited-Vocabulary Speech Recognition", arXiv:1804.03209): 105,829 one-second 16 kHz utterances of
  35 words by 2,618 speakers. torchaudio's ``SPEECHCOMMANDS`` finds the files under ``--data-dir``
  (``SpeechCommands/speech_commands_v0.02/``, fetched only with ``--download``) and applies the
  official split: the clips named in ``validation_list.txt`` and ``testing_list.txt`` (the paper
  assigns every speaker to one split by a hash of the speaker id), training is the rest (about 85k
  clips), ``_background_noise_/`` excluded. ``--task-opt labels=35`` (default) classifies all 35
  words, classes sorted; ``labels=12`` is the classic variant of the paper's Section 7 and of its
  TensorFlow recipe: ``_silence_``, ``_unknown_`` (every other word) and yes, no, up, down, left,
  right, on, off, stop, go, in that order (the recipe's ``prepare_words_list``). ``_silence_`` clips
  are 1-s windows of the ``_background_noise_`` recordings, evenly spaced and so the same on every
  run, as many per split as that split's ten keywords have clips on average; each split cuts its
  windows from its own part of every recording (the first 80% for training, the next 10% for
  validation, the last 10% for test), so no noise sample is in two splits. Every ``_unknown_`` word
  is kept (the recipe instead samples unknowns down to 10% of the data).
- ``audio_folder``: your own wav files, one folder per class, like ``image_folder``: ``--data-dir
  ROOT`` with ``ROOT/train/<class>/*.wav`` and ``ROOT/test/`` (+ ``ROOT/val/``), or ``ROOT/train/`` +
  ``ROOT/val/`` (``val/`` is then the test split and validation is 10% of ``train/``), or one
  ``ROOT/<class>/*.wav`` tree split 80/10/10 per class (:func:`stratified_holdout`).
  Class folders are sorted by name and searched recursively for ``.wav`` files; stereo is averaged
  to mono, other rates are resampled to 16 kHz (``torchaudio.functional.resample``), every clip is
  padded with zeros or cropped to ``clip_seconds`` (default 1.0). Fewer than two classes or a split
  left empty is a ``DatasetError`` at ``setup``.

Both read audio with ``soundfile`` (torchaudio 2.11's own ``load`` needs torchcodec; without soundfile,
``setup`` stops with a DatasetError saying how to install it); clips shorter
than the clip length are zero-padded on the right and longer ones keep their beginning, as the
standard recipe does. Features, normalisation and the streaming of clips (``chunk_size`` at a time)
are :class:`tasks.speech.classification.AudioClassificationTask`'s.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..base import DatasetError, DatasetNotFoundError, Option, files_fingerprint, register_task
from .classification import AudioClassificationTask, Clip
from .features import SAMPLE_RATE, WINDOW, require_soundfile
from .synth import SPEECH_COMMANDS_WORDS

VERSION = "speech_commands_v0.02"
ARCHIVE_FOLDER = "SpeechCommands"  # torchaudio's folder_in_archive
NOISE_FOLDER = "_background_noise_"
KEYWORDS_12 = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
SILENCE, UNKNOWN = "_silence_", "_unknown_"
SUBSETS = {"train": "training", "val": "validation", "test": "testing"}  # ours -> torchaudio's
NOISE_REGIONS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}  # fractions of each recording


def silence_windows(lengths: list[int], region: tuple[float, float], count: int,
                    size: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """``count`` windows of ``size`` samples as (recording index, start), dealt to the recordings in
    turn and evenly spaced over each one's ``region`` (fractions of its length; recordings whose
    region is shorter than a window get none). Deterministic; disjoint regions give disjoint windows."""
    spans = []  # (recording, first start, last start)
    for i, n in enumerate(lengths):
        lo, hi = int(region[0] * n), int(region[1] * n)
        if hi - lo >= size:
            spans.append((i, lo, hi - size))
    windows = []
    for k, (i, first, last) in enumerate(spans):
        m = len(range(k, count, len(spans)))  # this recording's share of the round-robin
        windows += [(i, int(s)) for s in np.linspace(first, last, m).round()]
    return windows


# ----------------------------------------------------------------------------- Speech Commands v2

@register_task
class SpeechCommands(AudioClassificationTask):
    """Google Speech Commands v2 (Warden 2018) with its official validation/test lists."""

    name = "speech_commands"
    report = replace(AudioClassificationTask.report,
                     description="Google Speech Commands v2 (Warden 2018), 35 words or labels=12; --download")
    options = {**AudioClassificationTask.options, "labels": Option(
        35, choices=(35, 12), help=f"35: every word; 12: ten keywords, {UNKNOWN} and {SILENCE}")}

    @property
    def folder(self) -> Path:
        return self.data_dir / ARCHIVE_FOLDER / VERSION

    def data_fingerprint(self) -> dict[str, Any]:
        """The clips read and the official split lists."""
        self.setup()
        lists = [self.folder / name for name in ("validation_list.txt", "testing_list.txt")]
        return files_fingerprint(self.data_dir, [*self.files, *lists])

    def _subset(self, subset: str) -> list[tuple[Path, str, str]]:
        """(path, word, speaker) of every clip of a torchaudio subset, in its order, audio unread."""
        from torchaudio.datasets import SPEECHCOMMANDS
        try:
            ds = SPEECHCOMMANDS(root=self.data_dir, url=VERSION, download=self.download, subset=subset)
        except FileNotFoundError as e:
            raise DatasetError(f"speech_commands: {self.folder} is incomplete ({Path(e.filename).name} is missing); "
                               f"delete it and rerun with --download") from None
        rows = []
        for n in range(len(ds)):
            relpath, _, word, speaker, _ = ds.get_metadata(n)  # relpath is under root/SpeechCommands
            rows.append((self.data_dir / ARCHIVE_FOLDER / relpath, word, speaker))
        return rows

    def _manifest(self) -> dict[str, tuple[list[Clip], Tensor]]:
        if not self.download and not self.folder.is_dir():
            raise DatasetNotFoundError(
                f"speech_commands: no dataset under {self.folder}; add --download to fetch it (2.3 GB), "
                f"or point --data-dir at the folder that holds {ARCHIVE_FOLDER}/")
        require_soundfile(self.name)  # before a 2.3 GB download that could not be read
        if self.download:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        rows = {split: self._subset(subset) for split, subset in SUBSETS.items()}
        self._check_words(rows)
        if self.opts["labels"] == 35:
            self.classes = sorted(SPEECH_COMMANDS_WORDS)
            label_of = {w: i for i, w in enumerate(self.classes)}
        else:
            self.classes = [SILENCE, UNKNOWN, *KEYWORDS_12]
            label_of = {w: (self.classes.index(w) if w in KEYWORDS_12 else 1) for w in SPEECH_COMMANDS_WORDS}
        out = {}
        for split, items in rows.items():
            clips = [Clip(path) for path, _, _ in items]
            labels = [label_of[word] for _, word, _ in items]
            if self.opts["labels"] == 12:
                silence = self._silence(split, labels)
                clips += silence
                labels += [self.classes.index(SILENCE)] * len(silence)
            out[split] = (clips, torch.tensor(labels, dtype=torch.int64))
        return out

    def _check_words(self, rows: dict[str, list[tuple[Path, str, str]]]) -> None:
        words = {word for items in rows.values() for _, word, _ in items}
        unexpected = sorted(words - set(SPEECH_COMMANDS_WORDS))
        if unexpected:
            raise DatasetError(f"speech_commands: {self.folder} has folders of words that Speech Commands v2 does not "
                               f"have: {', '.join(unexpected)}")
        missing = sorted(set(SPEECH_COMMANDS_WORDS) - {word for _, word, _ in rows["train"]})
        if missing:
            raise DatasetError(f"speech_commands: {self.folder} is incomplete (no training clips of "
                               f"{', '.join(missing)}); delete it and rerun with --download")

    def _silence(self, split: str, labels: list[int]) -> list[Clip]:
        """1-s windows of the background-noise recordings, as many as the split's keywords average."""
        recordings = sorted((self.folder / NOISE_FOLDER).glob("*.wav"))
        if not recordings:
            raise DatasetError(f"speech_commands: no {NOISE_FOLDER}/*.wav under {self.folder} to cut {SILENCE} "
                               f"clips from; delete the folder and rerun with --download")
        keyword_ids = [self.classes.index(w) for w in KEYWORDS_12]
        count = max(1, round(np.bincount(labels, minlength=len(self.classes))[keyword_ids].mean()))
        lengths = [len(self._recording(path)) for path in recordings]
        windows = silence_windows(lengths, NOISE_REGIONS[split], count)
        if not windows:
            raise DatasetError(f"speech_commands: the {NOISE_FOLDER} recordings are too short to cut 1-s "
                               f"{SILENCE} clips for the {split} split")
        return [Clip(recordings[i], start) for i, start in windows]


# ----------------------------------------------------------------------------- your own wav folders

@register_task
class AudioFolder(AudioClassificationTask):
    """Your own wav files in class folders (the audio counterpart of ``image_folder``)."""

    name = "audio_folder"
    report = replace(AudioClassificationTask.report,
                     description="your own wav files in class folders (--data-dir PATH); mono 16 kHz, "
                                 "clip_seconds long")
    local_data = True
    options = {**AudioClassificationTask.options, "clip_seconds": Option(
        1.0, minimum=WINDOW / SAMPLE_RATE, help="seconds every clip is padded or cropped to (at least one 25 ms window)")}

    def clip_samples(self) -> int:
        return round(self.opts["clip_seconds"] * SAMPLE_RATE)

    def data_fingerprint(self) -> dict[str, Any]:
        self.setup()
        return files_fingerprint(self.data_dir, self.files)

    def _manifest(self) -> dict[str, tuple[list[Clip], Tensor]]:
        root = self.data_dir
        if root.exists() and not root.is_dir():
            raise DatasetError(f"audio_folder: {root} is a file, not a folder; point --data-dir at a folder of class "
                               f"folders of wav files (ROOT/<class>/*.wav or ROOT/train/<class>/*.wav)")
        if not root.is_dir():
            raise DatasetNotFoundError(f"audio_folder: no folder {root}; point --data-dir at a folder of class "
                                       f"folders of wav files (ROOT/<class>/*.wav or ROOT/train/<class>/*.wav)")
        require_soundfile(self.name)
        train_dir, val_dir, test_dir = root / "train", root / "val", root / "test"
        if train_dir.is_dir() and (val_dir.is_dir() or test_dir.is_dir()):
            files, labels, self.classes = self._scan_training(train_dir)
            held_out = test_dir if test_dir.is_dir() else val_dir
            splits = {"test": self._scan_like(held_out)}
            if held_out is test_dir and val_dir.is_dir():
                splits["train"], splits["val"] = (files, labels), self._scan_like(val_dir)
            else:  # one held-out folder: it is the test split; validation is 10% of train/, per class
                keep, val = stratified_holdout(labels, 0.1)
                splits["train"], splits["val"] = _pick(files, labels, keep), _pick(files, labels, val)
        else:  # one tree: 10% of every class to test, then 10% of the whole (1/9 of the rest) to val
            files, labels, self.classes = self._scan_training(train_dir if train_dir.is_dir() else root)
            rest, test = stratified_holdout(labels, 0.1)
            files_rest, labels_rest = _pick(files, labels, rest)
            keep, val = stratified_holdout(labels_rest, 1 / 9)
            splits = {"train": _pick(files_rest, labels_rest, keep), "val": _pick(files_rest, labels_rest, val),
                      "test": _pick(files, labels, test)}
        out = {}
        for split in ("train", "val", "test"):
            split_files, split_labels = splits[split]
            if not split_files:
                raise DatasetError(f"audio_folder: too few clips under {root} to split: the {split} split is empty; "
                                   f"add clips, or give train/ with val/ or test/ folders")
            out[split] = ([Clip(f) for f in split_files], torch.tensor(split_labels, dtype=torch.int64))
        return out

    @staticmethod
    def _scan(folder: Path) -> tuple[list[Path], list[int], list[str]]:
        """folder/<class>/**/*.wav -> (files, labels, classes); classes sorted by name, hidden ones skipped."""
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            loose = sum(1 for p in folder.iterdir() if p.suffix.lower() == ".wav")
            hint = f" (it holds {loose} .wav files: put each class in its own folder)" if loose else ""
            raise DatasetNotFoundError(f"audio_folder: no class folders in {folder}{hint}; expected "
                                       f"{folder}/<class>/*.wav")
        files, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
            if not found:
                raise DatasetError(f"audio_folder: class folder {folder / name} has no .wav files")
            files += found
            labels += [label] * len(found)
        return files, labels, classes

    @classmethod
    def _scan_training(cls, folder: Path) -> tuple[list[Path], list[int], list[str]]:
        files, labels, classes = cls._scan(folder)
        if len(classes) < 2:
            raise DatasetError(f"audio_folder: {folder} has {len(classes)} class folder ({', '.join(classes)}); "
                               f"classification needs at least two")
        return files, labels, classes

    def _scan_like(self, folder: Path) -> tuple[list[Path], list[int]]:
        files, labels, classes = self._scan(folder)
        if classes != self.classes:
            raise DatasetError(f"audio_folder: {folder} has classes {classes}, the training folder {self.classes}")
        return files, labels


def stratified_holdout(labels: list[Any], fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held) with ``fraction`` of every label's items held out, at random but fixed."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    labels = np.asarray(labels)
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        k = int(round(len(idx) * fraction))
        held += idx[:k].tolist()
        keep += idx[k:].tolist()
    return np.sort(keep), np.sort(held)


def _pick(files: list[Path], labels: list[int], index: np.ndarray) -> tuple[list[Path], list[int]]:
    return [files[i] for i in index], [labels[i] for i in index]
