"""Train and evaluate one (task, model, seed) cell under a budget, and describe how it went."""

from __future__ import annotations

import contextlib
import copy
import math
import random
import resource
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tasks.base import Batch, Task
from zoo.core import attention_backend
from zoo.registry import create_model, get_model_entry

from .distributed import SINGLE, STOP_POLL_STEPS, Group
from .records import atomic_save, config_hash, environment


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
    precision: str = "fp32"  # fp32, bf16 autocast, or fp16 autocast with a gradient scaler
    compile: bool = False  # torch.compile the model for training and evaluation
    model_opts: tuple[tuple[str, Any], ...] = ()  # overrides of the size preset, e.g. (("depth", 6),)
    accumulation: int = 1  # micro-batches per optimizer step (batch_size / accumulation each): same updates
    deterministic: bool = False  # torch.use_deterministic_algorithms + cuDNN determinism
    params_target: int | None = None  # --params: model_opts then hold the width fitted to it
    fitted: tuple[tuple[str, Any], ...] = ()  # the config keys --params set (also in model_opts)
    world_size: int = 1  # processes training the cell together (DDP under torchrun); batch_size is global
    # the fast path (layout and placement only; the arithmetic is the same, so not in the config hash):
    channels_last: str = "auto"  # CNN weights and image batches in NHWC; auto: on CUDA, for models with a Conv2d
    data_on_device: str = "auto"  # hold the task's in-memory data on the accelerator; auto: on CUDA, if it fits

    @property
    def label(self) -> str:
        """The size as records and leaderboards name it: 'tiny', or 'tiny@250k' with --params 250k."""
        if not self.params_target:
            return self.size
        n = self.params_target
        for unit, scale in (("G", 10 ** 9), ("M", 10 ** 6), ("k", 10 ** 3)):
            if n >= scale:
                return f"{self.size}@{n / scale:.4g}{unit}"
        return f"{self.size}@{n}"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class StopRequested(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived: the cell saved its checkpoint (if it has one) and stopped."""


_STOP = threading.Event()


def request_stop() -> None:
    """Ask the running cell to save its checkpoint and stop after the current step (signal-safe)."""
    _STOP.set()


def clear_stop() -> None:
    _STOP.clear()


def set_deterministic(on: bool) -> None:
    """PyTorch's reproducibility switches: deterministic kernels (erroring where none exists),
    cuDNN without autotuning; CUBLAS needs a fixed workspace for deterministic matmuls."""
    import os
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_device(batch: Batch, device: torch.device, channels_last: bool = False) -> Batch:
    """A batch on ``device`` (a no-op for tensors already there); with ``channels_last``, image
    batches (float, 4-D) in NHWC, the layout the model's convolutions then run in."""
    batch = tuple(t.to(device, non_blocking=True) for t in batch)
    if channels_last:
        batch = tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 and t.is_floating_point()
                      else t for t in batch)
    return batch


def on_device(batches: Iterable[Batch], device: torch.device, channels_last: bool = False) -> Iterator[Batch]:
    for batch in batches:
        yield to_device(batch, device, channels_last)


def use_channels_last(model: nn.Module, device: torch.device, mode: str) -> bool:
    """NHWC for models with 2-D convolutions: cuDNN's tensor-core kernels want it (timm, torchvision's
    references and NVIDIA's guides train CNNs so); ``mode`` auto turns it on for CUDA only."""
    if mode == "off" or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    return mode == "on" or device.type == "cuda"


def hold_data(task: Task, device: torch.device, mode: str) -> bool:
    """Move the task's in-memory data to the accelerator (batches are then made there, no copy per
    step) where ``mode`` is on, or auto and the data takes at most a quarter of the free memory."""
    if mode == "off" or device.type == "cpu" or not task.held:
        return False
    if mode == "auto":
        if device.type != "cuda" or task.data_bytes() > torch.cuda.mem_get_info(device)[0] // 4:
            return False
    return task.hold_on(device)


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
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(task: Task, model: nn.Module, split: str, batch_size: int, device: torch.device,
             precision: str, channels_last: bool = False) -> dict[str, float]:
    model.eval()
    with torch.no_grad(), _autocast(device, precision):
        return task.evaluate(model, on_device(task.eval_batches(split, batch_size), device, channels_last))


def resolve(task: Task, model_name: str, config: RunConfig) -> dict[str, Any]:
    """The cell's full configuration (what its ``config_hash`` covers), before anything trains."""
    entry = get_model_entry(model_name)
    budget = task.budget
    batch_size = config.batch_size or budget.batch_size
    steps_per_epoch = task.steps_per_epoch(batch_size)
    if config.steps is not None:
        total_steps = config.steps
    elif config.epochs is not None:
        total_steps = config.epochs * steps_per_epoch
    elif budget.steps is not None:
        total_steps = budget.steps
    else:
        total_steps = (budget.epochs or 1) * steps_per_epoch
    return {
        "task": task.name, "model": model_name, "size": config.label, "batch_size": batch_size,
        "total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "epochs": total_steps / steps_per_epoch,
        "optimizer": "AdamW", "lr": config.lr if config.lr is not None else entry.defaults.get("lr", 1e-3),
        "weight_decay": config.weight_decay if config.weight_decay is not None
        else entry.defaults.get("weight_decay", 0.0),
        "schedule": "warmup_cosine", "warmup_frac": budget.warmup_frac, "grad_clip": config.grad_clip,
        "backend": config.backend, "precision": config.precision, "device": config.device,
        "task_options": task.opts, "model_options": dict(config.model_opts),
        **({"deterministic": True} if config.deterministic else {}),
        **({"compile": True} if config.compile else {}),
        **({"params_target": config.params_target, "fitted": dict(config.fitted)} if config.params_target else {}),
        **({"world_size": config.world_size, "distributed": "DDP"} if config.world_size > 1 else {}),
    }


def _lstm_flops(model: nn.Module) -> tuple[list[int], list[Any]]:
    """Forward hooks that add the multiply-adds of every nn.LSTM call (which FlopCounterMode does not
    see on CPU): 2 * 4 gates * hidden * (input + hidden) per step, direction and layer."""
    tally = [0]

    def hook(module: nn.LSTM, inputs: tuple, output: Any) -> None:
        x = inputs[0]
        steps = x.data.shape[0] if isinstance(x, nn.utils.rnn.PackedSequence) else x.shape[0] * x.shape[1]
        dirs = 2 if module.bidirectional else 1
        H, size_in = module.hidden_size, module.input_size
        for layer in range(module.num_layers):
            tally[0] += 2 * 4 * H * (size_in + H) * steps * dirs
            size_in = H * dirs
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.LSTM)]
    return tally, handles


def _probe_batch(task: Task, batch_size: int, device: torch.device) -> Batch:
    """A training batch drawn from its own generator, so that no random stream of the cell moves."""
    return to_device(next(iter(task.train_batches(batch_size, torch.Generator().manual_seed(0)))), device)


def measure_flops(task: Task, model: nn.Module, batch_size: int, device: torch.device) -> tuple[float | None, float | None]:
    """(forward FLOPs, training-step FLOPs) per sample of ``task.loss`` on a training batch, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (+ LSTM recurrences, which it does not see) on a copy
    of the model, so that neither the model (BatchNorm statistics) nor any random stream is touched.
    (None, None), with a warning, where counting fails: it never stops a cell."""
    from torch.utils.flop_counter import FlopCounterMode
    counts = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            batch = _probe_batch(task, batch_size, device)
            probe = copy.deepcopy(model)
            n = len(batch[0])
            for train in (False, True):
                probe.train(train)
                tally, handles = _lstm_flops(probe)
                try:
                    with FlopCounterMode(display=False) as counter:
                        if train:
                            task.loss(probe, batch).backward()
                        else:
                            with torch.no_grad():
                                task.loss(probe, batch)
                finally:
                    for h in handles:
                        h.remove()
                counts.append((counter.get_total_flops() + tally[0] * (3 if train else 1)) / n)
    except Exception as e:  # noqa: BLE001 - a cost column is not worth a failed cell
        print(f"warning: FLOPs of {task.name} not counted ({type(e).__name__}: {e})", file=sys.stderr)
        return None, None
    return counts[0], counts[1]


def _has_unused_parameters(task: Task, model: nn.Module, batch_size: int, device: torch.device) -> bool:
    """Whether a training step of ``task.loss`` leaves a parameter without a gradient (e.g. the
    Decision Transformer's return and state heads): DDP must then look for them at every step, which
    costs a walk of the autograd graph, so it is asked to only where needed. Probed on a copy."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        batch = _probe_batch(task, batch_size, device)
        probe = copy.deepcopy(model).train()
        task.loss(probe, batch).backward()
    return any(p.requires_grad and p.grad is None for p in probe.parameters())


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


def _stop_requested(group: Group, step: int) -> bool:
    """Whether to stop before the next step: at once in one process; processes training together
    agree every ``STOP_POLL_STEPS`` steps (one tiny collective), so that they stop at the same step."""
    if not group.distributed:
        return _STOP.is_set()
    return step % STOP_POLL_STEPS == 0 and group.any(_STOP.is_set())


def _reached(task: Task, value: float) -> bool:
    return value >= task.target if task.higher_is_better else value <= task.target


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "generator": generator.get_state(), "python": random.getstate(),
            "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:])}


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))


def run_cell(task: Task, model_name: str, seed: int, config: RunConfig, *, progress: bool = True,
             checkpoint: Path | None = None, checkpoint_every_s: float = 300.0,
             group: Group = SINGLE) -> dict[str, Any] | None:
    """Train ``model_name`` on ``task`` with ``seed`` and return the cell's record.

    With ``checkpoint``, the training state (model, optimizer, schedule, curves, random streams) is
    saved there at the end of an epoch once ``checkpoint_every_s`` seconds have passed since the last
    save, and when a stop is requested (:func:`request_stop`, e.g. on SIGTERM; the cell then raises
    :class:`StopRequested`). A later call with the same configuration continues from it; the file is
    deleted when the cell finishes.

    With a ``group`` of several processes (``harness.distributed``), they train the cell together with
    DistributedDataParallel; rank 0 returns the record, the other ranks None.
    """
    entry = get_model_entry(model_name)
    device = group.device(torch.device(config.device).type)
    resolved = resolve(task, model_name, config)
    chash = config_hash(resolved)
    batch_size, total_steps = resolved["batch_size"], resolved["total_steps"]
    steps_per_epoch, lr, weight_decay = resolved["steps_per_epoch"], resolved["lr"], resolved["weight_decay"]
    rank_batch = batch_size // group.world  # the global batch is split over the processes
    accumulation = max(1, min(config.accumulation, rank_batch))
    micro_batch = rank_batch // accumulation
    started = datetime.now(timezone.utc)
    seed_everything(seed)
    model = create_model(model_name, task.spec, size=config.size, **dict(config.model_opts)).to(device)
    if group.distributed:
        torch.manual_seed(seed + group.rank)  # the same weights, then dropout/augmentation streams per rank
    task.prepare(model)
    param_count = sum(p.numel() for p in model.parameters())
    data_held = hold_data(task, device, config.data_on_device)
    flops, train_flops = measure_flops(task, model, min(micro_batch, 16), device)
    channels_last = use_channels_last(model, device, config.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if config.compile else model  # evaluates; `model` holds the weights
    unused = group.distributed and _has_unused_parameters(task, model, micro_batch, device)
    train_net = group.wrap(net, find_unused=unused)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")  # fp16 needs loss scaling
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, task.budget.warmup_frac))
    generator = torch.Generator().manual_seed(seed)  # the same shuffle on every rank: they split its batches
    memory = PeakMemory(device)
    if group.distributed and checkpoint is not None:
        checkpoint = checkpoint.with_name(f"{checkpoint.name}.rank{group.rank}")

    history: list[dict[str, Any]] = []
    train_time = 0.0
    samples = step = 0
    time_to_target: float | None = None
    resumed_from = None
    if checkpoint is not None and checkpoint.exists():
        try:
            state = torch.load(checkpoint, map_location=device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint is redone, not fatal
            print(f"warning: ignoring unreadable checkpoint {checkpoint} ({type(e).__name__}: {e})", file=sys.stderr)
            state = None
        if state is not None and state.get("config_hash") == chash:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"], generator)
            history, train_time, samples, step = state["history"], state["train_time"], state["samples"], state["step"]
            time_to_target = state["time_to_target"]
            resumed_from = step

    def save_checkpoint() -> None:
        if checkpoint is not None:
            atomic_save(checkpoint, {"config_hash": chash, "model": model.state_dict(),
                                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                     "scaler": scaler.state_dict(),
                                     "rng": _rng_state(generator), "history": history, "train_time": train_time,
                                     "samples": samples, "step": step, "time_to_target": time_to_target})

    last_save = time.monotonic()
    bar = tqdm(total=total_steps, initial=step, desc=f"{task.name}/{model_name} seed {seed}", unit="step",
               disable=None if progress and group.is_main else True, leave=False, dynamic_ncols=True)
    with attention_backend(config.backend), bar:
        while step < total_steps:
            model.train()
            epoch_loss = torch.zeros((), device=device)
            epoch_steps = micro = 0
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            stopped = False  # a stop request in mid-epoch (one at its end waits for its validation)
            for batch, weight in group.shard(task.train_batches(micro_batch, generator)):
                if micro % accumulation == 0 and _stop_requested(group, step):
                    stopped = True
                    break
                batch = to_device(batch, device, channels_last)
                with _autocast(device, config.precision):
                    loss = task.loss(train_net, batch) * weight  # weight 1.0 but in DDP (see harness.distributed)
                scaler.scale(loss / accumulation).backward()
                epoch_loss += loss.detach() / accumulation
                samples += len(batch[0])
                micro += 1
                if micro % accumulation:
                    continue
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)  # skipped (and the scale lowered) where fp16 gradients overflowed
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                epoch_steps += 1
                step += 1
                bar.update()
                if step >= total_steps:
                    break
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - t0
            if stopped:
                save_checkpoint()
                raise StopRequested(f"{task.name}/{model_name} seed {seed} stopped at step {step}")
            if epoch_steps == 0:
                raise RuntimeError(f"task {task.name!r} yielded no training batch")
            train_loss = group.mean(epoch_loss / max(1, epoch_steps)).item()  # one host sync per epoch
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"training loss became {train_loss} at step {step}")
            val = evaluate(task, net, "val", batch_size, device, config.precision, channels_last) \
                if group.is_main else None
            save_now = step < total_steps and time.monotonic() - last_save >= checkpoint_every_s
            val, save_now = group.share((val, save_now))  # rank 0's metrics and decision, on every rank
            history.append({"step": step, "epoch": step / steps_per_epoch, "train_loss": train_loss,
                            "train_time_s": train_time, **{f"val_{k}": v for k, v in val.items()}})
            if time_to_target is None and task.target is not None and _reached(task, val[task.metric]):
                time_to_target = train_time
            bar.set_postfix(loss=f"{train_loss:.3f}", **{f"val_{task.metric}": f"{val[task.metric]:.4f}"})
            if step < total_steps and group.any(_STOP.is_set()):
                save_checkpoint()
                raise StopRequested(f"{task.name}/{model_name} seed {seed} stopped at step {step}")
            if save_now:
                save_checkpoint()
                last_save = time.monotonic()
        samples = int(group.total(samples))
        if not group.is_main:  # rank 0 tests, writes the record and keeps the checkpoint's fate
            if checkpoint is not None:
                checkpoint.unlink(missing_ok=True)
            return None
        t0 = time.perf_counter()
        test: dict[str, float] = {}
        eval_samples = 0
        for i, split in enumerate(task.eval_splits):
            t_split = time.perf_counter()
            metrics = evaluate(task, net, split, batch_size, device, config.precision, channels_last)
            test.update(metrics if i == 0 else {f"{split}_{k}": v for k, v in metrics.items()})
            if i == 0:  # inference throughput: the headline split, decoding included where the task decodes
                infer_time = time.perf_counter() - t_split
                eval_samples = sum(len(b[0]) for b in task.eval_batches(split, batch_size))
        eval_time = time.perf_counter() - t0
        model.eval()
        examples = task.examples(model, device, seed)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)

    return {
        "domain": task.domain, "task": task.name, "model": model_name, "family": entry.family,
        "size": config.label, "seed": seed, "status": "ok",
        "metric": task.metric, "metric_value": test[task.metric], "higher_is_better": task.higher_is_better,
        "checkpoint": "last", "test": test, "history": history, "examples": examples,
        "param_count": param_count, "train_time_s": train_time, "eval_time_s": eval_time,
        "train_samples": samples, "train_samples_per_sec": samples / train_time if train_time else float("nan"),
        "infer_samples_per_sec": eval_samples / infer_time if infer_time else float("nan"),
        "flops_per_sample": flops, "train_flops_per_sample": train_flops, "peak_mem_mb": memory.mb(),
        "target": task.target, "time_to_target_s": time_to_target, "resumed_from_step": resumed_from,
        "accumulation": accumulation, "channels_last": channels_last, "data_on_device": data_held,
        "backend": config.backend, "precision": config.precision,
        "config": resolved, "config_hash": chash,
        **environment(device),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def failure_record(task: Task, model_name: str, seed: int, config: RunConfig, error: BaseException,
                   trace: str | None = None) -> dict[str, Any]:
    """The record of a cell that did not finish: its configuration and why (the sweep goes on)."""
    resolved = resolve(task, model_name, config)
    entry = get_model_entry(model_name)
    return {"domain": task.domain, "task": task.name, "model": model_name, "family": entry.family,
            "size": config.label, "seed": seed, "status": "failed",
            "reason": f"{type(error).__name__}: {error}".strip()[:2000],
            "metric": task.metric, "higher_is_better": task.higher_is_better,
            "backend": config.backend, "precision": config.precision,
            "config": resolved, "config_hash": config_hash(resolved), **environment(torch.device(config.device)),
            **({"traceback": trace[-8000:]} if trace else {}),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def attempt_cell(task: Task, model_name: str, seed: int, config: RunConfig, *, progress: bool = True,
                 checkpoint: Path | None = None, checkpoint_every_s: float = 300.0) -> dict[str, Any]:
    """:func:`run_cell`, whose failure (NaN loss, an exception, running out of memory) becomes a
    'failed' record with its traceback. On CUDA out-of-memory the cell is retried with half the
    micro-batch and twice the gradient accumulation (the same updates) until the micro-batch would be
    empty. A stop request (:class:`StopRequested`) and Ctrl-C propagate."""
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
