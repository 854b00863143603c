"""A sweep: plan the cells (tasks x models x seeds), skip those already done, run the rest through
an executor, and publish the leaderboard. ``python -m harness run DOMAIN`` is one sweep."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

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
from .errors import USER_ERRORS, UsageError
from .options import RunOptions, Sweep
from .plan import Plan
from .plugins import load_plugins
from .records import (DEFAULT_TUNING, KEY, checkpoint_path, claim_cell, config_hash, file_lock, items_readable,
                      key_of, load_outcomes, read_record, read_record_files, record_path, write_record)
from .suite import suite_options

MAX_SEED = 2 ** 32 - 1  # NumPy's seeds are 32-bit


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

def check_executor(args: RunOptions) -> None:
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


def ray_device(args: RunOptions) -> str:
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


def where_cells_run(args: RunOptions, group: distributed.Group) -> str:
    if args.executor == "ray":
        return f"Ray ({args.ray_address or 'local'})"
    if args.jobs > 1:
        return f"{args.jobs} local processes"
    return f"{group.world} DDP processes" if group.distributed else "this process"


# ------------------------------------------------------------------------------------------ plan

def task_options(pairs: list[tuple[str, str]]) -> list[tuple[str | None, str, str]]:
    """``--task-opt`` values as (task or None, key, value): ``pystdlib.block_size=64`` is for the task
    pystdlib alone, ``block_size=64`` for every selected task that has such an option. A named task
    must exist and have the option."""
    parsed = []
    for key, value in pairs:
        task, _, name = key.rpartition(".")
        if task:
            options = tasks_pkg.get_task_class(task).options  # an unknown task: 'did you mean'
            if name not in options:
                raise UsageError(f"--task-opt {key}: task {task!r} has no option {name!r}; accepted: "
                                 f"{', '.join(options) or 'none'}")
        parsed.append((task or None, name, value))
    return parsed


def options_for(cls: type[Task], parsed: list[tuple[str | None, str, str]]) -> dict[str, str]:
    """The --task-opt values that task ``cls`` takes: those for every task that has the option, then
    those named for it (which win)."""
    return {**{k: v for t, k, v in parsed if t is None and k in cls.options},
            **{k: v for t, k, v in parsed if t == cls.name}}


def check_task_options(sweeps: list[Sweep]) -> None:
    """Every --task-opt of a command (the same in each of its sweeps: domains, grid points) is taken by
    some task that one of its sweeps runs, checked before any sweep sets its data up or trains."""
    parsed = task_options(list(sweeps[0].options.task_opt))
    selected = [tasks_pkg.get_task_class(name) for s in sweeps for name in resolve_tasks(s.domain, s.options.tasks)]
    unused = sorted({k for t, k, _ in parsed if t is None} - {k for cls in selected for k in cls.options})
    if unused:
        raise UsageError(f"--task-opt {', '.join(unused)}: no selected task has such an option")
    absent = sorted({f"{t}.{k}" for t, k, _ in parsed if t is not None} - {f"{c.name}.{k}" for c in selected
                                                                         for k in c.options})
    if absent:
        raise UsageError(f"--task-opt {', '.join(absent)}: that task is not among the tasks this run trains")


def _make_tasks(plan: Plan, cache: dict[tuple, Task]) -> None:
    """The sweep's tasks, each made once per command (``cache``: grid points share their data)."""
    args, sweep = plan.options, plan.sweep
    parsed = task_options(list(args.task_opt))
    for name in resolve_tasks(sweep.domain, args.tasks):
        cls = tasks_pkg.get_task_class(name)
        opts = options_for(cls, parsed)
        key = (name, str(args.data_dir), args.download, sweep.fraction, tuple(sorted(opts.items())),
               args.device, args.data_on_device)  # (data held on a device stays there: one task per placement)
        try:
            task = cache[key] if key in cache else cls(data_dir=args.data_dir, download=args.download,
                                                       train_fraction=sweep.fraction, **opts)
        except ValueError as e:  # the task's message names it, the option and what is accepted
            named = str(e).startswith(f"task {name!r}")
            raise UsageError(str(e) if named else f"task {name!r}: bad --task-opt value ({e})") from None
        plan.tasks[name] = cache[key] = task
        plan.models[name] = resolve_models(task, args.models)


def check_seeds(plan: Plan) -> None:
    """Seeds are what NumPy's generator takes: integers in [0, 2**32 - 1]."""
    start = plan.options.seed_start
    last = max((start + plan.seeds(task) - 1 for task in plan.tasks.values()), default=start)
    if last > MAX_SEED:
        raise UsageError(f"--seed-start {start}: this run would use seeds up to {last}; seeds must be integers in "
                         f"[0, {MAX_SEED}]")


def _configure(plan: Plan, task: Task, base: RunConfig, model_opts: dict[str, Any]) -> None:
    """Each model's configuration on ``task``: its width fitted to --params, and checked by building
    it on the meta device (no weights allocated), so that a bad option fails before any training."""
    args, target = plan.options, plan.sweep.params
    for model in plan.models[task.name]:
        try:
            fitted = fit_to_params(model, task.spec, target, args.size, **model_opts) if target else {}
            count_params(model, task.spec, args.size, **model_opts, **fitted)
            opts = normalised(model, args.size, {**model_opts, **fitted})
        except (RegistryError, ValueError, TypeError) as e:
            named = str(e).startswith(f"model {model!r}")  # the registry's own messages name the model
            raise UsageError(f"{e} (task {task.name!r})" if named else
                             f"model {model!r} for task {task.name!r}: {e}") from None
        plan.configs[task.name, model] = replace(base, model_opts=tuple(opts.items()),
                                                 params_target=target, fitted=tuple(fitted.items()))


def normalised(model: str, size: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Model options as the model takes them (``dropout=0`` as 0.0), so that equal configurations hash
    equal (the config hash covers the model options)."""
    config = get_model_entry(model).config(size, opts)
    return {k: config.get(k, v) for k, v in opts.items()}


def make_plan(sweep: Sweep, device: str, group: distributed.Group, cache: dict[tuple, Task] | None = None) -> Plan:
    """Tasks set up (a missing dataset fails now) and every model configured and checked. ``cache``
    holds the tasks already made for the other sweeps of the same command."""
    args = sweep.options
    plan = Plan(sweep, device, default_precision(args.precision, device), group)
    _make_tasks(plan, {} if cache is None else cache)
    check_seeds(plan)
    model_opts = {k: parse_value(v) for k, v in args.model_opt}
    base = RunConfig(size=args.size, epochs=args.epochs, steps=args.steps, batch_size=args.batch_size,
                     lr=args.lr, weight_decay=args.weight_decay, device=device, backend=args.backend,
                     precision=plan.precision, model_opts=tuple(model_opts.items()),
                     deterministic=args.deterministic, compile=args.compile, channels_last=args.channels_last,
                     data_on_device=args.data_on_device, world_size=group.world,
                     train_fraction=sweep.fraction)
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
    configuration covers the data (``Task.fingerprint``): other data is another cell. A done cell's
    per-item outcomes must be readable, else it runs again. Each cell to run is claimed (a lock beside
    its checkpoint): one that another process is training now is left to it. With --force a cell runs
    again from scratch: its checkpoint is set aside."""
    args = plan.options
    done_records: list[dict[str, Any]] = []
    todo: list[executors.Cell] = []
    for task, model, seed in plan.cells():
        config = plan.configs[task.name, model]
        chash = config_hash(resolve(task, get_model_entry(model), config))
        where = (args.out, task.domain, task.name, model, config.label, seed, chash)
        done = _done(plan, record_path(*where), chash)
        if done is not None:
            done_records.append(done)
            plan.log(f"{task.name} {model} seed {seed}: already done, same configuration and data "
                     f"({done['metric']} {done['metric_value']:.4f}; config {chash}); --force reruns it")
            continue
        checkpoint = checkpoint_path(*where)
        if plan.group.is_main and not _claim(plan, checkpoint, f"{task.name} {model} seed {seed}"):
            continue
        if args.force and checkpoint.exists() and plan.group.is_main:
            checkpoint.replace(checkpoint.with_name(f"{checkpoint.name}.unusable"))
        todo.append(executors.Cell(
            task.name, executors.task_kwargs(task, args.data_dir, args.download),
            model, seed, config, checkpoint=str(checkpoint.resolve()),
            checkpoint_every_s=args.checkpoint_minutes * 60, plugins=tuple(args.plugin), threads=threads))
    return done_records, plan.group.share(todo)  # rank 0's view of what is done holds for the whole group


def _done(plan: Plan, path: Path, chash: str) -> dict[str, Any] | None:
    """The finished record at ``path`` (same configuration, per-item outcomes readable), or None."""
    done = None if plan.options.force else read_record(path)
    if done is None or done.get("status") != "ok" or done["config_hash"] != chash:
        return None
    return done if items_readable(path, done) else None


def _claim(plan: Plan, checkpoint: Path, name: str) -> bool:
    """Claim a cell for this process (``records.claim_cell``); False, with a line, where another process
    (the same sweep started twice) holds it: that process trains it and publishes it."""
    lock = claim_cell(checkpoint.with_suffix(".lock"))
    if lock is None:
        plan.log(f"{name}: skipped, another process is training it now (it publishes the result)")
        return False
    plan.locks[str(checkpoint.resolve())] = lock
    return True


def release_cells(plan: Plan, checkpoint: str | None = None) -> None:
    """Release this process's claim on one cell (its record is written), or on all that are left."""
    for key in [checkpoint] if checkpoint is not None else list(plan.locks):
        lock = plan.locks.pop(key, None)
        if lock is not None:
            lock.release()


def _plan_line(plan: Plan, n_cells: int, n_todo: int) -> str:
    args = plan.options
    seeds = sorted({plan.seeds(task) for task in plan.tasks.values()})
    size = f"{plan.sweep.params:,} parameters" if plan.sweep.params else f"size {args.size}"
    return (f"harness: {n_cells} cells ({plan.sweep.domain}: {', '.join(plan.tasks)}; "
            f"{'/'.join(map(str, seeds))} seed(s); {size}; {plan.device}, {args.backend}, {plan.precision}); "
            f"{n_todo} to run in {where_cells_run(args, plan.group)}")


# ------------------------------------------------------------------------------------------ run

def run_command(args: RunOptions, parse: Callable[[list[str]], RunOptions]) -> int:
    """``run`` and ``tune``: every sweep the command line (or the suite, whose tables ``parse`` reads as
    the command line is) asks for, all of them planned and checked before any trains. Plugins load
    first: their models and tasks are names like any other."""
    load_plugins(list(args.plugin))
    if args.config is not None:
        if args.domain is not None:
            raise UsageError(f"give a DOMAIN or --config, not both (got {args.domain!r} and {args.config})")
        tables = suite_options(args.config, args, parse)
        return run_sweeps([(f"--config {args.config}, [[run]] {i}", sweeps_of(t)) for i, t in enumerate(tables, 1)],
                          f"harness: suite {args.config} ({len(tables)} run(s)), every one planned and checked")
    if args.domain is None:
        raise UsageError("run needs a DOMAIN (e.g. vision, or all) or --config SUITE.toml")
    return run_sweeps([("", sweeps_of(args))])


def sweeps_of(args: RunOptions) -> list[Sweep]:
    """One command's sweeps: each domain (``all``: every one), each --params and --train-fraction point."""
    return args.sweeps(tasks_pkg.list_domains() if args.domain == "all" else [args.domain])


def run_sweeps(groups: list[tuple[str, list[Sweep]]], planned: str = "") -> int:
    """The sweeps of one command line: each domain of ``run all``, each point of a ``--params`` or
    ``--train-fraction`` grid, each ``[[run]]`` of a suite (a group of sweeps, named by where it was
    written, e.g. "--config suite.toml, [[run]] 2"). Every one is planned and checked (names, options,
    data, seeds, --out) before any of them trains; then they run one after the other. 0 when every
    cell finished, 1 when some failed, 130 when interrupted (finished cells are kept and published;
    the sweeps not yet started do not start)."""
    plans: list[Plan] = []
    cache: dict[tuple, Task] = {}  # the sweeps of one command share their tasks (and data)
    try:
        for where, sweeps in groups:
            try:
                check_task_options(sweeps)
                plans += [prepare(sweep, cache) for sweep in sweeps]
            except USER_ERRORS as e:  # a suite's error names the file and the [[run]] table
                if not where:
                    raise
                raise UsageError(f"{where}: {e}") from None
        if planned:
            print(planned, file=sys.stderr)
        code = 0
        for plan in plans:
            code = max(code, run_plan(plan))
            if code == 130:
                break
        return code
    finally:
        for plan in plans:
            plan.trackers.close()
            release_cells(plan)
        if any(sweep.options.ddp for _, sweeps in groups for sweep in sweeps):
            distributed.shutdown()


def prepare(sweep: Sweep, cache: dict[tuple, Task]) -> Plan:
    """One sweep planned and checked, before any training: plugins, where cells run, trackers, tuning
    storage, tasks and their data, models and their options, seeds, and that --out takes files."""
    args = sweep.options
    load_plugins(list(args.plugin))
    check_executor(args)
    track = tracking.parse_track(list(args.track) if args.track else None)
    if args.tune:
        tune.check_args(args)
    device = resolve_device(args.device) if args.executor != "ray" else ray_device(args)
    group = distributed.init(device) if args.ddp else distributed.SINGLE
    plan = make_plan(sweep, device, group, cache)
    check_writable(args.out, output_folders(plan))
    if args.tune:
        tune.check_storage(args)
    plan.trackers = tracking.open_trackers(track if group.is_main else [], args.out)  # before any training
    return plan


def run_plan(plan: Plan) -> int:
    """Run one prepared sweep: tune first where asked, then the cells not done yet, then publish."""
    args = plan.options
    set_deterministic(args.deterministic)
    threads = executors.default_threads(args.executor, args.jobs, args.cpus_per_cell)
    if args.tune:
        code = tune.tune_plan(plan, threads)
        if code:
            return code
    try:
        records, todo = pending(plan, threads)
        plan.log(_plan_line(plan, len(plan.cells()), len(todo)))
        return _execute(plan, records, todo)
    finally:
        release_cells(plan)


def _execute(plan: Plan, records: list[dict[str, Any]], todo: list[executors.Cell]) -> int:
    """Run ``todo``, write each record as it arrives, and publish what finished (also when stopped)."""
    args = plan.options
    failed: list[dict[str, Any]] = []
    start = time.perf_counter()
    counter = iter(range(1, len(todo) + 1))

    def keep(cell: executors.Cell, record: dict[str, Any] | None, executor: str) -> None:
        i = next(counter)
        if record is not None:  # None: a DDP rank other than 0, which has no record
            _keep(plan, cell, record, executor, f"[{i}/{len(todo)}]", records, failed)

    try:
        finished = executors.run_cells(todo, plan.tasks, args, keep, plan.group, bar=True)
    except BaseException:  # a crash of the harness itself still publishes what finished, then reports itself
        _publish_main(plan, records)
        raise
    if not finished:
        plan.log(f"\nharness: interrupted; {len(records)} of {len(plan.cells())} cells finished and are kept in "
                 f"{args.out / 'runs'} (a cell that was running saved a checkpoint: rerun the same command "
                 f"to continue)")
        _publish_main(plan, records)
        return 130
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
    where = (plan.options.out, task.domain, task.name, cell.model, cell.config.label, cell.seed, record["config_hash"])
    ok = record["status"] == "ok"
    written = write_record(record_path(*where, failed=not ok), record)  # a failed attempt never replaces a good record
    release_cells(plan, cell.checkpoint)
    plan.trackers.cell(record, written)  # --track: after the record is safe; a tracker that fails only warns
    stale = record_path(*where, failed=True)
    if ok and stale.exists():
        try:
            stale.unlink()
        except OSError as e:  # a folder turned read-only: the good record is safe (rescued where need be)
            print(f"warning: cannot delete the older failed attempt {stale} ({e.strerror or e})", file=sys.stderr)
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
    out = plan.options.out
    return (*(out / "runs" / task.domain / task.name for task in plan.tasks.values()), out / "plots")


def results_lock(out: Path):
    """An exclusive lock on ``out`` (out/.lock) for read-merge-write of shared files."""
    return file_lock(out / ".lock")


def _publish_main(plan: Plan, records: list[dict[str, Any]]) -> None:
    """Publish what finished (rank 0). Files that cannot be written are rescued (``write_or_rescue``);
    where even that fails (a full disk), one warning: the records are kept, and ``python -m harness
    report`` publishes them once there is room."""
    if not records or not plan.group.is_main:
        return
    out = plan.options.out
    try:
        publish(records, out, plan.sweep.domain, plan.options.pair)
    except OSError as e:
        print(f"warning: could not publish the leaderboard and report under {out}: cannot write "
              f"{e.filename or 'a file'} ({e.strerror or e}); the records are kept (see above where each went): "
              f"run 'python -m harness report --out {out}' once the folder takes files", file=sys.stderr)
        return
    plan.trackers.published(plan.sweep.domain, out / f"leaderboard_{plan.sweep.domain}.csv")


def _existing_board(path: Path) -> pd.DataFrame:
    """The leaderboard on disk (its rows without records are kept); one that cannot be read is derived
    data: rebuilt from the records alone, with a warning."""
    try:
        return _numbers_checked(leaderboard.read_leaderboard(path))
    except leaderboard.DamagedFile as e:
        print(f"warning: {path} cannot be read ({e}); rebuilding it from the records", file=sys.stderr)
        return pd.DataFrame(columns=leaderboard.COLUMNS)


NUMBER_COLUMNS = ("metric_mean", "metric_std", "n_seeds", "param_count")  # what merging and ranking compute with


def _numbers_checked(df: pd.DataFrame) -> pd.DataFrame:
    """``df``, where its number columns hold numbers; else DamagedFile naming the row and the column."""
    for column in [c for c in NUMBER_COLUMNS if c in df.columns]:
        values = df[column]
        bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise leaderboard.DamagedFile(f"row {row + 2}: {column} is {values.iloc[row]!r}, not a number")
    return df


def _existing_table(path: Path) -> pd.DataFrame:
    try:
        return leaderboard.read_csv(path)
    except leaderboard.DamagedFile as e:
        print(f"warning: {path} cannot be read ({e}); writing this run's rows afresh", file=sys.stderr)
        return pd.DataFrame()


def publish(records: list[dict[str, Any]], out: Path, domain: str, pairs: tuple[tuple[str, str], ...] = ()) -> None:
    """Rebuild results/leaderboard_<domain>.csv from the records under ``out`` (each row from one
    configuration: this run's for the rows it ran, the one the leaderboard showed for the others, so
    that a row's mean, interval, seeds and ties come from the same records), write the report and
    verdicts.csv from the same records, and print
    this run's rows and the verdicts that verdicts.csv holds for them; tables that tasks attach to
    their examples go to results/<table>_<domain>.csv. Everything is read and written under the lock
    on ``out``: two sweeps finishing together publish one after the other, each from what is on disk."""
    path = out / f"leaderboard_{domain}.csv"
    with results_lock(out):
        chosen = {**leaderboard.shown_configs(out), **{tuple(map(str, key_of(r))): r["config_hash"] for r in records}}
        found = leaderboard.current(read_record_files(out / "runs"), chosen)  # this run's configurations, and the rest as shown
        outcomes = load_outcomes(found)  # per-item outcomes: intervals, paired-test ties and verdicts
        everything = [r for _, r in found]
        board = leaderboard.aggregate([r for r in everything if r["domain"] == domain], outcomes)
        leaderboard.write(leaderboard.merge(_existing_board(path), board, outcomes), path)
        for name, table in leaderboard.tables(records).items():
            table_path = out / f"{name}_{domain}.csv"
            leaderboard.write_table(leaderboard.merge_table(_existing_table(table_path), table), table_path)
            print(f"wrote {table_path}")
        report_path, decided = report.write_reports(everything, out, outcomes, pairs)
    ran = {key_of(r) for r in records}
    mine = board[[tuple(k) in ran for k in board[KEY].itertuples(index=False, name=None)]]
    print(leaderboard.to_text(mine))
    coordinates = {(r["task"], r["size"], r.get("tuning", DEFAULT_TUNING)) for r in records}
    shown = decided[[c in coordinates for c in zip(decided["task"], decided["size"], decided["tuning"])]]
    print("\n".join(["", *verdicts.run_lines(shown)]))
    print(f"\nwrote {path} (and .md) and {out / 'verdicts.csv'}; records in {out / 'runs' / domain}")
    print(f"wrote {report.written(report_path)} (plots in {out / 'plots'})")
