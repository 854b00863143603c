"""Calibration and power of the paired test (``harness.stats.compare``, decided by ``harness.verdicts``).

Simulated 0/1 outcomes of two models on the same test items, the way ``python -m harness run vision``
produces them: 360 items whose difficulty both models share (logit ~ N(4.6, 1.5^2): about 97%
accuracy, as on digits), S seeds per model, and a seed effect on the logit scale whose size is given
as the standard deviation it gives the per-seed accuracy (the "seed-level sd": 0, 0.003, 0.006,
0.01, 0.02). Regimes:

- ``normal``: normal seed effects;
- ``both truncated``: only the draws where both models' seeds agree more closely than their per-item
  noise alone allows (s2 <= r / n, the state in which the earlier test pooled the seed term into the
  residuals and its degrees of freedom jumped to several hundred): a conditional rate;
- ``heavy-tailed``: seed effects from Student's t with 3 degrees of freedom, scaled to the same sd;
- ``different items``: each model also has its own per-item effect (logit sd 1.5), so they fail
  different items;

Under no true difference, the false-positive rate of a verdict ("A better" or "B better" at 5%) with
its Monte-Carlo standard error; then the power at a true accuracy gain of 0.01 and 0.02 (a logit
shift of A). Beside the new test, the earlier one ("pooled": the seed term pooled into the residuals
when its estimate hit 0) and Student's t (Welch) on the per-seed metrics plus the item term ("Welch":
no floor), for reference.

    python scripts/calibration.py                  # the full table (about 15 minutes on 2 cores)
    python scripts/calibration.py --reps 300       # quicker
    python scripts/calibration.py --csv results/calibration.csv --markdown README.md

``--markdown FILE`` rewrites the block between ``<!-- calibration:begin -->`` and
``<!-- calibration:end -->`` in FILE with the table (``tests/test_readme.py`` checks that the README's
block is the one ``results/calibration.csv`` gives).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import stats, verdicts  # noqa: E402

ITEMS = 360
MU, TAU = 4.6, 1.5  # item difficulty on the logit scale: ~97% accuracy
KAPPA = 1.5  # "different items": each model's own per-item logit effect
SEED_SDS = (0.0, 0.003, 0.006, 0.01, 0.02)
BEGIN, END = "<!-- calibration:begin -->", "<!-- calibration:end -->"


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit_sd_for(seed_sd: float, heavy: bool = False) -> float:
    """The logit-scale seed sd that gives per-seed accuracy this sd (on a fixed draw of items)."""
    if seed_sd == 0:
        return 0.0
    rng = np.random.default_rng(123)
    b = rng.normal(MU, TAU, ITEMS)
    z = rng.standard_t(3, 20000) / math.sqrt(3.0) if heavy else rng.normal(size=20000)
    return optimize.brentq(lambda s: sigmoid(b + s * z[:, None]).mean(1).std() - seed_sd, 1e-5, 10.0)


def shift_for(gain: float) -> float:
    """The logit shift of A whose mean accuracy gain over items is ``gain``."""
    b = np.random.default_rng(7).normal(MU, TAU, 200_000)
    return optimize.brentq(lambda s: sigmoid(b + s).mean() - sigmoid(b).mean() - gain, 0.0, 10.0)


@dataclass
class Regime:
    name: str
    seeds: int
    seed_sd: float
    heavy: bool = False
    kappa: float = 0.0
    truncated: bool = False


def draw(rng: np.random.Generator, r: Regime, logit_sd: float, shift: float = 0.0) -> tuple[stats.Outcomes, ...]:
    b = rng.normal(MU, TAU, ITEMS)
    out = []
    for k, s in enumerate((shift, 0.0)):
        own = rng.normal(0.0, r.kappa, ITEMS) if r.kappa else 0.0
        z = rng.standard_t(3, (r.seeds, 1)) / math.sqrt(3.0) if r.heavy else rng.normal(size=(r.seeds, 1))
        y = (rng.random((r.seeds, ITEMS)) < sigmoid(b + own + logit_sd * z + s)).astype(float)
        out.append(stats.Outcomes("ab"[k], list(range(k * r.seeds, (k + 1) * r.seeds)), np.arange(ITEMS), y,
                                  np.ones_like(y)))
    return tuple(out)


def truncated(o: stats.Outcomes) -> bool:
    return float(o.per_seed().var(ddof=1)) <= o.residual_var() / o.n_items


def _reference(a: stats.Outcomes, b: stats.Outcomes, pooled: bool) -> float:
    """The p-value of a reference test: 'pooled' (the earlier one) or Welch without a floor."""
    def parts(o: stats.Outcomes) -> list[tuple[float, float]]:
        S, n, r, s2 = o.n_seeds, o.n_items, o.residual_var(), float(o.per_seed().var(ddof=1))
        if pooled:
            return [(max(0.0, s2 - r / n) / S, S - 1), (r / (S * n), (S - 1) * (n - 1))]
        return [(s2 / S, S - 1)]
    d = a.pseudo().mean(0) - b.pseudo().mean(0)
    item = d.var(ddof=1) - a.residual_var() / a.n_seeds - b.residual_var() / b.n_seeds
    var, df = stats.satterthwaite(parts(a) + parts(b) + [(max(item, 0.0) / len(d), len(d) - 1)])
    diff = a.metric() - b.metric()
    return float(2 * sps.t.sf(abs(diff) / math.sqrt(var), df)) if var > 0 else float(diff == 0)


def verdict(a: stats.Outcomes, b: stats.Outcomes, p: float | None = None) -> bool:
    """Whether a verdict ('A better' or 'B better') is given: the decision of ``harness.verdicts``."""
    c = stats.compare(a, b, True)
    return verdicts.better_side(c.diff, c.p_value if p is None else p, True) is not None


def rate(r: Regime, reps: int, seed: int, gain: float = 0.0, max_tries: int = 200) -> dict[str, float]:
    """Rejection rates over ``reps`` draws (only the truncated draws where the regime asks for them)."""
    rng = np.random.default_rng(seed)
    logit_sd, shift = logit_sd_for(r.seed_sd, r.heavy), shift_for(gain) if gain else 0.0
    hits = {"new": 0, "pooled": 0, "welch": 0}
    got = tries = 0
    while got < reps and tries < reps * max_tries:
        tries += 1
        a, b = draw(rng, r, logit_sd, shift)
        if r.truncated and not (truncated(a) and truncated(b)):
            continue
        got += 1
        hits["new"] += verdict(a, b)
        hits["pooled"] += verdict(a, b, _reference(a, b, pooled=True))
        hits["welch"] += verdict(a, b, _reference(a, b, pooled=False))
    return {"draws": got, "share_of_draws": got / max(tries, 1), **{k: v / max(got, 1) for k, v in hits.items()}}


def regimes() -> list[Regime]:
    out = []
    for seeds in (3, 5):
        out += [Regime("normal", seeds, sd) for sd in SEED_SDS]
        out += [Regime("both truncated", seeds, sd, truncated=True) for sd in SEED_SDS]
        out += [Regime("heavy-tailed", seeds, sd, heavy=True) for sd in (0.006, 0.01)]
        out += [Regime("different items", seeds, sd, kappa=KAPPA) for sd in (0.0, 0.006)]
    return out


def table(reps: int, power_reps: int) -> pd.DataFrame:
    rows = []
    for i, r in enumerate(regimes()):
        null = rate(r, reps if not r.truncated else max(reps // 2, 100), seed=1000 + i)
        se = math.sqrt(max(null["new"], 1e-12) * (1 - null["new"]) / max(null["draws"], 1))
        limit = stats.ALPHA + 2 * math.sqrt(stats.ALPHA * (1 - stats.ALPHA) / max(null["draws"], 1))
        row = {"regime": r.name, "seeds": r.seeds, "seed_sd": r.seed_sd, "draws": null["draws"],
               "share_of_draws": null["share_of_draws"], "false_positive": null["new"], "mc_se": se,
               "limit": limit, "within": null["new"] <= limit, "pooled_before": null["pooled"], "welch": null["welch"]}
        if r.name in ("normal", "different items"):
            for gain in (0.01, 0.02):
                power = rate(r, power_reps, seed=2000 + i, gain=gain)
                row[f"power_{gain:g}"], row[f"power_before_{gain:g}"] = power["new"], power["pooled"]
        rows.append(row)
        print(f"{r.name:>16} S={r.seeds} sd={r.seed_sd:<5} fp {row['false_positive']:.3f} (limit {limit:.3f}; "
              f"pooled {row['pooled_before']:.3f}, Welch {row['welch']:.3f}; {null['draws']} draws)", file=sys.stderr)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    """The README's table."""
    lines = ["| regime | seeds | seed-level sd | false verdicts (± MC SE) | limit 5% + 2 SE | earlier test | "
             "Welch, no floor | power at +0.01 / +0.02 (earlier test) |", "|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        power = (f"{r['power_0.01']:.0%} / {r['power_0.02']:.0%} ({r['power_before_0.01']:.0%} / "
                 f"{r['power_before_0.02']:.0%})" if math.isfinite(float(r.get("power_0.01", math.nan))) else "-")
        share = f" ({r['share_of_draws']:.0%} of draws)" if r["regime"] == "both truncated" else ""
        mark = "" if r["within"] else " **over**"
        lines.append(f"| {r['regime']}{share} | {int(r['seeds'])} | {r['seed_sd']:g} | {r['false_positive']:.1%} ± "
                     f"{r['mc_se']:.1%}{mark} | {r['limit']:.1%} | {r['pooled_before']:.1%} | {r['welch']:.1%} | {power} |")
    return "\n".join(lines)


def replace_block(path: Path, text: str) -> None:
    """Rewrite the calibration block of ``path`` (between BEGIN and END) with ``text``."""
    content = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(content):
        raise SystemExit(f"{path}: no {BEGIN} ... {END} block")
    path.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", content))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2000, help="draws per regime under no difference")
    parser.add_argument("--power-reps", type=int, default=500, help="draws per power point")
    parser.add_argument("--csv", type=Path, help="write the table here")
    parser.add_argument("--markdown", type=Path, help="rewrite this file's calibration block with the table")
    args = parser.parse_args(argv)
    df = table(args.reps, args.power_reps)
    if args.csv:
        df.to_csv(args.csv, index=False, float_format="%.6g")
    if args.markdown:
        replace_block(args.markdown, markdown(df))
    print(markdown(df))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
