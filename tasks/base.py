"""The contract between tasks and models, and the task registry.

A task owns its data, its loss and its metrics; the harness owns the loop, the budget, seeds,
devices, precision and records; a model declares the task *kinds* it serves. The kinds:

==================  ==========================================================================
kind                model contract
==================  ==========================================================================
classification      x (B, ...) -> logits (B, C). Images are (B, C, H, W); audio features
                    (B, T, F). spec: ``input_shape`` (without batch), ``num_classes``.
language_modeling   tokens (B, T) -> logits (B, T, V); ``generate(idx, max_new_tokens,
                    temperature, top_k, generator)`` for samples.
                    spec: ``vocab_size``, ``block_size``.
seq2seq             (src (B, S), src_pad (B, S) bool True=padding, tgt_in (B, T) starting with
                    BOS) -> logits (B, T, V); ``generate(src, src_pad, max_len, beam_size)`` ->
                    tokens (B, L) after BOS, PAD after EOS. spec: ``src_vocab_size``,
                    ``tgt_vocab_size``, ``max_src_len``, ``max_tgt_len``, ``pad_id``, ``bos_id``,
                    ``eos_id``.
transcription       audio features -> text tokens. A model says how it decodes in ``decoding``:
                    ``"ctc"``: forward(feats (B, T, F), lengths (B,)) -> (log_probs (B, T', V),
                    out_lengths (B,)), blank = ``blank_id``; ``"attention"``: forward(feats,
                    feat_pad (B, T) bool True=padding, tgt_in (B, L) starting with BOS) -> logits
                    (B, L, V) and ``generate(feats, feat_pad, max_len, beam_size)`` -> tokens
                    (B, L') after BOS, PAD after EOS (``zoo.core.decoding.Seq2SeqDecoder``).
                    spec: ``input_dim``, ``vocab_size``, ``blank_id`` (= ``pad_id`` = 0),
                    ``bos_id``, ``eos_id``, ``max_tgt_len``, ``max_frames``.
offline_rl          (returns-to-go, states, actions, timesteps, mask) -> actions; ``act()``.
==================  ==========================================================================

A task's ``spec`` is a plain dict with ``kind``, ``modality`` (the task class's: "image", "audio",
"text" or "state"; one kind can serve several, e.g. classification of images and of audio) and the
keys its kind names; ``create_model`` builds any registered model from it.

A task declares its options once, each an ``Option`` (default, type, range, help), and checks them
when it is made: a bad value is a one-line ValueError naming the task, the option, what is accepted
and what was given. Data that cannot be used (missing, degenerate, corrupt) is a ``DatasetError`` at
``setup``. ``fingerprint`` identifies the data a task read (``files_fingerprint`` of its files, or the
recipe of generated data) for the cell's configuration hash.

``evaluate`` fills an ``ItemLog`` when it is given one (the harness does, for the headline split):
the per-item outcomes that the headline metric is computed from, so that two models can be compared
item by item (``harness compare``). Their metric is ``sum(value) / sum(weight)``.

A batch is a tuple of tensors that the harness moves to the device, but for the positions a task
names in ``on_host``: lengths (and the padding masks made from them) that stay on the host, where
cuDNN's packed sequences and CTC read them, so that a training step never waits to read them back.
A model given host lengths or a host mask moves what the device needs of them itself, without
blocking (``.to(device, non_blocking=True)``), and a CTC model returns its output lengths where its
input lengths were (on the host, for the loss); one given them on the device still works, with a
read-back. ``None`` in a batch (no padding mask, where no row is padded) stays ``None``.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.options import Option
from zoo.registry import RegistryError, unknown_name_error

KINDS: dict[str, str] = {
    "classification": "x (B, ...) -> logits (B, C)",
    "language_modeling": "tokens (B, T) -> logits (B, T, V)",
    "seq2seq": "(src, src_mask, tgt_in) -> logits (B, T, V)",
    "transcription": "audio features + lengths -> CTC log-probs or decoder logits",
    "offline_rl": "(returns-to-go, states, actions, timesteps, mask) -> actions",
}

Batch = tuple[Tensor | None, ...]  # a task kind's batch: a NamedTuple of its own (Trajectories, ...) or a pair


# --------------------------------------------------------------------------- what a kind needs of a model
# Declared, not probed: a task names the protocols its models must follow (``Task.requires``), and
# ``Task.check_model`` checks them once, when a cell's model is built, with a one-line error naming
# what is missing. Every model is an ``nn.Module`` whose ``forward`` takes the kind's inputs.

class Generator(Protocol):
    """A language model that continues a prompt: ``generate(idx, max_new_tokens, ...)`` (idx (B, T))."""

    def generate(self, *args: Any, **kwargs: Any) -> Tensor: ...


class Decoder(Protocol):
    """A transcription model says how it decodes: ``decoding`` 'ctc' (forward(feats, lengths) ->
    (log-probs (B, T', V), out lengths)) or 'attention' (forward(feats, padding mask, tgt_in) -> logits,
    and ``generate(feats, padding mask, max_len, beam_size)``)."""

    decoding: str


class TrajectoryLearner(Protocol):
    """An offline-RL model: forward(returns_to_go, states, actions, timesteps, mask) -> actions (B, K, A).
    It declares the share of episodes it trains on, best first (``trajectory_fraction``: 1 all, %BC's 0.1)
    and whether it learns from transitions by temporal differences (``learns_by_td``: then see TDLearner)."""

    trajectory_fraction: float
    learns_by_td: bool


class TDLearner(Protocol):
    """A temporal-difference learner (IQL): its training loss from a batch of uniformly drawn transitions
    (``td_loss(transitions)``, transitions a ``tasks.rl.tasks.Transitions``)."""

    def td_loss(self, transitions: Any) -> Tensor: ...


def missing_members(candidate: Any, protocol: type) -> list[str]:
    """The attributes and methods of ``protocol`` that ``candidate`` does not declare: the one check of
    a declared protocol, made once per built model (``Task.check_model``), never a probe in a step."""
    members = [*getattr(protocol, "__annotations__", {}),
               *(k for k, v in vars(protocol).items() if callable(v) and not k.startswith("_"))]
    return [m for m in dict.fromkeys(members) if not hasattr(candidate, m)]


class DatasetError(RuntimeError):
    """A dataset that cannot be used as it is (the harness reports it as bad input)."""


class DatasetNotFoundError(DatasetError):
    """A dataset that is neither on disk nor allowed to be downloaded."""


def direction_words(higher_is_better: bool) -> str:
    """'higher is better' or 'lower is better': how a metric reads, in labels and reports."""
    return "higher is better" if higher_is_better else "lower is better"


def files_fingerprint(root: str | Path, paths: Iterable[str | Path], *, times: bool = True) -> dict[str, Any]:
    """A small fingerprint of the files a task reads: ``{"files": n, "bytes": total, "digest": 16 hex
    digits}``, the digest a SHA-256 over the sorted (path relative to ``root``, size, mtime in ns) of
    ``paths``; ``times=False`` leaves the modification times out (data whose files are installed,
    not edited). A file that cannot be stat-ed is a DatasetError naming it."""
    root, rows = Path(root), []
    for path in map(Path, paths):
        try:
            stat = path.stat()
        except OSError as e:
            raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = path.as_posix()
        rows.append((rel, stat.st_size, stat.st_mtime_ns if times else 0))
    rows.sort()
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
    return {"files": len(rows), "bytes": sum(size for _, size, _ in rows), "digest": digest}


@dataclass(frozen=True)
class Budget:
    """What every model of a task gets: the same epochs (or steps) and batch size."""

    epochs: int | None = None
    steps: int | None = None  # for tasks without epochs (random windows of a corpus), or to cap them
    batch_size: int = 64
    warmup_frac: float = 0.05  # linear warm-up over this fraction of the steps, then cosine to zero


REPORT_FIELDS = ("description", "about", "metric_units", "example_plots", "report_iqm", "leaderboard_metrics")


@dataclass(frozen=True)
class TaskReport:
    """How a task is presented, apart from its data and loss contract (``Task``): read by ``harness list``,
    the leaderboards, ``compare`` and both reports, never by training. Measured numbers do not belong
    here (they go stale when the code changes); the reports take them from the records.

    description: one line for ``harness list``.
    about: what the task tests and which kind of model it should favour (the reports' task section).
    metric_units: words saying what a metric measures, e.g. {"wer": "word error rate"}.
    example_plots: tables of ``Task.examples`` the reports plot: name -> (x column, y column).
    report_iqm: also summarise seeds by their interquartile mean (rliable): for noisy scores.
    leaderboard_metrics: test metrics the leaderboard shows beside the headline one."""

    description: str = ""
    about: str = ""
    metric_units: Mapping[str, str] = field(default_factory=dict)
    example_plots: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    report_iqm: bool = False
    leaderboard_metrics: tuple[str, ...] = ()

    def metric_label(self, metric: str, higher_is_better: bool, split: str = "test") -> str:
        """E.g. 'test top1 (accuracy, higher is better)', 'val wer (word error rate, lower is better)':
        the split, the metric, what it measures (``metric_units``, where the task says) and its direction."""
        words = [self.metric_units[metric]] if metric in self.metric_units else []
        return f"{split} {metric} ({', '.join(words + [direction_words(higher_is_better)])})"


class Task(ABC):
    """Base class. Subclasses set the class attributes and implement ``setup``, ``spec``,
    ``train_batches``, ``eval_batches``, ``loss`` and ``evaluate``; ``report`` says how it is presented.

    A task written before ``TaskReport`` (a plugin setting ``description``, ``about``, ``metric_units``,
    ``example_plots``, ``report_iqm`` or ``leaderboard_metrics`` as class attributes) keeps working: the
    attributes it sets are folded into its ``report`` when the class is defined."""

    name: ClassVar[str]
    domain: ClassVar[str]
    kind: ClassVar[str]
    modality: ClassVar[str | None] = None  # "image", "audio", "text", "state": picks models within a kind
    metric: ClassVar[str]  # the headline metric that the leaderboard ranks by
    higher_is_better: ClassVar[bool] = True
    target: ClassVar[float | None] = None  # a validation value of the metric worth reaching: time_to_target_s
    offline: ClassVar[bool] = False  # data on every machine (shipped or generated), no download
    local_data: ClassVar[bool] = False  # the user's own files, named by --data-dir (no download either)
    default: ClassVar[bool] = False  # part of `harness run DOMAIN` when no --tasks is given
    budget: ClassVar[Budget] = Budget(epochs=1)
    default_seeds: ClassVar[int] = 3  # seeds when --seeds is not given (fewer where a cell is long)
    eval_splits: ClassVar[tuple[str, ...]] = ("test",)  # evaluated once, after training; the first is headline
    report: ClassVar[TaskReport] = TaskReport()  # how `list`, the leaderboards and the reports present it
    options: ClassVar[dict[str, Option | Any]] = {}  # task-specific options: an Option, or a plain default
    data_version: ClassVar[int] = 1  # bump when the task's data (its recipe, generator or split) changes
    held: ClassVar[tuple[str, ...]] = ()  # attributes (tensors, or dicts of them) that ``hold_on`` may move
    on_host: ClassVar[tuple[int, ...]] = ()  # positions in a batch that stay on the host when it moves
    requires: ClassVar[tuple[type, ...]] = ()  # the protocols its models follow (checked by check_model)

    def __init__(self, data_dir: str | Path = "data", download: bool = False, train_fraction: float = 1.0,
                 **options: Any) -> None:
        self.data_dir = Path(data_dir)
        self.download = download
        if not (isinstance(train_fraction, numbers.Real) and 0 < train_fraction <= 1):
            raise ValueError(f"task {self.name!r}: train_fraction must be a number in (0, 1], got {train_fraction!r}")
        self.train_fraction = float(train_fraction)  # train on this nested, stratified share (``load``)
        self._subset_applied = False
        unknown = set(options) - set(self.options)
        if unknown:
            accepted = ", ".join(self.options) or "none"
            raise RegistryError(f"task {self.name!r} has no option {', '.join(sorted(unknown))}; accepted: {accepted}")
        self.opts: dict[str, Any] = {}
        for key, option in self.option_specs().items():
            try:
                self.opts[key] = option.parse(options[key]) if key in options else option.default
            except ValueError as e:
                raise ValueError(f"task {self.name!r}: option {key} {e}") from None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        old_style = {k: cls.__dict__[k] for k in REPORT_FIELDS if k in cls.__dict__}
        if old_style:  # the pre-TaskReport spelling (a plugin's): the same presentation
            cls.report = replace(cls.report, **{k: tuple(v) if k == "leaderboard_metrics" else v
                                               for k, v in old_style.items()})

    @classmethod
    def option_specs(cls) -> dict[str, Option]:
        """Every option as an ``Option``; a plain value in ``options`` is a default checked only for type."""
        return {k: v if isinstance(v, Option) else Option(v) for k, v in cls.options.items()}

    def fingerprint(self) -> dict[str, Any]:
        """A small JSON-able identity of the data the task trains and is scored on, after ``setup``: part
        of a cell's configuration hash, so that a cell pointed at other data is not taken as done. The
        task, its ``data_version`` and options, and its ``data_fingerprint`` (computed once)."""
        if getattr(self, "_data_fingerprint", None) is None:
            self._data_fingerprint = self.data_fingerprint()
        return {"task": self.name, "data_version": self.data_version, "options": dict(self.opts),
                **self._data_fingerprint,
                **({"train_fraction": self.train_fraction} if self.train_fraction < 1 else {})}

    def data_fingerprint(self) -> dict[str, Any]:
        """What identifies the data besides the task's name, ``data_version`` and options: for the files
        a task reads, ``files_fingerprint`` of them; for generated data, the generator and its
        parameters. Nothing by default (data that the options and the version determine)."""
        return {}

    @abstractmethod
    def setup(self) -> None:
        """Load (or generate) the data. Raises DatasetNotFoundError when it is missing."""

    def load(self) -> None:
        """``setup``, then keep the nested share ``train_fraction`` of the training split (once)."""
        self.setup()
        if self.train_fraction < 1 and not self._subset_applied:
            groups = self.train_groups()
            if groups is None:
                raise ValueError(f"task {self.name!r} cannot train on a fraction of its data (train_fraction "
                                 f"{self.train_fraction:g}); the classification tasks can")
            self.restrict_train(torch.from_numpy(nested_subset(groups, self.train_fraction)))
            self._subset_applied = True

    def train_groups(self) -> np.ndarray | None:
        """One group per training item, kept in proportion by ``train_fraction`` (a class label); None
        where the task cannot train on a subset."""
        return None

    def restrict_train(self, index: Tensor) -> None:
        """Keep only the training items at ``index`` (sorted positions; validation and test unchanged):
        in every data attribute named by ``held`` that is a dict of splits. A task that keeps its
        training data otherwise overrides this with ``train_groups``."""
        for name in self.held:
            splits = getattr(self, name)
            if isinstance(splits, dict) and "train" in splits:
                splits["train"] = splits["train"][index.to(splits["train"].device)]

    @property
    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """What a model needs to know to be built for this task (see the kinds above)."""

    @abstractmethod
    def num_train_samples(self) -> int:
        """Training examples in one epoch."""

    def data_bytes(self) -> int:
        """Bytes of the in-memory data that ``hold_on`` would move (0 where the task holds none)."""
        return sum(t.numel() * t.element_size() for t in self._held_tensors())

    def hold_on(self, device: torch.device, channels_last: bool = False) -> bool:
        """Move the task's in-memory data (the attributes named in ``held``) to ``device``, so that
        batches are cut, shuffled and augmented there, with no host-to-device copy per step; with
        ``channels_last``, 4-D image tensors once in NHWC, so that batches are cut in the layout the
        model's convolutions run in (no conversion per step). True where the task did so; tasks whose
        batches need the host (rollouts, data-dependent trimming) hold nothing and return False."""
        if not self.held:
            return False

        def move(t: Tensor) -> Tensor:
            nhwc = channels_last and t.dim() == 4
            return t.to(device, memory_format=torch.channels_last) if nhwc else t.to(device)

        for name in self.held:
            value = getattr(self, name)
            setattr(self, name, {k: move(v) for k, v in value.items()} if isinstance(value, dict) else move(value))
        return True

    def _held_tensors(self) -> list[Tensor]:
        values = [getattr(self, name) for name in self.held]
        return [t for v in values for t in (v.values() if isinstance(v, dict) else [v])]

    def check_model(self, model: nn.Module, name: str = "") -> None:
        """ValueError, in one line, where ``model`` lacks what this task's kind needs of it
        (``requires``); called once, when a cell's model is built."""
        for protocol in self.requires:
            missing = missing_members(model, protocol)
            if missing:
                raise ValueError(f"model {name or type(model).__name__!r} does not declare {', '.join(missing)}, which "
                                 f"{self.kind} tasks need of a model (tasks.base.{protocol.__name__}: "
                                 f"{(protocol.__doc__ or '').split(':')[0].strip()})")

    def prepare(self, model: nn.Module) -> None:
        """Called with each freshly built model before it trains (e.g. %BC picks its data here)."""

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps between two validations (one pass over the training set by default)."""
        return math.ceil(self.num_train_samples() / batch_size)

    @abstractmethod
    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterable[Batch]:
        """One epoch (``steps_per_epoch`` batches) of shuffled training batches, on the CPU."""

    @abstractmethod
    def eval_batches(self, split: str, batch_size: int) -> Iterable[Batch]:
        """The batches of ``split`` ('val' or one of ``eval_splits``), in a fixed order."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The training loss of ``model`` on one batch (already on the model's device)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], items: ItemLog | None = None) -> dict[str, float]:
        """Metrics over ``batches`` (already on the model's device), the headline one included; with
        ``items``, each item's outcome too (``sum(value) / sum(weight)`` is the headline metric)."""

    def examples(self, model: nn.Module, device: torch.device, seed: int) -> dict[str, Any]:
        """What a trained model produces, to look at (a text sample, some decoded inputs); JSON-able.
        Lists of row dicts under the key ``tables`` are also published as CSVs next to the leaderboard;
        numbers under ``metrics`` join the test metrics (``report.leaderboard_metrics`` names those the
        leaderboard shows)."""
        return {}

    @classmethod
    def format_examples(cls, examples: dict[str, Any]) -> list[str]:
        """What ``examples`` returned (as read back from a record), as text to print: one string per
        print call, each possibly of several lines; [] where there is nothing to show as text."""
        return []


def nested_subset(groups: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """The sorted positions of the share ``fraction`` of items, stratified by ``groups``: each group keeps
    round(fraction * its size) items (at least one), the first ones of a fixed permutation of that group
    (``seed``). Every smaller fraction's subset is inside every larger one's, and the subset depends on
    nothing else (not the model, not the training seed)."""
    rng = np.random.default_rng(seed)
    keep = []
    for group in np.unique(groups):  # sorted: the same permutation order whatever the fraction
        members = np.flatnonzero(groups == group)
        order = members[rng.permutation(len(members))]
        keep.append(order[:max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(keep))


class ItemLog:
    """Per-item outcomes of one evaluation, gathered batch by batch in the split's fixed order.

    Each item has an id (``item``: its position in the split unless the task names it, e.g. an RL
    episode's environment seed), a ``value`` and a ``weight``, such that the headline metric is
    ``sum(value) / sum(weight)``: weight 1 for a mean over items (accuracy, exact match, return),
    the reference words of an utterance for WER, the tokens of a window for a language model's loss.
    Tasks add columns of their own (the predicted and the true label). ``columns()`` gives one
    array per name, as stored in a record's ``.items.npz``."""

    def __init__(self) -> None:
        self._columns: dict[str, list[np.ndarray]] = {}
        self._count = 0

    def add(self, value: Any, weight: Any = None, item: Any = None, **extra: Any) -> None:
        """One batch's items. Tensors are kept where they are (on the device) until ``columns``, so
        that an evaluation reads them back once at its end, not once per batch."""
        value = _flat(value)
        n = len(value)
        columns = {"item": np.arange(self._count, self._count + n) if item is None else item,
                   "value": value, "weight": np.ones(n) if weight is None else weight, **extra}
        if self._columns and set(columns) != set(self._columns):
            raise ValueError(f"ItemLog.add: columns {sorted(columns)} differ from the first batch's {sorted(self._columns)}")
        for name, column in columns.items():
            column = _flat(column)
            if len(column) != n:
                raise ValueError(f"ItemLog.add: column {name!r} has {len(column)} entries for {n} items")
            self._columns.setdefault(name, []).append(column)
        self._count += n

    def columns(self) -> dict[str, np.ndarray]:
        out = {name: np.concatenate([_host(part) for part in parts]) for name, parts in self._columns.items()}
        out["item"] = out["item"].astype(np.int64)
        out["value"] = out["value"].astype(np.float64)
        out["weight"] = out["weight"].astype(np.float64)
        return out


def _flat(x: Any) -> Any:
    """A 1-D view of a tensor (detached, where it is) or array."""
    return x.detach().reshape(-1) if isinstance(x, Tensor) else np.asarray(x).reshape(-1)


def _host(x: Any) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, Tensor) else x


def items_metric(columns: dict[str, np.ndarray]) -> float:
    """The headline metric that per-item outcomes give: ``sum(value) / sum(weight)``."""
    return float(np.sum(columns["value"]) / np.sum(columns["weight"]))


class DecodedExamples:
    """Mixin for a task whose ``examples`` hold ``decoded``: rows of ``source``, ``output`` and
    ``target``; each prints as one line, marked ``ok`` where the output is the target, else ``ERR``."""

    @classmethod
    def format_examples(cls, examples: dict[str, Any]) -> list[str]:
        return [f"{'ok ' if d['output'] == d['target'] else 'ERR'} {d['source']!r} -> {d['output']!r} "
                f"(target {d['target']!r})" for d in examples.get("decoded", [])]


class ClassificationTask(Task):
    """x -> class logits; cross-entropy (optionally label-smoothed); top-1 and top-5 accuracy. A
    subclass keeps its data in the dicts named by ``held`` (split -> tensor), ``labels`` among them:
    then ``train_fraction`` keeps a class-stratified share of the training split (``Task.restrict_train``)."""

    kind = "classification"
    metric = "top1"
    report = TaskReport(metric_units={"top1": "accuracy", "top5": "top-5 accuracy"})
    label_smoothing: ClassVar[float] = 0.0

    def train_groups(self) -> np.ndarray | None:
        labels = getattr(self, "labels", None)
        return labels["train"].cpu().numpy() if "labels" in self.held and isinstance(labels, dict) else None

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y, label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], items: ItemLog | None = None) -> dict[str, float]:
        n, sums = 0, 0  # sums: (loss, top-1 hits, top-5 hits) in float64 on the device, read at the end
        for x, y in batches:
            logits = model(x).float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
            hits = top == y[:, None]
            sums = sums + torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                       hits[:, 0].sum().double(), hits.any(dim=1).sum().double()])
            n += y.numel()
            if items is not None:  # per example: correct or not, the predicted and the true label
                items.add(hits[:, 0], pred=top[:, 0], label=y)
        loss_sum, correct1, correct5 = sums.tolist()
        metrics = {"top1": correct1 / n, "loss": loss_sum / n}
        if self.spec["num_classes"] > 5:
            metrics["top5"] = correct5 / n
        return metrics


class TensorBatches:
    """Batches drawn from tensors held in memory: no DataLoader, no per-sample Python.

    ``transform`` (optional) is applied to each batch's first tensor, e.g. augmentation or the
    uint8 -> normalised float conversion.
    """

    def __init__(self, tensors: tuple[Tensor, ...], batch_size: int, *, generator: torch.Generator | None = None,
                 transform: Callable[[Tensor], Tensor] | None = None) -> None:
        self.tensors, self.batch_size, self.generator, self.transform = tensors, batch_size, generator, transform

    def __len__(self) -> int:
        return math.ceil(len(self.tensors[0]) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.tensors[0])
        order = None
        if self.generator is not None:  # drawn on the CPU generator, then moved once to where the data is
            order = torch.randperm(n, generator=self.generator).to(self.tensors[0].device, non_blocking=True)
        for start in range(0, n, self.batch_size):
            if order is None:
                batch = tuple(t[start:start + self.batch_size] for t in self.tensors)
            else:
                index = order[start:start + self.batch_size]
                batch = tuple(t[index] for t in self.tensors)
            if self.transform is not None:
                batch = (self.transform(batch[0]), *batch[1:])
            yield batch


# ----------------------------------------------------------------------------- the task registry

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a Task subclass under its ``name``."""
    if cls.name in _TASKS:
        raise RegistryError(f"task {cls.name!r} is already registered")
    if cls.kind not in KINDS:
        raise RegistryError(f"task {cls.name!r} has unknown kind {cls.kind!r}; accepted: {', '.join(KINDS)}")
    _TASKS[cls.name] = cls
    return cls


def get_task_class(name: str) -> type[Task]:
    if name not in _TASKS:
        raise unknown_name_error("task", name, list(_TASKS))
    return _TASKS[name]


def list_domains() -> list[str]:
    return sorted({cls.domain for cls in _TASKS.values()})


def list_tasks(domain: str | None = None, *, default_only: bool = False) -> list[str]:
    if domain is not None and domain not in list_domains():
        raise unknown_name_error("domain", domain, list_domains())
    return sorted(n for n, cls in _TASKS.items()
                  if (domain is None or cls.domain == domain) and (not default_only or cls.default))


def create_task(name: str, **kwargs: Any) -> Task:
    return get_task_class(name)(**kwargs)
