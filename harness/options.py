"""What each command was asked to do, as one typed, frozen value per command.

``harness.cli`` parses the command line (argparse, there and in ``harness.arguments`` only) and
turns it into one of these dataclasses, as CORL's ``TrainConfig`` and nanoGPT's config block hold a
run's settings; everything past the command line reads them, never an ``argparse.Namespace``.
A ``run`` or ``tune`` command is a :class:`RunOptions`; each of its sweeps (a domain of ``run
all``, a point of a ``--params`` or ``--train-fraction`` grid) is a :class:`Sweep`.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping


class _FromMapping:
    """``of(mapping)``: the dataclass from a parsed command line's values (unknown keys ignored, lists
    frozen into tuples, None where a field has another default: that default)."""

    @classmethod
    def of(cls, values: Mapping[str, Any]):
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        kept = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
                if k in known and not (v is None and known[k].default not in (None, MISSING))}
        return cls(**kept)


@dataclass(frozen=True)
class RunOptions(_FromMapping):
    """``python -m harness run`` / ``tune``: every flag, with the command line's defaults."""

    domain: str | None = None
    config: Path | None = None  # a suite file (its [[run]] tables become RunOptions of their own)
    tasks: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    seeds: int | None = None  # None: each task's default
    seed_start: int = 0
    size: str = "tiny"
    params: tuple[int, ...] = ()  # --params grid; empty: the size presets
    train_fraction: tuple[float, ...] = ()  # --train-fraction grid; empty: all the training data
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    device: str = "auto"
    backend: str = "sdpa"
    precision: str = "auto"
    compile: bool = False
    channels_last: str = "auto"
    data_on_device: str = "auto"
    data_dir: str = "data"
    download: bool = False
    task_opt: tuple[tuple[str, str], ...] = ()
    model_opt: tuple[tuple[str, str], ...] = ()
    out: Path = Path("results")
    plugin: tuple[str, ...] = ()
    quiet: bool = False
    track: tuple[str, ...] | None = None
    force: bool = False
    deterministic: bool = False
    checkpoint_minutes: float = 5.0
    jobs: int = 1
    executor: str = "local"
    ray_address: str | None = None
    cpus_per_cell: float | None = None
    gpus_per_cell: float = 0.0
    ddp: bool = False
    storage: str | None = None
    tune: int | None = None  # counted trials per model (--tune N, tune --trials N); None: no tuning
    pair: tuple[tuple[str, str], ...] = ()  # requested verdict pairs, as report --pair

    def sweeps(self, domains: list[str]) -> list[Sweep]:
        """One sweep per domain and per point of the --params x --train-fraction grid."""
        return [Sweep(self, d, p, f) for d in domains for p in self.params or (None,) for f in self.train_fraction or (None,)]

    def passed_on(self, table: RunOptions, defaults: RunOptions) -> RunOptions:
        """A suite's [[run]] ``table`` with this command line's where-and-how flags (--out, --data-dir,
        --jobs, ...): flags given here win; switches (--quiet, --force, ...) add; plugins join."""
        changes: dict[str, Any] = {"plugin": tuple(dict.fromkeys([*table.plugin, *self.plugin]))}
        for name in PASSED_ON:
            mine = getattr(self, name)
            if name in SWITCHES:
                changes[name] = getattr(table, name) or mine
            elif mine != getattr(defaults, name):
                changes[name] = mine
        return replace(table, **changes)


PASSED_ON = ("out", "data_dir", "device", "quiet", "force", "download", "checkpoint_minutes", "jobs", "executor",
             "ray_address", "cpus_per_cell", "gpus_per_cell", "ddp", "storage", "tune", "track")
SWITCHES = ("quiet", "force", "download", "ddp")


@dataclass(frozen=True)
class Sweep:
    """One sweep of a run: the command's options at one domain and one grid point."""

    options: RunOptions
    domain: str
    params: int | None = None  # the --params point (None: the size presets)
    train_fraction: float | None = None  # the --train-fraction point (None: all the data)

    @property
    def fraction(self) -> float:
        return self.train_fraction or 1.0


@dataclass(frozen=True)
class ListOptions(_FromMapping):
    what: str = "models"
    pattern: str = "*"
    plugin: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportOptions(_FromMapping):
    out: Path = Path("results")
    pair: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CompareOptions(_FromMapping):
    task: str
    model_a: str
    model_b: str
    size: str | None = None
    tuning: str | None = None
    alpha: float = 0.05
    out: Path = Path("results")
    plugin: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExamplesOptions(_FromMapping):
    task: str = "*"
    model: str = "*"
    out: Path = Path("results")


@dataclass(frozen=True)
class BenchOptions(_FromMapping):
    device: str = "auto"
    precision: str = "auto"
    warmup: int = 10
    iters: int = 40
    seq_lens: str | None = None
    skip: str = ""
    compile: bool = False
    out: Path = Path("results")
