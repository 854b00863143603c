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
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait as mp_wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch
from tqdm.auto import tqdm

import baselines  # noqa: F401  (a worker process registers the built-in models too)
import zoo  # noqa: F401
from tasks import create_task
from tasks.base import Task
from zoo.registry import load_plugin

from .config import RunConfig
from .devices import set_deterministic
from .distributed import SINGLE, Group
from .errors import UsageError
from .stopping import StopRequested, request_stop, stop_on_signals, stop_requested
from .trainer import attempt_cell, failure_record, run_cell
from .trial import TrialSlot, run_trial

if TYPE_CHECKING:
    from .options import RunOptions

EXECUTORS = ("local", "ray")
POLL_S = 0.5  # how often a waiting driver looks for a stop request
STOP_WAIT_S = 300.0  # how long the workers of a pool that a dying worker broke get to checkpoint and end


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

_WORKER_TASKS: dict[str, Task] = {}  # a worker's tasks, by ``worker_key``: the driver's, loaded once


def worker_key(cell: Cell) -> str:
    """Which task object a cell runs on: its name and the options it was made with."""
    return json.dumps([cell.task, cell.task_kwargs], sort_keys=True, default=str)


def _prepare_worker(cell: Cell) -> Task:
    """Make this process ready for ``cell``: the driver's import path and plugins, the thread count,
    the determinism switches, and the task: the driver's own, with its data already loaded, where the
    driver sent it (a --jobs pool, a Ray task); else made here, once per process and options."""
    sys.path.extend(p for p in cell.sys_path if p not in sys.path)
    for module in cell.plugins:
        load_plugin(module)
    if cell.threads:
        torch.set_num_threads(cell.threads)
    set_deterministic(cell.config.deterministic)
    key = worker_key(cell)
    if key not in _WORKER_TASKS:
        task = create_task(cell.task, **cell.task_kwargs)
        task.load()
        _WORKER_TASKS[key] = task
    return _WORKER_TASKS[key]


def execute(cell: Cell, task: Task | None = None) -> dict[str, Any] | None:
    """Run ``cell`` in this (worker) process, on ``task`` where the driver sent its own: its record, a
    'failed' record, or None where a stop request interrupted it (it saved its checkpoint; the next run
    continues from there)."""
    if task is not None:
        _WORKER_TASKS.setdefault(worker_key(cell), task)
    task = _prepare_worker(cell)
    try:
        return perform(task, cell, progress=False)
    except StopRequested:
        return None


_ANNOUNCE: Any = None  # a --jobs worker's queue to the driver: which cell it starts


def _execute_announced(index: int, cell: Cell) -> dict[str, Any] | None:
    """``execute`` in a --jobs worker, which first tells the driver that it runs cell ``index`` (so that
    the driver knows which cell a worker that dies was running)."""
    if stop_requested():  # the pool is being taken down (a stop, or another worker died): start nothing new
        return None
    if _ANNOUNCE is not None:
        _ANNOUNCE.put((index, os.getpid()))
    return execute(cell)


def _init_process_worker(stop: Any, announce: Any = None, tasks: dict[str, Task] | None = None) -> None:
    """A --jobs worker ignores Ctrl-C (the terminal sends it to the whole process group): the driver
    decides, and sets ``stop``, which makes the running cell checkpoint and return. A SIGTERM sent to
    the worker itself (a batch scheduler ending the job's processes, or the driver taking down a pool
    that another worker broke by dying) does the same. ``tasks``: the driver's loaded tasks, by
    ``worker_key``, so that no worker reads or generates the data again."""
    global _ANNOUNCE
    _ANNOUNCE = announce
    _WORKER_TASKS.update(tasks or {})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: request_stop())

    def watch() -> None:
        stop.wait()
        request_stop()
    threading.Thread(target=watch, daemon=True).start()


# ------------------------------------------------------------------------------------ the executors

class WorkerDied(RuntimeError):
    """A ``--jobs`` worker process ended while it ran a cell (killed, out of memory, a segfault, ``os._exit``)."""


def death(exitcode: int | None) -> str:
    """How a worker process ended, in words: 'exit code 3', 'signal SIGKILL (killed, e.g. out of memory)'."""
    if exitcode is None:
        return "an exit status that could not be read"
    if exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = str(-exitcode)
    return f"signal {name}" + (" (killed, e.g. by the out-of-memory killer)" if -exitcode == signal.SIGKILL else "")


def blame(running: dict[int, int], exitcodes: dict[int, int | None]) -> tuple[list[int], list[int]]:
    """After a worker died: (the cells that surely killed it, the cells to rerun alone to find out), from
    ``running`` (cell index -> the pid of the worker that ran it) and each worker's exit code (0: it
    ended cleanly when the pool was taken down; None: unknown). One worker that died: its cell. None
    or several, or one that cannot be told: every running cell is rerun alone, once."""
    died = [i for i, pid in running.items() if exitcodes.get(pid) != 0]
    if len(died) == 1 and exitcodes.get(running[died[0]]) is not None:
        return died, []
    return [], sorted(running)



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
    """``--jobs N``: N worker processes on this machine (spawned, so CUDA and OpenMP start clean).

    A worker that dies (killed, out of memory, a segfault, ``os._exit`` in a plugin) breaks the pool.
    The cell it ran is recorded failed, saying how the worker ended; the pool is started again and the
    other cells, running or waiting, run again (a running one continues from the checkpoint it saved
    when the pool stopped it). Where it cannot be told which running cell killed the pool, each runs
    again alone, once, and only one that kills its worker again is recorded failed."""

    name = "processes"

    def __init__(self, jobs: int) -> None:
        import multiprocessing
        self.context = multiprocessing.get_context("spawn")
        self.slots = jobs
        self.stop = self.context.Event()
        self.announce: Any = None  # (cell index, worker pid) as each cell starts: a new queue per pool
        self.pool: ProcessPoolExecutor | None = None
        self.rounds_lost = 0  # pools that broke with no cell running: a worker that cannot start

    def _new_pool(self, jobs: int, tasks: dict[str, Task]) -> ProcessPoolExecutor:
        """A pool of ``jobs`` workers, each given the driver's loaded ``tasks`` (by ``worker_key``) once."""
        self.announce = self.context.SimpleQueue()  # (one a worker killed while it wrote could stay locked)
        self.pool = ProcessPoolExecutor(jobs, mp_context=self.context, initializer=_init_process_worker,
                                        initargs=(self.stop, self.announce, tasks))
        return self.pool

    def run(self, cells: list[Cell], tasks: dict[str, Task]) -> Iterator[tuple[Cell, dict[str, Any]]]:
        todo, alone = list(enumerate(cells)), []
        while todo or alone:
            if alone:
                batch, jobs = [alone.pop(0)], 1
            else:
                batch, jobs, todo = todo, self.slots, []
            broken = yield from self._round(batch, jobs, tasks)
            if broken is None:
                continue
            died, again, suspects = broken
            for cell, how in died:
                yield cell, self.failed(cell, tasks, WorkerDied(f"its worker process died ({how}) while it ran this "
                                                                f"cell"))
            todo, alone = again + todo, alone + suspects

    def _round(self, batch: list[tuple[int, Cell]], jobs: int, tasks: dict[str, Task]) -> Iterator:
        """Run ``batch`` on a fresh pool of ``jobs`` workers, yielding what finishes; return None, or
        where a worker died, (the cells that killed it with how it ended, the cells to run again, the
        cells to rerun alone)."""
        pool = self._new_pool(jobs, {worker_key(c): tasks[c.task] for _, c in batch})
        futures: dict[Future, tuple[int, Cell]] = {pool.submit(_execute_announced, i, c): (i, c) for i, c in batch}
        remaining, started, finished = set(futures), {}, set()
        while remaining:
            done, remaining = wait(remaining, timeout=POLL_S, return_when=FIRST_COMPLETED)
            self._drain(started)
            finished |= {futures[f][0] for f in done if not isinstance(f.exception(), BrokenProcessPool)}
            yield from self._results(done, futures, tasks)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                exitcodes = self._take_down(pool, started)
                late = [f for f in futures if f.done() and not f.cancelled() and f.exception() is None
                        and futures[f][0] not in finished]
                finished |= {futures[f][0] for f in late}  # results that came back before the pool broke
                yield from self._results(late, futures, tasks)
                return self._blame(batch, started, finished, exitcodes)
            if stop_requested() and remaining:
                self.stop.set()  # running cells checkpoint and return None; queued ones never start
                for future in remaining:
                    future.cancel()
                yield from self._results([f for f in remaining if not f.cancelled()], futures, tasks)
                raise StopRequested(f"stopped with {len(remaining)} cell(s) unfinished")
        pool.shutdown(wait=True)
        return None

    def _drain(self, started: dict[int, int]) -> None:
        while not self.announce.empty():
            index, pid = self.announce.get()
            started[index] = pid

    def _take_down(self, pool: ProcessPoolExecutor, started: dict[int, int]) -> dict[int, int | None]:
        """A broken pool's end: its other workers stop (a running cell checkpoints), and how each ended
        (pid -> exit code; 0 for one that had to be killed after ``STOP_WAIT_S``: it did not die of itself)."""
        processes = dict(getattr(pool, "_processes", None) or {})  # pid -> Process (how each worker ended)
        killed = _stop_workers(processes, STOP_WAIT_S)
        pool.shutdown(wait=True)
        self._drain(started)
        return {pid: (0 if pid in killed else p.exitcode) for pid, p in processes.items()}

    def _blame(self, batch: list[tuple[int, Cell]], started: dict[int, int], finished: set[int],
               exitcodes: dict[int, int | None]) -> tuple[list, list, list]:
        """Which cell killed the pool (``blame``), and which run again, on a new pool or alone."""
        running = {i: pid for i, pid in started.items() if i not in finished}
        cells = dict(batch)
        self.rounds_lost = 0 if running else self.rounds_lost + 1
        if self.rounds_lost >= 2:  # workers that die before any cell starts: nothing would ever run
            return [(cell, "before it started the cell, twice") for i, cell in batch if i not in finished], [], []
        culprits, suspects = (list(running), []) if len(running) == 1 else blame(running, exitcodes)
        died = [(cells[i], death(exitcodes.get(running[i]))) for i in culprits]
        again = [(i, c) for i, c in batch if i not in finished and i not in culprits and i not in suspects]
        for cell, how in died:
            rerun = f"; {len(again)} other cell(s) run again on new workers" if again else ""
            print(f"harness: a worker process died ({how}) running {cell.name}{rerun}", file=sys.stderr)
        if suspects:
            print(f"harness: a worker process died while {len(suspects)} cells ran; each runs again alone to find "
                  f"which one killed it", file=sys.stderr)
        return died, again, [(i, cells[i]) for i in suspects]

    def _results(self, done: Iterable[Future], futures: dict[Future, tuple[int, Cell]],
                 tasks: dict[str, Task]) -> Iterator[tuple[Cell, dict[str, Any]]]:
        for future in done:
            cell = futures[future][1]
            try:
                record = future.result()
            except BrokenProcessPool:  # the cell did not finish: it runs again (or, its worker died, is blamed)
                continue
            except Exception as e:  # noqa: BLE001 - a result that could not come back fails its cell
                record = self.failed(cell, tasks, e)
            if record is not None:
                yield cell, record

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None


def _stop_workers(processes: dict[int, Any], timeout: float) -> set[int]:
    """Wait up to ``timeout`` seconds for the workers of a broken pool to end (the pool asked them to
    stop: a running cell checkpoints at its next step); kill those still running. Returns their pids."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes.values() if p.is_alive()]
    while alive and time.monotonic() < deadline:
        mp_wait([p.sentinel for p in alive], timeout=max(0.0, deadline - time.monotonic()))
        alive = [p for p in alive if p.is_alive()]
    for p in alive:
        p.kill()
    return {p.pid for p in alive}


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
        shared = {name: self.ray.put(task) for name, task in tasks.items()}  # the driver's data, sent once
        refs = {self.remote.remote(cell, shared[cell.task]): cell for cell in cells}
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


def run_cells(cells: list[Cell], tasks: dict[str, Task], options: RunOptions,
              each: Callable[[Cell, Any, str], None], group: Group = SINGLE, bar: bool = False) -> bool:
    """Run ``cells`` where ``options`` say (here, --jobs processes, Ray; the DDP ``group``), calling
    ``each(cell, result, executor name)`` as each one finishes (a cell's record, or a tuning trial's
    outcome). SIGTERM and the first Ctrl-C stop it: the running cells save their checkpoints and it
    returns False; True when every cell ran. The sweep and the tuning studies both run through here."""
    if not cells:
        return True
    with stop_on_signals():
        executor = make_executor(options.executor, jobs=options.jobs, address=options.ray_address,
                                 cpus=options.cpus_per_cell or 1, gpus=options.gpus_per_cell,
                                 progress=not options.quiet, group=group)
        overall = OverallBar(len(cells), executor.slots, enabled=bar and not options.quiet and group.is_main)
        try:
            for cell, result in executor.run(cells, tasks):
                each(cell, result, executor.name)
                overall.advance()
        except KeyboardInterrupt:
            return False
        finally:
            overall.close()
            executor.close()
    return True


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
