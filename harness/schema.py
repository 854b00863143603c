"""The cell record: one dataclass, its schema version, and the one reader that checks and upgrades it.

Every cell writes one :class:`Record` (``trainer.CellTrainer.record``, ``trainer.failure_record``) as
JSON beside its per-item outcomes; every reader goes through :meth:`Record.read`, which checks the
fields' types (a record that fails is skipped with a warning naming what is wrong) and upgrades a
record of an older schema, so that no reader needs fallbacks for old records:

=========  ======================================================================================
version    what changed
=========  ======================================================================================
1          (no ``schema_version`` field) records before this module: ``family``, ``tuning``,
           ``train_fraction`` and ``train_size`` may be missing
2          every field below; ``family`` and ``tuning`` always there, ``train_size`` always
           known (for a version-1 record: samples seen / epochs)
=========  ======================================================================================

A record reads as a mapping too (``record["metric"]``, ``record.get("tuned")``), which is what its JSON
is; fields this version does not know are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Iterator, Mapping

SCHEMA_VERSION = 2
NO_FAMILY = "unknown"  # the family of a record that names none (version 1): in no family pair
DEFAULT_TUNING = "default"  # the tuning of a record that names none: the model's registered defaults


def number(value: Any) -> float:
    """A value as a float: NaN where it is missing, None, a bool or not a number (the one helper every
    reader of records and leaderboards uses)."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def finite(value: Any) -> bool:
    return math.isfinite(number(value))


@dataclass
class Record:
    """One cell: which one (task, model, size, tuning, seed), what it scored, what it cost and how it
    was obtained. A failed cell has ``status`` 'failed', its ``reason`` and no scores."""

    # which cell
    domain: str
    task: str
    model: str
    size: str
    seed: int
    status: str  # 'ok' or 'failed'
    metric: str  # the task's headline metric
    higher_is_better: bool
    config: dict  # the resolved configuration (harness.config.resolve), which config_hash covers
    config_hash: str
    family: str = NO_FAMILY
    tuning: str = DEFAULT_TUNING
    # what it scored (status ok): the last checkpoint's test metrics and per-item outcomes
    metric_value: float | None = None
    test: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # per validation: step, epoch, train_loss, val_<metric> ...
    examples: dict = field(default_factory=dict)
    checkpoint: str = "last"
    items: dict | None = None  # name -> array, in memory until written beside the record
    items_file: str | None = None
    target: float | None = None
    time_to_target_s: float | None = None
    # what it cost
    param_count: int | None = None
    flops_per_sample: float | None = None
    train_flops_per_sample: float | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    compile_time_s: float | None = None
    warmup_time_s: float | None = None
    train_samples: int | None = None
    train_size: float | None = None
    train_fraction: float = 1.0
    params_target: int | None = None
    train_samples_per_sec: float | None = None
    infer_samples_per_sec: float | None = None
    mfu: float | None = None
    peak_mem_mb: float | None = None
    # how it was obtained
    backend: str | None = None
    precision: str | None = None
    tf32: bool | None = None
    accumulation: int | None = None
    channels_last: bool | None = None
    data_on_device: bool | None = None
    resumed_from_step: int | None = None
    device: str | None = None
    device_name: str | None = None
    num_threads: int | None = None
    torch_version: str | None = None
    torchvision_version: str | None = None
    python_version: str | None = None
    platform: str | None = None
    hostname: str | None = None
    git_commit: str | None = None
    argv: str | None = None
    executor: str | None = None
    tuned: dict | None = None  # the study a tuned row's configuration came from (harness.tune)
    started: str | None = None
    finished: str = ""
    reason: str | None = None  # a failed cell: why
    traceback: str | None = None
    extra: dict = field(default_factory=dict)  # fields this version does not know, kept as they are
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------------------- reading

    @classmethod
    def read(cls, raw: Any) -> Record:
        """A record from its JSON object (or a record as it is), upgraded to this schema; ValueError
        naming what is wrong where it is not a valid cell record."""
        if isinstance(raw, Record):
            return raw
        problem = problem_of(raw)
        if problem:
            raise ValueError(problem)
        known = {f.name for f in fields(cls)} - {"extra"}
        record = cls(**{k: v for k, v in raw.items() if k in known - {"schema_version"}}, schema_version=raw.get("schema_version", 1),
                     extra={k: v for k, v in raw.items() if k not in known})
        return record.upgraded()

    def upgraded(self) -> Record:
        """A version-1 record brought to this schema (what it lacks, derived or defaulted)."""
        if self.schema_version < 2:
            if self.train_size is None and finite(self.train_samples) and number(self.config.get("epochs")) > 0:
                self.train_size = float(round(self.train_samples / self.config["epochs"]))
            self.schema_version = SCHEMA_VERSION
        return self

    def to_json(self) -> dict[str, Any]:
        """The JSON object (without the in-memory ``items``; ``extra`` merged back)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("items", "extra")}
        return {**out, **self.extra}

    # -------------------------------------------------------------- read as the JSON it is

    def __getitem__(self, key: str) -> Any:
        if key in _FIELDS:
            return getattr(self, key)
        return self.extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in _FIELDS:
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key) if key in _FIELDS else self.extra.get(key, default)
        return default if value is None else value

    def __contains__(self, key: str) -> bool:
        return (key in _FIELDS and getattr(self, key) is not None) or key in self.extra

    def keys(self) -> Iterator[str]:
        return iter(self.to_json())


_FIELDS = {f.name for f in fields(Record)} - {"extra"}


def records_of(found: Iterable[Any]) -> list[Record]:
    """Records (or their JSON objects) as ``Record``s; one that is not a valid cell record is left out,
    with a warning saying what is wrong with it."""
    out = []
    for raw in found:
        try:
            out.append(Record.read(raw))
        except ValueError as e:
            print(f"warning: leaving out an invalid cell record ({e})", file=sys.stderr)
    return out


def _of(*types: type):
    """A check that a value is one of ``types`` (a bool is no number, unless bool is named)."""
    def check(value: Any) -> bool:
        return isinstance(value, types) and (bool in types or not isinstance(value, bool))
    return check


_TEXT, _INT, _NUMBER, _FLAG, _TABLE = _of(str), _of(int), _of(int, float), _of(bool), _of(dict)
REQUIRED = {  # what every record has, and its type
    "domain": _TEXT, "task": _TEXT, "model": _TEXT, "size": _TEXT, "seed": _INT, "status": _TEXT,
    "metric": _TEXT, "higher_is_better": _FLAG, "config": _TABLE, "config_hash": _TEXT,
}
REQUIRED_OK = {  # ... and what a successful one has besides (what the leaderboard and the report read)
    "metric_value": _NUMBER, "test": _TABLE, "param_count": _INT, "train_time_s": _NUMBER,
    "train_samples_per_sec": _NUMBER, "device": _TEXT, "device_name": _TEXT, "backend": _TEXT, "precision": _TEXT,
    "torch_version": _TEXT, "git_commit": _TEXT, "finished": _TEXT,
}
REQUIRED_CONFIG = {"total_steps": _INT, "epochs": _NUMBER, "batch_size": _INT, "lr": _NUMBER, "weight_decay": _NUMBER}
TYPED = {"family": _TEXT, "tuning": _TEXT, "history": _of(list), "examples": _TABLE, "schema_version": _INT}


def problem_of(raw: Any) -> str | None:
    """What is wrong with ``raw`` as a cell record's JSON (a missing field, a value of the wrong type),
    or None where it is a valid one."""
    if not isinstance(raw, Mapping):
        return "not a cell record (not a JSON object)"
    checks = [("", raw, REQUIRED, True), ("", raw, TYPED, False)]
    if raw.get("status") == "ok":
        checks += [("", raw, REQUIRED_OK, True), ("config.", raw.get("config") or {}, REQUIRED_CONFIG, True)]
    elif raw.get("status") != "failed":
        return f"status {raw.get('status')!r} is neither 'ok' nor 'failed'"
    for prefix, table, schema, required in checks:
        for key, valid in schema.items():
            if key not in table:
                if required:
                    return f"no field {prefix}{key}"
                continue
            if not valid(table[key]):
                return f"field {prefix}{key} has the wrong type ({table[key]!r})"
    return None
