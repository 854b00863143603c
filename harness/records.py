"""Where results go, and what each one says about how it was obtained."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import torch

from .schema import DEFAULT_TUNING, Record  # noqa: F401  (DEFAULT_TUNING: where readers of records look for it)
from .stats import Outcomes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file object whose content replaces ``path`` only when the block finishes: readers see the
    old file or the new one, never half (a temporary file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write text or bytes to ``path`` all-or-nothing (``atomic_file``)."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write a derived file (a leaderboard, a report, a verdicts table) all-or-nothing; where its folder
    cannot take it (a full disk, a folder turned read-only) it is rescued (``write_or_rescue``), with a
    warning saying where. Returns the path written."""
    return write_or_rescue(path, text)


def atomic_save(path: Path, obj: Any) -> None:
    """``torch.save`` with the same all-or-nothing guarantee."""
    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock (fcntl.flock on ``path``, created if need be), held for the block. Where the
    lock file cannot be opened (a folder turned read-only) the block runs without it, with a warning:
    what it writes is rescued where it cannot be written (``write_or_rescue``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as e:
        print(f"warning: cannot open the lock file {path} ({e.strerror or e}); going on without the lock",
              file=sys.stderr)
        yield
        return
    with handle:
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


class CellLock:
    """A cell claimed by this process (``claim_cell``): released (and its lock file removed) once the
    cell's record is written. ``handle`` None: held without a lock file (none could be made)."""

    def __init__(self, path: Path, handle: IO | None) -> None:
        self.path, self.handle = path, handle

    def release(self) -> None:
        if self.handle is None:
            return
        with contextlib.suppress(OSError):  # removed while held: whoever opens it next locks a new file
            self.path.unlink(missing_ok=True)
        self.handle.close()
        self.handle = None


def claim_cell(path: Path) -> CellLock | None:
    """Claim a cell for this process: a non-blocking exclusive lock on ``path`` (a ``.lock`` file beside
    its checkpoint). None where another process holds it (the same sweep started twice: that process
    trains the cell and publishes it). Where no lock file can be made, the cell is claimed without one."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no per-cell locks
        return CellLock(path, None)
    for _ in range(3):
        try:
            handle = open(path, "a")
        except OSError:
            return CellLock(path, None)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        except OSError:  # a file system without locks
            handle.close()
            return CellLock(path, None)
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if same:
            return CellLock(path, handle)
        handle.close()  # its holder released and removed it as we opened it: lock the new file
    return None


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the code that ran ('+dirty' when it had uncommitted changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")  # Linux: the CPU's marketing name; platform.processor() is often empty there
    if cpuinfo.exists():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]
        name = models[0] if models else name
    return f"{name} ({os.cpu_count()} cores)"


def environment(device: torch.device) -> dict[str, Any]:
    import torchvision

    return {
        "device": device.type,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "num_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "argv": " ".join(sys.argv),
    }


def record_path(out: Path, domain: str, task: str, model: str, size: str, seed: int, chash: str,
                failed: bool = False) -> Path:
    """Where a cell's record lives: one file per configuration (its config hash in the name), so that
    another configuration, or a failed attempt ('.failed.json'), never replaces a good record."""
    stem = f"{model}-{size}-seed{seed}-{chash}"
    return out / "runs" / domain / task / (f"{stem}.failed.json" if failed else f"{stem}.json")


def checkpoint_path(out: Path, domain: str, task: str, model: str, size: str, seed: int, chash: str) -> Path:
    return record_path(out, domain, task, model, size, seed, chash).with_suffix(".ckpt")


def _load(path: Path) -> Record:
    return Record.read(json.loads(path.read_text()))


def read_record(path: Path) -> Record | None:
    """One record, or None (with a warning naming the file) when it is missing, unreadable or invalid."""
    if not path.exists():
        return None
    try:
        return _load(path)
    except (OSError, ValueError) as e:
        print(f"warning: ignoring unreadable record {path} ({e}); the cell will run again", file=sys.stderr)
        return None


def items_path(path: Path) -> Path:
    """The per-item outcomes beside a record: ``<record stem>.items.npz``."""
    return path.with_name(path.name.removesuffix(".json") + ".items.npz")


def write_record(path: Path, record: Record | dict[str, Any]) -> Path:
    """Write ``record`` (a ``Record``, or its JSON object, checked) atomically; where that fails, save
    it in a rescue folder and return where it went. Its per-item outcomes (``record.items``: name ->
    array) go first to ``items_path`` (an ``.npz`` of plain arrays, no pickle), and the record names
    that file in ``items_file``."""
    record = Record.read(record)
    if record.items is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in record.items.items()})
        record.items_file = write_or_rescue(items_path(path), buffer.getvalue()).name
    return write_or_rescue(path, json.dumps(record.to_json(), indent=2, sort_keys=False, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    """What JSON cannot hold itself: NumPy scalars and arrays as numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


ITEM_COLUMNS = ("item", "value", "weight")  # what every per-item file holds (tasks add columns)


def set_aside(path: Path, problem: str, consequence: str) -> None:
    """Rename a project file that cannot be used to ``<name>.unusable``, with a one-line warning: the
    ``problem`` (naming the file), where it went and the ``consequence`` (a folder that cannot take the
    rename leaves the file where it is)."""
    aside = path.with_name(f"{path.name}.unusable")
    try:
        os.replace(path, aside)
        where = f"set aside as {aside.name}"
    except OSError as e:
        where = f"it could not be set aside ({e.strerror or e})"
    print(f"warning: {problem}; {where}, {consequence}", file=sys.stderr)


def read_items(record_file: Path, record: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The per-item outcomes of the record stored at ``record_file``, or None where it has none. A
    per-item file that is missing or cannot be read (truncated, not a zip, an array missing) is None
    too, with a warning naming it; a damaged one is set aside as ``*.unusable``, and its cell counts as
    not done (``items_readable``), so that the next run trains it again."""
    if not record.get("items_file"):
        return None
    path = record_file.parent / record["items_file"]
    if not path.exists():
        print(f"warning: the per-item file {path} of {record_file.name} is missing; its cell counts as not done "
              f"(a rerun trains it again)", file=sys.stderr)
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            columns = {k: data[k] for k in data.files}
        missing = [c for c in ITEM_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"no array {', '.join(missing)}")
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, zlib.error, ValueError, OSError: damage, never fatal
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        set_aside(path, f"{path} cannot be read ({type(e).__name__}: {reason})",
                  "its cell counts as not done (a rerun trains it again)")
        return None
    return columns


def items_readable(record_file: Path, record: dict[str, Any]) -> bool:
    """Whether a finished record's per-item outcomes can be read, where it names a per-item file (a
    record written before they were kept names none, and stays done)."""
    return not record.get("items_file") or read_items(record_file, record) is not None


def rescue_dir() -> Path:
    return Path(tempfile.gettempdir()) / "attention-zoo-rescued"


@lru_cache(maxsize=None)
def _rescue_folder() -> str:
    """One folder per process, so that a record and its per-item file are rescued side by side."""
    return f"{os.getpid()}-{int(time.time())}"


def write_or_rescue(path: Path, data: str | bytes) -> Path:
    """Write ``data`` (text or bytes) atomically to ``path``; where ``path`` cannot be written (a
    folder that became read-only, a full disk), the data goes to the rescue folder instead, with a
    warning saying where, so that finished work is never lost. Returns the path written."""
    try:
        atomic_write(path, data)
        return path
    except OSError as e:
        rescued = rescue_dir() / _rescue_folder() / path.name
        atomic_write(rescued, data)
        print(f"warning: cannot write {path} ({e.strerror or e}); saved it as {rescued} instead", file=sys.stderr)
        return rescued


KEY = ["domain", "task", "model", "size", "tuning"]  # a leaderboard row: the cells of one model on one task


def key_of(record: dict[str, Any]) -> tuple:
    """The leaderboard row a record belongs to: its values of ``KEY``."""
    return tuple(record[k] for k in KEY)


def latest_config(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (domain, task, model, size, tuning), only the records of the configuration that finished last, so
    that seeds run with other settings (another budget, backend, data ...) are never averaged together.
    ('finished' is ISO 8601 in UTC, to the millisecond: its text orders as its time.)"""
    latest: dict[tuple, tuple[str, str]] = {}
    for r in records:
        key = key_of(r)
        if key not in latest or r["finished"] > latest[key][0]:
            latest[key] = (r["finished"], r["config_hash"])
    return [r for r in records if r["config_hash"] == latest[key_of(r)][1]]


def load_outcomes(found: list[tuple[Path, dict[str, Any]]]) -> dict[tuple, Outcomes]:
    """Per (domain, task, model, size, tuning): the per-item outcomes of its seeds (latest configuration), as
    ``stats.Outcomes``, from ``read_record_files``; rows whose records keep no per-item file (written
    before they were kept) are left out, with a warning naming one of them, and so are rows with a
    per-item file that cannot be read (``read_items`` warns and sets it aside)."""
    files = {id(record): path for path, record in found}
    seeds: dict[tuple, list[tuple[int, dict[str, np.ndarray]]]] = {}
    missing, damaged = [], set()
    for record in latest_config([r for _, r in found if r.get("status") == "ok"]):
        key = key_of(record)
        columns = read_items(files[id(record)], record)  # a damaged file: warned about and set aside there
        if columns is None and record.get("items_file"):
            damaged.add(key)
        elif columns is None:
            missing.append(key)
        seeds.setdefault(key, []).append((record["seed"], columns))
    out = {}
    for key, runs in seeds.items():
        if key in missing or key in damaged:
            continue
        runs.sort(key=lambda run: run[0])
        try:
            out[key] = Outcomes.from_columns(key[2], [s for s, _ in runs], [c for _, c in runs])
        except (KeyError, ValueError) as e:
            print(f"warning: {'/'.join(map(str, key))}: per-item outcomes not usable ({e})", file=sys.stderr)
    if missing:
        print(f"warning: {len(set(missing))} leaderboard row(s) have records without per-item outcomes (e.g. "
              f"{'/'.join(map(str, missing[0]))}); rerun them (--force) for paired tests", file=sys.stderr)
    return out


def read_records(root: Path) -> list[dict[str, Any]]:
    """Every valid record under ``root`` (recursively); an unreadable or invalid file is skipped with
    a warning naming it."""
    return [record for _, record in read_record_files(root)]


def read_record_files(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """:func:`read_records`, each with the file it was read from (where its ``items_file`` lies)."""
    found = []
    for path in sorted(root.rglob("*.json")):
        try:
            found.append((path, _load(path)))
        except (OSError, ValueError) as e:
            print(f"warning: skipping unreadable record {path}: {e}", file=sys.stderr)
    return found
