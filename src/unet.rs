//! `UNet2DModel`: construction from a config and weights, and the forward pass, step for step as in
//! diffusers' `models/unets/unet_2d.py`.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::loading::WeightSource;
use rayon::prelude::*;

use crate::blocks::{BlockSettings, DownBlock, MidBlock, UpBlock};
use crate::config::{ClassEmbeddingKind, DownBlockKind, ModelSpec, TimeEmbeddingKind, UNet2DConfig, UpBlockKind};
use crate::embeddings::{ClassEmbedding, TimeProjection, TimestepEmbedding};
use crate::error::{Error, Result};
use crate::forward_memory;
use crate::kernels::conv2d::ConvEpilogue;
use crate::layers::{conv2d, Conv2d, GroupNorm};
use crate::memory_budget;
use crate::profile;
use crate::saving::{LoadedConfig, Provenance, WeightOrigin};
use std::sync::Arc;

/// Largest attention score matrix a forward may build (16 GiB): past it, a request is refused up front
/// instead of aborting the process when the allocation fails.
const MAX_ATTENTION_SCORE_BYTES: u128 = 16 << 30;

/// The timestep(s) of a forward call, as diffusers accepts them.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Timestep<'a> {
    /// One integer timestep for the whole batch.
    Int(i64),
    /// One float timestep for the whole batch, used as given. (diffusers turns a *Python* float into an
    /// integer tensor, truncating it; the Python binding does the same, this Rust API does not.)
    Float(f64),
    /// A 0-d, `[1]` or `[B]` tensor of any numeric dtype.
    Tensor(&'a Tensor),
}

impl From<i64> for Timestep<'_> {
    fn from(t: i64) -> Self {
        Timestep::Int(t)
    }
}

impl From<f64> for Timestep<'_> {
    fn from(t: f64) -> Self {
        Timestep::Float(t)
    }
}

impl<'a> From<&'a Tensor> for Timestep<'a> {
    fn from(t: &'a Tensor) -> Self {
        Timestep::Tensor(t)
    }
}

/// diffusers' `UNet2DModel`. Immutable after loading, so it is `Send + Sync` and one instance can serve
/// many threads.
#[derive(Debug, Clone)]
pub struct UNet2DModel {
    config: UNet2DConfig,
    spec: ModelSpec,
    device: Device,
    dtype: DType,
    conv_in: Conv2d,
    time_proj: TimeProjection,
    time_embedding: TimestepEmbedding,
    class_embedding: Option<ClassEmbedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// Where the weights came from, for `state_dict` and `save_pretrained` (see [`crate::saving`]).
    provenance: Arc<Provenance>,
}

impl UNet2DModel {
    /// Builds the model from a config and a `VarBuilder` that holds diffusers' weight names. The model
    /// computes in the `VarBuilder`'s dtype and on its device.
    pub fn new(config: UNet2DConfig, vb: VarBuilder) -> Result<Self> {
        Self::from_source(config, vb.into())
    }

    /// [`UNet2DModel::new`] from a [`WeightSource`] (which `from_pretrained` builds over its store).
    pub(crate) fn from_source(config: UNet2DConfig, vb: WeightSource) -> Result<Self> {
        let spec = config.validate()?;
        Ok(Self::build(config, spec, vb)?)
    }

    fn build(config: UNet2DConfig, spec: ModelSpec, vb: WeightSource) -> candle_core::Result<Self> {
        let ch = &config.block_out_channels;
        let levels = ch.len();
        let temb = spec.time_embed_dim;

        // time
        let (time_proj, timestep_input_dim) = match spec.time_embedding {
            TimeEmbeddingKind::Positional => {
                (TimeProjection::positional(ch[0], config.flip_sin_to_cos, config.freq_shift), ch[0])
            }
            TimeEmbeddingKind::Fourier => (TimeProjection::fourier(ch[0], vb.pp("time_proj"))?, 2 * ch[0]),
            TimeEmbeddingKind::Learned => {
                let rows = config.num_train_timesteps.unwrap_or_default();
                (TimeProjection::learned(rows, ch[0], vb.pp("time_proj"))?, ch[0])
            }
        };
        let time_embedding = TimestepEmbedding::new(timestep_input_dim, temb, vb.pp("time_embedding"))?;
        let class_embedding = match spec.class_embedding {
            None => None,
            Some(ClassEmbeddingKind::Table(rows)) => Some(ClassEmbedding::table(rows, temb, vb.pp("class_embedding"))?),
            Some(ClassEmbeddingKind::Timestep) => Some(ClassEmbedding::Timestep(TimestepEmbedding::new(
                timestep_input_dim,
                temb,
                vb.pp("class_embedding"),
            )?)),
            Some(ClassEmbeddingKind::Identity) => Some(ClassEmbedding::Identity { dim: temb }),
        };

        let settings = BlockSettings {
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            act: spec.act,
            time_scale_shift: spec.time_scale_shift,
            head_dim: config.attention_head_dim,
            temb_channels: temb,
            downsample_padding: config.downsample_padding,
            downsample_type: spec.downsample_type,
            upsample_type: spec.upsample_type,
        };

        // The blocks are built in parallel: each one's loading (candle's copy out of the memory map)
        // is single-threaded, and overlaps with the others' weight preparation this way.
        let down = || -> candle_core::Result<Vec<DownBlock>> {
            let mut input_channels = vec![ch[0]];
            input_channels.extend(&ch[..levels - 1]);
            let build = |(i, &kind): (usize, &DownBlockKind)| {
                let is_final = i == levels - 1;
                let vb_i = vb.pp("down_blocks").pp(i);
                DownBlock::new(kind, input_channels[i], ch[i], config.layers_per_block, !is_final, &settings, vb_i)
            };
            spec.down_blocks.par_iter().enumerate().map(build).collect::<Vec<_>>().into_iter().collect()
        };
        let mid = || -> candle_core::Result<Option<MidBlock>> {
            if !spec.has_mid_block {
                return Ok(None);
            }
            Ok(Some(MidBlock::new(
                ch[levels - 1],
                config.add_attention,
                config.attn_norm_num_groups,
                config.mid_block_scale_factor,
                &settings,
                vb.pp("mid_block"),
            )?))
        };
        let up = || -> candle_core::Result<Vec<UpBlock>> {
            let reversed: Vec<usize> = ch.iter().rev().copied().collect();
            let build = |(i, &kind): (usize, &UpBlockKind)| {
                let prev_output_channel = if i == 0 { reversed[0] } else { reversed[i - 1] };
                let input_channel = reversed[(i + 1).min(levels - 1)];
                let is_final = i == levels - 1;
                UpBlock::new(
                    kind,
                    input_channel,
                    prev_output_channel,
                    reversed[i],
                    config.layers_per_block + 1,
                    !is_final,
                    &settings,
                    vb.pp("up_blocks").pp(i),
                )
            };
            spec.up_blocks.par_iter().enumerate().map(build).collect::<Vec<_>>().into_iter().collect()
        };
        // Each list collects every block's result in order, so an error is the first block's in
        // model order, as a sequential build would report it.
        let (down_blocks, (mid_block, up_blocks)) = rayon::join(down, || rayon::join(mid, up));
        let (down_blocks, mid_block, up_blocks) = (down_blocks?, mid_block?, up_blocks?);

        // out
        let groups_out = config.norm_num_groups.unwrap_or((ch[0] / 4).min(32));
        if vb.device().is_cpu() {
            // After the weights are allocated: their buffers are built once (mapped blocks, zeroed by
            // the kernel as they are written), and the forwards' activations are what is reused.
            crate::memory::reuse_large_allocations();
        }
        Ok(Self {
            conv_in: conv2d(config.in_channels, ch[0], 3, 1, 1, vb.pp("conv_in"))?,
            conv_norm_out: GroupNorm::new(groups_out, ch[0], config.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(ch[0], config.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
            device: vb.device().clone(),
            dtype: vb.dtype(),
            time_proj,
            time_embedding,
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            config,
            spec,
            provenance: Arc::new(Provenance::new(WeightOrigin::Unknown, None)),
        })
    }

    /// Records where the weights came from (and the `config.json` read, for `from_pretrained`).
    pub(crate) fn set_origin(&mut self, origin: WeightOrigin, config: Option<LoadedConfig>) {
        self.provenance = Arc::new(Provenance::new(origin, config));
    }

    pub(crate) fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// The model's config.
    pub fn config(&self) -> &UNet2DConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype the model computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// An upper estimate of what a forward of a `[batch, in_channels, h, w]` sample allocates.
    pub fn forward_estimate(&self, batch: usize, h: usize, w: usize) -> forward_memory::ForwardEstimate {
        forward_memory::estimate(&self.config, &self.spec, batch, h, w, self.dtype.size_in_bytes())
    }

    /// The factor height and width must be multiples of: `2^(levels − 1)`.
    pub fn size_multiple(&self) -> usize {
        1 << self.config.num_downsamples()
    }

    /// Runs the UNet: `sample` [B, in_channels, H, W] (any float dtype, converted to the model's),
    /// `timestep` (see [`Timestep`]), `class_labels` when the model is class-conditional. Returns
    /// [B, out_channels, H, W] in the model's dtype.
    pub fn forward<'a>(
        &self,
        sample: &Tensor,
        timestep: impl Into<Timestep<'a>>,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let sample = self.check_sample(sample)?;
        let batch = sample.dim(0)?;
        let timesteps = self.timesteps(timestep.into(), batch)?;
        let class_input = self.check_class_labels(class_labels, batch)?;
        let run = || profile::time("other", || self.run(&sample, &timesteps, class_input.as_ref()));
        // On the CPU the whole forward runs on a rayon worker (see `kernels::on_worker`).
        let output = if sample.device().is_cpu() { crate::kernels::on_worker(run) } else { run() };
        Ok(output?)
    }

    fn run(&self, sample: &Tensor, timesteps: &Tensor, class_labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        // 0. center input if necessary
        let sample = if self.config.center_input_sample { ((sample * 2.0)? - 1.0)? } else { sample.clone() };

        // 1. time
        let emb = profile::time("time_embedding", || self.embed(timesteps, class_labels))?;
        let time = crate::resnet::TimeEmbedding::new(&emb);

        // 2. pre-process
        let mut skip_sample = Some(sample.clone());
        let mut hidden = self.conv_in.forward(&sample)?;

        // 3. down
        let mut res_states = vec![hidden.clone()];
        for block in &self.down_blocks {
            let out = block.forward(&hidden, &time, skip_sample)?;
            hidden = out.hidden;
            res_states.extend(out.res_states);
            skip_sample = out.skip_sample;
        }

        // 4. mid
        if let Some(mid) = &self.mid_block {
            hidden = mid.forward(&hidden, &time)?;
        }

        // 5. up
        let mut skip_sample: Option<Tensor> = None;
        for block in &self.up_blocks {
            let n = block.num_res_states();
            let split = res_states.len() - n;
            let (h, s) = block.forward(&hidden, &res_states[split..], &time, skip_sample)?;
            res_states.truncate(split);
            hidden = h;
            skip_sample = s;
        }

        // 6. post-process
        // conv_out(silu(conv_norm_out(hidden))) (+ the skip image), norm and add fused into the conv.
        let epilogue = ConvEpilogue { residual: skip_sample.as_ref(), ..ConvEpilogue::default() };
        let act = crate::config::Activation::Silu;
        let mut out = self.conv_out.forward_normed(&hidden, &self.conv_norm_out, act, epilogue)?;
        if self.spec.time_embedding == TimeEmbeddingKind::Fourier {
            let (b, _, _, _) = out.dims4()?;
            let sigmas = timesteps.to_dtype(self.dtype)?.reshape((b, 1, 1, 1))?;
            out = out.broadcast_div(&sigmas)?;
        }
        Ok(out)
    }

    /// The timestep embedding, plus the class embedding when the model has one.
    fn embed(&self, timesteps: &Tensor, class_labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let t_emb = self.time_proj.forward(timesteps)?.to_dtype(self.dtype)?;
        let mut emb = self.time_embedding.forward(&t_emb)?;
        if let (Some(class_embedding), Some(labels)) = (&self.class_embedding, class_labels) {
            let class_emb = match class_embedding {
                ClassEmbedding::Table { table, .. } => table.forward(labels)?,
                ClassEmbedding::Timestep(mlp) => mlp.forward(&self.time_proj.forward(labels)?.to_dtype(self.dtype)?)?,
                ClassEmbedding::Identity { .. } => labels.clone(),
            };
            emb = emb.broadcast_add(&class_emb.to_dtype(self.dtype)?)?;
        }
        Ok(emb)
    }

    /// Checks the sample's shape before any compute, and brings it to the model's device and dtype.
    fn check_sample(&self, sample: &Tensor) -> Result<Tensor> {
        let dims = sample.dims();
        let c = self.config.in_channels;
        let [b, ch, h, w] = dims else {
            return Err(Error::argument(
                "sample",
                format!("must have shape [batch, {c}, height, width], got {dims:?}"),
            ));
        };
        if *ch != c {
            return Err(Error::argument("sample", format!("has {ch} channels, the model takes {c} (shape {dims:?})")));
        }
        if *b == 0 {
            return Err(Error::argument("sample", "batch size is 0"));
        }
        let m = self.size_multiple();
        if h % m != 0 || w % m != 0 || *h == 0 || *w == 0 {
            return Err(Error::argument(
                "sample",
                format!(
                    "height and width must be positive multiples of {m} (2^{} for {} levels), got {h}×{w}",
                    self.config.num_downsamples(),
                    self.config.block_out_channels.len()
                ),
            ));
        }
        if !sample.dtype().is_float() {
            return Err(Error::argument("sample", format!("must be a float tensor, got {:?}", sample.dtype())));
        }
        let estimate = self.forward_estimate(*b, *h, *w);
        let (level, bytes) = (estimate.attention_level, estimate.attention);
        if bytes > MAX_ATTENTION_SCORE_BYTES {
            return Err(Error::argument(
                "sample",
                format!(
                    "{h}×{w} at batch {b} is too large: the attention at {}×{} would need {:.0} GiB for its \
                     score matrix (limit {} GiB); use a smaller size or batch",
                    h >> level,
                    w >> level,
                    bytes as f64 / (1u64 << 30) as f64,
                    MAX_ATTENTION_SCORE_BYTES >> 30
                ),
            ));
        }
        // The activations live on the model's device; host memory is what can be checked here.
        if self.device.is_cpu() {
            memory_budget::check(|| format!("a forward of a {dims:?} sample"), estimate.total)?;
        }
        Ok(sample.to_device(&self.device)?.to_dtype(self.dtype)?)
    }

    /// The timesteps as a float32 `[B]` vector (diffusers broadcasts scalars and `[1]` to the batch).
    fn timesteps(&self, timestep: Timestep, batch: usize) -> Result<Tensor> {
        let t = match timestep {
            Timestep::Int(t) => Tensor::full(t as f32, batch, &self.device)?,
            Timestep::Float(t) => Tensor::full(t as f32, batch, &self.device)?,
            Timestep::Tensor(t) => {
                let t = match t.dims() {
                    [] => t.reshape(1)?,
                    [_] => t.clone(),
                    dims => {
                        return Err(Error::argument(
                            "timestep",
                            format!("must be a scalar, [1] or [batch] array, got shape {dims:?}"),
                        ))
                    }
                };
                let n = t.dim(0)?;
                let t = t.to_device(&self.device)?.to_dtype(DType::F32)?;
                if n == batch {
                    t
                } else if n == 1 {
                    t.broadcast_as(batch)?.contiguous()?
                } else {
                    return Err(Error::argument(
                        "timestep",
                        format!("has {n} values for a batch of {batch} (give one, or one per sample)"),
                    ));
                }
            }
        };
        if self.spec.time_embedding == TimeEmbeddingKind::Learned {
            let rows = self.config.num_train_timesteps.unwrap_or_default();
            for v in t.to_vec1::<f32>()? {
                if v.fract() != 0.0 || v < 0.0 || v as usize >= rows {
                    return Err(Error::argument(
                        "timestep",
                        format!("{v} is not an integer in [0, {rows}) (the learned time embedding has {rows} rows)"),
                    ));
                }
            }
        }
        Ok(t)
    }

    /// Validates class labels against the model's class embedding and converts them to what the
    /// embedding takes: row indices (table), float32 `[B]` (timestep) or `[B, D]` vectors (identity).
    fn check_class_labels(&self, labels: Option<&Tensor>, batch: usize) -> Result<Option<Tensor>> {
        let arg = |reason: String| Error::argument("class_labels", reason);
        let (embedding, labels) =
            match (&self.class_embedding, labels) {
                (None, None) => return Ok(None),
                (None, Some(_)) => return Err(arg(
                    "given, but this model is not class-conditional (class_embed_type and num_class_embeds are null)"
                        .into(),
                )),
                (Some(_), None) => return Err(arg("required: this model is class-conditional".into())),
                (Some(e), Some(l)) => (e, l.to_device(&self.device)?),
            };
        let batch_ok = |n: usize| n == batch || n == 1;
        match embedding {
            ClassEmbedding::Table { rows, .. } => {
                let labels = if labels.rank() == 0 { labels.reshape(1)? } else { labels };
                if labels.rank() != 1 || !batch_ok(labels.dim(0)?) {
                    return Err(arg(format!("must be a [batch] array of class ids, got shape {:?}", labels.dims())));
                }
                if labels.dtype().is_float() {
                    return Err(arg(format!("must be integers (class ids), got {:?}", labels.dtype())));
                }
                let values = labels.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                Ok(Some(ClassEmbedding::label_indices(&values, *rows, &self.device).map_err(arg)?))
            }
            ClassEmbedding::Timestep(_) => {
                let labels = if labels.rank() == 0 { labels.reshape(1)? } else { labels };
                if labels.rank() != 1 || !batch_ok(labels.dim(0)?) {
                    return Err(arg(format!("must be a [batch] array of timesteps, got shape {:?}", labels.dims())));
                }
                Ok(Some(labels.to_dtype(DType::F32)?))
            }
            ClassEmbedding::Identity { dim } => {
                let ok = matches!(labels.dims(), [n, d] if batch_ok(*n) && d == dim);
                if !ok {
                    return Err(arg(format!("must have shape [batch, {dim}], got {:?}", labels.dims())));
                }
                if !labels.dtype().is_float() {
                    return Err(arg(format!("must be float embeddings, got {:?}", labels.dtype())));
                }
                Ok(Some(labels.to_dtype(self.dtype)?))
            }
        }
    }
}
