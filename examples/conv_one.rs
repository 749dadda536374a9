use candle_core::{Device, Tensor};
use candle_unet2d::kernels::conv2d::{conv2d_bias, Conv2dParams, Conv2dWeight, ConvEpilogue};
fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (b, ci, co, h) = (a[0], a[1], a[2], a[3]);
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (b, ci, h, h), &dev).unwrap();
    let w = Conv2dWeight::new(Tensor::randn(0f32, 1.0, (co, ci, 3, 3), &dev).unwrap()).unwrap();
    let bias = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
    let p = Conv2dParams { kernel: 3, stride: 1, padding: 1 };
    let mut best = f64::MAX;
    for _ in 0..200 {
        let t = std::time::Instant::now();
        conv2d_bias(&x, &w, &bias, p, ConvEpilogue::default()).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{:.3} ms {:.0} GF/s", best * 1e3, 2.0 * (b * co * ci * 9 * h * h) as f64 / best / 1e9);
}
