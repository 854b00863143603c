"""The project without gymnasium and soundfile (a machine that has torch but not them, as in issue 20):
``import tasks`` and the harness still work, vision, language and the synthetic speech tasks run,
the RL tasks are still listed, and using one stops with a one-line error (exit code 2) that says
how to install what it needs; so do the file-audio speech tasks without soundfile.

Each command runs in a fresh interpreter whose ``sitecustomize`` (first on ``PYTHONPATH``) puts a
``sys.meta_path`` finder in front that refuses ``gymnasium``, ``soundfile`` and their submodules, as
if they were not installed. Tiny budgets (5 steps): the three runs take about 20 s on 2 CPU cores,
the whole file about 40 s, most of it starting Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("gymnasium", "soundfile")
SITECUSTOMIZE = f"""
import sys

BLOCKED = {BLOCKED!r}


class _NotInstalled:
    \"\"\"Finds {', '.join(BLOCKED)} (and their submodules) and refuses them, as if they were missing.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""


@pytest.fixture(scope="module")
def without(tmp_path_factory):
    """``run(*args)``: ``python *args`` in the project root, with gymnasium and soundfile not importable;
    returns the finished process (stdout and stderr as text)."""
    folder = tmp_path_factory.mktemp("without")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join([str(folder), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}  # no oversubscription on a shared machine

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return run


def harness(without, *args: str) -> subprocess.CompletedProcess:
    return without("-m", "harness", *args)


def test_the_packages_are_really_missing_there_and_the_project_imports(without):
    code = ("import importlib, sys\n"
            "for name in ('gymnasium', 'soundfile', 'gymnasium.spaces'):\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ImportError:\n"
            "        continue\n"
            "    sys.exit(f'{name} imported')\n"
            "import tasks, harness.cli, harness.bench\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('gymnasium', 'soundfile')]\n"
            "print(len(tasks.list_tasks('rl')))\n")
    proc = without("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 10  # every RL task is registered


def test_rl_tasks_are_listed(without):
    proc = harness(without, "list", "tasks")
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {"cartpole-mixed", "keytodoor-random", "gamble-random", "minari", "synth_digits", "digits"} <= names


RUNS = {
    "vision": ["--models", "vit", "--seeds", "1", "--steps", "5"],
    "language": ["--tasks", "reverse", "--models", "transformer", "--steps", "5"],
    "speech": ["--tasks", "synth_digits", "--models", "bilstm_ctc", "--steps", "5",
               "--task-opt", "utterances_per_voice=1"],  # 65 digit strings, synthesised in a few seconds
}


@pytest.mark.parametrize("domain", sorted(RUNS))
def test_a_domain_runs(domain, without, tmp_path):
    if domain == "speech":
        pytest.importorskip("espeakng_loader")  # the synthesiser (soundfile it does not need)
        pytest.importorskip("scipy")
    out = tmp_path / "results"
    proc = harness(without, "run", domain, *RUNS[domain], "--out", str(out), "--data-dir", str(tmp_path / "data"),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [p for p in (out / "runs" / domain).rglob("*.json") if not p.name.endswith(".failed.json")]
    assert len(records) == 1, records
    assert (out / f"leaderboard_{domain}.csv").exists()


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), proc.stderr
    return lines[0]


def test_an_rl_task_needs_gymnasium(without, tmp_path):
    proc = harness(without, "run", "rl", "--tasks", "cartpole-mixed", "--models", "bc_mlp", "--steps", "5",
                   "--out", str(tmp_path / "results"), "--data-dir", str(tmp_path / "data"), "--quiet")
    line = _one_line_error(proc)
    assert "offline RL needs gymnasium" in line and "pip install gymnasium" in line
    assert not list(tmp_path.rglob("*.json"))  # nothing trained, no dataset made


def test_a_file_audio_task_needs_soundfile(without, tmp_path):
    (tmp_path / "sounds" / "a").mkdir(parents=True)
    proc = harness(without, "run", "speech", "--tasks", "audio_folder", "--models", "kws_resnet", "--steps", "5",
                   "--out", str(tmp_path / "results"), "--data-dir", str(tmp_path / "sounds"), "--quiet")
    line = _one_line_error(proc)
    assert "audio_folder needs soundfile" in line and "pip install soundfile" in line
