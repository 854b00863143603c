"""Stopping a running sweep cleanly: SIGTERM or a first Ctrl-C asks the running cell to save its
checkpoint and stop after its current step; a second Ctrl-C interrupts at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_STOP = threading.Event()


class StopRequested(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived: the cell saved its checkpoint (if it has one) and stopped."""


def request_stop() -> None:
    """Ask the running cell to save its checkpoint and stop after the current step (signal-safe)."""
    _STOP.set()


def clear_stop() -> None:
    _STOP.clear()


def stop_requested() -> bool:
    """Whether a stop was asked for since the last :func:`clear_stop`."""
    return _STOP.is_set()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM, and a first Ctrl-C, request a stop; a second Ctrl-C raises KeyboardInterrupt at once.
    The previous handlers come back afterwards."""
    def on_signal(signum, frame):
        if signum == signal.SIGINT and stop_requested():
            raise KeyboardInterrupt
        request_stop()

    clear_stop()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        clear_stop()
