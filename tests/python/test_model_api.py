"""The Python API: outputs, input conversion, timestep semantics, config, parameter count, errors,
threads. Numbers are checked against the fixtures (see conftest.py) or against the float32 call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import candle_unet2d
from candle_unet2d import (
    ConfigError,
    FrozenDict,
    InvalidArgumentError,
    ModelNotFoundError,
    UNet2DError,
    UNet2DModel,
    UNet2DOutput,
    UnsupportedError,
    WeightsError,
)

from conftest import TOLERANCE, UNET2D_FIXTURES, assert_close, assert_gil_released, load_case

DEFAULT = UNET2D_FIXTURES / "ddpm_default_blocks"  # unconditional, 3×16×16, batch 2, levels 4
CLASS_TABLE = UNET2D_FIXTURES / "consistency_like"  # num_class_embeds
CLASS_TIMESTEP = UNET2D_FIXTURES / "class_timestep"  # class_embed_type="timestep"


@pytest.fixture(scope="module")
def model() -> UNet2DModel:
    return UNet2DModel.from_pretrained(DEFAULT)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    # Exactly representable in float16, so float16 inputs must give the same result as float32 ones.
    return load_case(DEFAULT).arrays["sample"].astype(np.float16).astype(np.float32)


@pytest.fixture(scope="module")
def reference(model: UNet2DModel, sample: np.ndarray) -> np.ndarray:
    return model(sample, 10).sample


# --- outputs ------------------------------------------------------------------------------------------


def test_output_forms(model: UNet2DModel, sample: np.ndarray, reference: np.ndarray) -> None:
    out = model(sample, 10)
    assert isinstance(out, UNet2DOutput)
    assert out[0] is out.sample
    assert out["sample"] is out.sample
    assert out.to_tuple() == (out.sample,)
    assert list(out.keys()) == ["sample"]
    assert "sample" in repr(out)
    assert out.sample.shape == (2, 3, 16, 16)
    assert out.sample.dtype == np.float32
    assert out.sample.flags.c_contiguous

    tup = model(sample, 10, return_dict=False)
    assert isinstance(tup, tuple)
    assert len(tup) == 1
    np.testing.assert_array_equal(tup[0], reference)

    via_forward = model.forward(sample, 10, None, True)
    np.testing.assert_array_equal(via_forward.sample, reference)


# --- input conversion ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda x: x.astype(np.float64), id="float64"),
        pytest.param(lambda x: x.astype(np.float16), id="float16"),
        pytest.param(np.asfortranarray, id="fortran-order"),
        pytest.param(lambda x: x[:, :, ::-1, ::-1].copy()[:, :, ::-1, ::-1], id="negative-strides"),
        pytest.param(lambda x: np.repeat(x, 2, axis=3)[..., ::2], id="strided-view"),
        pytest.param(lambda x: x.astype(">f4"), id="big-endian"),
        pytest.param(lambda x: x.tolist(), id="nested-list"),
    ],
)
def test_any_float_layout_gives_the_same_result(model, sample, reference, convert) -> None:
    x = convert(sample)
    out = model(x, 10).sample
    assert out.dtype == np.float32
    assert_close(out, reference, 1e-5, "converted input")


def test_input_array_is_not_modified(model: UNet2DModel, sample: np.ndarray) -> None:
    x = sample.copy()
    model(x, 10)
    np.testing.assert_array_equal(x, sample)


def test_read_only_input(model, sample, reference) -> None:
    x = sample.copy()
    x.setflags(write=False)
    assert_close(model(x, 10).sample, reference, 1e-6, "read-only input")


# --- timestep semantics (diffusers': scalars become integers, arrays keep their values) ---------------


def test_python_float_timestep_is_truncated_like_diffusers(model, sample, reference) -> None:
    np.testing.assert_array_equal(model(sample, 10.9).sample, reference)
    np.testing.assert_array_equal(model(sample, np.float32(10.9)).sample, reference)
    np.testing.assert_array_equal(model(sample, np.int64(10)).sample, reference)
    # torch.tensor([-0.5], dtype=torch.long) is 0: truncation toward zero, not floor.
    np.testing.assert_array_equal(model(sample, -0.5).sample, model(sample, 0).sample)


def test_array_timestep_keeps_its_value(model, sample, reference) -> None:
    np.testing.assert_array_equal(model(sample, np.array(10)).sample, reference)
    np.testing.assert_array_equal(model(sample, np.array([10.0], dtype=np.float32)).sample, reference)
    fractional = model(sample, np.array(10.9)).sample
    assert np.max(np.abs(fractional - reference)) > 1e-6, "a float array timestep must not be truncated"


def test_per_sample_timesteps(model: UNet2DModel, sample: np.ndarray) -> None:
    both = model(sample, np.array([3, 700])).sample
    first = model(sample[:1], 3).sample
    second = model(sample[1:], 700).sample
    assert_close(both, np.concatenate([first, second]), 1e-5, "per-sample timesteps")


@pytest.mark.parametrize(
    ("timestep", "needle"),
    [
        ([10], "timestep"),
        ("10", "timestep"),
        (np.zeros((2, 2)), "timestep"),
        (np.array([1, 2, 3]), "timestep"),
        (float("nan"), "timestep"),
        (2**70, "timestep"),
    ],
)
def test_bad_timestep(model, sample, timestep, needle) -> None:
    with pytest.raises(InvalidArgumentError, match=needle):
        model(sample, timestep)


# --- class labels -------------------------------------------------------------------------------------


def test_class_labels_as_list_numpy_and_any_int_dtype() -> None:
    case = load_case(CLASS_TABLE)
    model = UNet2DModel.from_pretrained(CLASS_TABLE)
    labels = case.arrays["class_labels"]
    expected = model(case.arrays["sample"], case.timestep(), labels).sample
    assert_close(expected, case.arrays["output"], TOLERANCE, "class table")
    for given in (labels.tolist(), labels.astype(np.int32), labels.astype(np.uint8)):
        np.testing.assert_array_equal(model(case.arrays["sample"], case.timestep(), given).sample, expected)


def test_float_class_labels_for_timestep_embedding() -> None:
    case = load_case(CLASS_TIMESTEP)
    model = UNet2DModel.from_pretrained(CLASS_TIMESTEP)
    labels = case.arrays["class_labels"]
    assert labels.dtype.kind == "f"
    out = model(case.arrays["sample"], case.timestep(), class_labels=labels.tolist()).sample
    assert_close(out, case.arrays["output"], TOLERANCE, "class labels as a list of floats")


def test_float_class_ids_are_refused() -> None:
    case = load_case(CLASS_TABLE)
    model = UNet2DModel.from_pretrained(CLASS_TABLE)
    with pytest.raises(InvalidArgumentError, match="class_labels"):
        model(case.arrays["sample"], 1, case.arrays["class_labels"].astype(np.float32))


# --- dtype and device ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "name"), [("fp16", "float16"), ("float16", "float16"), (np.float16, "float16")])
def test_float16_model(sample, reference, dtype, name) -> None:
    model = UNet2DModel.from_pretrained(DEFAULT, dtype=dtype)
    assert model.dtype == name
    out = model(sample, 10).sample
    assert out.dtype == np.float16
    assert_close(out, reference, 2e-2, "float16 model")


def test_bfloat16_on_cpu_is_refused_clearly() -> None:
    # candle's CPU backend has no bfloat16 matmul: refuse at load, naming what works instead.
    with pytest.raises(candle_unet2d.UnsupportedError, match="bfloat16 on the CPU"):
        UNet2DModel.from_pretrained(DEFAULT, torch_dtype="bf16")


def test_fp16_variant_with_dtype() -> None:
    model = UNet2DModel.from_pretrained(UNET2D_FIXTURES / "fp16_variant", variant="fp16", dtype="float32")
    assert model.dtype == "float32"


def test_cuda_in_a_cpu_build_is_unsupported() -> None:
    if candle_unet2d.WITH_CUDA:
        pytest.skip("built with CUDA")
    with pytest.raises(UnsupportedError, match="built without CUDA support") as info:
        UNet2DModel.from_pretrained(DEFAULT, device="cuda")
    assert isinstance(info.value, UNet2DError)
    assert isinstance(info.value, RuntimeError)


def test_device_and_dtype_properties(model: UNet2DModel) -> None:
    assert model.device == "cpu"
    assert model.dtype == "float32"
    text = repr(model)
    assert text.startswith("UNet2DModel(")
    assert "ddpm_default_blocks" in text
    assert "float32" in text


# --- config -------------------------------------------------------------------------------------------


def test_config_access(model: UNet2DModel) -> None:
    config = model.config
    assert isinstance(config, FrozenDict)
    assert isinstance(config, dict)
    assert config.in_channels == config["in_channels"] == 3
    assert config["_class_name"] == "UNet2DModel"
    assert config.block_out_channels == [16, 32, 32, 32]
    on_disk = json.loads((DEFAULT / "config.json").read_text())
    for key, value in on_disk.items():
        if not key.startswith("_"):
            assert config[key] == value, key
    with pytest.raises(AttributeError):
        _ = config.no_such_field
    with pytest.raises(TypeError):
        config["in_channels"] = 4  # type: ignore[index]
    with pytest.raises(TypeError):
        config.in_channels = 4


# --- parameter count ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [p.name for p in sorted(UNET2D_FIXTURES.iterdir()) if (p / "diffusion_pytorch_model.safetensors").exists()]
    + ["fp16_variant"],
)
def test_num_parameters_counts_the_weights_file(name: str) -> None:
    path = UNET2D_FIXTURES / name
    variant = "fp16" if name == "fp16_variant" else None
    file = "diffusion_pytorch_model.fp16.safetensors" if variant else "diffusion_pytorch_model.safetensors"
    stored = sum(t.size for t in load_file(str(path / file)).values())
    model = UNet2DModel.from_pretrained(path, variant=variant)
    assert model.num_parameters() > 0
    assert model.num_parameters() == stored


def test_num_parameters_options() -> None:
    table = UNet2DModel.from_pretrained(CLASS_TABLE)
    rows, dim = table.config.num_class_embeds, 4 * table.config.block_out_channels[0]
    assert table.num_parameters(exclude_embeddings=True) == table.num_parameters() - rows * dim
    fourier = UNet2DModel.from_pretrained(UNET2D_FIXTURES / "ncsnpp_like")
    frozen_fourier_weights = fourier.config.block_out_channels[0]
    assert fourier.num_parameters(only_trainable=True) == fourier.num_parameters() - frozen_fourier_weights


# --- errors -------------------------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model") as info:
        UNet2DModel.from_pretrained(missing)
    assert isinstance(info.value, UNet2DError)
    assert isinstance(info.value, ModelNotFoundError)


def test_missing_variant() -> None:
    with pytest.raises(ModelNotFoundError, match="fp16"):
        UNet2DModel.from_pretrained(DEFAULT, variant="fp16")


def test_missing_subfolder() -> None:
    with pytest.raises(ModelNotFoundError, match="unet"):
        UNet2DModel.from_pretrained(DEFAULT, subfolder="unet")


def test_pipeline_folder_and_subfolder(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT, tmp_path / "unet")
    assert UNet2DModel.from_pretrained(tmp_path).config.in_channels == 3
    assert UNet2DModel.from_pretrained(str(tmp_path), subfolder="unet").config.in_channels == 3


def _copy_with_config(tmp_path: Path, text: str) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(DEFAULT, dst)
    (dst / "config.json").write_text(text)
    return dst


def test_unparsable_config(tmp_path: Path) -> None:
    path = _copy_with_config(tmp_path, "{ not json")
    with pytest.raises(ValueError, match="config") as info:
        UNet2DModel.from_pretrained(path)
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, UNet2DError)


def test_invalid_config_value(tmp_path: Path) -> None:
    config = json.loads((DEFAULT / "config.json").read_text())
    config["down_block_types"][0] = "NoSuchBlock2D"
    path = _copy_with_config(tmp_path, json.dumps(config))
    with pytest.raises(ConfigError, match="NoSuchBlock2D"):
        UNet2DModel.from_pretrained(path)


def test_weights_of_another_model(tmp_path: Path) -> None:
    config = json.loads((DEFAULT / "config.json").read_text())
    config["block_out_channels"] = [16, 32, 32, 64]
    path = _copy_with_config(tmp_path, json.dumps(config))
    with pytest.raises(WeightsError) as info:
        UNet2DModel.from_pretrained(path)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("kwargs", "needle"), [({"dtype": "float64"}, "dtype"), ({"device": "tpu"}, "device")])
def test_bad_load_arguments(kwargs, needle) -> None:
    with pytest.raises(InvalidArgumentError, match=needle) as info:
        UNet2DModel.from_pretrained(DEFAULT, **kwargs)
    assert isinstance(info.value, ValueError)


def test_bad_path_type() -> None:
    with pytest.raises(InvalidArgumentError, match="path"):
        UNet2DModel.from_pretrained(123)  # type: ignore[arg-type]


def test_dtype_and_torch_dtype_together() -> None:
    with pytest.raises(InvalidArgumentError, match="torch_dtype"):
        UNet2DModel.from_pretrained(DEFAULT, dtype="float32", torch_dtype="float16")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda x: x[:, :2], "channels"),
        (lambda x: x[:, :, :12, :12], "multiples of 8"),
        (lambda x: x[0], "shape"),
        (lambda x: x.astype(np.int64), "floating-point"),
        (lambda x: x > 0, "floating-point"),
        (lambda x: x.astype(np.complex64), "real numeric"),
        (lambda x: np.array(["a"]), "sample"),
    ],
    ids=["wrong-channels", "wrong-size", "wrong-rank", "integer", "bool", "complex", "strings"],
)
def test_bad_sample(model, sample, make, needle) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        model(make(sample), 10)
    assert isinstance(info.value, UNet2DError)
    assert isinstance(info.value, InvalidArgumentError)
    assert "sample" in str(info.value)


def test_class_labels_for_an_unconditional_model(model, sample) -> None:
    with pytest.raises(InvalidArgumentError, match="not class-conditional"):
        model(sample, 10, class_labels=np.array([1, 2]))


def test_missing_class_labels() -> None:
    case = load_case(CLASS_TABLE)
    model = UNet2DModel.from_pretrained(CLASS_TABLE)
    with pytest.raises(ValueError, match="class_labels") as info:
        model(case.arrays["sample"], 1)
    assert isinstance(info.value, UNet2DError)


def test_a_rust_panic_becomes_internal_error() -> None:
    from candle_unet2d import _core

    with pytest.raises(candle_unet2d.InternalError, match="boom from Rust") as info:
        _core._panic_for_tests("boom from Rust")
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, UNet2DError)


# --- threads and the GIL ------------------------------------------------------------------------------


def test_concurrent_calls_match_serial(model: UNet2DModel, sample: np.ndarray) -> None:
    timesteps = [1, 250, 500, 999]
    serial = [model(sample, t).sample for t in timesteps]
    with ThreadPoolExecutor(max_workers=2) as pool:
        concurrent = list(pool.map(lambda t: model(sample, t).sample, timesteps))
    for s, c in zip(serial, concurrent):
        np.testing.assert_array_equal(c, s)


def test_gil_is_released_while_computing(model: UNet2DModel, sample: np.ndarray) -> None:
    assert_gil_released(lambda scale: model(np.concatenate([sample] * 8 * scale), 10))


# --- torch (optional) ---------------------------------------------------------------------------------


def test_numpy_use_never_imports_torch() -> None:
    code = f"""
import sys, numpy as np
from candle_unet2d import UNet2DModel
m = UNet2DModel.from_pretrained({str(DEFAULT)!r})
m(np.zeros((1, 3, 16, 16), np.float32), np.array([3.5]), return_dict=False)
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_tensors_in_and_out(model: UNet2DModel, sample: np.ndarray, reference: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(sample)
    out = model(x, torch.tensor(10)).sample
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    assert out.device == x.device
    assert_close(out.numpy(), reference, 1e-6, "torch input")
    # Non-contiguous, float64, requires_grad: all accepted.
    y = torch.from_numpy(sample).double().requires_grad_(True).transpose(2, 3)
    out = model(y.transpose(2, 3), 10, return_dict=False)[0]
    assert_close(out.numpy(), reference, 1e-5, "torch float64 input")
    # A float tensor timestep keeps its value, as in diffusers.
    frac = model(x, torch.tensor([10.9])).sample.numpy()
    assert np.max(np.abs(frac - reference)) > 1e-6


def test_torch_dtypes(sample: np.ndarray, reference: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    half = UNet2DModel.from_pretrained(DEFAULT, torch_dtype=torch.float16)
    assert half.dtype == "float16"
    out = half(torch.from_numpy(sample).half(), 10).sample
    assert out.dtype == torch.float16
    assert_close(out.float().numpy(), reference, 2e-2, "float16 model, torch input")
    # A bfloat16 input (numpy has no bfloat16) is accepted; the output has the model's dtype.
    model = UNet2DModel.from_pretrained(DEFAULT)
    out = model(torch.from_numpy(sample).bfloat16(), 10).sample
    assert out.dtype == torch.float32
    with pytest.raises(InvalidArgumentError, match="floating-point"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.int64), 1)


def _cpu_isa_in_child(value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CANDLE_UNET2D_ISA": value}
    code = "import candle_unet2d; print(candle_unet2d.cpu_isa())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)


def test_cpu_isa_names_the_level_and_the_variable_lowers_it() -> None:
    best = candle_unet2d.cpu_isa()
    assert best in {"scalar", "avx2", "avx512"}
    lowered = _cpu_isa_in_child("scalar")
    assert lowered.stdout.strip() == "scalar"
    assert lowered.stderr == ""
    # A typo keeps the best level and says so once, instead of silently testing something else.
    typo = _cpu_isa_in_child("avx3")
    assert typo.stdout.strip() == best
    assert "CANDLE_UNET2D_ISA ignored" in typo.stderr
    assert "avx3" in typo.stderr
