"""Where a cell's tensors live and how they are computed: the device, determinism, autocast, the
fast path (channels_last, data held on the accelerator) and peak memory."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

from tasks.base import Batch, Task

from .errors import UsageError


def resolve_device(name: str) -> str:
    """'auto' -> cuda where available, else cpu; 'cuda' without a device is a usage error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; accepted: auto, cpu")
    return name


def set_deterministic(on: bool) -> None:
    """PyTorch's reproducibility switches. Deterministic: deterministic kernels (erroring where none
    exists), cuDNN without autotuning, full fp32 matmuls; CUBLAS needs a fixed workspace for
    deterministic matmuls. Otherwise the fast defaults of timm and NVIDIA's recipes: cuDNN autotunes
    its convolutions (``cudnn.benchmark``) and fp32 matmuls and convolutions on CUDA use TF32 tensor
    cores (``tf32`` in the records says so; precision fp32 then means fp32 storage, TF32 products)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on
    torch.backends.cuda.matmul.allow_tf32 = not on
    torch.backends.cudnn.allow_tf32 = not on


def uses_tf32(device: torch.device, precision: str) -> bool:
    """Whether a cell's fp32 matmuls ran on TF32 tensor cores (CUDA, fp32, not deterministic)."""
    return device.type == "cuda" and precision == "fp32" and torch.backends.cuda.matmul.allow_tf32


def autocast(device: torch.device, precision: str):
    """bf16 or fp16 autocast on ``device``; fp32 runs as it is."""
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: Batch, device: torch.device, channels_last: bool = False, on_host: Iterable[int] = ()) -> Batch:
    """A batch on ``device`` (a no-op for tensors already there), copied without blocking, but for
    the positions ``on_host`` (the task's lengths, read there) and ``None``s; with ``channels_last``,
    image batches (float, 4-D) in NHWC, the layout the model's convolutions then run in."""
    keep = set(on_host)
    batch = tuple(t if t is None or i in keep else t.to(device, non_blocking=True) for i, t in enumerate(batch))
    if channels_last:
        batch = tuple(t.contiguous(memory_format=torch.channels_last)
                      if t is not None and t.dim() == 4 and t.is_floating_point() else t for t in batch)
    return batch


def on_device(batches: Iterable[Batch], device: torch.device, channels_last: bool = False,
              on_host: Iterable[int] = ()) -> Iterator[Batch]:
    keep = tuple(on_host)
    for batch in batches:
        yield to_device(batch, device, channels_last, keep)


def use_channels_last(model: nn.Module, device: torch.device, mode: str) -> bool:
    """NHWC for models with 2-D convolutions: cuDNN's tensor-core kernels want it (timm, torchvision's
    references and NVIDIA's guides train CNNs so); ``mode`` auto turns it on for CUDA only."""
    if mode == "off" or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    return mode == "on" or device.type == "cuda"


def hold_data(task: Task, device: torch.device, mode: str, channels_last: bool = False) -> bool:
    """Move the task's in-memory data to the accelerator (batches are then made there, no copy per
    step) where ``mode`` is on, or auto and the data takes at most a quarter of the free memory."""
    if mode == "off" or device.type == "cpu" or not task.held:
        return False
    if mode == "auto":
        if device.type != "cuda" or task.data_bytes() > torch.cuda.mem_get_info(device)[0] // 4:
            return False
    return task.hold_on(device, channels_last)


class PeakMemory:
    """Peak memory of a cell in MB: the CUDA allocator's peak, or on CPU the process's peak resident
    set since the cell started (Linux: VmHWM after resetting it through /proc/self/clear_refs;
    elsewhere the process's lifetime peak, ru_maxrss)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.per_cell = device.type == "cuda" or self._reset_rss_peak()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    @staticmethod
    def _reset_rss_peak() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS
            return True
        except OSError:
            return False

    def mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        if self.per_cell:
            status = Path("/proc/self/status").read_text().splitlines()
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024
