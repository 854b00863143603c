"""python -m harness bench: speed, measured as ratios within one run.

Four tables, each written to ``results/`` and printed:

``bench_attention_<device>.csv``
    The core's ``MultiHeadAttention`` (B=4, 4 heads of 32) with the ``sdpa`` and ``math`` backends,
    and the same work written straight on ``F.scaled_dot_product_attention`` (``raw``: the cost of
    the core's wrapper), across sequence lengths, causal or not, with or without an additive bias;
    forward and forward+backward; on CUDA also the SDPA kernel that ran (from the profiler).
``bench_mixer_<device>.csv``
    The mixer slot's two mixers against sequence length (B=4, width 128): the core's causal attention
    (SDPA) and the selective SSM (``MambaMixer``), and mambapy's reference scan with the SSM's weights
    where installed: a training step's time and the activation memory it keeps, the time of one
    generated token after T (a KV cache of T positions against a fixed-size state), each as a ratio
    to attention's; the lengths from which the SSM is the cheaper one are printed (the crossover).
``bench_<device>.csv``
    timm-style rows for each registered model that declares a reference (ours and theirs): param_count,
    train_step_ms / train_samples_per_sec (forward, a scalar loss, backward, AdamW step),
    infer_step_ms / infer_samples_per_sec (no_grad forward), peak_mem_mb, and on CUDA the model FLOPs
    utilisation of the training step (counted FLOPs / time / the GPU's dense bf16 peak).
``bench_reference_<device>.csv``
    ours / theirs train-step time for the same configuration and weights. Each model declares its
    reference (``register_model(reference=...)``, see ``zoo/reference.py``): today the zoo ViT vs
    timm's and torchvision's, the Conformer vs torchaudio's, the encoder-decoder stacks vs
    ``torch.nn.Transformer``, GPT vs Hugging Face GPT-2, the DT vs Hugging Face's
    DecisionTransformerModel (those needing timm or transformers are skipped when not installed).

Timing follows timm's benchmark.py: ``warmup`` untimed iterations, then ``iters`` timed ones, the
median; CUDA is synchronised around every timed call. Ours and theirs are measured alternately,
half of the timed iterations at a time (ours, theirs, ours, theirs), and the median is taken over all
of each side's timed iterations, so that a slow spell of the machine does not land on one side only.
"""

from __future__ import annotations

import copy
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import baselines  # noqa: F401  (registers the baseline models)
import zoo  # noqa: F401  (registers the transformer models, each with its reference)
from zoo.core import MambaMixer, MultiHeadAttention
from zoo.reference import Reference
from zoo.registry import get_model_entry, list_models

from .devices import PeakMemory, autocast, resolve_device
from .errors import UsageError
from .measure import bf16_peak, mfu
from .options import BenchOptions
from .records import device_name, git_commit, write_or_rescue
from .sweep import check_writable

# Which SDPA implementation ran, by the names of the profiler's events, lower-cased. The ops decide (PyTorch
# 2.x on CUDA: the aten op of the implementation, the forward/backward ops under it, its autograd node); the
# CUDA kernel names only where no such op was recorded. cuDNN comes first in both: its kernels are named
# like "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_..." and contain "flash".
SDPA_OPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cudnn", ("aten::_scaled_dot_product_cudnn_attention", "scaleddotproductcudnnattentionbackward")),
    ("flash", ("aten::_scaled_dot_product_flash_attention", "aten::_flash_attention_",
               "scaleddotproductflashattentionbackward")),
    ("efficient", ("aten::_scaled_dot_product_efficient_attention", "aten::_efficient_attention_",
                   "scaleddotproductefficientattentionbackward")),
    ("math", ("aten::_scaled_dot_product_attention_math",)),
)
SDPA_KERNELS: tuple[tuple[str, str], ...] = (
    ("cudnn", r"cudnn.*(sdpa|flash|fmha|attn|attention|fusion::)|sm\d+_flash_[fb]prop|native_sdpa"),
    ("flash", r"pytorch_flash::|flash_fwd|flash_bwd"),
    ("efficient", r"fmha_cutlass|memeffattention"),
)


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

def attention_kernel(names: Iterable[str]) -> str:
    """The SDPA implementation (cudnn, flash, efficient or math) that the profiler events ``names``
    (aten ops and CUDA kernels) show: by the aten ops where one of :data:`SDPA_OPS` is there, else by
    the kernels (:data:`SDPA_KERNELS`), else math (bmm and softmax, or nothing fused)."""
    lowered = [n.lower() for n in names]
    for label, ops in SDPA_OPS:
        if any(op in n for n in lowered for op in ops):
            return label
    for label, pattern in SDPA_KERNELS:
        if any(re.search(pattern, n) for n in lowered):
            return label
    return "math"


def sdpa_kernel(fn: Callable[[], Any]) -> str:
    """Which SDPA implementation ``fn`` ran on CUDA (flash, efficient, cudnn or math), from the profiler."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    return attention_kernel(e.name for e in prof.events())


def raw_sdpa(attn: MultiHeadAttention, x: Tensor, causal: bool, bias: Tensor | None) -> Tensor:
    """The work of ``attn(x, causal=..., bias=...)`` written straight on ``F.scaled_dot_product_attention``
    with the module's own weights: packed projection, heads, SDPA (a causal bias folded into the
    additive mask, as SDPA takes no ``is_causal`` beside a mask), merge, output projection. Timing it
    beside the core's ``sdpa`` backend gives the cost of the core's wrapper."""
    B, T, E = x.shape
    H = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj.weight, attn.in_proj.bias).view(B, T, 3, H, E // H).permute(2, 0, 3, 1, 4)
    mask = bias
    if bias is not None and causal:
        mask = bias.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and bias is None)
    return F.linear(out.transpose(1, 2).reshape(B, T, E), attn.out_proj.weight, attn.out_proj.bias)


ATTENTION_ROWS = ("sdpa", "math", "raw")  # the core's two backends, and raw_sdpa on the same tensors


def _time_attention(call: Callable[[], Tensor], device: torch.device, warmup: int, iters: int) -> tuple[float, float]:
    """(forward, forward+backward) median seconds of ``call``."""
    def fwd_bwd():
        call().sum().backward()

    with torch.no_grad():
        fwd = median_time(call, device, warmup, iters)
    return fwd, median_time(fwd_bwd, device, warmup, iters)


def bench_attention(device: torch.device, seq_lens: list[int], warmup: int, iters: int,
                    dtype: torch.dtype) -> list[dict[str, Any]]:
    """One row per (length, causal, bias, backend); ``*_vs_math`` and ``*_vs_raw`` divide by the
    math backend's and by raw SDPA's time for the same case."""
    rows = []
    attn = MultiHeadAttention(128, 4).to(device, dtype)
    for T in seq_lens:
        x = torch.randn(4, T, 128, device=device, dtype=dtype, requires_grad=True)
        bias = torch.randn(1, 4, T, T, device=device, dtype=dtype)
        for causal in (False, True):
            for with_bias in (False, True):
                b = bias if with_bias else None
                for backend in ATTENTION_ROWS:
                    call = (lambda: raw_sdpa(attn, x, causal, b)) if backend == "raw" else \
                        (lambda: attn(x, causal=causal, bias=b, backend=backend))
                    fwd, both = _time_attention(call, device, warmup, iters)
                    kernel = sdpa_kernel(call) if device.type == "cuda" and backend != "math" else ""
                    rows.append({"seq_len": T, "causal": causal, "bias": with_bias, "backend": backend,
                                 "fwd_ms": 1e3 * fwd, "fwd_bwd_ms": 1e3 * both, "kernel": kernel})
    df = pd.DataFrame(rows)
    key = ["seq_len", "causal", "bias"]
    for base in ("math", "raw"):
        ref = df[df.backend == base].set_index(key)
        for col in ("fwd_ms", "fwd_bwd_ms"):
            df[f"{col}_vs_{base}"] = [r[col] / ref.loc[tuple(r[k] for k in key), col] for _, r in df.iterrows()]
    return df.to_dict("records")


# ------------------------------------------------------------------------------------ mixers against length

MIXER_DIM, MIXER_BATCH = 128, 4  # the width and batch of the mixer rows, as the attention rows'


def saved_mb(call: Callable[[], Tensor]) -> float:
    """MB of the tensors that ``call``'s autograd graph keeps for the backward pass: the activation
    memory of a training step, counted (not sampled), on any device: each saved storage once (views
    and parameters saved by reference included)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = call()
    del out
    return sum(seen.values()) / 2 ** 20


def _mixer_cases(device: torch.device, dtype: torch.dtype) -> dict[str, tuple[nn.Module, Callable[..., Tensor]]]:
    """name -> (module, call(x, cache) -> output): the core's causal attention (SDPA), the selective
    SSM (``MambaMixer``) and, where installed, mambapy's MambaBlock with the same weights (training only:
    it has no cache of ours)."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(MIXER_DIM, 4).to(device, dtype)
    ssm = MambaMixer(MIXER_DIM).to(device, dtype)
    cases = {"attention": (attention, lambda x, cache=None: attention(x, causal=True, cache=cache, backend="sdpa")),
             "ssm": (ssm, lambda x, cache=None: ssm(x, causal=True, cache=cache))}
    try:
        from mambapy.mamba import MambaBlock, MambaConfig
    except ImportError:
        return cases
    block = MambaBlock(MambaConfig(d_model=MIXER_DIM, n_layers=1)).to(device, dtype)
    block.load_state_dict(ssm.state_dict())
    cases["mambapy"] = (block, lambda x, cache=None: block(x))
    return cases


def _token_time(module: nn.Module, call: Callable[..., Tensor], T: int, device: torch.device,
                dtype: torch.dtype, warmup: int, iters: int) -> float:
    """Median seconds of generating one token after ``T`` (one step with a cache holding T positions:
    attention reads T keys, the SSM updates a fixed-size state)."""
    with torch.no_grad():
        prefix = torch.randn(MIXER_BATCH, T, MIXER_DIM, device=device, dtype=dtype)
        token = torch.randn(MIXER_BATCH, 1, MIXER_DIM, device=device, dtype=dtype)
        filled = module.new_cache()
        call(prefix, filled)
        state = dict(vars(filled))

        def step() -> Tensor:
            cache = module.new_cache()
            vars(cache).update(state)  # the cache as after the prefix, fresh for every timed step
            return call(token, cache)

        return median_time(step, device, warmup, iters)


def bench_mixers(device: torch.device, seq_lens: list[int], warmup: int, iters: int,
                 dtype: torch.dtype) -> list[dict[str, Any]]:
    """The mixer slot's two mixers against sequence length: one row per (length, mixer) with the
    forward+backward time of a training step (``train_ms``), the time of one generated token after
    that many (``token_ms``), the activation memory a training step keeps (``saved_mb``), and each
    divided by attention's for the same length (``*_vs_attention``: below 1, the mixer is cheaper).
    ``mambapy`` (where installed) is the reference scan with the SSM's weights: ``train_ms_vs_mambapy``
    on the SSM's row is the pure-PyTorch scan's ratio against it (<= 1: ours as fast or faster)."""
    rows = []
    cases = _mixer_cases(device, dtype)
    for T in seq_lens:
        x = torch.randn(MIXER_BATCH, T, MIXER_DIM, device=device, dtype=dtype, requires_grad=True)
        for name, (module, call) in cases.items():
            train = median_time(lambda: call(x).sum().backward(), device, warmup, iters)
            token = (_token_time(module, call, T, device, dtype, warmup, iters) if name != "mambapy"
                     else math.nan)
            rows.append({"seq_len": T, "mixer": name, "params": sum(p.numel() for p in module.parameters()),
                         "train_ms": 1e3 * train, "token_ms": 1e3 * token, "saved_mb": saved_mb(lambda: call(x))})
    df = pd.DataFrame(rows)
    for base in ("attention", "mambapy"):
        ref = df[df.mixer == base].set_index("seq_len")
        columns = ("train_ms", "token_ms", "saved_mb") if base == "attention" else ("train_ms",)
        for col in columns:
            df[f"{col}_vs_{base}"] = [r[col] / ref.loc[r["seq_len"], col]
                                      if r["seq_len"] in ref.index and (base == "attention" or r["mixer"] == "ssm")
                                      else math.nan for _, r in df.iterrows()]
    return df.to_dict("records")


def crossover(rows: list[dict[str, Any]], column: str) -> int | None:
    """The shortest length from which the SSM's ``column`` stays at or below attention's (None: at no
    measured length): where the mixers cross."""
    df = pd.DataFrame(rows)
    ratio = df[df.mixer == "ssm"].set_index("seq_len")[f"{column}_vs_attention"].sort_index()
    cheaper = ratio <= 1
    for T in ratio.index:
        if cheaper.loc[T:].all():
            return int(T)
    return None


def crossover_lines(rows: list[dict[str, Any]]) -> list[str]:
    """'training step: the SSM is as fast as attention from T=... (ratio ... at the longest)' per measure."""
    df = pd.DataFrame(rows)
    ssm = df[df.mixer == "ssm"].sort_values("seq_len")
    lines = []
    for column, what in (("train_ms", "training step"), ("token_ms", "generated token"),
                         ("saved_mb", "activation memory")):
        T, last = crossover(rows, column), ssm.iloc[-1]
        where = f"from T={T}" if T is not None else f"at no length up to {int(last['seq_len'])}"
        lines.append(f"{what}: the SSM is at or below attention {where} (SSM / attention = "
                     f"{last[column + '_vs_attention']:.2f} at T={int(last['seq_len'])})")
    return lines


# ------------------------------------------------------------------------------------ reference pairs

@dataclass(frozen=True)
class Pair:
    """A registered model and its declared reference (``register_model(reference=...)``): ours and
    theirs with the same configuration and, where a converter exists, the same weights."""

    name: str
    ref: Reference


def make_pairs(device: torch.device, skip: list[str]) -> tuple[list[Pair], list[str]]:
    """The reference pairs of every registered model that declares one and can be built here, and why
    the others cannot (a missing optional package). Each is built after ``torch.manual_seed(0)``."""
    pairs, skipped = [], []
    for name in list_models():
        build = get_model_entry(name).reference
        if build is None or name in skip:
            continue
        torch.manual_seed(0)
        try:
            ref = build(device)
        except ImportError as e:
            skipped.append(f"{name}: {e.name or e} is not installed")
            continue
        pairs.append(Pair(name, ref))
        skipped += ref.skipped
    return pairs, skipped


def measure(pair: Pair, model: nn.Module, device: torch.device, precision: str, warmup: int,
            iters: int) -> dict[str, Any]:
    """Train-step and inference times (lists of seconds) of one model of a pair."""
    model = model.to(device).train()
    inputs = pair.ref.inputs()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def train_step() -> None:
        with autocast(device, precision):
            loss = pair.ref.forward(model, inputs).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.no_grad(), autocast(device, precision):
            pair.ref.forward(model, inputs)

    memory = PeakMemory(device)
    train = timings(train_step, device, warmup, iters)
    model.eval()
    infer = timings(infer_step, device, warmup, iters)
    return {"train": train, "infer": infer, "peak_mem_mb": memory.mb() if device.type == "cuda" else float("nan")}


def train_flops(pair: Pair, model: nn.Module, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    probe = copy.deepcopy(model).to(device).train()
    with FlopCounterMode(display=False) as counter:
        pair.ref.forward(probe, pair.ref.inputs()).float().square().mean().backward()
    return float(counter.get_total_flops())


def bench_pairs(pairs: list[Pair], device: torch.device, precision: str, warmup: int, iters: int,
                compile: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    models, ratios = [], []
    name = device_name(device)
    peak = bf16_peak(name) if device.type == "cuda" else None
    for pair in pairs:
        candidates = {"zoo": pair.ref.ours, **pair.ref.theirs}
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
            row = {"model": f"{pair.name} ({label})", "batch_size": pair.ref.batch_size, "input_size": pair.ref.input_size,
                   "param_count": sum(p.numel() for p in model.parameters()),
                   "train_samples_per_sec": pair.ref.batch_size / m["train"], "train_step_ms": 1e3 * m["train"],
                   "infer_samples_per_sec": pair.ref.batch_size / m["infer"], "infer_step_ms": 1e3 * m["infer"],
                   "peak_mem_mb": m["peak_mem_mb"], "mfu": float("nan")}
            if peak:  # counting FLOPs costs a step: only where there is a peak to divide by
                plain = pair.ref.ours if label == "zoo" else pair.ref.theirs[label]  # not the compiled wrapper
                flops = train_flops(pair, plain, device) / pair.ref.batch_size
                row["mfu"] = mfu(flops, row["train_samples_per_sec"], name, device=device.type)
            models.append(row)
        for label in pair.ref.theirs:
            ratios.append({"model": pair.name, "reference": label,
                           "ours_train_step_ms": 1e3 * best["zoo"]["train"],
                           "theirs_train_step_ms": 1e3 * best[label]["train"],
                           "train_ratio": best["zoo"]["train"] / best[label]["train"],
                           "infer_ratio": best["zoo"]["infer"] / best[label]["infer"]})
    return models, ratios


# ------------------------------------------------------------------------------------ command

def cmd_bench(args: BenchOptions) -> int:
    device = torch.device(resolve_device(args.device))
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    skip = _skipped(args.skip)
    check_writable(args.out)  # before minutes of measuring, not after
    if args.seq_lens:
        try:
            seq_lens = [int(s) for s in args.seq_lens.split(",")]
            assert all(s > 0 for s in seq_lens)
        except (ValueError, AssertionError):
            raise UsageError(f"--seq-lens: expected comma-separated positive integers, got {args.seq_lens!r}") from None
    else:
        seq_lens = [64, 128, 256, 512, 1024] + ([2048, 4096] if device.type == "cuda" else [])
    common = {"device": device.type, "device_name": device_name(device), "precision": precision,
              "compile": args.compile, "torch_version": torch.__version__, "git_commit": git_commit(),
              "num_threads": torch.get_num_threads(), "warmup": args.warmup, "iters": args.iters}
    tag = device.type
    start = time.perf_counter()
    written = []
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if "attention" not in skip:
        rows = bench_attention(device, seq_lens, args.warmup, args.iters, dtype)
        written.append(_write(pd.DataFrame([{**r, **common} for r in rows]), args.out / f"bench_attention_{tag}.csv"))
    mixer_lines = []
    if "mixers" not in skip:
        rows = bench_mixers(device, seq_lens, args.warmup, args.iters, dtype)
        mixer_lines = crossover_lines(rows)
        written.append(_write(pd.DataFrame([{**r, **common} for r in rows]), args.out / f"bench_mixer_{tag}.csv"))
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
    print("\n".join(f"mixers, {line}" for line in mixer_lines) + ("\n" if mixer_lines else ""), end="")
    print(f"bench: {time.perf_counter() - start:.0f} s on {common['device_name']}", file=sys.stderr)
    return 0


def _skipped(text: str) -> list[str]:
    """--skip: 'attention', 'mixers', 'models' or names of models with a reference; anything else is bad input."""
    skip = [s.strip() for s in text.split(",") if s.strip()]
    accepted = ["attention", "mixers", "models", *(n for n in list_models() if get_model_entry(n).reference is not None)]
    unknown = [s for s in skip if s not in accepted]
    if unknown:
        raise UsageError(f"--skip {', '.join(unknown)}: nothing of that name to skip; accepted: {', '.join(accepted)}")
    return skip


def _write(df: pd.DataFrame, path: Path) -> tuple[Path, pd.DataFrame]:
    return write_or_rescue(path, df.to_csv(index=False)), df
