"""One cell on several processes with DistributedDataParallel (``torchrun ... -m harness run ... --ddp``).

The processes that train a cell together form a :class:`Group`; a cell without one runs in a group of
one, where every method below is free (no collective, no copy), so the training loop has one shape.

How a cell is split (DDP as in PyTorch's own ImageNet and torchvision reference scripts):

- every rank builds the model from the cell's seed (DDP also broadcasts rank 0's weights), then reseeds
  torch's global stream with ``seed + rank``: dropout and augmentation differ per rank;
- every rank draws the same shuffled order (the shuffle generator keeps the cell's seed) and cuts it
  into micro-batches of ``batch_size / world``; each round of ``world`` micro-batches is one global
  batch, of which rank r trains on the r-th, its loss weighted by its share of the round. So W processes
  take the steps of a one-process run with the same ``--batch-size`` (an epoch's last, incomplete round
  is dropped: every rank must step);
- the training loss is averaged over ranks; validation and test run on rank 0 alone, on the unwrapped
  model, and rank 0 shares the result, so every metric is exact (WER is a ratio of sums, not a mean);
- only rank 0 writes records, leaderboards and the report; each rank checkpoints its own random streams
  next to the cell's checkpoint (``.rank<r>``), when rank 0 says so.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Iterable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")
Batch = tuple[torch.Tensor, ...]
STOP_POLL_STEPS = 20  # a multi-process cell agrees on a stop request every this many steps


class Group:
    """This process's place among the ``world`` processes that train one cell."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def device(self, device_type: str) -> torch.device:
        return torch.device(device_type, self.local_rank) if device_type == "cuda" else torch.device(device_type)

    def shard(self, batches: Iterable[Batch]) -> Iterator[tuple[Batch, float]]:
        """(this rank's micro-batch of each complete round of ``world`` micro-batches, its loss weight).
        DDP averages the ranks' gradients; weighting each rank's mean loss by ``world * n_rank / n_round``
        makes that average the gradient of the mean loss over the whole round, as in one process, also
        for an epoch's last, smaller batch (e.g. 41 examples split 32 + 9)."""
        if not self.distributed:
            yield from ((batch, 1.0) for batch in batches)
            return
        round_: list[Batch] = []
        for batch in batches:
            round_.append(batch)
            if len(round_) == self.world:
                sizes = [len(b[0]) for b in round_]
                yield round_[self.rank], self.world * sizes[self.rank] / sum(sizes)
                round_ = []

    def wrap(self, model: nn.Module, find_unused: bool = False) -> nn.Module:
        """DDP around ``model`` (``find_unused``: some parameters get no gradient in a training step)."""
        if not self.distributed:
            return model
        return DistributedDataParallel(model, device_ids=[self.local_rank] if next(model.parameters()).is_cuda else None,
                    find_unused_parameters=find_unused)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def total(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(t)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        if not self.distributed:
            return flag
        t = torch.tensor([int(flag)], device=self._collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def share(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


SINGLE = Group()


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init(device_type: str) -> Group:
    """Join the process group that torchrun describes in the environment: NCCL on CUDA, gloo on CPU."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # an hour for a collective: rank 0 may be downloading or generating a dataset while the others wait
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timedelta(hours=1))
    return Group(rank, world, local_rank)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
