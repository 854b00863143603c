"""Tasks: the data, loss and metrics of each benchmark. Importing ``tasks`` registers them all."""

from . import language, rl, rl_minari, speech, speech_data, vision  # noqa: F401
from .base import (KINDS, Budget, ClassificationTask, DatasetError, DatasetNotFoundError, Task, TensorBatches, create_task,
                   get_task_class, list_domains, list_tasks, register_task)

__all__ = ["KINDS", "Budget", "ClassificationTask", "DatasetError", "DatasetNotFoundError", "Task", "TensorBatches",
           "create_task", "get_task_class", "list_domains", "list_tasks", "register_task"]
