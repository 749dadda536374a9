//! Shared by the integration tests: where the fixtures are, and the tolerance check.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::Tensor;

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join(rel)
}

/// Every case folder under `tests/fixtures/<group>/`, sorted.
pub fn cases(group: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixture(group))
        .expect("fixtures present")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// `max|actual − expected|`, and the bound `rel · max(1, max|expected|)` it must stay under.
pub fn max_abs_diff(actual: &Tensor, expected: &Tensor) -> (f32, f32) {
    let a = actual.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let e = expected.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), e.len(), "element counts differ");
    let diff = a.iter().zip(&e).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = e.iter().map(|x| x.abs()).fold(1f32, f32::max);
    (diff, scale)
}

/// Asserts `max|actual − expected| ≤ rel · max(1, max|expected|)`, the project's fixture tolerance.
pub fn assert_close(actual: &Tensor, expected: &Tensor, rel: f32, what: &str) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shapes differ");
    let (diff, scale) = max_abs_diff(actual, expected);
    assert!(diff.is_finite() && diff <= rel * scale, "{what}: max abs diff {diff:e} > {rel:e} × {scale}");
}

/// Runs the `unet2d` binary with `args` in `dir`, stderr piped (so no progress bar), without
/// `RUST_BACKTRACE` (so errors print as users see them).
#[cfg(feature = "cli")]
pub fn unet2d(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_unet2d"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the unet2d binary runs")
}
