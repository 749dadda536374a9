//! A linear layer on the CPU (float32) for the small products of the time-embedding path
//! (`[batch, 512] · [512, C]ᵀ` once per resnet): one single-threaded `gemm` with the bias as the
//! initial output. candle's matmul spreads even these over rayon's threads, whose hand-offs cost more
//! than the arithmetic.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::{f32_inputs, on_cpu_f32};

/// Products below this many multiply-adds run on one thread.
const SINGLE_THREAD_MACS: usize = 1 << 22;

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
        let mut out: Vec<f32> = (0..rows).flat_map(|_| b.iter().copied()).collect();
        // gemm's kernels for four or more rows round differently from its one-row kernel: inside
        // `batch_invariant` each row is its own product, as in a batch of one.
        let rows_per_call = if crate::kernels::choice_batch(rows) == 1 { 1 } else { rows };
        let calls = if rows == 0 || cout == 0 { 0 } else { rows.div_ceil(rows_per_call) };
        for call in 0..calls {
            let first = call * rows_per_call;
            let m = rows_per_call.min(rows - first);
            let chunk = &mut out[first * cout..(first + m) * cout];
            let parallelism = if m * cin * cout <= SINGLE_THREAD_MACS {
                gemm::Parallelism::None
            } else {
                gemm::Parallelism::Rayon(rayon::current_num_threads())
            };
            // SAFETY: `chunk` is rows first..first+m of out, [m × cout] row-major; x from row `first` is
            // [m × cin] row-major; weightᵀ is read as [cin × cout] with row step 1 and column step cin;
            // all in bounds by the checks above.
            unsafe {
                gemm::gemm(
                    m,
                    cout,
                    cin,
                    chunk.as_mut_ptr(),
                    1,
                    cout as isize,
                    true,
                    x.as_ptr().add(first * cin),
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
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, cout))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    #[test]
    fn matches_candle_linear() {
        let dev = Device::Cpu;
        for (rows, cin, cout) in [(1, 512, 256), (8, 7, 5), (3, 1, 1), (64, 128, 512)] {
            let x = Tensor::randn(0f32, 1.0, (rows, cin), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (cout, cin), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
            let ours = linear_cpu(&x, &w, &b).unwrap().unwrap();
            let reference = candle_nn::Linear::new(w, Some(b)).forward(&x).unwrap();
            let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{rows} {cin} {cout}: {diff}");
        }
    }
}
