"""Every ``tests/fixtures/unet2d/<case>``: load the folder as diffusers wrote it, call the model the way
diffusers was called (``case.json``'s ``timestep_kind``), compare with diffusers' float64 output:
``max|ours − output| ≤ 1e-4 · max(1, max|output|)`` (as the Rust test ``tests/unet2d_fixtures.rs``)."""

from __future__ import annotations

import numpy as np

from candle_unet2d import UNet2DModel

from conftest import TOLERANCE, Case, assert_close, case_dirs


def test_all_cases_present() -> None:
    assert len(case_dirs()) >= 17


def test_fixture_matches_diffusers(case: Case) -> None:
    model = UNet2DModel.from_pretrained(case.path, variant=case.variant)
    out = model(case.arrays["sample"], case.timestep(), class_labels=case.arrays.get("class_labels"))
    assert isinstance(out.sample, np.ndarray)
    assert out.sample.dtype == np.float32
    assert_close(out.sample, case.arrays["output"], TOLERANCE, case.name)
