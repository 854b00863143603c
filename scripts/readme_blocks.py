"""The README's numbers about the published results, generated from results/ so that they cannot drift.

Every block between ``<!-- results:NAME:begin -->`` and ``<!-- results:NAME:end -->`` in README.md is
what ``render(NAME, results)`` makes of the files under results/:

- ``run-vision``: what ``python -m harness run vision`` prints for the published digits cells (the
  leaderboard rows and the verdict lines, the same numbers as verdicts.csv's headline rows);
- ``verdicts``: the headline and tuned families of verdicts.csv, each with its count;
- ``studies``: each study's crossover, from verdicts.csv and the leaderboards;
- ``tuning``: tuned against default, from tuning.csv;
- ``calibration``: the calibration table, from results/calibration.csv (``scripts/calibration.py``).

    python scripts/readme_blocks.py            # rewrite README.md's blocks from results/
    python scripts/readme_blocks.py --check    # exit 1 and name each block that differs

``tests/test_readme.py`` runs the check.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from harness import leaderboard, studies, verdicts  # noqa: E402

BLOCK = re.compile(r"<!-- results:(?P<name>[a-z-]+):begin -->\n(?P<body>.*?)<!-- results:(?P=name):end -->", re.S)


def _verdicts(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "verdicts.csv")


def _board(results: Path) -> pd.DataFrame:
    return pd.concat([leaderboard.read_csv(p) for p in sorted(results.glob("leaderboard_*.csv"))], ignore_index=True)


def run_vision(results: Path) -> str:
    board = leaderboard.read_csv(results / "leaderboard_vision.csv")
    rows = board[(board["task"] == "digits") & (board["size"] == "tiny") & (board["tuning"] == "default")]
    table = _verdicts(results)
    found = table[(table["family"] == verdicts.HEADLINE) & (table["task"] == "digits")]
    lines = "\n".join(verdicts.run_line(row) for _, row in found.iterrows())
    return f"```\n{leaderboard.to_text(rows)}\n\n{lines}\n```"


def verdict_tables(results: Path) -> str:
    table = _verdicts(results)
    keep = table[(table["family"] == verdicts.HEADLINE) | table["family"].str.startswith("tuned")]
    return "\n".join(verdicts.summary_lines(keep)).strip()


def study_lines(results: Path) -> str:
    board, decided = _board(results), _verdicts(results)
    lines = ["| study | grid | finding (each point's verdict as verdicts.csv holds it) |", "|---|---|---|"]
    for (domain, task, tuning), rows in studies.grids(board).items():
        mine = decided[(decided["domain"] == domain) & (decided["task"] == task) & (decided["tuning"] == tuning)]
        for (fa, fb), points, sentence in studies.crossover(rows, mine):
            grid = ", ".join(f"{p['size']} ({studies.human(p['x'])})" for _, p in points.iterrows())
            steps = "; ".join(f"{p['size']}: {p['verdict']} ({p['model_a']} {p['metric_a']:.3f} vs {p['model_b']} "
                              f"{p['metric_b']:.3f})" for _, p in points.iterrows())
            lines.append(f"| {task} ({tuning}), {fa} vs {fb} | {grid} | **{sentence}**. {steps} |")
    return "\n".join(lines)


def tuning_table(results: Path) -> str:
    df = pd.read_csv(results / "tuning.csv")
    lines = ["| task | model | default | tuned | tuned - default [95% CI] | p (Holm) | verdict | chosen |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        ci = f" [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if pd.notna(r.get("ci_low")) else ""
        lines.append(f"| {r['task']} | {r['model']} | {r['default_mean']:.4f} | {r['tuned_mean']:.4f} | "
                     f"{r['diff']:+.4f}{ci} | {verdicts.fmt_p(r['p_holm'])} | {r['verdict']} | "
                     f"{'its defaults' if r['default_won'] else r['chosen']} |")
    return "\n".join(lines)


def calibration_table(results: Path) -> str:
    spec = importlib.util.spec_from_file_location("calibration", ROOT / "scripts" / "calibration.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.markdown(pd.read_csv(results / "calibration.csv"))


RENDER = {"run-vision": run_vision, "verdicts": verdict_tables, "studies": study_lines, "tuning": tuning_table,
          "calibration": calibration_table}


def render(name: str, results: Path) -> str:
    return RENDER[name](results).rstrip() + "\n"


def blocks(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def updated(text: str, results: Path) -> str:
    return BLOCK.sub(lambda m: f"<!-- results:{m['name']}:begin -->\n{render(m['name'], results)}"
                               f"<!-- results:{m['name']}:end -->", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--check", action="store_true", help="only say which blocks differ (exit 1 if any)")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    if args.check:
        stale = [name for name, body in blocks(text).items() if body != render(name, args.results)]
        for name in stale:
            print(f"{args.readme}: block {name!r} differs from what {args.results} gives", file=sys.stderr)
        return 1 if stale else 0
    args.readme.write_text(updated(text, args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
