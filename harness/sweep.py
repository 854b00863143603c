"""A sweep: plan the cells (tasks x models x seeds), skip those already done, run the rest through
an executor, and publish the leaderboard. ``python -m harness run DOMAIN`` is one sweep."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

import baselines  # noqa: F401  (registers the baseline models)
import tasks as tasks_pkg
import zoo  # noqa: F401  (registers the transformer models)
from tasks.base import Task
from zoo.registry import RegistryError, get_model_entry, list_models, unknown_name_error
from zoo.sizing import count_params, fit_to_params

from . import distributed, executors, leaderboard, report, tracking, tune, verdicts
from .arguments import parse_value
from .config import RunConfig, resolve
from .devices import resolve_device, set_deterministic
from .errors import UsageError
from .plugins import load_plugins
from .records import (checkpoint_path, config_hash, file_lock, load_outcomes, read_record, read_record_files, read_records,
                      record_path, write_record)
from .stopping import stop_on_signals


def serves(task: Task | type[Task]) -> str:
    """'classification[image]': the kind and input a task asks its models for."""
    return f"{task.kind}[{task.modality}]" if task.modality else task.kind


def resolve_tasks(domain: str, requested: list[str] | None) -> list[str]:
    """The task names to run in ``domain``: ``requested`` (checked), or the domain's defaults."""
    domains = tasks_pkg.list_domains()
    if domain not in domains:
        raise unknown_name_error("domain", domain, domains)
    if not requested:
        return tasks_pkg.list_tasks(domain, default_only=True)
    for name in requested:
        cls = tasks_pkg.get_task_class(name)
        if cls.domain != domain:
            raise UsageError(f"task {name!r} belongs to domain {cls.domain!r}, not {domain!r}")
    return list(dict.fromkeys(requested))


def resolve_models(task: Task, requested: list[str] | None) -> list[str]:
    """The model names to run on ``task``: every model that serves it, or ``requested`` (names and
    wildcards), each checked against the task's kind and modality."""
    able = list_models(kind=task.kind, modality=task.modality)
    if not requested:
        if not able:
            raise UsageError(f"no registered model serves {serves(task)} tasks like {task.name!r}")
        return able
    chosen: list[str] = []
    for pattern in requested:
        if any(ch in pattern for ch in "*?["):
            matches = list_models(pattern, kind=task.kind, modality=task.modality)
            if not matches:
                raise UsageError(f"no model matching {pattern!r} serves {serves(task)} tasks like {task.name!r}")
        else:
            entry = get_model_entry(pattern)
            if not entry.supports(task.kind, task.modality):
                raise UsageError(f"model {pattern!r} serves {entry.serves()} tasks, not task {task.name!r} "
                                 f"({serves(task)}); models that do: {', '.join(able) or 'none'}")
            matches = [pattern]
        chosen += [m for m in matches if m not in chosen]
    return chosen


# ------------------------------------------------------------------------------------------ where

def check_executor(args: argparse.Namespace) -> None:
    if args.ddp:
        if not distributed.launched_by_torchrun():
            raise UsageError("--ddp needs the processes that torchrun starts: "
                             "torchrun --nproc_per_node N -m harness run DOMAIN ... --ddp")
        if args.executor != "local" or args.jobs > 1:
            raise UsageError("--ddp trains one cell on all of torchrun's processes; it takes no --jobs or --executor")
    if args.executor != "ray":
        for flag, value in (("--ray-address", args.ray_address), ("--gpus-per-cell", args.gpus_per_cell)):
            if value:
                raise UsageError(f"{flag} is for --executor ray; the local executor takes --jobs N and --cpus-per-cell")
    elif args.jobs > 1:
        raise UsageError("--jobs is for the local executor; with --executor ray, --cpus-per-cell and "
                         "--gpus-per-cell decide how many cells run at once")


def ray_device(args: argparse.Namespace) -> str:
    """A Ray task sees the GPUs it asked for, and no others: auto means cuda where cells ask for GPUs."""
    if args.device == "auto":
        return "cuda" if args.gpus_per_cell > 0 else "cpu"
    if args.device == "cuda" and not args.gpus_per_cell:
        raise UsageError("--device cuda with --executor ray needs --gpus-per-cell (1 per cell, or 0.5 to share a GPU)")
    return args.device


def default_precision(requested: str, device: str) -> str:
    """auto: fp32 on CPU, bf16 where the GPU has it, else fp16 (a Ray driver without a GPU assumes
    its workers' GPUs have bf16)."""
    if requested != "auto":
        return requested
    if device == "cpu":
        return "fp32"
    return "bf16" if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else "fp16"


def where_cells_run(args: argparse.Namespace, group: distributed.Group) -> str:
    if args.executor == "ray":
        return f"Ray ({args.ray_address or 'local'})"
    if args.jobs > 1:
        return f"{args.jobs} local processes"
    return f"{group.world} DDP processes" if group.distributed else "this process"


# ------------------------------------------------------------------------------------------ plan

@dataclass
class Plan:
    """What a sweep will run: its tasks (set up), each task's models and their configurations."""

    args: argparse.Namespace
    device: str
    precision: str
    group: distributed.Group
    tasks: dict[str, Task] = field(default_factory=dict)
    models: dict[str, list[str]] = field(default_factory=dict)  # task name -> model names
    configs: dict[tuple[str, str], RunConfig] = field(default_factory=dict)
    tuned: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (task, model) -> its study (tune)
    trackers: tracking.Trackers = field(default_factory=tracking.Trackers)  # --track: MLflow, TensorBoard

    def seeds(self, task: Task) -> int:
        return self.args.seeds or task.default_seeds

    def cells(self) -> list[tuple[Task, str, int]]:
        start = getattr(self.args, "seed_start", 0)
        return [(task, model, seed) for name, task in self.tasks.items() for model in self.models[name]
                for seed in range(start, start + self.seeds(task))]

    def log(self, message: str) -> None:  # rank 0 speaks for a DDP group; above any progress bars
        if self.group.is_main:
            tqdm.write(message, file=sys.stderr)


def _make_tasks(plan: Plan) -> None:
    args = plan.args
    task_opts = dict(args.task_opt)
    for name in resolve_tasks(args.domain, args.tasks):
        cls = tasks_pkg.get_task_class(name)
        try:
            task = cls(data_dir=args.data_dir, download=args.download, train_fraction=args.train_fraction or 1.0,
                       **{k: v for k, v in task_opts.items() if k in cls.options})
        except ValueError as e:  # the task's message names it, the option and what is accepted
            named = str(e).startswith(f"task {name!r}")
            raise UsageError(str(e) if named else f"task {name!r}: bad --task-opt value ({e})") from None
        plan.tasks[name] = task
        plan.models[name] = resolve_models(task, args.models)
    unused = set(task_opts) - {k for task in plan.tasks.values() for k in task.options}
    if unused:
        raise UsageError(f"--task-opt {', '.join(sorted(unused))}: no selected task has such an option")


def _configure(plan: Plan, task: Task, base: RunConfig, model_opts: dict[str, Any]) -> None:
    """Each model's configuration on ``task``: its width fitted to --params, and checked by building
    it on the meta device (no weights allocated), so that a bad option fails before any training."""
    args = plan.args
    for model in plan.models[task.name]:
        try:
            fitted = fit_to_params(model, task.spec, args.params, args.size, **model_opts) if args.params else {}
            count_params(model, task.spec, args.size, **model_opts, **fitted)
        except (RegistryError, ValueError, TypeError) as e:
            named = str(e).startswith(f"model {model!r}")  # the registry's own messages name the model
            raise UsageError(f"{e} (task {task.name!r})" if named else
                             f"model {model!r} for task {task.name!r}: {e}") from None
        plan.configs[task.name, model] = replace(base, model_opts=tuple({**model_opts, **fitted}.items()),
                                                 params_target=args.params, fitted=tuple(fitted.items()))


def make_plan(args: argparse.Namespace, device: str, group: distributed.Group) -> Plan:
    """Tasks set up (a missing dataset fails now) and every model configured and checked."""
    plan = Plan(args, device, default_precision(args.precision, device), group)
    _make_tasks(plan)
    model_opts = {k: parse_value(v) for k, v in args.model_opt}
    base = RunConfig(size=args.size, epochs=args.epochs, steps=args.steps, batch_size=args.batch_size,
                     lr=args.lr, weight_decay=args.weight_decay, device=device, backend=args.backend,
                     precision=plan.precision, model_opts=tuple(model_opts.items()),
                     deterministic=args.deterministic, compile=args.compile, channels_last=args.channels_last,
                     data_on_device=args.data_on_device, world_size=group.world,
                     train_fraction=args.train_fraction or 1.0)
    if not group.is_main:
        group.barrier()  # rank 0 sets the tasks up first: data generated or downloaded once, then read by all
    for task in plan.tasks.values():
        batch = args.batch_size or task.budget.batch_size
        if batch % group.world:
            raise UsageError(f"--ddp over {group.world} processes: task {task.name!r} has batch size {batch}, "
                             f"not divisible by {group.world}; pass --batch-size")
        try:
            task.load()
        except ValueError as e:  # a train_fraction the task cannot take
            raise UsageError(str(e)) from None
        _configure(plan, task, base, model_opts)
    if group.is_main:
        group.barrier()
    return plan


def pending(plan: Plan, threads: int | None) -> tuple[list[dict[str, Any]], list[executors.Cell]]:
    """(records of the cells already done with the same configuration, the cells still to run). The
    configuration covers the data (``Task.fingerprint``): other data is another cell. With --force a
    cell runs again from scratch: its checkpoint is set aside."""
    args = plan.args
    done_records: list[dict[str, Any]] = []
    todo: list[executors.Cell] = []
    for task, model, seed in plan.cells():
        config = plan.configs[task.name, model]
        chash = config_hash(resolve(task, get_model_entry(model), config))
        where = (args.out, task.domain, task.name, model, config.label, seed, chash)
        done = None if args.force else read_record(record_path(*where))
        if done is not None and done.get("status") == "ok" and done["config_hash"] == chash:
            done_records.append(done)
            plan.log(f"{task.name} {model} seed {seed}: already done, same configuration and data "
                     f"({done['metric']} {done['metric_value']:.4f}; config {chash}); --force reruns it")
            continue
        checkpoint = checkpoint_path(*where)
        if args.force and checkpoint.exists() and plan.group.is_main:
            checkpoint.replace(checkpoint.with_name(f"{checkpoint.name}.unusable"))
        todo.append(executors.Cell(
            task.name, executors.task_kwargs(task, args.data_dir, args.download),
            model, seed, config, checkpoint=str(checkpoint.resolve()),
            checkpoint_every_s=args.checkpoint_minutes * 60, plugins=tuple(args.plugin), threads=threads))
    return done_records, plan.group.share(todo)  # rank 0's view of what is done holds for the whole group


def _plan_line(plan: Plan, n_cells: int, n_todo: int) -> str:
    args = plan.args
    seeds = sorted({plan.seeds(task) for task in plan.tasks.values()})
    size = f"{args.params:,} parameters" if args.params else f"size {args.size}"
    return (f"harness: {n_cells} cells ({args.domain}: {', '.join(plan.tasks)}; "
            f"{'/'.join(map(str, seeds))} seed(s); {size}; {plan.device}, {args.backend}, {plan.precision}); "
            f"{n_todo} to run in {where_cells_run(args, plan.group)}")


# ------------------------------------------------------------------------------------------ run

def run_sweep(args: argparse.Namespace) -> int:
    """``python -m harness run DOMAIN ...``: 0 when every cell finished, 1 when some failed, 130
    when interrupted (finished cells are kept and published)."""
    load_plugins(args.plugin)
    check_executor(args)
    track = tracking.parse_track(getattr(args, "track", None))
    if getattr(args, "tune", None):
        tune.check_args(args)
    device = resolve_device(args.device) if args.executor != "ray" else ray_device(args)
    group = distributed.init(device) if args.ddp else distributed.SINGLE
    plan: Plan | None = None
    try:
        plan = make_plan(args, device, group)
        check_writable(args.out, output_folders(plan))
        plan.trackers = tracking.open_trackers(track if group.is_main else [], args.out)  # before any training
        set_deterministic(args.deterministic)
        threads = executors.default_threads(args.executor, args.jobs, args.cpus_per_cell)
        if getattr(args, "tune", None):
            code = tune.tune_plan(plan, threads)
            if code:
                return code
        records, todo = pending(plan, threads)
        plan.log(_plan_line(plan, len(plan.cells()), len(todo)))
        return _execute(plan, records, todo)
    finally:
        if plan is not None:
            plan.trackers.close()
        if args.ddp:
            distributed.shutdown()


def _execute(plan: Plan, records: list[dict[str, Any]], todo: list[executors.Cell]) -> int:
    """Run ``todo``, write each record as it arrives, and publish what finished (also when stopped)."""
    args, group = plan.args, plan.group
    failed: list[dict[str, Any]] = []
    start = time.perf_counter()
    with stop_on_signals():
        executor, overall = None, None
        try:
            if todo:
                executor = executors.make_executor(args.executor, jobs=args.jobs, address=args.ray_address,
                                                   cpus=args.cpus_per_cell or 1, gpus=args.gpus_per_cell,
                                                   progress=not args.quiet, group=group)
                overall = OverallBar(len(todo), executor.slots, enabled=not args.quiet and group.is_main)
            for i, (cell, record) in enumerate(executor.run(todo, plan.tasks) if executor else [], 1):
                if record is not None:  # None: a DDP rank other than 0, which has no record
                    _keep(plan, cell, record, executor.name, f"[{i}/{len(todo)}]", records, failed)
                overall.advance()
        except KeyboardInterrupt:
            plan.log(f"\nharness: interrupted; {len(records)} of {len(plan.cells())} cells finished and are kept in "
                     f"{args.out / 'runs'} (a cell that was running saved a checkpoint: rerun the same command "
                     f"to continue)")
            _publish_main(plan, records)
            return 130
        except BaseException:  # a crash of the harness itself still publishes what finished, then reports itself
            _publish_main(plan, records)
            raise
        finally:
            if overall is not None:
                overall.close()
            if executor is not None:
                executor.close()
    _publish_main(plan, records)
    n = len(plan.cells())
    plan.log(f"harness: {n} cells in {time.perf_counter() - start:.0f} s")
    if failed:
        plan.log(f"harness: {len(failed)} of {n} cells failed (their records say why, status 'failed'): "
                 + ", ".join(f"{r['task']}/{r['model']}/seed {r['seed']}" for r in failed))
        return 1
    return 0


def _keep(plan: Plan, cell: executors.Cell, record: dict[str, Any], executor: str, counter: str,
          records: list[dict[str, Any]], failed: list[dict[str, Any]]) -> None:
    """Write a finished cell's record and say how it went."""
    task = plan.tasks[cell.task]
    record["executor"] = executor
    if (cell.task, cell.model) in plan.tuned:
        record["tuned"] = plan.tuned[cell.task, cell.model]
    where = (plan.args.out, task.domain, task.name, cell.model, cell.config.label, cell.seed, record["config_hash"])
    ok = record["status"] == "ok"
    written = write_record(record_path(*where, failed=not ok), record)  # a failed attempt never replaces a good record
    plan.trackers.cell(record, written)  # --track: after the record is safe; a tracker that fails only warns
    if ok:
        record_path(*where, failed=True).unlink(missing_ok=True)
    if ok:
        records.append(record)
        plan.log(f"{counter} {cell.name}: {record['metric']} {record['metric_value']:.4f} "
                 f"({record['train_time_s']:.1f} s)")
    else:
        failed.append(record)
        plan.log(f"{counter} {cell.name}: FAILED ({record['reason'][:300]})")


# ------------------------------------------------------------------------------------------ publish

def check_writable(out: Path, folders: tuple[Path, ...] = ()) -> None:
    """``out`` and every folder under it that the run will write (records and checkpoints, plots)
    exist and take a file, before any training: a run never learns at its end that it cannot save."""
    for folder in (out, *folders):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"  # per process: DDP ranks probe at once
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            inside = "" if folder == out else f" (the run writes to {folder})"
            raise UsageError(f"--out {out}{inside}: not a writable directory ({e.strerror or e})") from None


def output_folders(plan: Plan) -> tuple[Path, ...]:
    """The folders a sweep writes under --out: one per task for records and checkpoints, and the plots."""
    out = plan.args.out
    return (*(out / "runs" / task.domain / task.name for task in plan.tasks.values()), out / "plots")


def results_lock(out: Path):
    """An exclusive lock on ``out`` (out/.lock) for read-merge-write of shared files."""
    return file_lock(out / ".lock")


def _publish_main(plan: Plan, records: list[dict[str, Any]]) -> None:
    if records and plan.group.is_main:
        publish(records, plan.args.out, plan.args.domain)
        plan.trackers.published(plan.args.domain, plan.args.out / f"leaderboard_{plan.args.domain}.csv")


class OverallBar:
    """The sweep's own progress bar, above each cell's: cells done of those to run, how many are
    running and waiting (from the executor's slots), and tqdm's estimate of the time left."""

    def __init__(self, total: int, slots: int, enabled: bool) -> None:
        self.total, self.slots, self.done = total, max(1, slots), 0
        self.bar = tqdm(total=total, desc="sweep", unit="cell", position=0, leave=True, dynamic_ncols=True,
                        disable=None if enabled else True)  # None: shown on a terminal only
        self._postfix()

    def _postfix(self) -> None:
        left = self.total - self.done
        running = min(left, self.slots)
        self.bar.set_postfix_str(f"{running} running, {left - running} waiting", refresh=True)

    def advance(self) -> None:
        self.done += 1
        self.bar.update(1)
        self._postfix()

    def close(self) -> None:
        self.bar.close()


def _existing_board(path: Path, out: Path, domain: str) -> pd.DataFrame:
    """The leaderboard on disk; one that cannot be read is derived data: rebuilt from the records."""
    try:
        return leaderboard.read_leaderboard(path)
    except leaderboard.DamagedFile as e:
        print(f"warning: {path} cannot be read ({e}); rebuilding it from the records under {out / 'runs' / domain}",
              file=sys.stderr)
        return leaderboard.aggregate([r for r in read_records(out / "runs") if r["domain"] == domain])


def _existing_table(path: Path) -> pd.DataFrame:
    try:
        return leaderboard.read_csv(path)
    except leaderboard.DamagedFile as e:
        print(f"warning: {path} cannot be read ({e}); writing this run's rows afresh", file=sys.stderr)
        return pd.DataFrame()


def publish(records: list[dict[str, Any]], out: Path, domain: str) -> None:
    """Merge this run's rows into results/leaderboard_<domain>.csv and print them; tables that
    tasks attach to their examples go to results/<table>_<domain>.csv."""
    found = read_record_files(out / "runs")
    outcomes = load_outcomes(found)  # per-item outcomes: intervals, paired-test ties and verdicts
    new = leaderboard.aggregate(records, outcomes)
    path = out / f"leaderboard_{domain}.csv"
    with results_lock(out):  # two runs sharing --out merge one after the other, never interleaved
        leaderboard.write(leaderboard.merge(_existing_board(path, out, domain), new, outcomes), path)
        for name, table in leaderboard.tables(records).items():
            table_path = out / f"{name}_{domain}.csv"
            leaderboard.write_table(leaderboard.merge_table(_existing_table(table_path), table), table_path)
            print(f"wrote {table_path}")
        report_path = report.write_report([r for _, r in found], out, outcomes)
    print(leaderboard.to_text(new))
    print("\n".join(["", *verdicts.run_lines(verdicts.verdicts(new, outcomes))]))
    print(f"\nwrote {path} (and .md); records in {out / 'runs' / domain}")
    print(f"wrote {report.written(report_path)} (plots in {out / 'plots'})")
