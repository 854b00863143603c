"""Tasks: the data, loss and metrics of each benchmark. Importing ``tasks`` registers them all."""

from . import language, rl, rl_minari, speech, vision  # noqa: F401
from . import speech_data  # noqa: F401  (speech_commands, audio_folder)
from .base import (KINDS, Budget, ClassificationTask, DatasetError, DatasetNotFoundError, Task, TensorBatches, create_task,
                   get_task_class, list_domains, list_tasks, register_task)

__all__ = ["KINDS", "Budget", "ClassificationTask", "DatasetError", "DatasetNotFoundError", "Task", "TensorBatches",
           "create_task", "get_task_class", "list_domains", "list_tasks", "register_task"]
