#!/usr/bin/env bash
# Compile every kernels/*.cu the way build.rs does and check ptxas resources; CI runs this.
#
#  1. installs nvcc 13.0 into .cuda-toolchain/ (scripts/install-cuda-toolchain.sh; a no-op when present),
#     unless NVCC is set;
#  2. per file: PTX for $ILR_CUDA_ARCH (default compute_80, the PTX the crate embeds), then
#     ptxas on that PTX for sm_80 (A100) and sm_90 (H100/H200), as the driver's JIT will, and
#     nvcc -cubin -arch=sm_90 -Xptxas -v from source (the report build.rs embeds);
#  3. prints the registers/spills table (sm_90 from source, plus the JIT of the PTX for sm_80/sm_90);
#  4. builds and runs kernels/emu/test_kernels.cpp: every kernel source, run on the CPU by a small
#     host emulator, against a reference (skip with ILR_SKIP_EMU=1).
# Exits non-zero on any compile error, any spill (stack frames are allowed, spills are not) or any
# failed emulator test.
# Keep the flags in step with build.rs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -n "${NVCC:-}" ]]; then
    nvcc="$NVCC"
else
    nvcc="$(bash scripts/install-cuda-toolchain.sh | tail -n 1)"
fi
ptxas="$(dirname "$nvcc")/ptxas"
arch="${ILR_CUDA_ARCH:-compute_80}"
flags=(-std=c++17 -O3 -lineinfo --fmad=false -I "$ROOT/kernels")
[[ -n "${NVCC_CCBIN:-}" ]] && flags+=(-ccbin "$NVCC_CCBIN")
echo "check-kernels: $("$nvcc" --version | grep -o 'release [0-9.]*, V[0-9.]*'), PTX for $arch" >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
shopt -s nullglob
sources=(kernels/*.cu)
if [[ ${#sources[@]} -eq 0 ]]; then
    echo "check-kernels: no kernels/*.cu" >&2
    exit 1
fi

# ptxas -v text on stdin -> rows "module function regs spill_st spill_ld stack smem"
parse() {
    awk -v mod="$1" '
        /Compiling entry function/ { s = $0; sub(/.*Compiling entry function \047/, "", s); sub(/\047.*/, "", s); fn = s; next }
        /Function properties for/  { s = $0; sub(/.*Function properties for /, "", s); fn = s; next }
        /bytes stack frame/ { stack[fn] = $1; st[fn] = $5; ld[fn] = $9; if (!(fn in seen)) { seen[fn] = 1; order[++n] = fn } next }
        /Used [0-9]+ registers/ {
            r = $0; sub(/.*Used /, "", r); sub(/ registers.*/, "", r); regs[fn] = r
            m = 0; if (match($0, /[0-9]+ bytes smem/)) { m = substr($0, RSTART, RLENGTH); sub(/ .*/, "", m) }
            smem[fn] = m
            if (!(fn in seen)) { seen[fn] = 1; order[++n] = fn }
        }
        END { for (i = 1; i <= n; i++) { f = order[i]
            printf "%s %s %s %s %s %s %s\n", mod, f, (f in regs ? regs[f] : "-"), st[f] + 0, ld[f] + 0, stack[f] + 0, (f in smem ? smem[f] : 0) } }'
}

rows="$work/rows.txt"
jit_rows="$work/jit_rows.txt"
: >"$rows"
: >"$jit_rows"
for src in "${sources[@]}"; do
    stem="$(basename "$src" .cu)"
    if ! "$nvcc" -ptx -arch="$arch" "${flags[@]}" -o "$work/$stem.ptx" "$src" 2>"$work/$stem.ptx.log"; then
        echo "check-kernels: FAILED: nvcc -ptx $src" >&2
        cat "$work/$stem.ptx.log" >&2
        status=1
        continue
    fi
    if [[ -s "$work/$stem.ptx.log" ]]; then cat "$work/$stem.ptx.log" >&2; fi
    for sm in sm_80 sm_90; do
        if ! "$ptxas" -arch="$sm" -v -o "$work/$stem.$sm.jit.cubin" "$work/$stem.ptx" 2>"$work/$stem.$sm.jit.log"; then
            echo "check-kernels: FAILED: ptxas -arch=$sm on the $arch PTX of $src" >&2
            cat "$work/$stem.$sm.jit.log" >&2
            status=1
        else
            parse "$stem" <"$work/$stem.$sm.jit.log" | sed "s/^/$sm /" >>"$jit_rows"
        fi
    done
    if ! "$nvcc" -cubin -arch=sm_90 -Xptxas -v "${flags[@]}" -o "$work/$stem.sm_90.cubin" "$src" 2>"$work/$stem.cubin.log"; then
        echo "check-kernels: FAILED: nvcc -cubin -arch=sm_90 $src" >&2
        cat "$work/$stem.cubin.log" >&2
        status=1
        continue
    fi
    parse "$stem" <"$work/$stem.cubin.log" >>"$rows"
done

echo
echo "ptxas: sm_90 from source (nvcc -cubin -arch=sm_90 -Xptxas -v; the report build.rs embeds), and"
echo "the registers the driver JIT gets from the shipped $arch PTX for sm_80 (A100) and sm_90 (H100/H200):"
{
    echo "module function regs spill_st spill_ld stack smem jit_sm80 jit_sm90"
    awk 'NR == FNR { jit[$1 " " $2 " " $3] = $4 "/" $5 "+" $6; next }
         { a = jit["sm_80 " $1 " " $2]; b = jit["sm_90 " $1 " " $2]
           print $0, (a == "" ? "-" : a), (b == "" ? "-" : b) }' "$jit_rows" "$rows"
} | column -t
echo "(jit columns: registers/spill stores+spill loads)"
while read -r mod fn _ st ld _; do
    if [[ "$st" != 0 || "$ld" != 0 ]]; then
        echo "check-kernels: SPILL (sm_90): $fn in kernels/$mod.cu: $st bytes spill stores, $ld bytes spill loads" >&2
        status=1
    fi
done <"$rows"
while read -r sm mod fn regs st ld _; do
    if [[ "$st" != 0 || "$ld" != 0 ]]; then
        echo "check-kernels: SPILL ($sm JIT of $arch PTX): $fn in kernels/$mod.cu: $st/$ld bytes spill stores/loads, $regs regs" >&2
        status=1
    fi
done <"$jit_rows"

# Logic tests: every kernel source runs in the host emulator (kernels/emu/) against a reference.
if [[ "${ILR_SKIP_EMU:-0}" != 1 ]]; then
    echo
    echo "check-kernels: host-emulator tests (kernels/emu/test_kernels.cpp)" >&2
    if ! g++ -std=c++20 -O1 -ffp-contract=off -pthread -I kernels/emu/shim -I kernels/emu -I kernels \
        kernels/emu/test_kernels.cpp -o "$work/test_kernels"; then
        echo "check-kernels: FAILED: building the emulator tests" >&2
        status=1
    elif ! "$work/test_kernels"; then
        echo "check-kernels: FAILED: emulator tests" >&2
        status=1
    fi
fi

echo
if [[ $status -eq 0 ]]; then
    echo "check-kernels: OK: ${#sources[@]} files, $(wc -l <"$rows") functions, no compile error, no spill (sm_90 and the $arch PTX JIT for sm_80/sm_90), emulator tests passed"
else
    echo "check-kernels: FAILED" >&2
fi
exit $status
