"""python -m harness {run,tune,list,report,compare,examples,bench}: the command line of attention-zoo (the parser
and the dispatch; the work is in sweep.py, suite.py, commands.py and bench.py)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from zoo.core import BACKENDS
from zoo.registry import SIZES

from . import bench, executors
from .arguments import (folder, fractions, key_value, model_pair, names, non_negative_float, non_negative_int,
                        param_targets, positive_float, positive_int, probability)
from .commands import cmd_compare, cmd_examples, cmd_list, cmd_report
from .errors import USER_ERRORS, UsageError
from .options import BenchOptions, CompareOptions, ExamplesOptions, ListOptions, ReportOptions, RunOptions
from .sweep import run_command


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        sys.stderr.write(f"harness: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


class TableParser(Parser):
    """The parser of a suite's [[run]] tables: an error is raised (a UsageError), so that the suite's
    message can name the file and the table."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _default_data_dir() -> str:
    return os.environ.get("ATTENTION_ZOO_DATA", "data")


def build_parser(parser_class: type[Parser] = Parser) -> Parser:
    parser = parser_class(prog="python -m harness", description="Train, compare and list the models of attention-zoo.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,tune,list,report,compare,examples,bench}")
    _add_run(sub)
    ls = sub.add_parser("list", help="list models, tasks or domains")
    ls.add_argument("what", nargs="?", choices=("models", "tasks", "domains"), default="models")
    ls.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'vi*'")
    ls.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first")

    report = sub.add_parser("report", help="rebuild the leaderboards, verdicts and REPORT.md from the records")
    report.add_argument("--out", type=folder, default=Path("results"), help="results directory (default results/)")
    report.add_argument("--pair", type=model_pair, action="append", default=[], metavar="A,B",
                        help="also test model A against model B on every task that has both (repeatable)")
    compare = sub.add_parser("compare", help="paired test of two models on one task, from the records",
                             description="The difference of the headline metric (A - B) with its 95% interval, "
                                         "p-value and minimum detectable effect, from the per-item outcomes of "
                                         "the records: a paired test over seeds and test items.")
    compare.add_argument("task", help="a task name, e.g. digits")
    compare.add_argument("model_a", help="model A, e.g. vit")
    compare.add_argument("model_b", help="model B, e.g. resnet")
    compare.add_argument("--size", help="the size label of both models' records where there are several (e.g. tiny)")
    compare.add_argument("--tuning", help="the tuning of both models' records, e.g. tpe-8 (default: 'default' "
                                          "where both have it, else the one they share)")
    compare.add_argument("--alpha", type=probability, default=0.05, help="the test's level (default 0.05)")
    compare.add_argument("--out", type=folder, default=Path("results"), help="results directory (default results/)")
    compare.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first")
    examples = sub.add_parser("examples", help="show what trained models produced (LM samples, decoded inputs)")
    examples.add_argument("--task", default="*", help="task name or wildcard (default: all)")
    examples.add_argument("--model", default="*", help="model name or wildcard (default: all)")
    examples.add_argument("--out", type=folder, default=Path("results"), help="results directory (default results/)")
    _add_bench(sub)
    return parser


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench_ = sub.add_parser("bench", help="measure speed: attention backends, models vs reference implementations",
                            description=bench.__doc__.split("\n\n")[0])
    bench_.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    bench_.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="fp32, or bf16 autocast (default: bf16 on cuda, fp32 on cpu)")
    bench_.add_argument("--warmup", type=positive_int, default=10, help="untimed iterations (default 10)")
    bench_.add_argument("--iters", type=positive_int, default=40, help="timed iterations; the median is kept (40)")
    bench_.add_argument("--seq-lens", default=None,
                        help="attention and mixer sequence lengths (default 64..1024 on CPU, 64..4096 on CUDA)")
    bench_.add_argument("--skip", default="", help="comma-separated: attention, mixers, models, or a pair name (e.g. gpt)")
    bench_.add_argument("--compile", action="store_true", help="torch.compile both sides of every pair")
    bench_.add_argument("--out", type=folder, default=Path("results"), help="results directory (default results/)")


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="train and evaluate every compatible model on a domain's tasks",
                         description="Train and evaluate models on a domain's tasks under one budget; write "
                                     "the leaderboard CSV and one JSON record per (task, model, seed).")
    _run_options(run)
    run.add_argument("--tune", type=positive_int, metavar="N",
                     help="tune every model alike first, N trials each (as 'python -m harness tune --trials N')")
    run.add_argument("--pair", type=model_pair, action="append", default=[], metavar="A,B",
                     help="also test model A against model B in verdicts.csv (as report --pair; repeatable)")
    tune = sub.add_parser("tune", help="tune every model alike (Optuna), then train the choices on the seeds",
                          description="Per (task, model): an Optuna study, N trials (seeded TPE, median pruning on "
                                      "the validation curve, the first trial the model's defaults) over learning "
                                      "rate, weight decay, warm-up and dropout, each trial under the run's budget and "
                                      "selected on validation only; then the best configuration trains on the seeds "
                                      "and joins the leaderboard with tuning 'tpe-N'. Studies live in --out/tuning.db; "
                                      "a rerun runs only the missing trials.")
    _run_options(tune)
    for action in tune._actions:  # tuning chooses these: still parsed, to refuse them in one line
        if action.dest in ("lr", "weight_decay"):
            action.help = argparse.SUPPRESS
    tune.add_argument("--trials", dest="tune", type=positive_int, required=True, metavar="N",
                      help="counted trials (complete or pruned) per model; the same for every model")


def _run_options(run: argparse.ArgumentParser) -> None:
    """The options of ``run`` (and of ``tune``, which runs the same sweep after its studies)."""
    run.add_argument("domain", nargs="?", help="vision, language, rl, speech (see 'python -m harness list domains'), "
                                               "or all: every domain's default run")
    run.add_argument("--config", type=Path, metavar="SUITE.toml",
                     help="run a suite file: its [[run]] tables, in order (see suites/)")
    run.add_argument("--tasks", type=names, help="comma-separated tasks (default: the domain's default tasks)")
    run.add_argument("--models", type=names,
                     help="comma-separated models or wildcards, e.g. 'vit,resnet' (default: all compatible)")
    run.add_argument("--seeds", type=positive_int,
                     help="seeds 0..N-1 per cell (default: each task's, 3 for vision, 1 for language)")
    run.add_argument("--seed-start", type=non_negative_int, default=0, metavar="K",
                     help="first seed (default 0): --seeds 3 --seed-start 3 runs seeds 3, 4 and 5")
    run.add_argument("--size", choices=SIZES, default="tiny", help="model size preset (default tiny)")
    run.add_argument("--params", type=param_targets, metavar="N[,N...]",
                     help="fit each model's width so that it has N parameters within 10%% (e.g. 250k, 1.5M); "
                          "the fitted config is recorded. A list (50k,200k,800k) runs the grid, one sweep per target")
    run.add_argument("--train-fraction", type=fractions, metavar="F[,F...]",
                     help="train on the nested, class-stratified share F of the training split (validation and "
                          "test unchanged; classification tasks). A list (0.1,0.3,1) runs the grid")
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
    run.add_argument("--out", type=folder, default=Path("results"), help="results directory (default results/)")
    run.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                     help="import MODULE first, so that the models it registers can run (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--track", action="append", metavar="mlflow[=URI]|tensorboard",
                     help="also log each finished cell to a tracker: MLflow (default URI: sqlite:///OUT/mlflow.db; "
                          "a tracking server's http://HOST:5000 works the same) or TensorBoard (event files under "
                          "OUT/tensorboard); repeatable. A tracker that fails only warns")
    run.add_argument("--force", action="store_true",
                     help="rerun cells that already finished with the same configuration (default: skip them)")
    run.add_argument("--deterministic", action="store_true",
                     help="deterministic kernels (torch.use_deterministic_algorithms, cuDNN); slower on GPU")
    _add_where(run)
    run.add_argument("--checkpoint-minutes", type=positive_float, default=5.0, metavar="M",
                     help="save a running cell's state every M minutes (at an epoch's end) so that an "
                          "interrupted sweep continues it (default 5)")


def _add_where(run: argparse.ArgumentParser) -> None:
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
    where.add_argument("--storage", metavar="URL",
                       help="--tune: the studies' database (default sqlite:///OUT/tuning.db; a server's URL, e.g. "
                            "postgresql://..., where Ray workers do not share --out)")
    where.add_argument("--gpus-per-cell", type=non_negative_float, default=0.0, metavar="N",
                       help="GPUs per Ray task (a fraction shares one; default 0: CPU cells)")


def cmd_run(args: RunOptions) -> int:
    """``run`` and ``tune`` (``sweep.run_command``), a suite's tables parsed as this command line is."""
    parser = build_parser(TableParser)
    return run_command(args, lambda argv: RunOptions.of(vars(parser.parse_args(["run", *argv]))))


COMMANDS = {  # command -> (its options, what runs it)
    "run": (RunOptions, cmd_run), "tune": (RunOptions, cmd_run), "list": (ListOptions, cmd_list),
    "report": (ReportOptions, cmd_report), "compare": (CompareOptions, cmd_compare),
    "examples": (ExamplesOptions, cmd_examples), "bench": (BenchOptions, bench.cmd_bench)}
CANNOT_WRITE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 on success, 1 where a cell failed or a file could not be written, 2 for bad
    input (one line), 130 when interrupted."""
    try:
        args = build_parser().parse_args(argv)
        options, command = COMMANDS[args.command]
        return command(options.of(vars(args)))
    except USER_ERRORS as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nharness: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in CANNOT_WRITE:
            raise
        print(f"harness: error: cannot write {e.filename or 'a file'} ({e.strerror or e})", file=sys.stderr)
        return 1
