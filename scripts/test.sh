#!/usr/bin/env bash
# Runs every test: Rust (library, fixtures, schedulers, pipeline, CLI) and Python (the extension built
# into a virtualenv). One optimised build of the crate serves both: candle in a debug build is far too
# slow for UNet tests.
#
#   scripts/test.sh            # from the repository root; creates .venv on first use
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "maturin>=1.9.4,<2" numpy pytest safetensors pillow scikit-learn ruff mypy

echo "== lint"
cargo fmt --check
cargo clippy --release --all-targets --features cli,python -- -D warnings
ruff check
ruff format --check
mypy

echo "== rust tests"
cargo test --release --features cli

# The kernels run the CPU's best instruction set; prove the next one down too (an AVX-512 machine
# checks its AVX2 path, an AVX2 machine its scalar one) on every diffusers fixture.
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { [[ " $flags " == *" $1 "* ]]; }
if has avx512f && has avx512dq && has avx512vl; then below=avx2
elif has avx2 && has fma; then below=scalar
else below=""
fi
if [ -n "$below" ]; then
  echo "== diffusers fixtures with CANDLE_UNET2D_ISA=$below"
  CANDLE_UNET2D_ISA=$below cargo test --release --features cli --test unet2d_fixtures
fi

echo "== python extension"
maturin develop --release --quiet
scripts/check-simd-inlining.sh "$(python -c 'import candle_unet2d._core as m; print(m.__file__)')"
echo "== python tests"
pytest -q tests/python
