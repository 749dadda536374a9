"""One model shared by many Python threads: the forward releases the GIL and the model is immutable, so
8 threads × 50 forwards each, all started together, must give exactly the serial results, with no
crash, deadlock or cross-talk; errors raised on some threads must not disturb the others."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from candle_unet2d import InvalidArgumentError, UNet2DModel

from conftest import UNET2D_FIXTURES

THREADS = 8
FORWARDS = 50
MODEL = UNET2D_FIXTURES / "no_mid_block"  # small: 2 levels, 16/32 channels, attention


@pytest.fixture(scope="module")
def model() -> UNet2DModel:
    return UNet2DModel.from_pretrained(MODEL)


def call(i: int) -> tuple[np.ndarray, int]:
    """Call ``i``: its own sample (batch 1 or 2) and timestep, so that cross-talk would show."""
    batch = 1 + i % 2
    sample = np.random.default_rng(i).standard_normal((batch, 3, 16, 16)).astype(np.float32)
    return sample, (i * 37) % 1000


def test_eight_threads_share_one_model_and_match_serial(model: UNet2DModel) -> None:
    n = THREADS * FORWARDS
    serial = [model(*call(i)).sample for i in range(n)]
    barrier = threading.Barrier(THREADS)

    def worker(k: int) -> list[tuple[int, np.ndarray]]:
        barrier.wait()
        # Thread k runs calls k, k + 8, k + 16, …: neighbours in the serial order run concurrently.
        return [(i, model(*call(i)).sample) for i in range(k, n, THREADS)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for chunk in pool.map(worker, range(THREADS)) for r in chunk]
    assert len(results) == n
    for i, out in results:
        np.testing.assert_array_equal(out, serial[i], err_msg=f"call {i}")


def test_errors_on_some_threads_do_not_disturb_the_others(model: UNet2DModel) -> None:
    sample, t = call(3)
    expected = model(sample, t).sample
    barrier = threading.Barrier(THREADS)

    def worker(k: int) -> int:
        barrier.wait()
        for _ in range(FORWARDS // 2):
            if k % 2:
                with pytest.raises(InvalidArgumentError, match="has 4 channels"):
                    model(np.zeros((1, 4, 16, 16), np.float32), t)
            else:
                np.testing.assert_array_equal(model(sample, t).sample, expected)
        return k

    with ThreadPoolExecutor(THREADS) as pool:
        assert sorted(pool.map(worker, range(THREADS))) == list(range(THREADS))


def test_the_gil_is_released_during_a_forward(model: UNet2DModel) -> None:
    """A pure-Python thread keeps running while another thread is inside one long forward: the largest
    pause it sees is a small part of the forward (were the GIL held, it would pause for all of it)."""
    big = np.zeros((1, 3, 96, 96), np.float32)  # attention over 48 × 48 positions: a long forward
    model(big, 1)
    inside = threading.Event()
    stop = threading.Event()
    longest = 0.0

    def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            if inside.is_set():
                longest = max(longest, now - last)
            last = now

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        time.sleep(0.01)
        inside.set()
        start = time.perf_counter()
        model(big, 1)
        duration = time.perf_counter() - start
        inside.clear()
    finally:
        stop.set()
        thread.join()
    if duration < 0.05:
        pytest.skip(f"the forward took {duration * 1e3:.0f} ms: too short to tell")
    assert longest < 0.5 * duration, f"the Python thread paused {longest:.3f} s of a {duration:.3f} s forward"
