"""Tasks: the data, loss and metrics of each benchmark, one subpackage per domain (``vision``,
``language``, ``rl``, ``speech``) with its data makers. Importing ``tasks`` registers them all."""

from . import language, rl, speech, vision  # noqa: F401
from .base import (KINDS, Budget, ClassificationTask, DatasetError, DatasetNotFoundError, Option, Task, TaskReport,
                   TensorBatches, create_task, files_fingerprint, get_task_class, list_domains, list_tasks,
                   register_task)

__all__ = ["KINDS", "Budget", "ClassificationTask", "DatasetError", "DatasetNotFoundError", "Option", "Task",
           "TaskReport", "TensorBatches", "create_task", "files_fingerprint", "get_task_class", "list_domains",
           "list_tasks", "register_task"]
