"""Loading ``--plugin`` modules: any failure is bad input that names the plugin, never a traceback."""

from __future__ import annotations

import traceback
from pathlib import Path

from zoo.registry import RegistryError, load_plugin

from .errors import UsageError


def _where(e: BaseException) -> str:
    """' (at file.py:3)': where the plugin failed, for the one-line message."""
    if isinstance(e, SyntaxError) and e.filename:
        return f" (at {Path(e.filename).name}:{e.lineno})"
    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
    return f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""


def load_plugins(modules: list[str]) -> None:
    """Import each module so that the models it registers can run. A missing module, one that raises
    or has a syntax error, imports a missing package, or calls ``sys.exit`` is a one-line UsageError."""
    for module in modules:
        try:
            load_plugin(module)
        except RegistryError:
            raise
        except SystemExit as e:
            raise UsageError(f"plugin {module!r} called sys.exit({e.code!r}) while it was imported") from None
        except Exception as e:  # noqa: BLE001 - whatever a plugin raises is the user's to fix
            message = " ".join(f"{type(e).__name__}: {e}".split())
            raise UsageError(f"plugin {module!r} failed to import: {message}{_where(e)}") from None
