"""Where cells run: --jobs N local processes and --executor ray give the same records and the same
leaderboard rows as one process (metric values equal on the CPU with --deterministic); failures,
resume and bad input behave as with the local executor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import exists_like, record_file

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["run", "vision", "--models", "vit,resnet", "--seeds", "2", "--steps", "6", "--deterministic",
         "--cpus-per-cell", "1", "--quiet"]
SAME = ["task", "model", "size", "seed", "metric_value", "param_count"]  # what must not depend on the executor


def run(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def records(out: Path) -> pd.DataFrame:
    rows = [json.loads(p.read_text()) for p in sorted((out / "runs").rglob("*.json"))]
    return pd.DataFrame(rows).sort_values(["task", "model", "seed"]).reset_index(drop=True)


def leaderboard_rows(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "leaderboard_vision.csv")
    return df[["task", "model", "size", "metric_mean", "metric_std", "n_seeds", "param_count"]].sort_values("model")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    assert main([*SWEEP, "--out", str(out)]) == 0
    return out


def test_jobs_give_the_local_results(local_run, tmp_path, capsys):
    code, err = run([*SWEEP, "--jobs", "2", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert "to run in 2 local processes" in err
    got, want = records(tmp_path), records(local_run)
    pd.testing.assert_frame_equal(got[SAME], want[SAME])
    assert (got["history"].map(lambda h: [e["val_top1"] for e in h])
            == want["history"].map(lambda h: [e["val_top1"] for e in h])).all()
    assert set(got["executor"]) == {"processes"} and set(want["executor"]) == {"local"}
    assert set(got["config_hash"]) == set(want["config_hash"])
    pd.testing.assert_frame_equal(leaderboard_rows(tmp_path), leaderboard_rows(local_run))


@pytest.mark.slow
def test_ray_gives_the_local_results_and_resumes(local_run, tmp_path, capsys):
    pytest.importorskip("ray")
    code, err = run([*SWEEP, "--executor", "ray", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    got, want = records(tmp_path), records(local_run)
    pd.testing.assert_frame_equal(got[SAME], want[SAME])
    assert set(got["executor"]) == {"ray"} and got["num_threads"].eq(1).all()
    pd.testing.assert_frame_equal(leaderboard_rows(tmp_path), leaderboard_rows(local_run))
    # a rerun finds every cell done (same configuration) and starts no Ray at all
    code, err = run([*SWEEP, "--executor", "ray", "--out", str(tmp_path)], capsys)
    assert code == 0 and err.count("already done") == 4 and "0 to run" in err


def write_broken_plugin(tmp_path: Path, module: str) -> str:
    (tmp_path / f"{module}.py").write_text(
        "import torch\nfrom torch import nn\nfrom zoo.registry import register_model\n"
        "class Broken(nn.Module):\n"
        "    def __init__(self, spec):\n        super().__init__()\n"
        "        self.fc = nn.Linear(64, spec['num_classes'])\n"
        "    def forward(self, x):\n        raise RuntimeError('this model always fails')\n"
        "@register_model('broken_cnn', family='baseline', kinds='classification')\n"
        "def broken_cnn(spec, size='tiny'):\n    return Broken(spec)\n")
    return module


@pytest.mark.parametrize("where", [["--jobs", "2"], ["--executor", "ray"]], ids=["jobs", "ray"])
def test_a_failed_cell_is_recorded_and_the_others_go_on(where, tmp_path, capsys, monkeypatch):
    import zoo.registry as registry
    if "ray" in where:
        pytest.importorskip("ray")
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))  # the workers import the plugin from the driver's path
    plugin = write_broken_plugin(tmp_path, f"broken_cnn_plugin_{where[-1]}")  # a new module: the registry is new
    code, err = run(["run", "vision", "--models", "resnet,broken_cnn", "--seeds", "1", "--steps", "3", "--quiet",
                     "--cpus-per-cell", "1", "--plugin", plugin, "--out", str(tmp_path / "out"), *where], capsys)
    assert code == 1 and "1 of 2 cells failed" in err, err
    broken_path = record_file(tmp_path / "out/runs/vision/digits/broken_cnn-tiny-seed0.json", failed=True)
    broken = json.loads(broken_path.read_text())
    assert broken["status"] == "failed" and "this model always fails" in broken["reason"]
    good = json.loads(record_file(tmp_path / "out/runs/vision/digits/resnet-tiny-seed0.json").read_text())
    assert good["status"] == "ok"


BAD = [
    (["--jobs", "2", "--executor", "ray"], r"--jobs is for the local executor"),
    (["--ray-address", "auto"], r"--ray-address is for --executor ray"),
    (["--gpus-per-cell", "1"], r"--gpus-per-cell is for --executor ray"),
    (["--executor", "ray", "--device", "cuda"], r"--device cuda with --executor ray needs --gpus-per-cell"),
    (["--jobs", "0"], r"argument --jobs: expected a positive integer"),
    (["--executor", "dask"], r"argument --executor: invalid choice: 'dask'"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_executor_options_are_one_line_errors(argv, message, tmp_path, capsys):
    code, err = run(["run", "vision", "--out", str(tmp_path), *argv], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    import re
    assert re.search(message, err), err


def test_ray_missing_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, err = run(["run", "vision", "--models", "resnet", "--seeds", "1", "--steps", "1", "--executor", "ray",
                     "--out", str(tmp_path)], capsys)
    assert code == 2 and 'pip install "attention-zoo[dist]"' in err and len(err.strip().splitlines()) == 2, err


@pytest.mark.parametrize("whole_group", [False, True], ids=["driver", "every-process"])
def test_sigterm_stops_the_workers_at_a_checkpoint_and_the_rerun_continues(whole_group, tmp_path,
                                                                          terminate_once_written):
    argv = [sys.executable, "-m", "harness", "run", "vision", "--models", "vit,resnet", "--seeds", "1",
            "--epochs", "12", "--jobs", "2", "--cpus-per-cell", "1", "--checkpoint-minutes", "0.0001", "--quiet",
            "--out", str(tmp_path)]
    ckpts = [tmp_path / f"runs/vision/digits/{m}-tiny-seed0-*.ckpt" for m in ("vit", "resnet")]
    code, err = terminate_once_written(argv, ckpts, ROOT, whole_group=whole_group)
    assert code == 130, err
    assert all(exists_like(c) for c in ckpts) and "Traceback" not in err, err
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for model in ("vit", "resnet"):
        record = json.loads(record_file(tmp_path / f"runs/vision/digits/{model}-tiny-seed0.json").read_text())
        assert record["resumed_from_step"] > 0 and len(record["history"]) == 12
    assert not any(exists_like(c) for c in ckpts)


def test_an_unreachable_ray_cluster_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")

    def no_cluster(**options):
        raise ConnectionError(f"Failed to connect to Ray cluster at {options['address']}")
    monkeypatch.setattr(ray, "init", no_cluster)
    code, err = run(["run", "vision", "--models", "resnet", "--seeds", "1", "--steps", "1", "--executor", "ray",
                     "--ray-address", "10.0.0.9:6379", "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 2, err  # the plan line, then the error
    assert "--ray-address 10.0.0.9:6379: cannot join that Ray cluster (Failed to connect" in err


def write_dying_plugin(tmp_path: Path, module: str, dies: str) -> str:
    """A plugin model whose worker process dies (``dies``: os._exit, a SIGKILL) when it first runs."""
    (tmp_path / f"{module}.py").write_text(
        "import os\nimport signal\nfrom torch import nn\nfrom zoo.registry import register_model\n"
        "class Dies(nn.Module):\n"
        "    def __init__(self, spec):\n        super().__init__()\n"
        "        self.fc = nn.Linear(64, spec['num_classes'])\n"
        f"    def forward(self, x):\n        {dies}\n"
        "@register_model('dying_cnn', family='baseline', kinds='classification', modalities='image')\n"
        "def dying_cnn(spec, size='tiny'):\n    return Dies(spec)\n")
    return module


@pytest.mark.slow
def test_a_worker_that_dies_fails_its_cell_alone(tmp_path, capsys, monkeypatch):
    """--jobs 2: the cell whose worker was killed (as the out-of-memory killer does: SIGKILL) is recorded
    failed, saying how; the pool is started again and the healthy cell finishes; nothing else is
    recorded FAILED. (An exit code, os._exit in a plugin, takes the same path: ``death`` words both.)"""
    dies, said = "os.kill(os.getpid(), signal.SIGKILL)", "signal SIGKILL"
    import zoo.registry as registry
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = write_dying_plugin(tmp_path, "dying_plugin", dies)
    code, err = run(["run", "vision", "--models", "resnet,dying_cnn", "--seeds", "1", "--steps", "3", "--quiet",
                     "--jobs", "2", "--cpus-per-cell", "1", "--plugin", plugin, "--out", str(tmp_path / "out")], capsys)
    assert code == 1 and "1 of 2 cells failed" in err and "Traceback" not in err, err
    assert f"a worker process died ({said}" in err and "running digits/dying_cnn seed 0" in err
    dead = json.loads(record_file(tmp_path / "out/runs/vision/digits/dying_cnn-tiny-seed0.json", failed=True).read_text())
    assert dead["reason"].startswith(f"WorkerDied: its worker process died ({said}")
    good = json.loads(record_file(tmp_path / "out/runs/vision/digits/resnet-tiny-seed0.json").read_text())
    assert good["status"] == "ok" and not list((tmp_path / "out/runs").rglob("resnet-*.failed.json"))


def test_which_cell_killed_the_pool():
    from harness.executors import blame, death
    assert blame({0: 11, 1: 12}, {11: 0, 12: 3}) == ([1], [])  # one worker died: its cell
    assert blame({0: 11, 1: 12}, {11: -9, 12: 3}) == ([], [0, 1])  # both died: each reruns alone to find out
    assert blame({0: 11, 1: 12}, {11: 0, 12: None}) == ([], [0, 1])  # how it ended is unknown: the same
    assert blame({0: 11, 1: 12}, {11: 0, 12: 0}) == ([], [0, 1])  # no worker known to have died
    assert death(3) == "exit code 3" and death(-11) == "signal SIGSEGV"
    assert death(-9).startswith("signal SIGKILL (killed")


COUNTED = '''
"""digits, counting how often its data are loaded (in this process or any other)."""
import os
from tasks.base import register_task
from tasks.vision.tasks import Digits


@register_task
class CountedDigits(Digits):
    name = "counted_digits"
    default = False

    def load(self):
        with open(os.environ["ZOO_LOADS"], "a") as f:
            f.write(f"{os.getpid()}\\n")
        super().load()
'''


def test_workers_get_the_drivers_data_instead_of_loading_it_again(tmp_path, monkeypatch, capsys):
    """--jobs 2: the driver loads the task's data once; its workers receive them with the pool."""
    import tasks as tasks_pkg
    monkeypatch.setattr(tasks_pkg.base, "_TASKS", dict(tasks_pkg.base._TASKS))  # the task leaves with the test
    (tmp_path / "counted_tasks.py").write_text(COUNTED)
    monkeypatch.syspath_prepend(str(tmp_path))
    loads = tmp_path / "loads.txt"
    monkeypatch.setenv("ZOO_LOADS", str(loads))
    code, err = run(["run", "vision", "--tasks", "counted_digits", "--models", "resnet", "--seeds", "2", "--steps",
                     "2", "--jobs", "2", "--cpus-per-cell", "1", "--quiet", "--plugin", "counted_tasks",
                     "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert len(records(tmp_path / "out")) == 2
    assert loads.read_text().split() == [str(__import__("os").getpid())]  # once, in the driver
