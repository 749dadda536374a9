//! Times UNet forwards, for quick checks while optimising (the full benchmarks are in `benches/`):
//!
//! `cargo run --release --example time_forward -- [MODEL_DIR | CONFIG.json] [BATCH] [N] [--profile]`
//!
//! A model folder is loaded; a config file gets random weights. Prints ms per forward, the model's
//! GFLOP per sample and the achieved GFLOP/s. `--profile` adds the per-op table (see
//! `candle_unet2d::profile`): where the time goes, op by op. For instruction-level detail, run it under
//! `perf record target/release/examples/time_forward MODEL 10 20 && perf report`.
use candle_core::{DType, Device, Tensor};
use candle_unet2d::{LoadOptions, UNet2DConfig, UNet2DModel};

/// As the CLI and the Python extension run (see `ReusingAllocator`).
#[cfg(not(feature = "python"))]
#[global_allocator]
static ALLOCATOR: candle_unet2d::ReusingAllocator = candle_unet2d::ReusingAllocator::new();

fn main() -> candle_unet2d::Result<()> {
    let mut args: Vec<String> = std::env::args().collect();
    let profile = args.iter().any(|a| a == "--profile");
    args.retain(|a| a != "--profile");
    // `--gap MS`: sleep between forwards and report the median single forward, as a server or the
    // benchmark's "after quiet" runs see it (idle workers may have gone to sleep).
    let gap_ms: Option<u64> = args.iter().position(|a| a == "--gap").map(|i| {
        let ms = args.get(i + 1).and_then(|s| s.parse().ok()).expect("--gap takes milliseconds");
        args.drain(i..i + 2);
        ms
    });
    let what = args.get(1).map(String::as_str).unwrap_or("models/digits16/unet");
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
    let model = if what.ends_with(".json") {
        let config = UNet2DConfig::from_file(std::path::Path::new(what))?;
        UNet2DModel::with_random_weights(config, &Device::Cpu, DType::F32, 0)?
    } else {
        UNet2DModel::from_pretrained(what, &LoadOptions::default())?
    };
    let config = model.config();
    let (h, w) = config.sample_size.map(|s| s.height_width()).unwrap_or((32, 32));
    let x = Tensor::randn(0f32, 1.0, (batch, config.in_channels, h, w), model.device())?;
    let labels = config.num_class_embeds.map(|_| Tensor::zeros(batch, DType::I64, model.device())).transpose()?;
    model.forward(&x, 10i64, labels.as_ref())?;
    candle_unet2d::profile::set_enabled(profile);
    let ms = match gap_ms {
        None => {
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                model.forward(&x, 10i64, labels.as_ref())?;
            }
            t0.elapsed().as_secs_f64() * 1e3 / n as f64
        }
        Some(gap) => {
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                std::thread::sleep(std::time::Duration::from_millis(gap));
                let t0 = std::time::Instant::now();
                model.forward(&x, 10i64, labels.as_ref())?;
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            times[n / 2]
        }
    };
    let gflop = candle_unet2d::stats::flops_per_sample(config, h, w)? / 1e9;
    let params = candle_unet2d::stats::num_parameters(config)? as f64 / 1e6;
    println!(
        "{ms:.2} ms per forward (batch {batch}; {params:.1} M parameters, {gflop:.2} GFLOP per sample, {:.1} GFLOP/s)",
        gflop * batch as f64 / ms * 1e3
    );
    if profile {
        print_profile(n, ms);
    }
    Ok(())
}

/// The per-op table: ms per forward and share of the forward's wall time.
fn print_profile(forwards: usize, ms_per_forward: f64) {
    let ops = candle_unet2d::profile::take();
    println!("{:<24} {:>10} {:>7} {:>9}", "op", "ms/forward", "share", "calls/fw");
    for op in ops {
        let ms = op.total.as_secs_f64() * 1e3 / forwards as f64;
        let calls = op.calls as f64 / forwards as f64;
        println!("{:<24} {ms:>10.2} {:>6.1}% {calls:>9.0}", op.op, 100.0 * ms / ms_per_forward);
    }
}
