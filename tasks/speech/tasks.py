"""The offline speech tasks, spoken by espeak-ng (``tasks.speech.synth``) with a speaker-independent
split: the test split is voices never heard in training (their accents and their voice variants both
held out); validation is 5 of the 50 training voices, whose accent/variant combinations training does
not hear.

- ``synth_commands`` (keyword spotting, offline, default): the 35 words of Google Speech Commands v2,
  1-second clips.
- ``synth_digits`` (transcription, offline, default): strings of 1-7 spoken digits ("three one four"),
  the same engine and voice split.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..base import DatasetError, Option, register_task
from . import synth as ss
from .classification import AudioClassificationTask, Clip
from .transcription import TranscriptionTask


def validation_voices() -> list[str]:
    """Five of the 50 training voices, held out for validation: one per training accent, each with a
    different variant, so validation hears accent/variant combinations that training does not (the
    test split goes further: its accents and variants are both unheard)."""
    variants = ss.TRAIN_VARIANTS
    return [f"{base}+{variants[(2 * i + 1) % len(variants)]}" for i, base in enumerate(ss.TRAIN_BASES)]


def split_by_voice(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Manifest rows of ``tasks.speech.synth`` -> train (45 voices), val (:func:`validation_voices`)
    and test (the synthesiser's 15 test voices)."""
    val = set(validation_voices())
    return {"train": [r for r in rows if r["split"] == "train" and r["voice"] not in val],
            "val": [r for r in rows if r["voice"] in val],
            "test": [r for r in rows if r["split"] == "test"]}


def require_synthesis(task: str) -> None:
    """DatasetError naming the missing package when the offline synthesiser cannot run."""
    import importlib.util
    for module in ("espeakng_loader", "scipy"):
        if importlib.util.find_spec(module) is None:
            raise DatasetError(f"{task} needs the speech extra ({module} is missing): pip install -e '.[speech]'")


def read_clip(path: Path) -> Tensor:
    """One of the synthesiser's wav files (16 kHz mono PCM_16) -> float32 waveform (n,): its samples
    / 32768, as soundfile reads them, but read by ``synth.read_pcm16`` (the standard library's
    ``wave``), so the synthetic tasks need no soundfile."""
    samples, _ = ss.read_pcm16(path)
    return torch.from_numpy(samples.astype(np.float32) / np.float32(32768))


def synth_recipe(generator: type) -> dict[str, Any]:
    """What a synthesised dataset is besides the task's options: the generator and its format version."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        engine = version("espeakng-loader")  # the bundled espeak-ng: another build may speak differently
    except PackageNotFoundError:
        engine = None
    return {"generator": f"synth.{generator.__name__}", "format_version": ss.FORMAT_VERSION, "espeakng_loader": engine}


@register_task
class SynthCommands(AudioClassificationTask):
    name = "synth_commands"
    target = 0.90
    report = replace(AudioClassificationTask.report,
                     description="the 35 Speech Commands words spoken by espeak-ng; test on unseen voices; offline")
    offline = default = True
    options = {**AudioClassificationTask.options, "clips_per_voice": Option(5, minimum=1, help="clips of each word "
                                                                                            "per voice"),
               "seed": Option(0, minimum=0, help="seed of the synthesis parameters")}

    def data_fingerprint(self) -> dict[str, Any]:
        return synth_recipe(ss.KeywordClips)

    def read_audio(self, path: Path) -> Tensor:
        return read_clip(path)

    def _manifest(self) -> dict[str, tuple[list[Clip], Tensor]]:
        require_synthesis(self.name)
        root = self.data_dir / "synth_commands" / f"n{self.opts['clips_per_voice']}_seed{self.opts['seed']}"
        rows = ss.generate_dataset(ss.SPEECH_COMMANDS_WORDS, root, self.opts["clips_per_voice"], self.opts["seed"])
        self.classes = list(ss.SPEECH_COMMANDS_WORDS)
        index = {w: i for i, w in enumerate(self.classes)}
        return {split: ([Clip(root / r["path"]) for r in items], torch.tensor([index[r["word"]] for r in items]))
                for split, items in split_by_voice(rows).items()}


@register_task
class SynthDigits(TranscriptionTask):
    name = "synth_digits"
    target = 0.05  # validation WER
    report = replace(TranscriptionTask.report,
                     description="strings of 1-7 digits spoken by espeak-ng; WER on unseen voices; offline")
    offline = default = True
    options = {**TranscriptionTask.options, "utterances_per_voice": Option(40, minimum=1, help="digit strings "
                                                                                             "per voice"),
               "seed": SynthCommands.options["seed"]}

    def data_fingerprint(self) -> dict[str, Any]:
        return synth_recipe(ss.DigitStrings)

    def _load(self) -> dict[str, tuple[list[Tensor], list[str]]]:
        require_synthesis(self.name)
        n = self.opts["utterances_per_voice"]
        root = self.data_dir / "synth_digits" / f"n{n}_seed{self.opts['seed']}"
        rows = ss.generate_digit_strings(root, n, self.opts["seed"])
        return {split: ([read_clip(root / r["path"]) for r in items], [r["text"] for r in items])
                for split, items in split_by_voice(rows).items()}
