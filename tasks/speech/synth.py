"""Offline synthetic speech-command data: espeak-ng (through ``espeakng_loader``) -> 16 kHz clips.

This module makes a small keyword-spotting data set without any download: each word of
:data:`SPEECH_COMMANDS_WORDS` is spoken by many espeak-ng voices (accent x voice variant), placed
in a 1-second 16 kHz clip, and written as PCM_16 wav files with a manifest (by the standard library's
``wave``: :func:`write_pcm16` and :func:`read_pcm16`, so the synthetic tasks need no soundfile).

Public API
----------
* :func:`synthesize` ``(text, voice, rate, pitch) -> float32 [n]`` at 16 kHz, in [-1, 1].
* :func:`make_clip` ``(word, voice, rate, pitch, offset, noise_level, gain, rng_seed) -> float32 [16000]``.
* :func:`generate_dataset` ``(words, out_dir, n_per_word_voice, seed, ...) -> list[dict]`` (the manifest rows),
  cached in ``out_dir`` and regenerated (with a warning) when the cache is incomplete or corrupt.
* :func:`generate_digit_strings` ``(out_dir, n_per_voice, seed, ...) -> list[dict]``: strings of 1-7 spoken
  digits ("three one four") in clips of their own length, cached the same way.
* :func:`write_pcm16` ``(path, clip)`` and :func:`read_pcm16` ``(path) -> (int16 samples, rate)``: the wav files.
* :class:`KeywordClips` and :class:`DigitStrings`: the items of those two kinds of data set, in their fixed
  order (chosen by the configuration's ``"kind"`` in :data:`GENERATORS`).
* :data:`VOICES`, :data:`TRAIN_VOICES`, :data:`TEST_VOICES`, :func:`voice_split`, :func:`verify_voices`.

Determinism
-----------
espeak-ng keeps state between utterances (pitch "flutter" phase, wave-generator phase, ...), so the
samples of one word depend on what the process synthesised before; re-initialising the library does not
reset it.  Its own random generator (``espeak_ng_SetRandSeed``) and libc's ``rand`` (used by the library)
are re-seeded before each utterance, which removes the random part only.  A fixed sequence of calls in a
fresh process is bit-identical from run to run, so :func:`generate_dataset` synthesises its items in a fixed
order in a *fresh worker process* (this file run as a script): the files do not depend on what the calling
process did before.  :func:`synthesize` called directly is deterministic only given the same call history.

The module imports only numpy, scipy and espeakng_loader (no torch), so the worker starts fast.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import uuid
import warnings
import wave
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np

SAMPLE_RATE = 16000          # output rate of every function here
CLIP_SAMPLES = SAMPLE_RATE   # one-second clips
FORMAT_VERSION = 1           # bump when the generation recipe changes: invalidates caches
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# The 35 words of Google Speech Commands v2 (Warden 2018), alphabetical.
SPEECH_COMMANDS_WORDS = [
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
    "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off",
    "on", "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two",
    "up", "visual", "wow", "yes", "zero",
]

# --------------------------------------------------------------------------------------------
# Voices and the speaker-independent split.
#
# A voice is "<base>+<variant>": the base (a language file under espeak-ng-data/lang/gmw) fixes the
# accent / phoneme rules, the variant (a file under espeak-ng-data/voices/!v) fixes the "speaker":
# formant scaling, pitch, breathiness, or the Klatt synthesiser.  The split is by BOTH factors, and
# mixed combinations are left out, so no test voice shares its accent or its variant with any
# training voice:   TRAIN = TRAIN_BASES x TRAIN_VARIANTS,   TEST = TEST_BASES x TEST_VARIANTS.
# (en-shaw is not used: it reads Shavian script.)  Every listed voice is checked by the tests
# (:func:`verify_voices`): it sets without error and speaks a non-silent word.
# --------------------------------------------------------------------------------------------
TRAIN_BASES = ["en", "en-us", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
TEST_BASES = ["en-029", "en-us-nyc", "en-gb-scotland"]
TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "m6", "f1", "f2", "f4", "klatt", "klatt3"]
TEST_VARIANTS = ["m5", "m7", "f3", "f5", "klatt2"]

TRAIN_VOICES = [f"{b}+{v}" for b in TRAIN_BASES for v in TRAIN_VARIANTS]   # 50 voices
TEST_VOICES = [f"{b}+{v}" for b in TEST_BASES for v in TEST_VARIANTS]      # 15 voices
VOICES = TRAIN_VOICES + TEST_VOICES


def voice_split(voice: str) -> str:
    """'train' or 'test' for a voice of :data:`VOICES`; ValueError for any other."""
    if voice in TRAIN_VOICES:
        return "train"
    if voice in TEST_VOICES:
        return "test"
    raise ValueError(f"voice {voice!r} is in neither TRAIN_VOICES nor TEST_VOICES")


# --------------------------------------------------------------------------------------------
# ctypes binding to libespeak-ng.  Constants from espeak-ng's public header speak_lib.h:
# --------------------------------------------------------------------------------------------
AUDIO_OUTPUT_PLAYBACK = 0        # espeak_AUDIO_OUTPUT: play on the sound device (not used)
AUDIO_OUTPUT_RETRIEVAL = 1       #   samples go to the synth callback, espeak_Synth is asynchronous
AUDIO_OUTPUT_SYNCHRONOUS = 2     #   samples go to the callback, espeak_Synth returns when done (used)
espeakINITIALIZE_DONT_EXIT = 0x8000   # espeak_Initialize options: don't exit() on a data error
EE_OK, EE_INTERNAL_ERROR, EE_BUFFER_FULL, EE_NOT_FOUND = 0, -1, 1, 2   # espeak_ERROR
POS_CHARACTER = 1                # espeak_POSITION_TYPE: `position` counts characters
espeakCHARS_UTF8 = 1             # espeak_Synth flags: the text is UTF-8
# espeak_PARAMETER (espeak_SetParameter(param, value, relative=0)):
espeakRATE = 1                   # words per minute, 80..450 (default 175)
espeakVOLUME = 2                 # 0..200, 100 = normal
espeakPITCH = 3                  # base pitch 0..100 (default 50)
espeakRANGE = 4                  # pitch range 0..100 (default 50)
espeakWORDGAP = 7                # extra pause between words, units of 10 ms

# int t_espeak_callback(short *wav, int numsamples, espeak_EVENT *events): return 0 to go on.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Engine:
    """The process-wide espeak-ng instance (the library has global state: one per process)."""

    def __init__(self):
        import espeakng_loader
        self.data_path = Path(espeakng_loader.get_data_path())
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        # espeak_Synth(const void *text, size_t size, unsigned position, espeak_POSITION_TYPE,
        #              unsigned end_position, unsigned flags, unsigned *unique_id, void *user_data)
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = None
        libc_name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(libc_name) if libc_name else None
        # buflength 0: the library's default (60 ms per callback)
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(),
                                     espeakINITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate}) with data at {self.data_path}")
        self.engine_rate = int(rate)            # 22050 Hz for the bundled voices
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._on_samples)   # keep a reference: called from C
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib
        self.lock = threading.Lock()
        self.bases = {p.name.lower() for p in (self.data_path / "lang").rglob("*") if p.is_file()}
        self.variants = {p.name for p in (self.data_path / "voices" / "!v").iterdir() if p.is_file()}

    def _on_samples(self, wav, numsamples, events):
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0

    def check_voice(self, voice: str) -> None:
        base, _, variant = voice.partition("+")
        if base.lower() not in self.bases or (variant and variant not in self.variants):
            raise ValueError(f"unknown espeak-ng voice {voice!r}: base must be one of the files under "
                             f"espeak-ng-data/lang (e.g. 'en-us'), variant one of voices/!v (e.g. 'm3')")

    def speak(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        """int16 samples at ``engine_rate``."""
        self.check_voice(voice)
        for name, value, lo, hi in (("rate", rate, 80, 450), ("pitch", pitch, 0, 100),
                                    ("pitch_range", pitch_range, 0, 100)):
            if not lo <= int(value) <= hi:
                raise ValueError(f"{name}={value} is outside [{lo}, {hi}]")
        data = text.encode("utf-8")
        with self.lock:
            err = self.lib.espeak_SetVoiceByName(voice.encode("utf-8"))
            if err != EE_OK:
                raise ValueError(f"espeak-ng could not set voice {voice!r} (espeak_ERROR {err})")
            for param, value in ((espeakRATE, rate), (espeakPITCH, pitch), (espeakRANGE, pitch_range),
                                 (espeakVOLUME, 100), (espeakWORDGAP, 0)):
                self.lib.espeak_SetParameter(param, int(value), 0)
            if self._set_seed is not None:
                self._set_seed(0)
            if self._libc is not None:
                self._libc.srand(0)
            self._chunks = []
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, espeakCHARS_UTF8, None, None)
            sync = self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if err != EE_OK or sync != EE_OK:
            raise RuntimeError(f"espeak_Synth failed for {text!r} with {voice!r} (espeak_ERROR {err}, {sync})")
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


def engine_sample_rate() -> int:
    """The rate espeak-ng synthesises at (returned by espeak_Initialize)."""
    return _engine().engine_rate


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Deterministic polyphase resampling (scipy.signal.resample_poly, Kaiser-windowed FIR)."""
    if src == dst:
        return x.astype(np.float64)
    from scipy.signal import resample_poly
    g = math.gcd(src, dst)
    return resample_poly(x.astype(np.float64), dst // g, src // g)


def synthesize(text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50) -> np.ndarray:
    """Speak ``text`` with espeak-ng: float32 mono at 16 kHz, in [-1, 1] (raw level, silences kept).

    ``voice`` is an espeak-ng voice name, e.g. ``"en-us+m3"`` (ValueError if unknown); ``rate`` in words
    per minute (80..450), ``pitch`` and ``pitch_range`` 0..100.
    """
    eng = _engine()
    pcm = eng.speak(text, voice, rate, pitch, pitch_range)
    y = _resample(pcm.astype(np.float64) / 32768.0, eng.engine_rate, SAMPLE_RATE)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def trim_silence(x: np.ndarray, rel_threshold: float = 0.02, margin: int = 160) -> np.ndarray:
    """Cut leading/trailing samples below ``rel_threshold`` x peak, keeping ``margin`` samples (10 ms)."""
    if x.size == 0:
        return x
    loud = np.nonzero(np.abs(x) > rel_threshold * float(np.abs(x).max()))[0]
    if loud.size == 0:
        return x[:0]
    return x[max(0, loud[0] - margin): loud[-1] + 1 + margin]


def _place(word_audio: np.ndarray, offset: int, noise_level: float, gain: float, rng_seed,
           length: int = CLIP_SAMPLES) -> np.ndarray:
    """Peak-normalise the (trimmed) word, scale by ``gain``, put it at sample ``offset`` of a zero clip
    of ``length`` samples (cropping what falls outside), add N(0, noise_level^2) noise from
    ``np.random.default_rng(rng_seed)``, clip to [-1, 1]."""
    w = word_audio.astype(np.float64)
    peak = float(np.abs(w).max()) if w.size else 0.0
    if peak > 0:
        w = w / peak
    clip = np.zeros(length, np.float64)
    offset = int(offset)
    lo, hi = max(0, offset), min(length, offset + w.size)
    if hi > lo:
        clip[lo:hi] = gain * w[lo - offset: hi - offset]
    if noise_level > 0:
        clip += noise_level * np.random.default_rng(rng_seed).standard_normal(length)
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def make_clip(word: str, voice: str, rate: int, pitch: int, offset: int, noise_level: float, gain: float,
              rng_seed: int) -> np.ndarray:
    """A 1-second 16 kHz float32 clip: ``word`` spoken by ``voice`` (silence trimmed, peak-normalised,
    times ``gain``) starting at sample ``offset`` (negative or large offsets crop the word), plus
    Gaussian noise of standard deviation ``noise_level`` drawn from ``default_rng(rng_seed)``."""
    return _place(trim_silence(synthesize(word, voice, rate, pitch)), offset, noise_level, gain, rng_seed)


# --------------------------------------------------------------------------------------------
# Data set generation and caching.
# --------------------------------------------------------------------------------------------
RATE_RANGE = (130, 220)          # words per minute, uniform integer
PITCH_RANGE = (30, 70)           # espeak pitch, uniform integer
GAIN_RANGE = (0.3, 0.9)          # peak amplitude of the word, uniform
NOISE_RANGE = (1e-4, 2e-2)       # noise standard deviation, log-uniform
MANIFEST = "manifest.json"
MANIFEST_CSV = "manifest.csv"
FIELDS = ["path", "word", "voice", "split", "rate", "pitch", "offset", "noise", "gain", "noise_seed"]
DIGIT_FIELDS = ["path", "text", "voice", "split", "rate", "pitch", "offset", "noise", "gain", "noise_seed"]
SILENCE_RANGE = (800, 4800)      # samples of silence before and after a digit string (50-300 ms)


def write_pcm16(path: Path, clip: np.ndarray) -> None:
    """A float32 clip in [-1, 1] -> a 16 kHz mono PCM_16 wav file at ``path``, byte for byte the file
    that ``soundfile.write(path, clip, 16000, subtype="PCM_16")`` (libsndfile 1.2) writes: each sample
    is the top 16 bits of rint(x * 2**31) clipped to int32 (tests/test_speech_synth.py compares them)."""
    wide = np.rint(np.asarray(clip, dtype=np.float32).astype(np.float64) * 2.0 ** 31)  # exact: a float32 times 2**31
    samples = (np.clip(wide, -2.0 ** 31, 2.0 ** 31 - 1).astype(np.int64) >> 16).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(samples.tobytes())


def read_pcm16(path: Path) -> tuple[np.ndarray, int]:
    """A PCM_16 wav file -> (int16 samples, (n,) or (n, channels), its sample rate). ``wave.Error``,
    ``EOFError`` or ``ValueError`` for a file that is not one (soundfile's ``read(dtype="int16")`` on
    the files :func:`write_pcm16` writes; divided by 32768, its float32 ``read``)."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise ValueError(f"{8 * f.getsampwidth()}-bit samples, not 16-bit PCM")
        channels, rate = f.getnchannels(), f.getframerate()
        data = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    return (data if channels == 1 else data.reshape(-1, channels)), rate


def _item_rng(seed: int, word: str, voice: str, k: int) -> np.random.Generator:
    """Per-item parameters depend only on (seed, word, voice, k), not on the other words or voices."""
    return np.random.default_rng([seed, zlib.crc32(word.encode()), zlib.crc32(voice.encode()), k])


class _Generator(ABC):
    """The items of one data set, made in a fixed order: each a manifest row and its clip.

    A subclass says what an item is (``items``, synthesising in its fixed order), how many a
    configuration makes (``count``), the manifest's columns (``fields``) and what a valid wav of its
    own looks like (``wav_ok``). ``kind`` is the configuration's ``"kind"`` (None: the key is absent).
    """

    kind: ClassVar[str | None] = None
    fields: ClassVar[list[str]]

    def __init__(self, config: dict) -> None:
        self.config = config

    @abstractmethod
    def count(self) -> int:
        """How many items the configuration makes."""

    @abstractmethod
    def items(self) -> Iterator[tuple[dict, np.ndarray]]:
        """(manifest row, float32 clip) of each item, synthesised in the fixed order."""

    @abstractmethod
    def wav_ok(self, data: np.ndarray) -> bool:
        """Whether int16 samples read back from one of its wav files have the right shape."""

    def write(self, tmp: Path) -> list[dict]:
        """Synthesise every item in its fixed order, write wavs + manifests into ``tmp``."""
        rows = []
        for row, clip in self.items():
            (tmp / row["path"]).parent.mkdir(parents=True, exist_ok=True)
            write_pcm16(tmp / row["path"], clip)
            rows.append(row)
        with open(tmp / MANIFEST_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(rows)
        # manifest.json last: its presence marks a finished generation
        with open(tmp / MANIFEST, "w") as f:
            json.dump({"config": self.config, "items": rows}, f, indent=1)
        return rows


class KeywordClips(_Generator):
    """One-second clips of single words (:func:`generate_dataset`)."""

    fields = FIELDS

    def count(self) -> int:
        config = self.config
        return len(config["words"]) * len(config["voices"]) * config["n_per_word_voice"]

    def wav_ok(self, data: np.ndarray) -> bool:
        return data.shape == (CLIP_SAMPLES,)

    def items(self) -> Iterator[tuple[dict, np.ndarray]]:
        """(row, clip) of each keyword clip, in the fixed order word -> voice -> k."""
        config = self.config
        for wi, word in enumerate(config["words"]):
            for vi, voice in enumerate(config["voices"]):
                for k in range(config["n_per_word_voice"]):
                    rng = _item_rng(config["seed"], word, voice, k)
                    rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
                    pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
                    gain = float(rng.uniform(*GAIN_RANGE))
                    noise = float(np.exp(rng.uniform(np.log(NOISE_RANGE[0]), np.log(NOISE_RANGE[1]))))
                    where = float(rng.uniform())
                    noise_seed = int(rng.integers(2 ** 31))
                    audio = trim_silence(synthesize(word, voice, rate, pitch))
                    offset = int(where * max(0, CLIP_SAMPLES - audio.size))
                    clip = _place(audio, offset, noise, gain, noise_seed)
                    split = voice_split(voice) if config["voices_split"] else "all"
                    yield ({"path": f"{split}/{word}/{word}_{vi:03d}_{k:03d}.wav", "word": word, "voice": voice,
                            "split": split, "rate": rate, "pitch": pitch, "offset": offset,
                            "noise": round(noise, 8), "gain": round(gain, 8), "noise_seed": noise_seed}, clip)


class DigitStrings(_Generator):
    """Spoken strings of digits in clips of their own length (:func:`generate_digit_strings`)."""

    kind = "digit_strings"
    fields = DIGIT_FIELDS

    def count(self) -> int:
        return len(self.config["voices"]) * self.config["n_per_voice"]

    def wav_ok(self, data: np.ndarray) -> bool:
        return data.ndim == 1 and data.size > 0

    def items(self) -> Iterator[tuple[dict, np.ndarray]]:
        """(row, clip) of each digit string, in the fixed order voice -> k. The string's length (1 to
        ``max_digits``), digits, rate, pitch, gain, noise and the silence around it come from
        ``default_rng([seed, crc32("digits"), crc32(voice), k])``."""
        config = self.config
        for vi, voice in enumerate(config["voices"]):
            for k in range(config["n_per_voice"]):
                rng = _item_rng(config["seed"], "digits", voice, k)
                n = int(rng.integers(1, config["max_digits"] + 1))
                text = " ".join(DIGIT_WORDS[d] for d in rng.integers(0, 10, n))
                rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
                pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
                gain = float(rng.uniform(*GAIN_RANGE))
                noise = float(np.exp(rng.uniform(np.log(NOISE_RANGE[0]), np.log(NOISE_RANGE[1]))))
                lead, tail = (int(v) for v in rng.integers(SILENCE_RANGE[0], SILENCE_RANGE[1] + 1, 2))
                noise_seed = int(rng.integers(2 ** 31))
                audio = trim_silence(synthesize(text, voice, rate, pitch))
                clip = _place(audio, lead, noise, gain, noise_seed, length=lead + audio.size + tail)
                split = voice_split(voice)
                row = {"path": f"{split}/{vi:03d}_{k:04d}.wav", "text": text, "voice": voice, "split": split,
                       "rate": rate, "pitch": pitch, "offset": lead, "noise": round(noise, 8),
                       "gain": round(gain, 8), "noise_seed": noise_seed}
                yield row, clip


GENERATORS: dict[str | None, type[_Generator]] = {cls.kind: cls for cls in (KeywordClips, DigitStrings)}


def _generator(config: dict) -> _Generator:
    """The generator of ``config``'s items, chosen by its ``"kind"``."""
    return GENERATORS[config.get("kind")](config)


def _generate_into(tmp: Path, config: dict) -> list[dict]:
    """Synthesise every item in its fixed order, write wavs + manifests into ``tmp``."""
    return _generator(config).write(tmp)


def _cache_problem(out_dir: Path, config: dict) -> str | None:
    """Why ``out_dir`` is not a complete, valid cache for ``config`` (None when it is)."""
    path = out_dir / MANIFEST
    if not out_dir.exists():
        return "missing"
    if not path.exists():
        return "manifest missing"
    try:
        with open(path) as f:
            manifest = json.load(f)
        rows = manifest["items"]
    except (OSError, ValueError, KeyError) as e:
        return f"manifest unreadable ({e})"
    if manifest.get("config") != config:
        return "manifest written for another configuration"
    generator = _generator(config)
    expected = generator.count()
    on_disk = sum(1 for _ in out_dir.rglob("*.wav"))
    if len(rows) != expected or on_disk != expected:
        return f"{on_disk} wav files and {len(rows)} manifest rows, expected {expected}"
    for row in rows:
        try:
            data, sr = read_pcm16(out_dir / row["path"])
        except Exception as e:  # noqa: BLE001 - any decoding error means a corrupt file
            return f"unreadable wav {row['path']} ({type(e).__name__}: {e})"
        if sr != SAMPLE_RATE or not generator.wav_ok(data):
            return f"bad wav {row['path']} (rate {sr}, shape {data.shape})"
    return None



def generate_dataset(words: list[str], out_dir: Path, n_per_word_voice: int = 1, seed: int = 0,
                     voices: list[str] | None = None, in_subprocess: bool = True) -> list[dict]:
    """Make (or reuse) ``n_per_word_voice`` clips per (word, voice) under ``out_dir``; return the manifest rows.

    Layout: ``out_dir/<split>/<word>/<word>_<voice index>_<k>.wav`` (16 kHz PCM_16, 1 s), ``manifest.json``
    (``{"config": ..., "items": [rows]}``) and ``manifest.csv``; a row holds path (relative to ``out_dir``),
    word, voice, split ("train"/"test" from :func:`voice_split`), rate, pitch, offset (samples), noise
    (std), gain and noise_seed.  ``voices`` defaults to :data:`VOICES`; every voice must be in it.

    Per-item parameters come from ``default_rng([seed, crc32(word), crc32(voice), k])``.  Items are
    synthesised in the fixed order word -> voice -> k in a fresh worker process (``in_subprocess=True``;
    with False, in this process, which is deterministic only if this process has not used espeak-ng
    before).  The result is written to a temporary sibling folder and renamed into place.  An existing
    ``out_dir`` is reused when its manifest matches the request and every wav is readable; otherwise it
    is regenerated with a warning.
    """
    out_dir = Path(out_dir)
    voices = list(VOICES if voices is None else voices)
    for v in voices:
        voice_split(v)   # ValueError for voices outside the documented split
    if not words or not voices or n_per_word_voice < 1:
        raise ValueError("need at least one word, one voice and n_per_word_voice >= 1")
    config = {"version": FORMAT_VERSION, "words": list(words), "voices": voices,
              "n_per_word_voice": int(n_per_word_voice), "seed": int(seed), "sample_rate": SAMPLE_RATE,
              "voices_split": True}
    return _materialize(out_dir, config, in_subprocess)


def generate_digit_strings(out_dir: Path, n_per_voice: int = 40, seed: int = 0, voices: list[str] | None = None,
                           max_digits: int = 7, in_subprocess: bool = True) -> list[dict]:
    """Make (or reuse) ``n_per_voice`` spoken digit strings per voice under ``out_dir``; return the rows.

    Each item is 1 to ``max_digits`` digit words ("three one four") spoken in one utterance, trimmed,
    peak-normalised times a random gain, with 50-300 ms of silence before and after and Gaussian noise,
    in a 16 kHz PCM_16 wav of its own length: ``out_dir/<split>/<voice index>_<k>.wav``. A manifest row
    holds path, text, voice, split, rate, pitch, offset (the leading silence), noise, gain and
    noise_seed. Determinism, caching and regeneration are those of :func:`generate_dataset`.
    """
    out_dir = Path(out_dir)
    voices = list(VOICES if voices is None else voices)
    for v in voices:
        voice_split(v)
    if not voices or n_per_voice < 1 or not 1 <= max_digits <= 20:
        raise ValueError("need at least one voice, n_per_voice >= 1 and 1 <= max_digits <= 20")
    config = {"version": FORMAT_VERSION, "kind": DigitStrings.kind, "voices": voices, "n_per_voice": int(n_per_voice),
              "max_digits": int(max_digits), "seed": int(seed), "sample_rate": SAMPLE_RATE}
    return _materialize(out_dir, config, in_subprocess)


def _materialize(out_dir: Path, config: dict, in_subprocess: bool) -> list[dict]:
    """Reuse ``out_dir`` if it holds ``config``'s data, else generate it into a temporary sibling
    (in a fresh worker process if ``in_subprocess``) and rename that into place."""
    problem = _cache_problem(out_dir, config)
    if problem is None:
        with open(out_dir / MANIFEST) as f:
            return json.load(f)["items"]
    if problem != "missing":
        warnings.warn(f"speech data cache {out_dir} is incomplete or stale ({problem}): regenerating",
                      RuntimeWarning, stacklevel=2)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if in_subprocess:
            cfg_path = tmp / "_config.json"
            cfg_path.write_text(json.dumps(config))
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(tmp)],
                                  capture_output=True, text=True)
            cfg_path.unlink(missing_ok=True)
            if proc.returncode != 0:
                raise RuntimeError(f"speech synthesis worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            with open(tmp / MANIFEST) as f:
                rows = json.load(f)["items"]
        else:
            rows = _generate_into(tmp, config)
        if out_dir.exists():
            trash = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(out_dir, trash)
            os.rename(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


def verify_voices(voices: list[str] | None = None, word: str = "yes") -> dict[str, str]:
    """Try each voice: {voice: problem} for those that fail to set or speak silence (empty when all work)."""
    bad = {}
    for v in VOICES if voices is None else voices:
        try:
            y = synthesize(word, v)
            if float(np.abs(y).max(initial=0.0)) < 0.01:
                bad[v] = "silent"
        except (ValueError, RuntimeError) as e:
            bad[v] = str(e)
    return bad


def _worker_main(tmp: str) -> None:
    config = json.loads((Path(tmp) / "_config.json").read_text())
    _generate_into(Path(tmp), config)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} --worker TMP_DIR  (internal: see generate_dataset)")
