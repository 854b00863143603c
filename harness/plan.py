"""A sweep's plan: what it will run (its tasks, set up, each task's models and their configurations),
where (device, precision, the DDP group) and with what open (trackers, claims on cells).
``harness.sweep`` makes and runs it; ``harness.tune`` tunes it first where asked."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from tasks.base import Task

from . import distributed, tracking
from .config import RunConfig
from .options import RunOptions, Sweep
from .records import CellLock


@dataclass
class Plan:
    """What a sweep will run: its tasks (set up), each task's models and their configurations."""

    sweep: Sweep
    device: str
    precision: str
    group: distributed.Group
    tasks: dict[str, Task] = field(default_factory=dict)
    models: dict[str, list[str]] = field(default_factory=dict)  # task name -> model names
    configs: dict[tuple[str, str], RunConfig] = field(default_factory=dict)
    tuned: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (task, model) -> its study (tune)
    trackers: tracking.Trackers = field(default_factory=tracking.Trackers)  # --track: MLflow, TensorBoard
    locks: dict[str, CellLock] = field(default_factory=dict)  # checkpoint path -> this process's claim on the cell

    @property
    def options(self) -> RunOptions:
        return self.sweep.options

    def seeds(self, task: Task) -> int:
        return self.options.seeds or task.default_seeds

    def cells(self) -> list[tuple[Task, str, int]]:
        start = self.options.seed_start
        return [(task, model, seed) for name, task in self.tasks.items() for model in self.models[name]
                for seed in range(start, start + self.seeds(task))]

    def log(self, message: str) -> None:  # rank 0 speaks for a DDP group; above any progress bars
        if self.group.is_main:
            tqdm.write(message, file=sys.stderr)
