import pytest
import torch


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
        while not all(p.exists() for p in paths) and time.time() < deadline and proc.poll() is None:
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
