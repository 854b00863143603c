"""The README cannot drift from results/: its generated blocks are what results/ gives, and the main
command prints the very verdict row that results/verdicts.csv holds. (Every command of its bash
blocks runs on tiny budgets in ``scripts/readme_commands.py``, which CI runs after the tests.)"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness import sweep, verdicts
from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_generated_block_of_the_readme_is_what_results_gives():
    blocks = _script("readme_blocks")
    found = blocks.blocks((ROOT / "README.md").read_text())
    assert set(found) == set(blocks.RENDER), sorted(found)  # every block is there, and none unknown
    for name, body in found.items():
        assert body == blocks.render(name, ROOT / "results"), f"README block {name!r}: run python scripts/readme_blocks.py"


def test_a_changed_result_is_caught(tmp_path):
    """The check can fail: a verdicts.csv whose digits row moved makes the README's blocks stale."""
    blocks = _script("readme_blocks")
    shutil.copytree(ROOT / "results", tmp_path / "results", ignore=shutil.ignore_patterns("runs", "*.html", "plots"))
    table = pd.read_csv(tmp_path / "results" / "verdicts.csv")
    table.loc[table["task"] == "digits", "p_holm"] = 0.5
    table.to_csv(tmp_path / "results" / "verdicts.csv", index=False)
    text = (ROOT / "README.md").read_text()
    assert blocks.blocks(text)["verdicts"] != blocks.render("verdicts", tmp_path / "results")


def test_the_main_command_prints_the_row_verdicts_csv_holds(tmp_path, capsys, monkeypatch):
    """`python -m harness run vision` on a fresh clone (the published cells are done: it republishes).
    A cell it would train means results/ is stale (its code or configuration changed since it was
    published): that fails here at once, not after minutes of training."""
    out = tmp_path / "results"
    shutil.copytree(ROOT / "results", out, ignore=shutil.ignore_patterns("*.ckpt", "*.lock"))
    pending = sweep.pending

    def nothing_to_train(plan, threads):
        done, todo = pending(plan, threads)
        stale = [f"{c.task} {c.model} seed {c.seed}" for c in todo]
        assert not stale, f"results/ is stale, these cells would train: {stale}; run python -m harness run vision"
        return done, todo

    monkeypatch.setattr(sweep, "pending", nothing_to_train)
    assert main(["run", "vision", "--out", str(out), "--quiet"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("verdict digits")]
    table = pd.read_csv(out / "verdicts.csv")
    rows = table[(table["family"] == verdicts.HEADLINE) & (table["task"] == "digits")]
    assert len(rows) == 3 and printed == [verdicts.run_line(row) for _, row in rows.iterrows()]  # 3 families
    readme = (ROOT / "README.md").read_text()
    assert all(line in readme for line in printed)  # the README shows those lines
    assert all(re.search(r"p = \S+, Holm-adjusted \S+: ", line) for line in printed)


@pytest.mark.parametrize("line, why", [
    ("python -m harness run vision --tasks cifar10 --download --data-dir ~/data", "downloads"),
    ("torchrun --nproc_per_node 8 -m harness run vision --ddp", "8 GPUs"),
    ("python -m harness run vision --tasks image_folder --data-dir ~/my_photos", "your own data")])
def test_the_readme_command_runner_says_why_it_skips_a_line(line, why):
    assert why in _script("readme_commands").skipped(line)


def test_the_readme_command_runner_shrinks_budgets():
    runner = _script("readme_commands")
    argv = runner.tiny("python -m harness run vision --seeds 5 --epochs 30 --models vit,resnet", Path("/d"))
    assert argv[1:] == ["-m", "harness", "run", "vision", "--models", "vit,resnet", "--seeds", "1", "--steps", "2",
                        "--quiet", "--data-dir", "/d"]
    assert runner.tiny("python -m harness tune vision --trials 8 --jobs 2", Path("/d"))[-5:-3] == ["--trials", "2"]
    lines = runner.commands(ROOT / "README.md")
    assert "python -m harness run vision --force" in lines and all("#" not in line for line in lines)
