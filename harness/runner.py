"""Train and evaluate one (task, model, seed) cell under a budget, and describe how it went."""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tasks.base import Batch, Task
from zoo.core import attention_backend
from zoo.registry import create_model, get_model_entry

from .records import config_hash, environment


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a cell's result, apart from the task, the model and the seed."""

    size: str = "tiny"
    epochs: int | None = None  # None: the task's budget
    steps: int | None = None  # train for this many steps instead of epochs
    batch_size: int | None = None  # None: the task's budget
    lr: float | None = None  # None: the model's default
    weight_decay: float | None = None  # None: the model's default
    grad_clip: float = 1.0
    device: str = "cpu"
    backend: str = "sdpa"
    precision: str = "fp32"  # fp32, or bf16 autocast
    model_opts: tuple[tuple[str, Any], ...] = ()  # overrides of the size preset, e.g. (("depth", 6),)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return tuple(t.to(device, non_blocking=True) for t in batch)


def on_device(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    for batch in batches:
        yield to_device(batch, device)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and embeddings (dim >= 2), not biases or norm scales (nanoGPT's rule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def warmup_cosine(total_steps: int, warmup_frac: float):
    warmup = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(task: Task, model: nn.Module, split: str, batch_size: int, device: torch.device,
             precision: str) -> dict[str, float]:
    model.eval()
    with torch.no_grad(), _autocast(device, precision):
        return task.evaluate(model, on_device(task.eval_batches(split, batch_size), device))


def run_cell(task: Task, model_name: str, seed: int, config: RunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train ``model_name`` on ``task`` with ``seed`` and return the cell's record."""
    entry = get_model_entry(model_name)
    device = torch.device(config.device)
    budget = task.budget
    batch_size = config.batch_size or budget.batch_size
    lr = config.lr if config.lr is not None else entry.defaults.get("lr", 1e-3)
    weight_decay = config.weight_decay if config.weight_decay is not None else entry.defaults.get("weight_decay", 0.0)
    steps_per_epoch = task.steps_per_epoch(batch_size)
    if config.steps is not None:
        total_steps = config.steps
    elif config.epochs is not None:
        total_steps = config.epochs * steps_per_epoch
    elif budget.steps is not None:
        total_steps = budget.steps
    else:
        total_steps = (budget.epochs or 1) * steps_per_epoch
    resolved = {
        "task": task.name, "model": model_name, "size": config.size, "batch_size": batch_size,
        "total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "epochs": total_steps / steps_per_epoch,
        "optimizer": "AdamW", "lr": lr, "weight_decay": weight_decay, "schedule": "warmup_cosine",
        "warmup_frac": budget.warmup_frac, "grad_clip": config.grad_clip, "backend": config.backend,
        "precision": config.precision, "device": device.type, "task_options": task.opts,
        "model_options": dict(config.model_opts),
    }
    started = datetime.now(timezone.utc)
    seed_everything(seed)
    model = create_model(model_name, task.spec, size=config.size, **dict(config.model_opts)).to(device)
    task.prepare(model)
    param_count = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, budget.warmup_frac))
    generator = torch.Generator().manual_seed(seed)

    history: list[dict[str, Any]] = []
    train_time = 0.0
    samples = step = 0
    bar = tqdm(total=total_steps, desc=f"{task.name}/{model_name} seed {seed}", unit="step",
               disable=None if progress else True, leave=False, dynamic_ncols=True)
    with attention_backend(config.backend), bar:
        while step < total_steps:
            model.train()
            epoch_loss = torch.zeros((), device=device)
            epoch_steps = 0
            t0 = time.perf_counter()
            for batch in task.train_batches(batch_size, generator):
                batch = to_device(batch, device)
                with _autocast(device, config.precision):
                    loss = task.loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                epoch_loss += loss.detach()
                epoch_steps += 1
                samples += len(batch[0])
                step += 1
                bar.update()
                if step >= total_steps:
                    break
            if epoch_steps == 0:
                raise RuntimeError(f"task {task.name!r} yielded no training batch")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - t0
            train_loss = (epoch_loss / max(1, epoch_steps)).item()  # one host sync per epoch
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"{task.name}/{model_name} seed {seed}: training loss became {train_loss}")
            val = evaluate(task, model, "val", batch_size, device, config.precision)
            history.append({"step": step, "epoch": step / steps_per_epoch, "train_loss": train_loss,
                            **{f"val_{k}": v for k, v in val.items()}})
            bar.set_postfix(loss=f"{train_loss:.3f}", **{f"val_{task.metric}": f"{val[task.metric]:.4f}"})
        t0 = time.perf_counter()
        test: dict[str, float] = {}
        for i, split in enumerate(task.eval_splits):
            metrics = evaluate(task, model, split, batch_size, device, config.precision)
            test.update(metrics if i == 0 else {f"{split}_{k}": v for k, v in metrics.items()})
        eval_time = time.perf_counter() - t0
        model.eval()
        examples = task.examples(model, device, seed)

    return {
        "domain": task.domain, "task": task.name, "model": model_name, "family": entry.family,
        "size": config.size, "seed": seed, "status": "ok",
        "metric": task.metric, "metric_value": test[task.metric], "higher_is_better": task.higher_is_better,
        "checkpoint": "last", "test": test, "history": history, "examples": examples,
        "param_count": param_count, "train_time_s": train_time, "eval_time_s": eval_time,
        "train_samples": samples, "train_samples_per_sec": samples / train_time if train_time else float("nan"),
        "backend": config.backend, "precision": config.precision,
        "config": resolved, "config_hash": config_hash(resolved),
        **environment(device),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
