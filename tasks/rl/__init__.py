"""Offline reinforcement learning: tasks on gymnasium datasets (``tasks``) made by the behaviour
``controllers`` in the ``dataset`` format, and on Minari datasets (``minari``)."""

from .minari import MinariTask
from .tasks import OfflineRLTask

__all__ = ["MinariTask", "OfflineRLTask"]
