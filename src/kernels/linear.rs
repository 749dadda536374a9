//! A linear layer on the CPU (float32) for the small products of the time-embedding path
//! (`[batch, 512] · [512, C]ᵀ` once per resnet).
//! - One row (batch 1, and every row inside [`crate::kernels::batch_invariant`]): a dot product per
//!   output on explicit vectors, the outputs split between rayon's threads. The product reads each
//!   weight once, so it runs at the speed the weights stream from memory (512 KiB per resnet, from
//!   DRAM: the model's weights do not fit the cache), and two cores stream faster than one:
//!   cifar10-32's 23 projections at batch 1 took 1.1 ms per forward single-threaded in `gemm`, and
//!   take 0.63 ms so (2-core Zen 3).
//! - More rows: one single-threaded `gemm` with the bias as the initial output. candle's matmul
//!   spreads even these over rayon's threads, whose hand-offs cost more than the arithmetic.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::isa::Isa;
use super::simd::{with_simd, Simd, LANES};
use super::{f32_inputs, on_cpu_f32};

/// Products below this many multiply-adds run on one thread.
const SINGLE_THREAD_MACS: usize = 1 << 22;
/// Outputs per task of the one-row product: at 512 inputs, 64 KiB of weights, far more than a
/// hand-off costs.
const OUTPUTS_PER_TASK: usize = 32;

struct LinearOp;

/// `x · weightᵀ + bias` for `x`: [rows, in], `weight`: [out, in], `bias`: [out]; `None` where the
/// fast path does not apply (not float32 on the CPU, or not 2-D), so the caller falls back.
pub fn linear_cpu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    if ![x, weight, bias].iter().all(|t| on_cpu_f32(t)) || x.rank() != 2 {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &LinearOp)?))
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [x, w, b] = f32_inputs([(s1, l1), (s2, l2), (s3, l3)], self.name())?;
        let (rows, cin) = l1.shape().dims2()?;
        let (cout, cin_w) = l2.shape().dims2()?;
        if cin_w != cin || b.len() != cout {
            candle_core::bail!("linear: weight {:?} / bias {} do not fit input {:?}", l2.dims(), b.len(), l1.dims());
        }
        // One row (or every row inside `batch_invariant`, so that an image rounds as in a batch of one):
        // the vector dot products, whose result does not depend on how the outputs are split.
        if crate::kernels::choice_batch(rows) == 1 {
            let isa = Isa::active();
            let mut out = vec![0f32; rows * cout];
            for r in 0..rows {
                let (x, row) = (&x[r * cin..(r + 1) * cin], &mut out[r * cout..(r + 1) * cout]);
                row.par_chunks_mut(OUTPUTS_PER_TASK).enumerate().for_each(|(task, outputs)| {
                    let first = task * OUTPUTS_PER_TASK;
                    let weights = &w[first * cin..(first + outputs.len()) * cin];
                    dot_products(isa, x, weights, &b[first..first + outputs.len()], outputs);
                });
            }
            return Ok((CpuStorage::F32(out), Shape::from((rows, cout))));
        }
        let mut out: Vec<f32> = (0..rows).flat_map(|_| b.iter().copied()).collect();
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), Shape::from((rows, cout))));
        }
        let parallelism = if rows * cin * cout <= SINGLE_THREAD_MACS {
            gemm::Parallelism::None
        } else {
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        };
        // SAFETY: `out` is [rows × cout] row-major; x is [rows × cin] row-major; weightᵀ is read as
        // [cin × cout] with row step 1 and column step cin; all in bounds by the checks above.
        unsafe {
            gemm::gemm(
                rows,
                cout,
                cin,
                out.as_mut_ptr(),
                1,
                cout as isize,
                true,
                x.as_ptr(),
                1,
                cin as isize,
                w.as_ptr(),
                cin as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, cout))))
    }
}

/// `out[o] = bias[o] + Σ_i weights[o · n + i] · x[i]` for `n = x.len()`, at level `isa`.
fn dot_products(isa: Isa, x: &[f32], weights: &[f32], bias: &[f32], out: &mut [f32]) {
    #[cfg(test)]
    crate::kernels::isa::LAST_DISPATCH.with(|last| last.set(Some(isa)));
    // SAFETY: the level is `Isa::active()`'s, which only returns levels the CPU supports.
    with_simd!(isa, S => unsafe {
        S::vectorize(
            #[inline(always)]
            || dot_products_at::<S>(x, weights, bias, out),
        )
    })
}

/// [`dot_products`] at level `S`: four vectors of partial sums per output (for the adder's
/// latency), summed in a fixed order, then the inputs past the last whole vector.
///
/// # Safety
/// Inside [`Simd::vectorize`] of a level the CPU supports.
#[inline(always)]
unsafe fn dot_products_at<S: Simd>(x: &[f32], weights: &[f32], bias: &[f32], out: &mut [f32]) {
    let n = x.len();
    let (quads, whole) = (n / (4 * LANES) * 4 * LANES, n / LANES * LANES);
    let x = x.as_ptr();
    for (o, (out, &bias)) in out.iter_mut().zip(bias).enumerate() {
        let row = weights[o * n..(o + 1) * n].as_ptr();
        let (mut a0, mut a1, mut a2, mut a3) = (S::zero(), S::zero(), S::zero(), S::zero());
        let mut i = 0;
        while i < quads {
            a0 = S::mul_add(S::load(row.add(i)), S::load(x.add(i)), a0);
            a1 = S::mul_add(S::load(row.add(i + LANES)), S::load(x.add(i + LANES)), a1);
            a2 = S::mul_add(S::load(row.add(i + 2 * LANES)), S::load(x.add(i + 2 * LANES)), a2);
            a3 = S::mul_add(S::load(row.add(i + 3 * LANES)), S::load(x.add(i + 3 * LANES)), a3);
            i += 4 * LANES;
        }
        while i < whole {
            a0 = S::mul_add(S::load(row.add(i)), S::load(x.add(i)), a0);
            i += LANES;
        }
        let mut lanes = [0f32; LANES];
        S::store(lanes.as_mut_ptr(), S::add(S::add(a0, a1), S::add(a2, a3)));
        let mut sum = 0f32;
        for lane in lanes {
            sum += lane;
        }
        while i < n {
            sum += *row.add(i) * *x.add(i);
            i += 1;
        }
        *out = bias + sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    /// Against candle's linear at every level this CPU runs: one row (the vector dot products, with
    /// and without a tail past the last whole vector), several rows (`gemm`), and several rows inside
    /// `batch_invariant` (the dot products again, each row as in a batch of one).
    #[test]
    fn matches_candle_linear() {
        let dev = Device::Cpu;
        crate::kernels::isa::for_each_level(|isa| {
            for (rows, cin, cout) in
                [(1, 512, 256), (1, 517, 70), (1, 7, 3), (2, 0, 4), (8, 7, 5), (3, 1, 1), (64, 128, 512), (4, 0, 3)]
            {
                let x = Tensor::randn(0f32, 1.0, (rows, cin), &dev).unwrap();
                let w = Tensor::randn(0f32, 1.0, (cout, cin), &dev).unwrap();
                let b = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
                let reference = candle_nn::Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
                let diff = |ours: Tensor| {
                    (ours - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
                };
                let ours = linear_cpu(&x, &w, &b).unwrap().unwrap();
                assert!(diff(ours) < 1e-4, "{isa}: {rows} {cin} {cout}");
                let invariant = crate::kernels::batch_invariant(|| linear_cpu(&x, &w, &b).unwrap().unwrap());
                assert!(diff(invariant.clone()) < 1e-4, "{isa}: {rows} {cin} {cout} batch-invariant");
                // Each row exactly as alone.
                for r in 0..rows {
                    let alone = linear_cpu(&x.narrow(0, r, 1).unwrap(), &w, &b).unwrap().unwrap();
                    assert_eq!(
                        invariant.get(r).unwrap().to_vec1::<f32>().unwrap(),
                        alone.get(0).unwrap().to_vec1::<f32>().unwrap(),
                        "{isa}: row {r} of {rows} {cin} {cout}"
                    );
                }
            }
            let none = Tensor::zeros((0, 5), candle_core::DType::F32, &dev).unwrap();
            let (w, b) = (
                Tensor::ones((3, 5), candle_core::DType::F32, &dev).unwrap(),
                Tensor::ones(3, candle_core::DType::F32, &dev).unwrap(),
            );
            assert_eq!(linear_cpu(&none, &w, &b).unwrap().unwrap().dims(), [0, 3]);
            // The last product ran the dot products (one row); `for_each_level` asserts their level.
            let x = Tensor::randn(0f32, 1.0, (1, 64), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (40, 64), &dev).unwrap();
            linear_cpu(&x, &w, &Tensor::zeros(40, candle_core::DType::F32, &dev).unwrap()).unwrap();
        });
    }
}
