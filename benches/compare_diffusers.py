"""Side-by-side benchmark: candle-unet2d against diffusers (PyTorch) in one run, on identical weights.

Needs, in one environment: this package (``maturin develop --release``), ``torch`` and ``diffusers``
(``pip install torch diffusers``; they are needed only here, not by the tests), and for the CLI case a
release build of the binary (``cargo build --release --features cli``).

    python benches/compare_diffusers.py [--quick] [--json results.json] [--threads N] [--only forward ...]

Each forward case builds a random diffusers UNet2DModel from ``benches/configs/<arch>.json``, saves it to a
temporary folder and loads that folder into both implementations. Timed runs alternate between the two
and report medians; memory and cold-start figures come from separate processes, so neither pays for the
other's imports. Ratios are ours / diffusers: below 1 means we are faster (or smaller). The machine's
practical float32 peak (PyTorch's sgemm) is measured in the same run, and each forward's GFLOP/s is
reported as a share of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "benches" / "configs"
DIGITS = ROOT / "models" / "digits16"
CLI = ROOT / "target" / "release" / "unet2d"
# Convolutions, linear layers and attention matmuls of one forward, from `candle_unet2d::stats::flops_per_sample`
# (`cargo run --release --example time_forward -- benches/configs/<arch>.json`).
GFLOP_PER_SAMPLE = {"ddpm-cifar10-32": 12.44, "ddpm-celebahq-256": 497.03}


GROUPS = ["forward", "sampling", "process", "cli"]


def make_model_dir(arch: str, out: Path) -> Path:
    """A random diffusers model of `arch`, saved as diffusers saves it."""
    import torch
    from diffusers import UNet2DModel as TorchUNet

    config = json.loads((CONFIGS / f"{arch}.json").read_text())
    config.pop("_class_name", None)
    torch.manual_seed(0)
    model = TorchUNet(**config)
    folder = out / arch
    model.save_pretrained(folder)
    return folder


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def alternate(ours, theirs, repeats: int) -> tuple[float, float]:
    """Warm both, then alternate single runs; medians in ms."""
    ours()
    theirs()
    a, b = [], []
    for _ in range(repeats):
        a += timed(ours, 1)
        b += timed(theirs, 1)
    return statistics.median(a), statistics.median(b)


def forward_case(name: str, folder: Path, batch: int, repeats: int) -> dict:
    import numpy as np
    import torch
    from diffusers import UNet2DModel as TorchUNet

    from candle_unet2d import UNet2DModel

    ours = UNet2DModel.from_pretrained(folder)
    theirs = TorchUNet.from_pretrained(folder).eval()
    size = ours.config.sample_size
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    xt = torch.from_numpy(x)
    diff = float(np.abs(ours(x, 500).sample - theirs(xt, 500).sample.detach().numpy()).max())

    def run_theirs():
        with torch.no_grad():
            theirs(xt, 500)

    ms_ours, ms_theirs = alternate(lambda: ours(x, 500), run_theirs, repeats)
    gflop = GFLOP_PER_SAMPLE[folder.name] * batch
    return case_row(name, ms_ours, ms_theirs, gflop=gflop, max_abs_diff=diff)


def sampling_case(batch: int, steps: int, repeats: int) -> dict:
    import numpy as np
    import torch
    from diffusers import DDIMScheduler as TorchDDIM
    from diffusers import UNet2DModel as TorchUNet

    from candle_unet2d import DDIMScheduler, Generator, UNet2DPipeline

    labels = [i % 10 for i in range(batch)]
    pipe = UNet2DPipeline.from_pretrained(DIGITS)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)

    def run_ours():
        pipe(
            batch_size=batch,
            num_inference_steps=steps,
            class_labels=labels,
            generator=Generator().manual_seed(0),
            output_type="np",
            progress=False,
        )

    unet = TorchUNet.from_pretrained(DIGITS, subfolder="unet").eval()
    sched = TorchDDIM.from_pretrained(DIGITS, subfolder="scheduler")
    lab = torch.tensor(labels)

    def run_theirs():
        g = torch.Generator().manual_seed(0)
        x = torch.randn((batch, 1, 16, 16), generator=g)
        sched.set_timesteps(steps)
        with torch.no_grad():
            for t in sched.timesteps:
                x = sched.step(unet(x, t, class_labels=lab).sample, t, x, generator=g).prev_sample
        return np.asarray((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))

    ms_ours, ms_theirs = alternate(run_ours, run_theirs, repeats)
    return case_row(f"digits16 DDIM {steps} steps, batch {batch}", ms_ours, ms_theirs)


def case_row(name: str, ours_ms: float, diffusers_ms: float, **extra) -> dict:
    return {"name": name, "ours_ms": ours_ms, "diffusers_ms": diffusers_ms, "ratio": ours_ms / diffusers_ms, **extra}


# --- separate processes: peak RSS, cold start, load time ---------------------------------------------

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
impl, folder, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
import numpy as np
if impl == "ours":
    from candle_unet2d import UNet2DModel
    t1 = time.perf_counter(); m = UNet2DModel.from_pretrained(folder); t2 = time.perf_counter()
    s = m.config.sample_size
    x = np.zeros((batch, 3, s, s), np.float32); m(x, 500)
else:
    import torch
    torch.set_num_threads(int(sys.argv[4]))
    from diffusers import UNet2DModel
    t1 = time.perf_counter(); m = UNet2DModel.from_pretrained(folder).eval(); t2 = time.perf_counter()
    s = m.config.sample_size
    with torch.no_grad():
        m(torch.zeros(batch, 3, s, s), 500)
t3 = time.perf_counter()
# VmHWM (peak resident set of this process image); ru_maxrss would carry the parent's peak over exec.
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"load_ms": (t2 - t1) * 1e3, "cold_ms": (t3 - t0) * 1e3, "peak_rss_mb": rss}))
"""


def child(impl: str, folder: Path, batch: int, threads: int) -> dict:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, impl, str(folder), str(batch), str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_ms"] = (time.perf_counter() - start) * 1e3
    return result


def process_cases(folder: Path, arch: str, threads: int, repeats: int) -> list[dict]:
    runs: dict[str, list[dict]] = {"ours": [], "diffusers": []}
    for _ in range(repeats):
        for impl in ("ours", "diffusers"):
            runs[impl].append(child(impl, folder, 1, threads))

    def med(impl: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[impl])

    return [
        case_row(f"{arch} from_pretrained", med("ours", "load_ms"), med("diffusers", "load_ms")),
        case_row(
            f"{arch} cold process (start, import, load, 1 forward)",
            med("ours", "process_ms"),
            med("diffusers", "process_ms"),
        ),
        {
            **case_row(
                f"{arch} peak RSS (MB, load + 1 forward)", med("ours", "peak_rss_mb"), med("diffusers", "peak_rss_mb")
            ),
            "unit": "MB",
        },
    ]


DIFFUSERS_CLI_EQUIVALENT = r"""
import sys, torch
torch.set_num_threads(int(sys.argv[2]))
from diffusers import UNet2DModel, DDIMScheduler
from PIL import Image
import numpy as np
d = sys.argv[1]
unet = UNet2DModel.from_pretrained(d, subfolder="unet").eval()
s = DDIMScheduler.from_pretrained(d, subfolder="scheduler")
g = torch.Generator().manual_seed(0)
x = torch.randn((10, 1, 16, 16), generator=g)
lab = torch.arange(10)
s.set_timesteps(50)
with torch.no_grad():
    for t in s.timesteps:
        x = s.step(unet(x, t, class_labels=lab).sample, t, x, generator=g).prev_sample
img = ((x / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
Image.fromarray(np.concatenate(list(img), axis=1)).save(sys.argv[3])
"""


def cli_case(threads: int, repeats: int) -> dict | None:
    if not CLI.exists():
        print(f"(skipping the CLI case: build {CLI} with `cargo build --release --features cli`)")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        ours_cmd = [str(CLI), "sample", "--scheduler", "ddim", "--steps", "50", "--out", f"{tmp}/a.png"]
        theirs_cmd = [sys.executable, "-c", DIFFUSERS_CLI_EQUIVALENT, str(DIGITS), str(threads), f"{tmp}/b.png"]
        ms_ours, ms_theirs = alternate(
            lambda: subprocess.run(ours_cmd, check=True, capture_output=True),
            lambda: subprocess.run(theirs_cmd, check=True, capture_output=True),
            repeats,
        )
    return case_row("CLI: digits16 DDIM 50 steps to PNG, end to end", ms_ours, ms_theirs)


def sgemm_peak(threads: int) -> float:
    """PyTorch's float32 matmul throughput (GFLOP/s, best of 5 at 2048³): the machine's practical peak."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(timed(lambda: a @ b, 5))
    return 2 * 2048**3 / (best / 1e3) / 1e9


def machine(threads: int) -> dict:
    import diffusers
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "torch_threads": threads,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=GROUPS, help="run only these groups of cases")
    args = parser.parse_args()
    try:
        import diffusers  # noqa: F401
        import torch
    except ImportError:
        sys.exit("this benchmark needs torch and diffusers: pip install torch diffusers")
    torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 10
    peak = sgemm_peak(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cifar = make_model_dir("ddpm-cifar10-32", Path(tmp))
        if "forward" in args.only:
            rows.append(forward_case("cifar10-32 forward, batch 1", cifar, 1, reps * 3))
            rows.append(forward_case("cifar10-32 forward, batch 8", cifar, 8, reps))
            celeba = make_model_dir("ddpm-celebahq-256", Path(tmp))
            rows.append(forward_case("celebahq-256 forward, batch 1", celeba, 1, max(2, reps // 2)))
        if "sampling" in args.only:
            rows.append(sampling_case(64, 50, max(2, reps // 3)))
        if "process" in args.only:
            rows += process_cases(cifar, "cifar10-32", args.threads, max(2, reps // 3))
        cli = cli_case(args.threads, max(2, reps // 3)) if "cli" in args.only else None
        if cli:
            rows.append(cli)
    print(f"\nsgemm peak (PyTorch, 2048³, {args.threads} threads, this run): {peak:.0f} GFLOP/s")
    print(f"\n{'case':62} {'ours':>10} {'diffusers':>10} {'ratio':>7}  notes")
    for r in rows:
        unit = r.get("unit", "ms")
        notes = []
        if "gflop" in r:
            ours, theirs = r["gflop"] / r["ours_ms"] * 1e3, r["gflop"] / r["diffusers_ms"] * 1e3
            r["ours_gflops"], r["diffusers_gflops"] = ours, theirs
            notes.append(f"{ours:.0f} vs {theirs:.0f} GFLOP/s ({ours / peak:.0%} vs {theirs / peak:.0%} of peak)")
        if "max_abs_diff" in r:
            notes.append(f"max|Δ| {r['max_abs_diff']:.1e}")
        print(
            f"{r['name']:62} {r['ours_ms']:>8.1f}{unit:>2} {r['diffusers_ms']:>8.1f}{unit:>2} {r['ratio']:>7.2f}  "
            + ", ".join(notes)
        )
    result = {"cases": rows, "machine": {**machine(args.threads), "sgemm_peak_gflops": peak}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
