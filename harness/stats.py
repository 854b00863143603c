"""Verdicts a reader can trust: paired comparisons of two models on one task, and the intervals of one.

The data (``Outcomes``): per model and seed, the per-item outcomes of the headline test split that a
record keeps beside it (``value``, ``weight``; the metric is sum(value) / sum(weight)), aligned on
item ids: every model of a task is scored on the same test items (RL: the same environment seeds).

The test. The headline of a model is M = the mean over its S seeds of the per-seed metric m_s. A
ratio metric (WER, loss per token) is linearised first: item i of seed s counts as the pseudo-value
z_si = m_s + (v_si - m_s w_si) / mean_i(w_si), whose mean over items is m_s. The outcomes of one model
are a two-way crossed design, z_si = mu + a_s (seed) + b_i (item) + e_si, and for D = M_A - M_B

    Var(D) = s2_A / S_A + s2_B / S_B                    seed-to-seed variance of each model (Welch)
           + max(0, var_i(d_i) - r_A / S_A - r_B / S_B) / n     test-item sampling, paired over items

with s2 the variance of the per-seed metrics, d_i = mean_s z_A,si - mean_s z_B,si the paired item
difference, and r the seed x item residual variance (two-way ANOVA), which the first two terms
already count. Each s2 / S is split (ANOVA) into the seed variance, max(0, s2 - r / n) / S with S - 1
degrees of freedom, and the residual noise r / (S n) with (S - 1)(n - 1): a model whose seeds agree
is not judged on the few degrees of freedom of its seed-to-seed spread. T = D / sqrt(Var(D)) is referred to Student's t with Welch-Satterthwaite degrees of
freedom; the 95% interval is D +/- t * SE. With one seed on a side the seed variance is unknown: the
test is then over test items only (var_i(d_i) / n), a comparison of these trained models and not of
their training recipes, and the verdict says so. Seeds are not paired (seed s of two models shares
no randomness worth pairing); items are.

The minimum detectable effect (MDE) is the true difference that this test finds with 80% power at
the chosen level, for these seed and item counts: ncp * SE', where the noncentral t with the test's
degrees of freedom exceeds the critical value with probability 0.8, and SE' is the 60% upper
confidence bound of the standard error (after Browne 1995), because the standard error is estimated too:
with few seeds the plug-in would claim an effect that is found less than 80% of the time.

Offline RL is also summarised, as ``rliable`` recommends, by the interquartile mean (IQM) of the
per-seed scores with a stratified bootstrap interval (runs resampled within the task). rliable's
own bootstrap (``rliable.library``) does not run with pandas 3 (its arch 7.2 fails to import) nor
with arch 8 (which dropped the ``random_state`` argument rliable passes), so the IQM is rliable's
``metrics.aggregate_iqm`` and the resampling is written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
ASSURANCE = 0.6  # the minimum detectable effect holds for the standard error's 60% upper bound


@dataclass
class Outcomes:
    """One model on one task: per seed (rows), per item (columns, in ``items`` order)."""

    model: str
    seeds: list[int]
    items: np.ndarray  # (n,) item ids
    value: np.ndarray  # (S, n)
    weight: np.ndarray  # (S, n)

    @classmethod
    def from_columns(cls, model: str, seeds: Sequence[int], columns: Sequence[dict[str, np.ndarray]]) -> Outcomes:
        """Stack the per-seed item columns of one model, each sorted by item id (they must be the same ids)."""
        order = [np.argsort(c["item"], kind="stable") for c in columns]
        ids = [np.asarray(c["item"])[o] for c, o in zip(columns, order)]
        if any(len(i) != len(ids[0]) or not np.array_equal(i, ids[0]) for i in ids):
            raise ValueError(f"{model}: its seeds were scored on different test items")
        if len(np.unique(ids[0])) != len(ids[0]):
            raise ValueError(f"{model}: item ids repeat")
        value, weight = (np.stack([np.asarray(c[name], dtype=float)[o] for c, o in zip(columns, order)])
                         for name in ("value", "weight"))
        return cls(model, list(seeds), ids[0], value, weight)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def n_items(self) -> int:
        return self.value.shape[1]

    def per_seed(self) -> np.ndarray:
        """(S,) the metric of each seed."""
        return self.value.sum(1) / self.weight.sum(1)

    def metric(self) -> float:
        return float(self.per_seed().mean())

    def pseudo(self) -> np.ndarray:
        """(S, n) linearised item values; their mean over items is each seed's metric."""
        m = self.per_seed()[:, None]
        return m + (self.value - m * self.weight) / self.weight.mean(1, keepdims=True)

    def binary(self) -> bool:
        """True where every item is a 0/1 outcome of weight 1 (accuracy, exact match)."""
        return bool(np.all(self.weight == 1) and np.all((self.value == 0) | (self.value == 1)))

    def residual_var(self) -> float:
        """The seed x item interaction variance (two-way ANOVA residual mean square); 0 for one seed."""
        z = self.pseudo()
        S, n = z.shape
        if S < 2 or n < 2:
            return 0.0
        e = z - z.mean(1, keepdims=True) - z.mean(0, keepdims=True) + z.mean()
        return float((e ** 2).sum() / ((S - 1) * (n - 1)))


@dataclass
class Comparison:
    """A vs B on one task: the difference of the headline metric (A - B), its test and verdict."""

    a: str
    b: str
    metric_a: float
    metric_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float
    se: float
    mde: float
    n_seeds_a: int
    n_seeds_b: int
    n_items: int
    higher_is_better: bool
    alpha: float = ALPHA
    recipes: bool = True  # False: one seed on a side, so the test compares trained models only

    def better(self) -> str | None:
        """The better model's name where the test rejects at ``alpha``, else None."""
        if not self.p_value < self.alpha or self.diff == 0:
            return None
        a_higher = self.diff > 0
        return self.a if a_higher == self.higher_is_better else self.b

    @property
    def verdict(self) -> str:
        return verdict_sentence(self.better(), self.recipes)


PROVISIONAL = " (provisional: one seed compares trained models, not recipes)"


def verdict_sentence(winner: str | None, recipes: bool) -> str:
    """'vit better', 'no detectable difference', + PROVISIONAL where a side has a single seed."""
    return (f"{winner} better" if winner else "no detectable difference") + ("" if recipes else PROVISIONAL)


def compare(a: Outcomes, b: Outcomes, higher_is_better: bool, alpha: float = ALPHA) -> Comparison:
    """The paired test of the module docstring on two models' outcomes over the same items."""
    if a.n_items != b.n_items or not np.array_equal(a.items, b.items):
        raise ValueError(f"{a.model} and {b.model} were scored on different test items "
                         f"({a.n_items} and {b.n_items}); compare models of one task and one test split")
    za, zb = a.pseudo(), b.pseudo()
    d = za.mean(0) - zb.mean(0)  # (n,) paired item differences
    n = len(d)
    recipes = a.n_seeds > 1 and b.n_seeds > 1
    if recipes:
        parts = seed_parts(a) + seed_parts(b)
        item = d.var(ddof=1) - a.residual_var() / a.n_seeds - b.residual_var() / b.n_seeds if n > 1 else 0.0
    else:
        parts, item = [], d.var(ddof=1) if n > 1 else 0.0
    var, df = satterthwaite(parts + [(max(item, 0.0) / n, n - 1)])
    diff = a.metric() - b.metric()
    se = math.sqrt(var)
    if se > 0:
        p = float(2 * stats.t.sf(abs(diff) / se, df))
    else:  # no variance at all: identical outcomes are no difference; a constant shift is certain
        p = 1.0 if diff == 0 else 0.0
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    return Comparison(a.model, b.model, a.metric(), b.metric(), diff, diff - half, diff + half, p, df, se,
                      minimum_detectable_effect(se, df, alpha), a.n_seeds, b.n_seeds, n, higher_is_better,
                      alpha, recipes)


def seed_parts(o: Outcomes) -> list[tuple[float, float]]:
    """The seed terms of Var(M) for one model of S > 1 seeds, each (variance, degrees of freedom):
    the seed variance, ANOVA-estimated as max(0, s2 - r / n) / S with S - 1 degrees of freedom, and the
    seed x item residual r / (S n), estimated from all (S - 1)(n - 1) residuals (so that a model
    whose seeds agree is not judged on the few degrees of freedom of its seed-to-seed spread)."""
    S, n, r = o.n_seeds, o.n_items, o.residual_var()
    return [(max(0.0, o.per_seed().var(ddof=1) - r / n) / S, S - 1), (r / (S * n), (S - 1) * (n - 1))]


def satterthwaite(parts: list[tuple[float, float]]) -> tuple[float, float]:
    """The sum of independent variance components and its Welch-Satterthwaite degrees of freedom."""
    var = sum(v for v, _ in parts)
    if var <= 0:
        return 0.0, math.inf
    return var, var ** 2 / sum(v ** 2 / max(k, 1) for v, k in parts if v > 0)


def minimum_detectable_effect(se: float, df: float, alpha: float = ALPHA, power: float = POWER,
                              assurance: float = ASSURANCE) -> float:
    """The true difference that a two-sided t test with ``df`` degrees of freedom rejects with
    probability ``power`` at level ``alpha`` (noncentral t), for the standard error's upper
    ``assurance`` confidence bound, se * sqrt(df / chi2_(1 - assurance, df)) (Browne 1995): the
    standard error is itself estimated, from few seeds where they dominate, and the plain plug-in
    would understate the effect needed (it claims 80% power and delivers less, on average)."""
    if se == 0:
        return 0.0
    df = min(df, 1e6)  # the noncentral t of huge df is the normal, and scipy's is slow there
    se = se * math.sqrt(df / stats.chi2.ppf(1 - assurance, df))
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(ncp: float) -> float:  # the far tail adds nothing once ncp is large (and may be NaN)
        return stats.nct.sf(crit, df, ncp) + np.nan_to_num(stats.nct.cdf(-crit, df, ncp)) - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high) * se)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (family-wise error), in their order. NaN stays NaN
    and does not count in the family."""
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    out = p.copy()
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out.tolist()


def wilson(proportion: float, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The Wilson score interval of a proportion observed on ``n`` items: never zero-width, inside
    [0, 1] (what scipy's ``binomtest(...).proportion_ci(method='wilson')`` gives for whole counts)."""
    z = stats.norm.ppf(1 - alpha / 2)
    centre = (proportion + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(proportion * (1 - proportion) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(o: Outcomes, alpha: float = ALPHA) -> tuple[float, float]:
    """A 95% interval of one model's headline metric from its outcomes: the same variance components
    as ``compare`` (seeds, then items); for 0/1 outcomes, widened to cover the Wilson interval, so
    that 0% or 100% is never a point."""
    m, S, n = o.metric(), o.n_seeds, o.n_items
    parts = seed_parts(o) if S > 1 else []
    item = o.pseudo().mean(0).var(ddof=1) - (o.residual_var() / S if S > 1 else 0.0) if n > 1 else 0.0
    var, df = satterthwaite(parts + [(max(item, 0.0) / n, n - 1)])
    half = float(stats.t.ppf(1 - alpha / 2, df)) * math.sqrt(var)
    low, high = m - half, m + half
    if o.binary():
        w_low, w_high = wilson(m, n, alpha)
        low, high = max(0.0, min(low, w_low)), min(1.0, max(high, w_high))
    return low, high


def iqm(scores: np.ndarray) -> float:
    """The interquartile mean of per-run scores (rliable's ``aggregate_iqm``)."""
    from rliable import metrics
    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float).reshape(-1, 1)))


def iqm_interval(scores: np.ndarray, reps: int = 2000, alpha: float = ALPHA, seed: int = 0) -> tuple[float, float]:
    """The percentile interval of the IQM of per-run ``scores`` under the stratified bootstrap
    (runs resampled with replacement within the task, as rliable's ``StratifiedBootstrap``)."""
    scores = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(scores), size=(reps, len(scores)))
    from rliable import metrics
    boot = np.array([metrics.aggregate_iqm(scores[d].reshape(-1, 1)) for d in draws])
    return float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2))
