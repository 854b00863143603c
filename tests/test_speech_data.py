"""Tests of the real-recording speech tasks in tasks/speech/datasets.py: ``speech_commands`` and ``audio_folder``.

Speech Commands v2 (Warden 2018) is tested on a tiny tree that the tests write in the real layout
(``SpeechCommands/speech_commands_v0.02/<word>/<speaker>_nohash_<n>.wav``, ``validation_list.txt``,
``testing_list.txt``, ``_background_noise_/*.wav``), 16 kHz PCM_16, read through torchaudio's
``SPEECHCOMMANDS``. Every clip is a sine tone whose frequency says its word and whose amplitude makes
it unique, so each example a task returns can be traced back to its file and its label checked
against its sound. Nothing is downloaded: torchaudio's downloader is replaced by one that fails.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchaudio.datasets.speechcommands as tv_speechcommands
from torchaudio.functional import resample

from harness.cli import main
from tasks import DatasetError, DatasetNotFoundError, create_task
from tasks.speech import AudioClassificationTask, log_mel_features, normalise, read_wav
from tasks.speech.datasets import KEYWORDS_12, NOISE_REGIONS, silence_windows
from tasks.speech.synth import SPEECH_COMMANDS_WORDS

sf = pytest.importorskip("soundfile")  # writes the test's wav files; the tasks read them with it

SR = 16000
WORDS = sorted(SPEECH_COMMANDS_WORDS)  # 35
TRAIN_SPEAKERS = ["0a1b2c3d", "1f2e3d4c", "2b3c4d5e", "3c4d5e6f"]
VAL_SPEAKERS = ["4d5e6f70", "5e6f7081"]
TEST_SPEAKERS = ["6f708192", "708192a3"]
LENGTHS = [16000, 9000, 12345, 16000, 17000]  # samples: some short (padded), one long (cropped)
NOISE_SECONDS = {"running_tap.wav": 12, "white_noise.wav": 15}


def tone_hz(word: str) -> int:
    return 200 + 40 * WORDS.index(word)  # 200 .. 1560 Hz


def _tone(hz: float, amp: float, n: int, rate: int = SR) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.float32)


def _peak_hz(wave: torch.Tensor) -> float:
    """The frequency of the strongest bin of a (zero-padded) waveform's spectrum."""
    return torch.fft.rfft(wave.double()).abs().argmax().item() * SR / len(wave)


def _fit(wave: np.ndarray, n: int = SR) -> np.ndarray:
    return np.pad(wave, (0, max(0, n - len(wave))))[:n]


def _key(wave) -> bytes:
    return np.asarray(wave, dtype=np.float32).tobytes()


# ----------------------------------------------------------------------------------------------
# a tiny Speech Commands v2 tree
# ----------------------------------------------------------------------------------------------


def _write_speech_commands(root: Path) -> dict:
    """Write the tree; return {"files": {relpath: dict(split, word, speaker, length)}, "lists": {...},
    "noise": {file name: float32 samples as read back}}."""
    base = root / "SpeechCommands" / "speech_commands_v0.02"
    files, k = {}, 0
    for i, word in enumerate(WORDS):
        (base / word).mkdir(parents=True)
        clips = [(TRAIN_SPEAKERS[i % 4], 0, "train"), (TRAIN_SPEAKERS[(i + 1) % 4], 0, "train"),
                 (VAL_SPEAKERS[i % 2], 0, "val"), (TEST_SPEAKERS[i % 2], 0, "test")]
        if i % 5 == 0:
            clips.append((TRAIN_SPEAKERS[i % 4], 1, "train"))  # a speaker's second take stays with the speaker
        if i % 7 == 0:
            clips.append((TEST_SPEAKERS[i % 2], 1, "test"))
        for speaker, take, split in clips:
            rel = f"{word}/{speaker}_nohash_{take}.wav"
            n = LENGTHS[k % len(LENGTHS)]
            sf.write(base / rel, _tone(tone_hz(word), 0.05 + 0.004 * k, n), SR, subtype="PCM_16")
            files[rel] = {"split": split, "word": word, "speaker": speaker, "length": n}
            k += 1
    lists = {split: [rel for rel, f in files.items() if f["split"] == split] for split in ("val", "test")}
    lists["val"] = lists["val"][::-1]  # the lists' own order, not a sorted one, is what must come back
    (base / "validation_list.txt").write_text("".join(f"{r}\n" for r in lists["val"]))
    (base / "testing_list.txt").write_text("".join(f"{r}\n" for r in lists["test"]))
    noise_dir = base / "_background_noise_"
    noise_dir.mkdir()
    (noise_dir / "README.md").write_text("background noise recordings\n")
    rng = np.random.default_rng(0)
    noise = {}
    for name, seconds in NOISE_SECONDS.items():
        sf.write(noise_dir / name, np.clip(rng.normal(0, 0.2, seconds * SR), -1, 1), SR, subtype="PCM_16")
        noise[name] = sf.read(noise_dir / name, dtype="float32")[0]
    return {"files": files, "lists": lists, "noise": noise, "base": base}


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_commands")
    tree = _write_speech_commands(root)
    tree["root"] = root
    # what each written clip becomes once padded/cropped to 1 s -> its relative path
    tree["by_wave"] = {_key(_fit(sf.read(tree["base"] / rel, dtype="float32")[0])): rel for rel in tree["files"]}
    assert len(tree["by_wave"]) == len(tree["files"]), "fixture clips are not distinct"
    return tree


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """torchaudio's downloader, replaced: every call is recorded and fails."""
    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise ConnectionRefusedError(f"test: no download of {url}")

    monkeypatch.setattr(tv_speechcommands, "download_url_to_file", refuse)
    return calls


def _trace(commands: dict, waves: torch.Tensor) -> list[str]:
    found = [commands["by_wave"].get(_key(w.numpy())) for w in waves]
    assert None not in found, "a task clip equals none of the written clips"
    return found


def test_speech_commands_split_follows_the_official_lists(commands, no_download):
    task = create_task("speech_commands", data_dir=commands["root"])
    data = task._load()
    assert task.classes == WORDS
    files = commands["files"]
    traced = {}
    for split in ("train", "val", "test"):
        waves, labels = data[split]
        assert waves.dtype == torch.float32 and waves.shape == (len(labels), SR) and labels.dtype == torch.int64
        traced[split] = _trace(commands, waves)
        assert len(set(traced[split])) == len(traced[split])
        # labels: the folder's word, and the word's tone is what the clip sounds like
        assert [task.classes[i] for i in labels.tolist()] == [files[r]["word"] for r in traced[split]]
        for wave, label in zip(waves, labels.tolist()):
            assert abs(_peak_hz(wave) - tone_hz(task.classes[label])) < 10
    # validation and test are the lists, in their order; training is every other clip
    assert traced["val"] == commands["lists"]["val"]
    assert traced["test"] == commands["lists"]["test"]
    assert sorted(traced["train"]) == sorted(r for r, f in files.items() if f["split"] == "train")
    assert sum(map(len, traced.values())) == len(files) == len(set().union(*map(set, traced.values())))
    speakers = {s: {files[r]["speaker"] for r in traced[s]} for s in traced}
    assert speakers == {"train": set(TRAIN_SPEAKERS), "val": set(VAL_SPEAKERS), "test": set(TEST_SPEAKERS)}
    assert not no_download


def test_speech_commands_pads_short_clips_and_crops_long_ones(commands):
    task = create_task("speech_commands", data_dir=commands["root"])
    data = task._load()
    seen = set()
    for split, (waves, _) in data.items():
        for wave, rel in zip(waves, _trace(commands, waves)):
            written = sf.read(commands["base"] / rel, dtype="float32")[0]
            n = len(written)
            seen.add(n)
            if n < SR:  # right-padded with zeros
                assert torch.equal(wave[:n], torch.from_numpy(written)) and not wave[n:].any()
            else:  # the first second kept
                assert torch.equal(wave, torch.from_numpy(written[:SR]))
    assert seen == set(LENGTHS)


def test_speech_commands_12_labels_unknown_and_silence(commands):
    task = create_task("speech_commands", data_dir=commands["root"], labels="12")  # CLI text is accepted
    data = task._load()
    assert task.classes == ["_silence_", "_unknown_", *KEYWORDS_12]
    files, noise = commands["files"], commands["noise"]
    lengths = {name: len(x) for name, x in noise.items()}
    for split, (waves, labels) in data.items():
        names = [task.classes[i] for i in labels.tolist()]
        silent = [i for i, name in enumerate(names) if name == "_silence_"]
        words = [i for i, name in enumerate(names) if name != "_silence_"]
        for i, rel in zip(words, _trace(commands, waves[words])):
            word = files[rel]["word"]
            assert names[i] == (word if word in KEYWORDS_12 else "_unknown_")
        assert sum(n == "_unknown_" for n in names) == sum(f["split"] == split and f["word"] not in KEYWORDS_12
                                                          for f in files.values())
        # about as many silence clips as a keyword has clips in this split
        per_keyword = [sum(f["split"] == split and f["word"] == w for f in files.values()) for w in KEYWORDS_12]
        assert len(silent) == max(1, round(np.mean(per_keyword)))
        # each is one second of a background-noise recording, cut from this split's own region of it
        lo_frac, hi_frac = NOISE_REGIONS[split]
        for i in silent:
            wave = waves[i].numpy()
            hits = [(name, s) for name, x in noise.items()
                    for s in np.flatnonzero((x[:-SR + 1] == wave[0]) & (x[1:len(x) - SR + 2] == wave[1]))
                    if np.array_equal(x[s:s + SR], wave)]
            assert hits, "a _silence_ clip is not a window of a background-noise recording"
            name, start = hits[0]
            assert int(lo_frac * lengths[name]) <= start and start + SR <= int(hi_frac * lengths[name])
            assert np.abs(wave).max() > 0.1  # noise, not zeros
    assert len({data["train"][0][i].numpy().tobytes() for i in np.flatnonzero(data["train"][1] == 0)}) > 1

    again = create_task("speech_commands", data_dir=commands["root"], labels=12)._load()
    for split in data:  # deterministic
        assert torch.equal(again[split][0], data[split][0]) and torch.equal(again[split][1], data[split][1])

    task.setup()
    assert task.spec == {"kind": "classification", "modality": "audio", "input_shape": (101, 40), "num_classes": 12}


def test_silence_windows_stay_inside_their_region():
    for count in (1, 2, 5, 40):
        windows = silence_windows([50_000, 70_000, 10_000], (0.8, 0.9), count, size=3_000)
        assert len(windows) == count
        for i, start in windows:
            n = [50_000, 70_000, 10_000][i]
            assert i != 2  # its region (1,000 samples) holds no window
            assert int(0.8 * n) <= start and start + 3_000 <= int(0.9 * n)
    assert silence_windows([1000], (0.0, 1.0), 3, size=2000) == []


def test_speech_commands_setup_streams_in_chunks_to_the_in_memory_features(commands):
    task = create_task("speech_commands", data_dir=commands["root"])
    task.chunk_size = 16  # several chunks per split
    task.setup()
    assert task.spec == {"kind": "classification", "modality": "audio", "input_shape": (101, 40), "num_classes": 35}
    reference = create_task("speech_commands", data_dir=commands["root"])
    waves = reference._load()  # everything in memory at once, featurised in one go
    features = {s: log_mel_features(w, 40)[0] for s, (w, _) in waves.items()}
    normalise(features)
    for split in ("train", "val", "test"):
        assert task.features[split].shape == features[split].shape
        torch.testing.assert_close(task.features[split], features[split], atol=2e-4, rtol=1e-4)
        assert torch.equal(task.labels[split], waves[split][1])
    train = task.features["train"].reshape(-1, 40)
    assert train.mean(0).abs().max() < 1e-4 and (train.std(0) - 1).abs().max() < 1e-4
    x, y = next(iter(task.train_batches(8, torch.Generator().manual_seed(0))))
    assert x.shape == (8, 101, 40) and y.shape == (8,)


def test_normalise_in_chunks_matches_the_direct_computation_and_keeps_padding_zero():
    g = torch.Generator().manual_seed(0)
    features = {s: torch.randn(n, 7, 5, generator=g, dtype=torch.float64).float() * 3 + 2
                for s, n in (("train", 30), ("val", 4), ("test", 6))}
    lengths = {s: torch.randint(1, 8, (len(x),), generator=g) for s, x in features.items()}
    real = {s: (torch.arange(7)[None, :] < n[:, None])[..., None] for s, n in lengths.items()}
    frames = features["train"][real["train"].expand(-1, -1, 5)].reshape(-1, 5).double()
    mean, std = frames.mean(0), frames.std(0)
    expected = {s: (((x.double() - mean) / std) * real[s]).float() for s, x in features.items()}
    normalise(features, lengths, chunk=4)
    for s in features:
        torch.testing.assert_close(features[s], expected[s], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["no data dir", "empty data dir", "other version only"])
def test_speech_commands_missing_without_download_is_not_found(tmp_path, no_download, layout):
    root = tmp_path / "data"
    if layout != "no data dir":
        root.mkdir()
    if layout == "other version only":
        (root / "SpeechCommands" / "speech_commands_v0.01" / "yes").mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DatasetNotFoundError) as info:
        create_task("speech_commands", data_dir=root).setup()
    message = str(info.value)
    assert "--download" in message and str(Path("SpeechCommands") / "speech_commands_v0.02") in message
    assert "\n" not in message
    assert not no_download and sorted(tmp_path.rglob("*")) == before  # nothing fetched, nothing created


def test_speech_commands_download_fetches_v2_only_when_missing(tmp_path, commands, no_download):
    with pytest.raises(ConnectionRefusedError):
        create_task("speech_commands", data_dir=tmp_path / "fresh", download=True).setup()
    assert no_download == ["http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"]
    task = create_task("speech_commands", data_dir=commands["root"], download=True)
    task.setup()  # already there: nothing fetched
    assert len(no_download) == 1 and task.spec["num_classes"] == 35


@pytest.mark.parametrize("damage, labels, match", [
    ("testing_list.txt", 35, "testing_list.txt is missing"),
    ("word folder", 35, "no training clips of .*zero"),
    ("extra word", 35, "does not have: hello"),
    ("noise", 12, "_background_noise_"),
])
def test_speech_commands_damaged_tree_is_a_dataset_error(tmp_path, damage, labels, match):
    tree = _write_speech_commands(tmp_path)
    base = tree["base"]
    if damage == "testing_list.txt":
        (base / "testing_list.txt").unlink()
    elif damage == "word folder":
        for wav in (base / "zero").iterdir():
            wav.unlink()
    elif damage == "extra word":
        (base / "hello").mkdir()
        sf.write(base / "hello" / "0a1b2c3d_nohash_0.wav", _tone(100, 0.1, SR), SR, subtype="PCM_16")
    else:
        for wav in (base / "_background_noise_").glob("*.wav"):
            wav.unlink()
        create_task("speech_commands", data_dir=tmp_path, labels=35).setup()  # only the 12 labels need noise
    with pytest.raises(DatasetError, match=match) as info:
        create_task("speech_commands", data_dir=tmp_path, labels=labels).setup()
    assert "\n" not in str(info.value)


def test_speech_commands_bad_labels_option(tmp_path):
    with pytest.raises(ValueError, match="35.*12.*got 20"):
        create_task("speech_commands", data_dir=tmp_path, labels=20)
    with pytest.raises(ValueError):
        create_task("speech_commands", data_dir=tmp_path, labels="twelve")
    assert create_task("speech_commands", data_dir=tmp_path, labels="12").opts["labels"] == 12


def test_speech_commands_registration():
    cls = type(create_task("speech_commands"))
    assert (cls.domain, cls.kind, cls.modality, cls.offline, cls.default) == ("speech", "classification", "audio",
                                                                             False, False)
    assert issubclass(cls, AudioClassificationTask)
    folder = type(create_task("audio_folder"))
    assert (folder.domain, folder.offline, folder.default) == ("speech", False, False)


# ----------------------------------------------------------------------------------------------
# audio_folder
# ----------------------------------------------------------------------------------------------

CLASS_HZ = {"Apple": 300, "mango": 700, "zebra": 1100, "a": 300, "b": 700, "c": 1100}


def _write_classes(root: Path, counts: dict[str, int], first_key: int = 0, rate: int = SR,
                   channels: int = 1) -> dict[str, str]:
    """``root/<class>/clip_<key>.wav``: 1-s tones of the class's pitch, amplitudes unique per key;
    returns {relative path under root: class}."""
    written, key = {}, first_key
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for _ in range(n):
            wave = _tone(CLASS_HZ[cls], 0.05 + 0.01 * key, rate, rate)
            data = wave if channels == 1 else np.stack([wave, 0.5 * wave], axis=1)
            sf.write(root / cls / f"clip_{key:02d}.wav", data, rate, subtype="PCM_16")
            written[f"{cls}/clip_{key:02d}.wav"] = cls
            key += 1
    return written


def _folder_trace(root: Path, written: dict[str, str], waves: torch.Tensor, n: int = SR) -> list[str]:
    index = {_key(_fit(sf.read(root / rel, dtype="float32")[0], n)): rel for rel in written}
    assert len(index) == len(written)
    found = [index.get(_key(w.numpy())) for w in waves]
    assert None not in found, "a task clip equals none of the written clips"
    return found


FLAT = {"zebra": 10, "Apple": 10, "mango": 10}


def test_audio_folder_flat_tree_split_80_10_10(tmp_path):
    written = _write_classes(tmp_path, FLAT)
    task = create_task("audio_folder", data_dir=tmp_path)
    data = task._load()
    assert task.classes == ["Apple", "mango", "zebra"]  # sorted by name
    traced = {}
    for split, per_class in (("train", 8), ("val", 1), ("test", 1)):
        waves, labels = data[split]
        traced[split] = _folder_trace(tmp_path, written, waves)
        assert [task.classes[i] for i in labels.tolist()] == [written[r] for r in traced[split]]
        assert np.bincount(labels.numpy(), minlength=3).tolist() == [per_class] * 3
        for wave, label in zip(waves, labels.tolist()):
            assert abs(_peak_hz(wave) - CLASS_HZ[task.classes[label]]) < 5
    assert sorted(sum(traced.values(), [])) == sorted(written)  # a partition of the files

    again = create_task("audio_folder", data_dir=tmp_path)._load()
    assert all(torch.equal(again[s][0], data[s][0]) for s in data)  # the same split every time
    task.setup()
    assert task.spec == {"kind": "classification", "modality": "audio", "input_shape": (101, 40), "num_classes": 3}
    assert [len(task.labels[s]) for s in ("train", "val", "test")] == [24, 3, 3]


@pytest.mark.parametrize("held_out", [("val",), ("test",), ("val", "test")])
def test_audio_folder_train_and_held_out_folders(tmp_path, held_out):
    train = {f"train/{r}": c for r, c in _write_classes(tmp_path / "train", FLAT).items()}
    given, key = {}, 30
    for folder in held_out:
        given[folder] = {f"{folder}/{r}": c
                         for r, c in _write_classes(tmp_path / folder, {c: 2 for c in FLAT}, first_key=key).items()}
        key += 6
    written = {**train, **given.get("val", {}), **given.get("test", {})}
    task = create_task("audio_folder", data_dir=tmp_path)
    data = task._load()
    assert task.classes == ["Apple", "mango", "zebra"]
    traced = {s: _folder_trace(tmp_path, written, data[s][0]) for s in data}
    for split in data:
        assert [task.classes[i] for i in data[split][1].tolist()] == [written[r] for r in traced[split]]
    test_folder = "test" if "test" in held_out else "val"  # one held-out folder is the test split
    assert sorted(traced["test"]) == sorted(given[test_folder])
    if held_out == ("val", "test"):
        assert sorted(traced["val"]) == sorted(given["val"]) and sorted(traced["train"]) == sorted(train)
    else:  # validation: 10% of train/, per class
        assert sorted(traced["train"] + traced["val"]) == sorted(train)
        assert np.bincount(data["val"][1].numpy(), minlength=3).tolist() == [1, 1, 1]


def test_audio_folder_with_only_a_train_folder_splits_it(tmp_path):
    written = _write_classes(tmp_path / "train", {"a": 10, "b": 10})
    task = create_task("audio_folder", data_dir=tmp_path)
    data = task._load()
    assert task.classes == ["a", "b"] and [len(data[s][1]) for s in ("train", "val", "test")] == [16, 2, 2]
    traced = sum((_folder_trace(tmp_path / "train", written, data[s][0]) for s in data), [])
    assert sorted(traced) == sorted(written)


def test_read_wav_mixes_stereo_and_resamples(tmp_path):
    left = _tone(440, 0.5, 44100, 44100)
    sf.write(tmp_path / "stereo.wav", np.stack([left, 0.6 * left], axis=1), 44100, subtype="PCM_16")
    wave = read_wav(tmp_path / "stereo.wav")
    assert wave.dtype == torch.float32 and wave.shape == (SR,)
    stored = sf.read(tmp_path / "stereo.wav", dtype="float32")[0]  # (44100, 2)
    torch.testing.assert_close(wave, resample(torch.from_numpy(stored.mean(1)), 44100, SR))
    assert abs(_peak_hz(wave) - 440) < 2
    assert abs(wave[1000:15000].abs().max().item() - 0.4) < 0.01  # (0.5 + 0.3) / 2: averaged, not one channel

    sf.write(tmp_path / "slow.wav", _tone(440, 0.3, 4000, 8000), 8000, subtype="PCM_16")  # 0.5 s at 8 kHz
    wave = read_wav(tmp_path / "slow.wav")
    assert wave.shape == (8000,) and abs(_peak_hz(wave) - 440) < 3


def test_audio_folder_resamples_other_rates_and_clip_seconds(tmp_path):
    _write_classes(tmp_path, {"a": 10}, rate=44100, channels=2)
    _write_classes(tmp_path, {"b": 10}, first_key=10, rate=8000)
    _write_classes(tmp_path, {"c": 10}, first_key=20)
    task = create_task("audio_folder", data_dir=tmp_path)
    data = task._load()
    for waves, labels in data.values():
        assert waves.shape[1] == SR
        for wave, label in zip(waves, labels.tolist()):
            assert abs(_peak_hz(wave) - CLASS_HZ[task.classes[label]]) < 3
            assert wave[SR - 100:].abs().max() > 0.01  # one second at any rate fills one second at 16 kHz

    half = create_task("audio_folder", data_dir=tmp_path, clip_seconds="0.5")
    waves, _ = half._load()["train"]
    assert waves.shape[1] == 8000
    half.setup()
    assert half.spec["input_shape"] == (51, 40)


@pytest.mark.parametrize("value", [0, -1, 0.01, float("nan")])
def test_audio_folder_bad_clip_seconds(tmp_path, value):
    with pytest.raises(ValueError, match="clip_seconds"):
        create_task("audio_folder", data_dir=tmp_path, clip_seconds=value)


@pytest.mark.parametrize("case, error, match", [
    ("missing root", DatasetNotFoundError, "no folder .*missing"),
    ("no class folders", DatasetNotFoundError, "no class folders in"),
    ("loose wav files", DatasetNotFoundError, "holds 2 .wav files"),
    ("class without wav", DatasetError, r"class folder .*cats has no \.wav files"),
    ("unreadable wav", DatasetError, r"cannot read .*broken\.wav"),
    ("different classes", DatasetError, r"has classes \['a', 'c'\], the training folder \['a', 'b'\]"),
    ("too few to split", DatasetError, "too few clips"),
])
def test_audio_folder_errors(tmp_path, case, error, match):
    root = tmp_path / "missing" if case == "missing root" else tmp_path
    if case == "loose wav files":
        for i in range(2):
            sf.write(root / f"{i}.wav", _tone(300, 0.1, SR), SR)
    elif case == "class without wav":
        _write_classes(root, {"a": 10})
        (root / "cats").mkdir()
        (root / "cats" / "notes.txt").write_text("no audio here")
    elif case == "unreadable wav":
        _write_classes(root, {"a": 10, "b": 10})
        (root / "b" / "broken.wav").write_text("not a wav file")
    elif case == "different classes":
        _write_classes(root / "train", {"a": 10, "b": 10})
        _write_classes(root / "val", {"a": 2, "c": 2}, first_key=20)
    elif case == "too few to split":
        _write_classes(root, {"a": 2, "b": 2})
    task = create_task("audio_folder", data_dir=root)
    with pytest.raises(error, match=match) as info:
        task.setup()
    assert "\n" not in str(info.value) and not task.features


def test_audio_folder_end_to_end_with_the_harness(tmp_path, capsys):
    root = tmp_path / "clips"
    _write_classes(root, FLAT)
    out = tmp_path / "res"
    code = main(["run", "speech", "--tasks", "audio_folder", "--data-dir", str(root), "--models", "conformer",
                 "--steps", "2", "--model-opt", "d_model=32", "--model-opt", "num_layers=1",
                 "--model-opt", "ffn_dim=64", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    df = pd.read_csv(out / "leaderboard_speech.csv")
    assert list(df["task"]) == ["audio_folder"] and list(df["model"]) == ["conformer"]
    assert 0 <= df["metric_mean"].iloc[0] <= 1 and not math.isnan(df["metric_mean"].iloc[0])


def test_speech_commands_fingerprint_covers_the_clips_and_split_lists(commands):
    task = create_task("speech_commands", data_dir=commands["root"], labels=12)
    task.setup()
    fingerprint = task.fingerprint()
    noise = len(list((commands["base"] / "_background_noise_").glob("*.wav")))
    assert fingerprint["files"] == len(commands["files"]) + noise + 2  # clips, noise recordings, two lists
    assert fingerprint == create_task("speech_commands", data_dir=commands["root"], labels=12).fingerprint()
