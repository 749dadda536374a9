//! Shared by the loading targets: the tiny model folder (`fuzz/tiny/config.json`) in a per-process
//! temporary directory, and a forward pass on whatever loaded.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_unet2d::{UNet2DConfig, UNet2DModel};

/// The config of the tiny model the seeds were made for (`fuzz/make_seeds.py`).
pub const TINY_CONFIG: &str = include_str!("../tiny/config.json");

/// A model folder holding the tiny `config.json`, private to this process (in /dev/shm when there is
/// one: the targets rewrite the weights file on every input).
pub fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let dir = base.join(format!("candle-unet2d-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("config.json"), TINY_CONFIG).expect("config.json");
        dir
    })
}

/// The tiny config, parsed.
pub fn tiny_config() -> UNet2DConfig {
    UNet2DConfig::from_json_str(TINY_CONFIG, Path::new("tiny/config.json")).expect("the tiny config is valid")
}

/// A model that loaded must run: one forward on a 1×3×4×4 input (NaN outputs are fine, panics are not).
pub fn forward(model: &UNet2DModel) {
    let sample = Tensor::ones((1, 3, 4, 4), DType::F32, &Device::Cpu).expect("tensor");
    let out = model.forward(&sample, 3i64, None).expect("a loaded model runs");
    assert_eq!(out.dims(), &[1, 3, 4, 4]);
}
