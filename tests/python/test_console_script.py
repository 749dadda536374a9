"""The ``unet2d`` console script the package installs: the Rust command line, run from the extension."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from candle_unet2d import _core


def unet2d_script() -> str:
    """The installed script: beside this interpreter (a virtualenv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / ("unet2d.exe" if sys.platform == "win32" else "unet2d")
    found = str(beside) if beside.exists() else shutil.which("unet2d")
    assert found, "the package did not install the unet2d console script"
    return found


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([unet2d_script(), *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False)


def test_version_and_help() -> None:
    out = run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"unet2d {_core.__version__}"
    out = run("--help")
    assert out.returncode == 0
    for command in ("sample", "inpaint", "info", "serve"):
        assert command in out.stdout


def test_info_describes_the_shipped_model() -> None:
    out = run("info")
    assert out.returncode == 0, out.stderr
    assert "digits16" in out.stdout
    assert "this CPU's best:" in out.stdout


def test_sample_writes_a_png(tmp_path: Path) -> None:
    target = tmp_path / "digits.png"
    out = run("sample", "--scheduler", "ddim", "--steps", "4", "--class", "3,1", "--out", str(target))
    assert out.returncode == 0, out.stderr
    image = np.asarray(Image.open(target))
    assert image.ndim == 2, image.shape
    assert image.shape[0] >= 16, image.shape
    assert image.shape[1] >= 32, image.shape
    assert 0 < image.std(), "a blank image"


def test_errors_are_one_line_with_the_cli_exit_codes(tmp_path: Path) -> None:
    out = run("sample", "--steps", "0")
    assert out.returncode == 2
    assert out.stderr.startswith("error:"), out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    out = run("info", "--model", str(tmp_path / "missing"))
    assert out.returncode == 1
    assert out.stderr.startswith("error:"), out.stderr
    assert "missing" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr


@pytest.mark.parametrize("args", [["--version"], ["info"]])
def test_run_cli_matches_the_script(args: list[str]) -> None:
    # Same process, same code: the function the script calls returns the exit code.
    assert _core.run_cli(["unet2d", *args]) == 0
