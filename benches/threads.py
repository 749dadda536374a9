"""Throughput of one shared model from 1 and from 2 Python threads (forwards per second): if the forward
releases the GIL, 2 threads on 2 cores do up to twice the work of one.

    . .venv/bin/activate && python benches/threads.py [--forwards 200] [--model no_mid_block] [--size 32]

candle parallelises inside one forward over all cores; to see the threads' effect alone, this runs candle
single-threaded per forward (RAYON_NUM_THREADS=1, set before import unless already set). A benchmark, not a
test: it prints numbers. On a machine shared with other work the numbers vary; run it twice.

Throughput cannot tell a held GIL from a machine with no core to spare, so a second probe follows: the pauses
a pure-Python thread sees while forwards run, next to those it sees during GIL-holding C calls of the same
length (each of which pauses it for the whole call).
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from candle_unet2d import UNet2DModel

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "unet2d"


def throughput(model: UNet2DModel, sample: np.ndarray, threads: int, forwards: int) -> float:
    """Forwards per second with `threads` threads sharing `forwards` calls."""
    barrier = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(k, forwards, threads):
            model(sample, i % 1000)

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(worker, k) for k in range(threads)]
        barrier.wait()
        start = time.perf_counter()
        for f in futures:
            f.result()
        return forwards / (time.perf_counter() - start)


def pauses(work: Callable[[], object], calls: int) -> list[float]:
    """The pauses longer than 1 ms that a pure-Python thread sees while this thread makes `calls` calls of
    `work`. A call that holds the GIL pauses it for the whole call, every call; one that releases the GIL
    does not pause it at all (on a busy machine the OS still does, now and then)."""
    stop = threading.Event()
    gaps: list[float] = []

    def spin() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            if now - last > 1e-3:
                gaps.append(now - last)
            last = now

    thread = threading.Thread(target=spin)
    thread.start()
    time.sleep(0.01)
    for _ in range(calls):
        work()
    stop.set()
    thread.join()
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forwards", type=int, default=200)
    parser.add_argument("--model", default="no_mid_block")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = UNet2DModel.from_pretrained(FIXTURES / args.model)
    channels = model.config["in_channels"]
    sample = np.random.default_rng(0).standard_normal((1, channels, args.size, args.size)).astype(np.float32)
    for _ in range(5):
        model(sample, 1)
    print(
        f"{args.model}, 1×{channels}×{args.size}×{args.size}, {args.forwards} forwards, "
        f"RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}, {os.cpu_count()} CPUs"
    )
    best: dict[int, float] = {}
    for r in range(args.repeats):
        for threads in (1, 2):
            rate = throughput(model, sample, threads, args.forwards)
            best[threads] = max(best.get(threads, 0.0), rate)
            print(f"  run {r + 1}: {threads} thread{'s' if threads > 1 else ' '}: {rate:8.1f} forwards/s")
    print(f"best: 1 thread {best[1]:.1f}/s, 2 threads {best[2]:.1f}/s, speed-up ×{best[2] / best[1]:.2f}")
    print("(×2 is the ideal on 2 idle cores; about ×1 if the GIL were held, or if other work leaves no core free)")
    # A GIL probe that does not need a free core per thread: does a pure-Python thread run during forwards?
    start = time.perf_counter()
    model(sample, 1)
    forward_s = time.perf_counter() - start
    n = max(1, int(forward_s * 10_000_000))
    start = time.perf_counter()
    sum(range(n))  # a C call that holds the GIL, for calibration
    n = max(1, int(n * forward_s / (time.perf_counter() - start)))

    def describe(gaps: list[float]) -> str:
        if not gaps:
            return "no pause over 1 ms"
        return f"{len(gaps)} pauses over 1 ms, median {1e3 * statistics.median(gaps):.1f} ms"

    forwards = describe(pauses(lambda: model(sample, 1), 100))
    holding = describe(pauses(lambda: sum(range(n)), 100))
    print(f"a pure-Python thread, during 100 forwards of {forward_s * 1e3:.1f} ms: {forwards}")
    print(f"  and during 100 GIL-holding C calls of the same length (calibration): {holding}")


if __name__ == "__main__":
    main()
