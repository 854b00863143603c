"""Task options declared once with their types and ranges (``tasks.base.Option``) and checked when a task
is made; degenerate or broken data refused at ``setup`` as a one-line ``DatasetError``; the data
``fingerprint`` that a cell's configuration hash covers; the RL dataset cache's file mode."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import tasks  # noqa: F401  (registers every task)
from tasks import DatasetError, Task, create_task, get_task_class, list_tasks
from tasks.base import Option, files_fingerprint
from zoo.registry import RegistryError

# ----------------------------------------------------------------------------------------------
# options: declared once, validated when the task is made
# ----------------------------------------------------------------------------------------------

INTEGER_1 = "an integer >= 1"
BAD_OPTIONS = {  # (task, option, value as --task-opt or a suite gives it) -> (what is accepted, how the value shows)
    ("pystdlib", "block_size", "-5"): (INTEGER_1, "-5"), ("pystdlib", "block_size", "abc"): (INTEGER_1, "'abc'"),
    ("pystdlib", "block_size", "0"): (INTEGER_1, "0"), ("tinyshakespeare", "block_size", "1.5"): (INTEGER_1, "1.5"),
    ("text_file", "eval_chars", "-1"): (INTEGER_1, "-1"), ("image_folder", "image_size", "0"): (INTEGER_1, "0"),
    ("reverse", "label_smoothing", "2"): ("a number in [0, 1)", "2"),
    ("dates", "label_smoothing", "-0.1"): ("a number in [0, 1)", "-0.1"),
    ("addition", "label_smoothing", "nan"): ("a number in [0, 1)", "nan"),
    ("cartpole-mixed", "context_len", "0"): (INTEGER_1, "0"), ("minari", "context_len", "0"): (INTEGER_1, "0"),
    ("pendulum-medium", "eval_episodes", "-1"): (INTEGER_1, "-1"), ("minari", "dataset", 5): ("a string", "5"),
    ("synth_commands", "n_mels", "0"): ("an integer in [1, 89]", "0"),
    ("synth_commands", "n_mels", "128"): ("an integer in [1, 89]", "128"),
    ("synth_commands", "clips_per_voice", "0"): (INTEGER_1, "0"),
    ("synth_commands", "seed", "-1"): ("an integer >= 0", "-1"),
    ("synth_commands", "spec_augment", "maybe"): ("true or false", "'maybe'"),
    ("synth_digits", "beam_size", "0"): (INTEGER_1, "0"), ("synth_digits", "utterances_per_voice", "0"): (INTEGER_1, "0"),
    ("speech_commands", "labels", "20"): ("one of 35, 12", "20"),
    ("audio_folder", "clip_seconds", "0"): ("a number >= 0.025", "0"),
    ("audio_folder", "clip_seconds", "inf"): ("a number >= 0.025", "inf"),
}


def test_the_issues_bad_options_read_as_one_line_each(tmp_path):
    with pytest.raises(ValueError) as info:
        create_task("pystdlib", block_size="-5")
    assert str(info.value) == "task 'pystdlib': option block_size must be an integer >= 1, got -5"
    with pytest.raises(ValueError) as info:
        create_task("pystdlib", block_size="abc")
    assert str(info.value) == "task 'pystdlib': option block_size must be an integer >= 1, got 'abc'"


@pytest.mark.parametrize("name, option, value", list(BAD_OPTIONS), ids=[f"{t}-{o}={v}" for t, o, v in BAD_OPTIONS])
def test_a_bad_option_value_is_one_line_naming_task_option_range_and_value(tmp_path, name, option, value):
    with pytest.raises(ValueError) as info:
        create_task(name, data_dir=tmp_path, **{option: value})
    accepted, shown = BAD_OPTIONS[name, option, value]
    assert str(info.value) == f"task {name!r}: option {option} must be {accepted}, got {shown}"


DEFAULTS = {  # what every task's options were before they were declared: the same values, the same types
    "pystdlib": {"block_size": 128, "eval_chars": 200_000}, "text_file": {"block_size": 128, "eval_chars": 200_000},
    "tinyshakespeare": {"block_size": 64, "eval_chars": 200_000},
    **{n: {"label_smoothing": 0.0} for n in ("reverse", "sort", "addition", "dates")},
    **{f"{env}-{q}": {"context_len": 20, "eval_episodes": 10} for env in ("cartpole", "pendulum", "mountaincar")
       for q in ("expert", "medium", "mixed")},
    **{f"{env}-replay": {"context_len": 20, "eval_episodes": 10} for env in ("cartpole", "pendulum")},
    **{f"{env}-mixed-delayed": {"context_len": 20, "eval_episodes": 10} for env in ("cartpole", "pendulum", "mountaincar")},
    **{n: {"context_len": 20, "eval_episodes": 100} for n in ("keytodoor-random", "keytodoor-mixed", "gamble-random")},
    "minari": {"dataset": "mujoco/hopper/medium-v0", "context_len": 20, "eval_episodes": 10},
    "digits": {}, "mnist": {}, "fashion_mnist": {}, "cifar10": {}, "image_folder": {"image_size": 32},
    "synth_commands": {"n_mels": 40, "spec_augment": True, "clips_per_voice": 5, "seed": 0},
    "synth_digits": {"n_mels": 40, "spec_augment": True, "beam_size": 1, "utterances_per_voice": 40, "seed": 0},
    "speech_commands": {"n_mels": 40, "spec_augment": True, "labels": 35},
    "audio_folder": {"n_mels": 40, "spec_augment": True, "clip_seconds": 1.0},
}


def test_defaults_keep_their_values_and_types_and_every_option_is_declared(tmp_path):
    assert set(DEFAULTS) == set(list_tasks())
    for name, expected in DEFAULTS.items():
        opts = create_task(name, data_dir=tmp_path).opts
        assert opts == expected and [type(v) for v in opts.values()] == [type(v) for v in expected.values()], name
        for key, option in get_task_class(name).options.items():
            assert isinstance(option, Option) and option.help, (name, key)  # declared, with a line of help
            assert option.parse(option.default) == option.default  # a default is within its own range


def test_models_and_tasks_declare_options_with_one_class():
    import zoo.options
    from zoo.registry import get_model_entry

    assert Option is zoo.options.Option and isinstance(get_model_entry("vit").options["depth"], Option)
    depth, block = get_model_entry("vit").options["depth"], get_task_class("pystdlib").options["block_size"]
    assert depth.accepted() == block.accepted() == "an integer >= 1"  # the same words for the same range
    assert block.parse("64") == 64 and depth.check("depth", 3) == 3
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 2.0"):
        depth.check("depth", 2.0)  # a model's config takes Python values, strictly
    with pytest.raises(ValueError, match="must be an integer >= 1, got 2.0"):
        block.parse("2.0")  # a task's option also reads text, as strictly


def test_good_values_parse_to_the_options_type(tmp_path):
    assert create_task("pystdlib", block_size="256", eval_chars="1000000").opts == {"block_size": 256,
                                                                                    "eval_chars": 1_000_000}
    assert create_task("reverse", label_smoothing="0.1").opts == {"label_smoothing": 0.1}
    assert create_task("reverse", label_smoothing=0).opts["label_smoothing"] == 0.0
    assert create_task("speech_commands", data_dir=tmp_path, labels="12").opts["labels"] == 12
    assert create_task("audio_folder", data_dir=tmp_path, clip_seconds="0.025").opts["clip_seconds"] == 0.025
    for text, value in [("false", False), ("no", False), ("0", False), ("True", True), ("yes", True), ("1", True)]:
        assert create_task("synth_commands", spec_augment=text).opts["spec_augment"] is value, text


def test_a_plugin_task_with_plain_defaults_keeps_working_with_a_type_check():
    class Plain(Task):  # written the old way: a dict of defaults; not registered
        name, domain, kind, metric = "plain", "test", "classification", "top1"
        options = {"n": 3, "rate": 0.5, "flag": False, "label": "x"}
        setup = spec = num_train_samples = train_batches = eval_batches = loss = evaluate = None

    assert Plain().opts == {"n": 3, "rate": 0.5, "flag": False, "label": "x"}
    assert Plain(n="-4", rate="2", flag="yes", label="y").opts == {"n": -4, "rate": 2.0, "flag": True, "label": "y"}
    with pytest.raises(ValueError) as info:
        Plain(n="abc")
    assert str(info.value) == "task 'plain': option n must be an integer, got 'abc'"
    with pytest.raises(RegistryError, match="no option m; accepted: n, rate, flag, label"):
        Plain(m=1)


def test_option_declaration_reads_its_ranges():
    assert Option(1, minimum=1).accepted() == "an integer >= 1"
    assert Option(0.0, minimum=0, below=1).accepted() == "a number in [0, 1)"
    assert Option(1.0, above=0).accepted() == "a number > 0"
    assert Option(5, minimum=1, maximum=9).accepted() == "an integer in [1, 9]"
    assert Option(35, choices=(35, 12)).accepted() == "one of 35, 12"
    assert Option(True).accepted() == "true or false" and Option("a").accepted() == "a string"
    assert Option(1, minimum=1).parse(5) == 5 and Option(1, minimum=1).parse(" 5 ") == 5
    for bad in (True, 5.5, 5.0, "5.0", "1e6", "x", None, [1]):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            Option(1, minimum=1).parse(bad)


# ----------------------------------------------------------------------------------------------
# degenerate or broken data: a DatasetError at setup, one line, naming the path
# ----------------------------------------------------------------------------------------------

def _images(root: Path, counts: dict[str, int], size: tuple[int, int] = (6, 6)) -> None:
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            Image.new("RGB", size, (40 * k % 256, 80, 120)).save(root / cls / f"img_{k:02d}.png")


def _wavs(root: Path, counts: dict[str, int]) -> None:
    sf = pytest.importorskip("soundfile")
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            sf.write(root / cls / f"clip_{k:02d}.wav", np.full(1600, 0.01 * (k + 1)), 16000, subtype="PCM_16")


def _setup_error(name: str, data_dir: Path, **options: Any) -> str:
    with pytest.raises(DatasetError) as info:
        create_task(name, data_dir=data_dir, **options).setup()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("layout", ["flat", "train+test"])
def test_image_folder_with_one_class_is_a_dataset_error(tmp_path, layout):
    if layout == "flat":
        _images(tmp_path, {"cats": 10})
        folder = tmp_path
    else:
        _images(tmp_path / "train", {"cats": 10})
        _images(tmp_path / "test", {"cats": 3})
        folder = tmp_path / "train"
    message = _setup_error("image_folder", tmp_path, image_size=4)
    assert message == (f"image_folder: {folder} has 1 class folder (cats); classification needs at least two")


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n not really an image", b"GIF89a"])
def test_image_folder_with_a_corrupt_or_empty_image_is_a_dataset_error(tmp_path, content):
    _images(tmp_path, {"a": 10, "b": 10})
    bad = tmp_path / "b" / "img_05.png"
    bad.write_bytes(content)
    message = _setup_error("image_folder", tmp_path, image_size=4)
    assert message.startswith(f"image_folder: cannot read {bad} as an image (")


def test_image_folder_data_dir_that_is_a_file_is_a_dataset_error(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(path)
    assert _setup_error("image_folder", path).startswith(f"image_folder: {path} is a file, not a folder; ")


def test_image_folder_too_small_to_split_names_the_folder(tmp_path):
    _images(tmp_path / "train", {"a": 1, "b": 1})  # val would be 10% of 2 images: empty
    _images(tmp_path / "test", {"a": 1, "b": 1})
    assert _setup_error("image_folder", tmp_path, image_size=4).startswith(
        f"image_folder: {tmp_path / 'train'}: cannot split 2 examples of 2 classes")


def test_image_folder_works_down_to_one_pixel(tmp_path):
    _images(tmp_path, {"a": 10, "b": 10})
    task = create_task("image_folder", data_dir=tmp_path, image_size=1)
    task.setup()
    assert task.spec["input_shape"] == (3, 1, 1)
    import torch
    x, _ = next(iter(task.train_batches(4, torch.Generator().manual_seed(0))))
    assert x.shape == (4, 3, 1, 1) and torch.isfinite(x).all()


def test_audio_folder_with_one_class_is_a_dataset_error(tmp_path):
    _wavs(tmp_path, {"yes": 12})
    assert _setup_error("audio_folder", tmp_path) == (
        f"audio_folder: {tmp_path} has 1 class folder (yes); classification needs at least two")


def test_audio_folder_data_dir_that_is_a_file_is_a_dataset_error(tmp_path):
    path = tmp_path / "clip.wav"
    path.write_bytes(b"RIFF")
    assert _setup_error("audio_folder", path).startswith(f"audio_folder: {path} is a file, not a folder; ")


def test_audio_folder_with_an_empty_split_names_the_folder(tmp_path):  # (already refused before options were declared)
    _wavs(tmp_path, {"yes": 3, "no": 3})  # 10% of 3 clips per class rounds to none: an empty test split
    assert _setup_error("audio_folder", tmp_path).startswith(f"audio_folder: too few clips under {tmp_path} to split")


def test_text_file_that_is_empty_is_a_dataset_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    assert _setup_error("text_file", path) == f"text_file: {path} is empty"


def test_text_file_too_short_for_one_block_names_the_file_and_what_it_needs(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("x" * 100)
    assert _setup_error("text_file", path, block_size=16) == (
        f"text_file: {path} is too short for block_size 16: its training part has 90 characters and its "
        f"validation part 10, each needs at least block_size + 2 = 18")


# ----------------------------------------------------------------------------------------------
# the data fingerprint
# ----------------------------------------------------------------------------------------------

def _fingerprint(name: str, data_dir: Path, **options: Any) -> dict[str, Any]:
    task = create_task(name, data_dir=data_dir, **options)
    task.setup()
    return task.fingerprint()


def _touch(path: Path, seconds: int) -> None:
    os.utime(path, ns=(seconds * 10**9, seconds * 10**9))


def test_files_fingerprint_covers_names_sizes_and_times(tmp_path):
    (tmp_path / "a").write_text("one")
    (tmp_path / "b").write_text("three")
    _touch(tmp_path / "a", 1_000)
    first = files_fingerprint(tmp_path, [tmp_path / "b", tmp_path / "a"])
    assert first == files_fingerprint(tmp_path, [tmp_path / "a", tmp_path / "b"])  # the order does not matter
    assert first["files"] == 2 and first["bytes"] == 8 and len(first["digest"]) == 16
    _touch(tmp_path / "a", 2_000)
    second = files_fingerprint(tmp_path, [tmp_path / "a", tmp_path / "b"])
    assert second["digest"] != first["digest"]
    assert files_fingerprint(tmp_path, [tmp_path / "a"], times=False) == \
        files_fingerprint(tmp_path, [tmp_path / "a"], times=False)
    with pytest.raises(DatasetError, match="cannot read .*missing"):
        files_fingerprint(tmp_path, [tmp_path / "missing"])


def test_text_file_fingerprint_is_stable_and_follows_the_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij" * 60)
    _touch(path, 1_000)
    small = {"block_size": 8, "eval_chars": 100}
    first = _fingerprint("text_file", path, **small)
    assert first == _fingerprint("text_file", path, **small)  # two setups of the same data
    assert first["files"] == 1 and first["bytes"] == 600 and first["options"] == small
    path.write_text("ABCDEFGHIJ" * 60)  # the same size, another time
    _touch(path, 2_000)
    changed = _fingerprint("text_file", path, **small)
    assert changed["digest"] != first["digest"]
    path.write_text("abcdefghij" * 61)
    _touch(path, 1_000)
    assert _fingerprint("text_file", path, **small)["digest"] not in (first["digest"], changed["digest"])


def test_image_folder_fingerprint_is_stable_and_follows_the_files(tmp_path):
    _images(tmp_path, {"a": 10, "b": 10})
    first = _fingerprint("image_folder", tmp_path, image_size=4)
    assert first == _fingerprint("image_folder", tmp_path, image_size=4)
    assert first["files"] == 20
    Image.new("RGB", (6, 6), (1, 2, 3)).save(tmp_path / "a" / "img_99.png")  # a file added
    added = _fingerprint("image_folder", tmp_path, image_size=4)
    assert added["files"] == 21 and added["digest"] != first["digest"]
    Image.new("RGB", (7, 7), (9, 9, 9)).save(tmp_path / "b" / "img_00.png")  # a file changed
    _touch(tmp_path / "b" / "img_00.png", 1_000)
    changed = _fingerprint("image_folder", tmp_path, image_size=4)
    assert changed["digest"] != added["digest"]
    (tmp_path / "a" / "notes.txt").write_text("not an image")  # a file the task does not read changes nothing
    assert _fingerprint("image_folder", tmp_path, image_size=4) == changed


def test_audio_folder_fingerprint_follows_the_files(tmp_path):
    _wavs(tmp_path, {"yes": 10, "no": 10})
    first = _fingerprint("audio_folder", tmp_path)
    assert first == _fingerprint("audio_folder", tmp_path) and first["files"] == 20
    _wavs(tmp_path, {"maybe": 10})
    assert _fingerprint("audio_folder", tmp_path)["files"] == 30


SMALL = {"synth_commands": {"clips_per_voice": 1}, "synth_digits": {"utterances_per_voice": 1}}


def test_every_offline_task_has_a_json_fingerprint_after_setup(tmp_path):
    pytest.importorskip("gymnasium")  # the RL tasks' data
    names = [n for n in list_tasks() if get_task_class(n).offline]
    assert len(names) >= 17  # digits, pystdlib, 4 seq2seq, 9 RL, 2 speech
    for name in names:
        fingerprint = _fingerprint(name, tmp_path, **SMALL.get(name, {}))
        assert isinstance(fingerprint, dict) and fingerprint["task"] == name, name
        assert json.loads(json.dumps(fingerprint)) == fingerprint, name
        assert len(json.dumps(fingerprint)) < 1000, name  # small: it goes into every record
        assert fingerprint["options"] == create_task(name, data_dir=tmp_path, **SMALL.get(name, {})).opts
    fps = {n: _fingerprint(n, tmp_path) for n in ("reverse", "sort", "cartpole-mixed", "cartpole-expert")}
    assert len({json.dumps(fp, sort_keys=True) for fp in fps.values()}) == 4  # each names its own recipe


def test_the_fingerprint_follows_the_options_of_generated_data(tmp_path):
    assert _fingerprint("reverse", tmp_path) != _fingerprint("reverse", tmp_path, label_smoothing=0.1)
    assert _fingerprint("pystdlib", tmp_path, block_size=8)["digest"] == \
        _fingerprint("pystdlib", tmp_path, block_size=16)["digest"]  # the same files


# ----------------------------------------------------------------------------------------------
# the RL dataset cache honours the umask
# ----------------------------------------------------------------------------------------------

def test_rl_dataset_cache_files_are_created_like_normal_files(tmp_path):
    pytest.importorskip("gymnasium")
    from tasks.rl.dataset import dataset_path, load_or_make, sidecar_path
    old = os.umask(0o022)
    try:
        load_or_make(tmp_path, "CartPole-v1", "expert", seed=0, episodes=2)
    finally:
        os.umask(old)
    path = dataset_path(tmp_path, "CartPole-v1", "expert", 0, 2)
    for written in (path, sidecar_path(path)):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644, written
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind


def test_minari_fingerprint_covers_the_dataset_files(tmp_path):
    minari = pytest.importorskip("minari")
    import warnings

    gym = pytest.importorskip("gymnasium")
    from minari.data_collector import EpisodeBuffer

    from tasks.rl.minari import DATASETS_PATH_VAR
    env = gym.make("CartPole-v1", max_episode_steps=10)
    buffers = []
    for i in range(3):  # three short episodes of a constant action
        obs, _ = env.reset(seed=i)
        steps = [(obs, None, False, False)]
        while not (steps[-1][2] or steps[-1][3]):
            obs, reward, terminated, truncated, _ = env.step(i % 2)
            steps.append((obs, reward, terminated, truncated))
        buffers.append(EpisodeBuffer(id=i, seed=i, observations=np.stack([s[0] for s in steps]),
                                     actions=np.full(len(steps) - 1, i % 2, dtype=np.int64),
                                     rewards=[s[1] for s in steps[1:]], terminations=[s[2] for s in steps[1:]],
                                     truncations=[s[3] for s in steps[1:]]))
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setenv(DATASETS_PATH_VAR, str(tmp_path / "minari"))
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers("cartpole/fp-v0", buffers, env=env, algorithm_name="scripted")
    env.close()
    first = _fingerprint("minari", tmp_path, dataset="cartpole/fp-v0")
    assert first["options"]["dataset"] == "cartpole/fp-v0" and first["files"] >= 1 and first["bytes"] > 0
    assert json.loads(json.dumps(first)) == first
    assert first == _fingerprint("minari", tmp_path, dataset="cartpole/fp-v0")
