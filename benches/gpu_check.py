"""GPU check, in one command on a CUDA machine with PyTorch and a CUDA build of this package installed:

    pip install candle_unet2d-*.whl        # built with: maturin build --release --features cuda
    python benches/gpu_check.py [--device cuda:0] [--json gpu.json]

1. Every `tests/fixtures/unet2d` case on the GPU in float32 (TF32 off) against diffusers' float64 output,
   within 1e-3 · max(1, max|expected|); float16 and bfloat16 against our float32 GPU output within 2e-2.
2. The shipped digits16 pipeline (DPM-Solver++ 20 steps) on the GPU against the CPU reference images.
3. A benchmark against torch on the same GPU, in the same run: cifar10-32 batch 64 and celebahq-256
   batch 16, bfloat16 and float16 (median ms, ratio ours/torch, achieved TFLOP/s, peak memory), and the
   bf16 matmul peak of this GPU for reference. Runs in a few minutes on an H200.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
GFLOP_PER_SAMPLE = {"ddpm-cifar10-32": 12.44, "ddpm-celebahq-256": 497.03}


def check_fixtures(device: str) -> list[dict]:
    from safetensors.numpy import load_file

    from candle_unet2d import UNet2DModel

    rows = []
    for case in sorted(p for p in (FIXTURES / "unet2d").iterdir() if p.is_dir()):
        meta = json.loads((case / "case.json").read_text())
        exp = load_file(case / "expected.safetensors")
        variant = "fp16" if meta["weights_format"] == "fp16" else None
        t = exp["timestep"]
        timestep = {"int": lambda: int(t), "float": lambda: float(t)}.get(meta["timestep_kind"], lambda: t)()
        labels = exp.get("class_labels")
        outs = {}
        for dtype in ("float32", "float16", "bfloat16"):
            model = UNet2DModel.from_pretrained(case, variant=variant, device=device, dtype=dtype)
            outs[dtype] = np.asarray(model(exp["sample"], timestep, class_labels=labels).sample, dtype=np.float32)
        scale = max(1.0, float(np.abs(exp["output"]).max()))
        f32_err = float(np.abs(outs["float32"] - exp["output"]).max()) / scale
        half = {d: float(np.abs(outs[d] - outs["float32"]).max()) / scale for d in ("float16", "bfloat16")}
        ok = f32_err <= 1e-3 and all(e <= 2e-2 for e in half.values())
        rows.append({"case": case.name, "f32_rel_err": f32_err, **{f"{d}_rel_err": e for d, e in half.items()}, "ok": ok})
        print(f"{case.name:32} f32 {f32_err:.1e}  f16 {half['float16']:.1e}  bf16 {half['bfloat16']:.1e}  "
              f"{'ok' if ok else 'FAIL'}", flush=True)
    return rows


def check_pipeline(device: str) -> dict:
    from safetensors.numpy import load_file

    from candle_unet2d import DPMSolverMultistepScheduler, Generator, UNet2DPipeline

    meta = json.loads((FIXTURES / "pipeline" / "digits16_dpmpp20_seed1.json").read_text())
    ref = load_file(FIXTURES / "pipeline" / "digits16_dpmpp20_seed1.safetensors")
    pipe = UNet2DPipeline.from_pretrained(ROOT / "models" / "digits16", device=device)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++",
                                                             solver_order=2)
    images = pipe(num_inference_steps=meta["num_inference_steps"], class_labels=meta["class_labels"],
                  generator=Generator().manual_seed(meta["seed"]), output_type="np", progress=False).images
    diff = float(np.abs(np.asarray(images) - ref["images"]).max())
    print(f"digits16 DPM-Solver++ on {device}: max pixel diff {diff * 255:.2f}/255", flush=True)
    return {"case": "digits16_dpmpp20_seed1", "max_pixel_diff": diff, "ok": diff <= 2 / 255}


def bench(device: str, arch: str, batch: int, dtype: str, repeats: int) -> dict:
    import torch
    from diffusers import UNet2DModel as TorchUNet

    from candle_unet2d import UNet2DModel

    config = json.loads((ROOT / "benches" / "configs" / f"{arch}.json").read_text())
    config.pop("_class_name", None)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        TorchUNet(**config).save_pretrained(tmp)
        tdtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        theirs = TorchUNet.from_pretrained(tmp, torch_dtype=tdtype).to(device).eval()
        ours = UNet2DModel.from_pretrained(tmp, device=device, dtype=dtype)
    size = config["sample_size"]
    x = torch.randn(batch, 3, size, size, device=device, dtype=tdtype)

    def run_theirs():
        with torch.no_grad():
            theirs(x, 500)
        torch.cuda.synchronize()

    def run_ours():
        ours(x, 500)  # torch in → torch out on the same device: includes the copies in and out
        torch.cuda.synchronize()

    for fn in (run_ours, run_theirs):
        fn()
    a, b = [], []
    for _ in range(repeats):
        for fn, acc in ((run_ours, a), (run_theirs, b)):
            start = time.perf_counter()
            fn()
            acc.append((time.perf_counter() - start) * 1e3)
    ours_ms, torch_ms = statistics.median(a), statistics.median(b)
    tflop = GFLOP_PER_SAMPLE[arch] * batch / 1e3
    row = {"name": f"{arch} batch {batch} {dtype}", "ours_ms": ours_ms, "torch_ms": torch_ms,
           "ratio": ours_ms / torch_ms, "ours_tflops": tflop / ours_ms * 1e3, "torch_tflops": tflop / torch_ms * 1e3,
           "torch_peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20}
    print(f"{row['name']:40} ours {ours_ms:8.1f} ms  torch {torch_ms:8.1f} ms  ratio {row['ratio']:.2f}  "
          f"{row['ours_tflops']:.0f} vs {row['torch_tflops']:.0f} TFLOP/s", flush=True)
    return row


def matmul_peak(device: str) -> float:
    import torch

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    return 2 * 8192**3 * 20 / (time.perf_counter() - start) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import candle_unet2d

    if not candle_unet2d.WITH_CUDA:
        sys.exit("this candle_unet2d was built without CUDA: maturin build --release --features cuda")
    result = {"fixtures": check_fixtures(args.device), "pipeline": check_pipeline(args.device)}
    peak = matmul_peak(args.device)
    print(f"bf16 matmul peak: {peak:.0f} TFLOP/s", flush=True)
    result["bf16_matmul_peak_tflops"] = peak
    result["bench"] = [bench(args.device, arch, batch, dtype, args.repeats)
                       for arch, batch in (("ddpm-cifar10-32", 64), ("ddpm-celebahq-256", 16))
                       for dtype in ("bfloat16", "float16")]
    ok = all(r["ok"] for r in result["fixtures"]) and result["pipeline"]["ok"]
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
