"""What decides a cell's numbers: the run's settings (:class:`RunConfig`) and, with the task and the
model, the cell's full configuration (:func:`resolve`), which its config hash covers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.base import Task
from zoo.registry import ModelEntry

from .code import fingerprint


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a cell's result, apart from the task, the model and the seed."""

    size: str = "tiny"
    epochs: int | None = None  # None: the task's budget
    steps: int | None = None  # train for this many steps instead of epochs
    batch_size: int | None = None  # None: the task's budget
    lr: float | None = None  # None: the model's default
    weight_decay: float | None = None  # None: the model's default
    warmup_frac: float | None = None  # None: the task's budget (share of the steps with a linear warm-up)
    grad_clip: float | None = None  # None: the model's (at its size), else 1.0
    device: str = "cpu"
    backend: str = "sdpa"
    precision: str = "fp32"  # fp32, bf16 autocast, or fp16 autocast with a gradient scaler
    compile: bool = False  # torch.compile the model for training and evaluation
    model_opts: tuple[tuple[str, Any], ...] = ()  # overrides of the size preset, e.g. (("depth", 6),)
    accumulation: int = 1  # micro-batches per optimizer step (batch_size / accumulation each): same updates
    deterministic: bool = False  # torch.use_deterministic_algorithms + cuDNN determinism
    params_target: int | None = None  # --params: model_opts then hold the width fitted to it
    fitted: tuple[tuple[str, Any], ...] = ()  # the config keys --params set (also in model_opts)
    world_size: int = 1  # processes training the cell together (DDP under torchrun); batch_size is global
    train_fraction: float = 1.0  # the nested, stratified share of the training split (Task.load)
    tuning: str = "default"  # how lr, weight decay, warm-up and dropout were chosen: 'default', or 'tpe-8' (harness.tune)
    # the fast path (layout and placement only; the arithmetic is the same, so not in the config hash):
    channels_last: str = "auto"  # CNN weights and image batches in NHWC; auto: on CUDA, for models with a Conv2d
    data_on_device: str = "auto"  # hold the task's in-memory data on the accelerator; auto: on CUDA, if it fits

    @property
    def label(self) -> str:
        """The size as records and leaderboards name it: 'tiny', 'tiny@250k' with --params 250k, and
        'tiny_f0.3' (or 'tiny@250k_f0.3') with --train-fraction 0.3."""
        fraction = f"_f{self.train_fraction:g}" if self.train_fraction < 1 else ""
        if not self.params_target:
            return self.size + fraction
        n = self.params_target
        for unit, scale in (("G", 10 ** 9), ("M", 10 ** 6), ("k", 10 ** 3)):
            if n >= scale:
                return f"{self.size}@{n / scale:.4g}{unit}{fraction}"
        return f"{self.size}@{n}{fraction}"


def total_steps(task: Task, config: RunConfig, batch_size: int) -> int:
    """--steps, else --epochs, else the task's budget (in steps or epochs)."""
    if config.steps is not None:
        return config.steps
    if config.epochs is not None:
        return config.epochs * task.steps_per_epoch(batch_size)
    if task.budget.steps is not None:
        return task.budget.steps
    return (task.budget.epochs or 1) * task.steps_per_epoch(batch_size)


def resolve(task: Task, entry: ModelEntry, config: RunConfig) -> dict[str, Any]:
    """The cell's full configuration (what its ``config_hash`` covers), before anything trains. It
    includes the task's data fingerprint (``Task.fingerprint``, after ``setup``) and the code that
    computes the cell (``harness.code.fingerprint``: the model's, the task's and the training loop's
    modules), so that a cell run on other data or by other code is another cell, never "already done"."""
    batch_size = config.batch_size or task.budget.batch_size
    defaults = entry.training_defaults(config.size)  # the model's, at this size
    steps_per_epoch = task.steps_per_epoch(batch_size)
    steps = total_steps(task, config, batch_size)
    return {
        "task": task.name, "model": entry.name, "size": config.label, "batch_size": batch_size,
        "total_steps": steps, "steps_per_epoch": steps_per_epoch, "epochs": steps / steps_per_epoch,
        "optimizer": "AdamW", "lr": config.lr if config.lr is not None else defaults.get("lr", 1e-3),
        "weight_decay": config.weight_decay if config.weight_decay is not None
        else defaults.get("weight_decay", 0.0),
        "schedule": defaults.get("schedule", "warmup_cosine"),
        "grad_clip": config.grad_clip if config.grad_clip is not None else defaults.get("grad_clip", 1.0),
        "warmup_frac": config.warmup_frac if config.warmup_frac is not None
        else defaults.get("warmup_frac", task.budget.warmup_frac),
        "backend": config.backend, "precision": config.precision, "device": config.device,
        "task_options": task.opts, "data": task.fingerprint(), "model_options": dict(config.model_opts),
        "code": fingerprint(entry.factory.__module__, type(task).__module__),
        **({"deterministic": True} if config.deterministic else {}),
        **({"compile": True} if config.compile else {}),
        **({"params_target": config.params_target, "fitted": dict(config.fitted)} if config.params_target else {}),
        **({"world_size": config.world_size, "distributed": "DDP"} if config.world_size > 1 else {}),
        **({"tuning": config.tuning} if config.tuning != "default" else {}),
    }
