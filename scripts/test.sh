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
python -m pip install --quiet "maturin>=1.9.4,<2" numpy pytest safetensors pillow scikit-learn ruff mypy \
  "ray[data]>=2.40" "pyarrow>=14"

echo "== lint"
cargo fmt --check
cargo clippy --release --all-targets --features cli,python -- -D warnings
ruff check
ruff format --check
mypy

echo "== rust tests"
cargo test --release --features cli

# The kernels run the CPU's best instruction set; prove the next one down too (an AVX-512 machine
# checks its AVX2 path, an AVX2 machine its scalar one) on every diffusers fixture. The best level is
# the library's own detection, as `unet2d info` reports it.
best=$(target/release/unet2d info | sed -n "s/.*this CPU's best: \([a-z0-9]*\).*/\1/p")
case "$best" in
  avx512) below=avx2 ;;
  avx2) below=scalar ;;
  scalar) below="" ;;
  *) echo "could not read the CPU kernels' level from 'unet2d info' (got '$best')" >&2; exit 1 ;;
esac
if [ -n "$below" ]; then
  echo "== diffusers fixtures with CANDLE_UNET2D_ISA=$below"
  CANDLE_UNET2D_ISA=$below cargo test --release --features cli --test unet2d_fixtures --test batch_invariance
else
  echo "== no level below $best to test"
fi

# The per-call choice gives the fixtures' small maps mostly F(2×2) tiles: run them all through
# F(4×4) too, wherever the map allows it.
echo "== diffusers fixtures with CANDLE_UNET2D_WINOGRAD=f4"
CANDLE_UNET2D_WINOGRAD=f4 cargo test --release --features cli --test unet2d_fixtures

# The wheel a user installs, not an editable build: its console script (`unet2d`) and its stubs are
# tested as shipped. Same profile and features as clippy's build above, so cargo reuses most of it.
echo "== python wheel"
rm -rf target/wheels
maturin build --release --quiet --out target/wheels
python -m pip install --quiet --force-reinstall --no-deps target/wheels/candle_unet2d-*.whl
core=$(cd /tmp && python -c 'import candle_unet2d._core as m; print(m.__file__)')
case "$core" in
  */site-packages/*) ;;
  *) echo "candle_unet2d imports from $core, not from the installed wheel" >&2; exit 1 ;;
esac
scripts/check-simd-inlining.sh "$core"
echo "== stubs against the built module"
# From /tmp, so that the installed package is checked (not python/ in this folder), with our mypy config.
root=$PWD
(cd /tmp && python -m mypy.stubtest candle_unet2d --mypy-config-file "$root/pyproject.toml" \
  --allowlist "$root/scripts/stubtest-allowlist.txt")
echo "== python tests"
pytest -q tests/python
