"""Writes the committed fuzz seeds: ``fuzz/tiny/`` (the tiny model the loading targets use) and a
handful of inputs per target in ``fuzz/corpus/<target>/``. Needs numpy and safetensors only (no torch).

    python fuzz/make_seeds.py

The tiny model is the ``no_mid_block`` fixture (DownBlock2D + AttnDownBlock2D, no mid block) with every
channel count divided by 8 (16 → 2, 32 → 4): 114 tensors, about 2,300 weights, so one load is fast.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz"
FIXTURE = ROOT / "tests" / "fixtures" / "unet2d" / "no_mid_block"
SCALE = 8
# The wrapped mode of bin_load: the zip holds storages data/0 … data/{N_STORAGES-1}, each
# STORAGE_BYTES long, and the fuzz input is only data.pkl (see fuzz_targets/bin_load.rs).
N_STORAGES = 128
STORAGE_BYTES = 1152


def tiny_config() -> dict:
    config = json.loads((FIXTURE / "config.json").read_text())
    config["block_out_channels"] = [c // SCALE for c in config["block_out_channels"]]
    config["norm_num_groups"] = 2
    config["attention_head_dim"] = None
    config["sample_size"] = 4
    return config


def tiny_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name, array in sorted(load_file(str(FIXTURE / "diffusion_pytorch_model.safetensors")).items()):
        shape = tuple(d // SCALE if d % 16 == 0 else d for d in array.shape)
        out[name] = (rng.standard_normal(shape) * 0.2).astype(np.float32)
    return out


def _unicode(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def state_dict_pickle(entries: list[tuple[str, str, str, tuple[int, ...], int]]) -> bytes:
    """A protocol-2 pickle of ``{name: tensor}`` as ``torch.save`` writes it: (name, storage class,
    storage key, shape, storage numel) per tensor, offset 0, contiguous strides."""
    out = b"\x80\x02}("
    for name, cls, key, shape, numel in entries:
        stride = [int(np.prod(shape[i + 1 :])) for i in range(len(shape))]
        storage = b"(" + _unicode("storage") + f"ctorch\n{cls}\n".encode() + _unicode(key) + _unicode("cpu")
        storage += _int(numel) + b"tQ"
        args = b"(" + storage + _int(0)
        args += b"(" + b"".join(_int(d) for d in shape) + b"t"
        args += b"(" + b"".join(_int(s) for s in stride) + b"t"
        args += b"\x89ccollections\nOrderedDict\n)Rt"
        out += _unicode(name) + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"
    return out + b"u."


def torch_zip(tensors: dict[str, np.ndarray]) -> bytes:
    """A PyTorch (≥ 1.6) zip checkpoint of float32 ``tensors``, stored uncompressed as torch does."""
    entries = [(n, "FloatStorage", str(i), a.shape, a.size) for i, (n, a) in enumerate(tensors.items())]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", state_dict_pickle(entries))
        z.writestr("archive/byteorder", "little")
        for i, a in enumerate(tensors.values()):
            z.writestr(f"archive/data/{i}", np.ascontiguousarray(a, dtype="<f4").tobytes())
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def main() -> None:
    config = tiny_config()
    weights = tiny_weights()
    (FUZZ / "tiny").mkdir(exist_ok=True)
    (FUZZ / "tiny" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    assert max(a.nbytes for a in weights.values()) <= STORAGE_BYTES
    assert len(weights) <= N_STORAGES

    corpus = FUZZ / "corpus"
    # config: the tiny config, a fixture config, and small edge cases.
    seeds = {
        "tiny.json": json.dumps(config),
        "fixture_consistency.json": (ROOT / "tests/fixtures/unet2d/consistency_like/config.json").read_text(),
        "fixture_ncsnpp.json": (ROOT / "tests/fixtures/unet2d/ncsnpp_like/config.json").read_text(),
        "empty_object.json": "{}",
        "learned.json": json.dumps({**config, "time_embedding_type": "learned", "num_train_timesteps": 10}),
        "sample_size_pair.json": json.dumps({**config, "sample_size": [4, 8], "num_class_embeds": 3}),
    }
    for name, text in seeds.items():
        (corpus / "config" / name).write_text(text)

    # safetensors_load: the valid tiny weights, and the same with a legacy attention name.
    (corpus / "safetensors_load" / "valid.safetensors").write_bytes(save(weights))
    legacy = {k.replace(".to_q.", ".query."): v for k, v in weights.items()}
    (corpus / "safetensors_load" / "legacy_names.safetensors").write_bytes(save(legacy))
    f16 = {k: v.astype(np.float16) for k, v in weights.items()}
    (corpus / "safetensors_load" / "float16.safetensors").write_bytes(save(f16))

    # bin_load: byte 0 even → the rest is the whole .bin; odd → the rest is data.pkl, wrapped in a zip
    # of fixed storages by the target.
    (corpus / "bin_load" / "valid_zip.bin").write_bytes(b"\x00" + torch_zip(weights))
    entries = [(n, "FloatStorage", str(i), a.shape, a.size) for i, (n, a) in enumerate(weights.items())]
    (corpus / "bin_load" / "valid_pickle.bin").write_bytes(b"\x01" + state_dict_pickle(entries))
    half = [(n, "HalfStorage", str(i), a.shape, a.size) for i, (n, a) in enumerate(weights.items())]
    (corpus / "bin_load" / "half_pickle.bin").write_bytes(b"\x01" + state_dict_pickle(half))
    print(f"tiny model: {len(weights)} tensors, {sum(a.size for a in weights.values())} weights")


if __name__ == "__main__":
    main()
