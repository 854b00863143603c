"""scripts/gpu_check.sh works the first time on a lent GPU machine: its --cpu-dry-run runs the very
same steps on the CPU with a tiny budget (CUDA tests collected and skipped, the bench, the fast path
on and off for vision and language at their sizes, speech), here, with python3, so that CI proves the
script before any GPU is lent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_and_writes_its_tables(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "ATTENTION_ZOO_DATA": str(tmp_path / "data")}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu-dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    for table in ("bench_attention_cpu.csv", "bench_mixer_cpu.csv", "bench_cpu.csv", "bench_reference_cpu.csv"):
        assert (out / table).is_file(), table
    fast = pd.read_csv(out / "fast_path.csv")
    assert set(fast["task"]) == {"image_folder", "pystdlib"} and set(fast["fast_path"]) == {"on", "off"}
    assert len(fast) == 12 and (fast["train_samples_per_sec"] > 0).all()  # 3 vision and 3 language models, on and off
    assert (out / "speech" / "leaderboard_speech.csv").is_file()
    assert not (ROOT / "results_gpu").exists()


def test_gpu_check_rejects_an_unknown_mode():
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--fast"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "usage: bash scripts/gpu_check.sh [--cpu-dry-run]" in done.stderr
