from pathlib import Path

import pytest
import torch


def record_file(path: Path, failed: bool = False) -> Path:
    """The record a cell wrote, from its name without the configuration: '.../vit-tiny-seed0.json'
    finds '.../vit-tiny-seed0-<config hash>.json' (or its '.failed.json'), which must be the only one."""
    suffix = ".failed.json" if failed else ".json"
    found = [p for p in path.parent.glob(f"{path.stem}-*{suffix}") if failed or not p.name.endswith(".failed.json")]
    assert len(found) == 1, f"expected one record {path.stem}-<hash>{suffix} in {path.parent}, found {found}"
    return found[0]


def exists_like(path: Path) -> bool:
    """``path`` exists; a '*' in its name matches any text (a record's or checkpoint's config hash)."""
    path = Path(path)
    return any(path.parent.glob(path.name)) if "*" in path.name else path.exists()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests use tiny tensors: intra-op threads gain nothing, and on a 2-core machine shared
    with other work OpenMP oversubscription can make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _terminate_once_written(argv: list[str], paths: list, cwd, env=None, whole_group: bool = False) -> tuple[int, str]:
    """Start ``argv``, send it SIGTERM once every file in ``paths`` exists (or after 120 s), and
    return its exit code and stderr. ``whole_group``: signal every process it started too, as a batch
    scheduler ending a job does."""
    import os
    import signal
    import subprocess
    import time
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=whole_group)
    try:
        deadline = time.time() + 120
        while not all(exists_like(p) for p in paths) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if whole_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, err


@pytest.fixture
def terminate_once_written():
    """A stop in the middle of a run: see ``_terminate_once_written``."""
    return _terminate_once_written


def assert_items_reproduce(out: Path) -> dict[str, str]:
    """Every successful record under ``out/runs`` keeps a per-item file whose outcomes give its
    headline metric again: sum(value) / sum(weight) equals ``metric_value`` to 1e-9 (relative, for
    a loss of order 1..10). Returns {task: kind} of what was checked."""
    import json

    import numpy as np

    from tasks import get_task_class
    checked = {}
    for path in sorted(Path(out, "runs").rglob("*.json")):
        record = json.loads(path.read_text())
        if record.get("status") != "ok":
            continue
        with np.load(path.parent / record["items_file"], allow_pickle=False) as data:
            assert {"item", "value", "weight"} <= set(data.files), (path, data.files)
            items, value, weight = data["item"], data["value"], data["weight"]
        assert len(np.unique(items)) == len(items) > 0, path
        again = value.sum() / weight.sum()
        assert abs(again - record["metric_value"]) <= 1e-9 * max(1.0, abs(record["metric_value"])), \
            (path, again, record["metric_value"])
        checked[record["task"]] = get_task_class(record["task"]).kind
    return checked


@pytest.fixture
def clean_registry(monkeypatch):
    """Models and tasks registered by a test (a plugin, a throwaway model) vanish after it."""
    import tasks.base
    import zoo.registry as registry
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_plugins_loaded", registry._plugins_loaded)
    monkeypatch.setattr(tasks.base, "_TASKS", dict(tasks.base._TASKS))
