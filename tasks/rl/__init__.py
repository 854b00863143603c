"""Offline reinforcement learning: tasks on gymnasium datasets (``tasks``) made by the behaviour
``controllers`` in the ``dataset`` format, and on Minari datasets (``minari``). Registering them needs
no gymnasium: the modules that do (``envs``, ``dataset``, ``wrappers``) are imported when a task is
used (``_gym``)."""

from .minari import MinariTask
from .tasks import OfflineRLTask

__all__ = ["MinariTask", "OfflineRLTask"]
