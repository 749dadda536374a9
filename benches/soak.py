"""Soak: 5,000 forwards of a small fixture model in one process, resident memory (RSS) sampled every 500.
Prints the series and the growth after warm-up (the first 500 forwards); the target is under 5 %.

    . .venv/bin/activate && python benches/soak.py [--forwards 5000] [--every 500] [--model no_mid_block]

A benchmark, not a test: it prints numbers and exits 0 unless growth exceeds --max-growth (default 5 %).
Inputs change every call (random sample, timestep, batch 1 or 2) so that caches keyed on shapes or values
would show up as growth; every 10th call is an invalid one (wrong channels) to soak the error path too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import candle_unet2d
from candle_unet2d import InvalidArgumentError, UNet2DModel

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "unet2d"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size now, from /proc/self/statm (pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forwards", type=int, default=5000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--model", default="no_mid_block", help="a folder name under tests/fixtures/unet2d")
    parser.add_argument("--max-growth", type=float, default=5.0, help="percent; exit 1 above it")
    args = parser.parse_args()

    model = UNet2DModel.from_pretrained(FIXTURES / args.model)
    size = model.config["sample_size"]
    size = size if isinstance(size, int) else size[0]
    channels = model.config["in_channels"]
    classes = model.config.get("num_class_embeds")
    rng = np.random.default_rng(0)
    what = f"{args.forwards} forwards of {args.model} ({channels}×{size}×{size})"
    print(f"candle_unet2d {candle_unet2d.__version__}: {what}")
    print(f"{'forwards':>9} {'RSS MiB':>9} {'s':>7}")
    series: list[tuple[int, int]] = [(0, rss_bytes())]
    print(f"{0:>9} {series[0][1] / 2**20:>9.1f} {0.0:>7.1f}")
    start = time.perf_counter()
    errors = 0
    for i in range(1, args.forwards + 1):
        batch = 1 + i % 2
        if i % 10 == 0:
            try:
                model(np.zeros((batch, channels + 1, size, size), np.float32), 1)
            except InvalidArgumentError:
                errors += 1
        else:
            sample = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
            labels = rng.integers(0, classes, batch) if classes else None
            out = model(sample, int(rng.integers(0, 1000)), labels).sample
            assert out.shape == (batch, model.config["out_channels"], size, size)
        if i % args.every == 0:
            series.append((i, rss_bytes()))
            print(f"{i:>9} {series[-1][1] / 2**20:>9.1f} {time.perf_counter() - start:>7.1f}")
    warm = next((rss for n, rss in series if n >= args.every), series[-1][1])
    final = series[-1][1]
    growth = 100.0 * (final - warm) / warm
    peak = max(rss for n, rss in series if n >= args.every)
    print(f"invalid calls answered with InvalidArgumentError: {errors}")
    print(
        f"RSS after warm-up ({args.every} forwards): {warm / 2**20:.1f} MiB; final: {final / 2**20:.1f} MiB; "
        f"peak after warm-up: {peak / 2**20:.1f} MiB; growth: {growth:+.2f} % (target < {args.max_growth} %)"
    )
    return 0 if growth < args.max_growth else 1


if __name__ == "__main__":
    sys.exit(main())
