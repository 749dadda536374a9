#!/usr/bin/env bash
# Checks that the CUDA build compiles, on a machine with no GPU and no system CUDA toolkit: nvcc 13.0
# and its headers come from PyPI (the H200 machines run driver 580 = CUDA 13.0, and PTX from a newer
# nvcc would not load there, so every piece is pinned to 13.0). `cargo check` links nothing, so the
# libraries themselves (cuBLAS, cuRAND, cuDNN, the driver) are not needed here.
#
#   scripts/check-cuda.sh        # cargo check --features cuda, then --features cudnn
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${CUDA_VENV:-target/cuda-toolchain}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet \
  "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-nvvm==13.0.*" \
  "nvidia-cuda-cccl==13.0.*"

SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CUDA_ROOT="$SITE/nvidia/cu13"
export CUDA_HOME="$CUDA_ROOT" CUDA_PATH="$CUDA_ROOT" CUDA_ROOT
export NVCC="$CUDA_ROOT/bin/nvcc"
export PATH="$CUDA_ROOT/bin:$PATH"
# No GPU to ask: build PTX for the H200 (sm_90).
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
"$NVCC" --version | tail -1

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda-check}
cargo check --release --features cuda,cli,python --all-targets
cargo check --release --features cudnn,cli
echo "CUDA build check passed (nvcc 13.0, compute capability $CUDA_COMPUTE_CAP)"
