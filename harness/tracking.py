"""Finished cells -> experiment trackers: MLflow and TensorBoard (``--track``).

``--track mlflow[=URI]`` logs each cell as one MLflow run in the experiment ``attention-zoo/<domain>``
(by default in the SQLite database ``<out>/mlflow.db``; with a database store, artifacts go under
``<out>/mlflow-artifacts``, a tracking server or a file store keeps its own):
its configuration as params, its validation curve and final test and cost numbers as metrics, its
record (and per-item file) as artifacts, and, once the sweep has published, the domain's leaderboard.
``--track tensorboard`` writes each cell's curve and final numbers as TensorBoard event files under
``<out>/tensorboard/<domain>/<task>/<model>-<size>-seed<seed>-<config hash>/``.

Tracking only reads records that are already written: it never changes what a cell computes or
records. A tracker that fails (a bad URI, a server down, a full disk) prints one warning line per
cell and the sweep goes on; it is tried again for the next cell. mlflow and
``torch.utils.tensorboard`` are imported only inside functions, when a tracker is asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
from dataclasses import dataclass
from functools import partial
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from .errors import UsageError
from .records import items_path
from .schema import finite

ACCEPTED = "mlflow[=URI], tensorboard"
PACKAGES = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("torch.utils.tensorboard", "tensorboard")}  # import, pip
RUN_PARAMS = ("task", "model", "family", "size", "tuning", "seed", "device", "backend", "precision", "config_hash",
              "git_commit")
COST = ("param_count", "flops_per_sample", "train_flops_per_sample", "train_time_s", "train_samples_per_sec", "mfu",
        "infer_samples_per_sec", "peak_mem_mb", "time_to_target_s")
MAX_PARAM_VALUE = 6000  # MLflow's limits: characters of a param's value, of a tag's value,
MAX_TAG_VALUE = 8000
MAX_PARAMS_PER_BATCH = 100  # ... params and metrics per log_batch call
MAX_METRICS_PER_BATCH = 1000


@dataclass(frozen=True)
class TrackSpec:
    """One ``--track`` value: the tracker's name and, for MLflow, its tracking URI (None: the default)."""

    name: str
    uri: str | None = None


# ------------------------------------------------------------------------------------------ --track

def _parse_one(value: str) -> TrackSpec:
    name, has_uri, uri = (part.strip() for part in value.partition("="))
    if name == "mlflow":
        if has_uri and not uri:
            raise UsageError(f"--track: {value!r} names no URI; accepted: {ACCEPTED}")
        return TrackSpec("mlflow", uri or None)
    if name == "tensorboard":
        if has_uri:
            raise UsageError(f"--track: tensorboard takes no URI (its files go under --out/tensorboard), "
                             f"got {value!r}; accepted: {ACCEPTED}")
        return TrackSpec("tensorboard")
    if not value:
        raise UsageError(f"--track: an empty value; accepted: {ACCEPTED}")
    raise UsageError(f"--track: unknown tracker {value!r}; accepted: {ACCEPTED}")


def parse_track(values: list[str] | None) -> list[TrackSpec]:
    """The trackers named by the repeatable ``--track`` option: each value 'mlflow', 'mlflow=URI' or
    'tensorboard', or several of them separated by commas. Anything else, an empty value and a
    tracker named twice are a :class:`UsageError`."""
    specs = [_parse_one(part.strip()) for value in values or [] for part in value.split(",")]
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(f"--track: {twice[0]} is named more than once; each tracker once, accepted: {ACCEPTED}")
    return specs


def open_trackers(specs: list[TrackSpec], out: Path) -> Trackers:
    """The trackers of ``specs``, for a sweep writing under ``out``. Each one's package must import
    (else a :class:`UsageError` saying what to install), checked here, before anything trains; MLflow
    connects only when the first cell is logged. With no specs, trackers that do nothing."""
    for spec in specs:
        module, package = PACKAGES[spec.name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise UsageError(f"--track {spec.name} needs the {package} package: pip install -e '.[track]'") from None
    out = Path(out).resolve()
    return Trackers([MLflowTracker(spec.uri, out) if spec.name == "mlflow" else TensorBoardTracker(out)
                     for spec in specs])


class Trackers:
    """The trackers of a sweep: each call is passed to every one of them, and a tracker that fails
    prints one warning line (never an exception), naming what was kept."""

    def __init__(self, trackers: list[Any] | None = None) -> None:
        self.trackers = list(trackers or [])

    def cell(self, record: dict[str, Any], record_file: Path) -> None:
        """Log one finished cell (ok or failed), whose record was written to ``record_file``."""
        for tracker in self.trackers:
            _guarded(tracker, partial(tracker.cell, record, Path(record_file)),
                     f"cannot log {run_name(record)} to {tracker.where}",
                     f"the cell's record is kept at {record_file}")

    def published(self, domain: str, leaderboard_csv: Path) -> None:
        """After the sweep wrote the domain's leaderboard: attach it to the runs logged in that domain."""
        for tracker in self.trackers:
            _guarded(tracker, partial(tracker.published, domain, Path(leaderboard_csv)),
                     f"cannot attach the {domain} leaderboard in {tracker.where}",
                     f"the leaderboard is kept at {leaderboard_csv}")

    def close(self) -> None:
        for tracker in self.trackers:
            _guarded(tracker, tracker.close, f"cannot close {tracker.where}", "the records are kept")


def _guarded(tracker: Any, call: Callable[[], None], what: str, kept: str) -> None:
    """``call()``; an exception becomes one warning line on stderr."""
    try:
        call()
    except Exception as e:  # noqa: BLE001 - a tracker never stops a sweep
        lines = str(e).strip().splitlines()
        message = lines[0] if lines else ""
        if tracker.secret:  # a password in the tracker's URI, which mlflow's messages repeat
            message = message.replace(tracker.secret, "***")
        message = message[:300]
        print(f"warning: --track {tracker.name}: {what} ({type(e).__name__}: {message}); {kept}", file=sys.stderr)


# ------------------------------------------------------------------------------- what a record says

def run_name(record: dict[str, Any]) -> str:
    return f"{record['task']}/{record['model']}/{record['size']}/seed{record['seed']}"



def _seconds(timestamp: str | None) -> float | None:
    """An ISO 8601 time of a record as seconds since the epoch (None where it has none)."""
    return datetime.fromisoformat(timestamp).timestamp() if timestamp else None


def curve_steps(history: list[dict[str, Any]]) -> list[int]:
    """The step each validation row is logged at: its epoch where every row's epoch is a whole number,
    else its optimiser step (a budget in steps can end mid-epoch, and rounding would merge rows)."""
    epochs = [row.get("epoch") for row in history]
    if all(finite(e) and float(e).is_integer() for e in epochs):
        return [int(e) for e in epochs]
    return [int(row["step"]) if finite(row.get("step")) else i + 1 for i, row in enumerate(history)]


def curve(record: dict[str, Any]) -> Iterator[tuple[int, float, dict[str, float]]]:
    """Per validation row: its step, its wall time (the cell's start plus the training time so far,
    validation not counted; the cell's end where the record has no start) and its numbers."""
    history = record.get("history") or []
    started, finished = _seconds(record.get("started")), _seconds(record.get("finished"))
    for step, row in zip(curve_steps(history), history):
        wall = started + row["train_time_s"] if started is not None and finite(row.get("train_time_s")) \
            else finished
        yield step, wall, {k: float(v) for k, v in row.items() if k not in ("epoch", "step") and finite(v)}


def last_step(record: dict[str, Any]) -> int:
    return max(curve_steps(record.get("history") or []), default=0)


def final_metrics(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The finished cell's numbers: ``test`` (each test metric) and ``cost`` (the cost columns)."""
    test = record.get("test") or {}
    return {"test": {k: float(v) for k, v in test.items() if finite(v)},
            "cost": {k: float(record[k]) for k in COST if finite(record.get(k))}}


def _flatten(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def params_of(record: dict[str, Any]) -> dict[str, str]:
    """The record's configuration as MLflow params: every key of ``config`` (nested ones dotted), and
    the record's own task, model, seed, config hash, ... (which win where both have a key)."""
    params = dict(_flatten(record.get("config") or {}))
    params.update({k: record[k] for k in RUN_PARAMS if record.get(k) is not None})
    return {k: str(v)[:MAX_PARAM_VALUE] for k, v in params.items()}


def items_file(record: dict[str, Any], record_file: Path) -> Path | None:
    """The per-item file beside ``record_file``: the one its ``items_file`` names, or (a record still in
    memory, whose items were written beside it) ``records.items_path``; None where there is none."""
    path = record_file.parent / record["items_file"] if record.get("items_file") else items_path(record_file)
    return path if path.is_file() else None


# ------------------------------------------------------------------------------------------- MLflow

class MLflowTracker:
    """Each cell one MLflow run in the experiment ``attention-zoo/<domain>``. The client is made at the
    first cell (mlflow's first connection is slow) through ``MlflowClient(tracking_uri=...)``, so no
    global MLflow state (the fluent API's active run or URI) is touched."""

    name = "mlflow"

    def __init__(self, uri: str | None, out: Path) -> None:
        self.uri = uri or f"sqlite:///{out / 'mlflow.db'}"
        # A database store (SQLite, PostgreSQL, ...) would put artifacts in ./mlruns of whatever folder the
        # sweep runs from: they go under out instead. A server or a file store keeps its own.
        self.artifacts_under_out = urlsplit(self.uri).scheme not in ("", "file", "http", "https", "databricks")
        self.where = shown_uri(self.uri)
        self.secret = urlsplit(self.uri).password
        self.out = out
        self._client = None
        self.experiments: dict[str, str] = {}  # domain -> experiment id
        self.runs: dict[str, list[str]] = {}  # domain -> ids of the runs logged here

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # not its 'creating tables' lines
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def experiment(self, domain: str) -> str:
        """The id of the domain's experiment, created where missing."""
        if domain not in self.experiments:
            from mlflow.exceptions import MlflowException
            name = f"attention-zoo/{domain}"
            found = self.client.get_experiment_by_name(name)
            if found is None:
                location = (self.out / "mlflow-artifacts" / domain).as_uri() if self.artifacts_under_out else None
                try:
                    self.experiments[domain] = self.client.create_experiment(name, artifact_location=location)
                    return self.experiments[domain]
                except MlflowException:  # made meanwhile by another run sharing the store
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
            self.experiments[domain] = found.experiment_id
        return self.experiments[domain]

    def cell(self, record: dict[str, Any], record_file: Path) -> None:
        """One run: params, tags, the curve and final numbers, the record (and its items) as artifacts.
        A run that could not be logged completely is ended as KILLED (never left RUNNING)."""
        client = self.client
        ok = record.get("status") == "ok"
        start = _seconds(record.get("started")) or _seconds(record.get("finished"))
        tags = {"domain": record["domain"], "task": record["task"], "model": record["model"],
                **({"mlflow.source.git.commit": record["git_commit"]} if record.get("git_commit") else {}),
                **({} if ok else {"failure_reason": str(record.get("reason", ""))[:MAX_TAG_VALUE]})}
        run_id = client.create_run(self.experiment(record["domain"]), start_time=_ms(start), tags=tags,
                                   run_name=run_name(record)).info.run_id
        try:
            self._log(run_id, record, record_file)
        except Exception:
            with contextlib.suppress(Exception):  # never left RUNNING; the first error is the one reported
                client.set_terminated(run_id, "KILLED")
            raise
        client.set_terminated(run_id, "FINISHED" if ok else "FAILED",
                              end_time=_ms(_seconds(record.get("finished"))))
        self.runs.setdefault(record["domain"], []).append(run_id)

    def _log(self, run_id: str, record: dict[str, Any], record_file: Path) -> None:
        from mlflow.entities import Param
        params = [Param(k, v) for k, v in params_of(record).items()]
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=params[i:i + MAX_PARAMS_PER_BATCH], synchronous=True)
        metrics = mlflow_metrics(record)
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH], synchronous=True)
        self.client.log_artifact(run_id, str(record_file))
        items = items_file(record, record_file)
        if items is not None:
            self.client.log_artifact(run_id, str(items))

    def published(self, domain: str, leaderboard_csv: Path) -> None:
        """Attach the leaderboard CSV (and its .md twin) to every run logged here in ``domain``."""
        runs = self.runs.get(domain, [])
        files = [path for path in (leaderboard_csv, leaderboard_csv.with_suffix(".md")) if path.is_file()]
        if runs and not files:
            raise FileNotFoundError(f"no leaderboard at {leaderboard_csv}")
        for run_id in runs:
            for path in files:
                self.client.log_artifact(run_id, str(path))

    def close(self) -> None:
        self._client = None


def shown_uri(uri: str) -> str:
    """``uri`` as a message may show it: a password in it (``postgresql://user:secret@host/db``) hidden."""
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1000))


def mlflow_metrics(record: dict[str, Any]) -> list[Any]:
    """The record's numbers as MLflow metrics: the curve (each row's numbers at its step, under their
    names in the record) and, at the last step, ``test_<name>``, ``metric_value`` and the cost columns.
    Non-finite values are left out (MLflow would store NaN, which plots as nothing anyway)."""
    from mlflow.entities import Metric
    found: dict[tuple[str, int], tuple[float, float | None]] = {}  # (key, step) -> (value, wall time)
    for step, wall, values in curve(record):
        found.update({(k, step): (v, wall) for k, v in values.items()})
    end, finished = last_step(record), _seconds(record.get("finished"))
    final = final_metrics(record)
    headline = {"metric_value": float(record["metric_value"])} if finite(record.get("metric_value")) else {}
    for key, value in [*((f"test_{k}", v) for k, v in final["test"].items()), *headline.items(),
                       *final["cost"].items()]:
        found[key, end] = (value, finished)
    now = time.time()
    return [Metric(key, value, _ms(now if wall is None else wall), step)
            for (key, step), (value, wall) in found.items()]


# -------------------------------------------------------------------------------------- TensorBoard

class TensorBoardTracker:
    """Each successful cell's event files in its own folder (a failed cell writes none): the curve as
    ``val/<name>`` and ``train/<name>``, the final numbers as ``test/<name>`` and ``cost/<name>`` at the
    last step, and a ``record`` text saying which cell it is. The folder mirrors the record file: a
    cell run again (``--force``) replaces its event files, as it replaces its record."""

    name = "tensorboard"

    def __init__(self, out: Path) -> None:
        self.root = out / "tensorboard"
        self.where = str(self.root)
        self.secret = None

    def folder(self, record: dict[str, Any]) -> Path:
        return (self.root / record["domain"] / record["task"]
                / f"{record['model']}-{record['size']}-seed{record['seed']}-{record['config_hash']}")

    def cell(self, record: dict[str, Any], record_file: Path) -> None:
        if record.get("status") != "ok":
            return
        from torch.utils.tensorboard import SummaryWriter
        folder = self.folder(record)
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        writer = SummaryWriter(log_dir=str(folder))
        try:
            for step, wall, values in curve(record):
                for key, value in values.items():
                    writer.add_scalar(_curve_tag(key), value, step, walltime=wall)
            end, finished = last_step(record), _seconds(record.get("finished"))
            final = final_metrics(record)
            for group in ("test", "cost"):
                for key, value in final[group].items():
                    writer.add_scalar(f"{group}/{key}", value, end, walltime=finished)
            writer.add_text("record", _summary(record, record_file), end, walltime=finished)
        finally:
            writer.close()

    def published(self, domain: str, leaderboard_csv: Path) -> None:
        """Nothing: TensorBoard has no place for a table of runs."""

    def close(self) -> None:
        """Nothing: each cell's writer is closed after the cell."""


def _curve_tag(key: str) -> str:
    """A history key as a TensorBoard tag: 'val_top1' -> 'val/top1', 'train_loss' -> 'train/loss'."""
    group, _, rest = key.partition("_")
    return f"{group}/{rest}" if group in ("val", "train") and rest else f"curve/{key}"


def _summary(record: dict[str, Any], record_file: Path) -> str:
    value = record.get("metric_value")
    result = f"{record['metric']} {value:.4f}" if finite(value) else f"{record['metric']} -"
    return (f"task {record['task']}, model {record['model']} ({record.get('family', '?')}), size {record['size']}, "
            f"seed {record['seed']}, config {record['config_hash']}: test {result}; record {record_file}")
