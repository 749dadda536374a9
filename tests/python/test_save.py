"""``UNet2DModel.save_pretrained`` and ``state_dict``: a saved model loads back to the same outputs (bit
for bit), under diffusers' names and files; the refusals name what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from candle_unet2d import InvalidArgumentError, UNet2DModel, UnsupportedError

from conftest import UNET2D_FIXTURES, assert_gil_released, case_dirs, load_case

DEFAULT = UNET2D_FIXTURES / "ddpm_default_blocks"
LEGACY = UNET2D_FIXTURES / "legacy_attention_names"
LEGACY_NAMES = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def run(model: UNet2DModel, path: Path) -> np.ndarray:
    case = load_case(path)
    labels = case.arrays.get("class_labels")
    out = model(case.arrays["sample"], case.timestep(), class_labels=labels, return_dict=False)[0]
    return np.asarray(out)


def modern(name: str) -> str:
    for old, new in LEGACY_NAMES.items():
        if "attentions." in name and name.endswith(old + name.rsplit(".", 1)[1]):
            return name[: name.rfind(old)] + new + name.rsplit(".", 1)[1]
    return name


@pytest.mark.parametrize("path", case_dirs(), ids=lambda p: p.name)
def test_every_fixture_round_trips_bit_for_bit(path: Path, tmp_path: Path) -> None:
    variant = load_case(path).variant
    model = UNet2DModel.from_pretrained(path, variant=variant)
    model.save_pretrained(tmp_path, variant=variant)
    weights = f"diffusion_pytorch_model{'.' + variant if variant else ''}.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", weights]
    with safe_open(str(tmp_path / weights), framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
    config = json.loads((tmp_path / "config.json").read_text())
    original = json.loads((path / "config.json").read_text())
    assert config.pop("_name_or_path") == str(path)
    assert config == original
    again = UNet2DModel.from_pretrained(tmp_path, variant=variant)
    np.testing.assert_array_equal(run(again, path), run(model, path))


def test_state_dict_names_dtypes_and_values() -> None:
    model = UNet2DModel.from_pretrained(LEGACY)
    state = model.state_dict()
    stored = load_file(str(LEGACY / "diffusion_pytorch_model.safetensors"))
    assert any(".query." in n for n in stored), "the fixture has legacy names"
    expected = {modern(n): v for n, v in stored.items() if n != "time_proj.W"}
    assert set(state) == set(expected)
    assert list(state)[:2] == ["conv_in.weight", "conv_in.bias"]
    assert list(state)[-2:] == ["conv_out.weight", "conv_out.bias"]
    for name, array in state.items():
        assert isinstance(array, np.ndarray), name
        assert array.dtype == np.float32, name
        np.testing.assert_array_equal(array, expected[name], err_msg=name)

    half = UNet2DModel.from_pretrained(DEFAULT, dtype="float16").state_dict()
    assert all(a.dtype == np.float16 for a in half.values())
    full = UNet2DModel.from_pretrained(DEFAULT).state_dict()
    assert half.keys() == full.keys()
    for name in half:
        np.testing.assert_array_equal(half[name], full[name].astype(np.float16), err_msg=name)


def test_float16_model_saves_float16(tmp_path: Path) -> None:
    model = UNet2DModel.from_pretrained(DEFAULT, torch_dtype="float16")
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "diffusion_pytorch_model.safetensors"))
    assert {a.dtype for a in saved.values()} == {np.dtype(np.float16)}
    again = UNet2DModel.from_pretrained(tmp_path, dtype="float16")
    np.testing.assert_array_equal(run(again, DEFAULT), run(model, DEFAULT))


@pytest.mark.parametrize("max_shard_size", ["40KB", 40_000])
def test_sharded_save_loads_back(tmp_path: Path, max_shard_size: int | str) -> None:
    model = UNet2DModel.from_pretrained(DEFAULT)
    model.save_pretrained(tmp_path, max_shard_size=max_shard_size)
    index = json.loads((tmp_path / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    assert shards[0] == f"diffusion_pytorch_model-00001-of-{len(shards):05d}.safetensors"
    assert set(index["weight_map"]) == set(model.state_dict())
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in model.state_dict().values())
    again = UNet2DModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(run(again, DEFAULT), run(model, DEFAULT))


def test_not_main_process_writes_only_the_weights(tmp_path: Path) -> None:
    UNet2DModel.from_pretrained(DEFAULT).save_pretrained(tmp_path, is_main_process=False)
    assert [p.name for p in tmp_path.iterdir()] == ["diffusion_pytorch_model.safetensors"]


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"safe_serialization": False}, InvalidArgumentError, "only safetensors"),
        ({"push_to_hub": True}, UnsupportedError, "push_to_hub"),
        ({"max_shard_size": "10GiB"}, InvalidArgumentError, "max_shard_size"),
        ({"max_shard_size": -1}, InvalidArgumentError, "max_shard_size"),
        ({"max_shard_size": 1.5}, InvalidArgumentError, "max_shard_size"),
        ({"variant": "../up"}, InvalidArgumentError, "variant"),
        ({"variant": 16}, InvalidArgumentError, "variant"),
    ],
)
def test_refusals(tmp_path: Path, kwargs: dict[str, object], error: type[Exception], needle: str) -> None:
    model = UNet2DModel.from_pretrained(DEFAULT)
    with pytest.raises(error, match=needle):
        model.save_pretrained(tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists(), "nothing written"


def test_a_file_as_the_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "not_a_folder"
    target.write_text("x")
    with pytest.raises(InvalidArgumentError, match=r"not_a_folder.*is a file"):
        UNet2DModel.from_pretrained(DEFAULT).save_pretrained(str(target))
    assert target.read_text() == "x"


def test_save_releases_the_gil(tmp_path: Path) -> None:
    model = UNet2DModel.from_pretrained(DEFAULT)

    def work(scale: int) -> None:
        for i in range(scale):
            model.save_pretrained(tmp_path / str(i))

    assert_gil_released(work, min_seconds=0.02)
