#!/usr/bin/env bash
# One GPU session for the CUDA backend's step graphs and bf16 convolutions (src/backend/cuda/):
#   1. `ilr check`: every op against the CPU reference, the bf16-conv rows, and a graph-replayed
#      step against the eager one (bitwise);
#   2. training with and without CUDA graphs must give byte-identical metrics.jsonl and
#      predictions.bin (f32, then bf16-conv), and how much faster graphs are;
#   3. bf16-conv against f32: final losses side by side, and the speed.
# It prints a short table last and exits non-zero if a check failed.
#
# Build on the CPU machine (no GPU needed), with the kernels embedded, and strip the binary so that
# it fits the device tool's carry limit:
#     scripts/install-cuda-toolchain.sh && ILR_REQUIRE_KERNELS=1 cargo build --release
#     mkdir -p target/gpu && cp target/release/ilr target/gpu/ilr && strip target/gpu/ilr
# then on the GPU machine (carry target/gpu), from the repository root:
#     scripts/gpu-cuda-session.sh [ILR_BINARY] [OUT_DIR]        # a few minutes
set -uo pipefail
ilr=${1:-target/gpu/ilr}
out=${2:-${OUT:-gpu-cuda-session}}
py=${PYTHON:-python3}
mkdir -p "$out"
status=0

# cuDNN and cuBLAS from the PyTorch install (DESIGN.md: the lent machine has them there).
site=$("$py" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)
if [ -n "$site" ]; then
    for d in "$site"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
    export LD_LIBRARY_PATH
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
"$ilr" check --kernels | head -3 || true

# 1. ilr check.
timeout 300 "$ilr" check --seed 1 > "$out/check.txt" 2>&1
check_rc=$?
tail -n 60 "$out/check.txt"
[ $check_rc -eq 0 ] || status=1

# 2. and 3. Short trainings: PreResNet-20 on 32×32 synthetic data, batch 128.
common=(--device cuda --depth 20 --width 1 --batch-size 128 --steps 400 --stats-every 10 --eval-every 200
    --set data.synthetic.size=32 --quiet)
declare -A speed loss
run() { # name, extra args...
    local name=$1
    shift
    rm -rf "$out/runs-$name"
    if timeout 240 "$ilr" train "${common[@]}" --out "$out/runs-$name" "$@" > "$out/train-$name.txt" 2>&1; then
        speed[$name]=$(grep -oE '\(([0-9.]+) steps/s' "$out/train-$name.txt" | grep -oE '[0-9.]+' | head -1)
        loss[$name]=$(grep -oE 'train loss [0-9.]+' "$out/train-$name.txt" | grep -oE '[0-9.]+$' | head -1)
    else
        echo "train $name FAILED:"
        tail -n 20 "$out/train-$name.txt"
        speed[$name]=FAILED
        status=1
    fi
}
same() { # run a, run b: metrics and predictions byte-identical?
    local a b f verdict=identical
    a=$(ls -d "$out/runs-$1"/*/ 2>/dev/null | head -1)
    b=$(ls -d "$out/runs-$2"/*/ 2>/dev/null | head -1)
    for f in metrics.jsonl predictions.bin; do
        if [ -z "$a" ] || [ -z "$b" ] || ! cmp -s "$a/$f" "$b/$f"; then verdict="DIFFER ($f)"; status=1; break; fi
    done
    echo "$verdict"
}
run f32-eager --cuda-graphs false
run f32-graphs
run bf16-eager --cuda-graphs false --precision bf16-conv
run bf16-graphs --precision bf16-conv

echo
echo "== summary =="
echo "ilr check: $(tail -n 1 "$out/check.txt") (exit $check_rc)"
grep -E "^(graph:|step bf16-conv|conv2d_.* bf16)" "$out/check.txt" | awk '{print "  " $0}' | cut -c1-150 | head -40
printf '%-12s %12s %12s\n' run "steps/s" "train loss"
for r in f32-eager f32-graphs bf16-eager bf16-graphs; do
    printf '%-12s %12s %12s\n' "$r" "${speed[$r]:-?}" "${loss[$r]:-?}"
done
echo "f32:  graphs vs eager metrics+predictions: $(same f32-eager f32-graphs)"
echo "bf16: graphs vs eager metrics+predictions: $(same bf16-eager bf16-graphs)"
grep -h "warning" "$out"/train-*.txt | sort | uniq -c | head -10
exit $status
