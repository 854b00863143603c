#!/usr/bin/env bash
# The GPU check: what a lent CUDA machine measures in its few minutes, proven here beforehand.
#
#   bash scripts/gpu_check.sh                on a CUDA machine, from the repository root
#   bash scripts/gpu_check.sh --cpu-dry-run  the same steps on the CPU with a tiny budget (CI runs it)
#
#   1. the CUDA-marked tests (backend agreement and parity on the GPU, bf16 tolerances, a bf16 cell)
#   2. python -m harness bench: attention kernels (named from the profiler), reference ratios, MFU
#   3. the fast path on and off (data held on the GPU, channels_last), at a size that fills the device:
#      ViT and ResNet at size base on scikit-learn's digits written as 224-pixel images (no dataset
#      travels: scripts/digits_folder.py writes them), GPT and the LSTM at size base on Python's
#      standard library; then a speech run where espeak-ng's wheel is installed
# CSVs, records and leaderboards go to ${OUT:-results_gpu}/; the last lines compare the two paths.
#
# A lent machine has torch, torchvision, torchaudio, pandas, scikit-learn and timm but no internet,
# and lacks plotly and itables (report.html) and gymnasium and soundfile (not needed here). Wheels in
# .whl/ are installed into /tmp/site first when present; fetch them here for the machine's Python 3.12
# and carry the folder (the device tool's carry: [".whl"]):
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl plotly narwhals itables
# (pure-Python wheels; the machine already has their other needs: packaging, pandas, numpy)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
MODE="${1:-gpu}"
case "$MODE" in
    gpu|--cpu-dry-run) ;;
    *) echo "usage: bash scripts/gpu_check.sh [--cpu-dry-run]" >&2; exit 2 ;;
esac
OUT="${OUT:-results_gpu}"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "$MODE" = --cpu-dry-run ]; then
    DEVICE=cpu SIZE=tiny STEPS=3 IMAGE=16 BATCH=8
    BENCH=(--warmup 1 --iters 2 --seq-lens 64)
    SMALL_LM=(--task-opt eval_chars=2000) SMALL_SPEECH=(--task-opt clips_per_voice=1)
else
    "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
    DEVICE=cuda SIZE=base STEPS=150 IMAGE=224 BATCH=128
    BENCH=(--warmup 5 --iters 20)
    SMALL_LM=() SMALL_SPEECH=()
fi
RUN=("$PY" -m harness run --device "$DEVICE" --size "$SIZE" --steps "$STEPS" --batch-size "$BATCH" --seeds 1 --quiet)

"$PY" -m pytest -q -p no:cacheprovider -m cuda tests/
"$PY" -m harness bench --device "$DEVICE" "${BENCH[@]}" --out "$OUT"
DIGITS="$(mktemp -d)"
"$PY" scripts/digits_folder.py "$DIGITS"
for fast in on off; do
    "${RUN[@]}" vision --tasks image_folder --data-dir "$DIGITS" --task-opt image_size="$IMAGE" \
        --data-on-device "$fast" --channels-last "$fast" --out "$OUT/fast_path_$fast"
    "${RUN[@]}" language --tasks pystdlib "${SMALL_LM[@]}" --data-on-device "$fast" --out "$OUT/fast_path_$fast"
done
if "$PY" -c "import espeakng_loader, soundfile" 2> /dev/null; then
    "${RUN[@]}" speech --tasks synth_commands "${SMALL_SPEECH[@]}" --out "$OUT/speech"
else
    echo "gpu_check: speech skipped (espeakng-loader and soundfile are not installed)"
fi
"$PY" - "$OUT" <<'PY'
import sys
import pandas as pd
out = sys.argv[1]
rows = []
for fast in ("on", "off"):
    for domain in ("vision", "language"):
        board = pd.read_csv(f"{out}/fast_path_{fast}/leaderboard_{domain}.csv")
        rows.append(board.assign(fast_path=fast)[["task", "model", "size", "fast_path", "train_samples_per_sec", "mfu"]])
table = pd.concat(rows).sort_values(["task", "model", "fast_path"])
table.to_csv(f"{out}/fast_path.csv", index=False)
print(table.to_string(index=False))
PY
