"""Images/s of ``candle_unet2d.ray.sample_images`` on a local Ray cluster with 1 and 2 workers, against
the plain pipeline in one process (same model, scheduler, steps, batch size and seeds).

    python benches/ray_throughput.py [--model models/digits16] [--images 64] [--steps 20] [--batch 16]

Not a test: it prints a Markdown table (and the CPU model) to paste into ``benches/RESULTS.md``.
Each configuration runs once after a warm-up; the Ray figures include scheduling and the transfer of
the images to the driver, not the start of the cluster or of the workers (a warm-up run starts them).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def plain(model: str, images: int, steps: int, batch: int) -> float:
    from candle_unet2d import DDIMScheduler, Generator, UNet2DPipeline

    pipe = UNet2DPipeline.from_pretrained(model)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    classes = pipe.unet.config.get("num_class_embeds")

    def run(count: int) -> None:
        for first in range(0, count, batch):
            ids = list(range(first, min(first + batch, count)))
            labels = [i % classes for i in ids] if classes else None
            pipe(
                batch_size=len(ids),
                generator=[Generator().manual_seed(i) for i in ids],
                num_inference_steps=steps,
                class_labels=labels,
                output_type="uint8",
            )

    run(batch)  # warm-up
    start = time.perf_counter()
    run(images)
    return images / (time.perf_counter() - start)


def with_ray(model: str, images: int, steps: int, batch: int, workers: int, cpus: float) -> float:
    from candle_unet2d.ray import sample_images

    def run(count: int) -> None:
        rows = sample_images(
            model,
            count,
            scheduler="DDIMScheduler",
            num_inference_steps=steps,
            batch_size=batch,
            concurrency=workers,
            num_cpus_per_worker=cpus,
        ).take_all()
        if len(rows) != count or any(r["image"].dtype != np.uint8 for r in rows):
            raise RuntimeError(f"expected {count} uint8 images, got {len(rows)} rows")

    run(batch * workers)  # warm-up: starts the actors' processes once
    start = time.perf_counter()
    run(images)
    return images / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "models" / "digits16"))
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    cores = os.cpu_count() or 1

    import ray

    base = plain(args.model, args.images, args.steps, args.batch)
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    one = with_ray(args.model, args.images, args.steps, args.batch, 1, cores)
    two = with_ray(args.model, args.images, args.steps, args.batch, 2, max(1, cores // 2))
    ray.shutdown()

    print(f"CPU: {cpu_model()}, {cores} cores; {args.images} images, DDIM {args.steps} steps, batch {args.batch}")
    print()
    print("| configuration | images/s | against one process |")
    print("| --- | ---: | ---: |")
    print(f"| pipeline, one process ({cores} threads) | {base:.2f} | 1.00 |")
    print(f"| Ray, 1 worker × {cores} CPUs | {one:.2f} | {one / base:.2f} |")
    print(f"| Ray, 2 workers × {max(1, cores // 2)} CPU | {two:.2f} | {two / base:.2f} |")


if __name__ == "__main__":
    main()
