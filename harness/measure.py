"""Probes that a cell makes on a copy of its model before training: the FLOPs of a training step
and whether a step leaves parameters without a gradient. Neither touches the model nor moves a
random stream of the cell. Also the model FLOPs utilisation (MFU) of a measured throughput against
the GPU's dense bf16 peak (:func:`bf16_peak`, :func:`mfu`), shared by the cell records and the bench."""

from __future__ import annotations

import contextlib
import copy
import math
import re
import sys
from typing import Callable, ContextManager

import torch
from torch import nn

from tasks.base import Batch, Task

from .devices import to_device

FlopCorrection = Callable[[nn.Module], ContextManager[Callable[[], int]]]


def probe_batch(task: Task, batch_size: int, device: torch.device) -> Batch:
    """A training batch drawn from its own generator, so that no random stream of the cell moves."""
    return to_device(next(iter(task.train_batches(batch_size, torch.Generator().manual_seed(0)))), device,
                     on_host=task.on_host)


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


# ------------------------------------------------------------------------------------ MFU

# Dense (no 2:4 sparsity) bf16 Tensor Core peak FLOP/s, fp32 accumulate, of GPUs we may meet, keyed by a
# pattern of the name torch.cuda.get_device_name reports. Datasheets give "with sparsity" figures beside
# the dense ones; those are twice these. The first pattern that matches wins, so the more specific come
# first, and word boundaries keep "L4" off "L40S", "A10" off "A100" and "H200" off "GH200".
BF16_PEAK: tuple[tuple[str, float], ...] = (
    # NVIDIA GH200 Grace Hopper Superchip datasheet: FP16/BF16 1,979 TFLOPS with sparsity ("NVIDIA GH200 480GB")
    (r"\bGH200\b", 989e12),
    # NVIDIA H200 datasheet: BF16 1,979 TFLOPS (H200 SXM) and 1,671 TFLOPS (H200 NVL), with sparsity
    (r"\bH200\b.*\bNVL\b", 835e12),
    (r"\bH200\b", 989e12),
    # NVIDIA H100 datasheet: BF16 1,979 (SXM), 1,671 (NVL) and 1,513 (PCIe) TFLOPS with sparsity. The SXM
    # card reports "NVIDIA H100 80GB HBM3"; an H100 named neither way gets no peak rather than a guess.
    (r"\bH100\b.*\bNVL\b", 835e12),
    (r"\bH100\b.*\bPCIe\b", 756e12),
    (r"\bH100\b.*(\bSXM|\bHBM3)", 989e12),
    # NVIDIA GB200 NVL72 datasheet: FP16/BF16 360 PFLOPS with sparsity for 72 GPUs (5 PFLOPS each)
    (r"\bGB200\b", 2500e12),
    # NVIDIA HGX B200 datasheet: FP16/BF16 36 PFLOPS with sparsity for 8 GPUs (4.5 PFLOPS each)
    (r"\bB200\b", 2250e12),
    # NVIDIA A100 datasheet: BF16 312 TFLOPS (624 with sparsity), SXM4 and PCIe, 40 and 80 GB alike
    (r"\bA100\b", 312e12),
    # A10G (AWS G5): no NVIDIA datasheet; 70 TFLOPS dense bf16, as in Baseten's "NVIDIA A10 vs A10G" spec
    # comparison (the A10G trades tensor throughput for CUDA-core throughput against the A10)
    (r"\bA10G\b", 70e12),
    # NVIDIA A10 datasheet: BF16 125 TFLOPS (250 with sparsity)
    (r"\bA10\b", 125e12),
    # NVIDIA L40S datasheet: BF16 362.05 TFLOPS (733 with sparsity); L40 datasheet: 181.05 (362.1)
    (r"\bL40S\b", 362.05e12),
    (r"\bL40\b", 181.05e12),
    # NVIDIA L4 datasheet: BF16 242 TFLOPS with sparsity
    (r"\bL4\b", 121e12),
    # NVIDIA Ada Lovelace architecture whitepaper (appendix): RTX 4090 peak BF16 Tensor TFLOPS with FP32
    # accumulate 165.2 (330.4 with sparsity); not the 4090 D or the laptop part (other chips)
    (r"\bRTX 4090$", 165.2e12),
    # NVIDIA Ampere GA102 whitepaper (appendix): RTX 3090 peak BF16 Tensor TFLOPS with FP32 accumulate 71
    # (142 with sparsity); not the 3090 Ti
    (r"\bRTX 3090$", 71e12),
    # (Volta, V100, has no bf16 Tensor Cores: no bf16 peak, so no MFU.)
)


def bf16_peak(device_name: str) -> float | None:
    """The dense bf16 Tensor Core peak FLOP/s of the GPU named ``device_name`` (as
    ``torch.cuda.get_device_name`` reports it), or None for a GPU not in :data:`BF16_PEAK` and for a MIG
    slice (a fraction of the GPU): no peak rather than a wrong one."""
    name = device_name.strip()
    if re.search(r"\bMIG\b", name):
        return None
    return next((peak for pattern, peak in BF16_PEAK if re.search(pattern, name, re.IGNORECASE)), None)


def mfu(train_flops_per_sample: float | None, train_samples_per_sec: float | None, device_name: str, *,
        device: str = "cuda", num_gpus: int = 1) -> float:
    """Model FLOPs utilisation: counted training FLOPs per second over the dense bf16 peak of
    ``num_gpus`` GPUs named ``device_name`` (``train_samples_per_sec`` is the throughput of all of them
    together). NaN off CUDA, for a GPU without a known peak, or when either measurement is missing."""
    peak = bf16_peak(device_name) if device == "cuda" else None
    if peak is None or train_flops_per_sample is None or train_samples_per_sec is None or num_gpus < 1:
        return float("nan")
    value = float(train_flops_per_sample) * float(train_samples_per_sec) / (peak * num_gpus)
    return value if math.isfinite(value) and value >= 0 else float("nan")
