"""The harness end to end on digits: leaderboard, records, merging, report, errors, Ctrl-C, plugins."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_items_reproduce, exists_like, record_file

import harness.cli as cli
import harness.suite as suite
import harness.trainer as trainer
import zoo.registry as registry
from harness import leaderboard
from harness.cli import main
from harness.config import RunConfig
from harness.records import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--epochs", "1", "--quiet"]




def run(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_run_vision_writes_leaderboard_and_records(tmp_path, capsys):
    code, out, err = run(["run", "vision", "--seeds", "2", "--out", str(tmp_path), *FAST], capsys)
    assert code == 0, err
    df = pd.read_csv(tmp_path / "leaderboard_vision.csv")
    assert list(df.columns) == leaderboard.COLUMNS + ["test_loss", "test_top5"]  # the task's other metrics
    assert ((df["test_top5"] >= df["metric_mean"]) & (df["test_loss"] > 0)).all()
    assert sorted(df["model"]) == ["resnet", "vim", "vit"]  # every model the task serves, the SSM among them
    assert set(df["task"]) == {"digits"} and set(df["n_seeds"]) == {2} and set(df["seeds"]) == {"0 1"}
    assert set(df["family"]) == {"transformer", "baseline", "ssm"}
    assert min(df["rank"]) == 1 and max(df["rank"]) <= 3
    assert ((df["metric_mean"] > 0.1) & (df["metric_mean"] <= 1)).all()  # one epoch: better than chance
    assert (df["param_count"] > 100_000).all() and (df["train_samples_per_sec"] > 0).all()
    assert set(df["device"]) == {"cpu"} and set(df["backend"]) == {"sdpa"} and set(df["precision"]) == {"fp32"}
    assert (tmp_path / "leaderboard_vision.md").read_text().startswith("| task | rank | model")
    records = sorted((tmp_path / "runs" / "vision" / "digits").glob("*.json"))
    names = [re.sub(r"-[0-9a-f]{12}\.json$", ".json", p.name) for p in records]  # without the config hash
    assert names == [f"{m}-tiny-seed{s}.json" for m in ("resnet", "vim", "vit") for s in (0, 1)]
    record = json.loads(records[-1].read_text())
    for key in ("metric_value", "test", "history", "param_count", "train_time_s", "device", "backend",
                "precision", "torch_version", "git_commit", "config", "config_hash", "seed", "started"):
        assert key in record, key
    assert record["config"]["lr"] == registry.get_model_entry("vit").defaults["lr"]
    assert len(record["history"]) == 1 and "val_top1" in record["history"][0]
    assert "digits" in out and "vit" in out  # the printed leaderboard
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave nothing behind
    assert assert_items_reproduce(tmp_path) == {"digits": "classification"}
    with np.load(records[-1].with_name(record["items_file"])) as items:  # per test image: right, predicted, true
        assert len(items["item"]) == 360 and ((items["pred"] == items["label"]) == items["value"]).all()
    verdicts = pd.read_csv(tmp_path / "verdicts.csv")  # the report's verdict, from the per-item files
    pairs = {frozenset(p) for p in zip(verdicts["model_a"], verdicts["model_b"])}  # one per pair of families
    assert pairs == {frozenset(p) for p in (("vit", "resnet"), ("vit", "vim"), ("vim", "resnet"))}
    assert set(verdicts["test"]) == {"seeds and items"}

    # A second run of one model with another configuration replaces that row (its mean, seeds and interval
    # come from the new records only) and keeps the other.
    code, _, err = run(["run", "vision", "--models", "vit", "--seeds", "1", "--out", str(tmp_path), *FAST,
                        "--lr", "1e-3"], capsys)
    assert code == 0, err
    df2 = pd.read_csv(tmp_path / "leaderboard_vision.csv").set_index("model")
    assert sorted(df2.index) == ["resnet", "vim", "vit"]
    assert df2.loc["vit", "n_seeds"] == 1 and str(df2.loc["vit", "seeds"]) == "0" and df2.loc["resnet", "n_seeds"] == 2

    # report rebuilds the leaderboard from every record on disk.
    code, out, _ = run(["report", "--out", str(tmp_path)], capsys)
    assert code == 0 and "leaderboard_vision.csv" in out


def test_same_seed_same_result(tmp_path, capsys):
    results = []
    for name in ("a", "b"):
        assert run(["run", "vision", "--models", "vit", "--seeds", "1", "--steps", "5", "--quiet",
                    "--out", str(tmp_path / name)], capsys)[0] == 0
        results.append(json.loads(record_file(tmp_path / name / "runs/vision/digits/vit-tiny-seed0.json").read_text()))
    assert results[0]["test"] == results[1]["test"]
    assert results[0]["config"]["total_steps"] == 5


def test_math_backend_and_model_options_are_recorded(tmp_path, capsys):
    code, _, err = run(["run", "vision", "--models", "vit", "--seeds", "1", "--steps", "3", "--backend", "math",
                        "--model-opt", "depth=1", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0, err
    record = json.loads(record_file(tmp_path / "runs/vision/digits/vit-tiny-seed0.json").read_text())
    assert record["backend"] == "math" and record["config"]["model_options"] == {"depth": 1}
    assert record["param_count"] < 50_000


def write_plugin(tmp_path: Path, kinds: str) -> str:
    (tmp_path / "lm_only_plugin.py").write_text(
        "from torch import nn\nfrom zoo.registry import register_model\n"
        f"@register_model('lm_only', family='baseline', kinds={kinds})\n"
        "def lm_only(spec, size='tiny'):\n    return nn.Identity()\n")
    return "lm_only_plugin"


BAD_INPUTS = [
    (["run", "visoin"], r"unknown domain 'visoin'; did you mean: vision\?"),
    (["run", "vision", "--tasks", "digts"], r"unknown task 'digts'; did you mean: digits\b"),
    (["run", "vision", "--models", "vti"], r"unknown model 'vti'; did you mean: vit, vim\?"),
    (["run", "vision", "--models", "lm_only", "--plugin", "PLUGIN"], r"model 'lm_only' serves language_modeling"),
    (["run", "vision", "--models", "zzz*"], r"no model matching 'zzz\*'"),
    (["run", "vision", "--plugin", "no_such_plugin_mod"], r"plugin module 'no_such_plugin_mod' not found"),
    (["run", "vision", "--tasks", "mnist", "--data-dir", "EMPTY"], r"mnist: no dataset under .*--download"),
    (["run", "vision", "--seeds", "0"], r"argument --seeds: expected a positive integer, got '0'"),
    (["run", "vision", "--epochs", "x"], r"argument --epochs: expected a positive integer, got 'x'"),
    (["run", "vision", "--epochs", "1", "--steps", "1"], r"not allowed with argument"),
    (["run", "vision", "--backend", "flash"], r"argument --backend: invalid choice: 'flash'"),
    (["run", "vision", "--lr", "-1"], r"argument --lr: expected a positive number"),
    (["run", "vision", "--task-opt", "size"], r"expected KEY=VALUE"),
    (["run", "vision", "--task-opt", "image_size=3"], r"no selected task has such an option"),
    (["run", "vision", "--model-opt", "layers=3"], r"model .* for task .digits.: unknown config key\(s\) layers"),
    (["run", "vision", "--models", "vit", "--model-opt", "patch_size=3"], r"not divisible by patch size 3"),
    (["run", "vision", "--out", "A_FILE"], r"--out .*: not a writable directory"),
    (["list", "things"], r"argument what: invalid choice"),
    (["run", "vision", "--params", "5"], r"model 'resnet' for task 'digits': cannot fit model 'resnet' to 5 param"),
    (["run", "vision", "--params", "3q"], r"argument --params: bad parameter count '3q'"),
    (["run", "vision", "--models", "vit", "--params", "100k", "--model-opt", "dim=32"], r"override"),
    (["run"], r"run needs a DOMAIN"),
    (["run", "--config", "EMPTY/none.toml"], r"--config .*none.toml: cannot read it"),
    (["run", "vision", "--config", "EMPTY/none.toml"], r"give a DOMAIN or --config, not both"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(argv, message, tmp_path, capsys, monkeypatch, clean_registry):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("")
    subst = {"PLUGIN": write_plugin(tmp_path, "('language_modeling',)"), "EMPTY": str(tmp_path / "empty"),
             "A_FILE": str(tmp_path / "a_file")}
    argv = [subst.get(a, a) for a in argv]
    if "--out" not in argv and argv[0] == "run":
        argv += ["--out", str(tmp_path / "results")]
    code, out, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("harness: error: ") and re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "results" / "runs").exists()  # nothing trained


def test_cli_entry_point_exit_code_and_single_line():
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "nosuchdomain"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("harness: error: unknown domain 'nosuchdomain'")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_ctrl_c_keeps_finished_cells(tmp_path, capsys, monkeypatch):
    real_run_cell = trainer.run_cell
    calls = []

    def interrupted_after_two(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run_cell(*args, **kwargs)

    monkeypatch.setattr(trainer, "run_cell", interrupted_after_two)
    code, out, err = run(["run", "vision", "--models", "resnet,vit", "--seeds", "2", "--steps", "2", "--quiet",
                          "--out", str(tmp_path)], capsys)
    assert code == 130
    assert "interrupted; 2 of 4 cells finished" in err
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 2
    df = pd.read_csv(tmp_path / "leaderboard_vision.csv")
    assert list(df["model"]) == ["resnet"] and list(df["n_seeds"]) == [2]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "board.csv"
    atomic_write_text(path, "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["board.csv"]


def test_list(capsys):
    assert run(["list", "models"], capsys)[1].count("\n") >= 2
    out = run(["list", "tasks", "*mnist"], capsys)[1]
    assert [line.split()[0] for line in out.splitlines()] == ["fashion_mnist", "mnist"]
    assert "vision" in run(["list", "domains"], capsys)[1]


def readme_plugin_example() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(# my_models\.py\n.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "README must hold exactly one '# my_models.py' example"
    return blocks[0]


def test_readme_plugin_is_listed_fitted_trained_and_reported(tmp_path, capsys, monkeypatch, clean_registry):
    """The README's complete plugin (family 'mlp', image inputs, a width knob) needs no edit of the
    zoo: it is listed, only offered to image tasks, fitted by --params, trained and reported."""
    code_text = readme_plugin_example()
    assert len(code_text.strip().splitlines()) <= 30
    (tmp_path / "my_models.py").write_text(code_text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    assert "python -m harness run vision --plugin my_models --params 100k" in (ROOT / "README.md").read_text()
    code, out, err = run(["list", "models", "m*", "--plugin", "my_models"], capsys)
    assert code == 0 and re.search(r"^mlp\s+mlp\s+classification\[image\]\s+Multi-layer perceptron", out, re.M), out
    assert "mlp" in registry.list_models(kind="classification", modality="image")
    assert "mlp" not in registry.list_models(kind="classification", modality="audio")
    code, out, err = run(["run", "vision", "--plugin", "my_models", "--params", "100k", "--seeds", "1",
                          "--steps", "2", "--quiet", "--out", str(tmp_path / "results")], capsys)
    assert code == 0, err
    df = pd.read_csv(tmp_path / "results" / "leaderboard_vision.csv").set_index("model")
    assert sorted(df.index) == ["mlp", "resnet", "vim", "vit"]
    assert df.loc["mlp", "family"] == "mlp" and set(df["size"]) == {"tiny@100k"}
    assert ((df["param_count"] - 100_000).abs() <= 10_000).all(), df["param_count"]
    record = json.loads(record_file(tmp_path / "results/runs/vision/digits/mlp-tiny@100k-seed0.json").read_text())
    assert record["config"]["fitted"]["hidden"] > PRESET_HIDDEN and record["status"] == "ok"
    report_text = (tmp_path / "results" / "REPORT.md").read_text()
    assert "mlp" in report_text and "(provisional: one seed" in report_text
    pairs = pd.read_csv(tmp_path / "results" / "verdicts.csv")[["family_a", "family_b"]]
    families = ("transformer", "ssm", "baseline", "mlp")  # an open family: its own rows, no baseline
    assert len(pairs) == 6 and set(map(frozenset, pairs.values)) == {
        frozenset((a, b)) for i, a in enumerate(families) for b in families[i + 1:]}


PRESET_HIDDEN = 128  # the README plugin's tiny width: 100k parameters need a wider one


def test_readme_first_lines_give_install_and_test_commands():
    head = (ROOT / "README.md").read_text().split("## ")[0]
    assert "pip install -e \".[dev]\"" in head and "python -m harness run vision" in head
    assert "python -m pytest -q" in head
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci


def test_report_never_averages_seeds_of_different_configs(tmp_path, capsys):
    """seeds 0-1 at 3 steps, then seed 0 again at 4 steps: report shows only the 4-step config."""
    common = ["run", "vision", "--models", "resnet", "--quiet", "--out", str(tmp_path)]
    assert run([*common, "--seeds", "2", "--steps", "3"], capsys)[0] == 0
    assert run([*common, "--seeds", "1", "--steps", "4"], capsys)[0] == 0
    assert run(["report", "--out", str(tmp_path)], capsys)[0] == 0
    df = pd.read_csv(tmp_path / "leaderboard_vision.csv")
    assert list(df["n_seeds"]) == [1] and list(df["seeds"].astype(str)) == ["0"]


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, capsys, monkeypatch):
    real_run_cell = trainer.run_cell

    def crash_on_vit(task, model, seed, config, **kwargs):
        if model == "vit":
            raise RuntimeError("boom")
        return real_run_cell(task, model, seed, config, **kwargs)

    monkeypatch.setattr(trainer, "run_cell", crash_on_vit)
    code, _, err = run(["run", "vision", "--models", "resnet,vit", "--seeds", "1", "--steps", "2", "--quiet",
                        "--out", str(tmp_path)], capsys)
    assert code == 1 and "1 of 2 cells failed" in err and "digits/vit/seed 0" in err
    assert list(pd.read_csv(tmp_path / "leaderboard_vision.csv")["model"]) == ["resnet"]
    failed = json.loads(record_file(tmp_path / "runs/vision/digits/vit-tiny-seed0.json", failed=True).read_text())
    assert failed["status"] == "failed" and failed["reason"] == "RuntimeError: boom" and "boom" in failed["traceback"]
    # the failed cell is not "done": the next run tries it again
    monkeypatch.setattr(trainer, "run_cell", real_run_cell)
    code, _, err = run(["run", "vision", "--models", "resnet,vit", "--seeds", "1", "--steps", "2", "--quiet",
                        "--out", str(tmp_path)], capsys)
    assert code == 0 and "resnet seed 0: already done" in err and "vit seed 0: top1" in err


def test_a_diverging_model_fails_with_its_reason(tmp_path, capsys, monkeypatch, clean_registry):
    @registry.register_model("nan_model", family="baseline", kinds=("classification",))
    def nan_model(spec, size="tiny"):
        import torch
        from torch import nn

        class NaN(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, spec["num_classes"])

            def forward(self, x):
                return self.fc(x.flatten(1)) * torch.tensor(float("nan"))
        return NaN()

    code, _, err = run(["run", "vision", "--models", "nan_model,resnet", "--seeds", "1", "--steps", "2", "--quiet",
                        "--out", str(tmp_path)], capsys)
    assert code == 1
    record = json.loads(record_file(tmp_path / "runs/vision/digits/nan_model-tiny-seed0.json", failed=True).read_text())
    assert record["status"] == "failed" and record["reason"].startswith("TrainingDiverged: training loss became nan")
    assert list(pd.read_csv(tmp_path / "leaderboard_vision.csv")["model"]) == ["resnet"]


def test_an_interrupted_sweep_reruns_only_the_missing_cells(tmp_path, capsys, monkeypatch):
    real_run_cell = trainer.run_cell
    calls = []

    interrupted = []

    def counted(task, model, seed, config, **kwargs):
        calls.append((model, seed))
        if len(calls) == 3 and not interrupted:
            interrupted.append(1)
            raise KeyboardInterrupt
        return real_run_cell(task, model, seed, config, **kwargs)

    monkeypatch.setattr(trainer, "run_cell", counted)
    argv = ["run", "vision", "--models", "resnet,vit", "--seeds", "2", "--steps", "2", "--quiet", "--out", str(tmp_path)]
    assert run(argv, capsys)[0] == 130
    assert calls == [("resnet", 0), ("resnet", 1), ("vit", 0)]
    calls.clear()
    code, _, err = run(argv, capsys)
    assert code == 0 and calls == [("vit", 0), ("vit", 1)]
    assert err.count("already done") == 2
    df = pd.read_csv(tmp_path / "leaderboard_vision.csv")
    assert sorted(df["model"]) == ["resnet", "vit"] and set(df["n_seeds"]) == {2}
    calls.clear()
    assert run([*argv, "--force"], capsys)[0] == 0 and len(calls) == 4          # --force redoes them
    calls.clear()
    other = [*argv[:-1], str(tmp_path)]
    other[other.index("--steps") + 1] = "3"  # another config
    assert run(other, capsys)[0] == 0 and len(calls) == 4


def test_a_corrupt_record_is_ignored_and_its_cell_rerun(tmp_path, capsys):
    argv = ["run", "vision", "--models", "resnet", "--seeds", "1", "--steps", "2", "--quiet", "--out", str(tmp_path)]
    assert run(argv, capsys)[0] == 0
    path = record_file(tmp_path / "runs/vision/digits/resnet-tiny-seed0.json")
    path.write_text("{ not json")
    code, _, err = run(argv, capsys)
    assert code == 0 and "ignoring unreadable record" in err and "resnet seed 0: top1" in err
    assert json.loads(path.read_text())["status"] == "ok"
    (tmp_path / "runs/vision/digits/stray.json").write_text("[1, 2]")     # report skips what is not a record
    code, out, err = run(["report", "--out", str(tmp_path)], capsys)
    assert code == 0 and "skipping unreadable record" in err


def test_checkpoint_resume_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    from tasks import create_task

    task = create_task("digits")
    task.setup()
    config = RunConfig(epochs=3)
    whole = trainer.run_cell(task, "vit", 0, config, progress=False)

    real_evaluate = trainer.evaluate
    calls = []

    def killed_in_second_validation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    ckpt = tmp_path / "cell.ckpt"
    monkeypatch.setattr(trainer, "evaluate", killed_in_second_validation)
    with pytest.raises(KeyboardInterrupt):
        trainer.run_cell(task, "vit", 0, config, progress=False, checkpoint=ckpt, checkpoint_every_s=0)
    assert ckpt.exists()
    monkeypatch.setattr(trainer, "evaluate", real_evaluate)
    resumed = trainer.run_cell(task, "vit", 0, config, progress=False, checkpoint=ckpt, checkpoint_every_s=0)
    assert resumed["resumed_from_step"] == whole["config"]["steps_per_epoch"]
    assert resumed["test"] == whole["test"]
    assert [h["val_top1"] for h in resumed["history"]] == [h["val_top1"] for h in whole["history"]]
    assert not ckpt.exists()                                              # deleted once the cell finished
    # a checkpoint of another configuration is not used
    ckpt.write_bytes(b"not a checkpoint")
    again = trainer.run_cell(task, "vit", 0, RunConfig(steps=2), progress=False, checkpoint=ckpt)
    assert again["resumed_from_step"] is None


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_rerun_continues(tmp_path, terminate_once_written):
    argv = [sys.executable, "-m", "harness", "run", "vision", "--models", "vit", "--seeds", "1", "--epochs", "40",
            "--checkpoint-minutes", "0.0001", "--quiet", "--out", str(tmp_path)]
    ckpt = tmp_path / "runs/vision/digits/vit-tiny-seed0-*.ckpt"
    code, err = terminate_once_written(argv, [ckpt], ROOT)
    assert code == 130, err
    assert exists_like(ckpt) and "saved a checkpoint" in err
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(record_file(tmp_path / "runs/vision/digits/vit-tiny-seed0.json").read_text())
    assert record["resumed_from_step"] > 0 and not exists_like(ckpt)
    assert len(record["history"]) == 40


def test_deterministic_flag_gives_identical_results(tmp_path, capsys):
    import torch
    results = []
    for name in ("a", "b"):
        assert run(["run", "vision", "--models", "resnet", "--seeds", "1", "--steps", "6", "--deterministic",
                    "--quiet", "--out", str(tmp_path / name)], capsys)[0] == 0
        results.append(json.loads(record_file(tmp_path / name / "runs/vision/digits/resnet-tiny-seed0.json").read_text()))
    assert results[0]["test"] == results[1]["test"] and results[0]["history"] == [
        {**h, "train_time_s": results[0]["history"][i]["train_time_s"]} for i, h in enumerate(results[1]["history"])]
    assert results[0]["config"]["deterministic"] is True
    assert torch.are_deterministic_algorithms_enabled()
    assert run(["run", "vision", "--models", "resnet", "--seeds", "1", "--steps", "2", "--quiet",
                "--out", str(tmp_path / "c")], capsys)[0] == 0
    assert not torch.are_deterministic_algorithms_enabled()


def test_params_fits_every_model_and_records_the_fitted_config(tmp_path, capsys):
    code, _, err = run(["run", "vision", "--params", "60k", "--seeds", "1", "--steps", "2", "--quiet",
                        "--out", str(tmp_path)], capsys)
    assert code == 0, err
    for model in ("resnet", "vit"):
        r = json.loads(record_file(tmp_path / f"runs/vision/digits/{model}-tiny@60k-seed0.json").read_text())
        assert abs(r["param_count"] - 60_000) <= 6_000 and r["size"] == "tiny@60k"
        assert r["config"]["params_target"] == 60_000 and r["config"]["fitted"]
        assert r["config"]["model_options"] == r["config"]["fitted"]
    assert set(pd.read_csv(tmp_path / "leaderboard_vision.csv")["size"]) == {"tiny@60k"}


def test_report_writes_report_md_and_plots(tmp_path, capsys):
    assert run(["run", "vision", "--seeds", "2", "--steps", "3", "--quiet", "--out", str(tmp_path)], capsys)[0] == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "digits" in text and "vit" in text and "resnet" in text
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert {"vision_digits_params.png", "vision_digits_time.png", "vision_digits_curves.png"} <= set(pngs)
    (tmp_path / "REPORT.md").unlink()
    code, out, _ = run(["report", "--out", str(tmp_path)], capsys)
    assert code == 0 and (tmp_path / "REPORT.md").exists() and "REPORT.md" in out
    df = pd.read_csv(tmp_path / "leaderboard_vision.csv")
    assert {"metric_ci95", "metric_ci_low", "metric_ci_high", "rank_tie", "flops_per_sample",
            "peak_mem_mb"} <= set(df.columns)
    assert df["metric_ci95"].notna().all() and (df["flops_per_sample"] > 0).all()


def test_cost_columns_are_recorded(tmp_path, capsys):
    assert run(["run", "vision", "--models", "resnet,vit", "--seeds", "1", "--steps", "2", "--quiet",
                        "--out", str(tmp_path)], capsys)[0] == 0
    for model in ("resnet", "vit"):
        r = json.loads(record_file(tmp_path / f"runs/vision/digits/{model}-tiny-seed0.json").read_text())
        assert r["train_flops_per_sample"] > 2 * r["flops_per_sample"] > 0       # backward ~ 2x forward
        assert r["infer_samples_per_sec"] > 0 and r["peak_mem_mb"] > 10
        assert r["target"] == 0.95 and r["time_to_target_s"] is None             # 2 steps: not reached


SUITE = """
[[run]]
domain = "vision"
models = ["resnet"]
seeds = 1
steps = 2

[[run]]
domain = "vision"
models = ["vit"]
seeds = 1
steps = 2
model_opt = {depth = 1}
"""


def test_suite_file_runs_its_tables_in_order(tmp_path, capsys):
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    code, _, err = run(["run", "--config", str(suite), "--out", str(tmp_path / "res"), "--quiet"], capsys)
    assert code == 0, err
    df = pd.read_csv(tmp_path / "res" / "leaderboard_vision.csv")
    assert sorted(df["model"]) == ["resnet", "vit"]
    vit = json.loads(record_file(tmp_path / "res/runs/vision/digits/vit-tiny-seed0.json").read_text())
    assert vit["config"]["model_options"] == {"depth": 1} and vit["config"]["total_steps"] == 2


def test_suite_runs_take_the_command_lines_executor_flags(tmp_path):
    """--jobs, --cpus-per-cell, --executor ... given with --config reach every [[run]] (they were
    once dropped silently, and the suite ran one cell at a time)."""
    from harness.cli import TableParser, build_parser
    from harness.options import RunOptions
    from harness.suite import suite_options
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    args = RunOptions.of(vars(build_parser().parse_args(["run", "--config", str(suite), "--jobs", "2",
                                                         "--cpus-per-cell", "1", "--quiet"])))
    table_parser = build_parser(TableParser)
    plans = suite_options(suite, args, lambda argv: RunOptions.of(vars(table_parser.parse_args(["run", *argv]))))
    assert [(p.jobs, p.cpus_per_cell, p.executor, p.quiet) for p in plans] == [(2, 1.0, "local", True)] * 2


@pytest.mark.parametrize("text, message", [
    ("[[run]\ndomain = 'vision'", "not valid TOML"),
    ("title = 'no runs'", r"expected one or more \[\[run\]\] tables"),
    ("[[run]]\ndomain = 'vision'\nepochz = 3", r"unknown key\(s\) epochz; accepted: "),
    ("[[run]]\nmodels = ['vit']", "has no domain"),
    ("[[run]]\ndomain = 'visoin'", "unknown domain 'visoin'"),
])
def test_bad_suite_files_are_one_line_errors(text, message, tmp_path, capsys):
    suite = tmp_path / "suite.toml"
    suite.write_text(text)
    code, _, err = run(["run", "--config", str(suite), "--out", str(tmp_path / "res")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err), err


def test_shipped_suites_parse_and_cover_every_domain():
    import tasks
    suites = sorted((ROOT / "suites").glob("*.toml"))
    names = {p.stem for p in suites}
    assert set(tasks.list_domains()) | {"all"} <= names
    parser = cli.build_parser()
    for path in suites:
        for argv in suite.suite_runs(path):
            args = parser.parse_args(["run", *argv])
            assert args.domain in tasks.list_domains(), path
    assert {a[0] for a in suite.suite_runs(ROOT / "suites" / "all.toml")} == set(tasks.list_domains())


def test_two_runs_sharing_an_output_folder_keep_both_rows(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "harness", "run", "vision", "--models", model, "--seeds", "1",
                               "--steps", "2", "--quiet", "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for model in ("resnet", "vit")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert sorted(pd.read_csv(tmp_path / "leaderboard_vision.csv")["model"]) == ["resnet", "vit"]


def test_gradient_accumulation_gives_the_same_updates():
    """The OOM fallback's micro-batches: 2 x 32 accumulated = one batch of 64 (no dropout, no BatchNorm)."""
    import harness.trainer as trainer
    from tasks import create_task
    task = create_task("digits")
    task.setup()
    common = dict(steps=4, model_opts=(("dropout", 0.0),))
    whole = trainer.run_cell(task, "vit", 0, RunConfig(**common), progress=False)
    split = trainer.run_cell(task, "vit", 0, RunConfig(**common, accumulation=2), progress=False)
    assert split["accumulation"] == 2 and split["train_samples"] == whole["train_samples"] == 4 * 64
    assert abs(split["test"]["loss"] - whole["test"]["loss"]) < 1e-4
    assert abs(split["history"][-1]["train_loss"] - whole["history"][-1]["train_loss"]) < 1e-4


def test_fp16_trains_with_a_gradient_scaler_on_cpu(tmp_path, capsys):
    code, _, err = run(["run", "vision", "--models", "resnet", "--seeds", "1", "--steps", "3", "--precision", "fp16",
                        "--quiet", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    record = json.loads(record_file(tmp_path / "runs/vision/digits/resnet-tiny-seed0.json").read_text())
    assert record["precision"] == "fp16" and 0 <= record["metric_value"] <= 1


def test_compile_flag_compiles_the_training_model(tmp_path, capsys, monkeypatch):
    import torch
    compiled = []

    def fake_compile(model, *args, **kwargs):  # the real one needs a C++ toolchain and minutes on CPU
        compiled.append(type(model).__name__)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    code, _, err = run(["run", "vision", "--models", "vit", "--seeds", "1", "--steps", "2", "--compile", "--quiet",
                        "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert compiled == ["VisionTransformer"]
    assert json.loads(record_file(tmp_path / "runs/vision/digits/vit-tiny-seed0.json").read_text())["config"]["compile"] is True


class Terminal(__import__("io").StringIO):
    def isatty(self) -> bool:  # tqdm draws only on a terminal
        return True


def test_the_sweep_bar_counts_cells_done_running_and_waiting(monkeypatch):
    from harness import executors
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    bar = executors.OverallBar(total=3, slots=2, enabled=True)
    assert bar.bar.postfix == "2 running, 1 waiting"
    bar.advance()
    assert bar.bar.postfix == "2 running, 0 waiting"
    bar.advance()
    assert bar.bar.postfix == "1 running, 0 waiting"
    bar.advance()
    bar.close()
    shown = screen.getvalue()
    assert "sweep: 100%" in shown and "3/3" in shown and "0 running, 0 waiting" in shown
    quiet = executors.OverallBar(total=3, slots=1, enabled=False)
    assert quiet.bar.disable
