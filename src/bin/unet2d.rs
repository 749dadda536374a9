//! `unet2d`: sample images from diffusers' UNet2DModel on candle, and describe models.
//!
//! ```text
//! unet2d sample                                   # digits 0–9 from the shipped model → samples.png
//! unet2d sample --scheduler dpmpp --steps 20 --class 3,1,4 --out-dir digits/
//! unet2d sample --model google/ddpm-cifar10-32 --batch 16 --scheduler ddim --out cifar.png
//! unet2d sample --model path/to/ncsnpp --steps 100 --correct-steps 2   # ScoreSdeVePipeline
//! unet2d sample --model path/to/cm --timesteps 22,0 --class 1,2         # ConsistencyModelPipeline
//! unet2d inpaint --image digit.png --mask right_half.png --class 3 --out filled.png
//! unet2d info --model path/to/pipeline
//! ```
//!
//! The program itself is `unet2d/app.rs`, shared with the Python package's console script.

#[path = "unet2d/app.rs"]
mod app;

/// Activations reuse the blocks earlier forwards freed (see `ReusingAllocator`). With the `python`
/// feature the library already installs it.
#[cfg(not(feature = "python"))]
#[global_allocator]
static ALLOCATOR: candle_unet2d::ReusingAllocator = candle_unet2d::ReusingAllocator::new();

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(app::main(std::env::args_os()))
}
