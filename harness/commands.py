"""The read-only commands: ``list`` (models, tasks, domains), ``report`` (rebuild leaderboards, verdicts
and REPORT.md from the records), ``compare`` (the paired test of two models on a task) and
``examples`` (what trained models produced)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pandas as pd

import tasks as tasks_pkg
from zoo.registry import SIZES, get_model_entry, list_models

from . import leaderboard, report, stats, verdicts
from .errors import UsageError
from .options import CompareOptions, ExamplesOptions, ListOptions, ReportOptions
from .plugins import load_plugins
from .records import DEFAULT_TUNING, load_outcomes, read_record_files, read_records
from .report import task_class
from .sweep import check_writable
from .sweep import serves


def cmd_list(args: ListOptions) -> int:
    load_plugins(list(args.plugin))
    if args.what == "models":
        found = list_models(args.pattern)
        width = max((len(n) for n in found), default=0)
        for name in found:
            e = get_model_entry(name)
            print(f"{name:<{width}}  {e.family:<12} {e.serves():<37} {e.description}")
    elif args.what == "tasks":
        found = [n for n in tasks_pkg.list_tasks() if fnmatch.fnmatchcase(n, args.pattern)]
        width = max((len(n) for n in found), default=0)
        for name in found:
            c = tasks_pkg.get_task_class(name)
            flags = ("offline" if c.offline else "your data" if c.local_data else "download") + \
                (", default" if c.default else "")
            print(f"{name:<{width}}  {c.domain:<8} {serves(c):<26} {flags:<17} {c.report.description}")
    else:
        for name in tasks_pkg.list_domains():
            if fnmatch.fnmatchcase(name, args.pattern):
                print(f"{name:<10} tasks: {', '.join(tasks_pkg.list_tasks(name))}")
    return 0


def cmd_report(args: ReportOptions) -> int:
    """``report``: the leaderboards, verdicts, REPORT.md and report.html rebuilt from the records (where
    --out exists, it must take files: a one-line error before anything is read)."""
    if args.out.is_dir():
        check_writable(args.out)
    found = leaderboard.current(read_record_files(args.out / "runs"), leaderboard.shown_configs(args.out))
    records = [r for _, r in found]
    if not records:
        raise UsageError(f"no records under {args.out / 'runs'}; run 'python -m harness run DOMAIN' first")
    outcomes = load_outcomes(found)
    for domain in sorted({r["domain"] for r in records}):
        df = leaderboard.aggregate([r for r in records if r["domain"] == domain], outcomes)
        path = args.out / f"leaderboard_{domain}.csv"
        leaderboard.write(df, path)
        print(f"{leaderboard.to_text(df)}\n\nwrote {path} (and .md)\n")
    path, table = report.write_reports(records, args.out, outcomes, args.pair)
    print("\n".join([*verdicts.run_lines(table), ""]) if not table.empty else "", end="")
    print(f"wrote {report.written(path)} and {args.out / 'verdicts.csv'} (plots in {args.out / 'plots'})")
    return 0


def cmd_compare(args: CompareOptions) -> int:
    """The paired test of two models on one task, from the records under --out: the unadjusted verdict
    of this test alone and, where the pair is a row of a declared family, the adjusted one that
    verdicts.csv holds."""
    load_plugins(list(args.plugin))
    cls = tasks_pkg.get_task_class(args.task)  # an unknown task: a one-line RegistryError naming the known ones
    if args.model_a == args.model_b:
        raise UsageError(f"compare needs two different models; got {args.model_a!r} twice (a model against itself "
                         f"is no test)")
    everything = leaderboard.current(read_record_files(args.out / "runs"), leaderboard.shown_configs(args.out))
    found = [(p, r) for p, r in everything if r.get("task") == args.task]
    outcomes = load_outcomes(found)
    task_range = verdicts.task_bounds(outcomes).get((cls.domain, args.task))
    size = args.size or _preset_size(outcomes, args.model_a, args.model_b)
    outcomes = {k: v for k, v in outcomes.items() if size in (None, k[3])}
    tuning = args.tuning or _common_tuning(outcomes, args.model_a, args.model_b)
    outcomes = {k: v for k, v in outcomes.items() if tuning in (None, k[4])}
    side = [_one(outcomes, found, args.task, model, (size, tuning), args.out) for model in (args.model_a, args.model_b)]
    try:
        c = stats.compare(side[0], side[1], cls.higher_is_better, args.alpha)
    except ValueError as e:
        raise UsageError(str(e)) from None
    coordinate = size or "its size"
    coordinate += "" if tuning in (None, DEFAULT_TUNING) else f", tuning {tuning}"
    label = f"{args.task} ({coordinate}): {cls.report.metric_label(cls.metric, cls.higher_is_better)}, records under " \
        f"{args.out / 'runs'}"
    row = _family_row(everything, args.task, args.model_a, args.model_b, size, tuning)
    print("\n".join(verdicts.describe(c, side[0], side[1], label, cls.report.report_iqm, row, task_range)))
    return 0


def _preset_size(outcomes: dict, model_a: str, model_b: str) -> str | None:
    """The size both models have records at: the only one, else the first preset (tiny, small, base)
    they share, as the headline of verdicts.csv takes; None where that leaves a choice to --size."""
    sizes = [{k[3] for k in outcomes if k[2] == model} for model in (model_a, model_b)]
    shared = sizes[0] & sizes[1]
    if len(shared) == 1:
        return next(iter(shared))
    return next((s for s in SIZES if s in shared), None)


def _family_row(found: list, task: str, model_a: str, model_b: str, size: str | None,
                tuning: str | None) -> pd.Series | None:
    """The verdicts.csv row of this pair (A and B as given, or swapped) at this coordinate, computed from
    the records as ``report`` computes it; None where no declared family holds the pair."""
    outcomes = load_outcomes(found)
    decided = verdicts.table(leaderboard.aggregate([r for _, r in found], outcomes), outcomes)
    mine = verdicts.rows_for(decided, task, size, tuning or DEFAULT_TUNING)
    for a, b in ((model_a, model_b), (model_b, model_a)):
        hit = mine[(mine["model_a"] == a) & (mine["model_b"] == b)]
        if len(hit):
            row = hit.iloc[0]
            return row if a == model_a else verdicts.swapped(row)
    return None


def _common_tuning(outcomes: dict, model_a: str, model_b: str) -> str | None:
    """The tuning both models' rows share: 'default' where they share it, else the one they share
    (None where they share none: ``_one`` then says what is missing)."""
    tunings = [{k[4] for k in outcomes if k[2] == model} for model in (model_a, model_b)]
    common = (tunings[0] & tunings[1]) or (tunings[0] | tunings[1])  # none shared: _one says what is missing
    if DEFAULT_TUNING in common or len(common) <= 1:
        return DEFAULT_TUNING if DEFAULT_TUNING in common else next(iter(common), None)
    raise UsageError(f"{model_a} and {model_b} have records under several tunings ({', '.join(sorted(common))}); "
                     f"pick one with --tuning")


def _one(outcomes: dict, found: list, task: str, model: str, where: tuple[str | None, str | None],
         out: Path) -> stats.Outcomes:
    """The outcomes of ``model`` on ``task``: one size and tuning (the ones there are, or --size and
    --tuning), else a one-line error."""
    rows = {k: v for k, v in outcomes.items() if k[2] == model}
    if len(rows) == 1:
        return next(iter(rows.values()))
    if len(rows) > 1:
        raise UsageError(f"{model} has records on {task} at several sizes ({', '.join(sorted(k[3] for k in rows))}); "
                         f"pick one with --size")
    mine = [r for _, r in found if r.get("status") == "ok" and r["model"] == model]
    if mine:
        kept = sorted({f"{r['size']} {r.get('tuning', DEFAULT_TUNING)}" for r in mine})
        asked = " ".join(filter(None, where))
        raise UsageError(f"the records of {model} on {task} under {out / 'runs'} ({', '.join(kept)}) keep no per-item "
                         f"outcomes{' at ' + asked if asked else ''} (made before they were kept, or at another size "
                         f"or tuning); rerun them with --force, or pick --size / --tuning")
    ran = sorted({r["model"] for _, r in found if r.get("status") == "ok"})
    raise UsageError(f"no records of {model} on {task} under {out / 'runs'}; models with records there: "
                     f"{', '.join(ran) or 'none'}")


def cmd_examples(args: ExamplesOptions) -> int:
    if not any(ch in args.task for ch in "*?["):
        tasks_pkg.get_task_class(args.task)  # an unknown task: a one-line RegistryError with 'did you mean'
    found = read_records(args.out / "runs")
    if not any(ch in args.model for ch in "*?[") and args.model not in {r["model"] for r in found}:
        get_model_entry(args.model)  # neither registered nor in the records: unknown, with 'did you mean'
    records = [r for r in found if r.get("examples")
               and fnmatch.fnmatchcase(r["task"], args.task) and fnmatch.fnmatchcase(r["model"], args.model)]
    if not records:
        raise UsageError(f"no records with examples for task {args.task!r}, model {args.model!r} under "
                         f"{args.out / 'runs'}")
    for r in records:
        tuned = "" if r.get("tuning", "default") == "default" else f", {r['tuning']}"
        print(f"== {r['task']} / {r['model']} ({r['size']}{tuned}, seed {r['seed']}): {r['metric']} "
              f"{r['metric_value']:.4f}")
        for line in task_class(r["task"]).format_examples(r["examples"]):
            print(line)
        print()
    return 0
