"""One cell on several processes: torchrun + DistributedDataParallel over gloo on the CPU gives the
steps of a one-process run with the same global batch; only rank 0 writes; bad launches are errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import exists_like, record_file
import torch

import harness.distributed as distributed
from harness.cli import main
from harness.distributed import Group

ROOT = Path(__file__).resolve().parents[1]
CELL = ["run", "vision", "--models", "vit", "--seeds", "1", "--epochs", "3", "--model-opt", "dropout=0", "--quiet"]


def test_shard_gives_each_rank_its_part_of_every_complete_round():
    batches = [(torch.zeros(n),) for n in (32, 32, 32, 9, 5)]  # rounds of 2: (32, 32), (32, 9); 5 is left over
    got = {rank: [(len(b[0]), w) for b, w in Group(rank, 2).shard(batches)] for rank in (0, 1)}
    assert got[0] == [(32, 1.0), (32, 2 * 32 / 41)]
    assert got[1] == [(32, 1.0), (9, 2 * 9 / 41)]
    # the ranks' weighted mean losses average (as DDP averages gradients) to the mean over the round
    losses = torch.rand(41)
    (w0, w1) = got[0][1][1], got[1][1][1]
    assert (w0 * losses[:32].mean() + w1 * losses[32:].mean()) / 2 == pytest.approx(losses.mean().item(), rel=1e-6)
    assert [(len(b[0]), w) for b, w in Group().shard(batches)] == [(n, 1.0) for n in (32, 32, 32, 9, 5)]


def test_ddp_needs_torchrun(tmp_path, capsys, monkeypatch):
    for var in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    assert main([*CELL, "--ddp", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--ddp needs the processes that torchrun starts: torchrun --nproc_per_node N" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "63"], r"task 'digits' has batch size 63, not divisible by 2; pass --batch-size"),
    (["--jobs", "2"], r"--ddp trains one cell on all of torchrun's processes; it takes no --jobs"),
])
def test_bad_ddp_runs_are_one_line_errors(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(distributed, "init", lambda device: Group(0, 2))  # no process group: it fails before one
    assert main([*CELL, "--ddp", *extra, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    import re
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_two_gloo_processes_take_the_steps_of_one(tmp_path, capsys):
    assert main([*CELL, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "harness", *CELL, "--ddp", "--out", str(tmp_path / "two")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("to run in 2 DDP processes") == 1  # rank 0 speaks for the group
    runs = tmp_path / "two" / "runs"
    assert sorted(re.sub(r"-[0-9a-f]{12}\.", ".", p.name) for p in runs.rglob("*") if p.is_file()) == \
        ["vit-tiny-seed0.items.npz", "vit-tiny-seed0.json"]  # the record and its per-item file; no rank checkpoints
    one = json.loads(record_file(tmp_path / "one/runs/vision/digits/vit-tiny-seed0.json").read_text())
    two = json.loads(record_file(runs / "vision/digits/vit-tiny-seed0.json").read_text())
    assert two["config"]["world_size"] == 2 and two["executor"] == "ddp" and "world_size" not in one["config"]
    assert two["train_samples"] == one["train_samples"]  # counted over both ranks
    assert [h["train_loss"] for h in two["history"]] == pytest.approx([h["train_loss"] for h in one["history"]],
                                                                      rel=1e-4)
    assert two["metric_value"] == pytest.approx(one["metric_value"], abs=0.02)


@pytest.mark.slow
def test_a_stopped_ddp_cell_checkpoints_every_rank_and_the_rerun_continues(tmp_path, terminate_once_written):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "harness",
            "run", "vision", "--models", "vit", "--seeds", "1", "--epochs", "12", "--ddp", "--quiet",
            "--checkpoint-minutes", "0.0001", "--out", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    folder = tmp_path / "runs/vision/digits"
    ckpts = [folder / f"vit-tiny-seed0-*.ckpt.rank{r}" for r in (0, 1)]
    _, err = terminate_once_written(argv, ckpts, ROOT, env)  # torchrun passes SIGTERM on to both ranks
    assert all(exists_like(c) for c in ckpts) and "saved a checkpoint" in err, err[-3000:]
    assert not exists_like(folder / "vit-tiny-seed0-*.json")
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(record_file(folder / "vit-tiny-seed0.json").read_text())
    assert record["resumed_from_step"] > 0 and len(record["history"]) == 12
    assert not any(exists_like(c) for c in ckpts)


def test_ddp_is_told_about_parameters_a_training_step_leaves_without_gradient():
    from harness.measure import has_unused_parameters
    from tasks import create_task
    from zoo.registry import create_model
    task = create_task("digits")
    task.setup()
    model = create_model("vit", task.spec)
    assert not has_unused_parameters(task, model, 8, torch.device("cpu"))
    model.unused_head = torch.nn.Linear(4, 4)  # like the Decision Transformer's return and state heads
    assert has_unused_parameters(task, model, 8, torch.device("cpu"))
    assert all(p.grad is None for p in model.parameters())  # probed on a copy
