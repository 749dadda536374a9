//! A model with random weights, from a config alone: for benchmarks and tests that need the right
//! architecture but no checkpoint. Weights are drawn from the torch-compatible [`Generator`], so a seed
//! gives the same model every time.

use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::config::UNet2DConfig;
use crate::error::Result;
use crate::rng::Generator;
use crate::unet::UNet2DModel;

/// Norm scales 1, biases 0, everything else N(0, 1/fan_in): activations keep their scale through the net.
struct RandomBackend {
    generator: Mutex<Generator>,
}

impl SimpleBackend for RandomBackend {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let is_norm = name.split('.').any(|p| p.contains("norm"));
        let t = if name.ends_with(".bias") {
            Tensor::zeros(&s, DType::F32, dev)?
        } else if is_norm {
            Tensor::ones(&s, DType::F32, dev)?
        } else {
            let fan_in: usize = s.dims().iter().skip(1).product::<usize>().max(1);
            let mut generator = self.generator.lock().map_err(|_| candle_core::Error::Msg("rng poisoned".into()))?;
            (generator.randn_tensor(s.dims(), dev)? / (fan_in as f64).sqrt())?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for `{name}`")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

impl UNet2DModel {
    /// Builds the model `config` describes with random weights drawn from `seed`.
    pub fn with_random_weights(config: UNet2DConfig, device: &Device, dtype: DType, seed: u64) -> Result<Self> {
        let backend = RandomBackend { generator: Mutex::new(Generator::from_seed(seed)) };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        UNet2DModel::new(config, vb)
    }
}
