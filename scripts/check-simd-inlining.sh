#!/usr/bin/env bash
# Checks that our SIMD kernels were compiled as intended: every intrinsic inlined into the
# `#[target_feature]` entry points (`Simd::vectorize`). An intrinsic left as a call (which happens when
# kernel code reaches it through a closure or `array::from_fn` that the compiler kept out of line)
# runs without the instruction set's features and is many times slower; no test would notice.
#
#   scripts/check-simd-inlining.sh BINARY_OR_SO     # e.g. the extension module, or target/release/unet2d
set -euo pipefail
binary=${1:?usage: check-simd-inlining.sh BINARY_OR_SO}
if ! command -v objdump >/dev/null; then
  echo "check-simd-inlining: objdump not found (apt-get install binutils); skipped" >&2
  exit 0
fi
# Callers of out-of-line `core::core_arch` intrinsics, except in the dependencies that have their own
# (gemm's half-precision kernels, candle's bf16 helpers, the standard library's feature detection)
# and half-precision conversions (f16c), which our kernels do not use.
offenders=$(objdump -d -C --no-show-raw-insn "$binary" | awk '
  /^[0-9a-f]+ <.*>:$/ { fn = $0 }
  /call.*core::core_arch::/ && !/core_arch::x86::f16c::/ { print fn }' |
  grep -Ev '<(gemm_f16::|gemm_common::|candle_core::|std_detect::|compiler_builtins::)' |
  sort -u || true)
if [ -n "$offenders" ]; then
  echo "check-simd-inlining: these functions call SIMD intrinsics out of line (kernel code must not use" >&2
  echo "closures, array::from_fn or Option::map inside Simd::vectorize):" >&2
  echo "$offenders" | cut -c1-300 >&2
  exit 1
fi
echo "check-simd-inlining: every intrinsic in $(basename "$binary") is inlined"
