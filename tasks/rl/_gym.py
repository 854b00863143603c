"""gymnasium, imported only where offline RL uses it. ``require_gym()`` returns the module, or raises
the one-line ``DatasetError`` that says how to install it.

The modules that need gymnasium when they are imported (``envs``, whose environments subclass
``gym.Env``; ``dataset``, which rolls the behaviour policies out; ``wrappers``) call it at their top,
and the task modules (``tasks``, ``minari``) import them inside the methods that set a task up, make
its environment or roll it out. So ``import tasks``, ``harness list tasks`` and the other domains'
runs work without gymnasium, and an RL task used without it stops with that error (exit code 2).
"""

from __future__ import annotations

from types import ModuleType

from ..base import DatasetError

INSTALL_HINT = "pip install gymnasium (or pip install -e .)"


def require_gym() -> ModuleType:
    """The ``gymnasium`` module; a ``DatasetError`` naming ``INSTALL_HINT`` where it cannot be imported
    (with the import's own message when something gymnasium needs is what is missing)."""
    try:
        import gymnasium
    except ImportError as exc:
        why = "" if exc.name == "gymnasium" else f" ({exc})"
        raise DatasetError(f"offline RL needs gymnasium{why}: {INSTALL_HINT}") from None
    return gymnasium
