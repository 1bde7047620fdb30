#!/usr/bin/env bash
# Install a CUDA 13.0 nvcc from PyPI into the project-local folder .cuda-toolchain/
# (git-ignored). No GPU and no system CUDA are needed: nvcc compiles .cu files to PTX
# and cubin, and ptxas reports registers and spills.
#
# Why 13.0 exactly: the lent H200 machine's driver is 580 (CUDA 13.0); PTX from a
# newer nvcc would not load there.
#
# Usage: scripts/install-cuda-toolchain.sh        (idempotent; prints the nvcc path last)
# Env:   ILR_CUDA_TOOLCHAIN_DIR  install folder (default: <repo>/.cuda-toolchain)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${ILR_CUDA_TOOLCHAIN_DIR:-$ROOT/.cuda-toolchain}"
NVCC="$DIR/nvidia/cu13/bin/nvcc"

have_13_0() {
    [[ -x "$NVCC" ]] && "$NVCC" --version 2>/dev/null | grep -q 'release 13\.0'
}

if have_13_0; then
    echo "install-cuda-toolchain: nvcc 13.0 already present" >&2
else
    echo "install-cuda-toolchain: installing nvcc 13.0 from PyPI into $DIR" >&2
    mkdir -p "$DIR"
    # --upgrade so a re-run over a partial or other-version install replaces it in place.
    python3 -m pip install --disable-pip-version-check --no-input --quiet --upgrade \
        --target "$DIR" \
        'nvidia-cuda-nvcc==13.0.*' \
        'nvidia-nvvm==13.0.*' \
        'nvidia-cuda-crt==13.0.*' \
        'nvidia-cuda-runtime==13.0.*' \
        'nvidia-cuda-cccl==13.0.*'
    if ! have_13_0; then
        echo "install-cuda-toolchain: $NVCC missing or not release 13.0 after install" >&2
        exit 1
    fi
    # build.rs does not watch PATH or the toolchain folder while no nvcc exists (that would rerun
    # it on every build); touching it makes the next cargo build pick up the new nvcc.
    if [[ -f "$ROOT/build.rs" ]]; then touch "$ROOT/build.rs"; fi
fi

"$NVCC" --version | grep -o 'release [0-9.]*, V[0-9.]*' >&2 || true
echo "$NVCC"
