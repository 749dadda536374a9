//! Criterion benchmarks of the UNet forward and a full sampling run, on random weights built from the
//! architectures in `benches/configs/` (no checkpoint needed) and on the shipped digits16 model.
//!
//! `cargo bench --bench unet_forward` (all) or `cargo bench --bench unet_forward -- cifar10` (a subset).
//! Side by side with diffusers: `benches/compare_diffusers.py`.

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_unet2d::pipeline::{sample, SampleOptions, UNet2DPipeline};
use candle_unet2d::rng::Generator;
use candle_unet2d::schedulers::{Scheduler, SchedulerKind};
use candle_unet2d::{LoadOptions, UNet2DConfig, UNet2DModel};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn random_model(arch: &str) -> UNet2DModel {
    let path = root().join("benches").join("configs").join(format!("{arch}.json"));
    let config = UNet2DConfig::from_file(&path).expect("bench config");
    UNet2DModel::with_random_weights(config, &Device::Cpu, DType::F32, 0).expect("random model")
}

fn forward_case(c: &mut Criterion, arch: &str, batch: usize, samples: usize) {
    let model = random_model(arch);
    let (h, w) = model.config().sample_size.expect("sample_size").height_width();
    let gflop = candle_unet2d::stats::flops_per_sample(model.config(), h, w).unwrap() * batch as f64 / 1e9;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, h, w), &Device::Cpu).unwrap();
    let mut group = c.benchmark_group(format!("{arch}/forward"));
    group.sample_size(samples).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function(format!("batch{batch} ({gflop:.1} GFLOP)"), |b| {
        b.iter(|| model.forward(&x, 500i64, None).unwrap())
    });
    group.finish();
}

fn cifar10(c: &mut Criterion) {
    forward_case(c, "ddpm-cifar10-32", 1, 30);
    forward_case(c, "ddpm-cifar10-32", 8, 10);
}

fn celebahq(c: &mut Criterion) {
    forward_case(c, "ddpm-celebahq-256", 1, 10);
}

fn digits16_ddim50(c: &mut Criterion) {
    let pipe =
        UNet2DPipeline::from_pretrained(root().join("models").join("digits16"), &LoadOptions::default()).unwrap();
    let ddim = Scheduler::from_json_as(
        SchedulerKind::from_class_name("DDIMScheduler").unwrap(),
        &pipe.scheduler.config_json(),
    )
    .unwrap();
    let labels: Vec<i64> = (0..64).map(|i| i % 10).collect();
    let options = SampleOptions {
        batch_size: 64,
        num_inference_steps: 50,
        class_labels: Some(labels),
        ..SampleOptions::default()
    };
    let mut group = c.benchmark_group("digits16/sample");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.bench_function("ddim50 batch64", |b| {
        b.iter(|| {
            let mut scheduler = ddim.clone();
            let mut generator = Generator::from_seed(0);
            sample(&pipe.unet, &mut scheduler, &options, &mut generator, |_| std::ops::ControlFlow::Continue(()))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, cifar10, celebahq, digits16_ddim50);
criterion_main!(benches);
