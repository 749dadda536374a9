"""Side-by-side benchmark: candle-unet2d against diffusers (PyTorch) and the strongest CPU peers, in one run.

Needs, in one environment: this package (``maturin develop --release``), ``torch`` and ``diffusers``, and,
for the ONNX peers, ``onnx``, ``onnxruntime`` and ``openvino``
(``pip install torch diffusers onnx onnxruntime openvino``; they are needed only here, not by the tests),
and for the CLI case a release build of the binary (``cargo build --release --features cli``). A missing
peer is reported in one line and skipped.

    python benches/compare_diffusers.py [--quick] [--json results.json] [--threads N] [--only forward ...]
                                        [--peers ort openvino]

Each forward case builds a random diffusers UNet2DModel from ``benches/configs/<arch>.json``, saves it to a
temporary folder and loads that folder into ours and diffusers. The same diffusers model is also
exported to ONNX (TorchScript exporter, opset 17, dynamic batch) and run by ONNX Runtime
(CPUExecutionProvider, ORT_ENABLE_ALL) and by OpenVINO (CPU, f32, LATENCY hint), each with ``--threads``
threads. Every implementation is warmed, then timed runs alternate among them and medians are reported;
each one's max abs difference from diffusers is recorded. Memory and cold-start figures come from separate
processes, so neither pays for the other's imports. Ratios are ours / diffusers: below 1 means we are
faster (or smaller); forward cases also report ours / best peer (the fastest of torch, ONNX Runtime and
OpenVINO). Forward cases are timed twice: single runs, each after 0.25 s of quiet (so no implementation's
idle threads take cores from the next), and back to back (one untimed run after the quiet, then three
timed ones), as a sampling loop runs them. The machine's practical float32 peak (PyTorch's sgemm) is measured in the same run, and each
forward's GFLOP/s is reported as a share of it. The header names the CPU, its SIMD flags and the ISA level
our kernels ran (``candle_unet2d._core.cpu_isa()`` where the build exposes it, else ``$CANDLE_UNET2D_ISA``).
"""

from __future__ import annotations

import argparse
import importlib.util
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
# Peers that run the diffusers model exported to ONNX; diffusers on torch always runs (it is the reference).
PEERS = ["ort", "openvino"]
# Implementations of a forward case, in report order, with their labels; `<key>_ms` etc. in the JSON.
IMPLS = {"ours": "ours", "diffusers": "torch", "ort": "ORT", "openvino": "OpenVINO"}
PEER_MODULES = {"ort": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}
ISA_FLAGS = ["avx2", "fma", "avx512f", "avx512vl", "avx512bw", "avx512dq"]


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


# Before each timed run: the previous implementation's idle worker threads spin for a while before
# they sleep (ONNX Runtime's pool, OpenVINO's TBB, torch's OpenMP), and would take cores from the next.
# Measured here on 2 cores: our forward took 15% longer straight after an ONNX Runtime one.
SETTLE_S = 0.25


# Timed runs per turn in the steady-state measurement, after one untimed run: forwards back to back,
# as a sampling loop runs them. A single run after the settle pays for whatever the idle gap cost the
# implementation (measured here on a 2-core VM: our cifar10-32 batch-1 forward 50 ms back to back, 63 ms
# after 0.25 s idle, the whole slowdown spread evenly over every op; ONNX Runtime 51 and 52 ms, its pool
# spinning between ops), so both are reported.
STEADY_RUNS = 3


def alternate(*fns, repeats: int, settle: float = SETTLE_S, burst: int = 0) -> list[float]:
    """Warm each of `fns`, then alternate turns among them, each after `settle` seconds of quiet: one
    timed run per turn (`burst=0`), or one untimed run then `burst` timed runs back to back. Medians in
    ms, in the order given."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            time.sleep(settle)
            if burst:
                fn()
            t += timed(fn, max(1, burst))
    return [statistics.median(t) for t in times]


# --- ONNX peers: the diffusers model exported once, run by ONNX Runtime and OpenVINO -----------------


def available_peers(wanted: list[str]) -> list[str]:
    """The peers of `wanted` whose packages are installed; one line for each that is skipped."""
    found = []
    for peer in wanted:
        missing = [m for m in PEER_MODULES[peer] if importlib.util.find_spec(m) is None]
        if missing:
            print(f"(skipping {IMPLS[peer]}: {' and '.join(missing)} not installed; pip install {' '.join(missing)})")
        else:
            found.append(peer)
    return found


def export_onnx(folder: Path, path: Path) -> Path:
    """The diffusers model in `folder` as ONNX: inputs `sample` [batch, c, h, w] and `timestep` [batch]
    (float32), output `out`; the batch is dynamic. Traced at batch 2, so nothing specialises on batch 1."""
    import inspect
    import warnings

    import torch
    from diffusers import UNet2DModel as TorchUNet

    class Unet(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep):
            return self.unet(sample, timestep).sample

    unet = TorchUNet.from_pretrained(folder).eval()
    c, size = unet.config.in_channels, unet.config.sample_size
    args = (torch.zeros(2, c, size, size), torch.full((2,), 500.0))
    # `dynamo=False` (the TorchScript exporter) is the default before torch 2.9 and a keyword from 2.5 on.
    extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about diffusers' shape asserts and batch ≥ 64 branches (constant here), and torch
        # ≥ 2.9 about the TorchScript exporter itself; the outputs are checked against torch in each case.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Unet(unet),
            args,
            str(path),
            opset_version=17,
            input_names=["sample", "timestep"],
            output_names=["out"],
            dynamic_axes={"sample": {0: "batch"}, "timestep": {0: "batch"}},
            **extra,
        )
    return path


def ort_runner(path: Path, threads: int):
    """`run(x, t) -> np.ndarray` on ONNX Runtime's CPU provider, all graph optimisations, `threads` threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x, t: session.run(["out"], {"sample": x, "timestep": t})[0]


def openvino_runner(path: Path, threads: int):
    """`run(x, t) -> np.ndarray` on OpenVINO's CPU plugin (f32, LATENCY hint, `threads` threads), and the
    properties as compiled. (Reshaping to a static batch first made no difference on cifar10-32.)"""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    props = {k: compiled.get_property(k) for k in [*config, "NUM_STREAMS"]}
    props = {k: v.get_type_name() if isinstance(v, ov.Type) else str(v) for k, v in props.items()}
    request = compiled.create_infer_request()

    def run(x, t):
        request.infer({"sample": x, "timestep": t})
        return request.get_output_tensor(0).data

    return run, props


def one_line(e: Exception, limit: int = 240) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def peer_runs(peers: list[str], onnx: Path | None, x, t, threads: int) -> dict[str, tuple]:
    """For each peer that can be built, `(run, output, props)`: `run()` is one forward of `x` at timesteps `t`
    and `output` its result (a copy). A peer that fails to build or run is reported in one line and left out."""
    import numpy as np

    runs = {}
    for peer in peers if onnx is not None else []:
        try:
            if peer == "ort":
                fn, props = ort_runner(onnx, threads), {}
            else:
                fn, props = openvino_runner(onnx, threads)
            out = np.array(fn(x, t), copy=True)
        except Exception as e:  # a peer is optional: report it, never fail the benchmark
            print(f"(skipping {IMPLS[peer]} here: {one_line(e)})")
            continue
        runs[peer] = (lambda fn=fn: fn(x, t), out, props)
    return runs


def onnx_for(folder: Path, peers: list[str], cache: dict[Path, Path | None]) -> Path | None:
    """`folder`'s model exported to ONNX next to it (once), or None if no peer wants it or the export fails."""
    if not peers:
        return None
    if folder not in cache:
        try:
            cache[folder] = export_onnx(folder, folder.parent / f"{folder.name}.onnx")
        except Exception as e:
            print(f"(skipping the ONNX peers for {folder.name}: the export failed: {one_line(e)})")
            cache[folder] = None
    return cache[folder]


def forward_case(name: str, folder: Path, batch: int, repeats: int, peers: list[str], onnx: Path | None, threads: int):
    import numpy as np
    import torch
    from diffusers import UNet2DModel as TorchUNet

    from candle_unet2d import UNet2DModel

    ours = UNet2DModel.from_pretrained(folder)
    theirs = TorchUNet.from_pretrained(folder).eval()
    size = ours.config.sample_size
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    t = np.full((batch,), 500.0, dtype=np.float32)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        ref = theirs(xt, 500).sample.numpy()
    diff = float(np.abs(ours(x, 500).sample - ref).max())

    def run_theirs():
        with torch.no_grad():
            theirs(xt, 500)

    fns = {"ours": lambda: ours(x, 500), "diffusers": run_theirs}
    extra = {}
    for peer, (fn, out, props) in peer_runs(peers, onnx, x, t, threads).items():
        fns[peer] = fn
        extra[f"max_abs_diff_{peer}"] = float(np.abs(out - ref).max())
        if props:
            extra[f"{peer}_properties"] = props
    ms = dict(zip(fns, alternate(*fns.values(), repeats=repeats)))
    best = min((p for p in ms if p != "ours"), key=ms.__getitem__)
    extra.update({f"{p}_ms": ms[p] for p in fns if p not in ("ours", "diffusers")})
    steady = dict(zip(fns, alternate(*fns.values(), repeats=max(2, repeats // STEADY_RUNS), burst=STEADY_RUNS)))
    steady_best = min((p for p in steady if p != "ours"), key=steady.__getitem__)
    extra["steady"] = {
        **{f"{p}_ms": v for p, v in steady.items()},
        "best_peer": steady_best,
        "ratio": steady["ours"] / steady["diffusers"],
        "ratio_best_peer": steady["ours"] / steady[steady_best],
    }
    gflop = GFLOP_PER_SAMPLE[folder.name] * batch
    return case_row(
        name,
        ms["ours"],
        ms["diffusers"],
        gflop=gflop,
        max_abs_diff=diff,
        **extra,
        best_peer=best,
        best_peer_ms=ms[best],
        ratio_best_peer=ms["ours"] / ms[best],
    )


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

    ms_ours, ms_theirs = alternate(run_ours, run_theirs, repeats=repeats)
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
            repeats=repeats,
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


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and which of ISA_FLAGS it has, from /proc/cpuinfo (Linux; elsewhere a guess)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    info: dict[str, str] = {}
    for line in lines:  # the first processor's entries
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    return info.get("model name") or platform.processor() or "unknown", [f for f in ISA_FLAGS if f in flags]


def ours_isa() -> str:
    """The ISA level our kernels run: `candle_unet2d._core.cpu_isa()` where the build has it, else
    $CANDLE_UNET2D_ISA, else "unknown"."""
    try:
        import candle_unet2d
    except ImportError:
        candle_unet2d = None
    fn = getattr(getattr(candle_unet2d, "_core", None), "cpu_isa", None)
    if fn is not None:
        try:
            return str(fn() if callable(fn) else fn)
        except Exception:
            pass
    return os.environ.get("CANDLE_UNET2D_ISA") or "unknown"


def version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(dist)
    except PackageNotFoundError:
        return None


def machine(threads: int) -> dict:
    import diffusers
    import torch

    model, flags = cpu_info()
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": model,
        "isa_flags": flags,
        "ours_isa": ours_isa(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "candle_unet2d": version("candle-unet2d"),
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime"),
        "openvino": version("openvino"),
        "torch_threads": threads,  # and ONNX Runtime's and OpenVINO's
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def report_forward(rows: list[dict], peak: float) -> None:
    """The forward cases across all implementations: medians, ratios, GFLOP/s, % of peak, max|Δ| vs torch."""
    rows = [r for r in rows if "gflop" in r]
    if not rows:
        return
    impls = [i for i in IMPLS if any(f"{i}_ms" in r for r in rows)]

    def line(label: str, cells: dict[str, str], tail: str = "") -> None:
        print(f"{label:46}" + "".join(f"{cells.get(i, '-'):>14}" for i in impls) + tail)

    print()
    line("forward, all implementations (median ms)", IMPLS, f"{'ours/torch':>12} {'ours/best peer':>22}")
    for r in rows:
        ran = [i for i in impls if f"{i}_ms" in r]
        best = f"{r['ratio_best_peer']:.2f} ({IMPLS[r['best_peer']]})"
        line(r["name"], {i: f"{r[f'{i}_ms']:.1f}" for i in ran}, f"{r['ratio']:>12.2f} {best:>22}")
        rates = {i: r[f"{i}_gflops"] for i in ran}
        line("  GFLOP/s (% of sgemm peak)", {i: f"{g:.0f} ({g / peak:.0%})" for i, g in rates.items()})
        diffs = {i: r[f"max_abs_diff_{i}"] for i in PEERS if f"max_abs_diff_{i}" in r}
        line(
            "  max|Δ| vs torch",
            {"ours": f"{r['max_abs_diff']:.1e}", "diffusers": "", **{i: f"{d:.1e}" for i, d in diffs.items()}},
        )
        if "steady" in r:
            st = r["steady"]
            best = f"{st['ratio_best_peer']:.2f} ({IMPLS[st['best_peer']]})"
            cells = {i: f"{st[f'{i}_ms']:.1f}" for i in ran if f"{i}_ms" in st}
            line(f"  back to back ({STEADY_RUNS} per turn)", cells, f"{st['ratio']:>12.2f} {best:>22}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="threads for torch, ONNX Runtime, OpenVINO (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=GROUPS, help="run only these groups of cases")
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=PEERS,
        default=PEERS,
        help="ONNX peers for the forward cases (default: those installed; diffusers on torch always runs)",
    )
    args = parser.parse_args()
    try:
        import diffusers  # noqa: F401
        import torch
    except ImportError:
        sys.exit("this benchmark needs torch and diffusers: pip install torch diffusers")
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    lacks = " ".join(f for f in ISA_FLAGS if f not in info["isa_flags"])
    print(
        f"cpu: {info['cpu_model']}, {info['cpus']} cpus, flags: {' '.join(info['isa_flags']) or '-'}"
        f"{f' (no {lacks})' if lacks else ''}; our kernels: {info['ours_isa']}; {args.threads} threads"
    )
    names = ("candle_unet2d", "torch", "diffusers", "onnxruntime", "openvino")
    print("versions: " + ", ".join(f"{k} {info[k]}" for k in names if info[k]))
    peers = available_peers(args.peers) if "forward" in args.only else []
    reps = 2 if args.quick else 10
    peak = sgemm_peak(args.threads)
    rows = []
    onnx_files: dict[Path, Path | None] = {}  # each model exported once, for all its batch sizes
    with tempfile.TemporaryDirectory() as tmp:
        cifar = make_model_dir("ddpm-cifar10-32", Path(tmp))
        if "forward" in args.only:
            celeba = make_model_dir("ddpm-celebahq-256", Path(tmp))
            for name, folder, batch, repeats in (
                ("cifar10-32 forward, batch 1", cifar, 1, reps * 3),
                ("cifar10-32 forward, batch 8", cifar, 8, reps),
                ("celebahq-256 forward, batch 1", celeba, 1, max(2, reps // 2)),
            ):
                onnx = onnx_for(folder, peers, onnx_files)
                rows.append(forward_case(name, folder, batch, repeats, peers, onnx, args.threads))
        if "sampling" in args.only:
            rows.append(sampling_case(64, 50, max(2, reps // 3)))
        if "process" in args.only:
            rows += process_cases(cifar, "cifar10-32", args.threads, max(3, reps // 2))
        cli = cli_case(args.threads, max(2, reps // 3)) if "cli" in args.only else None
        if cli:
            rows.append(cli)
    if ours_isa() != info["ours_isa"]:  # read again now that our kernels have run
        info["ours_isa"] = ours_isa()
        print(f"our kernels ran: {info['ours_isa']}")
    print(f"\nsgemm peak (PyTorch, 2048³, {args.threads} threads, this run): {peak:.0f} GFLOP/s")
    print(f"\n{'case':62} {'ours':>10} {'diffusers':>10} {'ratio':>7}  notes")
    for r in rows:
        unit = r.get("unit", "ms")
        notes = []
        if "gflop" in r:
            for i in IMPLS:
                if f"{i}_ms" in r:
                    r[f"{i}_gflops"] = r["gflop"] / r[f"{i}_ms"] * 1e3
                    r[f"{i}_pct_of_peak"] = r[f"{i}_gflops"] / peak * 100
            ours, theirs = r["ours_gflops"], r["diffusers_gflops"]
            notes.append(f"{ours:.0f} vs {theirs:.0f} GFLOP/s ({ours / peak:.0%} vs {theirs / peak:.0%} of peak)")
        if "max_abs_diff" in r:
            notes.append(f"max|Δ| {r['max_abs_diff']:.1e}")
        print(
            f"{r['name']:62} {r['ours_ms']:>8.1f}{unit:>2} {r['diffusers_ms']:>8.1f}{unit:>2} {r['ratio']:>7.2f}  "
            + ", ".join(notes)
        )
    report_forward(rows, peak)
    result = {"cases": rows, "machine": {**info, "sgemm_peak_gflops": peak}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
