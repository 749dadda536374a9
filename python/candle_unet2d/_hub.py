"""Progress bars for Hub downloads: one tqdm bar per file, as huggingface_hub shows, when tqdm is
installed (and ``HF_HUB_DISABLE_PROGRESS_BARS`` is not set). The Rust downloader calls the object
:func:`download_progress` returns with ``(file, downloaded, total)``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any


class DownloadBars:
    """One bar per file being downloaded; a bar closes when its file is complete. tqdm is imported on
    the first call: importing it takes tens of milliseconds (more than a whole local
    ``from_pretrained``), and most loads download nothing."""

    def __init__(self) -> None:
        self._tqdm: Any = None
        self._broken = False
        self._bars: dict[str, Any] = {}

    def __call__(self, file: str, downloaded: int, total: int | None) -> None:
        if self._tqdm is None:
            if self._broken:
                return
            try:
                # Imported by name: tqdm is optional and untyped.
                self._tqdm = importlib.import_module("tqdm.auto").tqdm
            except ImportError:
                # Found but not importable: download without bars rather than fail.
                self._broken = True
                return
        bar = self._bars.get(file)
        if bar is None:
            bar = self._tqdm(
                total=total,
                initial=downloaded,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=file,
            )
            self._bars[file] = bar
        else:
            bar.update(downloaded - bar.n)
        if total is not None and downloaded >= total:
            bar.close()
            del self._bars[file]


def download_progress() -> DownloadBars | None:
    """Bars for a download, or ``None`` when tqdm is not importable or bars are disabled."""
    disabled = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().lower()
    if disabled in {"1", "on", "yes", "true"}:
        return None
    return DownloadBars() if _tqdm_installed() else None


def _tqdm_installed() -> bool:
    """Whether tqdm can be found, without importing it."""
    if "tqdm" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("tqdm") is not None
    except (ImportError, ValueError):
        return False
