//! Times forwards of a model folder: `cargo run --release --example time_forward -- DIR BATCH [N]`.
use candle_unet2d::{LoadOptions, UNet2DModel};

fn main() -> candle_unet2d::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map(String::as_str).unwrap_or("models/digits16/unet");
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
    let model = UNet2DModel::from_pretrained(dir, &LoadOptions::default())?;
    let (h, w) = model.config().sample_size.map(|s| s.height_width()).unwrap_or((32, 32));
    let x = candle_core::Tensor::randn(0f32, 1.0, (batch, model.config().in_channels, h, w), model.device())?;
    let labels = model
        .config()
        .num_class_embeds
        .map(|_| candle_core::Tensor::zeros(batch, candle_core::DType::I64, model.device()).unwrap());
    model.forward(&x, 10i64, labels.as_ref())?;
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        model.forward(&x, 10i64, labels.as_ref())?;
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3 / n as f64;
    let gflop = candle_unet2d::stats::flops_per_sample(model.config(), h, w)? / 1e9;
    println!(
        "{ms:.2} ms per forward (batch {batch}, {gflop:.3} GFLOP per sample, {:.1} GFLOP/s)",
        gflop * batch as f64 / ms * 1e3
    );
    Ok(())
}
