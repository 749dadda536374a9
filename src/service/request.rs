//! What a client asks for and what it gets back.

use std::time::Duration;

/// The class labels of a request's images.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClassLabels {
    /// None for an unconditional model; for a class-conditional one, image `i` gets class
    /// `i % classes` (what `unet2d sample` does without `--class`).
    #[default]
    Default,
    /// Every image gets this class.
    All(i64),
    /// One class per image.
    PerImage(Vec<i64>),
}

/// One request: `num_images` images, image `i` drawn with the generator seeded `seed + i`, so that it
/// equals a batch-of-one run with that seed and label, whatever it is batched with.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    pub num_images: usize,
    pub seed: u64,
    pub class_labels: ClassLabels,
    /// A scheduler's short name (`ddim`, `dpmpp`, …, as `unet2d sample --scheduler`), converted from
    /// the model's scheduler config; `None`: the model's own scheduler and pipeline.
    pub scheduler: Option<String>,
    /// Denoising steps; `None`: the pipeline's default (DDPMPipeline's 1000, …).
    pub num_inference_steps: Option<usize>,
    /// η of the schedulers that take it (DDIM's).
    pub eta: Option<f64>,
    /// Deadline from submission; `None`: the service's `request_timeout`.
    pub timeout: Option<Duration>,
}

impl Default for ImageRequest {
    fn default() -> Self {
        Self {
            num_images: 1,
            seed: 0,
            class_labels: ClassLabels::Default,
            scheduler: None,
            num_inference_steps: None,
            eta: None,
            timeout: None,
        }
    }
}

/// One generated image.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedImage {
    /// Its place in the request, from 0.
    pub index: usize,
    /// The seed of its generator: the request's seed + `index`.
    pub seed: u64,
    pub class_label: Option<i64>,
    pub height: usize,
    pub width: usize,
    /// 1 (grayscale) or 3 (RGB) for image models.
    pub channels: usize,
    /// diffusers' `output_type="np"` for this image: float32 HWC in `[0, 1]`.
    pub pixels: Vec<f32>,
    /// The same quantised as diffusers' `numpy_to_pil` does (`round(x · 255)`), HWC.
    pub bytes: Vec<u8>,
}
