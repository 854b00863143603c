"""Studies: nested, stratified training subsets; --params / --train-fraction grids (records,
leaderboard rows, resume); the crossover rule and the power-law fit on constructed results."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness import stats, studies, verdicts
from harness.cli import main
from tasks import create_task
from tasks.base import nested_subset


def test_nested_subsets_keep_every_smaller_one_and_the_class_balance():
    labels = np.repeat(np.arange(5), [40, 30, 20, 10, 100])
    subsets = {f: nested_subset(labels, f) for f in (0.1, 0.3, 0.5, 1.0)}
    assert len(subsets[1.0]) == len(labels)
    for small, large in ((0.1, 0.3), (0.3, 0.5), (0.5, 1.0)):
        assert set(subsets[small]) <= set(subsets[large])
    for f, keep in subsets.items():
        counts = np.bincount(labels[keep], minlength=5)
        assert np.all(np.abs(counts - f * np.bincount(labels)) <= 1), (f, counts)
    assert np.array_equal(nested_subset(labels, 0.3), subsets[0.3])  # the same items every time


def test_a_task_trains_on_the_same_subset_for_every_model_and_seed():
    full = create_task("digits")
    full.load()
    part = create_task("digits", train_fraction=0.2)
    part.load()
    again = create_task("digits", train_fraction=0.2)
    again.load()
    assert torch_equal(part.images["train"], again.images["train"])
    assert len(part.labels["train"]) == pytest.approx(0.2 * len(full.labels["train"]), abs=10)
    for split in ("val", "test"):  # validation and test unchanged
        assert torch_equal(part.images[split], full.images[split])
    share = np.bincount(part.labels["train"].numpy()) / np.bincount(full.labels["train"].numpy())
    assert np.allclose(share, 0.2, atol=0.03)
    assert part.fingerprint() != full.fingerprint() and "train_fraction" not in full.fingerprint()


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_a_task_without_subsets_refuses_a_fraction(tmp_path, capsys):
    code = main(["run", "language", "--tasks", "reverse", "--train-fraction", "0.5", "--steps", "1",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 2
    assert "task 'reverse' cannot train on a fraction of its data" in capsys.readouterr().err


GRID = ["run", "vision", "--models", "resnet", "--seeds", "1", "--epochs", "1", "--quiet",
        "--params", "60k,120k", "--train-fraction", "0.25,1"]


def test_a_grid_keeps_its_points_apart_and_resumes(tmp_path, capsys):
    assert main([*GRID, "--out", str(tmp_path)]) == 0
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").rglob("*.json"))]
    points = sorted((r["params_target"], r["train_fraction"]) for r in records)
    assert points == [(60000, 0.25), (60000, 1.0), (120000, 0.25), (120000, 1.0)]
    sizes = {r["size"] for r in records}
    assert sizes == {"tiny@60k_f0.25", "tiny@60k", "tiny@120k_f0.25", "tiny@120k"}
    small = [r for r in records if r["train_fraction"] == 0.25]
    assert all(r["train_size"] < 0.3 * max(q["train_size"] for q in records) for r in small)
    board = pd.read_csv(tmp_path / "leaderboard_vision.csv")
    assert sorted(board["size"]) == sorted(sizes) and (board["rank"] == 1).all()  # one row per point, ranked there
    # half a grid lost (a crash, a deleted file): the rerun trains only the missing points
    for path in (tmp_path / "runs").rglob("resnet-tiny@120k*"):
        path.unlink()
    capsys.readouterr()
    assert main([*GRID, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("already done") == 2 and err.count("top1") >= 2
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 4


def outcomes(model: str, accuracy: list[float], n: int = 400) -> stats.Outcomes:
    """Constructed per-item outcomes: each seed right on its first round(acc * n) items."""
    value = np.array([[1.0 if i < round(a * n) else 0.0 for i in range(n)] for a in accuracy])
    return stats.Outcomes(model, list(range(len(accuracy))), np.arange(n), value, np.ones_like(value))


def study(points: list[tuple[str, int, list[float], list[float]]]) -> tuple[pd.DataFrame, dict]:
    """A data study's leaderboard rows and outcomes: (size, train items, vit accuracies, resnet ones)."""
    rows, found = [], {}
    for size, n_train, vit, resnet in points:
        for model, family, accuracy in (("vit", "transformer", vit), ("resnet", "baseline", resnet)):
            key = ("vision", "digits", model, size, "default")
            found[key] = outcomes(model, accuracy)
            rows.append({**dict(zip(["domain", "task", "model", "size", "tuning"], key)), "family": family,
                         "metric": "top1", "higher_is_better": True, "metric_mean": float(np.mean(accuracy)),
                         "n_seeds": len(accuracy), "rank": 0, "param_count": 100_000, "train_size": n_train, "train_fraction": n_train / 1000,
                         "train_flops_per_sample": 1e6, "train_samples": 60 * n_train,
                         "metric_ci_low": np.nan, "metric_ci_high": np.nan})
    board = pd.DataFrame(rows)
    board["rank"] = board.groupby("size")["metric_mean"].rank(ascending=False, method="min").astype(int)
    return board, found


def test_the_crossover_is_the_smallest_point_where_the_transformer_is_ahead():
    board, found = study([("f0.1", 100, [0.60, 0.62, 0.61], [0.80, 0.81, 0.79]),   # the CNN ahead
                          ("f0.3", 300, [0.85, 0.86, 0.85], [0.85, 0.86, 0.85]),   # level
                          ("f1", 1000, [0.97, 0.96, 0.97], [0.90, 0.91, 0.90])])   # the ViT ahead
    (rows,) = studies.grids(board).values()
    decided = verdicts.table(rows, found)
    assert set(decided["family"]) == {"study digits"} and (decided["family_size"] == 3).all()
    ((pair, table, sentence),) = studies.crossover(rows, decided)  # every point's verdict is verdicts.csv's
    assert pair == ("transformer", "baseline")
    assert list(table["verdict"]) == ["baseline ahead", "no detectable difference", "transformer ahead"]
    assert sentence.startswith("crossover at 1k training items (f1)")
    board, found = study([("f0.1", 100, [0.6, 0.61, 0.6], [0.8, 0.8, 0.81]), ("f1", 1000, [0.9, 0.9, 0.91], [0.9, 0.91, 0.9])])
    (rows,) = studies.grids(board).values()
    assert studies.crossover(rows, verdicts.table(rows, found))[0][2] == "no crossover in range (100 to 1k training items)"


def test_a_power_law_is_fitted_from_three_points():
    x = np.array([1e4, 1e5, 1e6])
    fit = studies.power_law(x, 1 - 2.0 * x ** -0.25, higher_is_better=True)  # error = 2 x^-0.25
    assert math.isclose(fit["b"], -0.25, abs_tol=1e-9) and math.isclose(fit["a"], 2.0, rel_tol=1e-9)
    assert fit["r2"] == pytest.approx(1.0)
    loss = studies.power_law(x, 5.0 * x ** -0.1, higher_is_better=False)  # a loss is fitted as it is
    assert math.isclose(loss["b"], -0.1, abs_tol=1e-9)
    assert studies.power_law(x[:2], [0.5, 0.6], True) is None
    steep = {"a": 100.0, "b": -1.0}  # 100 / x against 1 / sqrt(x): equal at x = 10^4
    assert studies.meeting_point(steep, {"a": 1.0, "b": -0.5}) == pytest.approx(1e4)
    assert studies.meeting_point(steep, {"a": 5.0, "b": -1.0}) is None


def test_the_report_has_the_study_section(tmp_path, capsys):
    assert main([*GRID[:-4], "--train-fraction", "0.25,0.5,1", "--models", "resnet,vit", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "## Studies" in text and "data (training items)" in text
    assert (tmp_path / "plots" / "vision_digits_study_samples.png").exists()
    table = pd.read_csv(tmp_path / "studies.csv")
    assert sorted(table["size"]) == ["tiny", "tiny_f0.25", "tiny_f0.5"] and set(table["axis"]) == {"samples"}
