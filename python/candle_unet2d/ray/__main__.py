"""``python -m candle_unet2d.ray``: sample many images into a folder on a Ray cluster, resumably.

    python -m candle_unet2d.ray --model google/ddpm-cifar10-32 --num-images 50000 --out fid/ \\
        --address auto --concurrency 8 --scheduler DDIMScheduler --steps 100

Ends with one line: the images written and reused, images/s and the workers. Errors are one
``error:`` line and exit code 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import sys
import time

from .._errors import UNet2DError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m candle_unet2d.ray", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a pipeline folder, a UNet folder or a Hub id")
    p.add_argument("--num-images", type=int, required=True, help="how many images")
    p.add_argument("--out", required=True, help="the output folder (images/, manifest.parquet); reruns resume")
    p.add_argument("--address", default=None, help="the Ray cluster ('auto' for the running one; default: a local one)")
    p.add_argument("--concurrency", type=int, default=None, help="workers (default: the cluster's CPUs)")
    p.add_argument("--num-cpus-per-worker", type=float, default=None, help="CPUs (and threads) per worker")
    p.add_argument("--num-gpus-per-worker", type=float, default=None, help="GPUs per worker (the CUDA build)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch on a worker")
    p.add_argument("--scheduler", default=None, help="a scheduler class name, e.g. DDIMScheduler")
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--class", dest="class_label", type=int, default=None, help="one class for every image")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import ray
    except ImportError:
        print("error: Ray is not installed: pip install 'candle-unet2d[ray]'", file=sys.stderr)
        return 1
    from . import _run

    if not ray.is_initialized():
        ray.init(address=args.address)
    start = time.perf_counter()
    try:
        _dataset, run = _run(
            args.model,
            args.num_images,
            seed=args.seed,
            class_labels=args.class_label,
            scheduler=args.scheduler,
            num_inference_steps=args.steps,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            num_cpus_per_worker=args.num_cpus_per_worker,
            num_gpus_per_worker=args.num_gpus_per_worker,
            output_dir=args.out,
        )
    except UNet2DError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    rate = run.computed / seconds if seconds > 0 else 0.0
    print(
        f"{args.num_images} images in {args.out}: {run.computed} sampled, {run.kept} kept from an earlier run; "
        f"{rate:.2f} images/s on {run.workers} workers ({seconds:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
