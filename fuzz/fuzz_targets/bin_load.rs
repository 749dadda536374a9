//! A PyTorch `.bin` for the tiny model (`fuzz/tiny/`), loaded through `UNet2DModel::from_pretrained`
//! (candle's pickle reader). Byte 0 chooses what the rest is:
//! - even: the whole `diffusion_pytorch_model.bin` (fuzzes the zip reader too);
//! - odd: only `archive/data.pkl`, put in a zip with 128 float storages `archive/data/0` … `127` of
//!   1,152 bytes each, so that mutations stay in the pickle.
//!
//! Loading must fail with an error or give a model that runs; never panic, abort or execute anything.
//! With `--features guard`, `src/loading/pickle_guard.rs` screens the file first (as it will once wired
//! into the library), so the fuzzer also checks that what the guard lets through loads safely.
#![no_main]

mod common;

#[cfg(feature = "guard")]
#[path = "../../src/loading/pickle_guard.rs"]
mod pickle_guard;

use std::io::{Cursor, Write};
use std::sync::OnceLock;

use candle_unet2d::{LoadOptions, UNet2DModel};
use libfuzzer_sys::fuzz_target;
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

const N_STORAGES: usize = 128;
const STORAGE_BYTES: usize = 1152;

/// Storage bytes: small float32 values (also valid float16 and int64 bit patterns, all finite).
fn storage() -> &'static [u8] {
    static DATA: OnceLock<Vec<u8>> = OnceLock::new();
    DATA.get_or_init(|| (0..STORAGE_BYTES / 4).flat_map(|i| (((i % 13) as f32 - 6.0) * 0.01).to_le_bytes()).collect())
}

fn wrap(pickle: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options).expect("zip");
    zip.write_all(pickle).expect("zip");
    for i in 0..N_STORAGES {
        zip.start_file(format!("archive/data/{i}"), options).expect("zip");
        zip.write_all(storage()).expect("zip");
    }
    zip.finish().expect("zip").into_inner()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode % 2 == 0 { rest.to_vec() } else { wrap(rest) };
    let dir = common::model_dir();
    let path = dir.join("diffusion_pytorch_model.bin");
    std::fs::write(&path, &bytes).expect("write weights");
    #[cfg(feature = "guard")]
    if pickle_guard::check_torch_checkpoint(&path).is_err() {
        return;
    }
    if let Ok(model) = UNet2DModel::from_pretrained(dir, &LoadOptions::default()) {
        common::forward(&model);
    }
});
