//! One model, many threads: `UNet2DModel` is immutable after loading (`Send + Sync`), so one
//! `Arc<UNet2DModel>` can serve any number of threads at once. 8 threads × 20 forwards each, every
//! input different, all started together: each result must be bit-identical to the same call made
//! serially, and nothing may panic or deadlock.
//!
//! Run: `cargo test --release --test threads`.

mod common;

use std::sync::{Arc, Barrier};

use candle_core::{Device, Tensor};
use candle_unet2d::{LoadOptions, UNet2DModel};

const THREADS: usize = 8;
const FORWARDS: usize = 20;

/// Call `i`: a sample, a timestep and class labels of its own, so that cross-talk between threads
/// would show.
fn call(i: usize) -> (Tensor, i64, Tensor) {
    let batch = 1 + i % 2;
    let values: Vec<f32> = (0..batch * 3 * 16 * 16).map(|k| (((k * 7 + i * 13) % 31) as f32 - 15.0) / 8.0).collect();
    let sample = Tensor::from_vec(values, (batch, 3, 16, 16), &Device::Cpu).unwrap();
    let labels: Vec<i64> = (0..batch).map(|b| ((i + b) % 10) as i64).collect();
    (sample, (i * 37 % 1000) as i64, Tensor::new(labels, &Device::Cpu).unwrap())
}

fn run(model: &UNet2DModel, i: usize) -> Vec<f32> {
    let (sample, t, labels) = call(i);
    model.forward(&sample, t, Some(&labels)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn eight_threads_share_one_model_and_match_serial() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<UNet2DModel>();
    // Class-conditional (num_class_embeds), ResnetDownsample/Attn blocks, scale_shift, 3 levels.
    let dir = common::fixture("unet2d/consistency_like");
    let model = Arc::new(UNet2DModel::from_pretrained(&dir, &LoadOptions::default()).unwrap());
    let serial: Vec<Vec<f32>> = (0..THREADS * FORWARDS).map(|i| run(&model, i)).collect();

    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (model, barrier) = (Arc::clone(&model), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                // Interleave: thread k runs calls k, k + 8, k + 16, …
                (0..FORWARDS).map(|j| (thread + j * THREADS, run(&model, thread + j * THREADS))).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut checked = 0;
    for handle in handles {
        for (i, out) in handle.join().expect("a worker thread panicked") {
            assert_eq!(out.len(), serial[i].len(), "call {i}: output size");
            let same = out.iter().zip(&serial[i]).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "call {i}: the threaded result differs from the serial one");
            checked += 1;
        }
    }
    assert_eq!(checked, THREADS * FORWARDS);
    assert_eq!(Arc::strong_count(&model), 1, "every thread released the model");
}

#[test]
fn errors_on_some_threads_do_not_disturb_the_others() {
    let dir = common::fixture("unet2d/consistency_like");
    let model = Arc::new(UNet2DModel::from_pretrained(&dir, &LoadOptions::default()).unwrap());
    let expected = run(&model, 3);
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                for _ in 0..FORWARDS / 2 {
                    if thread % 2 == 0 {
                        // A bad call: labels missing. Must be an error every time, never a panic.
                        let (sample, t, _) = call(3);
                        let err = model.forward(&sample, t, None).unwrap_err().to_string();
                        assert!(err.contains("class_labels"), "{err}");
                    } else {
                        assert_eq!(run(&model, 3), run(&model, 3));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a worker thread panicked");
    }
    assert_eq!(run(&model, 3), expected);
}
