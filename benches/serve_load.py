"""Load benchmark of ``unet2d serve`` on loopback: throughput (images/s) and p50/p99 latency at several
concurrencies, with batching on (``--max-batch 16``) and off (``--max-batch 1``), next to ``unet2d sample``
making the same images one process per image, serially.

    cargo build --release --features cli && python3 benches/serve_load.py [--steps 20] [--seconds 4]

Each client sends one-image requests (DDIM, ``--steps`` steps, its own seeds and labels) back to back for
``--seconds``; latency is the request's wall time as the client sees it. Standard library only. A
benchmark, not a test: it prints a Markdown table (append it to benches/RESULTS.md with the CPU model).
On a machine shared with other work the numbers vary; run it twice.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "target" / "release" / "unet2d"
CONCURRENCY = [1, 2, 4, 8, 16, 32]


class Server:
    def __init__(self, max_batch: int) -> None:
        self.process = subprocess.Popen(
            [str(BINARY), "serve", "--port", "0", "--log", "error", "--max-batch", str(max_batch), "--max-queue", "256"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening on http://"), line
        host, port = line.strip().removeprefix("listening on http://").rsplit(":", 1)
        self.host, self.port = host, int(port)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load(server: Server, clients: int, steps: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        nonlocal errors
        connection = http.client.HTTPConnection(server.host, server.port, timeout=300)
        n = 0
        while time.perf_counter() < stop_at:
            body = json.dumps(
                {
                    "seed": 100_000 * index + n,
                    "class_labels": (index + n) % 10,
                    "scheduler": "ddim",
                    "num_inference_steps": steps,
                }
            )
            started = time.perf_counter()
            connection.request("POST", "/v1/images", body, {"Content-Type": "application/json"})
            reply = connection.getresponse()
            reply.read()
            elapsed = time.perf_counter() - started
            with lock:
                if reply.status == 200:
                    latencies.append(elapsed)
                else:
                    errors += 1
            n += 1
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "images_per_s": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "requests": len(latencies),
        "errors": errors,
    }


def cli_serial(steps: int, images: int) -> dict[str, float]:
    times = []
    for i in range(images):
        started = time.perf_counter()
        subprocess.run(
            [str(BINARY), "sample", "--scheduler", "ddim", "--steps", str(steps), "--class", str(i % 10),
             "--seed", str(i), "--out", "/tmp/unet2d-serve-bench.png"],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - started)
    return {
        "images_per_s": images / sum(times),
        "p50_ms": 1000 * statistics.median(times),
        "p99_ms": 1000 * percentile(times, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--cli-images", type=int, default=16)
    args = parser.parse_args()
    rows = []
    for max_batch in (16, 1):
        server = Server(max_batch)
        try:
            load(server, 2, args.steps, 1.0)  # warm-up
            for clients in CONCURRENCY:
                result = load(server, clients, args.steps, args.seconds)
                rows.append((f"serve --max-batch {max_batch}", clients, result))
                print(f"max_batch={max_batch} clients={clients}: {json.dumps(result)}", flush=True)
        finally:
            server.stop()
    cli = cli_serial(args.steps, args.cli_images)
    print(f"cli serial: {json.dumps(cli)}", flush=True)
    print()
    print(f"DDIM {args.steps} steps, one 16×16 digit per request, {args.seconds:g} s per row:")
    print()
    print("| mode | clients | images/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode, clients, r in rows:
        print(f"| {mode} | {clients} | {r['images_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    print(f"| `unet2d sample`, one process per image | 1 | {cli['images_per_s']:.1f} | {cli['p50_ms']:.0f} | "
          f"{cli['p99_ms']:.0f} |")


if __name__ == "__main__":
    main()
