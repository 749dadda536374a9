"""The model methods beside loading (diffusers' ``ModelMixin`` / torch's ``nn.Module``): the constructor
and ``from_config`` (torch's default initialisation, seeded by ``manual_seed``), ``load_config``,
``load_state_dict``, ``to``/``half``/``float``, ``eval``/``train``/``requires_grad_``. Checked with numpy;
the torch-only forms are skipped when torch is not installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import candle_unet2d
from candle_unet2d import (
    ConfigError,
    IncompatibleKeys,
    InvalidArgumentError,
    ModelNotFoundError,
    UNet2DModel,
    UNet2DPipeline,
    UnsupportedError,
)

from conftest import DIGITS16, UNET2D_FIXTURES, assert_close, load_case

CIFAR = UNET2D_FIXTURES / "cifar10_like"  # 4 levels, attention, 3×16×16
CLASS_TABLE = UNET2D_FIXTURES / "consistency_like"  # num_class_embeds

SMALL: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 3,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
    "norm_num_groups": 8,
}


def sample(channels: int = 3, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, channels, size, size)).astype(np.float32)


def out(model: UNet2DModel, x: np.ndarray, **kwargs: Any) -> np.ndarray:
    return np.asarray(model(x, 10, **kwargs).sample, dtype=np.float32)


# --- UNet2DModel(**config), from_config, load_config ----------------------------------------------------


def test_constructor_takes_diffusers_keywords_with_their_defaults() -> None:
    model = UNet2DModel(**SMALL)
    config = model.config
    assert config.block_out_channels == [32, 64]
    assert config.layers_per_block == 1
    # Everything not given is diffusers' default.
    assert config.act_fn == "silu"
    assert config.attention_head_dim == 8
    assert config.norm_eps == 1e-5
    assert config.mid_block_type == "UNetMidBlock2D"
    assert config.time_embedding_type == "positional"
    assert "_name_or_path" not in config
    assert (model.dtype, model.device, model.training) == ("float32", "cpu", False)
    assert out(model, sample()).shape == (2, 3, 16, 16)
    # diffusers' default config (224..896 channels) is a valid model too.
    assert UNet2DModel().config.block_out_channels == [224, 448, 672, 896]


def test_constructor_refuses_unknown_keywords_and_bad_values() -> None:
    with pytest.raises(InvalidArgumentError, match="block_out_channel"):
        UNet2DModel(block_out_channel=(32, 64))
    with pytest.raises(InvalidArgumentError, match="_class_name"):
        UNet2DModel(_class_name="UNet2DModel")
    with pytest.raises(ConfigError, match="in_channels"):
        UNet2DModel(in_channels="three")
    with pytest.raises(ConfigError, match="norm_num_groups"):
        UNet2DModel(**{**SMALL, "norm_num_groups": 7})


def test_initialisation_is_torch_default() -> None:
    state = UNet2DModel(**SMALL).state_dict()
    for name, value in state.items():
        v = value.astype(np.float64)
        if "norm" in name:
            assert np.all(v == (1.0 if name.endswith(".weight") else 0.0)), name
            continue
        weight = state[name[: -len("bias")] + "weight"] if name.endswith(".bias") else value
        fan_in = int(np.prod(weight.shape[1:]))
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(v).max() <= bound * (1 + 1e-6), name
        if v.size >= 4096:
            assert abs(v.std() / (bound / np.sqrt(3)) - 1) < 0.05, name


def test_manual_seed_makes_the_model_reproducible() -> None:
    candle_unet2d.manual_seed(123)
    a = UNet2DModel(**SMALL)
    b = UNet2DModel(**SMALL)  # the default generator moved on: another model
    candle_unet2d.manual_seed(123)
    c = UNet2DModel.from_config(a.config)
    x = sample()
    np.testing.assert_array_equal(out(a, x), out(c, x))
    assert np.abs(out(a, x) - out(b, x)).max() > 0


def test_from_config_of_a_model_config_and_overrides() -> None:
    loaded = UNet2DModel.from_pretrained(CIFAR)
    fresh = UNet2DModel.from_config(loaded.config)
    theirs = {k: v for k, v in loaded.config.items() if not k.startswith("_")}
    ours = {k: v for k, v in fresh.config.items() if not k.startswith("_")}
    assert ours == theirs
    assert fresh.num_parameters() == loaded.num_parameters()
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in loaded.state_dict().items()}

    gray = UNet2DModel.from_config(loaded.config, in_channels=1, out_channels=1)
    assert (gray.config.in_channels, gray.config.out_channels) == (1, 1)
    assert gray.state_dict()["conv_in.weight"].shape[1] == 1
    with pytest.raises(InvalidArgumentError, match="not_a_key"):
        UNet2DModel.from_config(loaded.config, not_a_key=1)
    with pytest.raises(InvalidArgumentError, match="config"):
        UNet2DModel.from_config([1, 2])  # type: ignore[arg-type]


def test_from_config_ignores_metadata_and_warns_on_unknown_keys() -> None:
    config = {**SMALL, "_class_name": "UNet2DModel", "_diffusers_version": "0.42.1", "_name_or_path": "x"}
    assert UNet2DModel.from_config(config).config.block_out_channels == [32, 64]
    with pytest.warns(UserWarning, match="some_future_key"):
        UNet2DModel.from_config({**SMALL, "some_future_key": 3})
    # Keys listed in _use_default_values take the default (diffusers' extract_init_dict).
    model = UNet2DModel.from_config({**SMALL, "act_fn": "mish", "_use_default_values": ["act_fn"]})
    assert model.config.act_fn == "silu"


def test_from_config_returns_the_unused_kwargs_when_asked() -> None:
    # diffusers 0.42.1 on this config gives (model, {"foo": 1, "_class_name": ..., "_name_or_path": ...}).
    loaded = UNet2DModel.from_pretrained(CIFAR)
    model, unused = UNet2DModel.from_config(loaded.config, return_unused_kwargs=True, foo=1, sample_size=16)
    assert isinstance(model, UNet2DModel)
    assert model.config.sample_size == 16
    assert unused == {"foo": 1, "_class_name": "UNet2DModel", "_name_or_path": str(CIFAR)}
    assert list(unused) == ["foo", "_class_name", "_name_or_path"]
    # Unknown config keys come first (and are still warned about), then keywords, then the rest.
    config = {**SMALL, "act_fn": "mish", "bogus": 3, "_use_default_values": ["act_fn"]}
    with pytest.warns(UserWarning, match="bogus"):
        model, unused = UNet2DModel.from_config(config, True, extra=[1, 2])
    assert model.config.act_fn == "silu"
    assert list(unused) == ["bogus", "extra", "act_fn", "_use_default_values"]
    assert unused["extra"] == [1, 2]
    assert unused["act_fn"] == "mish"
    # Without it, a model alone; an unknown keyword is still an error.
    assert isinstance(UNet2DModel.from_config(SMALL, return_unused_kwargs=False), UNet2DModel)
    with pytest.raises(InvalidArgumentError, match="extra"):
        UNet2DModel.from_config(SMALL, extra=1)


def test_load_config(tmp_path: Path) -> None:
    config = UNet2DModel.load_config(CIFAR)
    assert config == json.loads((CIFAR / "config.json").read_text())
    assert UNet2DModel.load_config(CIFAR / "config.json") == config
    assert UNet2DModel.load_config(DIGITS16, subfolder="unet")["num_class_embeds"] == 10
    model = UNet2DModel.from_config(UNet2DModel.load_config(CIFAR))
    assert model.config.block_out_channels == config["block_out_channels"]
    assert UNet2DModel.from_config(str(CIFAR)).config.block_out_channels == config["block_out_channels"]
    with pytest.raises(ModelNotFoundError):
        UNet2DModel.load_config(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError):
        UNet2DModel.load_config(tmp_path)


def test_a_fresh_model_saves_and_loads_back(tmp_path: Path) -> None:
    model = UNet2DModel(**SMALL)
    model.save_pretrained(tmp_path)
    reloaded = UNet2DModel.from_pretrained(tmp_path)
    x = sample()
    np.testing.assert_array_equal(out(reloaded, x), out(model, x))


# --- load_state_dict ------------------------------------------------------------------------------------


def test_load_state_dict_reproduces_the_source_model(tmp_path: Path) -> None:
    source = UNet2DModel.from_pretrained(CLASS_TABLE)
    case = load_case(CLASS_TABLE)
    x, labels = case.arrays["sample"], case.arrays["class_labels"]
    target = UNet2DModel.from_config(source.config)
    before = out(target, x, class_labels=labels)
    keys = target.load_state_dict(source.state_dict())
    assert isinstance(keys, IncompatibleKeys)
    assert isinstance(keys, tuple)
    assert keys == ([], [])
    assert keys.missing_keys == []
    assert keys.unexpected_keys == []
    assert repr(keys) == "<All keys matched successfully>"
    expected = out(source, x, class_labels=labels)
    np.testing.assert_array_equal(out(target, x, class_labels=labels), expected)
    assert np.abs(before - expected).max() > 0
    # diffusers' own float64 output of those weights.
    assert_close(target(x, case.timestep(), class_labels=labels).sample, case.arrays["output"])

    # save_pretrained after load_state_dict writes the loaded weights.
    target.save_pretrained(tmp_path)
    np.testing.assert_array_equal(out(UNet2DModel.from_pretrained(tmp_path), x, class_labels=labels), expected)


def test_load_state_dict_converts_float64_and_lists() -> None:
    source = UNet2DModel(**SMALL)
    state = {k: v.astype(np.float64) for k, v in source.state_dict().items()}
    state["conv_in.bias"] = state["conv_in.bias"].tolist()
    target = UNet2DModel(**SMALL)
    target.load_state_dict(state)
    for name, value in target.state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, source.state_dict()[name])


def test_load_state_dict_strict_and_not() -> None:
    model = UNet2DModel(**SMALL)
    own = model.state_dict()
    source = UNet2DModel(**SMALL).state_dict()
    partial = dict(source)
    del partial["conv_in.bias"]
    partial["extra.weight"] = np.zeros(3, np.float32)
    x = sample()
    reference = out(model, x)
    with pytest.raises(InvalidArgumentError) as error:
        model.load_state_dict(partial)
    message = str(error.value)
    assert "Missing key(s)" in message
    assert '"conv_in.bias"' in message
    assert "Unexpected key(s)" in message
    assert '"extra.weight"' in message
    np.testing.assert_array_equal(out(model, x), reference)  # unchanged by the failed load

    keys = model.load_state_dict(partial, strict=False)
    assert keys.missing_keys == ["conv_in.bias"]
    assert keys.unexpected_keys == ["extra.weight"]
    assert "missing_keys=['conv_in.bias']" in repr(keys)
    now = model.state_dict()
    np.testing.assert_array_equal(now["conv_in.bias"], own["conv_in.bias"])
    np.testing.assert_array_equal(now["conv_in.weight"], source["conv_in.weight"])

    wrong = {**source, "conv_out.weight": np.zeros((3, 32, 1, 1), np.float32)}
    for strict in (True, False):
        with pytest.raises(InvalidArgumentError, match=r"size mismatch for conv_out.weight"):
            model.load_state_dict(wrong, strict=strict)


def test_load_state_dict_bad_arguments() -> None:
    model = UNet2DModel(**SMALL)
    with pytest.raises(InvalidArgumentError, match="mapping"):
        model.load_state_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="keys must be str"):
        model.load_state_dict({1: np.zeros(3)})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentError, match=r"conv_in\.weight"):
        model.load_state_dict({"conv_in.weight": np.array(["a", "b"])}, strict=False)
    with pytest.raises(UnsupportedError, match="assign"):
        model.load_state_dict(model.state_dict(), assign=True)


def test_loading_into_a_pipelines_unet_changes_the_pipeline() -> None:
    pipe = UNet2DPipeline.from_pretrained(DIGITS16)

    def images() -> np.ndarray:
        result = pipe(
            class_labels=[3],
            num_inference_steps=2,
            generator=candle_unet2d.Generator().manual_seed(0),
            output_type="np",
        )
        return np.asarray(result.images)

    before = images()
    other = UNet2DModel.from_config(pipe.unet.config)
    pipe.unet.load_state_dict(other.state_dict())
    after = images()
    assert np.abs(after - before).max() > 0
    pipe.unet.load_state_dict(UNet2DModel.from_pretrained(DIGITS16, subfolder="unet").state_dict())
    np.testing.assert_array_equal(images(), before)


# --- to, half, float, eval, train, requires_grad_ ---------------------------------------------------------


def test_to_half_and_float_in_place() -> None:
    model = UNet2DModel.from_pretrained(CIFAR)
    x = sample()
    reference = out(model, x)
    assert model.half() is model
    assert model.dtype == "float16"
    half = model(x, 10).sample
    assert half.dtype == np.float16
    assert_close(half, reference, rel=1e-2)
    assert model.float() is model
    assert model.dtype == "float32"
    # float32 → float16 → float32 keeps float16's rounding, as torch does.
    np.testing.assert_array_equal(out(model, x), out(UNet2DModel.from_pretrained(CIFAR).half().float(), x))
    loaded = UNet2DModel.from_pretrained(CIFAR).state_dict()["conv_in.weight"]
    np.testing.assert_array_equal(model.state_dict()["conv_in.weight"], loaded.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("float16",), {}),
        (("cpu", "float16"), {}),
        ((np.float16,), {}),
        ((), {"dtype": np.dtype("float16")}),
        ((), {"device": "cpu", "dtype": "fp16"}),
    ],
)
def test_to_forms(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    model = UNet2DModel(**SMALL)
    assert model.to(*args, **kwargs) is model
    assert (model.dtype, model.device) == ("float16", "cpu")


def test_to_refusals() -> None:
    model = UNet2DModel(**SMALL)
    with pytest.raises(UnsupportedError, match="bfloat16"):
        model.to(dtype="bfloat16")
    with pytest.raises(InvalidArgumentError, match="float64"):
        model.to(np.float64)
    with pytest.raises(InvalidArgumentError, match="tpu"):
        model.to("tpu")
    with pytest.raises(InvalidArgumentError, match="given twice"):
        model.to("cpu", device="cpu")
    with pytest.raises(InvalidArgumentError, match="at most 2"):
        model.to("cpu", "float32", "float16")
    if not candle_unet2d.WITH_CUDA:
        with pytest.raises(UnsupportedError, match="CUDA"):
            model.to("cuda")
        with pytest.raises(UnsupportedError, match="CUDA"):
            model.cuda()
    assert (model.dtype, model.device) == ("float32", "cpu")  # nothing changed
    assert model.cpu() is model


def test_a_converted_model_saves_in_its_dtype(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    model = UNet2DModel(**SMALL).half()
    model.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in weights.values()} == {np.dtype(np.float16)}
    reloaded = UNet2DModel.from_pretrained(tmp_path, dtype="float16")
    x = sample()
    np.testing.assert_array_equal(reloaded(x, 10).sample, model(x, 10).sample)


def test_eval_train_requires_grad() -> None:
    model = UNet2DModel(**SMALL)
    assert model.eval() is model
    assert model.train(False) is model
    assert model.requires_grad_(False) is model
    assert model.training is False
    with pytest.raises(UnsupportedError, match="inference only"):
        model.train()
    with pytest.raises(UnsupportedError, match="inference only"):
        model.train(True)
    with pytest.raises(UnsupportedError, match="inference only"):
        model.requires_grad_()


def test_parameters() -> None:
    model = UNet2DModel(**SMALL)
    state = model.state_dict()
    params = list(model.parameters())
    assert len(params) == len(state)
    assert sum(p.size for p in params) == model.num_parameters()
    named = dict(model.named_parameters())
    assert list(named) == list(state)
    np.testing.assert_array_equal(named["conv_in.weight"], state["conv_in.weight"])
    assert next(iter(model.named_parameters(prefix="unet")))[0] == "unet." + next(iter(state))


# --- torch ----------------------------------------------------------------------------------------------


def test_torch_forms() -> None:
    torch = pytest.importorskip("torch")
    model = UNet2DModel(**SMALL)
    source = UNet2DModel(**SMALL)
    state = {k: torch.from_numpy(v).double() for k, v in source.state_dict().items()}
    assert model.load_state_dict(state) == ([], [])
    x = sample()
    np.testing.assert_array_equal(out(model, x), out(source, x))
    assert model.to(torch.float16) is model
    assert model.dtype == "float16"
    assert model.to(torch.device("cpu"), torch.float32) is model
    assert model.dtype == "float32"
    model.to(torch.zeros(1, dtype=torch.float16))
    assert model.dtype == "float16"
    bf16 = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in source.state_dict().items()}
    model.float().load_state_dict(bf16)
    expected = source.state_dict()["conv_in.weight"]
    np.testing.assert_array_equal(
        model.state_dict()["conv_in.weight"], torch.from_numpy(expected).to(torch.bfloat16).float().numpy()
    )
