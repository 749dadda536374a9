//! The input is the `diffusion_pytorch_model.safetensors` of the tiny model (`fuzz/tiny/`), loaded
//! through `UNet2DModel::from_pretrained` (memory-mapped) and `from_safetensors_bytes` (in memory).
//! Loading must fail with an error or give a model that runs; never panic or abort.
#![no_main]

mod common;

use std::path::Path;

use candle_unet2d::{LoadOptions, UNet2DModel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = common::model_dir();
    std::fs::write(dir.join("diffusion_pytorch_model.safetensors"), data).expect("write weights");
    let options = LoadOptions::default();
    if let Ok(model) = UNet2DModel::from_pretrained(dir, &options) {
        common::forward(&model);
    }
    let in_memory = UNet2DModel::from_safetensors_bytes(
        common::tiny_config(),
        data.to_vec(),
        Path::new("fuzz.safetensors"),
        &options,
    );
    if let Ok(model) = in_memory {
        common::forward(&model);
    }
});
