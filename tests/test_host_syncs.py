"""No host-device synchronisation inside a training step, for every task kind and model (issue 20).

On a GPU a sync stalls the host until the device has caught up, so the next step's kernels cannot be
queued behind the running ones. There is no GPU here, so the test plays one on the CPU while the
harness's own trainer runs training steps (batches made, moved, forward, loss, backward, clipping,
optimiser step): every tensor is taken to be on the device but those made on the host, which carry a
tag. A batch cut on the host is host data; what the harness moves (``Tensor.to`` with a device)
becomes device data, a fresh copy without the tag; what a task keeps on the host (``Task.on_host``:
lengths, masks) keeps it. A factory op (``torch.arange(T, device=lengths.device)``) makes a tensor
whose place is open: it takes the place of what it meets. An op with a device tensor among its
inputs makes device tensors; one with host tensors and open ones, host tensors. The counter then
records, for data not known to be on the host:

- at the dispatcher (a ``TorchDispatchMode``): reading a value back (``.item()``, ``bool(t)``,
  ``float(t)``: ``aten._local_scalar_dense``), ops whose output size depends on the data
  (``nonzero``, ``masked_select``, indexing with a boolean mask, ``unique``, ``repeat_interleave``
  without its size), and CTC losses given their lengths on the device (torch reads them back);
- in Python: ``.tolist()``, ``.numpy()`` and ``.cpu()`` of device data, and blocking copies of host
  data (``.to(device)`` without ``non_blocking=True``, ``.cuda()``).

The trainer's one read-back per epoch (``CellTrainer.epoch_mean_loss``) is allowed; nothing else is.

What this cannot see is inside torch's own CUDA kernels. One matters: CUDA ``ctc_loss`` builds its
per-utterance target offsets on the host and copies them with a blocking copy (aten's LossCTC.cu),
whatever its caller does; the CTC cells are sync-free up to that copy (their lengths reach it on
the host, so nothing is read back), and no caller of ``F.ctc_loss`` can do better.
"""

from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import baselines  # noqa: F401  (registers the baselines)
import zoo  # noqa: F401
from baselines.rnn import PyramidalListener, RNNEncoder
from harness.config import RunConfig
from harness.devices import to_device
from harness.trainer import CellTrainer, evaluate
from tasks.base import ItemLog, create_task, get_task_class
from zoo.registry import create_model, get_model_entry

aten = torch.ops.aten
READ_BACK = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten._unique, aten._unique2,
             aten.unique_dim, aten.unique_consecutive, aten.masked_scatter}
# outputs that torch keeps on the host whatever the device of the inputs: a PackedSequence's batch sizes
HOST_OUTPUTS = {aten._pack_padded_sequence: (1,), aten._pad_packed_sequence: (1,)}
ALLOWED = {"epoch_mean_loss"}  # the trainer's one read-back per epoch
ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("zoo", "baselines", "tasks", "harness")  # the project's packages
TAG = "_zoo_place"  # "host" or "open" (a factory's output); no tag: on the device


def place(t: torch.Tensor) -> str:
    return getattr(t, TAG, "device")


def on_host(t) -> bool:
    return isinstance(t, torch.Tensor) and place(t) == "host"


def tag(tensors, where: str = "host"):
    for t in tensors:
        if isinstance(t, torch.Tensor):
            if where == "device":
                t.__dict__.pop(TAG, None)
            else:
                setattr(t, TAG, where)
    return tensors


def _package(frame) -> str:
    """The top-level package of the module that ``frame`` runs, as the import system names it."""
    return (frame.f_globals.get("__name__") or "").partition(".")[0]


def _ours(frame) -> bool:
    """Whether ``frame`` runs the project's code: its module belongs to one of the project's packages
    (by the import system, not by the folder: a virtual environment inside the clone is not ours)."""
    return _package(frame) in PROJECT


def _counted(frame) -> bool:
    """Whether a blocking copy made in ``frame`` counts: made by the project's code, or by a library
    that the project's code called (torchvision's transforms, say); torch's own moves are torch's."""
    if _ours(frame):
        return True
    if _package(frame) == "torch":
        return False
    outer = frame.f_back
    while outer is not None and not _ours(outer):
        outer = outer.f_back
    return outer is not None


def _where() -> str:
    """The innermost frame of the project's own code that led here (and the library line it called)."""
    frame, inner = sys._getframe(1), None
    while frame is not None and not _ours(frame):
        inner, frame = frame, frame.f_back
    if frame is None:
        return "?"
    here = f"{frame.f_globals['__name__']}:{frame.f_lineno}"
    called = f" -> {inner.f_globals.get('__name__')}:{inner.f_lineno}" if inner is not None and not _ours(inner) \
        and _package(inner) not in ("torch", "test_host_syncs", "contextlib") else ""
    return here + called


def _allowed() -> bool:
    return any(f.name in ALLOWED for f in traceback.extract_stack())


class SyncCounter(TorchDispatchMode):
    """Records each op that would make the host wait for a CUDA device, and tags host tensors."""

    def __init__(self, stalls_only: bool = False) -> None:
        super().__init__()
        self.found: list[str] = []
        self.host = False  # True while the code runs on host data (a batch cut before it is moved)
        # stalls_only: count a read-back only where device work was queued since the last one (a second
        # read-back right after the first waits for nothing but its own copy)
        self.stalls_only, self.queued, self.reading = stalls_only, False, False

    def note(self, what: str) -> None:
        if self.host or _allowed() or (self.stalls_only and not self.queued):
            return
        self.found.append(f"{what} at {_where()}")
        self.queued = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        places = {place(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        device_data = bool(places - {"host"})
        if packet in READ_BACK and not on_host(args[0]):
            self.note(str(packet))
        elif packet in (aten.index, aten.index_put, aten.index_put_) and device_data and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or [])):
            self.note(f"{packet} with a boolean mask")
        elif (packet is aten.repeat_interleave and kwargs.get("output_size") is None and func.__name__ == "Tensor"
              and device_data):
            self.note("repeat_interleave without output_size")
        elif packet in (aten.ctc_loss, aten._ctc_loss) and any(
                isinstance(n, torch.Tensor) and not on_host(n) for n in args[2:4]):
            self.note("ctc_loss with its lengths on the device")
        out = func(*args, **kwargs)
        where = ("host" if self.host else "open" if not places else "device" if "device" in places
                 else "host" if "host" in places else "open")
        tag(tree_leaves(out), where)
        # device work that a later read-back waits for: a kernel on device data (not a view, not the
        # read-back's own copy)
        self.queued |= where != "host" and packet not in READ_BACK and not func.is_view and not self.reading
        for i in HOST_OUTPUTS.get(packet, ()):
            tag([out[i]])
        return out


@contextmanager
def counting(counter: SyncCounter):
    """``counter`` active, with the Python-level host copies patched to report to it."""
    originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy", "cpu", "to", "cuda")}

    def reading(name):
        def call(self, *args, **kwargs):
            if not on_host(self):
                counter.note(f"Tensor.{name}")
            counter.reading = True
            try:
                return originals[name](self, *args, **kwargs)
            finally:
                counter.reading = False
        return call

    def cuda(self, *args, **kwargs):
        counter.note("Tensor.cuda")
        return originals["cuda"](self, *args, **kwargs)

    def to(self, *args, **kwargs):
        out = originals["to"](self, *args, **kwargs)
        if place(self) == "device" or not _names_device(args, kwargs):
            return out  # a conversion, or device data staying where it is
        # host data copied to the device; torch's own moves (clip_grad_norm_ gathering norms on one
        # device) are no copy here, the project's blocking ones are
        if not kwargs.get("non_blocking", False) and _counted(sys._getframe(1)):
            counter.note("Tensor.to(device) without non_blocking")
        copy = out.clone()
        return tag([copy], "device")[0]

    patches = {"tolist": reading("tolist"), "numpy": reading("numpy"), "cpu": reading("cpu"), "to": to, "cuda": cuda}
    factories = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}

    def from_host_data(name):
        def call(data, *args, **kwargs):
            # host data (a number, a list, an array) made into a tensor on a named device: a blocking copy
            if (kwargs.get("device") is not None and not isinstance(data, torch.Tensor)
                    and _counted(sys._getframe(1))):
                counter.note(f"torch.{name}(host data, device=...) (a blocking copy)")
            return factories[name](data, *args, **kwargs)
        return call

    for name, patch in patches.items():
        setattr(torch.Tensor, name, patch)
    for name in factories:
        setattr(torch, name, from_host_data(name))
    try:
        with counter:
            yield counter
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        for name, original in factories.items():
            setattr(torch, name, original)


def _names_device(args: tuple, kwargs: dict) -> bool:
    """Whether ``Tensor.to(*args, **kwargs)`` names a device (directly or as another device tensor's)."""
    if kwargs.get("device") is not None or any(isinstance(a, (str, torch.device)) for a in args):
        return True
    return any(isinstance(a, torch.Tensor) and place(a) == "device" for a in args)


class _Batches:
    """``task`` whose training batches are made with the counter told that it is host work."""

    def __init__(self, task, make_batches, counter: SyncCounter) -> None:
        self._task, self._make, self._counter = task, make_batches, counter

    def __getattr__(self, name):
        return getattr(self._task, name)

    def train_batches(self, batch_size, generator):
        batches = iter(self._make(batch_size, generator))
        while True:
            self._counter.host = True
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self._counter.host = False
            yield batch


CELLS = [  # every task kind, every model that serves it
    ("digits", "vit"), ("digits", "resnet"),
    ("pystdlib", "gpt"), ("pystdlib", "lstm"),
    ("reverse", "transformer"), ("reverse", "lstm_seq2seq"),
    ("synth_commands", "conformer"), ("synth_commands", "lstm_classifier"), ("synth_commands", "kws_resnet"),
    ("synth_digits", "conformer"), ("synth_digits", "bilstm_ctc"), ("synth_digits", "las"),
    ("pendulum-mixed", "decision_transformer"), ("pendulum-mixed", "decision_lstm"), ("pendulum-mixed", "bc_mlp"),
    ("pendulum-mixed", "bc_top10"), ("pendulum-mixed", "iql"), ("cartpole-mixed", "decision_transformer"),
    ("cartpole-mixed", "iql"),
]
_tasks: dict[str, object] = {}


@pytest.mark.parametrize("task_name,model", CELLS)
def test_training_steps_never_wait_for_the_device(task_name, model):
    if get_task_class(task_name).domain == "rl":
        pytest.importorskip("gymnasium")
    if task_name not in _tasks:
        _tasks[task_name] = create_task(task_name)
        _tasks[task_name].setup()
    task = _tasks[task_name]
    cell = CellTrainer(task, get_model_entry(model), 0, RunConfig(steps=3, batch_size=8))
    cell.setup()
    # On CUDA the trainer's AdamW is the fused one, which keeps its step count on the device; the
    # CPU's default (foreach) reads a host step count back each step. Count the CUDA path.
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in cell.optimizer.param_groups]
    cell.optimizer = torch.optim.AdamW(groups, lr=cell.resolved["lr"], fused=True)
    cell.scheduler = torch.optim.lr_scheduler.LambdaLR(cell.optimizer, lambda step: 1.0)
    bar = type("Bar", (), {"update": lambda self, n=1: None})()
    counter = SyncCounter()
    make_batches = task.train_batches
    # A task that holds its data on the device (``Task.held``) cuts its batches there: count that too.
    # One that holds nothing cuts them on the host (trimming to the batch's length, say) and the
    # trainer moves them with non-blocking copies: that part is host work, not a sync.
    cell.task = _Batches(task, make_batches, counter) if not task.held else task
    with counting(counter):
        cell.train_epoch(bar)  # three steps, then the epoch's mean loss (allowed)
    assert cell.state.step == 3
    assert counter.found == [], "\n".join(counter.found[:20])


def _count(run) -> list[str]:
    counter = SyncCounter()
    with counting(counter):
        run()
    return counter.found


def test_the_counter_sees_lengths_read_back_and_blocking_copies():
    """The counter can fail: the syncs it exists to find are found, and the host paths pass."""
    torch.manual_seed(0)
    x, lengths = torch.randn(3, 7, 4), torch.tensor([7, 2, 5])
    encoder = RNNEncoder(4, 6)
    device_lengths = lengths.clone()  # untagged: taken to be on the device
    host_lengths = tag([lengths.clone()])[0]
    assert any("Tensor.cpu" in f for f in _count(lambda: encoder(x, device_lengths)))
    assert _count(lambda: encoder(x, host_lengths)) == []
    # a pyramidal listener keeps host lengths on the host and sends only the mask to the device
    listener = PyramidalListener(4, 6, (1, 2))
    assert _count(lambda: on_host(listener(x, host_lengths)[1]) or pytest.fail("lengths left the host")) == []
    # CTC: lengths on the device are read back, lengths on the host are not
    log_probs = torch.randn(7, 3, 5).log_softmax(-1)
    targets, target_lengths = torch.tensor([[1, 2], [3, 0], [4, 4]]), torch.tensor([2, 1, 2])
    found = _count(lambda: F.ctc_loss(log_probs, targets, device_lengths, target_lengths))
    assert any("ctc_loss" in f for f in found)
    host_target_lengths = tag([target_lengths.clone()])[0]
    assert _count(lambda: F.ctc_loss(log_probs, targets, host_lengths, host_target_lengths)) == []
    # a value read back from device data, a blocking copy of host data; the non-blocking copy is fine
    assert any("_local_scalar_dense" in f for f in _count(lambda: bool(device_lengths.max() > 3)))
    assert _count(lambda: bool(host_lengths.max() > 3)) == []
    # (a blocking copy counts where the project's code makes it: code run as if it were a module of ours)
    ours = {"__name__": "harness.probe"}
    assert any("non_blocking" in f for f in _count(lambda: eval("t.to(d)", {**ours, "t": host_lengths, "d": x.device})))
    made = "torch.tensor(3, device=d)"
    assert any("blocking copy" in f for f in _count(lambda: eval(made, {**ours, "torch": torch, "d": x.device})))
    assert _count(lambda: eval(made, {"__name__": "elsewhere", "torch": torch, "d": x.device})) == []
    # ... or a library it calls: torchvision's Normalize makes its constants on the device at every call
    from torchvision.transforms import v2
    normalize = "v2.Normalize([0.5], [0.2])(images)"
    images = torch.rand(2, 1, 4, 4)
    assert any("blocking copy" in f for f in _count(lambda: eval(normalize, {**ours, "v2": v2, "images": images})))
    moved = []
    assert _count(lambda: moved.append(to_device((host_lengths,), x.device))) == []
    assert not on_host(moved[0][0]), "a moved tensor is device data"


EVAL_CELLS = [cell for cell in CELLS if get_task_class(cell[0]).domain != "rl"]


@pytest.mark.parametrize("task_name,model", EVAL_CELLS)
def test_evaluation_waits_for_the_device_at_most_once_per_batch(task_name, model):
    """The harness's evaluation of a split (metrics and per-item outcomes) reads back at most once per
    batch, and once at the end. Offline RL is not here: its evaluation is rollouts, where each action
    goes to the environment on the host, one read-back per environment step by nature."""
    if task_name not in _tasks:
        _tasks[task_name] = create_task(task_name)
        _tasks[task_name].setup()
    task = _tasks[task_name]
    net = create_model(model, task.spec, "tiny")
    if not task.held:  # a task that holds nothing on the device keeps its data on the host
        tag([t for v in vars(task).values() for t in (v.values() if isinstance(v, dict) else [v])])
    counter = SyncCounter(stalls_only=True)
    # three validation batches, cut on the host as the harness cuts them
    host_batches = [tuple(t if t is None else tag([t])[0] for t in batch)
                    for batch in list(task.eval_batches("val", 8))[:3]]
    evaluated = _Batches(task, None, counter)
    evaluated.eval_batches = lambda split, batch_size: iter(host_batches)
    items = ItemLog()
    with counting(counter):
        metrics = evaluate(evaluated, net, "val", 8, torch.device("cpu"), "fp32", items=items)
        columns = items.columns()
    assert metrics and len(columns["value"]) == sum(len(b[0]) for b in host_batches)
    assert len(counter.found) <= len(host_batches) + 1, "\n".join(counter.found)
