"""Where results go, and what each one says about how it was obtained."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Iterator

import torch


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


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


def atomic_save(path: Path, obj: Any) -> None:
    """``torch.save`` with the same all-or-nothing guarantee."""
    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


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


def record_path(out: Path, domain: str, task: str, model: str, size: str, seed: int) -> Path:
    return out / "runs" / domain / task / f"{model}-{size}-seed{seed}.json"


def checkpoint_path(out: Path, domain: str, task: str, model: str, size: str, seed: int) -> Path:
    return record_path(out, domain, task, model, size, seed).with_suffix(".ckpt")


def read_record(path: Path) -> dict[str, Any] | None:
    """One record, or None (with a warning) when it is missing, unreadable or not a record."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or "config_hash" not in record:
            raise ValueError("not a cell record")
        return record
    except (OSError, ValueError) as e:
        print(f"warning: ignoring unreadable record {path} ({e}); the cell will run again", file=sys.stderr)
        return None


def write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False) + "\n")


def read_records(root: Path) -> list[dict[str, Any]]:
    """Every record under ``root`` (recursively); unreadable files are skipped with a warning."""
    records = []
    for path in sorted(root.rglob("*.json")):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or not {"domain", "task", "model", "config_hash"} <= set(record):
                raise ValueError("not a cell record")
            records.append(record)
        except (OSError, ValueError) as e:
            print(f"warning: skipping unreadable record {path}: {e}", file=sys.stderr)
    return records
