#!/usr/bin/env bash
# One GPU session for the CUDA backend (issue 13, "If an H200 is available"). In order:
#   0. toolchain: nvidia-smi, the carried ilr binary, python + torch, and LD_LIBRARY_PATH from
#      torch's nvidia/*/lib (cuDNN and cuBLAS; DESIGN.md: the lent machine has them there);
#   1. `ilr check` (every op in f32 and bf16-conv, the whole step, graphs vs eager), the table
#      saved to check.txt;
#   2. a 50-step f32 run on the GPU against the same run on the CPU (same seed, PreResNet-20,
#      batch 128, 32x32 synthetic data), metrics compared step by step with the tolerances below;
#   3. `ilr bench --quick --json` and the PyTorch peers with their ratio table
#      (peers/pytorch/gpu_session.sh, into bench/);
#   4. `ilr train` at the paper setting (PreResNet-32, batch 128, 32x32 synthetic data) for about
#      2 minutes each without and with CUDA graphs: steps/s and the projected time of 20,000 steps;
#   5. `ilr sweep --runs-per-gpu K` for K = 1, 2, 4, 8 on 8 runs of the tiny recipes' net
#      (PreResNet-8 x0.5, batch 32, 8x8): total steps/s for each K (docs/PERFORMANCE.md's row).
# It prints a short table last and exits non-zero if a check failed. About 9 minutes.
#
# Build on the CPU machine (no GPU needed), with the kernels embedded, and strip the binary so that
# it fits the device tool's carry limit:
#     scripts/install-cuda-toolchain.sh && ILR_REQUIRE_KERNELS=1 cargo build --release
#     mkdir -p target/gpu && cp target/release/ilr target/gpu/ilr && strip target/gpu/ilr
# then on the GPU machine (carry target/gpu), from the repository root:
#     scripts/gpu-cuda-session.sh [ILR_BINARY] [OUT_DIR]
#
# Step 2's tolerances: the GPU sums in other orders than the CPU (f32 rounding, ~1e-7 relative per
# op), and SGD amplifies such differences over steps, so the bound grows with the step: for every
# numeric field of every metrics line, |gpu - cpu| <= 1e-4 * (1 + |cpu|) * step. At step 50 that is
# 5e-3 relative; a wrong op shows O(1) differences from the first step.
set -uo pipefail
ilr=${1:-target/gpu/ilr}
out=${2:-${OUT:-gpu-cuda-session}}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
status=0
declare -A result

# ---- 0. toolchain ---------------------------------------------------------------------------------
fail() { # message: a missing piece of the toolchain ends the session
    echo "gpu-cuda-session: $1" >&2
    exit 2
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || fail "nvidia-smi failed: no GPU or driver"
[ -x "$ilr" ] || fail "no executable ilr binary at $ilr (build and carry it as the header says)"
"$py" -c 'import torch; assert torch.cuda.is_available(), "torch sees no GPU"; print("torch", torch.__version__)' ||
    fail "$py cannot import torch with CUDA (the peers and the cuDNN/cuBLAS libraries come from it)"
site=$("$py" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null) ||
    fail "torch's nvidia packages (cuDNN, cuBLAS) not found"
for d in "$site"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
export LD_LIBRARY_PATH
"$ilr" check --kernels | head -3 || fail "$ilr has no embedded kernels (build with ILR_REQUIRE_KERNELS=1)"

# ---- 1. ilr check ---------------------------------------------------------------------------------
timeout 300 "$ilr" check --seed 1 >"$out/check.txt" 2>&1
check_rc=$?
tail -n 40 "$out/check.txt"
result[check]="$(tail -n 1 "$out/check.txt") (exit $check_rc)"
[ $check_rc -eq 0 ] || status=1

# ---- 2. 50 f32 steps, GPU against CPU -------------------------------------------------------------
small=(--depth 20 --width 1 --batch-size 128 --steps 50 --stats-every 5 --eval-every 50 --seed 3
    --precision f32 --set data.synthetic.size=32 --quiet)
rm -rf "$out/vs-cpu"
if timeout 120 "$ilr" train --device cuda "${small[@]}" --out "$out/vs-cpu/gpu" >"$out/vs-cpu-gpu.txt" 2>&1 &&
    timeout 240 "$ilr" train --device cpu "${small[@]}" --out "$out/vs-cpu/cpu" >"$out/vs-cpu-cpu.txt" 2>&1; then
    result[vs_cpu]=$("$py" - "$out/vs-cpu/gpu/metrics.jsonl" "$out/vs-cpu/cpu/metrics.jsonl" <<'EOF'
import json, sys
def lines(p):
    return [json.loads(l) for l in open(p)]
def numbers(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from numbers(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from numbers(v, f"{prefix}[{i}]")
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        yield prefix, float(d)
gpu, cpu = lines(sys.argv[1]), lines(sys.argv[2])
if len(gpu) != len(cpu) or not gpu:
    print(f"FAIL: {len(gpu)} GPU metrics lines, {len(cpu)} CPU"); sys.exit(0)
worst, where = 0.0, ""
for g, c in zip(gpu, cpu):
    step = c["step"]
    gn = dict(numbers(g))
    for k, cv in numbers(c):
        gv = gn.get(k)
        r = float("inf") if gv is None else abs(gv - cv) / (1e-4 * (1 + abs(cv)) * max(step, 1))
        if r > worst:
            worst, where = r, f"{k} at step {step}: gpu {gv} cpu {cv}"
verdict = "PASS" if worst <= 1 else "FAIL"
print(f"{verdict}: worst err/tol {worst:.3g} ({where})")
EOF
    )
else
    result[vs_cpu]="FAIL: a run failed (see $out/vs-cpu-*.txt)"
fi
echo "GPU vs CPU, 50 steps: ${result[vs_cpu]}"
[[ ${result[vs_cpu]} == PASS* ]] || status=1

# ---- 3. ilr bench and the PyTorch peers -----------------------------------------------------------
if timeout 420 bash "$here/peers/pytorch/gpu_session.sh" "$ilr" "$out/bench" >"$out/bench.txt" 2>&1; then
    result[bench]="done: $out/bench/compare.txt"
else
    result[bench]="FAILED (see $out/bench.txt)"
    status=1
fi
tail -n 30 "$out/bench.txt"

# ---- 4. PreResNet-32, batch 128, about 2 minutes each without and with CUDA graphs -----------------
paper=(--device cuda --depth 32 --width 1 --batch-size 128 --stats-every 100 --eval-every 100000
    --precision f32 --set data.synthetic.size=32 --quiet)
rate() { # output file -> steps/s printed by ilr train
    grep -oE '\(([0-9.]+) steps/s' "$1" | grep -oE '[0-9.]+' | head -1
}
# A 100-step probe sizes the runs: ~120 s at the eager rate.
timeout 120 "$ilr" train "${paper[@]}" --steps 100 --cuda-graphs false --out "$out/paper-probe" >"$out/paper-probe.txt" 2>&1
probe=$(rate "$out/paper-probe.txt")
steps=$("$py" -c "print(max(200, int(float('${probe:-0}' or 0) * 120)))")
for graphs in false true; do
    name="graphs-$graphs"
    if timeout 300 "$ilr" train "${paper[@]}" --steps "$steps" --cuda-graphs "$graphs" --out "$out/paper-$name" \
        >"$out/paper-$name.txt" 2>&1; then
        r=$(rate "$out/paper-$name.txt")
        result[$name]=$("$py" -c "r = float('$r'); print(f'{r:.1f} steps/s over $steps steps; 20,000 steps in {20000 / r / 60:.1f} min')")
    else
        result[$name]="FAILED (see $out/paper-$name.txt)"
        status=1
    fi
done

# ---- 5. K worker processes per GPU on tiny runs -----------------------------------------------------
cat >"$out/tiny-k.toml" <<'SPEC'
[sweep]
name = "tiny-runs-per-gpu"
[base]
data = { augment = false, synthetic = { train = 4096, test = 512, size = 8 } }
model = { depth = 8, width = 0.5 }
optim = { lr = 0.2, lambda_e = 2e-3, momentum = 0.0 }
train = { steps = 400, batch_size = 32, stats_every = 10, eval_every = 400 }
[grid]
seed = [0, 1, 2, 3, 4, 5, 6, 7]
SPEC
for k in 1 2 4 8; do
    rm -rf "$out/tiny-k$k"
    t0=$(date +%s.%N)
    if timeout 150 "$ilr" sweep "$out/tiny-k.toml" --device cuda --runs-per-gpu "$k" --out "$out/tiny-k$k" \
        >"$out/tiny-k$k.txt" 2>&1; then
        result[k$k]=$("$py" -c "import time; s = time.time() - $t0; print(f'{8 * 400 / s:.0f} steps/s total (8 runs x 400 steps in {s:.1f} s)')")
    else
        result[k$k]="FAILED (see $out/tiny-k$k.txt)"
        status=1
    fi
done

# ---- the table ------------------------------------------------------------------------------------
echo
echo "== gpu-cuda-session: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(date -u +%FT%TZ) =="
printf '%-34s %s\n' "ilr check (check.txt)" "${result[check]}" \
    "GPU vs CPU, 50 f32 steps" "${result[vs_cpu]}" \
    "ilr bench + PyTorch peers" "${result[bench]}" \
    "PreResNet-32 b128, eager" "${result[graphs-false]:-?}" \
    "PreResNet-32 b128, CUDA graphs" "${result[graphs-true]:-?}" \
    "tiny sweep, --runs-per-gpu 1" "${result[k1]:-?}" \
    "tiny sweep, --runs-per-gpu 2" "${result[k2]:-?}" \
    "tiny sweep, --runs-per-gpu 4" "${result[k4]:-?}" \
    "tiny sweep, --runs-per-gpu 8" "${result[k8]:-?}"
grep -E "^graph:" "$out/check.txt" | cut -c1-150 | sed 's/^/  /'
exit $status
