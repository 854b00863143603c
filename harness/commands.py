"""The read-only commands: ``list`` (models, tasks, domains), ``report`` (rebuild leaderboards and
REPORT.md from the records) and ``examples`` (what trained models produced)."""

from __future__ import annotations

import argparse
import fnmatch

import tasks as tasks_pkg
from zoo.registry import get_model_entry, list_models

from . import leaderboard, report
from .errors import UsageError
from .plugins import load_plugins
from .records import read_records
from .report import task_class
from .sweep import serves


def cmd_list(args: argparse.Namespace) -> int:
    load_plugins(args.plugin)
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
            flags = ("offline" if c.offline else "download") + (", default" if c.default else "")
            print(f"{name:<{width}}  {c.domain:<8} {serves(c):<26} {flags:<17} {c.description}")
    else:
        for name in tasks_pkg.list_domains():
            if fnmatch.fnmatchcase(name, args.pattern):
                print(f"{name:<10} tasks: {', '.join(tasks_pkg.list_tasks(name))}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    records = read_records(args.out / "runs")
    if not records:
        raise UsageError(f"no records under {args.out / 'runs'}; run 'python -m harness run DOMAIN' first")
    for domain in sorted({r["domain"] for r in records}):
        df = leaderboard.aggregate([r for r in records if r["domain"] == domain])
        path = args.out / f"leaderboard_{domain}.csv"
        leaderboard.write(df, path)
        print(f"{leaderboard.to_text(df)}\n\nwrote {path} (and .md)\n")
    print(f"wrote {report.write_report(records, args.out)} (plots in {args.out / 'plots'})")
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    records = [r for r in read_records(args.out / "runs") if r.get("examples")
               and fnmatch.fnmatchcase(r["task"], args.task) and fnmatch.fnmatchcase(r["model"], args.model)]
    if not records:
        raise UsageError(f"no records with examples for task {args.task!r}, model {args.model!r} under "
                         f"{args.out / 'runs'}")
    for r in records:
        print(f"== {r['task']} / {r['model']} ({r['size']}, seed {r['seed']}): {r['metric']} {r['metric_value']:.4f}")
        for line in task_class(r["task"]).format_examples(r["examples"]):
            print(line)
        print()
    return 0
