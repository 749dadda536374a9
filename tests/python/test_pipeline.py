"""``UNet2DPipeline`` on the shipped digits16 model: diffusers' images for the same seeds
(``tests/fixtures/pipeline/<case>``, see conftest.py), image quality judged by a digit classifier, output
types, arguments and errors, progress reporting."""

from __future__ import annotations

import copy
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from safetensors.numpy import load_file

import candle_unet2d
from candle_unet2d import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    Generator,
    ImagePipelineOutput,
    InvalidArgumentError,
    ModelNotFoundError,
    SchedulerMixin,
    UNet2DError,
    UNet2DModel,
    UNet2DPipeline,
    randn,
)

from conftest import DIGITS16, UNET2D_FIXTURES, assert_gil_released, pipeline_cases

# Max per-pixel difference to diffusers' images (in [0, 1]).
PIXEL_TOLERANCE = 2 / 255


@pytest.fixture(scope="module")
def pipe() -> UNet2DPipeline:
    return UNet2DPipeline.from_pretrained(DIGITS16)


def scheduler_for(name: str, pipe: UNet2DPipeline) -> SchedulerMixin:
    """The scheduler a fixture case names, built from the pipeline's as the reference script did."""
    base = DDPMScheduler.from_pretrained(DIGITS16, subfolder="scheduler")
    if name == "ddpm":
        return base
    if name == "ddim":
        return DDIMScheduler.from_config(pipe.scheduler.config)
    if name == "dpmpp_2m":
        return DPMSolverMultistepScheduler.from_config(
            pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2
        )
    raise AssertionError(f"unknown scheduler {name!r}")


# --- diffusers' images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", pipeline_cases(), ids=lambda p: p.stem)
def test_images_match_diffusers(pipe: UNet2DPipeline, case: Path) -> None:
    meta = json.loads(case.read_text())
    arrays = load_file(str(case.with_suffix(".safetensors")))
    labels = meta["class_labels"]
    np.testing.assert_array_equal(arrays["class_labels"], labels)

    # The initial noise is torch's for that seed.
    noise = randn(arrays["initial_noise"].shape, generator=Generator().manual_seed(meta["seed"]))
    np.testing.assert_allclose(noise, arrays["initial_noise"], rtol=0, atol=1e-6)

    runner = UNet2DPipeline(pipe.unet, scheduler_for(meta["scheduler"], pipe))
    images = runner(
        class_labels=labels,
        num_inference_steps=meta["num_inference_steps"],
        generator=Generator().manual_seed(meta["seed"]),
        eta=meta["eta"],
        output_type="np",
        progress=False,
    ).images
    expected = arrays["images"]
    assert images.shape == expected.shape
    assert images.dtype == np.float32
    diff = float(np.max(np.abs(images - expected)))
    assert diff <= PIXEL_TOLERANCE, f"max pixel diff {diff * 255:.2f}/255"


def digit_classifier() -> Any:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    return LogisticRegression(max_iter=5000).fit(digits.data / 16.0, digits.target)


def test_sampled_digits_are_recognisable(pipe: UNet2DPipeline) -> None:
    labels = list(range(10)) * 2
    runner = UNet2DPipeline(
        pipe.unet,
        DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2),
    )
    images = runner(
        class_labels=labels, num_inference_steps=20, generator=Generator().manual_seed(2024), output_type="np"
    ).images
    assert images.shape == (20, 16, 16, 1)
    # 16×16 → 8×8 by 2×2 averages, the layout of sklearn's digits (data / 16 in [0, 1]).
    x8 = images[..., 0].reshape(20, 8, 2, 8, 2).mean(axis=(2, 4)).reshape(20, 64)
    accuracy = float((digit_classifier().predict(x8) == np.array(labels)).mean())
    assert accuracy >= 0.9, f"digit accuracy {accuracy:.2f}"


# --- loading, components --------------------------------------------------------------------------------


def test_components(pipe: UNet2DPipeline) -> None:
    assert isinstance(pipe.unet, UNet2DModel)
    assert pipe.unet is pipe.unet
    assert pipe.unet.config.num_class_embeds == 10
    assert pipe.unet.config.sample_size == 16
    assert isinstance(pipe.scheduler, DDPMScheduler)
    assert pipe.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert pipe.device == "cpu"
    assert pipe.dtype == "float32"
    assert "UNet2DPipeline" in repr(pipe)
    assert "DDPMScheduler" in repr(pipe)
    # The UNet is usable on its own (and shares the pipeline's weights).
    x = np.zeros((2, 1, 16, 16), np.float32)
    standalone = UNet2DModel.from_pretrained(DIGITS16, subfolder="unet")
    np.testing.assert_array_equal(pipe.unet(x, 10, class_labels=[1, 2]).sample, standalone(x, 10, [1, 2]).sample)


def test_scheduler_is_assignable(pipe: UNet2DPipeline) -> None:
    runner = UNet2DPipeline(pipe.unet, pipe.scheduler)
    ddim = DDIMScheduler.from_config(runner.scheduler.config)
    runner.scheduler = ddim
    assert runner.scheduler is ddim
    with pytest.raises(InvalidArgumentError, match="scheduler"):
        runner.scheduler = "ddim"  # type: ignore[assignment]
    with pytest.raises(InvalidArgumentError, match="UNet2DModel"):
        UNet2DPipeline("unet", ddim)  # type: ignore[arg-type]


def test_bare_unet_folder_gets_the_default_ddpm_scheduler(tmp_path: Path) -> None:
    shutil.copytree(DIGITS16 / "unet", tmp_path / "bare")  # a UNet folder outside any pipeline folder
    bare = UNet2DPipeline.from_pretrained(tmp_path / "bare")
    assert isinstance(bare.scheduler, DDPMScheduler)
    assert bare.scheduler.config == DDPMScheduler().config


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        UNet2DPipeline.from_pretrained(tmp_path / "nowhere")


# --- sampling arguments and output types ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fast(pipe: UNet2DPipeline) -> UNet2DPipeline:
    """A 4-step deterministic DDIM pipeline."""
    return UNet2DPipeline(pipe.unet, DDIMScheduler.from_config(pipe.scheduler.config))


def run(fast: UNet2DPipeline, **kwargs: Any) -> Any:
    kwargs.setdefault("num_inference_steps", 4)
    kwargs.setdefault("progress", False)
    return fast(**kwargs)


def test_output_types(fast: UNet2DPipeline) -> None:
    labels = [3, 7]
    np_images = run(fast, class_labels=labels, generator=Generator().manual_seed(0), output_type="np").images
    assert np_images.shape == (2, 16, 16, 1)
    assert np_images.dtype == np.float32
    assert np_images.min() >= 0.0
    assert np_images.max() <= 1.0

    u8 = run(fast, class_labels=labels, generator=Generator().manual_seed(0), output_type="uint8").images
    assert u8.dtype == np.uint8
    assert u8.shape == (2, 16, 16, 1)
    np.testing.assert_array_equal(u8, np.round(np_images * 255).astype(np.uint8))

    from PIL import Image

    pil = run(fast, class_labels=labels, generator=Generator().manual_seed(0)).images  # "pil" is the default
    assert isinstance(pil, list)
    assert len(pil) == 2
    assert all(isinstance(im, Image.Image) for im in pil)
    assert pil[0].mode == "L"
    assert pil[0].size == (16, 16)
    np.testing.assert_array_equal(np.asarray(pil[1]), u8[1, :, :, 0])

    out = run(fast, class_labels=labels, generator=Generator().manual_seed(0), output_type="np")
    assert isinstance(out, ImagePipelineOutput)
    assert out[0] is out.images
    assert out["images"] is out.images
    tup = run(fast, class_labels=labels, generator=Generator().manual_seed(0), output_type="np", return_dict=False)
    assert isinstance(tup, tuple)
    assert len(tup) == 1
    np.testing.assert_array_equal(tup[0], np_images)


def test_pil_without_pillow(fast: UNet2DPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import PIL` fail as if Pillow were not installed.
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    g = Generator().manual_seed(0)
    with pytest.raises(ImportError, match="pip install pillow"):
        run(fast, class_labels=[1], generator=g)
    # It failed before sampling: the generator was not used.
    np.testing.assert_array_equal(randn(4, generator=g), randn(4, generator=Generator().manual_seed(0)))
    # Arrays need no Pillow.
    run(fast, class_labels=[1], generator=Generator().manual_seed(0), output_type="uint8")


def test_seeded_runs_are_reproducible_and_generators_advance(fast: UNet2DPipeline) -> None:
    g = Generator().manual_seed(4)
    a = run(fast, class_labels=[0, 1], generator=g, output_type="np").images
    b = run(fast, class_labels=[0, 1], generator=Generator().manual_seed(4), output_type="np").images
    np.testing.assert_array_equal(a, b)
    # Deterministic DDIM draws only the initial noise [2, 1, 16, 16]: g is now just past it.
    ref = Generator().manual_seed(4)
    randn((2, 1, 16, 16), generator=ref)
    np.testing.assert_array_equal(randn(5, generator=g), randn(5, generator=ref))
    # And a second run from the advanced generator differs.
    c = run(fast, class_labels=[0, 1], generator=g, output_type="np").images
    assert not np.array_equal(a, c)


def test_latents_replace_the_initial_noise(fast: UNet2DPipeline) -> None:
    latents = randn((2, 1, 16, 16), generator=Generator().manual_seed(8))
    seeded = run(fast, class_labels=[5, 6], generator=Generator().manual_seed(8), output_type="np").images
    given = run(fast, class_labels=[5, 6], latents=latents, output_type="np").images
    np.testing.assert_array_equal(given, seeded)
    with pytest.raises(InvalidArgumentError, match="latents"):
        run(fast, class_labels=[5, 6], latents=latents[:1], output_type="np")


def test_batch_size_and_labels(fast: UNet2DPipeline) -> None:
    assert run(fast, class_labels=[1, 2, 3], output_type="np").images.shape[0] == 3
    assert run(fast, class_labels=np.array([1, 2]), output_type="np").images.shape[0] == 2
    assert run(fast, batch_size=2, class_labels=[4, 4], output_type="np").images.shape[0] == 2
    one_label = run(fast, batch_size=3, class_labels=4, generator=Generator().manual_seed(1), output_type="np")
    listed = run(fast, class_labels=[4, 4, 4], generator=Generator().manual_seed(1), output_type="np")
    np.testing.assert_array_equal(one_label.images, listed.images)
    assert run(fast, class_labels=7, output_type="np").images.shape[0] == 1


def test_unconditional_rgb_model() -> None:
    # An unconditional 3-channel model (a UNet fixture with random weights): no labels, RGB images.
    model = UNet2DModel.from_pretrained(UNET2D_FIXTURES / "ddpm_default_blocks")
    rgb = UNet2DPipeline(model, DDIMScheduler())
    images = rgb(batch_size=2, num_inference_steps=3, generator=Generator().manual_seed(0), progress=False).images
    assert len(images) == 2
    assert images[0].mode == "RGB"
    assert images[0].size == (16, 16)
    arrays = rgb(num_inference_steps=3, output_type="np", progress=False).images
    assert arrays.shape == (1, 16, 16, 3)
    with pytest.raises(InvalidArgumentError, match="not class-conditional"):
        rgb(class_labels=[1], num_inference_steps=3, output_type="np", progress=False)


def test_default_steps_follow_the_scheduler(pipe: UNet2DPipeline) -> None:
    for scheduler, steps in [
        (DDIMScheduler.from_config(pipe.scheduler.config), 50),
        (DPMSolverMultistepScheduler.from_config(pipe.scheduler.config), 20),
    ]:
        runner = UNet2DPipeline(pipe.unet, scheduler)
        runner(class_labels=[0], output_type="np", progress=False)
        # The scheduler keeps the state the run left, as diffusers'.
        assert runner.scheduler.num_inference_steps == steps
        assert len(runner.scheduler.timesteps) == steps


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        pytest.param({}, "class_labels", id="labels-missing"),
        pytest.param({"class_labels": [10]}, "outside", id="label-out-of-range"),
        pytest.param({"class_labels": [1.5]}, "integer", id="float-labels"),
        pytest.param({"class_labels": [[1, 2]]}, "1-D", id="2d-labels"),
        pytest.param({"class_labels": [1, 2], "batch_size": 3}, "labels", id="labels-vs-batch"),
        pytest.param({"class_labels": [1], "batch_size": 0}, "batch_size", id="batch-0"),
        pytest.param({"class_labels": [1], "batch_size": "2"}, "batch_size", id="batch-str"),
        pytest.param({"class_labels": [1], "num_inference_steps": 0}, "num_inference_steps", id="steps-0"),
        pytest.param({"class_labels": [1], "output_type": "latent"}, "output_type", id="output-type"),
        pytest.param({"class_labels": [1], "generator": 0}, "generator", id="generator-int"),
        pytest.param({"class_labels": [1], "eta": "one"}, "eta", id="eta-str"),
    ],
)
def test_bad_arguments(fast: UNet2DPipeline, kwargs: dict[str, Any], needle: str) -> None:
    kwargs.setdefault("output_type", "np")
    with pytest.raises(InvalidArgumentError, match=needle) as info:
        run(fast, **kwargs)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, UNet2DError)


def test_failed_run_leaves_states_alone(fast: UNet2DPipeline) -> None:
    g = Generator().manual_seed(3)
    before = copy.copy(g)
    with pytest.raises(InvalidArgumentError):
        run(fast, class_labels=[99], generator=g, output_type="np")
    np.testing.assert_array_equal(randn(4, generator=g), randn(4, generator=before))


# --- progress ---------------------------------------------------------------------------------------------


class FakeTqdm:
    """Stands for tqdm.auto.tqdm, recording what the pipeline does with it."""

    instances: ClassVar[list[FakeTqdm]] = []
    interrupt_at: ClassVar[int | None] = None

    def __init__(self, total: int, **kwargs: Any) -> None:
        self.total = total
        self.kwargs = kwargs
        self.n = 0
        self.closed = False
        FakeTqdm.instances.append(self)

    def update(self, n: int) -> None:
        self.n += n
        if FakeTqdm.interrupt_at is not None and self.n >= FakeTqdm.interrupt_at:
            raise KeyboardInterrupt

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_tqdm(monkeypatch: pytest.MonkeyPatch) -> type[FakeTqdm]:
    module = types.ModuleType("tqdm.auto")
    module.tqdm = FakeTqdm  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tqdm.auto", module)
    FakeTqdm.instances = []
    FakeTqdm.interrupt_at = None
    return FakeTqdm


def test_progress_bar_uses_tqdm(fast: UNet2DPipeline, fake_tqdm: type[FakeTqdm]) -> None:
    run(fast, class_labels=[1], output_type="np", progress=True)
    (bar,) = fake_tqdm.instances
    assert bar.total == 4
    assert bar.n == 4
    assert bar.closed

    fake_tqdm.instances = []
    run(fast, class_labels=[1], output_type="np", progress=False)
    assert fake_tqdm.instances == []

    runner = UNet2DPipeline(fast.unet, fast.scheduler)
    runner.set_progress_bar_config(desc="digits")
    run(runner, class_labels=[1], output_type="np", progress=True)
    assert fake_tqdm.instances[0].kwargs == {"desc": "digits"}
    fake_tqdm.instances = []
    runner.set_progress_bar_config(disable=True)
    run(runner, class_labels=[1], output_type="np", progress=True)
    assert fake_tqdm.instances == []


def test_plain_progress_bar_without_tqdm(
    fast: UNet2DPipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    run(fast, class_labels=[1], output_type="np", progress=True)
    err = capsys.readouterr().err
    assert "4/4" in err
    assert "100%" in err
    assert err.endswith("\n")
    run(fast, class_labels=[1], output_type="np", progress=False)
    assert capsys.readouterr().err == ""


def test_interrupt_stops_the_run(fast: UNet2DPipeline, fake_tqdm: type[FakeTqdm]) -> None:
    # A KeyboardInterrupt while the bar updates (Ctrl-C) stops sampling; the generator has advanced by
    # what the run drew (it is drawn through, as torch's is, not copied), the scheduler keeps its state.
    fake_tqdm.interrupt_at = 2
    g = Generator().manual_seed(6)
    runner = UNet2DPipeline(fast.unet, DDIMScheduler.from_config(fast.scheduler.config))
    with pytest.raises(KeyboardInterrupt):
        run(runner, class_labels=[1], generator=g, output_type="np", progress=True, num_inference_steps=10)
    (bar,) = fake_tqdm.instances
    assert bar.n == 2, "stopped at the step it was interrupted"
    assert bar.closed
    c = runner.unet.config
    drawn = Generator().manual_seed(6)
    randn((1, c["in_channels"], c["sample_size"], c["sample_size"]), generator=drawn)  # the initial noise
    np.testing.assert_array_equal(randn(4, generator=g), randn(4, generator=drawn))
    assert runner.scheduler.num_inference_steps is None, "the scheduler keeps its state"

    # A failing bar (an ordinary exception) does not stop sampling.
    class Broken(FakeTqdm):
        def update(self, n: int) -> None:
            raise RuntimeError("broken bar")

    sys.modules["tqdm.auto"].tqdm = Broken  # type: ignore[attr-defined]
    run(fast, class_labels=[1], output_type="np", progress=True)


def test_gil_is_released_while_sampling(fast: UNet2DPipeline) -> None:
    labels = list(range(10)) * 2
    assert_gil_released(lambda scale: run(fast, class_labels=labels, output_type="np", num_inference_steps=10 * scale))


# --- swapped schedulers and generator lists --------------------------------------------------------------

FAMILY = Path(__file__).resolve().parents[1] / "fixtures" / "family_pipelines"


@pytest.mark.parametrize("case", sorted(FAMILY.glob("digits16_*.json")), ids=lambda p: p.stem)
def test_swapped_schedulers_match_diffusers(pipe: UNet2DPipeline, case: Path) -> None:
    # diffusers: pipe.scheduler = Cls.from_config(pipe.scheduler.config), then the DDPMPipeline loop with
    # init_noise_sigma and scale_model_input
    meta = json.loads(case.read_text())
    arrays = load_file(str(case.with_suffix(".safetensors")))
    cls = getattr(candle_unet2d, meta["scheduler"])
    runner = UNet2DPipeline(pipe.unet, cls.from_config(pipe.scheduler.config, **meta["scheduler_overrides"]))
    images = runner(
        class_labels=meta["class_labels"],
        num_inference_steps=meta["num_inference_steps"],
        generator=Generator().manual_seed(meta["seed"]),
        output_type="np",
        progress=False,
    ).images
    diff = float(np.max(np.abs(images - arrays["images"])))
    assert diff <= PIXEL_TOLERANCE, f"{meta['scheduler']}: max pixel diff {diff * 255:.2f}/255"


def test_generator_lists_make_each_image_its_own(pipe: UNet2DPipeline) -> None:
    runner = UNet2DPipeline(pipe.unet, DDIMScheduler.from_config(pipe.scheduler.config))
    kwargs: dict[str, Any] = {"num_inference_steps": 4, "output_type": "np", "progress": False, "eta": 1.0}
    gens = [Generator().manual_seed(s) for s in (5, 6, 7)]
    batch = runner(class_labels=[2, 7, 9], generator=gens, **kwargs).images
    for i, (seed, label) in enumerate([(5, 2), (6, 7), (7, 9)]):
        alone = runner(class_labels=[label], generator=Generator().manual_seed(seed), **kwargs).images
        np.testing.assert_allclose(batch[i], alone[0], atol=1e-5)
    # the generators advanced as four single runs would have moved them
    fresh = Generator().manual_seed(5)
    runner(class_labels=[2], generator=fresh, **kwargs)
    assert randn(3, generator=gens[0]).tolist() == randn(3, generator=fresh).tolist()
    with pytest.raises(InvalidArgumentError, match="one per image"):
        runner(class_labels=[1, 2], generator=[Generator()], **kwargs)


def test_scheduler_steps_take_generator_lists() -> None:
    s = DDPMScheduler()
    s.set_timesteps(10)
    x = np.ones((2, 1, 2, 2), np.float32)
    both = s.step(x, 900, x, generator=[Generator().manual_seed(1), Generator().manual_seed(2)]).prev_sample
    for i, seed in enumerate((1, 2)):
        one = s.step(x[i : i + 1], 900, x[i : i + 1], generator=Generator().manual_seed(seed)).prev_sample
        np.testing.assert_array_equal(both[i : i + 1], one)
