//! `UNet2DConfig::from_json_str` on arbitrary bytes: it must return `Ok` or an error, never panic; and
//! a config it accepts must build (the weight shapes of the model it describes can be listed), since
//! validation promises that nothing fails later.
#![no_main]

use std::path::Path;

use candle_unet2d::UNet2DConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = UNet2DConfig::from_json_str(text, Path::new("config.json")) else { return };
    // What validation accepted builds; the shapes are recorded without allocating weights.
    let shapes = candle_unet2d::stats::parameter_shapes(&config)
        .unwrap_or_else(|e| panic!("a validated config fails to build: {e}\n{text}"));
    assert!(!shapes.is_empty());
    // Serialising gives JSON that parses again.
    let json = config.to_json().to_string();
    let _ = UNet2DConfig::from_json_str(&json, Path::new("roundtrip.json"));
});
