"""python -m harness bench: the reference pairs compute the same thing, and the command writes its tables."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

import zoo.registry as registry
from harness import bench
from zoo.core import MambaMixer, MultiHeadAttention
from zoo.reference import Reference, call
from harness.cli import main


def references_but(*keep: str) -> list[str]:
    """Every registered model with a reference except ``keep``: what --skip leaves out to keep a test short."""
    return [n for n in registry.list_models() if registry.get_model_entry(n).reference is not None and n not in keep]


def test_reference_pairs_share_weights_and_outputs():
    pairs, skipped = bench.make_pairs(torch.device("cpu"), skip=[])
    names = {p.name for p in pairs}
    assert {"vit", "conformer", "transformer"} <= names, skipped
    for pair in pairs:
        ref = pair.ref
        inputs = ref.inputs()
        ours = ref.ours.eval()
        for label, theirs in ref.theirs.items():
            if label == "timm":  # same architecture and shapes, its own initialisation
                assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
                continue
            theirs.eval()
            with torch.no_grad():
                torch.testing.assert_close(ref.forward(ours, inputs), ref.forward(theirs, inputs),
                                           atol=1e-4, rtol=1e-4, msg=f"{pair.name} vs {label}")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_raw_sdpa_does_the_work_of_the_core(causal, with_bias):
    """The bench's raw row times the same computation as the core's attention, on the same tensors."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4)
    x = torch.randn(2, 7, 32)
    bias = torch.randn(1, 4, 7, 7) if with_bias else None
    torch.testing.assert_close(bench.raw_sdpa(attn, x, causal, bias), attn(x, causal=causal, bias=bias, backend="math"))


def test_a_model_that_declares_a_reference_gets_a_bench_row(monkeypatch):
    """Adding a model with a reference adds its pair, with no edit of harness/bench.py."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    def reference(device):
        ours, theirs = nn.Linear(4, 2), nn.Linear(4, 2)
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(3, 4, device=device)
        return Reference(ours, {"torch.nn.Linear": theirs}, lambda: (x,), call, 3, "4")

    registry.register_model("toy_linear", family="baseline", kinds="classification", reference=reference)(
        lambda spec: nn.Linear(4, 2))
    pairs, _ = bench.make_pairs(torch.device("cpu"), skip=references_but("toy_linear"))
    assert [p.name for p in pairs] == ["toy_linear"]
    models, ratios = bench.bench_pairs(pairs, torch.device("cpu"), "fp32", warmup=1, iters=2, compile=False)
    assert [r["model"] for r in models] == ["toy_linear (zoo)", "toy_linear (torch.nn.Linear)"]
    assert [r["reference"] for r in ratios] == ["torch.nn.Linear"]


def test_median_time_counts_only_timed_calls():
    calls = []
    seconds = bench.median_time(lambda: calls.append(1), torch.device("cpu"), warmup=3, iters=5)
    assert len(calls) == 8 and 0 <= seconds < 0.01


def test_bench_command_writes_the_four_tables(tmp_path, capsys):
    code = main(["bench", "--device", "cpu", "--warmup", "1", "--iters", "2", "--seq-lens", "16,32",
                 "--skip", ",".join(references_but("conformer")), "--out", str(tmp_path)])
    assert code == 0
    attention = pd.read_csv(tmp_path / "bench_attention_cpu.csv")
    assert len(attention) == 2 * 2 * 2 * 3 and set(attention["backend"]) == {"sdpa", "math", "raw"}
    assert (attention["fwd_bwd_ms"] > 0).all()
    assert (attention.loc[attention.backend == "math", "fwd_ms_vs_math"] == 1).all()
    assert (attention.loc[attention.backend == "raw", "fwd_bwd_ms_vs_raw"] == 1).all()
    assert attention.loc[attention.backend == "sdpa", "fwd_ms_vs_raw"].notna().all()
    models = pd.read_csv(tmp_path / "bench_cpu.csv")
    assert list(models["model"]) == ["conformer (zoo)", "conformer (torchaudio)"]
    for column in ("param_count", "train_samples_per_sec", "train_step_ms", "infer_samples_per_sec", "infer_step_ms",
                   "peak_mem_mb", "backend", "precision", "compile", "device", "torch_version"):
        assert column in models.columns, column
    assert models["param_count"].nunique() == 1
    ratios = pd.read_csv(tmp_path / "bench_reference_cpu.csv")
    assert list(ratios["reference"]) == ["torchaudio"] and ratios["train_ratio"].between(0.1, 10).all()
    mixers = pd.read_csv(tmp_path / "bench_mixer_cpu.csv")
    assert list(mixers["seq_len"]) == [16] * 3 + [32] * 3 and list(mixers["mixer"][:3]) == ["attention", "ssm", "mambapy"]
    assert (mixers[["train_ms", "saved_mb"]] > 0).all().all()
    printed = capsys.readouterr().out
    assert "bench_reference_cpu.csv" in printed and "mixers, training step: the SSM is at or below attention" in printed


def test_the_mixer_bench_times_what_the_mixers_compute():
    """The rows are the slot's causal mixers at one length; the token step continues the prefix exactly."""
    cases = bench._mixer_cases(torch.device("cpu"), torch.float32)
    x = torch.randn(2, 9, bench.MIXER_DIM)
    ssm, call = cases["ssm"]
    assert isinstance(ssm, MambaMixer) and not ssm.bidirectional
    torch.testing.assert_close(cases["mambapy"][1](x), call(x), atol=1e-5, rtol=1e-5)  # the same weights
    for name in ("attention", "ssm"):
        module, call = cases[name]
        cache = module.new_cache()
        with torch.no_grad():
            call(x[:, :8], cache)
            torch.testing.assert_close(call(x[:, 8:], cache), call(x)[:, 8:], atol=1e-5, rtol=1e-5, msg=name)


def test_saved_memory_counts_what_backward_keeps():
    w = torch.randn(256, 256, requires_grad=True)
    x = torch.randn(64, 256)
    assert bench.saved_mb(lambda: (x @ w).sum()) == pytest.approx((x.numel() * 4) / 2 ** 20)  # matmul keeps x
    with torch.no_grad():
        assert bench.saved_mb(lambda: (x @ w).relu()) == 0


def test_the_crossover_is_the_length_from_which_the_ssm_stays_cheaper():
    rows = [{"seq_len": T, "mixer": "ssm", "train_ms_vs_attention": r, "token_ms_vs_attention": 2.0,
             "saved_mb_vs_attention": 2.0} for T, r in ((64, 2.0), (128, 0.9), (256, 1.1), (512, 0.8), (1024, 0.5))]
    assert bench.crossover(rows, "train_ms") == 512 and bench.crossover(rows, "token_ms") is None
    lines = bench.crossover_lines(rows)
    assert lines[0].startswith("training step: the SSM is at or below attention from T=512")
    assert "at no length up to 1024" in lines[1]


def test_bench_bad_sequence_lengths_is_a_one_line_error(tmp_path, capsys):
    assert main(["bench", "--seq-lens", "16,x", "--out", str(tmp_path)]) == 2
    assert "--seq-lens: expected comma-separated positive integers" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sdpa_kernel_is_reported_on_cuda():
    rows = bench.bench_attention(torch.device("cuda"), [256], 1, 2, torch.bfloat16)
    assert {r["kernel"] for r in rows if r["backend"] == "sdpa" and not r["bias"]} & {"flash", "efficient", "cudnn"}
