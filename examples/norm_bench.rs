//! Times the fused group norm (+ SiLU, written with the convolution's zero border) alone on the
//! UNet's shapes, at every instruction-set level this CPU runs, with candle's own group norm + SiLU
//! for reference; best of 20 (or `NORM_BENCH_RUNS`) runs, in ns per element and GB/s of input read.
//!
//! `cargo run --release --example norm_bench [LEVEL ...]` (`RAYON_NUM_THREADS=1` for one core;
//! `NORM_BENCH_SHAPE=batch,channels,size` for one shape; `NORM_BENCH_CANDLE=0` to skip candle's).
use candle_core::{Device, Module, Tensor};
use candle_unet2d::kernels::group_norm::{group_norm_padded_cpu, Epilogue};
use candle_unet2d::kernels::isa::Isa;

#[cfg(not(feature = "python"))]
#[global_allocator]
static ALLOCATOR: candle_unet2d::ReusingAllocator = candle_unet2d::ReusingAllocator::new();

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let levels: Vec<Isa> = if args.is_empty() {
        Isa::ALL.into_iter().filter(|isa| isa.is_supported() && *isa != Isa::Scalar).collect()
    } else {
        args.iter().map(|a| a.parse::<Isa>().map_err(candle_core::Error::msg)).collect::<candle_core::Result<_>>()?
    };
    let runs: usize = std::env::var("NORM_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let dev = Device::Cpu;
    // (batch, channels, size): cifar10-32's largest and typical group norms, celebahq-256's largest.
    let mut shapes = vec![
        (1, 128, 32),
        (1, 256, 16),
        (1, 512, 8),
        (1, 256, 4),
        (8, 384, 32),
        (8, 128, 32),
        (8, 512, 16),
        (1, 128, 256),
    ];
    if let Ok(shape) = std::env::var("NORM_BENCH_SHAPE") {
        let dims: Vec<usize> = shape
            .split(',')
            .map(|d| d.trim().parse().map_err(candle_core::Error::wrap))
            .collect::<candle_core::Result<_>>()?;
        let [batch, channels, size] = dims[..] else { candle_core::bail!("NORM_BENCH_SHAPE: batch,channels,size") };
        shapes = vec![(batch, channels, size)];
    }
    let with_candle = std::env::var("NORM_BENCH_CANDLE").map_or(true, |v| v != "0");
    println!("{:<18} {:>8} {:>12} {:>10} {:>10}", "shape", "level", "ms", "ns/elem", "GB/s in");
    for (batch, channels, size) in shapes {
        let x = Tensor::randn(0.5f32, 2.0, (batch, channels, size, size), &dev)?;
        let w = Tensor::randn(1f32, 0.2, channels, &dev)?;
        let b = Tensor::randn(0f32, 0.1, channels, &dev)?;
        let elements = (batch * channels * size * size) as f64;
        let name = format!("{batch}x{channels}x{size}x{size}");
        let report = |level: &str, seconds: f64| {
            let ns = seconds * 1e9 / elements;
            println!(
                "{name:<18} {level:>8} {:>12.3} {ns:>10.3} {:>10.1}",
                seconds * 1e3,
                elements * 4.0 / seconds / 1e9
            );
        };
        for &isa in &levels {
            std::env::set_var(candle_unet2d::ISA_ENV, isa.to_string());
            for (epilogue, suffix) in [(Epilogue::Silu, "+silu"), (Epilogue::None, "")] {
                let best = best_of(runs, || {
                    group_norm_padded_cpu(&x, &w, &b, 32, 1e-5, epilogue, 1).map(|y| drop(y.expect("float32 CPU")))
                })?;
                report(&format!("{isa}{suffix}"), best);
            }
        }
        if !with_candle {
            continue;
        }
        let candle = candle_nn::GroupNorm::new(w.clone(), b.clone(), channels, 32, 1e-5)?;
        let best = best_of(runs.min(5), || candle_nn::ops::silu(&candle.forward(&x)?).map(drop))?;
        report("candle", best);
    }
    Ok(())
}

fn best_of(runs: usize, mut f: impl FnMut() -> candle_core::Result<()>) -> candle_core::Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let start = std::time::Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}
