//! An image's result does not depend on what it is batched with (inside
//! `candle_unet2d::batch_invariant`, as the per-image sampling, the HTTP service and the Ray workers run)
//! nor on the number of threads: bit for bit, on every diffusers fixture, at the CPU's best ISA level
//! (`scripts/test.sh` reruns the suite one level down).

mod common;

use candle_core::{DType, Device, Tensor};
use candle_unet2d::candle_core;
use candle_unet2d::{LoadOptions, Timestep, UNet2DModel};

/// Images of the batch besides the fixture's own: enough that every kernel choice by tile count
/// would change (the direct kernel, F(2×2), F(4×4)).
const EXTRA_IMAGES: usize = 7;

struct Case {
    model: UNet2DModel,
    sample: Tensor,
    timestep: Tensor,
    labels: Option<Tensor>,
    /// Whether the timestep has one value per image (else one for all).
    per_image_timestep: bool,
}

fn load(dir: &std::path::Path) -> Case {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let variant = (case["weights_format"] == "fp16").then(|| "fp16".to_string());
    let model = UNet2DModel::from_pretrained(dir, &LoadOptions { variant, ..LoadOptions::default() }).unwrap();
    let sample = expected["sample"].clone();
    let (b, c, h, w) = sample.dims4().unwrap();
    // The fixture's images, then others drawn around them, labels and timesteps cycled to match.
    let extra = Tensor::randn(0f32, 1.0, (EXTRA_IMAGES, c, h, w), &Device::Cpu).unwrap();
    let sample = Tensor::cat(&[&sample, &extra], 0).unwrap();
    let total = b + EXTRA_IMAGES;
    let cycle = |t: &Tensor| {
        let idx: Vec<u32> = (0..total).map(|i| (i % b) as u32).collect();
        t.index_select(&Tensor::new(idx.as_slice(), &Device::Cpu).unwrap(), 0).unwrap()
    };
    let timestep = expected["timestep"].clone();
    let per_image_timestep = timestep.rank() == 1 && timestep.dim(0).unwrap() == b && b > 1;
    let timestep = if per_image_timestep { cycle(&timestep) } else { timestep };
    let labels = expected.get("class_labels").map(cycle);
    Case { model, sample, timestep, labels, per_image_timestep }
}

impl Case {
    fn images(&self) -> usize {
        self.sample.dim(0).unwrap()
    }

    /// The forward of images `first..first + n`.
    fn forward(&self, first: usize, n: usize) -> Tensor {
        let sample = self.sample.narrow(0, first, n).unwrap();
        let timestep =
            if self.per_image_timestep { self.timestep.narrow(0, first, n).unwrap() } else { self.timestep.clone() };
        let labels = self.labels.as_ref().map(|l| l.narrow(0, first, n).unwrap());
        self.model.forward(&sample, Timestep::Tensor(&timestep), labels.as_ref()).unwrap()
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn every_image_of_a_batch_is_its_batch_of_one() {
    let cases = common::cases("unet2d");
    assert!(cases.len() >= 17, "expected the 17 fixture cases, found {}", cases.len());
    for dir in cases {
        let case = load(&dir);
        let batched = candle_unet2d::batch_invariant(|| case.forward(0, case.images()));
        for i in 0..case.images() {
            let alone = case.forward(i, 1);
            assert!(
                bits(&batched.narrow(0, i, 1).unwrap()) == bits(&alone),
                "{}: image {i} of a batch of {} differs from its batch of one",
                dir.display(),
                case.images()
            );
        }
    }
}

#[test]
fn the_thread_count_does_not_change_a_result() {
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    for dir in common::cases("unet2d") {
        let case = load(&dir);
        let one = pool(1).install(|| case.forward(0, case.images()));
        let three = pool(3).install(|| case.forward(0, case.images()));
        assert!(bits(&one) == bits(&three), "{}: 1 and 3 threads differ", dir.display());
    }
}
