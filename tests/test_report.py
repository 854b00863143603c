"""Uncertainty in the leaderboard (Student t intervals, ties), cost columns, Pareto fronts, REPORT.md
and its plots. Hand-made records only: no training, a few seconds in all."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scipy import stats as scipy_stats

from harness import leaderboard, report, stats, verdicts

T_975_2 = 4.302653  # t_{0.975} with 2 degrees of freedom
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def record(task="digits", model="vit", seed=0, value=0.9, *, domain="vision", family=None, metric="top1",
           higher=True, params=100_000, time_s=10.0, history=None, **extra):
    """A minimal successful cell record, as harness.trainer writes it (older runs: no cost fields)."""
    family = family or ("transformer" if model in ("vit", "gpt", "transformer") else "baseline")
    if history is None:
        history = [{"step": 10 * e, "epoch": float(e), "train_loss": 1.0 / e, f"val_{metric}": value * e / 3}
                   for e in (1, 2, 3)]
    cfg = {"total_steps": 30, "epochs": 3.0, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0}
    return {"domain": domain, "task": task, "model": model, "family": family, "size": "tiny", "seed": seed,
            "status": "ok", "metric": metric, "metric_value": value, "higher_is_better": higher,
            "test": {metric: value, "loss": 0.5}, "history": history, "param_count": params,
            "train_time_s": time_s, "train_samples_per_sec": 100.0, "backend": "sdpa", "precision": "fp32",
            "config": cfg, "config_hash": f"h-{task}-{model}", "device": "cpu", "device_name": "test cpu",
            "torch_version": "2.x", "git_commit": "abc", "finished": f"2026-01-01T00:00:0{seed}+00:00", **extra}


def seeds(values, **kw):
    return [record(seed=i, value=v, **kw) for i, v in enumerate(values)]


def row(df, model):
    return df.set_index("model").loc[model]


# ----------------------------------------------------------------------------- confidence intervals

def test_ci95_matches_a_hand_computation():
    values = [0.90, 0.92, 0.97]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)  # ddof = 1
    half = T_975_2 * std / math.sqrt(3)
    df = leaderboard.aggregate(seeds(values, model="vit"))
    r = row(df, "vit")
    assert r["n_seeds"] == 3
    assert r["metric_std"] == pytest.approx(std, rel=1e-9)
    assert r["metric_ci95"] == pytest.approx(half, rel=1e-6)
    assert r["metric_ci_low"] == pytest.approx(mean - half, rel=1e-6)
    assert r["metric_ci_high"] == pytest.approx(mean + half, rel=1e-6)
    assert leaderboard.ci95(std, 3) == pytest.approx(half, rel=1e-6)


def test_one_seed_has_no_interval():
    r = row(leaderboard.aggregate(seeds([0.9], model="vit")), "vit")
    assert math.isnan(r["metric_ci95"]) and math.isnan(r["metric_ci_low"]) and math.isnan(r["metric_ci_high"])
    assert math.isnan(leaderboard.ci95(0.1, 1)) and math.isnan(leaderboard.ci95(float("nan"), 3))


# ------------------------------------------------------------------------------------------- ties

def test_a_model_the_test_cannot_tell_from_the_leader_shares_rank_one(tmp_path):
    records = (seeds([0.90, 0.93, 0.96], model="vit") + seeds([0.89, 0.92, 0.95], model="resnet")
               + seeds([0.50, 0.51, 0.52], model="cnn"))
    df = leaderboard.aggregate(records)
    assert list(df["model"]) == ["vit", "resnet", "cnn"] and list(df["rank"]) == [1, 1, 3]
    assert list(df["rank_tie"]) == [True, True, False]
    md = leaderboard.to_markdown(df)
    assert "| =1 | vit |" in md and "| =1 | resnet |" in md and "| 3 | cnn |" in md
    assert "=1" in leaderboard.to_text(df).splitlines()[2]
    leaderboard.write(df, tmp_path / "board.csv")
    back = pd.read_csv(tmp_path / "board.csv")
    assert back["rank"].dtype.kind == "i" and list(back["rank"]) == [1, 1, 3]  # rank stays numeric
    assert list(back["rank_tie"]) == [True, True, False]
    assert leaderboard.TIE_NOTE in (tmp_path / "board.md").read_text()


def test_separate_intervals_are_no_tie():
    df = leaderboard.aggregate(seeds([0.98, 0.99, 0.985], model="vit") + seeds([0.90, 0.91, 0.905], model="resnet"))
    assert not df["rank_tie"].any()
    assert "=" not in leaderboard.to_markdown(df)


def test_a_tie_is_the_paired_test_against_the_leader_not_the_neighbour(monkeypatch):
    """A and B do not differ, A and C do: C is no tie, whatever B against C says (B and C are never
    tested against each other); the tests against the leader are Holm-adjusted together."""
    records = seeds([0.90, 0.91, 0.92], model="A") + seeds([0.88, 0.89, 0.90], model="B") + seeds([0.80, 0.81, 0.82], model="C")
    asked = []
    p = {("A", "B"): 0.30, ("A", "C"): 0.02}

    def row_p(a, b, outcomes):
        asked.append((a["model"], b["model"]))
        return p[a["model"], b["model"]]

    monkeypatch.setattr(verdicts, "row_p", row_p)
    df = leaderboard.aggregate(records).set_index("model")
    assert sorted(asked) == [("A", "B"), ("A", "C")]
    assert df["rank_tie"].to_dict() == {"A": True, "B": True, "C": False}
    assert df["rank"].to_dict() == {"A": 1, "B": 1, "C": 3}
    p[("A", "C")] = 0.04  # Holm over 2 tests: 0.08, no difference from the leader
    assert leaderboard.aggregate(records)["rank_tie"].all()


def test_without_per_item_outcomes_a_tie_is_welchs_t_over_seeds():
    df = leaderboard.aggregate(seeds([0.90, 0.93, 0.96], model="vit") + seeds([0.89, 0.92, 0.95], model="resnet"))
    p = scipy_stats.ttest_ind([0.90, 0.93, 0.96], [0.89, 0.92, 0.95], equal_var=False).pvalue
    assert p > 0.05 and df["rank_tie"].all()


def test_one_seed_is_never_marked_tied():
    df = leaderboard.aggregate(seeds([0.90], model="vit") + seeds([0.90], model="resnet"))
    assert list(df["rank"]) == [1, 1]  # equal means still share the rank
    assert not df["rank_tie"].any()
    mixed = leaderboard.aggregate(seeds([0.90], model="vit") + seeds([0.80, 0.90, 1.0], model="resnet"))
    assert not mixed["rank_tie"].any()  # a single seed against three, no per-item outcomes: nothing to test


def test_old_leaderboard_csv_merges_and_gains_intervals(tmp_path):
    old_columns = ["domain", "task", "model", "family", "size", "rank", "metric", "higher_is_better", "metric_mean",
                   "metric_std", "n_seeds", "seeds", "param_count", "train_time_s", "train_samples_per_sec"]
    path = tmp_path / "leaderboard_vision.csv"
    pd.DataFrame([["vision", "digits", "resnet", "baseline", "tiny", 1, "top1", True, 0.9852, 0.0032, 3, "0 1 2",
                   146244, 8.7, 900.0]], columns=old_columns).to_csv(path, index=False)
    merged = leaderboard.merge(leaderboard.read_csv(path), leaderboard.aggregate(seeds([0.95, 0.96, 0.97])))
    assert list(merged.columns[:len(leaderboard.COLUMNS)]) == leaderboard.COLUMNS
    assert sorted(merged["model"]) == ["resnet", "vit"]
    assert row(merged, "resnet")["metric_ci95"] == pytest.approx(T_975_2 * 0.0032 / math.sqrt(3), rel=1e-6)
    assert math.isnan(row(merged, "resnet")["flops_per_sample"])


# ------------------------------------------------------------------------------------------- costs

def test_cost_fields_are_averaged_over_seeds_and_empty_when_absent():
    cost = [dict(flops_per_sample=1e6, train_flops_per_sample=3e6, infer_samples_per_sec=500.0, peak_mem_mb=10.0,
                 time_to_target_s=4.0),
            dict(flops_per_sample=1e6, train_flops_per_sample=3e6, infer_samples_per_sec=700.0, peak_mem_mb=14.0,
                 time_to_target_s=6.0)]
    never = [dict(flops_per_sample=2e6, time_to_target_s=5.0), dict(flops_per_sample=2e6, time_to_target_s=None)]
    records = ([record(model="vit", seed=i, **c) for i, c in enumerate(cost)]
               + [record(model="resnet", seed=i, **c) for i, c in enumerate(never)]
               + seeds([0.5, 0.6], model="mlp"))  # an older run: no cost fields at all
    df = leaderboard.aggregate(records)
    vit, resnet, mlp = row(df, "vit"), row(df, "resnet"), row(df, "mlp")
    assert vit["flops_per_sample"] == 1e6 and vit["train_flops_per_sample"] == 3e6
    assert vit["infer_samples_per_sec"] == 600.0 and vit["peak_mem_mb"] == 12.0 and vit["time_to_target_s"] == 5.0
    assert resnet["flops_per_sample"] == 2e6 and math.isnan(resnet["time_to_target_s"])  # one seed never got there
    assert all(math.isnan(mlp[c]) for c in leaderboard.COST)
    assert set(leaderboard.COST) <= set(leaderboard.COLUMNS)


# ------------------------------------------------------------------------------------------ Pareto

def test_pareto_front_higher_is_better():
    metric = [0.90, 0.80, 0.95, 0.85, 0.90, float("nan")]
    cost = [10, 5, 20, 30, 12, 1]
    # 0.85@30 is beaten by 0.90@10; 0.90@12 by 0.90@10 (same metric, cheaper); NaN is never on the front
    assert report.pareto_front(metric, cost, True) == [True, True, True, False, False, False]


def test_pareto_front_lower_is_better():
    metric = [2.0, 1.5, 1.8, 1.2, 1.9, 1.2]
    cost = [1, 3, 2, 4, 2.5, 4]
    # 1.9@2.5 is beaten by 1.8@2; the two identical 1.2@4 points do not beat each other
    assert report.pareto_front(metric, cost, False) == [True, True, True, True, False, True]
    # read as higher-is-better, 2.0 at the lowest cost beats every other point
    assert report.pareto_front(metric, cost, True) == [True, False, False, False, False, False]


# ------------------------------------------------------------------------------------------ figures

def test_metric_vs_cost_figure_has_labels_log_axis_error_bars_and_front():
    df = leaderboard.aggregate(seeds([0.90, 0.93, 0.96], model="vit", params=90_000)
                               + seeds([0.80], model="resnet", params=200_000))
    fig = report.plot_metric_vs_cost(df, "param_count")
    ax = fig.axes[0]
    assert "parameters" in ax.get_xlabel() and ax.get_xscale() == "log"
    assert ax.get_ylabel() == "test top1 (accuracy, higher is better)"
    assert "digits" in ax.get_title()
    bars = {c.get_label(): c.has_yerr for c in ax.containers}
    assert bars == {"transformer": True, "baseline": False}  # a 95% bar only where n > 1
    assert "Pareto front" in [t.get_text() for t in ax.get_legend().get_texts()]
    fig = report.plot_metric_vs_cost(df, "train_time_s")
    assert fig.axes[0].get_xlabel() == "training time (s)"
    assert report.plot_metric_vs_cost(df, "flops_per_sample") is None  # nothing recorded: no figure


def test_learning_curves_figure_mean_band_and_labels():
    """(The task is a registered one: its class says what its metric measures.)"""
    records = (seeds([0.2, 0.3], model="conformer", family="transformer", metric="wer", higher=False,
                     domain="speech", task="synth_digits")
               + seeds([0.4], model="las", metric="wer", higher=False, domain="speech", task="synth_digits",
                       target=0.25))
    fig = report.plot_learning_curves(records)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("epoch")
    assert ax.get_ylabel() == "validation wer (word error rate, lower is better)"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) >= {"conformer (transformer, n=2)", "las (baseline, n=1)"}
    np.testing.assert_allclose(lines["conformer (transformer, n=2)"].get_ydata(), np.array([1, 2, 3]) * 0.25 / 3)
    assert lines["conformer (transformer, n=2)"].get_linestyle() == "-"
    assert lines["las (baseline, n=1)"].get_linestyle() == "--"
    assert len(ax.collections) == 1  # the min..max band: only the model with two seeds has one
    assert "target 0.25" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_learning_curves_without_history_is_none():
    assert report.plot_learning_curves([record(history=[]), record(model="resnet", history=[])]) is None
    old = record()
    del old["history"]
    assert report.plot_learning_curves([old]) is None


# ------------------------------------------------------------------------------------------ REPORT.md

def assert_png(path, min_kb=5):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > min_kb * 1024, (path, len(data))


def binary_outcomes(rng, name, accuracies, items=400):
    """0/1 outcomes of ``len(accuracies)`` seeds whose accuracies are exactly these (on ``items`` items)."""
    y = np.zeros((len(accuracies), items))
    for row, acc in zip(y, accuracies):
        row[rng.permutation(items)[:round(acc * items)]] = 1.0
    return stats.Outcomes(name, list(range(len(accuracies))), np.arange(items), y, np.ones_like(y))


def with_outcomes(outcomes, domain="vision", task="digits", **kw):
    """The records of these outcomes (one per seed, their metric the outcomes' own), keyed for aggregate."""
    return ([record(seed=s, value=float(v), model=outcomes.model, domain=domain, task=task, **kw)
             for s, v in zip(outcomes.seeds, outcomes.per_seed())], {(domain, task, outcomes.model, "tiny", "default"): outcomes})


def test_report_sections_summary_counts_and_plots(tmp_path):
    rng = np.random.default_rng(0)
    windows = np.full((1, 50), 16.0)  # language/chars: a loss per token over 50 windows of 16 tokens, one seed
    parts = [
        # vision/digits: the transformer is clearly better
        with_outcomes(binary_outcomes(rng, "vit", [0.98, 0.99, 0.985])),
        with_outcomes(binary_outcomes(rng, "resnet", [0.90, 0.91, 0.905])),
        # vision/shapes: the baseline is better on the mean, but not detectably
        with_outcomes(binary_outcomes(rng, "vit", [0.80, 0.85, 0.90]), task="shapes"),
        with_outcomes(binary_outcomes(rng, "resnet", [0.82, 0.86, 0.90]), task="shapes"),
        # language/chars: lower is better, one seed (provisional), the baseline is better
        with_outcomes(stats.Outcomes("gpt", [0], np.arange(50), rng.normal(1.9, 0.1, (1, 50)) * windows, windows),
                      domain="language", task="chars", metric="loss", higher=False),
        with_outcomes(stats.Outcomes("lstm", [0], np.arange(50), rng.normal(1.5, 0.1, (1, 50)) * windows, windows),
                      domain="language", task="chars", metric="loss", higher=False),
    ]
    records = [r for recs, _ in parts for r in recs]
    records += seeds([0.5], model="lstm", domain="language", task="only_baselines")  # not compared
    outcomes = {k: v for _, found in parts for k, v in found.items()}
    path = report.write_report(records, tmp_path, outcomes)
    assert path == tmp_path / "REPORT.md"
    md = path.read_text()
    for heading in ("# attention-zoo report", "## Verdicts: families of models compared", "## language", "## vision",
                    "### vision / digits", "### vision / shapes", "### language / chars"):
        assert f"\n{heading}\n" in f"\n{md}", heading
    assert ("transformer better on 1, baseline better on 1, no detectable difference on 1 of 3 tasks" in md
            and "untested" not in md and "1 of them compare single-seed trained models" in md), md
    summary = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ") and " | tiny | " in line
               and "better" in line or "no detectable" in line and line.startswith("| ")}
    assert "**vit better** | " in summary["digits"] and summary["digits"].endswith("| seeds and items |")
    assert "**no detectable difference** | " in summary["shapes"]
    assert "**lstm better (provisional" in summary["chars"] and summary["chars"].endswith("| items only |")
    assert "vit 0.9850 (n=3, 100k)" in summary["digits"] and "only_baselines" not in summary
    table = pd.read_csv(tmp_path / "verdicts.csv").set_index("task")
    assert list(table.index) == ["chars", "digits", "shapes"] and set(table["family"]) == {"headline"}
    p = table["p_value"].to_numpy()
    assert table["p_holm"].to_numpy() == pytest.approx(stats.holm(p), rel=1e-5)  # adjusted within the headline family
    assert (table["p_holm"] >= table["p_value"]).all() and (table["mde"] > 0).all() and (table["family_size"] == 3).all()
    assert "| =1 | resnet |" in md  # the shapes tie in the vision table
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 12  # 4 tasks x (params, time, curves)
    for name in pngs:
        assert f"](plots/{name})" in md
        assert_png(tmp_path / "plots" / name)
    assert not list(tmp_path.rglob("*.tmp"))


def test_report_with_old_records_missing_fields_and_empty_history(tmp_path):
    old = seeds([0.7], model="vit", history=[]) + seeds([0.6], model="resnet")
    del old[1]["history"]  # an older record without the key at all
    del old[1]["family"]
    path = report.write_report(old, tmp_path)
    md = path.read_text()
    assert "validation learning curves: nothing to plot" in md
    assert not (tmp_path / "plots" / "vision_digits_curves.png").exists()
    assert_png(tmp_path / "plots" / "vision_digits_params.png")
    assert "flops_per_sample" not in md  # no cost recorded: no empty cost columns in the report table
    assert "No task has models of two families yet." in md  # the family-less record is in no family


def test_report_of_nothing(tmp_path):
    md = report.write_report([{"status": "failed"}], tmp_path).read_text()
    assert "No successful cell records yet" in md


def test_rl_report_shows_what_the_task_tests_its_best_model_controllability_and_the_conditioning_curve(tmp_path):
    """An offline-RL task: its ``about`` text, the best model with the one the paired test cannot tell
    from it, the controllability column, and the return-conditioning plot (one line per model)."""
    def rl(model, seed, value, achieved, control):
        table = [{"target_return": t, "achieved_return": a} for t, a in zip((0.0, 0.5, 1.0), achieved)]
        return record(task="keytodoor-random", model=model, seed=seed, value=value, domain="rl",
                      metric="normalized_return", family="transformer" if model == "decision_transformer" else "baseline",
                      test={"normalized_return": value, "controllability": control},
                      examples={"tables": {"return_conditioning": table}})

    records = [rl("decision_transformer", s, 90 + s, (0.1, 0.5, 0.9 + 0.01 * s), 0.8) for s in range(3)]
    records += [rl("bc_mlp", s, -10 + s, (0.0, 0.0, 0.0), 0.0) for s in range(3)]
    md = report.write_report(records, tmp_path).read_text()
    section = md[md.index("### rl / keytodoor-random"):]
    assert "only the walks that stumbled on the key" in section  # the task's about text
    assert "Best: **decision_transformer**, normalized_return 91" in section
    assert "test_controllability" in md and "| 0.8000 |" in md
    assert "](plots/rl_keytodoor-random_return_conditioning.png)" in section
    assert_png(tmp_path / "plots" / "rl_keytodoor-random_return_conditioning.png")
    fig = report.plot_example_table(records, "return_conditioning", "target_return", "achieved_return")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["decision_transformer (transformer, n=3)"].get_ydata() == pytest.approx([0.1, 0.5, 0.91])
    assert "achieved_return = target_return" in lines  # the diagonal: same units on both axes
    assert report.plot_example_table(records, "no_such_table", "x", "y") is None
