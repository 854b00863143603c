"""The training fast path, checked on the CPU: data held on a device makes its batches there (the
``meta`` device stands in for a GPU), and channels_last changes the layout, not the result."""

from __future__ import annotations

import pytest
import torch

import baselines  # noqa: F401  (registers the baselines)
from harness.config import RunConfig
from harness.devices import hold_data, to_device, use_channels_last
from harness.trainer import run_cell
from tasks import create_task
from tasks.base import TensorBatches
from zoo.registry import create_model

META = torch.device("meta")


@pytest.fixture(scope="module")
def digits():
    task = create_task("digits")
    task.setup()
    return task


def test_tensor_batches_shuffle_where_the_data_is():
    x = torch.arange(10.0).to(META)
    batches = list(TensorBatches((x,), 4, generator=torch.Generator().manual_seed(0)))
    assert [b[0].device for b in batches] == [META] * 3 and [len(b[0]) for b in batches] == [4, 4, 2]
    cpu = list(TensorBatches((torch.arange(10.0),), 4, generator=torch.Generator().manual_seed(0)))
    assert sorted(torch.cat([b[0] for b in cpu]).tolist()) == list(range(10))  # a permutation, each once


@pytest.mark.parametrize("name, options", [("digits", {}), ("text_file", {"block_size": 16}),
                                           ("reverse", {})])
def test_held_data_makes_batches_on_its_device(name, options, tmp_path):
    data_dir = tmp_path
    if name == "text_file":
        data_dir = tmp_path / "corpus.txt"
        data_dir.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    task = create_task(name, data_dir=data_dir, **options)
    task.setup()
    cpu_train = next(iter(task.train_batches(8, torch.Generator().manual_seed(0))))
    if not task.held:  # seq2seq trims its batches by their content: that needs the host
        assert task.hold_on(META) is False and task.data_bytes() == 0
        return
    assert task.data_bytes() > 0
    assert task.hold_on(META) is True
    train = next(iter(task.train_batches(8, torch.Generator().manual_seed(0))))
    val = next(iter(task.eval_batches("val", 8)))
    for got, want in zip(train, cpu_train):
        assert got.device == META and got.shape == want.shape and got.dtype == want.dtype
    assert all(t.device == META for t in val)


def test_hold_data_follows_its_mode(digits):
    assert hold_data(digits, torch.device("cpu"), "on") is False  # already where the model is
    assert hold_data(digits, META, "off") is False
    assert hold_data(digits, META, "auto") is False  # auto holds on CUDA only
    assert digits.images["train"].device.type == "cpu"


def test_channels_last_is_for_convolutions_and_auto_means_cuda():
    spec = {"kind": "classification", "modality": "image", "input_shape": (1, 8, 8), "num_classes": 10}
    resnet = create_model("resnet", spec)
    lstm_spec = {"kind": "language_modeling", "vocab_size": 11, "block_size": 8}
    assert use_channels_last(resnet, torch.device("cpu"), "on")
    assert not use_channels_last(resnet, torch.device("cpu"), "auto")
    assert use_channels_last(resnet, torch.device("cuda"), "auto")
    assert not use_channels_last(resnet, torch.device("cuda"), "off")
    assert not use_channels_last(create_model("lstm", lstm_spec), torch.device("cuda"), "on")
    x, y = to_device((torch.randn(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)), torch.device("cpu"), True)
    assert x.is_contiguous(memory_format=torch.channels_last) and y.dim() == 1


def test_channels_last_trains_to_the_same_result(digits):
    records = {mode: run_cell(digits, "resnet", 0, RunConfig(steps=8, channels_last=mode), progress=False)
               for mode in ("off", "on")}
    assert records["on"]["channels_last"] is True and records["off"]["channels_last"] is False
    assert records["on"]["data_on_device"] is False
    assert records["on"]["config_hash"] == records["off"]["config_hash"]  # the same cell, another layout
    assert records["on"]["history"][-1]["train_loss"] == pytest.approx(records["off"]["history"][-1]["train_loss"],
                                                                        rel=1e-4)
    assert records["on"]["metric_value"] == pytest.approx(records["off"]["metric_value"], abs=0.01)


def test_fast_defaults_unless_deterministic():
    from harness.devices import set_deterministic, uses_tf32
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    try:
        set_deterministic(False)
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert uses_tf32(torch.device("cuda"), "fp32") and not uses_tf32(torch.device("cuda"), "bf16")
        assert not uses_tf32(torch.device("cpu"), "fp32")
        set_deterministic(True)
        assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
        assert torch.are_deterministic_algorithms_enabled() and not uses_tf32(torch.device("cuda"), "fp32")
    finally:
        set_deterministic(False)
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = before[:3]
        torch.use_deterministic_algorithms(before[3])
        torch.backends.cudnn.deterministic = before[4]


def test_held_images_are_made_channels_last_once_so_batches_need_no_conversion(digits):
    from tasks import create_task
    task = create_task("digits")
    task.setup()
    assert task.hold_on(META, channels_last=True) is True
    assert task.images["train"].is_contiguous(memory_format=torch.channels_last)
    assert task.labels["train"].device == META
    images, labels = next(iter(task.train_batches(8, torch.Generator().manual_seed(0))))
    assert images.is_contiguous(memory_format=torch.channels_last)  # cut and normalised in NHWC already


def test_compilation_is_timed_apart_from_training(monkeypatch):
    import time as time_mod

    import harness.trainer as trainer_mod
    from harness.config import RunConfig
    from tasks import create_task
    from zoo.registry import get_model_entry

    class SlowFirstCall(torch.nn.Module):  # stands in for torch.compile: the first forward pays 0.3 s
        def __init__(self, model):
            super().__init__()
            self.model, self.calls = model, 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 1:
                time_mod.sleep(0.3)
            return self.model(*args, **kwargs)

    slow_first_call = SlowFirstCall

    monkeypatch.setattr(trainer_mod.torch, "compile", slow_first_call)
    task = create_task("digits")
    task.setup()
    cell = trainer_mod.CellTrainer(task, get_model_entry("vit"), 0, RunConfig(steps=4, batch_size=8, compile=True))
    cell.setup()
    cell.train(progress=False)
    assert cell.state.warmup_time >= 0.3 and cell.state.warmup_samples == 8
    assert cell.state.train_time < cell.state.warmup_time + 0.25  # the other three steps of a tiny ViT
    record = cell.record(cell.test())
    assert record["compile_time_s"] == record["warmup_time_s"] == cell.state.warmup_time
    assert record["train_samples_per_sec"] == pytest.approx(24 / cell.state.train_time)
