//! Times the convolution kernels alone on the UNet's layer shapes: the packed AVX-512 kernel against
//! the portable im2col + `gemm` path, best of 20 alternating runs, with GFLOP/s.
//!
//! `cargo run --release --example conv_bench` (`RAYON_NUM_THREADS=1` for one core).
use candle_core::{Device, Tensor};
use candle_unet2d::kernels::conv2d::{conv2d_bias, Conv2dParams, Conv2dWeight, ConvEpilogue};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let shapes =
        [(1, 128, 128, 32, 3), (1, 256, 256, 16, 3), (1, 256, 256, 8, 3), (1, 256, 256, 4, 3), (8, 128, 128, 32, 3)];
    let shapes = shapes.into_iter().chain([
        (8, 256, 256, 16, 3),
        (8, 256, 256, 8, 3),
        (8, 256, 256, 4, 3),
        (8, 512, 256, 16, 1),
    ]);
    for (b, ci, co, h, k) in shapes {
        let x = Tensor::randn(0f32, 1.0, (b, ci, h, h), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, co, &dev)?;
        let params = Conv2dParams { kernel: k, stride: 1, padding: k / 2 };
        let packed = Conv2dWeight::new(w.clone())?;
        let winograd = Conv2dWeight::for_params(w.clone(), params)?;
        let portable = Conv2dWeight::Loaded(w);
        let mut best = [f64::MAX; 3];
        for _ in 0..20 {
            for (i, weight) in [&packed, &portable, &winograd].into_iter().enumerate() {
                let t = std::time::Instant::now();
                conv2d_bias(&x, weight, &bias, params, ConvEpilogue::default())?;
                best[i] = best[i].min(t.elapsed().as_secs_f64());
            }
        }
        let gflop = 2.0 * (b * co * ci * k * k * h * h) as f64 / 1e9;
        let [ours, theirs, wino] = best;
        println!(
            "batch {b}, {ci}->{co}, {h}x{h}, {k}x{k}: packed {:.3} ms ({:.0} GFLOP/s), portable {:.3} ms ({:.0} GFLOP/s), winograd {:.3} ms ({:.0})",
            ours * 1e3,
            gflop / ours,
            theirs * 1e3,
            gflop / theirs,
            wino * 1e3,
            gflop / wino
        );
    }
    Ok(())
}
