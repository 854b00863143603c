"""python -m harness bench: the reference pairs compute the same thing, and the command writes its tables."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from harness import bench
from harness.cli import main


def test_reference_pairs_share_weights_and_outputs():
    pairs, skipped = bench.make_pairs(torch.device("cpu"), skip=[])
    names = {p.name for p in pairs}
    assert {"vit", "conformer", "transformer"} <= names, skipped
    for pair in pairs:
        inputs = pair.inputs()
        ours = pair.ours.eval()
        for label, theirs in pair.theirs.items():
            if label == "timm":  # same architecture and shapes, its own initialisation
                assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
                continue
            theirs.eval()
            with torch.no_grad():
                torch.testing.assert_close(pair.forward(ours, inputs), pair.forward(theirs, inputs),
                                           atol=1e-4, rtol=1e-4, msg=f"{pair.name} vs {label}")


def test_median_time_counts_only_timed_calls():
    calls = []
    seconds = bench.median_time(lambda: calls.append(1), torch.device("cpu"), warmup=3, iters=5)
    assert len(calls) == 8 and 0 <= seconds < 0.01


def test_bench_command_writes_the_three_tables(tmp_path, capsys):
    code = main(["bench", "--device", "cpu", "--warmup", "1", "--iters", "2", "--seq-lens", "16,32",
                 "--skip", "vit,transformer,gpt,decision_transformer", "--out", str(tmp_path)])
    assert code == 0
    attention = pd.read_csv(tmp_path / "bench_attention_cpu.csv")
    assert len(attention) == 2 * 2 * 2 * 2 and set(attention["backend"]) == {"sdpa", "math"}
    assert (attention["fwd_bwd_ms"] > 0).all()
    assert (attention.loc[attention.backend == "math", "fwd_ms_vs_math"] == 1).all()
    models = pd.read_csv(tmp_path / "bench_cpu.csv")
    assert list(models["model"]) == ["conformer (zoo)", "conformer (torchaudio)"]
    for column in ("param_count", "train_samples_per_sec", "train_step_ms", "infer_samples_per_sec", "infer_step_ms",
                   "peak_mem_mb", "backend", "precision", "compile", "device", "torch_version"):
        assert column in models.columns, column
    assert models["param_count"].nunique() == 1
    ratios = pd.read_csv(tmp_path / "bench_reference_cpu.csv")
    assert list(ratios["reference"]) == ["torchaudio"] and ratios["train_ratio"].between(0.1, 10).all()
    assert "bench_reference_cpu.csv" in capsys.readouterr().out


def test_bench_bad_sequence_lengths_is_a_one_line_error(tmp_path, capsys):
    assert main(["bench", "--seq-lens", "16,x", "--out", str(tmp_path)]) == 2
    assert "--seq-lens: expected comma-separated positive integers" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sdpa_kernel_is_reported_on_cuda():
    rows = bench.bench_attention(torch.device("cuda"), [256], 1, 2, torch.bfloat16)
    assert {r["kernel"] for r in rows if r["backend"] == "sdpa" and not r["bias"]} & {"flash", "efficient", "cudnn"}
