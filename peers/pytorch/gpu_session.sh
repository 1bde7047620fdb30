#!/usr/bin/env bash
# One GPU session, start to finish: ilr and PyTorch on the same GPU, then the ratio table.
# Build ilr with its kernels on any machine first (scripts/install-cuda-toolchain.sh; cargo build
# --release), and carry target/release/ilr to the GPU machine. There:
#
#     peers/pytorch/gpu_session.sh [ILR_BINARY] [OUT_DIR]      # ~5 min with --quick defaults
#
# QUICK=0 for the full repetitions; VARIANTS to choose the torch training-step variants.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ilr=${1:-target/release/ilr}
out=${2:-bench-gpu}
quick=${QUICK:-1}
py=${PYTHON:-python3}
mkdir -p "$out"

# cuDNN and cuBLAS from the PyTorch install (DESIGN.md: the lent machine has them there).
site=$("$py" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)
if [ -n "$site" ]; then
    for d in "$site"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
    export LD_LIBRARY_PATH
fi
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader || true

q=(); [ "$quick" = 1 ] && q=(--quick)
"$ilr" bench --device cuda "${q[@]}" --json "$out/ilr-cuda.json" | tee "$out/ilr-cuda.txt"
"$ilr" profile --device cuda --depth 32 --batch 128 --steps 5 | tee "$out/ilr-profile-cuda.txt"
"$py" "$here/bench_torch.py" --device cuda "${q[@]}" ${VARIANTS:+--variants "$VARIANTS"} --json "$out/torch-cuda.json"
"$py" "$here/compare.py" "$out/ilr-cuda.json" "$out/torch-cuda.json" | tee "$out/compare.txt"
