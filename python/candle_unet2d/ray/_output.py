"""An output folder: ``images/{index:06d}.png`` written whole (temporary file, then rename), each
carrying its index, seed, label and run key in a PNG text chunk, and ``manifest.parquet`` (index,
seed, class_label, file, sha256). What a second run may keep is what verifies."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from typing import Any

import numpy as np

# The PNG text chunk holding an image's identity.
_META_KEY = "candle_unet2d"
MANIFEST = "manifest.parquet"


def image_path(output_dir: str, index: int) -> str:
    return os.path.join(output_dir, "images", f"{index:06d}.png")


def _atomic_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_png(path: str, image: np.ndarray, meta: dict[str, Any]) -> str:
    """Writes ``image`` (uint8 HWC) as a PNG with ``meta``; returns the file's sha256."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(_META_KEY, json.dumps(meta, sort_keys=True))
    pixels = image[..., 0] if image.shape[-1] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", pnginfo=info)
    data = buffer.getvalue()
    _atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def read_png(path: str) -> np.ndarray:
    """The image as uint8 HWC (a grayscale PNG gets C = 1, as the pipeline's arrays have)."""
    from PIL import Image

    with Image.open(path) as img:
        pixels = np.asarray(img)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def verify(path: str, expected: dict[str, Any], sha256: str | None) -> str | None:
    """The file's sha256 when it is this run's image ``expected`` describes (its text chunk says so,
    it decodes whole, and it has the manifest's hash when there is one); else ``None``."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as img:
            meta = json.loads(img.text.get(_META_KEY, "null"))  # type: ignore[attr-defined]
            img.load()
    except (OSError, ValueError, SyntaxError):
        return None
    digest = hashlib.sha256(data).hexdigest()
    if meta != expected or (sha256 is not None and digest != sha256):
        return None
    return digest


def read_manifest(output_dir: str) -> dict[int, dict[str, Any]]:
    """The manifest's rows by index (none when it is missing or unreadable: the files still verify)."""
    import pyarrow.parquet as pq

    path = os.path.join(output_dir, MANIFEST)
    if not os.path.exists(path):
        return {}
    try:
        table = pq.read_table(path)
    except (OSError, ValueError):
        return {}
    return {int(row["index"]): row for row in table.to_pylist()}


def write_manifest(output_dir: str, rows: list[dict[str, Any]], run_key: str) -> str:
    """Writes every row, sorted by index, as ``manifest.parquet`` (atomically); returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda r: r["index"])
    table = pa.table(
        {
            "index": pa.array([r["index"] for r in rows], pa.int64()),
            "seed": pa.array([r["seed"] for r in rows], pa.uint64()),
            "class_label": pa.array([r["class_label"] for r in rows], pa.int64()),
            "file": pa.array([r["file"] for r in rows], pa.string()),
            "sha256": pa.array([r["sha256"] for r in rows], pa.string()),
        }
    ).replace_schema_metadata({"candle_unet2d.run": run_key})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    path = os.path.join(output_dir, MANIFEST)
    _atomic_write(path, buffer.getvalue().to_pybytes())
    return path
