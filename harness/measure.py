"""Probes that a cell makes on a copy of its model before training: the FLOPs of a training step
and whether a step leaves parameters without a gradient. Neither touches the model nor moves a
random stream of the cell."""

from __future__ import annotations

import contextlib
import copy
import sys
from typing import Callable, ContextManager

import torch
from torch import nn

from tasks.base import Batch, Task

from .devices import to_device

FlopCorrection = Callable[[nn.Module], ContextManager[Callable[[], int]]]


def probe_batch(task: Task, batch_size: int, device: torch.device) -> Batch:
    """A training batch drawn from its own generator, so that no random stream of the cell moves."""
    return to_device(next(iter(task.train_batches(batch_size, torch.Generator().manual_seed(0)))), device)


@contextlib.contextmanager
def _nothing_extra(model: nn.Module):
    yield lambda: 0


def _devices(device: torch.device) -> list[torch.device]:
    return [device] if device.type == "cuda" else []


def measure_flops(task: Task, model: nn.Module, batch_size: int, device: torch.device,
                  extra: FlopCorrection | None = None) -> tuple[float | None, float | None]:
    """(forward FLOPs, training-step FLOPs) per sample of ``task.loss`` on a training batch, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` plus the model's own correction ``extra`` (its
    ``register_model(extra_flops=...)``, e.g. the LSTM recurrences the counter does not see; a
    backward pass costs twice its forward), on a copy of the model, so that neither the model
    (BatchNorm statistics) nor any random stream is touched. (None, None), with a warning, where
    counting fails: it never stops a cell."""
    from torch.utils.flop_counter import FlopCounterMode
    counts = []
    try:
        with torch.random.fork_rng(devices=_devices(device)):
            batch = probe_batch(task, batch_size, device)
            probe = copy.deepcopy(model)
            n = len(batch[0])
            for train in (False, True):
                probe.train(train)
                with (extra or _nothing_extra)(probe) as extra_forward, FlopCounterMode(display=False) as counter:
                    if train:
                        task.loss(probe, batch).backward()
                    else:
                        with torch.no_grad():
                            task.loss(probe, batch)
                counts.append((counter.get_total_flops() + extra_forward() * (3 if train else 1)) / n)
    except Exception as e:  # noqa: BLE001 - a cost column is not worth a failed cell
        print(f"warning: FLOPs of {task.name} not counted ({type(e).__name__}: {e})", file=sys.stderr)
        return None, None
    return counts[0], counts[1]


def has_unused_parameters(task: Task, model: nn.Module, batch_size: int, device: torch.device) -> bool:
    """Whether a training step of ``task.loss`` leaves a parameter without a gradient (e.g. the
    Decision Transformer's return and state heads): DDP must then look for them at every step, which
    costs a walk of the autograd graph, so it is asked to only where needed. Probed on a copy."""
    with torch.random.fork_rng(devices=_devices(device)):
        batch = probe_batch(task, batch_size, device)
        probe = copy.deepcopy(model).train()
        task.loss(probe, batch).backward()
    return any(p.requires_grad and p.grad is None for p in probe.parameters())
