"""python -m harness {run,list,report,examples,bench}: the command line of attention-zoo."""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import torch

import baselines  # noqa: F401  (registers the baseline models)
import tasks as tasks_pkg
import zoo  # noqa: F401  (registers the transformer models)
from tasks.base import DatasetError, Task
from zoo.core import BACKENDS
from zoo.registry import (SIZES, RegistryError, create_model, fit_to_params, get_model_entry, list_models, load_plugin,
                          parse_param_count,
                          unknown_name_error)

from . import bench, distributed, executors, leaderboard, report
from .records import checkpoint_path, config_hash, read_record, read_records, record_path, write_record
from .runner import RunConfig, clear_stop, request_stop, resolve, set_deterministic


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2."""


USER_ERRORS = (UsageError, RegistryError, DatasetError)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        sys.stderr.write(f"harness: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def number(convert: type, accept: Callable[[Any], bool], wanted: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text and check it, else 'expected <wanted>, got ...'."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    return parse


positive_int = number(int, lambda v: v >= 1, "a positive integer")
positive_float = number(float, lambda v: v > 0 and v != float("inf"), "a positive number")
non_negative_float = number(float, lambda v: 0 <= v < float("inf"), "a number >= 0")


def param_target(text: str) -> int:
    try:
        return parse_param_count(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def names(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return items


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.1' -> 0.1, 'true' -> True, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


def build_parser() -> Parser:
    parser = Parser(prog="python -m harness", description="Train, compare and list the models of attention-zoo.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,list,report,examples,bench}")

    run = sub.add_parser("run", help="train and evaluate every compatible model on a domain's tasks",
                         description="Train and evaluate models on a domain's tasks under one budget; write "
                                     "the leaderboard CSV and one JSON record per (task, model, seed).")
    run.add_argument("domain", nargs="?", help="vision, language, rl, speech (see 'python -m harness list domains'), "
                                               "or all: every domain's default run")
    run.add_argument("--config", type=Path, metavar="SUITE.toml",
                     help="run a suite file: its [[run]] tables, in order (see suites/)")
    run.add_argument("--tasks", type=names, help="comma-separated tasks (default: the domain's default tasks)")
    run.add_argument("--models", type=names,
                     help="comma-separated models or wildcards, e.g. 'vit,resnet' (default: all compatible)")
    run.add_argument("--seeds", type=positive_int,
                     help="seeds 0..N-1 per cell (default: each task's, 3 for vision, 1 for language)")
    run.add_argument("--size", choices=SIZES, default="tiny", help="model size preset (default tiny)")
    run.add_argument("--params", type=param_target, metavar="N",
                     help="fit each model's width so that it has N parameters within 10%% (e.g. 250k, 1.5M); "
                          "the fitted config is recorded")
    budget = run.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=positive_int, help="epochs for every model (default: the task's budget)")
    budget.add_argument("--steps", type=positive_int, help="optimizer steps for every model, instead of epochs")
    run.add_argument("--batch-size", type=positive_int, help="batch size (default: the task's budget)")
    run.add_argument("--lr", type=positive_float, help="learning rate for every model (default: each model's)")
    run.add_argument("--weight-decay", type=non_negative_float, help="AdamW weight decay (default: each model's)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available")
    run.add_argument("--backend", choices=BACKENDS, default="sdpa", help="attention backend (default sdpa)")
    run.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                     help="fp32, bf16 autocast, or fp16 autocast with gradient scaling (default: bf16 on a cuda "
                          "device that supports it, else fp16; fp32 on cpu)")
    run.add_argument("--compile", action="store_true", help="torch.compile every model (pays off on GPU)")
    run.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                     help="NHWC weights and image batches for models with 2-D convolutions (auto: on CUDA)")
    run.add_argument("--data-on-device", choices=("auto", "on", "off"), default="auto",
                     help="hold in-memory datasets on the accelerator and batch them there "
                          "(auto: on CUDA, where the data take at most 1/4 of the free memory)")
    run.add_argument("--data-dir", default=_default_data_dir(),
                     help="dataset cache, or the image root for image_folder (default ./data or $ATTENTION_ZOO_DATA)")
    run.add_argument("--download", action="store_true", help="download missing standard datasets")
    run.add_argument("--task-opt", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                     help="a task option, e.g. image_size=64 for image_folder (repeatable)")
    run.add_argument("--model-opt", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                     help="a model config override, e.g. depth=6 (repeatable; numbers are parsed)")
    run.add_argument("--out", type=Path, default=Path("results"), help="results directory (default results/)")
    run.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                     help="import MODULE first, so that the models it registers can run (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--force", action="store_true",
                     help="rerun cells that already finished with the same configuration (default: skip them)")
    run.add_argument("--deterministic", action="store_true",
                     help="deterministic kernels (torch.use_deterministic_algorithms, cuDNN); slower on GPU")
    where = run.add_argument_group("where cells run")
    where.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                       help="run N cells at once in local processes (default 1: one after the other, here)")
    where.add_argument("--executor", choices=executors.EXECUTORS, default="local",
                       help="local (default) or ray: each cell a Ray task (pip install \"attention-zoo[dist]\")")
    where.add_argument("--ray-address", metavar="ADDRESS",
                       help="join this Ray cluster (auto, HOST:6379, ray://HOST:10001); default: start Ray here")
    where.add_argument("--cpus-per-cell", type=positive_float, metavar="N",
                       help="CPUs (torch threads) per cell (default: cores / --jobs; 1 per Ray task)")
    where.add_argument("--ddp", action="store_true",
                       help="train each cell with DistributedDataParallel over the processes that torchrun "
                            "started: torchrun --nproc_per_node N -m harness run ... --ddp")
    where.add_argument("--gpus-per-cell", type=non_negative_float, default=0.0, metavar="N",
                       help="GPUs per Ray task (a fraction shares one; default 0: CPU cells)")
    run.add_argument("--checkpoint-minutes", type=positive_float, default=5.0, metavar="M",
                     help="save a running cell's state every M minutes (at an epoch's end) so that an "
                          "interrupted sweep continues it (default 5)")

    ls = sub.add_parser("list", help="list models, tasks or domains")
    ls.add_argument("what", nargs="?", choices=("models", "tasks", "domains"), default="models")
    ls.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'vi*'")
    ls.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first")

    report = sub.add_parser("report", help="rebuild the leaderboards from the records under --out/runs")
    report.add_argument("--out", type=Path, default=Path("results"), help="results directory (default results/)")
    examples = sub.add_parser("examples", help="show what trained models produced (LM samples, decoded inputs)")
    examples.add_argument("--task", default="*", help="task name or wildcard (default: all)")
    examples.add_argument("--model", default="*", help="model name or wildcard (default: all)")
    examples.add_argument("--out", type=Path, default=Path("results"), help="results directory (default results/)")
    bench.add_parser(sub, positive_int)
    return parser


# --------------------------------------------------------------------------------------------- run

def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; accepted: auto, cpu")
    return name


def resolve_tasks(domain: str, requested: list[str] | None) -> list[str]:
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
    if not requested:
        found = list_models(kind=task.kind, modality=task.modality)
        if not found:
            raise UsageError(f"no registered model serves {_serves(task)} tasks like {task.name!r}")
        return found
    chosen: list[str] = []
    for pattern in requested:
        if any(ch in pattern for ch in "*?["):
            matches = list_models(pattern, kind=task.kind, modality=task.modality)
            if not matches:
                raise UsageError(f"no model matching {pattern!r} serves {_serves(task)} tasks like {task.name!r}")
        else:
            entry = get_model_entry(pattern)
            if not entry.supports(task.kind, task.modality):
                able = list_models(kind=task.kind, modality=task.modality)
                raise UsageError(f"model {pattern!r} serves {entry.serves()} tasks, not task {task.name!r} "
                                 f"({_serves(task)}); models that do: {', '.join(able) or 'none'}")
            matches = [pattern]
        chosen += [m for m in matches if m not in chosen]
    return chosen


def _serves(task: Task | type[Task]) -> str:
    return f"{task.kind}[{task.modality}]" if task.modality else task.kind


# flags a suite's [[run]] table may set (TOML keys use underscores), and those the command line passes on
SUITE_KEYS = {"domain", "tasks", "models", "seeds", "size", "epochs", "steps", "batch_size", "lr", "weight_decay",
              "device", "backend", "precision", "task_opt", "model_opt", "deterministic", "download", "plugin",
              "compile", "params", "channels_last", "data_on_device"}
PASSED_ON = ("out", "data_dir", "device", "quiet", "force", "download", "checkpoint_minutes", "plugin")


def cmd_run(args: argparse.Namespace) -> int:
    if args.config is not None:
        if args.domain is not None:
            raise UsageError(f"give a DOMAIN or --config, not both (got {args.domain!r} and {args.config})")
        return run_suite(args.config, args)
    if args.domain is None:
        raise UsageError("run needs a DOMAIN (e.g. vision, or all) or --config SUITE.toml")
    if args.domain == "all":
        codes = [run_sweep(argparse.Namespace(**{**vars(args), "domain": d})) for d in tasks_pkg.list_domains()]
        return max(codes)
    return run_sweep(args)


def suite_runs(path: Path) -> list[list[str]]:
    """A suite file -> the argv of each of its [[run]] tables (after 'run')."""
    try:
        suite = tomllib.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--config {path}: not valid TOML ({e})") from None
    runs = suite.get("run")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise UsageError(f"--config {path}: expected one or more [[run]] tables, each with a domain")
    argvs = []
    for i, table in enumerate(runs, 1):
        unknown = sorted(set(table) - SUITE_KEYS)
        if unknown or "domain" not in table:
            problem = f"unknown key(s) {', '.join(unknown)}" if unknown else "no domain"
            raise UsageError(f"--config {path}: [[run]] {i} has {problem}; accepted: {', '.join(sorted(SUITE_KEYS))}")
        argv = [str(table["domain"])]
        for key, value in table.items():
            flag = "--" + key.replace("_", "-")
            if key == "domain":
                continue
            if isinstance(value, bool):
                argv += [flag] if value else []
            elif isinstance(value, dict):  # task_opt / model_opt tables
                argv += [a for k, v in value.items() for a in (flag, f"{k}={v}")]
            elif isinstance(value, list):
                argv += [a for v in value for a in (flag, str(v))] if key == "plugin" else [flag, ",".join(map(str, value))]
            else:
                argv += [flag, str(value)]
        argvs.append(argv)
    return argvs


def run_suite(path: Path, args: argparse.Namespace) -> int:
    """Each [[run]] of the suite as 'python -m harness run ...', with this command line's --out,
    --data-dir, --device, --quiet, --force ... passed on."""
    argvs = suite_runs(path)
    parser = build_parser()
    passed = {k: getattr(args, k) for k in PASSED_ON}
    plans = []
    for argv in argvs:
        run_args = parser.parse_args(["run", *argv])
        for key, value in passed.items():
            if key == "plugin":
                run_args.plugin = list(dict.fromkeys([*run_args.plugin, *value]))
            elif key in ("quiet", "force", "download"):
                setattr(run_args, key, getattr(run_args, key) or value)
            elif value != parser.get_default(key):  # given on this command line: it wins
                setattr(run_args, key, value)
        if run_args.domain != "all":
            resolve_tasks(run_args.domain, run_args.tasks)  # unknown names fail before anything runs
        plans.append(run_args)
    print(f"harness: suite {path} ({len(plans)} run(s))", file=sys.stderr)
    return max(cmd_run(run_args) for run_args in plans)


def _default_data_dir() -> str:
    return os.environ.get("ATTENTION_ZOO_DATA", "data")


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM, and a first Ctrl-C, ask the running cell to checkpoint and stop after its current step;
    a second Ctrl-C interrupts at once. The previous handlers come back afterwards."""
    def on_signal(signum, frame):
        from .runner import _STOP
        if signum == signal.SIGINT and _STOP.is_set():
            raise KeyboardInterrupt
        request_stop()

    clear_stop()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        clear_stop()


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


def run_sweep(args: argparse.Namespace) -> int:
    for module in args.plugin:
        load_plugin(module)
    check_executor(args)
    device = resolve_device(args.device) if args.executor != "ray" else ray_device(args)
    group = distributed.init(device) if args.ddp else distributed.SINGLE
    try:
        return _run_sweep(args, device, group)
    finally:
        if args.ddp:
            distributed.shutdown()


def _run_sweep(args: argparse.Namespace, device: str, group: distributed.Group) -> int:
    def log(message: str) -> None:  # rank 0 speaks for a DDP group
        if group.is_main:
            print(message, file=sys.stderr)

    precision = args.precision if args.precision != "auto" else \
        ("fp32" if device == "cpu" else "bf16" if not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
         else "fp16")  # (a Ray driver without a GPU assumes its workers' GPUs have bf16)
    task_opts = dict(args.task_opt)
    plan: list[tuple[Task, list[str]]] = []
    for name in resolve_tasks(args.domain, args.tasks):
        cls = tasks_pkg.get_task_class(name)
        try:
            task = cls(data_dir=args.data_dir, download=args.download,
                       **{k: v for k, v in task_opts.items() if k in cls.options})
        except ValueError as e:
            raise UsageError(f"task {name!r}: bad --task-opt value ({e})") from None
        plan.append((task, resolve_models(task, args.models)))
    unused = set(task_opts) - {k for task, _ in plan for k in task.options}
    if unused:
        raise UsageError(f"--task-opt {', '.join(sorted(unused))}: no selected task has such an option")
    model_opts = {k: parse_value(v) for k, v in args.model_opt}
    base = RunConfig(size=args.size, epochs=args.epochs, steps=args.steps, batch_size=args.batch_size,
                     lr=args.lr, weight_decay=args.weight_decay, device=device, backend=args.backend,
                     precision=precision, model_opts=tuple(model_opts.items()), deterministic=args.deterministic,
                     compile=args.compile, channels_last=args.channels_last, data_on_device=args.data_on_device,
                     world_size=group.world)
    configs: dict[tuple[str, str], RunConfig] = {}
    if not group.is_main:
        group.barrier()  # rank 0 sets the tasks up first: data generated or downloaded once, then read by all
    for task, models in plan:
        batch = args.batch_size or task.budget.batch_size
        if batch % group.world:
            raise UsageError(f"--ddp over {group.world} processes: task {task.name!r} has batch size {batch}, "
                             f"not divisible by {group.world}; pass --batch-size")
        task.setup()  # fails now, before any training, if a dataset is missing
        for model in models:  # so does a model that cannot be built as configured
            try:
                fitted = fit_to_params(model, task.spec, args.params, args.size, **model_opts) if args.params else {}
                create_model(model, task.spec, size=args.size, **model_opts, **fitted)
            except (RegistryError, ValueError, TypeError) as e:
                raise UsageError(f"model {model!r} for task {task.name!r}: {e}") from None
            configs[task.name, model] = RunConfig(**{**vars(base), "model_opts": tuple({**model_opts, **fitted}.items()),
                                                     "params_target": args.params, "fitted": tuple(fitted.items())})
    if group.is_main:
        group.barrier()
    _check_writable(args.out)
    set_deterministic(args.deterministic)

    cells = [(task, model, seed) for task, models in plan for model in models
             for seed in range(args.seeds or task.default_seeds)]
    seeds = sorted({args.seeds or task.default_seeds for task, _ in plan})
    size = f"{args.params:,} parameters" if args.params else f"size {args.size}"
    threads = executors.default_threads(args.executor, args.jobs, args.cpus_per_cell)
    records: list[dict[str, Any]] = []
    todo: list[executors.Cell] = []
    for task, model, seed in cells:
        config = configs[task.name, model]
        where = (args.out, task.domain, task.name, model, config.label, seed)
        done = None if args.force else read_record(record_path(*where))
        if done is not None and done.get("status") == "ok" and \
                done["config_hash"] == config_hash(resolve(task, model, config)):
            records.append(done)
            log(f"{task.name} {model} seed {seed}: already done, same configuration "
                f"({done['metric']} {done['metric_value']:.4f}); --force reruns it")
            continue
        todo.append(executors.Cell(
            task.name, {"data_dir": str(Path(args.data_dir).resolve()), "download": args.download, **task.opts},
            model, seed, config, checkpoint=str(checkpoint_path(*where).resolve()),
            checkpoint_every_s=args.checkpoint_minutes * 60, plugins=tuple(args.plugin), threads=threads))
    todo = group.share(todo)  # rank 0's view of what is done holds for the whole DDP group
    where_run = f"Ray ({args.ray_address or 'local'})" if args.executor == "ray" else \
        f"{args.jobs} local processes" if args.jobs > 1 else \
        f"{group.world} DDP processes" if group.distributed else "this process"
    log(f"harness: {len(cells)} cells ({args.domain}: {', '.join(t.name for t, _ in plan)}; "
        f"{'/'.join(map(str, seeds))} seed(s); {size}; {device}, {args.backend}, {precision}); "
        f"{len(todo)} to run in {where_run}")
    failed: list[dict[str, Any]] = []
    tasks = {task.name: task for task, _ in plan}
    start = time.perf_counter()
    with stop_on_signals():
        executor = None
        try:
            if todo:
                executor = executors.make_executor(args.executor, jobs=args.jobs, address=args.ray_address,
                                                   cpus=args.cpus_per_cell or 1, gpus=args.gpus_per_cell,
                                                   progress=not args.quiet, group=group)
            for i, (cell, record) in enumerate(executor.run(todo, tasks) if executor else [], 1):
                if record is None:  # a DDP rank other than 0: rank 0 has the record
                    continue
                task = tasks[cell.task]
                record["executor"] = executor.name
                write_record(record_path(args.out, task.domain, task.name, cell.model, cell.config.label, cell.seed),
                             record)
                if record["status"] == "ok":
                    records.append(record)
                    log(f"[{i}/{len(todo)}] {cell.name}: {record['metric']} {record['metric_value']:.4f} "
                        f"({record['train_time_s']:.1f} s)")
                else:
                    failed.append(record)
                    log(f"[{i}/{len(todo)}] {cell.name}: FAILED ({record['reason'][:300]})")
        except KeyboardInterrupt:
            log(f"\nharness: interrupted; {len(records)} of {len(cells)} cells finished and are kept in "
                f"{args.out / 'runs'} (a cell that was running saved a checkpoint: rerun the same command "
                f"to continue)")
            if records and group.is_main:
                publish(records, args.out, args.domain)
            return 130
        except BaseException:  # a crash of the harness itself still publishes what finished, then reports itself
            if records and group.is_main:
                publish(records, args.out, args.domain)
            raise
        finally:
            if executor is not None:
                executor.close()
    if records and group.is_main:
        publish(records, args.out, args.domain)
    log(f"harness: {len(cells)} cells in {time.perf_counter() - start:.0f} s")
    if failed:
        log(f"harness: {len(failed)} of {len(cells)} cells failed (their records say why, status 'failed'): "
            + ", ".join(f"{r['task']}/{r['model']}/seed {r['seed']}" for r in failed))
        return 1
    return 0


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # per process: DDP ranks probe at once
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out {out}: not a writable directory ({e.strerror or e})") from None


@contextlib.contextmanager
def results_lock(out: Path):
    """An exclusive lock on ``out`` (fcntl.flock on out/.lock) for read-merge-write of shared files."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, atomic writes only
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish(records: list[dict[str, Any]], out: Path, domain: str) -> None:
    """Merge this run's rows into results/leaderboard_<domain>.csv and print them; tables that
    tasks attach to their examples go to results/<table>_<domain>.csv."""
    new = leaderboard.aggregate(records)
    path = out / f"leaderboard_{domain}.csv"
    with results_lock(out):  # two runs sharing --out merge one after the other, never interleaved
        leaderboard.write(leaderboard.merge(leaderboard.read_csv(path), new), path)
        for name, table in leaderboard.tables(records).items():
            table_path = out / f"{name}_{domain}.csv"
            leaderboard.write_table(leaderboard.merge_table(leaderboard.read_csv(table_path), table), table_path)
            print(f"wrote {table_path}")
        report_path = report.write_report(read_records(out / "runs"), out)
    print(leaderboard.to_text(new))
    print(f"\nwrote {path} (and .md); records in {out / 'runs' / domain}")
    print(f"wrote {report_path} (plots in {out / 'plots'})")


# ------------------------------------------------------------------------------------- list, report

def cmd_list(args: argparse.Namespace) -> int:
    for module in args.plugin:
        load_plugin(module)
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
            print(f"{name:<{width}}  {c.domain:<8} {_serves(c):<26} {flags:<17} {c.description}")
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
        ex = r["examples"]
        print(f"== {r['task']} / {r['model']} ({r['size']}, seed {r['seed']}): {r['metric']} {r['metric_value']:.4f}")
        if "sample" in ex:
            print(f"-- prompt --\n{ex['prompt']}\n-- sample (temperature 0.8, top-k 20) --\n{ex['sample']}")
        for d in ex.get("decoded", []):
            mark = "ok " if d["output"] == d["target"] else "ERR"
            print(f"{mark} {d['source']!r} -> {d['output']!r} (target {d['target']!r})")
        print()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"run": cmd_run, "list": cmd_list, "report": cmd_report, "examples": cmd_examples,
               "bench": lambda a: bench.cmd_bench(a, resolve_device, UsageError)}[args.command]
    try:
        return command(args)
    except USER_ERRORS as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
