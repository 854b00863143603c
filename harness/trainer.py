"""Train and evaluate one (task, model, seed) cell under a budget, and describe how it went.

A cell runs as small steps (:class:`CellTrainer`): set up the model and optimiser, restore a
checkpoint, train an epoch, validate, test, write the record. :func:`run_cell` strings them
together; :func:`attempt_cell` turns a failure into a 'failed' record.
"""

from __future__ import annotations

import math
import random
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tasks.base import ItemLog, Task
from zoo.core import attention_backend
from zoo.registry import ModelEntry, get_model_entry

from .config import RunConfig, resolve
from .devices import PeakMemory, autocast, hold_data, on_device, to_device, use_channels_last, uses_tf32
from .distributed import SINGLE, STOP_POLL_STEPS, Group
from .measure import has_unused_parameters, measure_flops, mfu
from .records import atomic_save, config_hash, device_name, environment, set_aside
from .schema import Record
from .stopping import StopRequested, stop_requested


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class TrainingStep(nn.Module):
    """A training step as one module: ``forward(batch)`` is the task's loss on the model. DDP wraps
    this, so whatever the task calls on the model (its forward, or a TD learner's ``td_loss``) runs
    inside DDP's forward and its gradients are synchronised; the task only ever sees the model."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, batch: Any) -> Tensor:
        return self.task.loss(self.model, batch)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and embeddings (dim >= 2), not biases or norm scales (nanoGPT's rule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


SCHEDULES = ("warmup_cosine", "warmup_constant")


def lr_factor(total_steps: int, warmup_frac: float, schedule: str = "warmup_cosine"):
    """The learning rate's factor by step: a linear warm-up over ``warmup_frac`` of the steps, then a
    cosine decay to 0 (``warmup_cosine``, the harness's recipe), or the rate held constant
    (``warmup_constant``: the official Decision Transformer's LambdaLR, min((t + 1) / warmup, 1))."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; accepted: {', '.join(SCHEDULES)}")
    warmup = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "warmup_constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def evaluate(task: Task, model: nn.Module, split: str, batch_size: int, device: torch.device,
             precision: str, channels_last: bool = False, items: ItemLog | None = None) -> dict[str, float]:
    model.eval()
    with torch.no_grad(), autocast(device, precision):
        batches = on_device(task.eval_batches(split, batch_size), device, channels_last, task.on_host)
        return task.evaluate(model, batches) if items is None else task.evaluate(model, batches, items)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    cuda = {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() and torch.cuda.is_initialized() else {}
    return {"torch": torch.get_rng_state(), "generator": generator.get_state(), "python": random.getstate(),
            "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]), **cuda}


def _set_global_rng(state: dict[str, Any]) -> None:
    """torch's (CPU and CUDA), Python's and NumPy's global streams as ``_rng_state`` saved them."""
    torch.set_rng_state(state["torch"].cpu())  # (a checkpoint loaded onto a GPU brings them there)
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy(), *rest))


def _checkpoint_problem(e: BaseException) -> str:
    """Why a checkpoint could not be restored, in one line: torch's own words without its advice to
    load with ``weights_only=False`` (which would run whatever code the file holds: never here)."""
    text = str(e).strip()
    if "WeightsUnpickler error:" in text:  # torch's safe loader: keep what it could not read
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


@dataclass
class TrainState:
    """How far a cell got: with the model, optimiser, schedule, scaler and random streams, what its
    checkpoint holds (saved as this dataclass's fields beside those)."""

    history: list[dict[str, Any]] = field(default_factory=list)  # one row per validation
    train_time: float = 0.0
    samples: int = 0
    step: int = 0
    time_to_target: float | None = None
    # the first step on CUDA or under --compile (compilation, cuDNN autotuning, lazy kernel loading),
    # timed apart from train_time, and the samples it saw, left out of the throughput
    warmup_time: float = 0.0
    warmup_samples: int = 0
    # where a stop in mid-epoch left the epoch, so that the resumed cell sees the same samples in the
    # same order: the shuffle generator's state when the epoch began, the micro-batches trained since,
    # the epoch's loss sum and steps so far, and the first step whose loss was not finite (-1: none)
    epoch_rng: torch.Tensor | None = None
    epoch_micro: int = 0
    epoch_loss: torch.Tensor | None = None
    epoch_steps: int = 0
    first_bad_step: torch.Tensor | None = None


class CellTrainer:
    """One cell as small steps. With a ``checkpoint`` path its state is saved at an epoch's end once
    ``checkpoint_every_s`` have passed, and when a stop is requested; with a ``group`` of several
    processes they train together with DistributedDataParallel (rank 0 validates, tests, records)."""

    def __init__(self, task: Task, entry: ModelEntry, seed: int, config: RunConfig, *, group: Group = SINGLE,
                 checkpoint: Path | None = None, checkpoint_every_s: float = 300.0) -> None:
        self.task, self.entry, self.seed, self.config, self.group = task, entry, seed, config, group
        self.device = group.device(torch.device(config.device).type)
        self.resolved = resolve(task, entry, config)
        self.chash = config_hash(self.resolved)
        self.batch_size, self.total_steps = self.resolved["batch_size"], self.resolved["total_steps"]
        rank_batch = self.batch_size // group.world  # the global batch is split over the processes
        self.accumulation = max(1, min(config.accumulation, rank_batch))
        self.micro_batch = rank_batch // self.accumulation
        if group.distributed and checkpoint is not None:
            checkpoint = checkpoint.with_name(f"{checkpoint.name}.rank{group.rank}")
        self.checkpoint, self.checkpoint_every_s = checkpoint, checkpoint_every_s
        self.state = TrainState()
        self.observe: Callable[[dict[str, Any]], None] | None = None  # sees each validation row (harness.trial)
        self.resumed_from: int | None = None
        self.resume_rng: dict[str, Any] | None = None  # the global streams to set once a mid-epoch resume caught up
        self.save_failed = False  # a checkpoint that could not be written is warned about once
        self.name = f"{task.name}/{entry.name} seed {seed}"
        # warm-up is not training: on CUDA (autotuning, lazy loading) and under --compile the first
        # step is timed apart (warmup_time_s); on the CPU it is an ordinary step
        self.warm_up_apart = config.compile or self.device.type == "cuda"

    # ---------------------------------------------------------------------------------- set up

    def setup(self) -> None:
        """The model (seeded), its cost probes, the fast path, the optimiser, schedule and scaler."""
        task, config, device, group = self.task, self.config, self.device, self.group
        self.started = datetime.now(timezone.utc)
        seed_everything(self.seed)
        model = self.entry.create(task.spec, size=config.size, **dict(config.model_opts)).to(device)
        if group.distributed:
            torch.manual_seed(self.seed + group.rank)  # the same weights, then dropout/augmentation streams per rank
        task.check_model(model, self.entry.name)  # what the task's kind needs of it, declared (one line)
        task.prepare(model)
        self.param_count = sum(p.numel() for p in model.parameters())
        self.channels_last = use_channels_last(model, device, config.channels_last)
        self.data_held = hold_data(task, device, config.data_on_device, self.channels_last)
        self.flops = measure_flops(task, model, min(self.micro_batch, 16), device, self.entry.extra_flops)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.net = torch.compile(model) if config.compile else model  # evaluates; `model` holds the weights
        unused = group.distributed and has_unused_parameters(task, model, self.micro_batch, device)
        self.train_net = group.wrap(TrainingStep(self.net, task), find_unused=unused)
        weight_decay = self.resolved["weight_decay"]
        self.optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=self.resolved["lr"],
                                           fused=device.type == "cuda")
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")  # fp16 loss scaling
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(self.total_steps, self.resolved["warmup_frac"], self.resolved["schedule"]))
        self.generator = torch.Generator().manual_seed(self.seed)  # the same shuffle on every rank
        self.memory = PeakMemory(device)

    def restore(self) -> bool:
        """Continue from the checkpoint, where there is one. One that cannot be restored (unreadable,
        made by another configuration, or not fitting the model) is set aside as ``*.unusable`` with a
        warning; False then says that the model may be half-loaded and the cell must start afresh."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return True
        try:
            saved = torch.load(self.checkpoint, map_location=self.device, weights_only=True)
            if saved.get("config_hash") != self.chash:
                raise ValueError("it was made by another configuration")
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            self.scaler.load_state_dict(saved["scaler"])
            self.generator.set_state(saved["rng"]["generator"].cpu())
            _set_global_rng(saved["rng"])
            self.state = TrainState(**{k: saved[k] for k in asdict(TrainState()) if k in saved})
        except Exception as e:  # noqa: BLE001 - a checkpoint that cannot be used is set aside, never fatal
            set_aside(self.checkpoint, f"checkpoint {self.checkpoint} cannot be restored ({_checkpoint_problem(e)})",
                      "the cell starts afresh")
            return False
        self.resumed_from = self.state.step
        self.resume_rng = saved["rng"] if self.state.epoch_rng is not None else None
        return True

    def save(self) -> None:
        """Checkpoint the cell. A write that fails (a full disk, a read-only folder) never fails the cell:
        one warning, and it trains on without a checkpoint (an interruption would restart it)."""
        if self.checkpoint is None:
            return
        try:
            atomic_save(self.checkpoint, {"config_hash": self.chash, "model": self.model.state_dict(),
                                          "optimizer": self.optimizer.state_dict(),
                                          "scheduler": self.scheduler.state_dict(),
                                          "scaler": self.scaler.state_dict(), "rng": _rng_state(self.generator),
                                          **asdict(self.state)})
        except OSError as e:
            if not self.save_failed:
                print(f"warning: cannot write the checkpoint {self.checkpoint} ({e.strerror or e}); {self.name} "
                      f"trains on without one", file=sys.stderr)
            self.save_failed = True

    # ---------------------------------------------------------------------------------- train

    def _stop_now(self) -> bool:
        """Whether to stop before the next step: at once in one process; processes training together
        agree every ``STOP_POLL_STEPS`` steps (one tiny collective), so that they stop at the same step."""
        if not self.group.distributed:
            return stop_requested()
        return self.state.step % STOP_POLL_STEPS == 0 and self.group.any(stop_requested())

    def _optimizer_step(self) -> None:
        if self.resolved["grad_clip"]:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.resolved["grad_clip"])
        self.scaler.step(self.optimizer)  # skipped (and the scale lowered) where fp16 gradients overflowed
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _epoch_batches(self) -> Iterator[tuple[Any, float]]:
        """This epoch's training batches. A new epoch notes the shuffle generator's state first; a cell
        resumed in mid-epoch draws the epoch again from the state it began with, passes over the
        micro-batches it trained before it stopped (so the same samples come next, in the same order),
        and then sets the global random streams (dropout, augmentation) to where they were at the stop."""
        state = self.state
        resumed = state.epoch_rng is not None  # a checkpoint taken in mid-epoch
        if resumed:
            self.generator.set_state(state.epoch_rng.cpu())
        else:
            state.epoch_rng, state.epoch_micro, state.epoch_steps = self.generator.get_state(), 0, 0
            state.epoch_loss = torch.zeros((), device=self.device)
            state.first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        batches = iter(self.group.shard(self.task.train_batches(self.micro_batch, self.generator)))
        if resumed:
            for _ in range(state.epoch_micro):
                next(batches, None)
            if self.resume_rng is not None:
                _set_global_rng(self.resume_rng)
                self.resume_rng = None
        return batches

    def _train_micro_batch(self, batch: Any, weight: float) -> None:
        """Forward and backward of one micro-batch; its loss joins the epoch's sum on the device, and the
        first step whose loss is not finite is noted there too (no host sync: read at the epoch's end)."""
        state = self.state
        batch = to_device(batch, self.device, self.channels_last, self.task.on_host)
        with autocast(self.device, self.config.precision):
            loss = self.train_net(batch) * weight  # weight 1.0 but in DDP (harness.distributed)
        self.scaler.scale(loss / self.accumulation).backward()
        loss = loss.detach()
        state.epoch_loss += loss / self.accumulation
        bad = ~torch.isfinite(loss) & (state.first_bad_step < 0)
        state.first_bad_step = torch.where(bad, state.step + 1, state.first_bad_step)
        state.samples += len(batch[0])
        state.epoch_micro += 1

    def train_epoch(self, bar: tqdm) -> float:
        """One pass over the training data (or what is left of the budget): its mean training loss.
        A stop request in mid-epoch saves the checkpoint (with the position in the epoch) and raises
        :class:`StopRequested` (one at the epoch's end waits for its validation)."""
        state, accumulation = self.state, self.accumulation
        self.model.train()
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        stopped, batches = False, self._epoch_batches()
        while True:
            if state.epoch_micro % accumulation == 0 and self._stop_now():  # before the next batch is drawn
                stopped = True
                break
            drawn = next(batches, None)
            if drawn is None:
                break
            self._train_micro_batch(*drawn)
            if state.epoch_micro % accumulation:
                continue
            self._optimizer_step()
            state.epoch_steps += 1
            state.step += 1
            bar.update()
            if state.step == 1 and self.warm_up_apart:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                state.warmup_time, state.warmup_samples = time.perf_counter() - t0, state.samples
                t0 = time.perf_counter()
            if state.step >= self.total_steps:
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        state.train_time += time.perf_counter() - t0
        if stopped:
            self.save()
            raise StopRequested(f"{self.name} stopped at step {state.step}")
        if state.epoch_steps == 0:
            raise RuntimeError(f"task {self.task.name!r} yielded no training batch")
        loss = self.epoch_mean_loss(state.epoch_loss, state.epoch_steps)
        state.epoch_rng, state.epoch_micro, state.epoch_loss, state.first_bad_step = None, 0, None, None
        return loss

    def epoch_mean_loss(self, epoch_loss: torch.Tensor, steps: int) -> float:
        """The epoch's mean training loss (over the processes training together): the one host sync
        of an epoch; the steps themselves never wait for the device (tests/test_host_syncs.py). A loss
        that is not finite names the step where it first was (noted on the device, read only then)."""
        train_loss = self.group.mean(epoch_loss / max(1, steps)).item()
        if not math.isfinite(train_loss):
            first = int(self.state.first_bad_step.item()) if self.state.first_bad_step is not None else -1
            where = f"at step {first}" if first > 0 else f"in the epoch that ended at step {self.state.step}"
            raise TrainingDiverged(f"training loss became {train_loss} {where}")
        return train_loss

    def end_epoch(self, train_loss: float, bar: tqdm) -> None:
        """Validate (rank 0, shared), extend the curve, and checkpoint: on a stop request (then raise
        :class:`StopRequested`) or once ``checkpoint_every_s`` have passed."""
        task, state, group = self.task, self.state, self.group
        val = evaluate(task, self.net, "val", self.batch_size, self.device, self.config.precision,
                       self.channels_last) if group.is_main else None
        save_now = state.step < self.total_steps and time.monotonic() - self.last_save >= self.checkpoint_every_s
        val, save_now = group.share((val, save_now))  # rank 0's metrics and decision, on every rank
        state.history.append({"step": state.step, "epoch": state.step / self.resolved["steps_per_epoch"],
                              "train_loss": train_loss, "train_time_s": state.train_time,
                              **{f"val_{k}": v for k, v in val.items()}})
        if state.time_to_target is None and task.target is not None and self._reached(val[task.metric]):
            state.time_to_target = state.train_time
        bar.set_postfix(loss=f"{train_loss:.3f}", **{f"val_{task.metric}": f"{val[task.metric]:.4f}"})
        if self.observe is not None:  # a tuning trial reports the curve, and may stop here (pruned)
            self.observe(state.history[-1])
        if state.step < self.total_steps and group.any(stop_requested()):
            self.save()
            raise StopRequested(f"{self.name} stopped at step {state.step}")
        if save_now:
            self.save()
            self.last_save = time.monotonic()

    def _reached(self, value: float) -> bool:
        return value >= self.task.target if self.task.higher_is_better else value <= self.task.target

    def train(self, progress: bool) -> None:
        """Epochs until the budget is spent."""
        self.last_save = time.monotonic()
        bar = tqdm(total=self.total_steps, initial=self.state.step, desc=self.name, unit="step",
                   disable=None if progress and self.group.is_main else True, leave=False, dynamic_ncols=True)
        with bar:
            while self.state.step < self.total_steps:
                self.end_epoch(self.train_epoch(bar), bar)
        self.state.samples = int(self.group.total(self.state.samples))

    # ---------------------------------------------------------------------------------- test, record

    def test(self) -> dict[str, Any]:
        """The test metrics (the headline split, then the others prefixed by their name), timed."""
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        items = ItemLog()  # the headline split's per-item outcomes
        for i, split in enumerate(self.task.eval_splits):
            t_split = time.perf_counter()
            found = evaluate(self.task, self.net, split, self.batch_size, self.device, self.config.precision,
                             self.channels_last, items if i == 0 else None)
            metrics.update(found if i == 0 else {f"{split}_{k}": v for k, v in found.items()})
            if i == 0:  # inference throughput: the headline split, decoding included where the task decodes
                infer_time = time.perf_counter() - t_split
                eval_samples = sum(len(b[0]) for b in self.task.eval_batches(split, self.batch_size))
        eval_time = time.perf_counter() - t0
        self.model.eval()
        examples = self.task.examples(self.model, self.device, self.seed)
        metrics.update(examples.get("metrics", {}))  # what the examples measure (e.g. RL's controllability)
        return {"test": metrics, "items": items.columns(), "eval_time_s": eval_time,
                "infer_samples_per_sec": eval_samples / infer_time if infer_time else float("nan"),
                "examples": examples}

    def record(self, tested: dict[str, Any]) -> Record:
        task, state, config = self.task, self.state, self.config
        flops, train_flops = self.flops
        timed = state.samples - state.warmup_samples
        per_sec = timed / state.train_time if state.train_time else float("nan")
        utilisation = mfu(train_flops, per_sec, device_name(self.device), device=self.device.type,
                          num_gpus=self.group.world)  # of the GPU's dense bf16 peak; NaN on CPU
        return Record(
            # which cell
            domain=task.domain, task=task.name, model=self.entry.name, family=self.entry.family, size=config.label,
            tuning=config.tuning, seed=self.seed, status="ok", metric=task.metric,
            higher_is_better=task.higher_is_better, config=self.resolved, config_hash=self.chash,
            # what it scored: the last checkpoint's test metrics, per-item outcomes (written beside the record)
            metric_value=tested["test"][task.metric], test=tested["test"], items=tested["items"],
            history=state.history, examples=tested["examples"], target=task.target,
            time_to_target_s=state.time_to_target,
            # what it cost
            param_count=self.param_count, flops_per_sample=flops, train_flops_per_sample=train_flops,
            train_time_s=state.train_time, eval_time_s=tested["eval_time_s"],
            compile_time_s=state.warmup_time if config.compile else None,
            warmup_time_s=state.warmup_time if self.warm_up_apart else None,
            train_samples=state.samples, train_size=task.num_train_samples(), train_fraction=config.train_fraction,
            params_target=config.params_target, train_samples_per_sec=per_sec,
            infer_samples_per_sec=tested["infer_samples_per_sec"],
            mfu=utilisation if math.isfinite(utilisation) else None, peak_mem_mb=self.memory.mb(),
            # how it was obtained
            backend=config.backend, precision=config.precision, tf32=uses_tf32(self.device, config.precision),
            accumulation=self.accumulation, channels_last=self.channels_last, data_on_device=self.data_held,
            resumed_from_step=self.resumed_from, **environment(self.device),
            started=self.started.isoformat(timespec="seconds"),
            finished=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))

    def remove_checkpoint(self) -> None:
        """Delete the finished cell's checkpoint, where there is one; one that cannot be deleted (a folder
        turned read-only) is left with a warning: the cell's record says it is done, so nothing reads it."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return
        try:
            self.checkpoint.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            print(f"warning: cannot delete the finished cell's checkpoint {self.checkpoint} ({e.strerror or e})",
                  file=sys.stderr)


def run_cell(task: Task, model_name: str, seed: int, config: RunConfig, *, progress: bool = True,
             checkpoint: Path | None = None, checkpoint_every_s: float = 300.0,
             group: Group = SINGLE) -> dict[str, Any] | None:
    """Train ``model_name`` on ``task`` with ``seed`` and return the cell's record.

    With ``checkpoint``, the training state is saved there at the end of an epoch once
    ``checkpoint_every_s`` seconds have passed since the last save, and when a stop is requested
    (``harness.stopping.request_stop``, e.g. on SIGTERM; the cell then raises StopRequested). A later
    call with the same configuration continues from it; the file is deleted when the cell finishes.
    With a ``group`` of several processes, rank 0 returns the record, the other ranks None.
    """
    def fresh() -> CellTrainer:
        cell = CellTrainer(task, entry, seed, config, group=group, checkpoint=checkpoint,
                           checkpoint_every_s=checkpoint_every_s)
        cell.setup()
        return cell

    entry = get_model_entry(model_name)
    cell = fresh()
    if not cell.restore():
        cell = fresh()  # the same seeded start as a cell that never had a checkpoint
    with attention_backend(config.backend):
        cell.train(progress)
        if not group.is_main:  # rank 0 tests, writes the record and keeps the checkpoint's fate
            cell.remove_checkpoint()
            return None
        tested = cell.test()
    cell.remove_checkpoint()
    return cell.record(tested)


def failure_record(task: Task, model_name: str, seed: int, config: RunConfig, error: BaseException,
                   trace: str | None = None) -> Record:
    """The record of a cell that did not finish: its configuration and why (the sweep goes on)."""
    entry = get_model_entry(model_name)
    resolved = resolve(task, entry, config)
    return Record(domain=task.domain, task=task.name, model=model_name, family=entry.family, size=config.label,
                  tuning=config.tuning, seed=seed, status="failed", metric=task.metric,
                  higher_is_better=task.higher_is_better, config=resolved, config_hash=config_hash(resolved),
                  reason=f"{type(error).__name__}: {error}".strip()[:2000], backend=config.backend,
                  precision=config.precision, **environment(torch.device(config.device)),
                  traceback=trace[-8000:] if trace else None,
                  finished=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))


def attempt_cell(task: Task, model_name: str, seed: int, config: RunConfig, *, progress: bool = True,
                 checkpoint: Path | None = None, checkpoint_every_s: float = 300.0) -> Record:
    """:func:`run_cell`, whose failure (NaN loss, an exception, running out of memory) becomes a
    'failed' record with its traceback. On CUDA out-of-memory the cell is retried with half the
    micro-batch and twice the gradient accumulation (the same updates) until the micro-batch would be
    empty. A stop request (StopRequested) and Ctrl-C propagate."""
    while True:
        try:
            return run_cell(task, model_name, seed, config, progress=progress, checkpoint=checkpoint,
                            checkpoint_every_s=checkpoint_every_s)
        except KeyboardInterrupt:
            raise
        except torch.OutOfMemoryError as e:
            batch = config.batch_size or task.budget.batch_size
            if config.device == "cuda" and batch // (config.accumulation * 2) >= 1:
                torch.cuda.empty_cache()
                config = RunConfig(**{**vars(config), "accumulation": config.accumulation * 2})
                print(f"harness: {task.name}/{model_name} ran out of memory; retrying with micro-batches of "
                      f"{batch // config.accumulation} x {config.accumulation}", file=sys.stderr)
                continue
            return failure_record(task, model_name, seed, config, e, traceback.format_exc())
        except Exception as e:  # noqa: BLE001 - recorded, and the sweep goes on
            return failure_record(task, model_name, seed, config, e, traceback.format_exc())
