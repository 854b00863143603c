"""Audio in, features out: reading sound files as 16 kHz mono, fixing clip lengths, log-mel features,
their normalisation, and SpecAugment.

Features (torchaudio): 16 kHz audio -> ``MelSpectrogram`` (25 ms Hann window, 10 ms hop, ``n_mels``
bins, 40 by default) -> log(mel + 1e-6) -> normalised per mel bin with the training split's mean and
standard deviation. A 1-second clip is 101 frames. During training, SpecAugment (Park et al. 2019)
masks random bands of each example independently with torchaudio's ``FrequencyMasking`` and
``TimeMasking`` (the masked values are 0, the normalised mean); ``--task-opt spec_augment=false``
turns it off.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import DatasetError, Option

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
WINDOW = 400  # 25 ms
MAX_MELS = 89  # the most mel bins a 400-point FFT at 16 kHz fills: from 90 on, some mel filters are all zero
N_MELS = Option(40, minimum=1, maximum=MAX_MELS, help="log-mel bins per frame")
SPEC_AUGMENT = Option(True, help="mask random frequency bands and time spans of training features")


class LogMel(nn.Module):
    """waveforms (B, N) -> log-mel features (B, T, n_mels), T = N // 160 + 1 (torchaudio, centred)."""

    def __init__(self, n_mels: int = 40) -> None:
        super().__init__()
        import torchaudio
        self.mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=WINDOW, win_length=WINDOW,
                                                        hop_length=HOP, n_mels=n_mels)

    @staticmethod
    def frames(num_samples: Tensor | int) -> Tensor | int:
        return num_samples // HOP + 1

    def forward(self, waves: Tensor) -> Tensor:
        return (self.mel(waves) + 1e-6).log().transpose(1, 2)


class SpecAugment(nn.Module):
    """(B, T, F) -> the same with ``freq_masks`` bands of up to ``freq_width`` bins and ``time_masks``
    spans of up to ``time_width`` frames set to 0, drawn independently per example (torchaudio)."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 7, time_masks: int = 2, time_width: int = 12) -> None:
        super().__init__()
        import torchaudio
        T = torchaudio.transforms
        self.masks = nn.Sequential(*[T.FrequencyMasking(freq_width, iid_masks=True) for _ in range(freq_masks)],
                                   *[T.TimeMasking(time_width, iid_masks=True) for _ in range(time_masks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.masks(x.transpose(1, 2).unsqueeze(1)).squeeze(1).transpose(1, 2)  # via (B, 1, F, T)


def log_mel_features(waves: list[Tensor] | Tensor, n_mels: int, batch: int = 512) -> tuple[Tensor, Tensor]:
    """1-D waveforms (or a (N, S) tensor) -> features (N, T_max, n_mels), zero past each utterance's
    frames, and frame counts (N,). Utterances are batched only with others of the same length, so
    an utterance's features never depend on what it was batched with (the last frames' windows
    reach past the end, where torchaudio reflects the signal)."""
    extract = LogMel(n_mels)
    waves = list(waves)
    lengths = torch.tensor([LogMel.frames(len(w)) for w in waves])
    out = torch.zeros(len(waves), int(lengths.max()), n_mels)
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        by_length.setdefault(len(w), []).append(i)
    with torch.no_grad():
        for same in by_length.values():
            for start in range(0, len(same), batch):
                index = same[start:start + batch]
                feats = extract(torch.stack([waves[i] for i in index]))  # (b, T, n_mels)
                out[index, :feats.shape[1]] = feats
    return out, lengths


def normalise(features: dict[str, Tensor], lengths: dict[str, Tensor] | None = None, reference: str = "train",
              chunk: int = 4096) -> None:
    """In place: standardise every split (N, T, F) with the reference split's per-bin mean and
    (unbiased) standard deviation over its real frames (std clamped at 1e-5); padded frames (past
    ``lengths``, when given) stay 0. Works ``chunk`` examples at a time in float64, so that a large
    split (Speech Commands: 85k x 101 x 40) needs no full-size temporary."""
    def chunks(split: str) -> Iterator[tuple[Tensor, Tensor]]:  # (n, T, F) view, (n, T, 1) real-frame mask
        x = features[split]
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk]
            if lengths is None:
                yield part, torch.ones(*part.shape[:2], 1, dtype=torch.bool)
            else:
                n = lengths[split][start:start + chunk]
                yield part, (torch.arange(part.shape[1])[None, :] < n[:, None])[..., None]

    bins = features[reference].shape[-1]
    total, squares, count = torch.zeros(bins, dtype=torch.float64), torch.zeros(bins, dtype=torch.float64), 0
    for part, real in chunks(reference):
        total += (part.double() * real).sum((0, 1))
        count += int(real.sum())
    mean = total / count
    for part, real in chunks(reference):
        squares += (((part.double() - mean) * real) ** 2).sum((0, 1))
    std = (squares / max(count - 1, 1)).sqrt().float().clamp_min(1e-5)
    for split in features:
        for part, real in chunks(split):
            part.sub_(mean.float()).div_(std).mul_(real)


def require_soundfile(task: str = "speech") -> ModuleType:
    """The ``soundfile`` module, which reads the sound files of ``speech_commands`` and ``audio_folder``
    (the synthetic tasks read their own wavs without it); a one-line DatasetError saying how to install
    it where it cannot be imported."""
    try:
        import soundfile
    except (ImportError, OSError) as exc:  # OSError: soundfile found no libsndfile
        why = "" if getattr(exc, "name", None) == "soundfile" else f" ({exc})"
        raise DatasetError(f"{task} needs soundfile{why}: pip install soundfile "
                           "(or pip install -e '.[speech]')") from None
    return soundfile


def read_wav(path: Path, task: str = "speech") -> Tensor:
    """A sound file -> float32 mono waveform (n,) at 16 kHz: channels averaged, other rates resampled
    (torchaudio). A file soundfile cannot read, or one with no samples, is a DatasetError that names it."""
    sf = require_soundfile(task)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (n, channels)
    except (RuntimeError, OSError, ValueError, TypeError) as e:  # sf.LibsndfileError is a RuntimeError
        raise DatasetError(f"{task}: cannot read {path} as audio ({e})") from None
    if len(data) == 0:  # not a silent clip: a file with nothing in it
        raise DatasetError(f"{task}: {path} holds no audio (0 samples); remove it or record it again")
    wave = torch.from_numpy(np.ascontiguousarray(data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)))
    if rate != SAMPLE_RATE:
        from torchaudio.functional import resample
        wave = resample(wave, int(rate), SAMPLE_RATE)
    return wave


def fit_length(wave: Tensor, samples: int) -> Tensor:
    """(n,) -> (samples,): zeros appended to a short clip, the beginning of a long one kept."""
    if len(wave) >= samples:
        return wave[:samples]
    return F.pad(wave, (0, samples - len(wave)))

