#!/usr/bin/env bash
# The GPU check (issue 7): run on a CUDA machine from the repository root, in under 5 minutes.
#   1. the CUDA-marked tests (backend agreement and parity on the GPU, bf16 tolerances, a bf16 cell)
#   2. python -m harness bench on CUDA (attention kernels, reference ratios, MFU)
#   3. a short python -m harness run vision on CUDA, with the fast path (data held on the GPU,
#      channels_last) and without it (compare train_samples_per_sec in the two leaderboards)
# Results go to ${OUT:-results_gpu}/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results_gpu}"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python -m pytest -q -m cuda tests/
python -m harness bench --device cuda --warmup 5 --iters 20 --out "$OUT"
python -m harness run vision --device cuda --seeds 1 --epochs 10 --quiet --out "$OUT"
python -m harness run vision --device cuda --seeds 1 --epochs 10 --quiet --data-on-device off --channels-last off \
    --out "$OUT/without_fast_path"
