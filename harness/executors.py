"""Where a sweep's cells run: in this process (the default), in N local processes (``--jobs N``), or
as Ray tasks on a local or existing Ray cluster (``--executor ray``).

Every executor takes the same :class:`Cell` descriptions and gives back the same records, as the
cells finish; the driver (``harness.sweep``) alone decides what is already done, writes the
records and merges the leaderboard, so resume, failure records and the results are the same whatever
ran the cells. A worker builds its own copy of each task (from the task's name and options), once per
process, and applies the cell's thread count and determinism switches before it trains.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

import baselines  # noqa: F401  (a worker process registers the built-in models too)
import zoo  # noqa: F401
from tasks import create_task
from tasks.base import Task
from zoo.registry import load_plugin

from .config import RunConfig
from .devices import set_deterministic
from .distributed import SINGLE, Group
from .errors import UsageError
from .stopping import StopRequested, request_stop, stop_requested
from .trainer import attempt_cell, failure_record, run_cell
from .trial import TrialSlot, run_trial

EXECUTORS = ("local", "ray")
POLL_S = 0.5  # how often a waiting driver looks for a stop request


@dataclass(frozen=True)
class Cell:
    """One (task, model, seed) cell, described so that another process (or machine) can run it."""

    task: str
    task_kwargs: dict[str, Any]  # data_dir, download and the task's options: create_task(task, **task_kwargs)
    model: str
    seed: int
    config: RunConfig
    checkpoint: str | None = None
    checkpoint_every_s: float = 300.0
    plugins: tuple[str, ...] = ()
    threads: int | None = None  # torch threads of the worker (None: leave torch's default)
    sys_path: tuple[str, ...] = field(default_factory=lambda: tuple(sys.path))  # where the driver imports from
    trial: TrialSlot | None = None  # a tuning trial of this study instead of a cell (harness.trial)

    @property
    def name(self) -> str:
        if self.trial is not None:
            return f"{self.task}/{self.model} trial {self.trial.slot}"
        return f"{self.task}/{self.model} seed {self.seed}"


def task_kwargs(task: Task, data_dir: str, download: bool) -> dict[str, Any]:
    """What a worker needs to build its own copy of ``task``: ``create_task(task.name, **task_kwargs(...))``."""
    fraction = {"train_fraction": task.train_fraction} if task.train_fraction < 1 else {}
    return {"data_dir": str(Path(data_dir).resolve()), "download": download, **fraction, **task.opts}


def perform(task: Task, cell: Cell, progress: bool) -> dict[str, Any] | None:
    """Run ``cell`` here: a tuning trial's outcome (``harness.trial.run_trial``), else the cell's record
    (a 'failed' record where it failed)."""
    if cell.trial is not None:
        return run_trial(task, cell.model, cell.config, cell.trial, progress)
    return attempt_cell(task, cell.model, cell.seed, cell.config, progress=progress,
                        checkpoint=Path(cell.checkpoint) if cell.checkpoint else None,
                        checkpoint_every_s=cell.checkpoint_every_s)


# ------------------------------------------------------------------------------------ the worker side

_WORKER_TASKS: dict[str, Task] = {}


def _prepare_worker(cell: Cell) -> Task:
    """Make this process ready for ``cell``: the driver's import path and plugins, the thread count,
    the determinism switches, and the task (set up once per process and options)."""
    sys.path.extend(p for p in cell.sys_path if p not in sys.path)
    for module in cell.plugins:
        load_plugin(module)
    if cell.threads:
        torch.set_num_threads(cell.threads)
    set_deterministic(cell.config.deterministic)
    key = json.dumps([cell.task, cell.task_kwargs], sort_keys=True, default=str)
    if key not in _WORKER_TASKS:
        task = create_task(cell.task, **cell.task_kwargs)
        task.load()
        _WORKER_TASKS[key] = task
    return _WORKER_TASKS[key]


def execute(cell: Cell) -> dict[str, Any] | None:
    """Run ``cell`` in this (worker) process: its record, a 'failed' record, or None where a stop
    request interrupted it (it saved its checkpoint; the next run continues from there)."""
    task = _prepare_worker(cell)
    try:
        return perform(task, cell, progress=False)
    except StopRequested:
        return None


def _init_process_worker(stop: Any) -> None:
    """A --jobs worker ignores Ctrl-C (the terminal sends it to the whole process group): the driver
    decides, and sets ``stop``, which makes the running cell checkpoint and return. A SIGTERM sent to
    the worker itself (a batch scheduler ending the job's processes) does the same."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: request_stop())

    def watch() -> None:
        stop.wait()
        request_stop()
    threading.Thread(target=watch, daemon=True).start()


# ------------------------------------------------------------------------------------ the executors

class Executor(ABC):
    """Runs cells and yields ``(cell, record)`` as each finishes (a 'failed' record where a cell failed
    or its worker died). On a stop request (Ctrl-C, SIGTERM) it yields what finished, asks the running
    cells to stop, and raises :class:`StopRequested`."""

    name = "local"
    slots = 1  # cells it runs at once

    @abstractmethod
    def run(self, cells: list[Cell], tasks: dict[str, Task]) -> Iterator[tuple[Cell, dict[str, Any] | None]]:
        """Start ``cells`` and yield each with its record as it finishes."""

    def close(self) -> None:
        """Release workers and connections (called once, after the sweep)."""

    @staticmethod
    def failed(cell: Cell, tasks: dict[str, Task], error: BaseException) -> dict[str, Any]:
        return failure_record(tasks[cell.task], cell.model, cell.seed, cell.config, error)


class LocalExecutor(Executor):
    """One cell after the other in this process, on the driver's own task objects, with progress bars.
    In a DDP group (``--ddp`` under torchrun) every process runs each cell with the others, and ranks
    other than 0 yield None; a failure there is not recorded but raised, so that torchrun stops the
    whole group instead of leaving the other ranks waiting in a collective."""

    def __init__(self, progress: bool = True, group: Group = SINGLE) -> None:
        self.progress, self.group = progress, group
        self.name = "ddp" if group.distributed else "local"

    def run(self, cells: list[Cell], tasks: dict[str, Task]) -> Iterator[tuple[Cell, dict[str, Any] | None]]:
        for cell in cells:
            if cell.threads:
                torch.set_num_threads(cell.threads)
            task = tasks[cell.task]
            if self.group.distributed:
                yield cell, run_cell(task, cell.model, cell.seed, cell.config, group=self.group, progress=self.progress,
                                     checkpoint=Path(cell.checkpoint) if cell.checkpoint else None,
                                     checkpoint_every_s=cell.checkpoint_every_s)
            else:
                yield cell, perform(task, cell, self.progress)


class ProcessExecutor(Executor):
    """``--jobs N``: N worker processes on this machine (spawned, so CUDA and OpenMP start clean)."""

    name = "processes"

    def __init__(self, jobs: int) -> None:
        import multiprocessing
        context = multiprocessing.get_context("spawn")
        self.slots = jobs
        self.stop = context.Event()
        self.pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_process_worker,
                                        initargs=(self.stop,))

    def run(self, cells: list[Cell], tasks: dict[str, Task]) -> Iterator[tuple[Cell, dict[str, Any]]]:
        futures: dict[Future, Cell] = {self.pool.submit(execute, cell): cell for cell in cells}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, timeout=POLL_S, return_when=FIRST_COMPLETED)
            yield from self._results(done, futures, tasks)
            if stop_requested() and remaining:
                self.stop.set()  # running cells checkpoint and return None; queued ones never start
                for future in remaining:
                    future.cancel()
                yield from self._results([f for f in remaining if not f.cancelled()], futures, tasks)
                raise StopRequested(f"stopped with {len(remaining)} cell(s) unfinished")

    def _results(self, done: Iterable[Future], futures: dict[Future, Cell],
                 tasks: dict[str, Task]) -> Iterator[tuple[Cell, dict[str, Any]]]:
        for future in done:
            cell = futures[future]
            try:
                record = future.result()
            except Exception as e:  # noqa: BLE001 - a worker that died (killed, out of memory) fails its cell
                record = self.failed(cell, tasks, e)
            if record is not None:
                yield cell, record

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    """``--executor ray``: each cell is a Ray task asking for ``cpus`` CPUs and ``gpus`` GPUs (a
    fraction shares a GPU). With no ``address`` Ray starts on this machine, on loopback, and stops at
    the end; with one (``auto``, ``HOST:6379`` or ``ray://HOST:10001``) it joins that cluster and ships
    the four packages of attention-zoo to its workers (their Python needs torch, torchvision and
    torchaudio: ``pip install "attention-zoo[dist]"`` on every node is simplest)."""

    name = "ray"

    def __init__(self, address: str | None, cpus: float, gpus: float) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError('--executor ray needs Ray: pip install "attention-zoo[dist]" '
                             '(or pip install "ray>=2.40")') from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
            if address is None:
                options.update(address="local", _node_ip_address="127.0.0.1")
            else:
                import harness
                import tasks
                options.update(address=address, runtime_env={"py_modules": [zoo, baselines, tasks, harness]})
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError) as e:  # no cluster there, or its auth token is not here
                reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise UsageError(f"--ray-address {address}: cannot join that Ray cluster ({reason}); start one with "
                                 f"'ray start --head' and give the address it prints, or 'auto' on one of its "
                                 f"nodes; with token auth, its token must be here (~/.ray/auth_token or "
                                 f"RAY_AUTH_TOKEN)") from None
        self.remote = ray.remote(execute).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        resources = ray.cluster_resources()  # cells at once: as many as the cluster's CPUs (and GPUs) hold
        fits = [resources.get("CPU", 1.0) / cpus] + ([resources.get("GPU", 0.0) / gpus] if gpus else [])
        self.slots = max(1, int(min(fits)))

    def run(self, cells: list[Cell], tasks: dict[str, Task]) -> Iterator[tuple[Cell, dict[str, Any]]]:
        refs = {self.remote.remote(cell): cell for cell in cells}
        remaining = list(refs)
        while remaining:
            done, remaining = self.ray.wait(remaining, num_returns=1, timeout=POLL_S)
            for ref in done:
                try:
                    record = self.ray.get(ref)
                except Exception as e:  # noqa: BLE001 - RayTaskError, a dead worker or node: the cell failed
                    record = self.failed(refs[ref], tasks, e)
                if record is not None:
                    yield refs[ref], record
            if stop_requested() and remaining:
                for ref in remaining:  # a running cell is interrupted; it keeps its last periodic checkpoint
                    self.ray.cancel(ref)
                raise StopRequested(f"stopped with {len(remaining)} cell(s) unfinished")

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def make_executor(name: str, *, jobs: int = 1, address: str | None = None, cpus: float = 1.0,
                  gpus: float = 0.0, progress: bool = True, group: Group = SINGLE) -> Executor:
    if name == "ray":
        return RayExecutor(address, cpus, gpus)
    return ProcessExecutor(jobs) if jobs > 1 else LocalExecutor(progress, group)


def default_threads(executor: str, jobs: int, cpus_per_cell: float | None) -> int | None:
    """Torch threads per cell: --cpus-per-cell where given; else all cores shared by the --jobs
    processes, one per Ray task's CPU, and torch's own default in a single local process."""
    if cpus_per_cell is not None:
        return max(1, int(cpus_per_cell))
    if executor == "ray":
        return 1
    return max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
