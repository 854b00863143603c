"""What a model is timed against by ``python -m harness bench``: its reference implementation.

A model declares ``register_model(..., reference=fn)``; ``fn(device)`` builds a :class:`Reference`:
ours and theirs with the same configuration (and, where a converter exists, the same weights), one
batch of inputs on ``device``, and how to run a model on it. ``fn`` raises ImportError when a
package the reference needs is not installed; optional extra references that are missing are noted
in ``skipped`` instead. The caller seeds the random number generators (the bench: ``torch.manual_seed(0)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import Tensor, nn


@dataclass
class Reference:
    """``ours`` and ``theirs`` (label -> model, e.g. {"torchvision": ...}); ``inputs()`` one batch (a
    tuple), ``forward(model, inputs)`` the tensor a loss reads; ``batch_size`` and ``input_size`` (text,
    e.g. "3x32x32") describe the batch; ``skipped``: notes on optional references not built here."""

    ours: nn.Module
    theirs: dict[str, nn.Module]
    inputs: Callable[[], tuple]
    forward: Callable[[nn.Module, tuple], Tensor]
    batch_size: int
    input_size: str
    skipped: list[str] = field(default_factory=list)


def call(model: nn.Module, inputs: tuple) -> Tensor:
    """The plain ``forward`` of a reference: ``model(*inputs)``."""
    return model(*inputs)
