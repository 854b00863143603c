"""Verdicts (harness/stats.py, harness/verdicts.py, ``harness compare``): the paired test's calibration
on simulated outcomes, its parts against scipy and statsmodels, and real A/A and A/B checks."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from harness import leaderboard, stats, verdicts
from harness.cli import main
from harness.records import load_outcomes, read_record_files
import zoo.registry as registry

REPLICATIONS = 200


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def binary_pair(rng, shift=0.0, seeds=3, items=400, seed_sd=0.3):
    """Two models' 0/1 outcomes on the same items (easiness ~ N(1, 1) on the logit scale), each seed
    with its own logit offset ~ N(0, seed_sd); A's logits moved by ``shift``."""
    easy = rng.normal(1.0, 1.0, items)
    out = []
    for name, s, first in (("a", shift, 0), ("b", 0.0, seeds)):
        offset = rng.normal(0, seed_sd, (seeds, 1))
        y = (rng.random((seeds, items)) < sigmoid(easy + offset + s)).astype(float)
        out.append(stats.Outcomes(name, list(range(first, first + seeds)), np.arange(items), y, np.ones_like(y)))
    return out, easy


def ratio_pair(rng, scale=1.0, seeds=3, items=300):
    """WER-like outcomes: per utterance word errors ~ Poisson(rate * words), 3..12 words; A's rate x ``scale``."""
    words = rng.integers(3, 13, items).astype(float)
    hard = rng.gamma(2.0, 0.05, items)  # per-utterance error rate
    out = []
    for name, k, first in (("a", scale, 0), ("b", 1.0, seeds)):
        rate = hard * k * rng.lognormal(0, 0.15, (seeds, 1))
        errors = rng.poisson(rate * words).astype(float)
        out.append(stats.Outcomes(name, list(range(first, first + seeds)), np.arange(items), errors,
                                  np.broadcast_to(words, errors.shape).copy()))
    return out


def rl_pair(rng, gap=0.0, seeds=5, episodes=10):
    """Normalized returns: per seed a policy quality ~ N(60, 15), per episode noise ~ N(0, 20) around a
    per-start difficulty shared by both models (paired environment seeds)."""
    start = rng.normal(0, 10, episodes)
    out = []
    for name, g, first in (("a", gap, 0), ("b", 0.0, seeds)):
        quality = rng.normal(60 + g, 15, (seeds, 1))
        y = quality + start + rng.normal(0, 20, (seeds, episodes))
        out.append(stats.Outcomes(name, list(range(first, first + seeds)), np.arange(episodes), y, np.ones_like(y)))
    return out


def rejection(make, higher=True):
    """(share of replications where ``verdicts`` gives a verdict at 5%, mean claimed minimum detectable effect)."""
    found = [stats.compare(*make(), higher) for _ in range(REPLICATIONS)]
    return (np.mean([verdicts.better_side(c.diff, c.p_value, higher) is not None for c in found]),
            np.mean([c.mde for c in found]))


# ------------------------------------------------------------------------------------- calibration

@pytest.mark.parametrize("seeds, seed_sd", [(3, 0.3), (3, 0.0), (5, 0.5)])
def test_no_true_difference_rejects_at_most_five_percent_and_the_claimed_effect_is_found(seeds, seed_sd):
    """At most 5% + 2 Monte-Carlo SE (200 draws: 8.1%); with 3 seeds and no seed variance the test is
    conservative (each seed term keeps its 2 degrees of freedom), and the MDE says so."""
    rng = np.random.default_rng(seeds * 10 + int(seed_sd * 10))
    null, mde = rejection(lambda: binary_pair(rng, 0.0, seeds, seed_sd=seed_sd)[0])
    assert null <= 0.081, null

    def with_effect():  # a logit shift whose mean accuracy gain is the test's claimed MDE
        pair, easy = binary_pair(rng, 0.0, seeds, seed_sd=seed_sd)
        from scipy.optimize import brentq
        shift = brentq(lambda s: sigmoid(easy + s).mean() - sigmoid(easy).mean() - mde, -5, 5)
        return binary_pair(np.random.default_rng(rng.integers(1 << 30)), shift, seeds, seed_sd=seed_sd)[0]

    power, _ = rejection(with_effect)
    assert power >= 0.8, (power, mde)


def test_one_seed_compares_trained_models_and_is_calibrated_for_them():
    rng = np.random.default_rng(1)
    null, _ = rejection(lambda: binary_pair(rng, 0.0, seeds=1, seed_sd=0.0)[0])  # two equally good trained models
    assert 0.02 <= null <= 0.09, null
    c = stats.compare(*binary_pair(rng, 0.0, seeds=1)[0], True)
    assert not c.recipes and verdicts.decided(c).endswith("(provisional: one seed compares trained models, not recipes)")


def test_ratio_metrics_are_tested_as_ratios_and_calibrated():
    rng = np.random.default_rng(2)
    null, mde = rejection(lambda: ratio_pair(rng), higher=False)
    assert null <= 0.081, null
    a, b = ratio_pair(rng, scale=0.5)
    assert a.per_seed() == pytest.approx(a.value.sum(1) / a.weight.sum(1))  # a ratio of sums, not a mean of rates
    assert a.pseudo().mean(1) == pytest.approx(a.per_seed())
    c = stats.compare(a, b, higher_is_better=False)
    assert c.diff < 0 and verdicts.decided(c) == "a better"


def test_rl_returns_with_five_seeds_are_calibrated():
    rng = np.random.default_rng(3)
    null, mde = rejection(lambda: rl_pair(rng))
    assert null <= 0.081, null
    power, _ = rejection(lambda: rl_pair(rng, gap=mde))
    assert power >= 0.8, (power, mde)


# ------------------------------------------------------------------------------------------ pieces

def test_identical_outcomes_are_no_difference_and_a_constant_gap_is_certain():
    y = np.array([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]])
    a = stats.Outcomes("a", [0, 1], np.arange(4), y, np.ones_like(y))
    same = stats.compare(a, dataclasses.replace(a, model="a2"), True)
    assert same.diff == 0 and same.p_value == 1.0 and verdicts.decided(same) == "no detectable difference"
    ones = stats.Outcomes("b", [0, 1], np.arange(4), np.ones_like(y), np.ones_like(y))
    zeros = stats.Outcomes("c", [0, 1], np.arange(4), np.zeros_like(y), np.ones_like(y))
    c = stats.compare(ones, zeros, True)
    assert c.diff == 1 and c.p_value == 0 and verdicts.decided(c) == "b better"


def test_items_are_aligned_by_id_and_other_items_are_refused():
    first = {"item": np.array([2, 0, 1]), "value": np.array([1.0, 0.0, 1.0]), "weight": np.ones(3)}
    second = {"item": np.array([0, 1, 2]), "value": np.array([0.0, 1.0, 1.0]), "weight": np.ones(3)}
    o = stats.Outcomes.from_columns("m", [0, 1], [first, second])
    assert list(o.items) == [0, 1, 2] and o.value.tolist() == [[0, 1, 1], [0, 1, 1]]
    with pytest.raises(ValueError, match="different test items"):
        stats.Outcomes.from_columns("m", [0, 1], [first, {**second, "item": np.array([0, 1, 5])}])
    other = stats.Outcomes("n", [0], np.array([0, 1, 7]), np.ones((1, 3)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="different test items"):
        stats.compare(o, other, True)


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")  # installed with rliable
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.04]
    assert stats.holm(p) == pytest.approx(list(multitest.multipletests(p, method="holm")[1]))
    assert stats.holm([0.02, float("nan"), 0.03]) == pytest.approx([0.04, float("nan"), 0.04], nan_ok=True)


@pytest.mark.parametrize("k, n", [(0, 50), (50, 50), (17, 40), (359, 360)])
def test_wilson_matches_scipy_and_is_never_a_point(k, n):
    expected = scipy_stats.binomtest(k, n).proportion_ci(method="wilson")
    low, high = stats.wilson(k / n, n)
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert high - low > 0.01 and 0 <= low <= k / n <= high <= 1


def test_a_perfect_score_gets_a_real_interval_on_the_leaderboard():
    y = np.ones((3, 200))
    o = stats.Outcomes("perfect", [0, 1, 2], np.arange(200), y, np.ones_like(y))
    low, high = stats.interval(o)
    assert high == 1.0 and 0.97 < low < 0.99  # the Wilson interval of 200/200
    records = [{"domain": "vision", "task": "digits", "model": "perfect", "family": "baseline", "size": "tiny",
                "seed": s, "status": "ok", "metric": "top1", "metric_value": 1.0, "higher_is_better": True,
                "param_count": 1, "train_time_s": 1.0, "train_samples_per_sec": 1.0, "device": "cpu",
                "device_name": "cpu", "backend": "sdpa", "precision": "fp32", "torch_version": "x", "git_commit": "x",
                "config_hash": "h", "finished": f"2026-01-01T00:00:0{s}", "test": {"top1": 1.0},
                "config": {"total_steps": 1, "epochs": 1, "batch_size": 1, "lr": 1e-3, "weight_decay": 0.0}}
               for s in range(3)]
    row = leaderboard.aggregate(records, {("vision", "digits", "perfect", "tiny", "default"): o}).iloc[0]
    assert row["metric_ci_high"] == 1.0 and row["metric_ci_low"] == pytest.approx(low) and row["metric_ci95"] > 0


def test_minimum_detectable_effect_matches_the_normal_formula_for_many_degrees_of_freedom():
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert stats.minimum_detectable_effect(0.01, 1e6) == pytest.approx(z * 0.01, rel=1e-3)
    assert stats.minimum_detectable_effect(0.01, 3) > stats.minimum_detectable_effect(0.01, 30)


def test_iqm_is_rliables_with_a_bootstrap_interval():
    scores = np.array([10.0, 50.0, 55.0, 60.0, 99.0])
    assert stats.iqm(scores) == pytest.approx(scipy_stats.trim_mean(scores, 0.25))
    low, high = stats.iqm_interval(scores)
    assert low <= stats.iqm(scores) <= high and low >= 10 and high <= 99


# ------------------------------------------------------------------------- real runs, real records

TWIN = textwrap.dedent('''
    """The resnet registered a second time, under another name: an A/A check."""
    from zoo.registry import register_variant

    register_variant("resnet_twin", like="resnet")
''')


def test_a_and_a_on_disjoint_seeds_is_no_detectable_difference(tmp_path, monkeypatch, capsys, clean_registry):
    (tmp_path / "twin_models.py").write_text(TWIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = str(tmp_path / "results")
    common = ["--tasks", "digits", "--seeds", "3", "--epochs", "2", "--quiet", "--out", out, "--plugin", "twin_models"]
    assert main(["run", "vision", "--models", "resnet", *common]) == 0
    assert main(["run", "vision", "--models", "resnet_twin", "--seed-start", "3", *common]) == 0
    capsys.readouterr()
    assert main(["compare", "digits", "resnet", "resnet_twin", "--out", out, "--plugin", "twin_models"]) == 0
    text = capsys.readouterr().out
    assert "(3 seed(s): 0 1 2)" in text and "(3 seed(s): 3 4 5)" in text
    assert "verdict, unadjusted (this test alone, p = " in text and text.count("no detectable difference") == 1, text
    assert "verdict, adjusted: none" in text  # resnet_twin is a baseline too: the pair is no row of a family


def test_published_dates_transformer_against_lstm_is_a_clear_verdict(capsys):
    """The A/B check, on the records published under results/ (no training)."""
    assert main(["compare", "dates", "transformer", "lstm_seq2seq"]) == 0
    text = capsys.readouterr().out
    assert "seeds and test items" in text, text
    assert "): transformer better" in text  # unadjusted
    assert "'headline' family" in text and text.strip().endswith("transformer better")  # adjusted, as verdicts.csv


def test_published_results_have_enough_seeds_and_per_item_files():
    found = read_record_files(Path("results") / "runs")
    outcomes = load_outcomes(found)
    boards = pd.concat([pd.read_csv(p) for p in sorted(Path("results").glob("leaderboard_*.csv"))])
    for _, row in boards.iterrows():
        need = 5 if row["domain"] == "rl" else 3
        assert row["n_seeds"] >= need, (row["task"], row["model"], row["n_seeds"])
        key = (row["domain"], row["task"], row["model"], row["size"], row.get("tuning", "default"))
        assert key in outcomes, (row["task"], row["model"])
    verdicts = pd.read_csv("results/verdicts.csv")
    assert set(verdicts["test"]) == {"seeds and items"} and verdicts["p_holm"].notna().all()


def test_records_without_per_item_files_say_so(tmp_path, capsys):
    import shutil
    runs = tmp_path / "runs" / "language" / "dates"
    shutil.copytree("results/runs/language/dates", runs)
    for npz in runs.glob("transformer-*.items.npz"):
        npz.unlink()
    for path in runs.glob("transformer-*.json"):  # as records written before per-item files were kept
        path.write_text(path.read_text().replace('"items_file"', '"old_items_file"'))
    assert main(["compare", "dates", "transformer", "lstm_seq2seq", "--out", str(tmp_path)]) == 2
    assert "keep no per-item outcomes" in capsys.readouterr().err
