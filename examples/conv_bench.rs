//! Times the convolution kernels alone on the UNet's layer shapes: the direct and Winograd (both tile sizes) kernels at
//! every instruction-set level this CPU runs, and candle's own convolution for reference; best of 20
//! (or `CONV_BENCH_RUNS`) alternating runs, with GFLOP/s (of the direct convolution's arithmetic, so the Winograd kernel's
//! figure is "effective").
//!
//! `cargo run --release --example conv_bench [LEVEL ...]` (levels: scalar, avx2, avx512; default: every
//! level the CPU runs but scalar; `RAYON_NUM_THREADS=1` for one core; `CONV_BENCH_RUNS=50` for more
//! runs on a noisy machine).
use candle_core::{Device, Tensor};
use candle_unet2d::kernels::conv2d::{conv2d_bias, Conv2dParams, Conv2dWeight, ConvEpilogue, ConvKernel};
use candle_unet2d::kernels::isa::Isa;

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let levels: Vec<Isa> = if args.is_empty() {
        Isa::ALL.into_iter().filter(|isa| isa.is_supported() && *isa != Isa::Scalar).collect()
    } else {
        args.iter().map(|a| a.parse::<Isa>().map_err(candle_core::Error::msg)).collect::<candle_core::Result<_>>()?
    };
    let dev = Device::Cpu;
    let runs: usize = std::env::var("CONV_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let shapes = [
        (1, 128, 128, 32, 3),
        (1, 256, 256, 16, 3),
        (1, 256, 256, 8, 3),
        (1, 256, 256, 4, 3),
        (4, 256, 256, 16, 3),
        (1, 128, 128, 64, 3),
        (1, 256, 256, 32, 3),
        (8, 128, 128, 32, 3),
        (8, 256, 256, 16, 3),
        (8, 256, 256, 8, 3),
        (8, 256, 256, 4, 3),
        (8, 512, 256, 16, 1),
    ];
    for (b, ci, co, h, k) in shapes {
        let x = Tensor::randn(0f32, 1.0, (b, ci, h, h), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, co, &dev)?;
        let params = Conv2dParams { kernel: k, stride: 1, padding: k / 2 };
        let mut variants = vec![("candle".to_string(), Conv2dWeight::Loaded(w.clone()))];
        for &isa in &levels {
            variants.push((format!("direct {isa}"), Conv2dWeight::with_kernel(w.clone(), ConvKernel::Direct, isa)?));
            if k == 3 {
                for (name, kernel) in [
                    ("winograd F(2x2)", ConvKernel::WinogradF2),
                    ("winograd F(4x4)", ConvKernel::WinogradF4),
                    ("winograd (chosen per call)", ConvKernel::Winograd),
                ] {
                    variants.push((format!("{name} {isa}"), Conv2dWeight::with_kernel(w.clone(), kernel, isa)?));
                }
            }
        }
        let mut best = vec![f64::MAX; variants.len()];
        for _ in 0..runs {
            for (best, (_, weight)) in best.iter_mut().zip(&variants) {
                let t = std::time::Instant::now();
                conv2d_bias(&x, weight, &bias, params, ConvEpilogue::default())?;
                *best = best.min(t.elapsed().as_secs_f64());
            }
        }
        let gflop = 2.0 * (b * co * ci * k * k * h * h) as f64 / 1e9;
        let cells: Vec<String> = variants
            .iter()
            .zip(&best)
            .map(|((name, _), t)| format!("{name} {:.3} ms ({:.0})", t * 1e3, gflop / t))
            .collect();
        println!("batch {b}, {ci}->{co}, {h}x{h}, {k}x{k}: {}", cells.join(", "));
    }
    Ok(())
}
