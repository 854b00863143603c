"""python -m harness bench: speed, measured as ratios within one run.

Three tables, each written to ``results/`` and printed:

``bench_attention_<device>.csv``
    The core's ``MultiHeadAttention`` (B=4, 4 heads of 32) with the ``sdpa`` and ``math`` backends,
    across sequence lengths, causal or not, with or without an additive bias; forward and
    forward+backward; on CUDA also the SDPA kernel that ran (from the profiler).
``bench_<device>.csv``
    timm-style rows for each model of the reference pairs below (ours and theirs): param_count,
    train_step_ms / train_samples_per_sec (forward, a scalar loss, backward, AdamW step),
    infer_step_ms / infer_samples_per_sec (no_grad forward), peak_mem_mb, and on CUDA the model FLOPs
    utilisation of the training step (counted FLOPs / time / the GPU's dense bf16 peak).
``bench_reference_<device>.csv``
    ours / theirs train-step time for the same configuration and weights: zoo ViT vs timm's and
    torchvision's, zoo Conformer vs torchaudio's, the zoo encoder-decoder stacks vs
    ``torch.nn.Transformer``, zoo GPT vs Hugging Face GPT-2, zoo DT vs Hugging Face's
    DecisionTransformerModel (those needing timm or transformers are skipped when not installed).

Timing follows timm's benchmark.py: ``warmup`` untimed iterations, then ``iters`` timed ones, the
median; CUDA is synchronised around every timed call. Ours and theirs are measured alternately,
half of the timed iterations at a time (ours, theirs, ours, theirs), and the median is taken over all
of each side's timed iterations, so that a slow spell of the machine does not land on one side only.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import Tensor, nn

from zoo.core import MultiHeadAttention

from .records import atomic_write_text, device_name, git_commit
from .runner import PeakMemory, _autocast

# dense bf16 peak FLOP/s of GPUs we may meet (for MFU); matched by substring of the device name
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12,
             "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timings(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> list[float]:
    """Seconds of each of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of ``fn`` over ``iters`` calls after ``warmup`` untimed ones."""
    return statistics.median(timings(fn, device, warmup, iters))


# ------------------------------------------------------------------------------------ attention

def sdpa_kernel(fn: Callable[[], Any]) -> str:
    """Which SDPA implementation ran on CUDA (flash, efficient, cudnn or math), from the profiler."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    names = " ".join(e.name.lower() for e in prof.events())
    for kernel in ("flash", "efficient", "cudnn"):
        if kernel in names:
            return kernel
    return "math"


def bench_attention(device: torch.device, seq_lens: list[int], warmup: int, iters: int,
                    dtype: torch.dtype) -> list[dict[str, Any]]:
    rows = []
    attn = MultiHeadAttention(128, 4).to(device, dtype)
    for T in seq_lens:
        x = torch.randn(4, T, 128, device=device, dtype=dtype, requires_grad=True)
        bias = torch.randn(1, 4, T, T, device=device, dtype=dtype)
        for causal in (False, True):
            for with_bias in (False, True):
                for backend in ("sdpa", "math"):
                    call = lambda: attn(x, causal=causal, bias=bias if with_bias else None,  # noqa: E731
                                        backend=backend)

                    def fwd_bwd():
                        call().sum().backward()

                    with torch.no_grad():
                        fwd = median_time(call, device, warmup, iters)
                    both = median_time(fwd_bwd, device, warmup, iters)
                    kernel = sdpa_kernel(call) if device.type == "cuda" and backend == "sdpa" else ""
                    rows.append({"seq_len": T, "causal": causal, "bias": with_bias, "backend": backend,
                                 "fwd_ms": 1e3 * fwd, "fwd_bwd_ms": 1e3 * both, "kernel": kernel})
    df = pd.DataFrame(rows)
    key = ["seq_len", "causal", "bias"]
    math = df[df.backend == "math"].set_index(key)
    for col in ("fwd_ms", "fwd_bwd_ms"):
        df[f"{col}_vs_math"] = [r[col] / math.loc[tuple(r[k] for k in key), col] for _, r in df.iterrows()]
    return df.to_dict("records")


# ------------------------------------------------------------------------------------ reference pairs

class Pair:
    """Ours and theirs with the same configuration (and, where a converter exists, the same weights):
    ``inputs`` builds one batch, ``forward`` maps (model, inputs) to the tensor the loss reads."""

    def __init__(self, name: str, ours: nn.Module, theirs: dict[str, nn.Module], inputs: Callable[[], tuple],
                 forward: Callable[[nn.Module, tuple], Tensor], batch_size: int, input_size: str) -> None:
        self.name, self.ours, self.theirs, self.inputs, self.forward = name, ours, theirs, inputs, forward
        self.batch_size, self.input_size = batch_size, input_size


def _call(model: nn.Module, inputs: tuple) -> Tensor:
    return model(*inputs)


def make_pairs(device: torch.device, skip: list[str]) -> tuple[list[Pair], list[str]]:
    """The reference pairs that can be built here, and why the others cannot."""
    pairs, skipped = [], []
    torch.manual_seed(0)

    def attempt(name: str, build: Callable[[], Pair]) -> None:
        if name in skip:
            return
        try:
            pairs.append(build())
        except ImportError as e:
            skipped.append(f"{name}: {e.name or e} is not installed")

    def vit() -> Pair:
        import torchvision
        from zoo.vit import VisionTransformer
        tv = torchvision.models.VisionTransformer(image_size=32, patch_size=4, num_layers=6, num_heads=3,
                                                  hidden_dim=192, mlp_dim=768, num_classes=10)
        theirs = {"torchvision": tv}
        try:
            import timm
            theirs["timm"] = timm.models.vision_transformer.VisionTransformer(
                img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0, num_classes=10)
        except ImportError:
            skipped.append("vit vs timm: timm is not installed (pip install -e '.[bench]')")
        x = torch.randn(32, 3, 32, 32, device=device)
        return Pair("vit", VisionTransformer.from_torchvision(tv), theirs, lambda: (x,), _call, 32, "3x32x32")

    def conformer() -> Pair:
        import torchaudio
        from zoo.conformer import ConformerEncoder
        ta = torchaudio.models.Conformer(input_dim=144, num_heads=4, ffn_dim=576, num_layers=4,
                                         depthwise_conv_kernel_size=31)
        x = torch.randn(8, 200, 144, device=device)
        lengths = torch.full((8,), 200, device=device)
        return Pair("conformer", ConformerEncoder.from_torchaudio(ta), {"torchaudio": ta}, lambda: (x, lengths),
                    lambda m, i: m(*i)[0], 8, "200x144")

    def transformer() -> Pair:
        from zoo.transformer import EncoderDecoderTransformer
        ref = nn.Transformer(d_model=256, nhead=4, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=1024,
                             dropout=0.0, batch_first=True)
        ours = EncoderDecoderTransformer(8, 8, dim=256, num_heads=4, enc_layers=3, dec_layers=3, mlp_dim=1024,
                                         dropout=0.0, final_norm=True)
        result = ours.load_state_dict(_nn_transformer_weights(ref, ours), strict=False)
        assert not result.unexpected_keys and all(k.split(".")[0] in ("src_embed", "tgt_embed", "head")
                                                  for k in result.missing_keys), result
        src, tgt = torch.randn(32, 32, 256, device=device), torch.randn(32, 32, 256, device=device)
        mask = nn.Transformer.generate_square_subsequent_mask(32, device=device)
        return Pair("transformer", _Stacks(ours), {"torch.nn.Transformer": ref}, lambda: (src, tgt),
                    lambda m, i: m(*i) if isinstance(m, _Stacks) else m(*i, tgt_mask=mask, tgt_is_causal=True),
                    32, "32+32x256")

    def gpt() -> Pair:
        import transformers
        from zoo.transformer import GPT
        config = transformers.GPT2Config(vocab_size=256, n_positions=128, n_embd=256, n_layer=4, n_head=4,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                                         eos_token_id=None, attn_implementation="sdpa")
        hf = transformers.GPT2LMHeadModel(config)
        idx = torch.randint(0, 256, (16, 128), device=device)
        return Pair("gpt", GPT.from_hf(hf), {"hf GPT-2": hf}, lambda: (idx,),
                    lambda m, i: m(*i) if not hasattr(m, "transformer") else m(*i).logits, 16, "128 tokens")

    def decision_transformer() -> Pair:
        import transformers
        from zoo.decision_transformer import DecisionTransformer
        config = transformers.DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=128, n_layer=3,
                                                        n_head=1, max_ep_len=1000, resid_pdrop=0.0, embd_pdrop=0.0,
                                                        attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
                                                        attn_implementation="sdpa")
        hf = transformers.DecisionTransformerModel(config)
        B, K = 64, 20
        R, s, a = (torch.randn(B, K, n, device=device) for n in (1, 11, 3))
        t = torch.arange(K, device=device).expand(B, K).contiguous()
        mask = torch.ones(B, K, device=device, dtype=torch.long)

        def forward(m: nn.Module, i: tuple) -> Tensor:
            R, s, a, t, mask = i
            if isinstance(m, DecisionTransformer):
                return m.forward_all(R, s, a, t, mask)[1]
            return m(states=s, actions=a, returns_to_go=R, timesteps=t, attention_mask=mask).action_preds

        return Pair("decision_transformer", DecisionTransformer.from_hf(hf), {"hf DecisionTransformer": hf},
                    lambda: (R, s, a, t, mask), forward, B, "K=20")

    for name, build in (("vit", vit), ("conformer", conformer), ("transformer", transformer), ("gpt", gpt),
                        ("decision_transformer", decision_transformer)):
        attempt(name, build)
    return pairs, skipped


class _Stacks(nn.Module):
    """The encoder-decoder Transformer's stacks on embedded inputs: the work ``nn.Transformer`` does."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        m = self.model
        for block in m.encoder:
            src = block(src)
        memory = m.enc_norm(src)
        for block in m.decoder:
            tgt = block(tgt, memory)
        return m.dec_norm(tgt)


def _nn_transformer_weights(ref: nn.Transformer, ours: nn.Module) -> dict[str, Tensor]:
    """nn.Transformer's weights under our parameter names (attention: packed in_proj, out_proj)."""
    state = {}

    def mha(prefix: str, m: nn.MultiheadAttention) -> None:
        state.update({f"{prefix}.in_proj.weight": m.in_proj_weight, f"{prefix}.in_proj.bias": m.in_proj_bias,
                      f"{prefix}.out_proj.weight": m.out_proj.weight, f"{prefix}.out_proj.bias": m.out_proj.bias})

    def copy(prefix: str, m: nn.Module) -> None:
        state.update({f"{prefix}.weight": m.weight, f"{prefix}.bias": m.bias})

    for i, layer in enumerate(ref.encoder.layers):
        mha(f"encoder.{i}.attn", layer.self_attn)
        copy(f"encoder.{i}.mlp.fc1", layer.linear1), copy(f"encoder.{i}.mlp.fc2", layer.linear2)
        copy(f"encoder.{i}.res_attn.norm", layer.norm1), copy(f"encoder.{i}.res_mlp.norm", layer.norm2)
    for i, layer in enumerate(ref.decoder.layers):
        mha(f"decoder.{i}.self_attn", layer.self_attn), mha(f"decoder.{i}.cross_attn", layer.multihead_attn)
        copy(f"decoder.{i}.mlp.fc1", layer.linear1), copy(f"decoder.{i}.mlp.fc2", layer.linear2)
        copy(f"decoder.{i}.res_self.norm", layer.norm1), copy(f"decoder.{i}.res_cross.norm", layer.norm2)
        copy(f"decoder.{i}.res_mlp.norm", layer.norm3)
    copy("enc_norm", ref.encoder.norm), copy("dec_norm", ref.decoder.norm)
    return {k: v.detach().clone() for k, v in state.items()}


def measure(pair: Pair, model: nn.Module, device: torch.device, precision: str, warmup: int,
            iters: int) -> dict[str, Any]:
    """Train-step and inference times (lists of seconds) of one model of a pair."""
    model = model.to(device).train()
    inputs = pair.inputs()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def train_step() -> None:
        with _autocast(device, precision):
            loss = pair.forward(model, inputs).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.no_grad(), _autocast(device, precision):
            pair.forward(model, inputs)

    memory = PeakMemory(device)
    train = timings(train_step, device, warmup, iters)
    model.eval()
    infer = timings(infer_step, device, warmup, iters)
    return {"train": train, "infer": infer, "peak_mem_mb": memory.mb() if device.type == "cuda" else float("nan")}


def train_flops(pair: Pair, model: nn.Module, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    probe = copy.deepcopy(model).to(device).train()
    with FlopCounterMode(display=False) as counter:
        pair.forward(probe, pair.inputs()).float().square().mean().backward()
    return float(counter.get_total_flops())


def bench_pairs(pairs: list[Pair], device: torch.device, precision: str, warmup: int, iters: int,
                compile: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    models, ratios = [], []
    peak = next((v for k, v in BF16_PEAK.items() if k in device_name(device)), None) if device.type == "cuda" else None
    for pair in pairs:
        candidates = {"zoo": pair.ours, **pair.theirs}
        if compile:
            candidates = {k: torch.compile(v) for k, v in candidates.items()}
        times: dict[str, dict[str, Any]] = {label: {"train": [], "infer": [], "peak_mem_mb": 0.0}
                                            for label in candidates}
        for half in (iters // 2, iters - iters // 2):  # ours, theirs, ours, theirs: half the iterations each
            for label, model in candidates.items():
                if half:
                    m = measure(pair, model, device, precision, warmup, half)
                    times[label]["train"] += m["train"]
                    times[label]["infer"] += m["infer"]
                    times[label]["peak_mem_mb"] = max(times[label]["peak_mem_mb"], m["peak_mem_mb"])
        best = {label: {"train": statistics.median(t["train"]), "infer": statistics.median(t["infer"]),
                        "peak_mem_mb": t["peak_mem_mb"]} for label, t in times.items()}
        for label, model in candidates.items():
            m = best[label]
            row = {"model": f"{pair.name} ({label})", "batch_size": pair.batch_size, "input_size": pair.input_size,
                   "param_count": sum(p.numel() for p in model.parameters()),
                   "train_samples_per_sec": pair.batch_size / m["train"], "train_step_ms": 1e3 * m["train"],
                   "infer_samples_per_sec": pair.batch_size / m["infer"], "infer_step_ms": 1e3 * m["infer"],
                   "peak_mem_mb": m["peak_mem_mb"], "mfu": float("nan")}
            if peak:
                row["mfu"] = train_flops(pair, pair.ours if label == "zoo" else pair.theirs[label], device) \
                    / m["train"] / peak
            models.append(row)
        for label in pair.theirs:
            ratios.append({"model": pair.name, "reference": label,
                           "ours_train_step_ms": 1e3 * best["zoo"]["train"],
                           "theirs_train_step_ms": 1e3 * best[label]["train"],
                           "train_ratio": best["zoo"]["train"] / best[label]["train"],
                           "infer_ratio": best["zoo"]["infer"] / best[label]["infer"]})
    return models, ratios


# ------------------------------------------------------------------------------------ command

def add_parser(sub: Any, positive_int: Callable) -> None:
    bench = sub.add_parser("bench", help="measure speed: attention backends, models vs reference implementations",
                           description=__doc__.split("\n\n")[0])
    bench.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    bench.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                       help="fp32, or bf16 autocast (default: bf16 on cuda, fp32 on cpu)")
    bench.add_argument("--warmup", type=positive_int, default=10, help="untimed iterations (default 10)")
    bench.add_argument("--iters", type=positive_int, default=40, help="timed iterations; the median is kept (40)")
    bench.add_argument("--seq-lens", default=None,
                       help="attention sequence lengths (default 64..1024 on CPU, 64..4096 on CUDA)")
    bench.add_argument("--skip", default="", help="comma-separated: attention, models, or a pair name (e.g. gpt)")
    bench.add_argument("--compile", action="store_true", help="torch.compile both sides of every pair")
    bench.add_argument("--out", type=Path, default=Path("results"), help="results directory (default results/)")


def cmd_bench(args: argparse.Namespace, resolve_device: Callable[[str], str], usage_error: type) -> int:
    device = torch.device(resolve_device(args.device))
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    if args.seq_lens:
        try:
            seq_lens = [int(s) for s in args.seq_lens.split(",")]
            assert all(s > 0 for s in seq_lens)
        except (ValueError, AssertionError):
            raise usage_error(f"--seq-lens: expected comma-separated positive integers, got {args.seq_lens!r}") from None
    else:
        seq_lens = [64, 128, 256, 512, 1024] + ([2048, 4096] if device.type == "cuda" else [])
    common = {"device": device.type, "device_name": device_name(device), "precision": precision,
              "compile": args.compile, "torch_version": torch.__version__, "git_commit": git_commit(),
              "num_threads": torch.get_num_threads(), "warmup": args.warmup, "iters": args.iters}
    tag = device.type
    start = time.perf_counter()
    written = []
    if "attention" not in skip:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        rows = bench_attention(device, seq_lens, args.warmup, args.iters, dtype)
        written.append(_write(pd.DataFrame([{**r, **common} for r in rows]), args.out / f"bench_attention_{tag}.csv"))
    if "models" not in skip:
        pairs, skipped = make_pairs(device, skip)
        for reason in skipped:
            print(f"bench: skipped {reason}", file=sys.stderr)
        models, ratios = bench_pairs(pairs, device, precision, args.warmup, args.iters, args.compile)
        written.append(_write(pd.DataFrame([{**r, "backend": "sdpa", **common} for r in models]),
                              args.out / f"bench_{tag}.csv"))
        written.append(_write(pd.DataFrame([{**r, **common} for r in ratios]), args.out / f"bench_reference_{tag}.csv"))
    for path, df in written:
        shown = [c for c in df.columns if c not in ("device_name", "torch_version", "git_commit", "num_threads",
                                                    "warmup", "iters", "compile", "device")]
        print(f"== {path}\n{df[shown].to_string(index=False, float_format=lambda v: f'{v:.3g}')}\n")
    print(f"bench: {time.perf_counter() - start:.0f} s on {common['device_name']}", file=sys.stderr)
    return 0


def _write(df: pd.DataFrame, path: Path) -> tuple[Path, pd.DataFrame]:
    atomic_write_text(path, df.to_csv(index=False))
    return path, df
