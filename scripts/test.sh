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

echo "== python extension"
maturin develop --release --quiet
echo "== python tests"
pytest -q tests/python
