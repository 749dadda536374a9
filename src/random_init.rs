//! A freshly initialised model, from a config alone, as `UNet2DModel(**config)` is in diffusers: every
//! layer initialised the way torch's constructors initialise it (diffusers overrides none of them in
//! `UNet2DModel`):
//!
//! - `nn.Conv2d` and `nn.Linear` weights: `kaiming_uniform_(a=√5)`, i.e. `U(−1/√fan_in, 1/√fan_in)`
//!   with `fan_in = in_channels · kernel_h · kernel_w` (or `in_features`); their biases
//!   `U(−1/√fan_in, 1/√fan_in)` with the weight's `fan_in`;
//! - `nn.GroupNorm`: weight 1, bias 0;
//! - `nn.Embedding` (the class table, the learned time embedding): `N(0, 1)`;
//! - `GaussianFourierProjection` (`time_embedding_type="fourier"`): `randn · 16`, the scale
//!   `UNet2DModel` gives it.
//!
//! The distributions are torch's; the values are not (torch draws every tensor in turn from one global
//! stream). Here each tensor draws from its own [`Generator`], seeded from the model's seed and the
//! tensor's name: the blocks are built in parallel, so one shared generator would hand out its numbers
//! in whatever order the threads asked, and the same seed could give different models. Per-name seeds
//! also let [`InitPlan::tensor`] regenerate any one tensor on its own, which is how such a model is
//! saved (see [`crate::saving`]) without keeping a copy of its weights.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::config::{ClassEmbeddingKind, TimeEmbeddingKind, UNet2DConfig};
use crate::error::Result;
use crate::rng::Generator;
use crate::saving::WeightOrigin;
use crate::unet::UNet2DModel;

/// The scale `UNet2DModel` gives its `GaussianFourierProjection` (`scale=16`).
const FOURIER_SCALE: f64 = 16.0;

/// How torch's constructor initialises one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TensorInit {
    /// `U(−bound, bound)`: convolution and linear weights and biases, `bound = 1/√fan_in`.
    Uniform { bound: f64 },
    /// `N(0, std²)`: embedding tables (`std = 1`), the Fourier projection (`std = 16`).
    Normal { std: f64 },
    /// All ones: group norm weights.
    Ones,
    /// All zeros: group norm biases.
    Zeros,
}

/// Options of [`UNet2DModel::from_config`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The seed every tensor's generator is derived from: one seed, one model.
    pub seed: u64,
    /// Where the model computes.
    pub device: Device,
    /// The dtype the model computes in (the weights are drawn in float32, then converted).
    pub dtype: DType,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self { seed: 0, device: Device::Cpu, dtype: DType::F32 }
    }
}

/// The initialisation of every tensor of a model, and the seed: enough to regenerate any tensor.
#[derive(Debug, Clone)]
pub struct InitPlan {
    seed: u64,
    inits: HashMap<String, TensorInit>,
}

impl InitPlan {
    /// The plan for the model `config` describes (fails if the config is invalid).
    pub fn new(config: &UNet2DConfig, seed: u64) -> Result<Self> {
        let spec = config.validate()?;
        let shapes: HashMap<String, Vec<usize>> = crate::stats::parameter_shapes(config)?.into_iter().collect();
        let fan_in = |weight: &[usize]| weight.iter().skip(1).product::<usize>();
        let bound = |fan: usize| if fan > 0 { 1.0 / (fan as f64).sqrt() } else { 0.0 };
        let mut inits = HashMap::with_capacity(shapes.len());
        for (name, shape) in &shapes {
            let init = match name.as_str() {
                "time_proj.weight" if spec.time_embedding == TimeEmbeddingKind::Fourier => {
                    TensorInit::Normal { std: FOURIER_SCALE }
                }
                "time_proj.weight" if spec.time_embedding == TimeEmbeddingKind::Learned => {
                    TensorInit::Normal { std: 1.0 }
                }
                "class_embedding.weight" if matches!(spec.class_embedding, Some(ClassEmbeddingKind::Table(_))) => {
                    TensorInit::Normal { std: 1.0 }
                }
                // Convolutions and linear layers are the only weights of rank 2 or more.
                _ if name.ends_with(".weight") && shape.len() >= 2 => {
                    TensorInit::Uniform { bound: bound(fan_in(shape)) }
                }
                _ if name.ends_with(".bias") => {
                    let weight = format!("{}.weight", &name[..name.len() - ".bias".len()]);
                    match shapes.get(&weight) {
                        Some(w) if w.len() >= 2 => TensorInit::Uniform { bound: bound(fan_in(w)) },
                        _ => TensorInit::Zeros,
                    }
                }
                // What is left are the group norms' scales.
                _ => TensorInit::Ones,
            };
            inits.insert(name.clone(), init);
        }
        Ok(Self { seed, inits })
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How tensor `name` is initialised (`None` for a name the model does not have).
    pub fn init_of(&self, name: &str) -> Option<TensorInit> {
        self.inits.get(name).copied()
    }

    /// Tensor `name`: the same values whenever it is asked for. Drawn in float32 on the CPU, then
    /// converted and moved, so a model on any device has the values a CPU regeneration gives.
    pub fn tensor(&self, name: &str, shape: &[usize], dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let cpu = &Device::Cpu;
        let Some(init) = self.init_of(name) else { candle_core::bail!("the model has no tensor `{name}`") };
        let n: usize = shape.iter().product();
        let generator = || Generator::from_seed(tensor_seed(self.seed, name));
        let t = match init {
            TensorInit::Ones => Tensor::ones(shape, DType::F32, cpu)?,
            TensorInit::Zeros => Tensor::zeros(shape, DType::F32, cpu)?,
            TensorInit::Normal { std } => (generator().randn_tensor(shape, cpu)? * std)?,
            TensorInit::Uniform { bound } => {
                // As `uniform_(-bound, bound)`: the bounds are rounded to float32 first.
                let values = generator().uniform(n, -bound as f32, bound as f32);
                if values.len() != n {
                    candle_core::bail!("cannot allocate tensor `{name}` of shape {shape:?}");
                }
                Tensor::from_vec(values, shape, cpu)?
            }
        };
        t.to_dtype(dtype)?.to_device(dev)
    }
}

/// Serves every tensor from an [`InitPlan`].
struct InitBackend {
    plan: Arc<InitPlan>,
}

impl SimpleBackend for InitBackend {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.plan.tensor(name, s.dims(), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for `{name}`")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.plan.inits.contains_key(name)
    }
}

/// The seed of tensor `name`'s generator: FNV-1a over the name, mixed with the model's seed by
/// SplitMix64's finaliser.
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

impl UNet2DModel {
    /// The model `config` describes, freshly initialised as diffusers' `UNet2DModel(**config)` is
    /// (torch's default layer initialisation; see [`crate::random_init`]), with weights drawn from
    /// `options.seed`. Such a model saves like any other (each tensor is regenerated from the seed).
    pub fn from_config(config: UNet2DConfig, options: &InitOptions) -> Result<Self> {
        crate::loading::check_device_dtype(&options.device, options.dtype)?;
        let plan = Arc::new(InitPlan::new(&config, options.seed)?);
        let backend = InitBackend { plan: plan.clone() };
        let vb = VarBuilder::from_backend(Box::new(backend), options.dtype, options.device.clone());
        let mut model = UNet2DModel::new(config, vb)?;
        model.set_origin(WeightOrigin::Random { plan }, None);
        Ok(model)
    }

    /// [`UNet2DModel::from_config`] with the seed, device and dtype as arguments.
    pub fn with_random_weights(config: UNet2DConfig, device: &Device, dtype: DType, seed: u64) -> Result<Self> {
        Self::from_config(config, &InitOptions { seed, device: device.clone(), dtype })
    }
}
