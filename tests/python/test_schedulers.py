"""The schedulers against diffusers' trajectories (``tests/fixtures/schedulers/<case>/``, see conftest.py),
and their diffusers-style API: configs and ``from_config`` conversions, step forms, randomness, errors."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

import candle_unet2d
from candle_unet2d import (
    ConfigError,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    FrozenDict,
    Generator,
    InvalidArgumentError,
    ModelNotFoundError,
    SchedulerMixin,
    SchedulerOutput,
    UNet2DError,
    randn,
)

from conftest import DIGITS16, SCHEDULER_FIXTURES, scheduler_case_dirs

# Every registered scheduler class, by diffusers' name.
CLASSES: dict[str, type[SchedulerMixin]] = {
    name: getattr(candle_unet2d, name) for name, *_ in candle_unet2d._core.scheduler_classes()
}

# Per step: max|ours − diffusers| ≤ STEP_TOLERANCE · max(1, max|diffusers|).
STEP_TOLERANCE = 1e-4


def load_scheduler_case(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta = json.loads((path / "case.json").read_text())
    return meta, load_file(str(path / "trajectory.safetensors"))


@pytest.fixture(params=scheduler_case_dirs(), ids=lambda p: p.name)
def scheduler_case(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_there_are_cases_of_every_class() -> None:
    classes = {json.loads((p / "case.json").read_text())["scheduler"] for p in scheduler_case_dirs()}
    # ScoreSdeVe and RePaint have no per-step fixture: their pipelines are tested end to end instead
    assert classes == set(CLASSES) - {"ScoreSdeVeScheduler", "RePaintScheduler"}


def test_classes_match_the_registry_and_the_stub() -> None:
    stub = (Path(candle_unet2d.__file__).parent / "_schedulers.pyi").read_text()
    stubbed = set(re.findall(r"^class (\w+)\(SchedulerMixin\)", stub, flags=re.MULTILINE))
    assert stubbed == set(CLASSES)
    for name, cls in CLASSES.items():
        assert cls.__name__ == name
        assert cls._class_name == name
        assert issubclass(cls, SchedulerMixin)
        assert name in candle_unet2d.__all__


def _assert_close(what: str, ours: np.ndarray, expected: np.ndarray) -> None:
    diff = float(np.max(np.abs(np.asarray(ours, np.float64) - expected)))
    scale = max(1.0, float(np.max(np.abs(expected))))
    assert diff <= STEP_TOLERANCE * scale, f"{what}: max abs diff {diff:.3e} > {STEP_TOLERANCE} × {scale:.3g}"


def test_trajectory(scheduler_case: Path) -> None:
    meta, arrays = load_scheduler_case(scheduler_case)
    cls = CLASSES[meta["scheduler"]]
    scheduler = cls.from_pretrained(scheduler_case)
    assert type(scheduler) is cls
    kwargs = dict(meta.get("set_timesteps_kwargs") or {})
    if meta.get("num_inference_steps") is not None:
        kwargs["num_inference_steps"] = meta["num_inference_steps"]
    scheduler.set_timesteps(**kwargs)
    assert scheduler.init_noise_sigma == pytest.approx(meta["init_noise_sigma"], rel=1e-6)
    assert scheduler.order == meta.get("order", 1)

    timesteps = scheduler.timesteps
    assert timesteps.dtype == arrays["timesteps"].dtype
    np.testing.assert_allclose(timesteps, arrays["timesteps"], rtol=1e-6)
    if "sigmas" in arrays:
        np.testing.assert_allclose(scheduler.sigmas, arrays["sigmas"], rtol=1e-6)

    step_kwargs = dict(meta.get("step_kwargs") or {})
    if meta["scheduler"] == "DDIMScheduler":
        step_kwargs["eta"] = meta.get("eta", 0.0)
    samples, outputs, noises = arrays["samples"], arrays["model_outputs"], arrays["noises"]
    for i, t in enumerate(timesteps):
        if "scaled_inputs" in arrays:
            _assert_close(
                f"scale_model_input {i}", scheduler.scale_model_input(samples[i], t), arrays["scaled_inputs"][i]
            )
        out = scheduler.step(outputs[i], t, samples[i], variance_noise=noises[i], **step_kwargs)
        prev = out.prev_sample
        assert isinstance(prev, np.ndarray)
        assert prev.dtype == np.float32
        assert prev.shape == samples[i].shape
        _assert_close(f"step {i} (t={t})", prev, samples[i + 1])


def test_mixin_loads_the_class_the_config_names(scheduler_case: Path) -> None:
    meta, _ = load_scheduler_case(scheduler_case)
    scheduler = SchedulerMixin.from_pretrained(scheduler_case)
    assert type(scheduler) is CLASSES[meta["scheduler"]]
    assert scheduler.config._class_name == meta["scheduler"]


def test_config_round_trips(scheduler_case: Path) -> None:
    scheduler = SchedulerMixin.from_pretrained(scheduler_case)
    again = type(scheduler).from_config(scheduler.config)
    assert again.config == scheduler.config
    saved = json.loads((scheduler_case / "scheduler_config.json").read_text())
    for key, value in saved.items():
        if not key.startswith("_"):
            assert scheduler.config[key] == value, key


# --- loading and configs ------------------------------------------------------------------------------


def test_pipeline_folder_and_subfolder() -> None:
    a = DDPMScheduler.from_pretrained(DIGITS16, subfolder="scheduler")
    b = DDPMScheduler.from_pretrained(DIGITS16)  # a pipeline folder: its scheduler/ is used
    c = DDPMScheduler.from_pretrained(str(DIGITS16 / "scheduler" / "scheduler_config.json"))
    assert a.config == b.config == c.config
    assert a.config.beta_schedule == "squaredcos_cap_v2"


def test_config_is_a_frozen_dict() -> None:
    s = DPMSolverMultistepScheduler.from_pretrained(SCHEDULER_FIXTURES / "dpmpp_2m")
    config = s.config
    assert isinstance(config, FrozenDict)
    assert isinstance(config, dict)
    assert config.solver_order == config["solver_order"] == 2
    assert config._class_name == "DPMSolverMultistepScheduler"
    assert "_diffusers_version" in config
    assert config.lambda_min_clipped == float("-inf")  # a float, as in diffusers, not a string
    with pytest.raises(TypeError):
        config["solver_order"] = 3  # type: ignore[index]
    with pytest.raises(AttributeError):
        _ = config.no_such_key
    assert "DPMSolverMultistepScheduler" in repr(s)
    assert '"solver_order": 2' in repr(s)


def test_from_config_converts_between_classes() -> None:
    ddpm = DDPMScheduler.from_pretrained(DIGITS16, subfolder="scheduler")
    ddim = DDIMScheduler.from_config(ddpm.config)
    assert type(ddim) is DDIMScheduler
    assert ddim.config._class_name == "DDIMScheduler"
    assert ddim.config.beta_schedule == "squaredcos_cap_v2"
    assert ddim.config.set_alpha_to_one is True  # a DDIM key: its default
    assert ddim.config.variance_type == "fixed_small"  # a DDPM-only key, kept as diffusers keeps it

    dpm = DPMSolverMultistepScheduler.from_config(ddpm.config, algorithm_type="dpmsolver++", solver_order=2)
    assert dpm.config.algorithm_type == "dpmsolver++"
    assert dpm.config.beta_schedule == "squaredcos_cap_v2"

    # Back again: the DDPM values survive the round trip through DDIM.
    back = DDPMScheduler.from_config(ddim.config)
    for key in ("beta_schedule", "variance_type", "clip_sample", "timestep_spacing"):
        assert back.config[key] == ddpm.config[key], key

    # A scheduler, a plain dict and overrides.
    assert DDIMScheduler.from_config(ddpm).config == ddim.config
    assert DDIMScheduler.from_config(dict(ddpm.config)).config == ddim.config
    trailing = DDIMScheduler.from_config(ddpm.config, timestep_spacing="trailing")
    assert trailing.config.timestep_spacing == "trailing"
    assert ddpm.config.timestep_spacing == "leading", "the source is not modified"


def test_from_config_accepts_numpy_values() -> None:
    s = DDPMScheduler.from_config(
        {"num_train_timesteps": np.int64(100), "beta_end": np.float32(0.02), "trained_betas": None}
    )
    assert s.config.num_train_timesteps == 100
    assert len(s) == 100
    betas = np.linspace(1e-4, 0.02, 50)
    t = DDPMScheduler.from_config({"num_train_timesteps": 50, "trained_betas": betas})
    assert t.alphas_cumprod.shape == (50,)
    np.testing.assert_allclose(t.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-5)


def test_unknown_override_is_ignored_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="solver_ordre"):
        s = DPMSolverMultistepScheduler.from_config({}, solver_ordre=3)
    assert s.config.solver_order == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DPMSolverMultistepScheduler.from_config({}, solver_order=3)


def test_constructor_takes_config_keywords() -> None:
    s = DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=500)
    assert s.config.beta_schedule == "squaredcos_cap_v2"
    assert len(s) == 500
    assert DDIMScheduler().config == DDIMScheduler.from_config({}).config
    with pytest.raises(InvalidArgumentError, match="beta_shedule"):
        DDPMScheduler(beta_shedule="linear")
    with pytest.raises(TypeError):
        SchedulerMixin()  # type: ignore[call-arg]


def test_defaults_before_set_timesteps() -> None:
    s = DDIMScheduler()
    assert s.num_inference_steps is None
    np.testing.assert_array_equal(s.timesteps, np.arange(999, -1, -1))
    assert s.alphas_cumprod.dtype == np.float32


def test_custom_timesteps() -> None:
    s = DDPMScheduler()
    s.set_timesteps(timesteps=[900, 500, 100, 0])
    np.testing.assert_array_equal(s.timesteps, [900, 500, 100, 0])
    d = DPMSolverMultistepScheduler()
    d.set_timesteps(timesteps=np.array([800, 400, 0]))
    np.testing.assert_array_equal(d.timesteps, [800, 400, 0])
    with pytest.raises(InvalidArgumentError, match="custom"):
        DDIMScheduler().set_timesteps(timesteps=[900, 0])
    with pytest.raises(InvalidArgumentError, match="only one"):
        s.set_timesteps(10, timesteps=[9, 0])
    s.set_timesteps(10, device="cpu")  # accepted and ignored, as a diffusers loop passes it


# --- step forms -----------------------------------------------------------------------------------------


@pytest.fixture
def ddim_case() -> tuple[DDIMScheduler, dict[str, np.ndarray], float]:
    path = SCHEDULER_FIXTURES / "ddim_trailing_v_eta1"
    meta, arrays = load_scheduler_case(path)
    s = DDIMScheduler.from_pretrained(path)
    s.set_timesteps(meta["num_inference_steps"])
    return s, arrays, meta["eta"]


def test_output_forms(ddim_case) -> None:
    s, a, eta = ddim_case
    t = s.timesteps[0]
    out = s.step(a["model_outputs"][0], t, a["samples"][0], eta=eta, variance_noise=a["noises"][0])
    assert isinstance(out, SchedulerOutput)
    assert out[0] is out.prev_sample
    assert out["prev_sample"] is out.prev_sample
    assert out["pred_original_sample"] is out.pred_original_sample
    assert out.pred_original_sample is not None
    assert out.pred_original_sample.shape == out.prev_sample.shape
    assert out.keys() == ("prev_sample", "pred_original_sample")
    assert len(out.to_tuple()) == 2
    assert "prev_sample" in repr(out)

    tup = s.step(a["model_outputs"][0], t, a["samples"][0], eta=eta, variance_noise=a["noises"][0], return_dict=False)
    assert isinstance(tup, tuple)
    assert len(tup) == 2
    np.testing.assert_array_equal(tup[0], out.prev_sample)
    np.testing.assert_array_equal(tup[1], out.pred_original_sample)


def test_tuple_forms_follow_diffusers() -> None:
    x = np.zeros((1, 1, 4, 4), np.float32)
    # diffusers' DPM-Solver output has no x_0 estimate; DDPM's and DDIM's have
    for cls, n in [(DDPMScheduler, 2), (DDIMScheduler, 2), (DPMSolverMultistepScheduler, 1)]:
        s = cls()
        s.set_timesteps(10)
        out = s.step(x, s.timesteps[0], x, variance_noise=x, return_dict=False)
        assert isinstance(out, tuple)
        assert len(out) == n, cls.__name__
        x0 = s.step(x, s.timesteps[1], x, variance_noise=x).pred_original_sample
        assert (x0 is not None) == (n == 2), cls.__name__


def test_timestep_forms(ddim_case) -> None:
    s, a, eta = ddim_case
    t = int(s.timesteps[0])
    ref = s.step(a["model_outputs"][0], t, a["samples"][0], eta=eta, variance_noise=a["noises"][0]).prev_sample
    for form in (np.int64(t), np.int32(t), np.array(t), np.array([t]), float(t)):
        out = s.step(a["model_outputs"][0], form, a["samples"][0], eta=eta, variance_noise=a["noises"][0])
        np.testing.assert_array_equal(out.prev_sample, ref)


def test_dtype_and_type_follow_the_sample(ddim_case) -> None:
    s, a, eta = ddim_case
    t = s.timesteps[0]
    mo, x, nz = a["model_outputs"][0], a["samples"][0], a["noises"][0]
    ref = s.step(mo, t, x, eta=eta, variance_noise=nz).prev_sample

    out64 = s.step(mo, t, x.astype(np.float64), eta=eta, variance_noise=nz).prev_sample
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, ref, atol=1e-5)

    out16 = s.step(mo, t, x.astype(np.float16), eta=eta, variance_noise=nz).prev_sample
    assert out16.dtype == np.float16

    listed = s.step(mo.tolist(), t, x.tolist(), eta=eta, variance_noise=nz.tolist()).prev_sample
    assert isinstance(listed, np.ndarray)
    np.testing.assert_allclose(listed, ref, atol=1e-5)

    x_ro = x.copy()
    x_ro.setflags(write=False)
    np.testing.assert_array_equal(s.step(mo, t, x_ro, eta=eta, variance_noise=nz).prev_sample, ref)
    np.testing.assert_array_equal(x_ro, x, "the input is not modified")


def test_scale_model_input_is_the_identity() -> None:
    s = DDPMScheduler()
    x = np.ones((1, 1, 2, 2), np.float32)
    assert s.scale_model_input(x, 10) is x
    assert s.scale_model_input(x) is x


def test_use_clipped_model_output() -> None:
    path = SCHEDULER_FIXTURES / "ddim_linspace_sample_pred_clip"
    meta, a = load_scheduler_case(path)
    s = DDIMScheduler.from_pretrained(path)
    s.set_timesteps(meta["num_inference_steps"])
    t = s.timesteps[0]
    plain = s.step(a["model_outputs"][0] * 3, t, a["samples"][0], eta=0.0).prev_sample
    clipped = s.step(a["model_outputs"][0] * 3, t, a["samples"][0], eta=0.0, use_clipped_model_output=True)
    assert not np.array_equal(plain, clipped.prev_sample)
    d = DDPMScheduler()
    d.set_timesteps(10)
    with pytest.raises(InvalidArgumentError, match=r"DDPMScheduler\.step: unknown argument `use_clipped_model_output`"):
        d.step(a["model_outputs"][0], d.timesteps[0], a["samples"][0], use_clipped_model_output=True)


def test_copies_are_independent() -> None:
    path = SCHEDULER_FIXTURES / "dpmpp_2m"
    meta, a = load_scheduler_case(path)
    s = DPMSolverMultistepScheduler.from_pretrained(path)
    s.set_timesteps(meta["num_inference_steps"])
    s.step(a["model_outputs"][0], s.timesteps[0], a["samples"][0])
    c = copy.deepcopy(s)
    assert type(c) is DPMSolverMultistepScheduler
    assert c.config == s.config
    second = s.step(a["model_outputs"][1], s.timesteps[1], a["samples"][1]).prev_sample
    again = c.step(a["model_outputs"][1], c.timesteps[1], a["samples"][1]).prev_sample
    np.testing.assert_array_equal(second, again)  # the copy kept the multistep history


# --- randomness ---------------------------------------------------------------------------------------


def test_generator_draws_the_step_noise_like_torch() -> None:
    path = SCHEDULER_FIXTURES / "ddpm_linear_fixed_small_clip"
    meta, a = load_scheduler_case(path)
    s = DDPMScheduler.from_pretrained(path)
    s.set_timesteps(meta["num_inference_steps"])
    t, mo, x = s.timesteps[0], a["model_outputs"][0], a["samples"][0]
    g = Generator().manual_seed(123)
    drawn = s.step(mo, t, x, generator=g).prev_sample
    noise = randn(x.shape, generator=Generator().manual_seed(123))
    given = s.step(mo, t, x, variance_noise=noise).prev_sample
    np.testing.assert_array_equal(drawn, given)
    # The generator advanced by exactly that draw.
    ref = Generator().manual_seed(123)
    randn(x.shape, generator=ref)
    np.testing.assert_array_equal(randn(5, generator=g), randn(5, generator=ref))


def test_deterministic_steps_do_not_advance_the_generator(ddim_case) -> None:
    s, a, _ = ddim_case
    g = Generator().manual_seed(5)
    s.step(a["model_outputs"][0], s.timesteps[0], a["samples"][0], eta=0.0, generator=g)
    np.testing.assert_array_equal(randn(5, generator=g), randn(5, generator=Generator().manual_seed(5)))


def test_without_generator_the_default_one_is_used() -> None:
    s = DDPMScheduler()
    s.set_timesteps(10)
    x = np.zeros((1, 1, 4, 4), np.float32)
    candle_unet2d.manual_seed(77)
    a = s.step(x, s.timesteps[0], x).prev_sample
    b = s.step(x, s.timesteps[0], x, variance_noise=randn(x.shape, generator=Generator().manual_seed(77)))
    np.testing.assert_array_equal(a, b.prev_sample)


# --- errors ---------------------------------------------------------------------------------------------


def _ready() -> DDPMScheduler:
    s = DDPMScheduler()
    s.set_timesteps(10)
    return s


X = np.zeros((1, 1, 4, 4), np.float32)


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        pytest.param(lambda: DDPMScheduler().step(X, 999, X), InvalidArgumentError, "set_timesteps", id="no-timesteps"),
        pytest.param(lambda: _ready().step(X, 5, X), InvalidArgumentError, "not in the scheduler", id="foreign-t"),
        pytest.param(lambda: _ready().step(X[:, :, :2], 900, X), InvalidArgumentError, "shape", id="shape"),
        pytest.param(lambda: _ready().step(X, np.array([900, 800]), X), InvalidArgumentError, "one timestep", id="2t"),
        pytest.param(lambda: _ready().step(X, 900.5, X), InvalidArgumentError, "not a training timestep", id="frac-t"),
        pytest.param(lambda: _ready().step(X, "900", X), InvalidArgumentError, "timestep", id="str-t"),
        pytest.param(lambda: _ready().step(X.astype(np.int64), 900, X), InvalidArgumentError, "floating", id="int"),
        pytest.param(lambda: _ready().step(X, 900, X, generator="seed"), InvalidArgumentError, "Generator", id="gen"),
        pytest.param(
            lambda: _ready().step(X, 900, X, generator=Generator(), variance_noise=X),
            InvalidArgumentError,
            "not both",
            id="gen-and-noise",
        ),
        pytest.param(lambda: _ready().step(X, 900, X, eta="x"), InvalidArgumentError, "eta", id="eta-type"),
        pytest.param(
            lambda: DDIMScheduler.from_config({}).step(X, 0, X, eta=-1.0),
            InvalidArgumentError,
            "set_timesteps",
            id="ddim-unset",
        ),
        pytest.param(lambda: DDPMScheduler().set_timesteps(0), InvalidArgumentError, "num_inference_steps", id="0"),
        pytest.param(lambda: DDPMScheduler().set_timesteps(2000), InvalidArgumentError, "larger", id="too-many"),
        pytest.param(lambda: DDPMScheduler().set_timesteps(2.5), InvalidArgumentError, "int", id="float-steps"),
        pytest.param(lambda: DDPMScheduler().set_timesteps(), InvalidArgumentError, "missing", id="no-steps"),
        pytest.param(lambda: DDPMScheduler.from_config("path"), InvalidArgumentError, "from_pretrained", id="path"),
        pytest.param(lambda: DDPMScheduler.from_config(), InvalidArgumentError, "config", id="no-config"),
        pytest.param(lambda: DDPMScheduler.from_config([1, 2]), InvalidArgumentError, "dict", id="list-config"),
        pytest.param(lambda: DDPMScheduler.from_config({"x": object()}), InvalidArgumentError, "`x`", id="object"),
        pytest.param(lambda: SchedulerMixin.from_config({}), ConfigError, "_class_name", id="no-class"),
        pytest.param(
            lambda: SchedulerMixin.from_config({"_class_name": "FlowMatchEulerDiscreteScheduler"}),
            ConfigError,
            "FlowMatchEulerDiscreteScheduler",
            id="unsupported-class",
        ),
        pytest.param(
            lambda: DDPMScheduler.from_config({"beta_schedule": "nope"}), ConfigError, "beta_schedule", id="bad-value"
        ),
        pytest.param(
            lambda: DDPMScheduler.from_config({"num_train_timesteps": "many"}),
            ConfigError,
            "num_train_timesteps",
            id="bad-type",
        ),
        pytest.param(lambda: DDPMScheduler.from_pretrained(42), InvalidArgumentError, "path", id="path-type"),
    ],
)
def test_errors(call, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, UNet2DError)


def test_ddim_negative_eta() -> None:
    s = DDIMScheduler()
    s.set_timesteps(10)
    with pytest.raises(InvalidArgumentError, match="eta"):
        s.step(X, s.timesteps[0], X, eta=-1.0)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        DDPMScheduler.from_pretrained(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ModelNotFoundError, match="subfolder"):
        DDPMScheduler.from_pretrained(DIGITS16, subfolder="nope")
    with pytest.raises(ModelNotFoundError, match=r"scheduler_config\.json"):
        DDPMScheduler.from_pretrained(tmp_path)


def test_unparsable_config(tmp_path: Path) -> None:
    (tmp_path / "scheduler_config.json").write_text("{not json")
    with pytest.raises(ConfigError):
        DDPMScheduler.from_pretrained(tmp_path)


# --- numpy only, torch optional -------------------------------------------------------------------------


def test_numpy_use_never_imports_torch() -> None:
    code = """
import sys, numpy as np
from candle_unet2d import DDPMScheduler, Generator, randn
s = DDPMScheduler()
s.set_timesteps(10)
x = randn((1, 1, 4, 4), generator=Generator().manual_seed(0))
s.step(x, s.timesteps[0], x, generator=Generator().manual_seed(1))
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_tensors_in_and_out(ddim_case) -> None:
    torch = pytest.importorskip("torch")
    s, a, eta = ddim_case
    t = s.timesteps[0]
    mo, x, nz = a["model_outputs"][0], a["samples"][0], a["noises"][0]
    ref = s.step(mo, t, x, eta=eta, variance_noise=nz).prev_sample
    out = s.step(
        torch.from_numpy(mo), torch.tensor(t), torch.from_numpy(x), eta=eta, variance_noise=torch.from_numpy(nz)
    )
    assert isinstance(out.prev_sample, torch.Tensor)
    assert out.prev_sample.dtype == torch.float32
    np.testing.assert_array_equal(out.prev_sample.numpy(), ref)
    half = s.step(mo, t, torch.from_numpy(x).half(), eta=eta, variance_noise=nz).prev_sample
    assert half.dtype == torch.float16


# --- every scheduler through one binding -----------------------------------------------------------------


def test_scheduler_specific_methods_are_exposed() -> None:
    sde = candle_unet2d.ScoreSdeVeScheduler()
    sde.set_timesteps(10)
    assert sde.timesteps.dtype == np.float32
    assert sde.sigmas is not None
    x = np.full((1, 1, 2, 2), 0.5, np.float32)
    corrected = sde.step_correct(-x, x, generator=Generator().manual_seed(0))
    assert corrected.keys() == ("prev_sample",)
    out = sde.step_pred(-x, sde.timesteps[0], corrected.prev_sample, generator=Generator().manual_seed(1))
    assert out.keys() == ("prev_sample", "prev_sample_mean")
    with pytest.raises(InvalidArgumentError, match="step_pred"):
        sde.step(-x, sde.timesteps[0], x)

    rp = candle_unet2d.RePaintScheduler()
    rp.set_timesteps(10, 2, 2)  # diffusers' positional order: num_inference_steps, jump_length, jump_n_sample
    t = rp.timesteps[0]
    image, mask = np.zeros_like(x), np.ones_like(x)
    g = Generator().manual_seed(2)
    prev = rp.step(x, t, x, image, mask, g).prev_sample  # positional original_image, mask, generator
    assert prev.shape == x.shape
    back = rp.undo_step(prev, rp.timesteps[1], generator=Generator().manual_seed(3))
    assert isinstance(back, np.ndarray)
    assert back.shape == x.shape
    with pytest.raises(InvalidArgumentError, match="original_image"):
        rp.step(x, t, x)


def test_step_arguments_bind_by_position_and_name_as_diffusers() -> None:
    e = candle_unet2d.EulerDiscreteScheduler()
    e.set_timesteps(5)
    x = np.ones((1, 1, 2, 2), np.float32)
    t = e.timesteps[0]
    a = e.step(x, t, x, 0.0, 0.0, float("inf"), 1.0, Generator().manual_seed(0)).prev_sample
    e.set_timesteps(5)
    b = e.step(x, t, x, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0).prev_sample
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InvalidArgumentError, match="multiple values"):
        e.step(x, t, x, 0.0, s_churn=0.0)
    with pytest.raises(InvalidArgumentError, match="s_chrun"):
        e.step(x, t, x, s_chrun=0.5)
    with pytest.raises(InvalidArgumentError, match="positional"):
        e.step(x, t, x, *range(9))


def test_every_class_builds_from_a_ddpm_config_and_lists_its_compatibles() -> None:
    base = DDPMScheduler.from_pretrained(DIGITS16, subfolder="scheduler")
    for name, cls in CLASSES.items():
        s = cls.from_config(base.config)
        assert type(s) is cls
        assert s.config._class_name == name
        assert all(issubclass(c, SchedulerMixin) for c in s.compatibles)
    assert candle_unet2d.EulerDiscreteScheduler in base.compatibles
    assert candle_unet2d.RePaintScheduler.from_config(base.config).compatibles == []
