//! Times the convolution kernels alone on the UNet's layer shapes: the direct and Winograd (both tile sizes) kernels at
//! every instruction-set level this CPU runs, and candle's own convolution for reference; best of 20
//! (or `CONV_BENCH_RUNS`) alternating runs, with GFLOP/s (of the direct convolution's arithmetic, so the Winograd kernel's
//! figure is "effective").
//!
//! `cargo run --release --example conv_bench [LEVEL ...]` (levels: scalar, avx2, avx512; default: every
//! level the CPU runs but scalar; `RAYON_NUM_THREADS=1` for one core; `CONV_BENCH_RUNS=50` for more
//! runs on a noisy machine; `CONV_BENCH_COLD=1` to cycle through copies of each weight that together
//! exceed the last-level cache, so that every call streams its weights from memory as the layers of a
//! forward pass do; `CONV_BENCH_SHAPE=batch,c_in,c_out,size,kernel[,stride]` for one shape).
use candle_core::{Device, Tensor};
use candle_unet2d::kernels::conv2d::{conv2d_bias, f4_applies, Conv2dParams, Conv2dWeight, ConvEpilogue, ConvKernel};
use candle_unet2d::kernels::isa::Isa;

/// As the CLI and the Python extension run (see `ReusingAllocator`): without it, every call's output
/// and padded input would be fresh pages, faulted in and zeroed.
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
    let dev = Device::Cpu;
    let runs: usize = std::env::var("CONV_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let cold = std::env::var("CONV_BENCH_COLD").is_ok_and(|v| v == "1");
    let shapes = [
        (1, 128, 128, 32, 3, 1),
        (1, 256, 256, 16, 3, 1),
        (1, 256, 256, 8, 3, 1),
        (1, 256, 256, 4, 3, 1),
        (4, 256, 256, 16, 3, 1),
        (1, 128, 128, 64, 3, 1),
        (1, 256, 256, 32, 3, 1),
        (8, 128, 128, 32, 3, 1),
        (8, 256, 256, 16, 3, 1),
        (8, 256, 256, 8, 3, 1),
        (8, 256, 256, 4, 3, 1),
        (8, 512, 256, 16, 1, 1),
        // The downsamplers (stride 2).
        (1, 128, 128, 32, 3, 2),
        (1, 256, 256, 16, 3, 2),
        (8, 128, 128, 32, 3, 2),
    ];
    let chosen: Option<Vec<usize>> = std::env::var("CONV_BENCH_SHAPE")
        .ok()
        .map(|v| v.split(',').map(|n| n.trim().parse().map_err(candle_core::Error::msg)).collect())
        .transpose()?;
    let shapes: Vec<_> = match chosen.as_deref() {
        Some(&[b, ci, co, h, k]) => vec![(b, ci, co, h, k, 1)],
        Some(&[b, ci, co, h, k, s]) => vec![(b, ci, co, h, k, s)],
        Some(other) => {
            candle_core::bail!("CONV_BENCH_SHAPE: expected batch,c_in,c_out,size,kernel[,stride], got {other:?}")
        }
        None => shapes.to_vec(),
    };
    for (b, ci, co, h, k, stride) in shapes {
        let x = Tensor::randn(0f32, 1.0, (b, ci, h, h), &dev)?;
        // Copies whose F(4×4) weights (4× the filters) together fill 64 MiB, twice a large L3.
        let copies = if cold { (64usize << 20).div_ceil(16 * co * ci * k * k).max(2) } else { 1 };
        let filters: Vec<Tensor> =
            (0..copies).map(|_| Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev)).collect::<candle_core::Result<_>>()?;
        let bias = Tensor::randn(0f32, 1.0, co, &dev)?;
        let params = Conv2dParams { kernel: k, stride, padding: k / 2 };
        let prepare = |kernel: Option<(ConvKernel, Isa)>| -> candle_core::Result<Vec<Conv2dWeight>> {
            filters
                .iter()
                .map(|w| match kernel {
                    None => Ok(Conv2dWeight::Loaded(w.clone())),
                    Some((kernel, isa)) => Conv2dWeight::with_kernel(w.clone(), kernel, isa),
                })
                .collect()
        };
        let mut variants = vec![("candle".to_string(), prepare(None)?)];
        for &isa in &levels {
            variants.push((format!("direct {isa}"), prepare(Some((ConvKernel::Direct, isa)))?));
            if k == 3 && stride == 1 {
                // Where F(4×4) does not apply (maps narrower than 16), a layer asking for it runs F(2×2):
                // no column for it, rather than a second F(2×2) timing under its name.
                let tiles = [
                    ("winograd F(2x2)", ConvKernel::WinogradF2),
                    ("winograd F(4x4)", ConvKernel::WinogradF4),
                    ("winograd (chosen per call)", ConvKernel::Winograd),
                ];
                for (name, kernel) in
                    tiles.into_iter().filter(|&(_, kernel)| kernel != ConvKernel::WinogradF4 || f4_applies(h, h))
                {
                    variants.push((format!("{name} {isa}"), prepare(Some((kernel, isa)))?));
                }
            }
        }
        let mut best = vec![f64::MAX; variants.len()];
        for _ in 0..runs {
            for (best, (_, weights)) in best.iter_mut().zip(&variants) {
                for weight in weights {
                    let t = std::time::Instant::now();
                    conv2d_bias(&x, weight, &bias, params, ConvEpilogue::default())?;
                    *best = best.min(t.elapsed().as_secs_f64());
                }
            }
        }
        let out_size = (h + 2 * (k / 2) - k) / stride + 1;
        let gflop = 2.0 * (b * co * ci * k * k * out_size * out_size) as f64 / 1e9;
        let cells: Vec<String> = variants
            .iter()
            .zip(&best)
            .map(|((name, _), t)| format!("{name} {:.3} ms ({:.0})", t * 1e3, gflop / t))
            .collect();
        println!("batch {b}, {ci}->{co}, {h}x{h}, {k}x{k} stride {stride}: {}", cells.join(", "));
    }
    Ok(())
}
