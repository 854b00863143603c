"""CUDA checks (marked ``cuda``; skipped without a GPU): backend agreement and parity on the GPU, in
fp32 and bf16, and one short training cell with bf16 autocast and fused AdamW."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

from zoo.core import MultiHeadAttention  # noqa: E402


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_math_on_cuda(dtype, tol, causal):
    torch.manual_seed(0)
    attn = MultiHeadAttention(128, 4).cuda().to(dtype)
    x = torch.randn(3, 200, 128, device="cuda", dtype=dtype)
    torch.testing.assert_close(attn(x, causal=causal, backend="sdpa").float(),
                               attn(x, causal=causal, backend="math").float(), atol=tol, rtol=tol)


def test_vit_matches_torchvision_on_cuda():
    import torchvision

    from zoo.vit import VisionTransformer
    torch.manual_seed(0)
    tv = torchvision.models.VisionTransformer(image_size=32, patch_size=4, num_layers=2, num_heads=4,
                                              hidden_dim=64, mlp_dim=128, num_classes=10).cuda().eval()
    ours = VisionTransformer.from_torchvision(tv).cuda().eval()
    x = torch.randn(8, 3, 32, 32, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-4, rtol=1e-4)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            torch.testing.assert_close(ours(x).float(), tv(x).float(), atol=5e-2, rtol=5e-2)


def test_a_cell_trains_on_cuda_in_bf16():
    from harness.config import RunConfig
    from harness.trainer import run_cell
    from tasks import create_task
    task = create_task("digits")
    task.setup()
    record = run_cell(task, "vit", 0, RunConfig(steps=20, device="cuda", precision="bf16"), progress=False)
    assert record["device"] == "cuda" and record["precision"] == "bf16" and record["peak_mem_mb"] > 0
    assert 0 <= record["metric_value"] <= 1


def test_the_fast_path_holds_data_on_the_gpu_and_trains_cnns_channels_last():
    import baselines  # noqa: F401
    from harness.config import RunConfig
    from harness.trainer import run_cell
    from tasks import create_task
    task = create_task("digits")
    task.setup()
    record = run_cell(task, "resnet", 0, RunConfig(steps=20, device="cuda", precision="bf16"), progress=False)
    assert record["data_on_device"] is True and record["channels_last"] is True
    assert task.images["train"].device.type == "cuda"
    batch = next(iter(task.train_batches(8, torch.Generator().manual_seed(0))))
    assert all(t.device.type == "cuda" for t in batch)
    assert 0 <= record["metric_value"] <= 1


def test_packed_lstms_take_host_lengths_on_cuda():
    """A bidirectional LSTM packed by host lengths (the tasks keep them there, ``Task.on_host``) on CUDA
    gives what it gives on the CPU, and a seq2seq cell whose source mask stays on the host trains."""
    import baselines  # noqa: F401
    from baselines.rnn import RNNEncoder
    from harness.config import RunConfig
    from harness.trainer import run_cell
    from tasks import create_task
    torch.manual_seed(0)
    encoder = RNNEncoder(5, 8, 2)
    x, lengths = torch.randn(4, 9, 5), torch.tensor([9, 2, 0, 6])
    out, (h, c) = encoder(x, lengths)
    out_gpu, (h_gpu, c_gpu) = encoder.cuda()(x.cuda(), lengths)
    for ours, theirs in ((out_gpu, out), (h_gpu, h), (c_gpu, c)):
        torch.testing.assert_close(ours.cpu(), theirs, atol=1e-5, rtol=1e-5)
    task = create_task("reverse")
    task.setup()
    record = run_cell(task, "lstm_seq2seq", 0, RunConfig(steps=5, device="cuda", precision="bf16"), progress=False)
    assert record["device"] == "cuda" and 0 <= record["metric_value"] <= 1


@pytest.mark.parametrize("name", ["conformer", "bilstm_ctc", "las"])
def test_transcription_losses_take_host_lengths_on_cuda(name):
    """The transcription loss with the batch as the harness moves it (features and targets on the GPU,
    frames and target lengths on the host: ``Task.on_host``) runs forward and backward in bf16, and
    gives what the same batch gives on the CPU in fp32 (within bf16's tolerance)."""
    import baselines  # noqa: F401
    from tasks.speech.transcription import TranscriptionTask
    from zoo import create_model
    spec = {"kind": "transcription", "modality": "audio", "input_dim": 40, "vocab_size": 12, "blank_id": 0,
            "pad_id": 0, "bos_id": 1, "eos_id": 2, "max_tgt_len": 6, "max_frames": 96}
    torch.manual_seed(0)
    model = create_model(name, spec, "tiny").eval()
    g = torch.Generator().manual_seed(0)
    feats, frames = torch.randn(4, 96, 40, generator=g), torch.tensor([96, 70, 51, 88])
    targets, target_lengths = torch.randint(3, 12, (4, 5), generator=g), torch.tensor([5, 3, 4, 2])
    targets[torch.arange(5)[None, :] >= target_lengths[:, None]] = 0
    cpu_loss = TranscriptionTask.loss(None, model, (feats, frames, targets, target_lengths))
    model.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = TranscriptionTask.loss(None, model, (feats.cuda(), frames, targets.cuda(), target_lengths))
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(loss.float().cpu(), cpu_loss, atol=0.05, rtol=0.05)
