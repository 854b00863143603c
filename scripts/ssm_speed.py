"""Train-step time of the pure-PyTorch selective scan (zoo.core.ssm.MambaMixer) against mambapy's
MambaBlock (Blelloch parallel scan) on the CPU, one thread, with the same weights.

Each timed step: forward, sum, backward (input and every parameter gradient). The models take turns
in every round; prints the median of ``--repeats`` rounds after warm-up, per sequence length and
chunk size, and the ratio ours / mambapy (<= 1.0: ours is as fast or faster).

    .venv/bin/python scripts/ssm_speed.py [--batch 8] [--dim 64] [--lengths 64 256 1024]
                                          [--chunks 16 32 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mambapy.mamba import MambaBlock, MambaConfig  # noqa: E402

from zoo.core.ssm import MambaMixer  # noqa: E402


def step_time(fn, x: torch.Tensor) -> float:
    """Seconds of one forward + backward of fn on x."""
    x.grad = None
    start = time.perf_counter()
    fn(x).sum().backward()
    return time.perf_counter() - start


def median_times(fns: list, x: torch.Tensor, repeats: int, warmup: int = 2) -> list[float]:
    """Median step time of each fn; the fns take turns in every round, so that a change in the
    machine's load hits them alike."""
    times = [[] for _ in fns]
    for i in range(warmup + repeats):
        for fn, seen in zip(fns, times):
            t = step_time(fn, x)
            if i >= warmup:
                seen.append(t)
    return [statistics.median(seen) for seen in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--chunks", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    block = MambaBlock(MambaConfig(d_model=args.dim, n_layers=1))
    print(f"B={args.batch} dim={args.dim} d_inner={block.config.d_inner} d_state={block.config.d_state}, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats}, forward+backward, ms")
    header = f"{'T':>6} {'mambapy':>9}" + "".join(f" {'chunk ' + str(c):>9} {'ratio':>6}" for c in args.chunks)
    print(header)
    mixers = []
    for chunk in args.chunks:
        mixer = MambaMixer(args.dim, chunk_size=chunk)
        mixer.load_state_dict(block.state_dict())
        mixers.append(lambda t, mixer=mixer: mixer(t, causal=True))
    for T in args.lengths:
        x = torch.randn(args.batch, T, args.dim, requires_grad=True)
        ref, *ours = median_times([block, *mixers], x, args.repeats)
        print(f"{T:>6} {ref * 1e3:>9.1f}" + "".join(f" {t * 1e3:>9.1f} {t / ref:>6.2f}" for t in ours))


if __name__ == "__main__":
    main()
