"""Bad input through the real command line, as a new user would type it: each is stopped before any
training with one line 'harness: error: ...' and exit code 2, never a traceback (the README's promise).
Faults inside a cell are the other kind: a 'failed' record with its reason, and the sweep goes on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import zoo.registry as registry
from harness.cli import main

FAST = ["--steps", "2", "--seeds", "1", "--quiet"]


def files(root: Path) -> dict[str, str | bytes]:
    """The bad data and plugins the inputs below point at, written once per test."""
    return {
        "a_file": "not a folder",
        "bad.toml": "[[run\ndomain = 'vision'",
        "latin1.toml": "# caf\xe9\n".encode("latin-1"),
        "unknown_key.toml": "[[run]]\ndomain = 'vision'\nepoch = 3\n",
        "no_domain.toml": "[[run]]\nmodels = ['vit']\n",
        "raises_plugin.py": "raise RuntimeError('plugin broke on purpose')\n",
        "syntax_plugin.py": "def broken(:\n    pass\n",
        "missing_dep_plugin.py": "import no_such_package_xyz\n",
        "exit_plugin.py": "import sys\nsys.exit(3)\n",
        "empty.txt": "",
        "binary.txt": b"caf\xc3\xa9 \xff\xfe\x00\x01" * 64,  # UTF-8 up to byte 6, then not
        "typo2.toml": "[[run]]\ndomain = 'vision'\nmodels = ['resnet']\nsteps = 2\nseeds = 1\n\n"
                      "[[run]]\ndomain = 'vision'\nmodels = ['vti']\n",
        "value2.toml": "[[run]]\ndomain = 'vision'\nmodels = ['resnet']\nsteps = 2\nseeds = 1\n\n"
                       "[[run]]\ndomain = 'vision'\nepochs = 0\n",
        "dup_plugin.py": "from zoo.registry import register_model\n"
                         "@register_model('vit', family='transformer', kinds='classification')\n"
                         "def vit(spec):\n    return None\n",
        "garbage.db": b"this is not an SQLite database\n" * 8,
        "garbage_out/tuning.db": b"SQLite format 3\x00 and then nothing that SQLite can read" * 8,
    }


@pytest.fixture
def where(tmp_path, monkeypatch):
    from PIL import Image
    for name, content in files(tmp_path).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    rng = np.random.default_rng(0)
    (tmp_path / "one_class/cat").mkdir(parents=True)
    for cls in ("cat",):
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"one_class/{cls}/{i}.png")
    for cls in ("cat", "dog"):
        (tmp_path / f"corrupt/{cls}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"corrupt/{cls}/{i}.png")
    (tmp_path / "corrupt/dog/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "zero/cat").mkdir(parents=True)
    (tmp_path / "zero/dog").mkdir(parents=True)
    for cls in ("cat", "dog"):
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"zero/{cls}/{i}.png")
    (tmp_path / "zero/cat/empty.png").write_bytes(b"")
    _silent_clip(tmp_path / "silent_clip")
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked/runs").write_text("a file where the run wants its records folder")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    for module in ("raises_plugin", "syntax_plugin", "missing_dep_plugin", "exit_plugin", "dup_plugin"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    return tmp_path


def _silent_clip(root: Path) -> None:
    """Two classes of short wav clips, one of them with no samples at all."""
    sf = pytest.importorskip("soundfile")
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for k in range(10):
            sf.write(root / cls / f"clip_{k}.wav", np.full(1600, 0.01 * (k + 1)), 16000, subtype="PCM_16")
    sf.write(root / "dog" / "empty.wav", np.zeros(0), 16000, subtype="PCM_16")


TUNE = ["tune", "vision", "--models", "resnet", "--trials", "1", *FAST]

# (argv with T for the temporary folder, what the one line must say)
BAD = [
    # names
    (["run", "visoin"], "unknown domain 'visoin'; did you mean: vision?"),
    (["run", "vision", "--tasks", "digts"], "unknown task 'digts'"),
    (["run", "vision", "--tasks", "pystdlib"], "task 'pystdlib' belongs to domain 'language', not 'vision'"),
    (["run", "vision", "--models", "vti"], "unknown model 'vti'; did you mean: vit, vim?"),
    (["run", "vision", "--models", "zzz*"], "no model matching 'zzz*'"),
    (["run", "vision", "--models", "gpt"], "model 'gpt' serves language_modeling[text] tasks, not task 'digits'"),
    (["run"], "run needs a DOMAIN"),
    (["list", "things"], "argument what: invalid choice"),
    # flag values
    (["run", "vision", "--seeds", "0"], "argument --seeds: expected a positive integer, got '0'"),
    (["run", "vision", "--seeds", "-1"], "argument --seeds: expected a positive integer"),
    (["run", "vision", "--epochs", "x"], "argument --epochs: expected a positive integer, got 'x'"),
    (["run", "vision", "--epochs", "1", "--steps", "1"], "not allowed with argument"),
    (["run", "vision", "--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    (["run", "vision", "--lr", "-1"], "argument --lr: expected a positive number"),
    (["run", "vision", "--lr", "inf"], "argument --lr: expected a positive number"),
    (["run", "vision", "--weight-decay", "-0.1"], "argument --weight-decay: expected a number >= 0"),
    (["run", "vision", "--size", "huge"], "argument --size: invalid choice: 'huge'"),
    (["run", "vision", "--backend", "flash"], "argument --backend: invalid choice: 'flash'"),
    (["run", "vision", "--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    (["run", "vision", "--checkpoint-minutes", "0"], "argument --checkpoint-minutes: expected a positive number"),
    (["run", "vision", "--cpus-per-cell", "0"], "argument --cpus-per-cell: expected a positive number"),
    (["run", "vision", "--params", "5"], "cannot fit model 'resnet' to 5 parameters"),
    (["run", "vision", "--params", "3q"], "argument --params: bad parameter count '3q'"),
    (["run", "vision", "--models", "vit", "--params", "100k", "--model-opt", "dim=32"], "conflicts with fitting"),
    # model options
    (["run", "vision", "--model-opt", "layers=3"], "unknown config key(s) layers"),
    (["run", "vision", "--models", "vit", "--model-opt", "depth=0"], "depth"),
    (["run", "vision", "--models", "vit", "--model-opt", "depth=-1"], "depth"),
    (["run", "vision", "--models", "vit", "--model-opt", "dim=abc"], "dim"),
    (["run", "vision", "--models", "vit", "--model-opt", "patch_size=3"], "not divisible by patch size 3"),
    # task options, checked before any training
    (["run", "vision", "--task-opt", "size"], "expected KEY=VALUE"),
    (["run", "vision", "--task-opt", "image_size=3"], "no selected task has such an option"),
    (["run", "vision", "--tasks", "image_folder", "--data-dir", "T/corrupt", "--task-opt", "image_size=0"],
     "image_size"),
    (["run", "language", "--tasks", "pystdlib", "--task-opt", "block_size=-5"], "block_size"),
    (["run", "language", "--tasks", "pystdlib", "--task-opt", "block_size=0"], "block_size"),
    (["run", "language", "--tasks", "pystdlib", "--task-opt", "block_size=abc"], "block_size"),
    (["run", "language", "--tasks", "pystdlib", "--task-opt", "eval_chars=-1"], "eval_chars"),
    (["run", "language", "--tasks", "reverse", "--task-opt", "label_smoothing=2"], "label_smoothing"),
    (["run", "rl", "--tasks", "cartpole-mixed", "--task-opt", "context_len=0"], "context_len"),
    (["run", "rl", "--tasks", "cartpole-mixed", "--task-opt", "eval_episodes=-1"], "eval_episodes"),
    # data
    (["run", "vision", "--tasks", "mnist", "--data-dir", "T/nothing_here"], "mnist: no dataset under"),
    (["run", "vision", "--tasks", "image_folder", "--data-dir", "T/a_file"], "a_file"),
    (["run", "vision", "--tasks", "image_folder", "--data-dir", "T/one_class"], "class"),
    (["run", "vision", "--tasks", "image_folder", "--data-dir", "T/corrupt"], "broken.png"),
    (["run", "vision", "--tasks", "image_folder", "--data-dir", "T/zero"], "empty.png"),
    (["run", "language", "--tasks", "text_file", "--data-dir", "T/empty.txt"], "empty.txt"),
    # where results go
    (["run", "vision", "--out", "T/a_file"], "not a writable directory"),
    (["run", "vision", "--out", "T/blocked"], "not a writable directory"),
    (["bench", "--out", "T/a_file", "--skip", "attention,models"], "not a writable directory"),
    (["bench", "--skip", "vti"], "--skip vti: nothing of that name to skip; accepted: attention, mixers, models"),
    (["bench", "--seq-lens", "16,x"], "--seq-lens: expected comma-separated positive integers"),
    (["report", "--out", "T/nothing_here"], "no records under"),
    (["examples", "--out", "T/nothing_here"], "no records with examples"),
    # compare
    (["compare", "dtaes", "transformer", "lstm_seq2seq"], "unknown task 'dtaes'; did you mean: dates"),
    (["compare", "dates", "transformer", "gpt"], "no records of gpt on dates under results/runs; models with "
                                                 "records there: lstm_seq2seq, transformer"),
    (["compare", "dates", "transformer", "lstm_seq2seq", "--out", "T/nothing_here"], "no records of transformer"),
    (["compare", "dates", "transformer", "lstm_seq2seq", "--alpha", "1.5"], "expected a number in (0, 1)"),
    (["report", "--pair", "vit"], "expected two model names A,B"),
    (["run", "vision", "--seed-start", "-1"], "expected an integer >= 0"),
    # suites
    (["run", "--config", "T/none.toml"], "none.toml: cannot read it"),
    (["run", "--config", "T/bad.toml"], "bad.toml: not valid TOML"),
    (["run", "--config", "T/latin1.toml"], "latin1.toml"),
    (["run", "--config", "T/unknown_key.toml"], "[[run]] 1 has unknown key(s) epoch"),
    (["run", "--config", "T/no_domain.toml"], "[[run]] 1 has no domain"),
    (["run", "vision", "--config", "T/bad.toml"], "give a DOMAIN or --config, not both"),
    # plugins
    (["run", "vision", "--plugin", "no_such_plugin_mod"], "plugin module 'no_such_plugin_mod' not found"),
    (["run", "vision", "--plugin", "raises_plugin"], "plugin 'raises_plugin' failed to import: RuntimeError"),
    (["run", "vision", "--plugin", "syntax_plugin"], "plugin 'syntax_plugin' failed to import: SyntaxError"),
    (["run", "vision", "--plugin", "missing_dep_plugin"], "No module named 'no_such_package_xyz'"),
    (["run", "vision", "--plugin", "exit_plugin"], "plugin 'exit_plugin' called sys.exit(3)"),
    (["list", "models", "--plugin", "raises_plugin"], "plugin 'raises_plugin' failed to import"),
    # where cells run
    (["run", "vision", "--ray-address", "auto"], "--ray-address is for --executor ray"),
    (["run", "vision", "--executor", "ray", "--jobs", "2"], "--jobs is for the local executor"),
    (["run", "vision", "--ddp"], "--ddp needs the processes that torchrun starts"),
    # issue 29: caught before any training, with the file, table, task or value named
    (["run", "vision", "--out", ""], "argument --out: expected a folder, got ''"),
    (["report", "--out", ""], "argument --out: expected a folder, got ''"),
    (["run", "vision", "--models", "vit", "--model-opt", "depth=2.0"], "depth must be an integer >= 1, got 2.0"),
    (["run", "vision", "--models", "resnet", "--model-opt", "width=1e3"], "width must be an integer >= 1, got 1000.0"),
    (["run", "language", "--tasks", "pystdlib", "--task-opt", "eval_chars=1e6"],
     "eval_chars must be an integer >= 1, got 1e6"),
    (["run", "vision", "--params", "200k,5"], "to 5 parameters"),
    (["run", "vision", "--seed-start", "4294967296"], "seeds must be integers in [0, 4294967295]"),
    (["run", "--config", "T/typo2.toml"], "typo2.toml, [[run]] 2: unknown model 'vti'; did you mean: vit, vim?"),
    (["run", "--config", "T/value2.toml"], "value2.toml, [[run]] 2: argument --epochs: expected a positive integer"),
    (["run", "language", "--task-opt", "pystdlb.block_size=64"], "unknown task 'pystdlb'; did you mean: pystdlib?"),
    (["run", "language", "--task-opt", "pystdlib.block_sz=64"], "task 'pystdlib' has no option 'block_sz'"),
    (["run", "vision", "--task-opt", "pystdlib.block_size=64"], "that task is not among the tasks this run trains"),
    (["run", "language", "--tasks", "text_file", "--data-dir", "T/binary.txt"],
     "binary.txt is not UTF-8 text (byte 6: invalid start byte)"),
    (["run", "speech", "--tasks", "audio_folder", "--data-dir", "T/silent_clip"], "empty.wav holds no audio (0 samples)"),
    (["run", "vision", "--plugin", "dup_plugin"], "dup_plugin registers model 'vit', which is already registered"),
    (["examples", "--task", "digts"], "unknown task 'digts'; did you mean: digits"),
    (["examples", "--task", "nosuchtask", "--out", "T/nothing_here"], "unknown task 'nosuchtask'"),
    (["examples", "--model", "vti", "--out", "T/nothing_here"], "unknown model 'vti'; did you mean: vit, vim?"),
    ([*TUNE, "--out", "T/results", "--storage", "foo://bar"], "--storage foo://bar: cannot open it as the studies'"),
    ([*TUNE, "--out", "T/results", "--storage", "sqlite:////nonexistent/x.db"], "unable to open database file"),
    ([*TUNE, "--out", "T/results", "--storage", "sqlite:///T/garbage.db"], "garbage.db: cannot open it as the studies"),
    ([*TUNE, "--out", "T/garbage_out"], "garbage_out/tuning.db: cannot open it as the studies' database"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2_before_any_training(argv, message, where, capsys, monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    argv = [a.replace("T/", f"{where}/") for a in argv]
    if argv[0] == "run":
        argv += ["--out", str(where / "results")] if "--out" not in argv else []
        argv += ["--data-dir", str(where / "data")] if "--data-dir" not in argv else []
        argv += FAST if "--config" not in argv else []
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("harness: error: ") and message in lines[-1], err
    assert not list(where.rglob("runs/**/*.json")), "nothing may have trained"


def test_there_are_at_least_40_bad_inputs():
    assert len(BAD) >= 40


def test_a_cell_that_fails_is_recorded_and_the_sweep_goes_on(where, capsys):
    (where / "crash_plugin.py").write_text(
        "from torch import nn\nfrom zoo.registry import register_model\n"
        "class Crash(nn.Module):\n    def forward(self, x):\n        raise ValueError('crashes in forward')\n"
        "@register_model('crash_model', family='baseline', kinds='classification', modalities='image')\n"
        "def crash(spec):\n    return Crash()\n")
    code = main(["run", "vision", "--models", "resnet,crash_model", "--plugin", "crash_plugin",
                 "--out", str(where / "results"), *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "1 of 2 cells failed" in err and "Traceback" not in err
    runs = where / "results/runs/vision/digits"
    failed = [json.loads(p.read_text()) for p in runs.glob("crash_model-*.failed.json")]
    assert len(failed) == 1 and "crashes in forward" in failed[0]["reason"]
    assert [json.loads(p.read_text())["status"] for p in runs.glob("resnet-*.json")] == ["ok"]


# ------------------------------------------------------------------------------------------------
# issue 29: every sweep of a command checked before any trains; clearer messages
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def planned(monkeypatch):
    """The sweeps a command would run, in order, with nothing trained: ``run_plan`` only notes its plan."""
    import harness.sweep as sweep
    ran = []
    monkeypatch.setattr(sweep, "run_plan", lambda plan: ran.append(plan) or 0)
    return ran


def test_run_all_checks_every_domain_before_any_trains(planned, tmp_path, capsys, monkeypatch):
    import tasks
    monkeypatch.setattr(tasks, "list_domains", lambda: ["vision", "language"])
    argv = ["run", "all", "--out", str(tmp_path), *FAST]
    code = main([*argv, "--task-opt", "pystdlib.block_size=0"])  # bad for the second domain only
    err = capsys.readouterr().err
    assert code == 2 and planned == [] and "block_size must be an integer >= 1, got 0" in err, err
    # an option that some task of the run takes is no error for the domains without it
    monkeypatch.setattr(tasks, "list_domains", lambda: ["language", "vision"])
    assert main([*argv, "--task-opt", "block_size=64", "--task-opt", "reverse.label_smoothing=0.2"]) == 0
    plans = {plan.sweep.domain: plan for plan in planned}
    assert list(plans) == ["language", "vision"]
    language = plans["language"].tasks
    assert language["pystdlib"].opts["block_size"] == 64 and language["reverse"].opts["label_smoothing"] == 0.2
    assert language["sort"].opts["label_smoothing"] == 0.0  # named for reverse alone


def test_seeds_beyond_32_bits_are_refused_up_front(where, capsys):
    code = main(["run", "vision", "--seeds", "2", "--seed-start", "4294967295", "--steps", "2", "--quiet",
                 "--out", str(where / "results")])
    err = capsys.readouterr().err
    assert code == 2 and "seeds must be integers in [0, 4294967295]" in err and not list(where.rglob("*.json"))


def test_list_tasks_says_which_read_your_own_data(capsys):
    assert main(["list", "tasks"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in ("text_file", "image_folder", "audio_folder"):
        assert "your data" in rows[name] and "download" not in rows[name].split(name, 1)[1][:60], rows[name]
    assert "--task-opt dataset=" in rows["minari"] and "--dataset " not in rows["minari"]


def test_compare_help_shows_one_percent_sign(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["compare", "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "95% interval" in " ".join(out.split()) and "%%" not in out
