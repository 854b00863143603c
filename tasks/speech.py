"""Speech tasks: keyword spotting (kind ``classification``) and digit-string recognition (kind
``transcription``), on log-mel features; all of modality ``audio``.

Features (torchaudio): 16 kHz audio -> ``MelSpectrogram`` (25 ms Hann window, 10 ms hop, ``n_mels``
bins, 40 by default) -> log(mel + 1e-6) -> normalised per mel bin with the training split's mean and
standard deviation. A 1-second clip is 101 frames. During training, SpecAugment (Park et al. 2019)
masks random bands of each example independently with torchaudio's ``FrequencyMasking`` and
``TimeMasking`` (the masked values are 0, the normalised mean); ``--task-opt spec_augment=false``
turns it off.

Keyword spotting (headline ``top1`` on the test split; also ``top5``):
- ``synth_commands`` (offline, default): the 35 words of Google Speech Commands v2 spoken by espeak-ng
  (``tasks.speech_synth``), 1-second clips; the test split is voices never heard in training (their
  accents and their voice variants both held out); validation is 5 of the 50 training voices, whose
  accent/variant combinations training does not hear.
- ``speech_commands``, ``audio_folder``: the real benchmark and your own wav folders
  (``tasks.speech_data``).

Transcription (headline ``wer``, word error rate on the test split, lower is better; also ``cer``,
the character error rate of the same texts, and ``ser``, the share of wrong utterances):
- ``synth_digits`` (offline, default): strings of 1-7 spoken digits ("three one four"), the same
  engine and voice split. The tokens are the words; CTC models decode best-path (or prefix beam search
  with ``beam_size`` > 1), attention models greedily (or with beam search).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.core import lengths_to_padding_mask
from zoo.core.decoding import ctc_beam_search, ctc_greedy_decode

from .base import Batch, Budget, ClassificationTask, DatasetError, Task, TensorBatches, register_task

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
WINDOW = 400  # 25 ms
BLANK = PAD = 0  # CTC blank and decoder padding share id 0
BOS, EOS = 1, 2
SPECIALS = ["<blank>", "<s>", "</s>"]


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


def validation_voices() -> list[str]:
    """Five of the 50 training voices, held out for validation: one per training accent, each with a
    different variant, so validation hears accent/variant combinations that training does not (the
    test split goes further: its accents and variants are both unheard)."""
    from .speech_synth import TRAIN_BASES, TRAIN_VARIANTS
    return [f"{base}+{TRAIN_VARIANTS[(2 * i + 1) % len(TRAIN_VARIANTS)]}" for i, base in enumerate(TRAIN_BASES)]


def split_by_voice(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Manifest rows of ``tasks.speech_synth`` -> train (45 voices), val (:func:`validation_voices`)
    and test (the synthesiser's 15 test voices)."""
    val = set(validation_voices())
    return {"train": [r for r in rows if r["split"] == "train" and r["voice"] not in val],
            "val": [r for r in rows if r["voice"] in val],
            "test": [r for r in rows if r["split"] == "test"]}


def require_synthesis(task: str) -> None:
    """DatasetError naming the missing package when the offline synthesiser cannot run."""
    import importlib.util
    for module in ("espeakng_loader", "scipy", "soundfile"):
        if importlib.util.find_spec(module) is None:
            raise DatasetError(f"{task} needs the speech extra ({module} is missing): pip install -e '.[speech]'")


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


# ----------------------------------------------------------------------------- keyword spotting

@dataclass(frozen=True)
class Clip:
    """Where one example's audio is: a whole file (``start`` None), or the window of one clip length
    that starts at sample ``start`` of a longer recording (e.g. Speech Commands' ``_silence_`` crops)."""

    path: Path
    start: int | None = None


def read_wav(path: Path, task: str = "speech") -> Tensor:
    """A sound file -> float32 mono waveform (n,) at 16 kHz: channels averaged, other rates resampled
    (torchaudio). A file soundfile cannot read is a DatasetError that names it."""
    try:
        import soundfile as sf
    except ImportError:
        raise DatasetError(f"{task} needs the speech extra (soundfile is missing): pip install -e '.[speech]'") from None
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (n, channels)
    except (RuntimeError, OSError, ValueError, TypeError) as e:  # sf.LibsndfileError is a RuntimeError
        raise DatasetError(f"{task}: cannot read {path} as audio ({e})") from None
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


class AudioClassificationTask(ClassificationTask):
    """Fixed-length clips -> log-mel features held in memory: ``features[split]`` (N, T, F) and
    ``labels[split]`` (N,). Subclasses implement ``_manifest`` -> {split: (clips, labels (N,))} for
    train, val and test, and set ``classes`` there. ``setup`` reads ``chunk_size`` clips at a time
    and turns them into features, so the waveforms of a split are never all in memory (Speech
    Commands' training split would be 85k x 16000 float32 = 5.4 GB; its features are 1.4 GB)."""

    domain = "speech"
    modality = "audio"
    options: ClassVar[dict[str, Any]] = {"n_mels": 40, "spec_augment": True}
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

    @abstractmethod
    def _manifest(self) -> dict[str, tuple[list[Clip], Tensor]]:
        """{"train"|"val"|"test": (clips, int64 labels (N,))}; sets ``self.classes``."""

    def clip_samples(self) -> int:
        return SAMPLE_RATE

    def _recording(self, path: Path) -> Tensor:
        if path not in self._recordings:
            self._recordings[path] = read_wav(path, self.name)
        return self._recordings[path]

    def _waves(self, clips: list[Clip]) -> Tensor:
        """clips -> float32 waveforms (len(clips), clip_samples())."""
        size = self.clip_samples()
        waves = torch.zeros(len(clips), size)
        for row, clip in enumerate(clips):
            if clip.start is None:
                waves[row] = fit_length(read_wav(clip.path, self.name), size)
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
            for split, (clips, split_labels) in self._manifest().items():
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
        with torch.random.fork_rng(devices=[]):  # the masks draw from torch's global generator:
            return self.augment(x)               # keep it out of the model's dropout stream

    def eval_batches(self, split: str, batch_size: int) -> Iterable[Batch]:
        return TensorBatches((self.features[split], self.labels[split]), batch_size)


@register_task
class SynthCommands(AudioClassificationTask):
    name = "synth_commands"
    target = 0.90
    description = "the 35 Speech Commands words spoken by espeak-ng; test on unseen voices; offline"
    offline = default = True
    options = {**AudioClassificationTask.options, "clips_per_voice": 5, "seed": 0}

    def _manifest(self) -> dict[str, tuple[list[Clip], Tensor]]:
        from . import speech_synth as ss
        require_synthesis(self.name)
        root = self.data_dir / "synth_commands" / f"n{self.opts['clips_per_voice']}_seed{self.opts['seed']}"
        rows = ss.generate_dataset(ss.SPEECH_COMMANDS_WORDS, root, self.opts["clips_per_voice"], self.opts["seed"])
        self.classes = list(ss.SPEECH_COMMANDS_WORDS)
        index = {w: i for i, w in enumerate(self.classes)}
        return {split: ([Clip(root / r["path"]) for r in items], torch.tensor([index[r["word"]] for r in items]))
                for split, items in split_by_voice(rows).items()}


# ----------------------------------------------------------------------------- transcription

def error_rates(hypotheses: list[list[str]], references: list[list[str]]) -> tuple[int, int]:
    """(total edit distance, total reference length) over pairs of token lists (torchaudio)."""
    from torchaudio.functional import edit_distance
    return (sum(edit_distance(r, h) for h, r in zip(hypotheses, references)),
            sum(len(r) for r in references))


class TranscriptionTask(Task):
    """Utterances -> word sequences. ``features[split]`` (N, T_max, F) with ``frames[split]`` (N,),
    ``targets[split]`` (N, L_max) word ids (PAD after the words) with ``target_lengths[split]``.
    Subclasses implement ``_load`` -> {split: (list of 1-D waveforms, list of transcripts)}."""

    domain = "speech"
    kind = "transcription"
    modality = "audio"
    metric = "wer"
    higher_is_better = False
    options: ClassVar[dict[str, Any]] = {"n_mels": 40, "spec_augment": True, "beam_size": 1}
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
        if self.opts["beam_size"] < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.opts['beam_size']}")

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
        with torch.random.fork_rng(devices=[]):
            feats = self.augment(feats)
        real = torch.arange(feats.shape[1])[None, :] < frames[:, None]
        return (feats * real[..., None], frames, *rest)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        return map(self._trim, TensorBatches(self._tensors(split), batch_size))

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        feats, frames, targets, target_lengths = batch
        if model.decoding == "ctc":
            log_probs, out_lengths = model(feats, frames)
            return F.ctc_loss(log_probs.float().transpose(0, 1), targets, out_lengths, target_lengths,
                              blank=BLANK, zero_infinity=True)
        tgt = F.pad(targets, (1, 1), value=PAD)  # BOS words EOS, PAD after
        tgt[:, 0] = BOS
        tgt[torch.arange(len(tgt)), target_lengths + 1] = EOS
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
    def evaluate(self, model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        hyps, refs = [], []
        for feats, frames, targets, target_lengths in batches:
            hyps += [self._words(h) for h in self.decode_batch(model, feats, frames)]
            refs += [self._words(t[:n]) for t, n in zip(targets.tolist(), target_lengths.tolist())]
        word_errors, words = error_rates(hyps, refs)
        char_errors, chars = error_rates([list(" ".join(h)) for h in hyps], [list(" ".join(r)) for r in refs])
        return {"wer": word_errors / words, "cer": char_errors / chars,
                "ser": sum(h != r for h, r in zip(hyps, refs)) / len(refs)}

    def examples(self, model: nn.Module, device: torch.device, seed: int) -> dict[str, Any]:
        feats, frames, targets, target_lengths = self._trim(tuple(t[:8] for t in self._tensors("test")))
        hyps = self.decode_batch(model, feats.to(device), frames.to(device))
        return {"decoded": [{"source": f"test utterance {i}", "target": self.texts["test"][i],
                             "output": " ".join(self._words(h))} for i, h in enumerate(hyps)]}


@register_task
class SynthDigits(TranscriptionTask):
    name = "synth_digits"
    target = 0.05  # validation WER
    description = "strings of 1-7 digits spoken by espeak-ng; WER on unseen voices; offline"
    offline = default = True
    options = {**TranscriptionTask.options, "utterances_per_voice": 40, "seed": 0}

    def _load(self) -> dict[str, tuple[list[Tensor], list[str]]]:
        from . import speech_synth as ss
        require_synthesis(self.name)
        n = self.opts["utterances_per_voice"]
        root = self.data_dir / "synth_digits" / f"n{n}_seed{self.opts['seed']}"
        rows = ss.generate_digit_strings(root, n, self.opts["seed"])
        return {split: ([read_wav(root / r["path"], self.name) for r in items], [r["text"] for r in items])
                for split, items in split_by_voice(rows).items()}
