"""The offline espeak-ng speech-command data maker (tasks/speech/synth.py)."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")
pytest.importorskip("soundfile")
pytest.importorskip("scipy")

import soundfile as sf  # noqa: E402

from tasks.speech import synth as ss  # noqa: E402

WORDS = ["yes", "seven", "marvin"]
VOICES = [ss.TRAIN_VOICES[0], ss.TEST_VOICES[-1]]   # one train, one test voice (en+m1, en-gb-scotland+klatt2)
SEED = 7

# Loads the module from its file, so the fresh interpreter neither imports torch nor touches espeak-ng
# before generate_dataset (in_subprocess=False: the synthesis runs in that fresh interpreter itself).
_FRESH = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("speech_synth_fresh", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
m.generate_dataset({words!r}, Path(sys.argv[2]), 1, {seed}, voices={voices!r}, in_subprocess=False)
"""


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _generate(out: Path):
    return ss.generate_dataset(WORDS, out, n_per_word_voice=1, seed=SEED, voices=VOICES)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("speech") / "ref"
    rows = _generate(out)
    return out, rows, _files(out)


def test_synthesized_word_is_16k_float32_and_not_silent():
    y = ss.synthesize("seven", "en-us+m3", rate=175, pitch=50)
    assert y.dtype == np.float32 and y.ndim == 1
    assert 0.2 * ss.SAMPLE_RATE < y.size < 1.5 * ss.SAMPLE_RATE    # about half a second of speech
    assert np.abs(y).max() <= 1.0 and np.abs(y).max() > 0.05
    assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) > 0.01
    assert ss.engine_sample_rate() == 22050


def test_make_clip_is_one_second_with_the_word_at_offset():
    clip = ss.make_clip("go", "en+f2", rate=160, pitch=40, offset=4000, noise_level=0.0, gain=0.5, rng_seed=0)
    assert clip.shape == (ss.CLIP_SAMPLES,) and clip.dtype == np.float32
    assert np.all(clip[:4000] == 0) and np.abs(clip[4000:]).max() == pytest.approx(0.5, rel=1e-3)
    noisy = ss.make_clip("go", "en+f2", 160, 40, offset=20000, noise_level=0.01, gain=0.5, rng_seed=3)
    expected = np.clip(0.01 * np.random.default_rng(3).standard_normal(ss.CLIP_SAMPLES), -1, 1)
    np.testing.assert_allclose(noisy, expected.astype(np.float32))   # word cropped away: noise only
    assert np.abs(noisy).max() <= 1.0


def test_every_word_fits_in_a_second_at_the_slowest_rate():
    for word in ss.SPEECH_COMMANDS_WORDS:
        y = ss.trim_silence(ss.synthesize(word, "en-us+m1", rate=ss.RATE_RANGE[0], pitch=50))
        assert 0.1 * ss.SAMPLE_RATE < y.size < ss.CLIP_SAMPLES, word


def test_words_and_voice_split():
    assert len(ss.SPEECH_COMMANDS_WORDS) == 35 == len(set(ss.SPEECH_COMMANDS_WORDS))
    assert set(ss.TRAIN_VOICES).isdisjoint(ss.TEST_VOICES)
    assert set(ss.TRAIN_BASES).isdisjoint(ss.TEST_BASES)              # no shared accent ...
    assert set(ss.TRAIN_VARIANTS).isdisjoint(ss.TEST_VARIANTS)        # ... and no shared speaker variant
    assert ss.VOICES == ss.TRAIN_VOICES + ss.TEST_VOICES and len(set(ss.VOICES)) == len(ss.VOICES)
    assert {ss.voice_split(v) for v in ss.TRAIN_VOICES} == {"train"}
    assert {ss.voice_split(v) for v in ss.TEST_VOICES} == {"test"}


def test_every_listed_voice_sets_and_speaks():
    assert ss.verify_voices() == {}


@pytest.mark.parametrize("voice", ["en+bogus", "xx-nowhere", "nowhere+m1", ""])
def test_unknown_voice_raises_value_error(voice):
    with pytest.raises(ValueError, match="unknown espeak-ng voice"):
        ss.synthesize("yes", voice)


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="rate"):
        ss.synthesize("yes", "en-us+m1", rate=10)
    with pytest.raises(ValueError, match="neither"):
        ss.generate_dataset(["yes"], tmp_path / "x", voices=["en-us"])      # not in the documented split
    assert not (tmp_path / "x").exists()


def test_dataset_layout_and_manifest(reference):
    out, rows, files = reference
    assert len(rows) == len(WORDS) * len(VOICES)
    assert [(r["word"], r["voice"]) for r in rows] == [(w, v) for w in WORDS for v in VOICES]   # fixed order
    assert {r["split"] for r in rows} == {"train", "test"}
    assert all(r["split"] == ss.voice_split(r["voice"]) for r in rows)
    assert (out / "manifest.json").exists() and (out / "manifest.csv").exists()
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())    # no temp folder left behind
    for r in rows:
        info = sf.info(str(out / r["path"]))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (16000, 16000, 1, "PCM_16")
        x, _ = sf.read(str(out / r["path"]), dtype="float32")
        assert np.abs(x).max() > 0.1


def test_wav_files_are_those_soundfile_writes_and_reads(tmp_path):
    """write_pcm16 (the standard library's wave) writes the bytes soundfile writes, edge cases included
    (exact halves of a step, +-1, values a hair below a step); read_pcm16 / 32768 is soundfile's read."""
    steps = np.arange(-32768, 32768, dtype=np.float64)
    tricky = np.concatenate([(steps + d) / 32768 for d in (0.0, 0.5, 1e-3, -1e-3, 1 - 1e-5, 0.5 + 2 ** -17)])
    noise = np.random.default_rng(0).normal(0, 0.3, 200_000)
    clip = np.clip(np.concatenate([tricky, noise, [1.0, -1.0, 1e-30]]), -1, 1).astype(np.float32)
    ss.write_pcm16(tmp_path / "ours.wav", clip)
    sf.write(str(tmp_path / "soundfile.wav"), clip, ss.SAMPLE_RATE, subtype="PCM_16")
    assert (tmp_path / "ours.wav").read_bytes() == (tmp_path / "soundfile.wav").read_bytes()
    samples, rate = ss.read_pcm16(tmp_path / "ours.wav")
    expected, expected_rate = sf.read(str(tmp_path / "ours.wav"), dtype="float32")
    assert rate == expected_rate == ss.SAMPLE_RATE and samples.dtype == np.int16
    assert np.array_equal(samples.astype(np.float32) / np.float32(32768), expected)


def test_dataset_bit_identical_across_fresh_processes(reference, tmp_path):
    _, _, ref_files = reference      # made by generate_dataset's own worker process
    code = _FRESH.format(words=WORDS, voices=VOICES, seed=SEED)
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(Path(ss.__file__).resolve()), str(tmp_path / name)],
                       check=True, timeout=120)
        assert _files(tmp_path / name) == ref_files, name


def test_cache_is_reused_and_regenerated_when_damaged(reference, tmp_path):
    _, ref_rows, ref_files = reference
    out = tmp_path / "cache"
    _generate(out)
    wav = out / ref_rows[1]["path"]
    mtime = wav.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # a valid cache: no warning, no rewrite
        assert _generate(out) == ref_rows
    assert wav.stat().st_mtime_ns == mtime

    damages = {
        "deleted wav": lambda: wav.unlink(),
        "corrupt wav": lambda: wav.write_bytes(b"RIFF\x00\x00garbage" * 3),
        "truncated wav": lambda: wav.write_bytes(wav.read_bytes()[:2000]),
        "manifest missing": lambda: (out / "manifest.json").unlink(),
        "extra wav": lambda: (out / "train" / "stray.wav").write_bytes(wav.read_bytes()),
    }
    for what, damage in damages.items():
        damage()
        with pytest.warns(RuntimeWarning, match="regenerating"):
            rows = _generate(out)
        assert rows == ref_rows, what
        assert _files(out) == ref_files, what
    # another configuration does not reuse the cache either
    with pytest.warns(RuntimeWarning, match="another configuration"):
        rows = ss.generate_dataset(WORDS[:1], out, n_per_word_voice=1, seed=SEED, voices=VOICES)
    assert len(rows) == len(VOICES) and len(list(out.rglob("*.wav"))) == len(VOICES)


# ------------------------------------------------------------------------ spoken digit strings

_FRESH_DIGITS = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("speech_synth_fresh", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
m.generate_digit_strings(Path(sys.argv[2]), 3, {seed}, voices={voices!r}, in_subprocess=False)
"""


@pytest.fixture(scope="module")
def digits_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "ref"
    rows = ss.generate_digit_strings(out, n_per_voice=3, seed=SEED, voices=VOICES)
    return out, rows, _files(out)


def test_digit_strings_layout_texts_and_lengths(digits_reference):
    out, rows, _ = digits_reference
    assert [r["voice"] for r in rows] == [v for v in VOICES for _ in range(3)]    # fixed order voice -> k
    assert all(r["split"] == ss.voice_split(r["voice"]) for r in rows)
    for r in rows:
        words = r["text"].split()
        assert 1 <= len(words) <= 7 and set(words) <= set(ss.DIGIT_WORDS)
        x, sr = sf.read(str(out / r["path"]), dtype="float32")
        lead = r["offset"]
        assert sr == 16000 and x.ndim == 1
        assert ss.SILENCE_RANGE[0] <= lead <= ss.SILENCE_RANGE[1]
        # silence (noise only) before the speech, then speech at the drawn gain
        assert np.abs(x[:lead]).max() < 0.1 < np.abs(x[lead:]).max()
        assert x.size > lead + 0.2 * 16000 * len(words)                      # at least 0.2 s per digit
    longer = max(rows, key=lambda r: len(r["text"].split()))
    shorter = min(rows, key=lambda r: len(r["text"].split()))
    assert sf.info(str(out / longer["path"])).frames > sf.info(str(out / shorter["path"])).frames


def test_digit_strings_bit_identical_in_a_fresh_process_and_cached(digits_reference, tmp_path):
    out, rows, ref_files = digits_reference
    code = _FRESH_DIGITS.format(voices=VOICES, seed=SEED)
    subprocess.run([sys.executable, "-c", code, str(Path(ss.__file__).resolve()), str(tmp_path / "a")],
                   check=True, timeout=120)
    assert _files(tmp_path / "a") == ref_files
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ss.generate_digit_strings(out, n_per_voice=3, seed=SEED, voices=VOICES) == rows
    (out / rows[0]["path"]).write_bytes(b"RIFF junk")
    with pytest.warns(RuntimeWarning, match="regenerating"):
        assert ss.generate_digit_strings(out, n_per_voice=3, seed=SEED, voices=VOICES) == rows
    assert _files(out) == ref_files
