//! A model with random weights, from a config alone: for benchmarks and tests that need the right
//! architecture but no checkpoint. Weights are drawn from the torch-compatible [`Generator`], so a seed
//! gives the same model every time.
//!
//! Each tensor draws from its own generator, seeded from the model's seed and the tensor's name: the
//! blocks are built in parallel, so one shared generator would hand out its numbers in whatever order
//! the threads asked, and the same seed could give different models. Per-name seeds also let
//! [`random_tensor`] regenerate any one tensor on its own, which is how a random model is saved
//! (see [`crate::saving`]).

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::config::UNet2DConfig;
use crate::error::Result;
use crate::rng::Generator;
use crate::saving::WeightOrigin;
use crate::unet::UNet2DModel;

/// Norm scales 1, biases 0, everything else N(0, 1/fan_in): activations keep their scale through the net.
struct RandomBackend {
    seed: u64,
}

impl SimpleBackend for RandomBackend {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        random_tensor(self.seed, name, s.dims(), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for `{name}`")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The seed of tensor `name`'s generator: FNV-1a over the name, mixed with the model's seed by
/// SplitMix64's finaliser (fixed, so a seed means the same model in every version of this crate).
fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = seed ^ h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Tensor `name` of a random model seeded with `seed`: the same values whenever it is asked for.
/// Computed on the CPU and then moved, so a model on any device has the values a CPU regeneration gives.
pub fn random_tensor(
    seed: u64,
    name: &str,
    shape: &[usize],
    dtype: DType,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let cpu = &Device::Cpu;
    let is_norm = name.split('.').any(|p| p.contains("norm"));
    let t = if name.ends_with(".bias") {
        Tensor::zeros(shape, DType::F32, cpu)?
    } else if is_norm {
        Tensor::ones(shape, DType::F32, cpu)?
    } else {
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let mut generator = Generator::from_seed(tensor_seed(seed, name));
        (generator.randn_tensor(shape, cpu)? / (fan_in as f64).sqrt())?
    };
    t.to_dtype(dtype)?.to_device(dev)
}

impl UNet2DModel {
    /// Builds the model `config` describes with random weights drawn from `seed`.
    pub fn with_random_weights(config: UNet2DConfig, device: &Device, dtype: DType, seed: u64) -> Result<Self> {
        let backend = RandomBackend { seed };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let mut model = UNet2DModel::new(config, vb)?;
        model.set_origin(WeightOrigin::Random { seed }, None);
        Ok(model)
    }
}
