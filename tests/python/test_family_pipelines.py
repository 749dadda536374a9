"""Every UNet2DModel family's pipeline, called with diffusers' class names and arguments, against
diffusers' own runs (``tests/fixtures/family_pipelines/``, made by
``shared/reference/make_family_fixtures.py``): ScoreSdeVe, consistency models (one step and
``timesteps=[22, 0]``), RePaint (a random model; digits16 with class labels), and digits16 through
DDIMPipeline / PNDMPipeline. Also: ``DiffusionPipeline.from_pretrained``, ``save_pretrained``,
``callback_on_step_end``, Ctrl-C, and bad input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

import candle_unet2d as cu
from candle_unet2d import (
    CMStochasticIterativeScheduler,
    ConsistencyModelPipeline,
    DDIMPipeline,
    DDPMPipeline,
    DDPMScheduler,
    DiffusionPipeline,
    Generator,
    InvalidArgumentError,
    PNDMPipeline,
    PNDMScheduler,
    RePaintPipeline,
    RePaintScheduler,
    ScoreSdeVePipeline,
    ScoreSdeVeScheduler,
    UNet2DModel,
    UNet2DPipeline,
    UnsupportedError,
)

ROOT = Path(__file__).resolve().parents[2]
FAMILY = ROOT / "tests" / "fixtures" / "family_pipelines"
DIGITS16 = ROOT / "models" / "digits16"
PIXEL_TOLERANCE = 2.0 / 255.0


def fixture(name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return json.loads((FAMILY / f"{name}.json").read_text()), load_file(str(FAMILY / f"{name}.safetensors"))


def model_dir(meta: dict[str, Any]) -> Path:
    return ROOT / "tests" / meta["model"] if meta["model"].startswith("fixtures/") else ROOT / meta["model"]


def scheduler_kwargs(meta: dict[str, Any]) -> dict[str, Any]:
    """The scheduler config the fixture ran with, as constructor keywords."""
    return {k: v for k, v in meta["scheduler_config"].items() if not k.startswith("_")}


def assert_images_match(images: np.ndarray, expected: np.ndarray) -> None:
    assert images.shape == expected.shape
    assert images.dtype == np.float32
    diff = float(np.max(np.abs(images - expected)))
    assert diff <= PIXEL_TOLERANCE, f"max pixel diff {diff * 255:.2f}/255"


def digit_accuracy(images: np.ndarray, labels: list[int]) -> float:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    clf = LogisticRegression(max_iter=5000).fit(digits.data / 16.0, digits.target)
    n = len(images)
    # 16×16 → 8×8 by 2×2 averages, the layout of sklearn's digits (data / 16 in [0, 1]).
    x8 = images[..., 0].reshape(n, 8, 2, 8, 2).mean(axis=(2, 4)).reshape(n, 64)
    return float((clf.predict(x8) == np.array(labels)).mean())


# --- diffusers' runs -------------------------------------------------------------------------------------


def test_score_sde_ve_pipeline_matches_diffusers() -> None:
    meta, arrays = fixture("score_sde_ve_ncsnpp_10steps")
    unet = UNet2DModel.from_pretrained(model_dir(meta))
    pipe = ScoreSdeVePipeline(unet=unet, scheduler=ScoreSdeVeScheduler(**scheduler_kwargs(meta)))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        batch_size=meta["batch_size"],
        num_inference_steps=meta["num_inference_steps"],
        generator=Generator().manual_seed(meta["seed"]),
        output_type="np",
    )
    assert_images_match(out.images, arrays["images"])


@pytest.mark.parametrize("name", ["consistency_onestep", "consistency_multistep_22_0"])
def test_consistency_model_pipeline_matches_diffusers(name: str) -> None:
    meta, arrays = fixture(name)
    unet = UNet2DModel.from_pretrained(model_dir(meta))
    pipe = ConsistencyModelPipeline(unet=unet, scheduler=CMStochasticIterativeScheduler(**scheduler_kwargs(meta)))
    kwargs: dict[str, Any] = {"timesteps": meta["timesteps"]}
    if meta["num_inference_steps"] is not None:
        kwargs["num_inference_steps"] = meta["num_inference_steps"]
    out = pipe(
        batch_size=len(meta["class_labels"]),
        class_labels=meta["class_labels"],
        generator=Generator().manual_seed(meta["seed"]),
        output_type="np",
        **kwargs,
    )
    assert_images_match(out.images, arrays["images"])


def test_repaint_pipeline_matches_diffusers() -> None:
    meta, arrays = fixture("repaint_random_20steps")
    unet = UNet2DModel.from_pretrained(model_dir(meta))
    pipe = RePaintPipeline(unet=unet, scheduler=RePaintScheduler())
    out = pipe(
        image=arrays["image"],
        mask_image=arrays["mask_image"],
        num_inference_steps=meta["num_inference_steps"],
        eta=meta["eta"],
        jump_length=meta["jump_length"],
        jump_n_sample=meta["jump_n_sample"],
        generator=Generator().manual_seed(meta["seed"]),
        output_type="np",
    )
    assert_images_match(out.images, arrays["images"])


def digits16_repaint() -> RePaintPipeline:
    ddpm = DDPMScheduler.from_pretrained(DIGITS16, subfolder="scheduler")
    return RePaintPipeline(
        unet=UNet2DModel.from_pretrained(DIGITS16, subfolder="unet"),
        scheduler=RePaintScheduler.from_config(ddpm.config),
    )


def test_repaint_with_class_labels_matches_diffusers_and_draws_the_digits() -> None:
    meta, arrays = fixture("repaint_digits16_50steps")
    out = digits16_repaint()(
        image=arrays["image"],
        mask_image=arrays["mask_image"],
        num_inference_steps=meta["num_inference_steps"],
        eta=meta["eta"],
        jump_length=meta["jump_length"],
        jump_n_sample=meta["jump_n_sample"],
        generator=Generator().manual_seed(meta["seed"]),
        output_type="np",
        class_labels=meta["class_labels"],
    )
    assert_images_match(out.images, arrays["images"])
    assert digit_accuracy(out.images, meta["class_labels"]) >= 0.9


def test_repaint_takes_pil_images_and_masks() -> None:
    from PIL import Image

    meta, arrays = fixture("repaint_digits16_50steps")
    images = [Image.fromarray(np.round((im[0] + 1) * 127.5).astype(np.uint8), mode="L") for im in arrays["image"]]
    mask = Image.fromarray((arrays["mask_image"][0, 0] * 255).astype(np.uint8), mode="L")
    labels = meta["class_labels"]
    out = digits16_repaint()(
        images, mask, 50, 0.0, 10, 3, Generator().manual_seed(0), class_labels=labels, output_type="np"
    )
    assert out.images.shape == (10, 16, 16, 1)
    kept = np.abs(out.images[:, :, :8, 0] - (arrays["image"][:, 0, :, :8] + 1) / 2)
    assert float(kept.max()) <= 1.0 / 255 + 1e-6, "the known half changed"
    assert digit_accuracy(out.images, labels) >= 0.9
    pil = digits16_repaint()(images[:1], mask, 2, jump_length=1, jump_n_sample=1, class_labels=[0]).images
    assert len(pil) == 1
    assert (pil[0].mode, pil[0].size) == ("L", (16, 16))


@pytest.mark.parametrize(
    ("cls", "name", "call"),
    [
        (
            DDIMPipeline,
            "ddim",
            lambda p, g, m: p(len(m["class_labels"]), g, m["eta"], m["num_inference_steps"], output_type="np"),
        ),
        (
            DDPMPipeline,
            "ddpm",
            lambda p, g, m: p(len(m["class_labels"]), g, m["num_inference_steps"], output_type="np"),
        ),
    ],
)
def test_ddpm_and_ddim_pipelines_match_diffusers(cls: type, name: str, call: Any) -> None:
    cases = sorted((ROOT / "tests" / "fixtures" / "pipeline").glob(f"digits16_{name}*.json"))
    assert cases, f"no {name} pipeline fixture"
    meta = json.loads(cases[0].read_text())
    arrays = load_file(str(cases[0].with_suffix(".safetensors")))
    pipe = cls.from_pretrained(DIGITS16)
    assert type(pipe) is cls
    assert pipe.scheduler._class_name == ("DDIMScheduler" if cls is DDIMPipeline else "DDPMScheduler")
    # diffusers' DDPM/DDIM pipelines cannot pass class labels; ours take them by keyword.
    g = Generator().manual_seed(meta["seed"])
    images = call(
        lambda *a, **k: pipe(*a, class_labels=meta["class_labels"], **k),
        g,
        meta,
    ).images
    assert_images_match(images, arrays["images"])


def test_pndm_pipeline_matches_diffusers() -> None:
    meta, arrays = fixture("digits16_pndm25_seed4")
    base = DDPMScheduler.from_pretrained(DIGITS16, subfolder="scheduler")
    pipe = PNDMPipeline(
        unet=UNet2DModel.from_pretrained(DIGITS16, subfolder="unet"),
        scheduler=PNDMScheduler.from_config(base.config, **meta["scheduler_overrides"]),
    )
    out = pipe(10, 25, Generator().manual_seed(meta["seed"]), "np", class_labels=meta["class_labels"])
    assert_images_match(out.images, arrays["images"])


# --- loading and saving ----------------------------------------------------------------------------------


def test_diffusion_pipeline_from_pretrained_returns_the_class_model_index_names(tmp_path: Path) -> None:
    pipe = DiffusionPipeline.from_pretrained(DIGITS16)
    assert type(pipe) is DDPMPipeline
    assert pipe.config["_class_name"] == "DDPMPipeline"
    assert pipe.name_or_path == str(DIGITS16)
    assert set(pipe.components) == {"unet", "scheduler"}
    assert type(DDIMPipeline.from_pretrained(DIGITS16).scheduler).__name__ == "DDIMScheduler"
    # A pipeline class this package does not have is named.
    folder = tmp_path / "sd"
    folder.mkdir()
    for name in ("unet", "scheduler"):
        os.symlink(DIGITS16 / name, folder / name)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(UnsupportedError, match="StableDiffusionPipeline"):
        DiffusionPipeline.from_pretrained(folder)
    # Without model_index.json: the scheduler's loop decides.
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "diffusion_pytorch_model.safetensors"):
        os.symlink(DIGITS16 / "unet" / f, bare / f)
    meta, _ = fixture("score_sde_ve_ncsnpp_10steps")
    sde = tmp_path / "sde"
    sde.mkdir()
    for f in model_dir(meta).iterdir():
        os.symlink(f, sde / f.name)
    (sde / "scheduler_config.json").write_text(json.dumps({"_class_name": "ScoreSdeVeScheduler"}))
    assert type(DiffusionPipeline.from_pretrained(bare)) is UNet2DPipeline
    assert type(DiffusionPipeline.from_pretrained(sde)) is ScoreSdeVePipeline


def test_save_pretrained_writes_what_diffusers_loads(tmp_path: Path) -> None:
    pipe = DDIMPipeline.from_pretrained(DIGITS16)
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index == {
        "_class_name": "DDIMPipeline",
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    }
    sched = json.loads((tmp_path / "saved" / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["_class_name"], sched["beta_schedule"]) == ("DDIMScheduler", "squaredcos_cap_v2")
    assert (tmp_path / "saved" / "unet" / "config.json").is_file()
    again = DiffusionPipeline.from_pretrained(tmp_path / "saved")
    assert type(again) is DDIMPipeline
    a = pipe(2, Generator().manual_seed(3), num_inference_steps=5, class_labels=[1, 2], output_type="np").images
    b = again(2, Generator().manual_seed(3), num_inference_steps=5, class_labels=[1, 2], output_type="np").images
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InvalidArgumentError, match="safe_serialization"):
        pipe.save_pretrained(tmp_path / "pickles", safe_serialization=False)


# --- callbacks, interrupts -------------------------------------------------------------------------------


def consistency_pipe() -> tuple[ConsistencyModelPipeline, dict[str, Any]]:
    meta, _ = fixture("consistency_multistep_22_0")
    unet = UNet2DModel.from_pretrained(model_dir(meta))
    return ConsistencyModelPipeline(unet, CMStochasticIterativeScheduler(**scheduler_kwargs(meta))), meta


def test_callback_on_step_end_sees_every_step_and_can_replace_the_latents() -> None:
    pipe, meta = consistency_pipe()
    seen: list[tuple[int, Any, tuple[int, ...]]] = []

    def record(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        assert p is pipe
        seen.append((i, t, kwargs["latents"].shape))
        return kwargs

    call = {"class_labels": meta["class_labels"], "timesteps": [22, 0], "output_type": "np"}
    a = pipe(4, generator=Generator().manual_seed(1), callback_on_step_end=record, **call).images
    assert [(i, s) for i, _, s in seen] == [(0, (4, 3, 16, 16)), (1, (4, 3, 16, 16))]
    b = pipe(4, generator=Generator().manual_seed(1), **call).images
    np.testing.assert_array_equal(a, b)

    def zero_after_first(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"latents": np.zeros_like(kwargs["latents"])} if i == 0 else {}

    c = pipe(4, generator=Generator().manual_seed(1), callback_on_step_end=zero_after_first, **call).images
    assert float(np.abs(c - b).max()) > 1e-3

    # diffusers' older callback(step, timestep, latents) every callback_steps steps.
    legacy: list[int] = []
    pipe(4, generator=Generator().manual_seed(1), callback=lambda i, t, x: legacy.append(i), callback_steps=2, **call)
    assert legacy == [0]


def test_an_exception_in_the_callback_stops_sampling_and_propagates() -> None:
    pipe, meta = consistency_pipe()

    class Stop(Exception):
        pass

    calls = []

    def stop(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        calls.append(i)
        raise Stop("from the callback")

    scheduler_before = pipe.scheduler.timesteps
    with pytest.raises(Stop, match="from the callback"):
        pipe(4, class_labels=meta["class_labels"], timesteps=[22, 0], callback_on_step_end=stop)
    assert calls == [0]
    # The failed run did not write its scheduler state back.
    np.testing.assert_array_equal(pipe.scheduler.timesteps, scheduler_before)
    with pytest.raises(KeyboardInterrupt):
        pipe(
            4,
            class_labels=meta["class_labels"],
            callback_on_step_end=lambda *a: (_ for _ in ()).throw(KeyboardInterrupt),
        )


def test_ctrl_c_stops_a_long_run_within_a_step(tmp_path: Path) -> None:
    # A real SIGINT to a process sampling 1000 DDPM steps: it stops within a step or two of the signal.
    # The signal is sent from a thread of the process itself once step 2 has ended, so it arrives while
    # the sampling loop runs, whatever the load: sent from the test, a busy host delayed it until the
    # whole run (about a tenth of a second) had finished. The thread needs the GIL to send it, which it
    # gets while the loop runs a step in Rust, so the signal lands there, between the loop's checks.
    code = textwrap.dedent(
        f"""
        import os, signal, sys, threading
        import candle_unet2d as cu
        pipe = cu.DiffusionPipeline.from_pretrained({str(DIGITS16)!r})
        pipe.set_progress_bar_config(disable=True)
        state = {{"step": -1, "sent": -1}}
        step_two = threading.Event()
        def interrupt():
            step_two.wait()
            state["sent"] = state["step"]
            os.kill(os.getpid(), signal.SIGINT)
        threading.Thread(target=interrupt, daemon=True).start()
        def on_step(p, i, t, kwargs):
            state["step"] = i
            if i == 2:
                step_two.set()
            return kwargs
        try:
            pipe(1, num_inference_steps=1000, class_labels=[3], callback_on_step_end=on_step, output_type="np")
        except KeyboardInterrupt:
            print("interrupted", state["sent"], state["step"], flush=True)
            sys.exit(3)
        print("finished", flush=True)
        """
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 3, (child.stdout, child.stderr)
    sent, stopped = (int(word) for word in child.stdout.split()[-2:])
    assert 2 <= sent <= stopped, (sent, stopped)
    assert stopped - sent <= 2, f"stopped at step {stopped}, signalled at step {sent}"


# --- bad input -------------------------------------------------------------------------------------------


def repaint_args() -> dict[str, Any]:
    _, arrays = fixture("repaint_digits16_50steps")
    return {
        "image": arrays["image"][:2],
        "mask_image": arrays["mask_image"][:2],
        "num_inference_steps": 4,
        "jump_length": 2,
        "jump_n_sample": 2,
        "class_labels": [0, 1],
        "output_type": "np",
    }


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        pytest.param({"mask_image": np.ones((2, 1, 8, 16), np.float32)}, "mask_image", id="mask-size"),
        pytest.param({"image": np.zeros((2, 3, 16, 16), np.float32)}, "channel", id="image-channels"),
        pytest.param({"image": np.full((2, 1, 16, 16), 200.0, np.float32)}, r"\[-1, 1\]", id="image-range"),
        pytest.param({"mask_image": np.full((2, 1, 16, 16), 2.0, np.float32)}, r"\[0, 1\]", id="mask-range"),
        pytest.param({"class_labels": None}, "class-conditional", id="labels-missing"),
        pytest.param({"jump_length": 0}, "jump_length", id="jump-length-0"),
        pytest.param({"mask_image": None}, "mask_image", id="mask-missing"),
        pytest.param({"callback_on_step_end": 3}, "callable", id="callback-not-callable"),
        pytest.param({"callback_on_step_end_tensor_inputs": ["noise"]}, "latents", id="callback-tensors"),
        pytest.param({"callback_on_step_end": lambda *a: 3}, "dict", id="callback-returns-int"),
    ],
)
def test_bad_repaint_input_is_named(edit: dict[str, Any], needle: str) -> None:
    kwargs = {**repaint_args(), **edit}
    image, mask = kwargs.pop("image"), kwargs.pop("mask_image")
    with pytest.raises(InvalidArgumentError, match=needle):
        digits16_repaint()(image, mask, **kwargs)


def test_pil_image_of_the_wrong_mode_is_named() -> None:
    from PIL import Image

    rgb = Image.new("RGB", (16, 16))
    with pytest.raises(InvalidArgumentError, match=r"mode 'RGB'.*mode 'L'"):
        digits16_repaint()(rgb, Image.new("L", (16, 16), 255), 4, class_labels=[0])


def test_pipelines_refuse_schedulers_of_another_loop_and_the_base_class() -> None:
    unet = UNet2DModel.from_pretrained(DIGITS16, subfolder="unet")
    with pytest.raises(InvalidArgumentError, match="ScoreSdeVeScheduler"):
        ScoreSdeVePipeline(unet=unet, scheduler=DDPMScheduler())
    with pytest.raises(InvalidArgumentError, match="RePaintScheduler"):
        RePaintPipeline(unet=unet, scheduler=DDPMScheduler())
    with pytest.raises(InvalidArgumentError, match="base class"):
        DiffusionPipeline(unet, DDPMScheduler())
    # Assigning another loop's scheduler is refused when sampling, before anything runs.
    pipe = DDPMPipeline(unet, DDPMScheduler())
    pipe.scheduler = RePaintScheduler()
    with pytest.raises(InvalidArgumentError, match="DDPMPipeline samples with"):
        pipe(class_labels=[1], num_inference_steps=2)


def test_output_type_pt() -> None:
    pipe, meta = consistency_pipe()
    try:
        import torch
    except ImportError:
        with pytest.raises(ImportError, match="pip install torch"):
            pipe(4, class_labels=meta["class_labels"], output_type="pt")
        return
    images = pipe(4, class_labels=meta["class_labels"], output_type="pt").images
    assert isinstance(images, torch.Tensor)
    assert tuple(images.shape) == (4, 3, 16, 16)


def test_package_exports_every_pipeline() -> None:
    for name in cu._pipelines.__all__:
        assert issubclass(getattr(cu, name), DiffusionPipeline)
        assert getattr(cu, name)._class_name == name
