//! `UNet2DConfig`: diffusers' `UNet2DModel` config, read from `config.json` with diffusers' defaults,
//! and validated once so that the model code can trust it.
//!
//! The block, activation and embedding kinds are kept as the strings diffusers writes (so the config
//! round-trips to JSON unchanged) and parsed into enums by [`UNet2DConfig::validate`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest channel count accepted: far above any published UNet2DModel, small enough that a typo
/// (an extra digit) fails at load instead of trying to allocate terabytes.
const MAX_CHANNELS: usize = 1 << 14;
/// Largest number of resolution levels (block_out_channels entries).
const MAX_LEVELS: usize = 12;
/// Largest `layers_per_block`.
const MAX_LAYERS_PER_BLOCK: usize = 64;
/// Largest table size for the learned time embedding and the class embedding.
const MAX_EMBEDDING_ROWS: usize = 1 << 24;

/// `sample_size`: an int (square) or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum SampleSize {
    Square(usize),
    HeightWidth([usize; 2]),
}

/// By hand rather than `untagged`, whose error ("did not match any variant of untagged enum") names
/// neither the value nor what is accepted.
impl<'de> Deserialize<'de> for SampleSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let side = |v: &serde_json::Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
        let parsed = match &value {
            serde_json::Value::Array(items) if items.len() == 2 => {
                side(&items[0]).zip(side(&items[1])).map(|(h, w)| SampleSize::HeightWidth([h, w]))
            }
            other => side(other).map(SampleSize::Square),
        };
        parsed.ok_or_else(|| {
            serde::de::Error::custom(format!(
                "must be a non-negative integer (a square side) or [height, width] of such integers, got {value}"
            ))
        })
    }
}

impl SampleSize {
    /// `(height, width)`.
    pub fn height_width(&self) -> (usize, usize) {
        match *self {
            SampleSize::Square(s) => (s, s),
            SampleSize::HeightWidth([h, w]) => (h, w),
        }
    }
}

fn default_channels() -> usize {
    3
}
fn default_time_embedding_type() -> String {
    "positional".into()
}
fn default_true() -> bool {
    true
}
fn default_down_block_types() -> Vec<String> {
    ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"].map(String::from).to_vec()
}
fn default_mid_block_type() -> Option<String> {
    Some("UNetMidBlock2D".into())
}
fn default_up_block_types() -> Vec<String> {
    ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"].map(String::from).to_vec()
}
fn default_block_out_channels() -> Vec<usize> {
    vec![224, 448, 672, 896]
}
fn default_layers_per_block() -> usize {
    2
}
fn default_one() -> f64 {
    1.0
}
fn default_downsample_padding() -> usize {
    1
}
fn default_conv() -> String {
    "conv".into()
}
fn default_act_fn() -> String {
    "silu".into()
}
fn default_attention_head_dim() -> Option<usize> {
    Some(8)
}
fn default_norm_num_groups() -> Option<usize> {
    Some(32)
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_time_scale_shift() -> String {
    "default".into()
}

/// The configuration of a `UNet2DModel`, field for field as diffusers 0.42.1 writes it in `config.json`.
///
/// Every field has diffusers' default, so a partial config (or `{}`) means what it means to diffusers.
/// Keys this crate does not know (including the `_class_name`/`_diffusers_version` metadata) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNet2DConfig {
    /// Height and width the model was trained at (`None`: unknown). Used as the default sampling size.
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    /// Channels of the input sample.
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    /// Channels of the output.
    #[serde(default = "default_channels")]
    pub out_channels: usize,
    /// Map the input from `[0, 1]` to `[-1, 1]` (`2x - 1`) before the first conv.
    #[serde(default)]
    pub center_input_sample: bool,
    /// `positional` (sinusoidal), `fourier` (Gaussian Fourier features of log σ) or `learned` (a table).
    #[serde(default = "default_time_embedding_type")]
    pub time_embedding_type: String,
    /// Width of the time embedding (`None`: `4 × block_out_channels[0]`).
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    /// `downscale_freq_shift` of the sinusoidal embedding.
    #[serde(default)]
    pub freq_shift: f64,
    /// Put cos before sin in the sinusoidal embedding.
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    /// One entry per resolution level, from the input down.
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2D`, or `None` for no mid block.
    #[serde(default = "default_mid_block_type")]
    pub mid_block_type: Option<String>,
    /// One entry per resolution level, from the bottom up.
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<String>,
    /// Channels of each level.
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    /// Resnet layers per down block (up blocks have one more).
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: usize,
    /// `output_scale_factor` of the mid block's resnets and attention.
    #[serde(default = "default_one")]
    pub mid_block_scale_factor: f64,
    /// Padding of the downsampling conv; `0` pads one pixel right and bottom instead.
    #[serde(default = "default_downsample_padding")]
    pub downsample_padding: usize,
    /// `conv` or `resnet` (AttnDownBlock2D only, as in diffusers).
    #[serde(default = "default_conv")]
    pub downsample_type: String,
    /// `conv` or `resnet` (AttnUpBlock2D only, as in diffusers).
    #[serde(default = "default_conv")]
    pub upsample_type: String,
    /// Training-time dropout; no effect at inference.
    #[serde(default)]
    pub dropout: f64,
    /// `silu`/`swish`, `mish`, `gelu` or `relu`.
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    /// Width of an attention head; a missing key means 8, `null` means one head as wide as the channels.
    #[serde(default = "default_attention_head_dim")]
    pub attention_head_dim: Option<usize>,
    /// Groups of the group norms; `null` is allowed for NCSN++ (Skip) layouts.
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: Option<usize>,
    /// Groups of the mid block attention's norm (`None`: diffusers' rule, see the mid block).
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    /// Epsilon of every group norm.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// `default` (add the time embedding) or `scale_shift` (FiLM after the second norm).
    #[serde(default = "default_time_scale_shift")]
    pub resnet_time_scale_shift: String,
    /// Attention in the mid block.
    #[serde(default = "default_true")]
    pub add_attention: bool,
    /// `None`, `timestep` or `identity`.
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// Number of classes for a class-embedding table (used when `class_embed_type` is `None`).
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// Size of the `learned` time-embedding table.
    #[serde(default)]
    pub num_train_timesteps: Option<usize>,
}

impl Default for UNet2DConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("an empty config takes every default")
    }
}

/// The kind of a down block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownBlockKind {
    Down,
    ResnetDownsample,
    AttnDown,
    SkipDown,
    AttnSkipDown,
}

/// The kind of an up block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpBlockKind {
    Up,
    ResnetUpsample,
    AttnUp,
    SkipUp,
    AttnSkipUp,
}

/// How the timestep becomes a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeEmbeddingKind {
    Positional,
    Fourier,
    Learned,
}

/// How class labels are embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassEmbeddingKind {
    /// A table of `num_class_embeds` rows, indexed by integer labels.
    Table(usize),
    /// Labels are timesteps: the time projection then their own TimestepEmbedding.
    Timestep,
    /// Labels are already embeddings of width `time_embed_dim`.
    Identity,
}

/// The activation between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activation {
    Silu,
    Mish,
    Gelu,
    Relu,
}

/// How resnets use the time embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeScaleShift {
    Default,
    ScaleShift,
}

/// Downsampling/upsampling layer of the Attn blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResampleKind {
    Conv,
    Resnet,
}

/// A validated config: the same values as [`UNet2DConfig`], with the strings parsed into enums and
/// the derived sizes computed.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub down_blocks: Vec<DownBlockKind>,
    pub up_blocks: Vec<UpBlockKind>,
    pub has_mid_block: bool,
    pub time_embedding: TimeEmbeddingKind,
    pub class_embedding: Option<ClassEmbeddingKind>,
    pub act: Activation,
    pub time_scale_shift: TimeScaleShift,
    pub downsample_type: ResampleKind,
    pub upsample_type: ResampleKind,
    /// Width of the time embedding MLP output.
    pub time_embed_dim: usize,
}

impl UNet2DConfig {
    /// Parses a config from JSON text; `source` names it in errors.
    pub fn from_json_str(json: &str, source: &Path) -> Result<Self> {
        let parse_error = |reason: String| Error::ConfigParse { path: source.to_path_buf(), reason };
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| parse_error(e.to_string()))?;
        if !value.is_object() {
            // serde would read a JSON array positionally into the struct; a config is an object.
            return Err(parse_error("a config must be a JSON object".into()));
        }
        let config: Self = serde_path_to_error::deserialize(value)
            .map_err(|e| Error::config(e.path().to_string(), e.into_inner().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_with_json(path).map(|(config, _)| config)
    }

    /// [`UNet2DConfig::from_file`], also returning the file's JSON object as read (every key, numbers
    /// as written), which saving writes back as diffusers does.
    pub fn from_file_with_json(path: &Path) -> Result<(Self, serde_json::Map<String, serde_json::Value>)> {
        let text = crate::files::read_json_text(path).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::NotFound { what: format!("config file {}", path.display()) }
            }
            other => other,
        })?;
        let config = Self::from_json_str(&text, path)?;
        let json = serde_json::from_str(&text)
            .map_err(|e| Error::ConfigParse { path: path.to_path_buf(), reason: e.to_string() })?;
        Ok((config, json))
    }

    /// The config as diffusers would write it (without the `_` metadata keys).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the config serialises")
    }

    /// Width of the time embedding: `time_embedding_dim`, or `4 × block_out_channels[0]`.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim.unwrap_or(self.block_out_channels.first().copied().unwrap_or(0) * 4)
    }

    /// How many times the sample is halved: one per down block but the last.
    pub fn num_downsamples(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks every value diffusers would reject, and every one that would fail later (groups that do
    /// not divide channels, absurd sizes), naming the field. Returns the parsed kinds.
    pub fn validate(&self) -> Result<ModelSpec> {
        let levels = self.block_out_channels.len();
        if levels == 0 {
            return Err(Error::config("block_out_channels", "must have at least one entry"));
        }
        if levels > MAX_LEVELS {
            return Err(Error::config(
                "block_out_channels",
                format!("{levels} levels; at most {MAX_LEVELS} are supported"),
            ));
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            check_size(&format!("block_out_channels[{i}]"), c, MAX_CHANNELS)?;
        }
        if self.down_block_types.len() != self.up_block_types.len() {
            return Err(Error::config(
                "up_block_types",
                format!(
                    "must have as many entries as down_block_types ({} vs {})",
                    self.up_block_types.len(),
                    self.down_block_types.len()
                ),
            ));
        }
        if self.down_block_types.len() != levels {
            return Err(Error::config(
                "down_block_types",
                format!(
                    "must have one entry per block_out_channels entry ({} vs {levels})",
                    self.down_block_types.len()
                ),
            ));
        }
        check_size("in_channels", self.in_channels, MAX_CHANNELS)?;
        check_size("out_channels", self.out_channels, MAX_CHANNELS)?;
        check_size("layers_per_block", self.layers_per_block, MAX_LAYERS_PER_BLOCK)?;
        if let Some(d) = self.time_embedding_dim {
            check_size("time_embedding_dim", d, 4 * MAX_CHANNELS)?;
        }
        if let Some(size) = self.sample_size {
            let (h, w) = size.height_width();
            check_size("sample_size", h, 1 << 16)?;
            check_size("sample_size", w, 1 << 16)?;
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(Error::config("norm_eps", format!("must be a positive number, got {}", self.norm_eps)));
        }
        if !(self.mid_block_scale_factor.is_finite() && self.mid_block_scale_factor != 0.0) {
            return Err(Error::config(
                "mid_block_scale_factor",
                format!("must be a non-zero number, got {}", self.mid_block_scale_factor),
            ));
        }
        if !self.freq_shift.is_finite() {
            return Err(Error::config("freq_shift", "must be a finite number"));
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(Error::config("dropout", format!("must be in [0, 1], got {}", self.dropout)));
        }
        if self.downsample_padding > 1 {
            return Err(Error::config(
                "downsample_padding",
                format!("must be 0 or 1, got {}", self.downsample_padding),
            ));
        }

        let down_blocks = self
            .down_block_types
            .iter()
            .enumerate()
            .map(|(i, s)| parse_down_block(s).ok_or_else(|| unknown(&format!("down_block_types[{i}]"), s, DOWN_BLOCKS)))
            .collect::<Result<Vec<_>>>()?;
        let up_blocks = self
            .up_block_types
            .iter()
            .enumerate()
            .map(|(i, s)| parse_up_block(s).ok_or_else(|| unknown(&format!("up_block_types[{i}]"), s, UP_BLOCKS)))
            .collect::<Result<Vec<_>>>()?;
        let has_mid_block = match self.mid_block_type.as_deref() {
            None => false,
            Some("UNetMidBlock2D") => true,
            Some(other) => return Err(unknown("mid_block_type", other, &["UNetMidBlock2D", "null"])),
        };
        let act = match self.act_fn.to_lowercase().as_str() {
            "silu" | "swish" => Activation::Silu,
            "mish" => Activation::Mish,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            _ => return Err(unknown("act_fn", &self.act_fn, &["silu", "swish", "mish", "gelu", "relu"])),
        };
        let time_scale_shift = match self.resnet_time_scale_shift.as_str() {
            "default" => TimeScaleShift::Default,
            "scale_shift" => TimeScaleShift::ScaleShift,
            other => return Err(unknown("resnet_time_scale_shift", other, &["default", "scale_shift"])),
        };
        let resample = |field: &str, value: &str| match value {
            "conv" => Ok(ResampleKind::Conv),
            "resnet" => Ok(ResampleKind::Resnet),
            other => Err(unknown(field, other, &["conv", "resnet"])),
        };
        let downsample_type = resample("downsample_type", &self.downsample_type)?;
        let upsample_type = resample("upsample_type", &self.upsample_type)?;

        let time_embedding = match self.time_embedding_type.as_str() {
            "positional" => TimeEmbeddingKind::Positional,
            "fourier" => TimeEmbeddingKind::Fourier,
            "learned" => {
                match self.num_train_timesteps {
                    None => {
                        return Err(Error::config(
                            "num_train_timesteps",
                            "is required when time_embedding_type is \"learned\" (it sizes the embedding table)",
                        ))
                    }
                    Some(n) => check_size("num_train_timesteps", n, MAX_EMBEDDING_ROWS)?,
                }
                TimeEmbeddingKind::Learned
            }
            other => return Err(unknown("time_embedding_type", other, &["positional", "fourier", "learned"])),
        };
        let class_embedding = match self.class_embed_type.as_deref() {
            None => match self.num_class_embeds {
                Some(n) => {
                    check_size("num_class_embeds", n, MAX_EMBEDDING_ROWS)?;
                    Some(ClassEmbeddingKind::Table(n))
                }
                None => None,
            },
            Some("timestep") => Some(ClassEmbeddingKind::Timestep),
            Some("identity") => Some(ClassEmbeddingKind::Identity),
            Some(other) => return Err(unknown("class_embed_type", other, &["null", "timestep", "identity"])),
        };
        let time_embed_dim = self.time_embed_dim();
        if time_embedding == TimeEmbeddingKind::Positional && self.block_out_channels[0] < 2 {
            return Err(Error::config("block_out_channels[0]", "must be at least 2 for a sinusoidal time embedding"));
        }

        self.validate_groups(&down_blocks, &up_blocks, has_mid_block, time_scale_shift)?;
        self.validate_heads(&down_blocks, &up_blocks, has_mid_block)?;
        let uses_skip = down_blocks.iter().any(|b| matches!(b, DownBlockKind::SkipDown | DownBlockKind::AttnSkipDown))
            || up_blocks.iter().any(|b| matches!(b, UpBlockKind::SkipUp | UpBlockKind::AttnSkipUp));
        if uses_skip && (self.in_channels != 3 || self.out_channels != 3) {
            // diffusers' skip convs are hard-wired to 3 image channels.
            return Err(Error::config(
                "in_channels",
                format!(
                    "Skip blocks (NCSN++) need in_channels = out_channels = 3, got {} and {}",
                    self.in_channels, self.out_channels
                ),
            ));
        }

        Ok(ModelSpec {
            down_blocks,
            up_blocks,
            has_mid_block,
            time_embedding,
            class_embedding,
            act,
            time_scale_shift,
            downsample_type,
            upsample_type,
            time_embed_dim,
        })
    }

    /// Every group norm the model will build divides its channels (diffusers fails at construction or at
    /// the first forward otherwise).
    fn validate_groups(
        &self,
        down: &[DownBlockKind],
        up: &[UpBlockKind],
        has_mid: bool,
        shift: TimeScaleShift,
    ) -> Result<()> {
        let ch = &self.block_out_channels;
        let levels = ch.len();
        let groups = self.norm_num_groups;
        let need = |field: &str, what: &str| {
            Error::config(field, format!("is null, but {what} needs a group count (only Skip blocks allow null)"))
        };
        let check = |field: &str, g: usize, c: usize, what: &str| -> Result<()> {
            if g == 0 || !c.is_multiple_of(g) {
                return Err(Error::config(field, format!("{g} groups do not divide the {c} channels of {what}")));
            }
            Ok(())
        };
        let mut prev = ch[0];
        for (i, kind) in down.iter().enumerate() {
            let (cin, cout) = (prev, ch[i]);
            prev = cout;
            let what = format!("down_blocks.{i}");
            match kind {
                DownBlockKind::SkipDown | DownBlockKind::AttnSkipDown => {
                    // Skip blocks choose min(C / 4, 32) groups themselves; the attention uses 32.
                    for c in [cin, cout] {
                        check("block_out_channels", (c / 4).min(32), c, &what)?;
                    }
                    if *kind == DownBlockKind::AttnSkipDown {
                        check("block_out_channels", 32, cout, &format!("{what}.attentions (32 groups)"))?;
                    }
                }
                _ => {
                    let g = groups.ok_or_else(|| need("norm_num_groups", &what))?;
                    check("norm_num_groups", g, cin, &what)?;
                    check("norm_num_groups", g, cout, &what)?;
                }
            }
        }
        if has_mid {
            let c = ch[levels - 1];
            let g = groups.unwrap_or((c / 4).min(32));
            check("norm_num_groups", g, c, "mid_block")?;
            if self.add_attention {
                let attn_groups = match self.attn_norm_num_groups {
                    Some(g) => Some(g),
                    None if shift == TimeScaleShift::Default => Some(g),
                    None => None,
                };
                if let Some(ag) = attn_groups {
                    check("attn_norm_num_groups", ag, c, "mid_block.attentions")?;
                }
            }
        }
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut prev_out = rev[0];
        for (i, kind) in up.iter().enumerate() {
            let out = rev[i];
            let input = rev[(i + 1).min(levels - 1)];
            let what = format!("up_blocks.{i}");
            let layers = self.layers_per_block + 1;
            for j in 0..layers {
                let skip = if j == layers - 1 { input } else { out };
                let resnet_in = if j == 0 { prev_out } else { out };
                let cin = resnet_in + skip;
                match kind {
                    UpBlockKind::SkipUp => {
                        check("block_out_channels", (cin / 4).min(32), cin, &what)?;
                        check("block_out_channels", (out / 4).min(32), out, &what)?;
                    }
                    UpBlockKind::AttnSkipUp => {
                        // diffusers writes `min(resnet_in + skip // 4, 32)`: precedence kept on purpose.
                        check("block_out_channels", (resnet_in + skip / 4).min(32), cin, &what)?;
                        check("block_out_channels", (out / 4).min(32), out, &what)?;
                        check("block_out_channels", 32, out, &format!("{what}.attentions (32 groups)"))?;
                    }
                    _ => {
                        let g = groups.ok_or_else(|| need("norm_num_groups", &what))?;
                        check("norm_num_groups", g, cin, &what)?;
                        check("norm_num_groups", g, out, &what)?;
                    }
                }
            }
            prev_out = out;
        }
        let out_groups = groups.unwrap_or((ch[0] / 4).min(32));
        check("norm_num_groups", out_groups, ch[0], "conv_norm_out")?;
        Ok(())
    }

    /// Attention heads: `channels / attention_head_dim` must be at least one head.
    fn validate_heads(&self, down: &[DownBlockKind], up: &[UpBlockKind], has_mid: bool) -> Result<()> {
        let Some(head_dim) = self.attention_head_dim else { return Ok(()) };
        if head_dim == 0 {
            return Err(Error::config("attention_head_dim", "must be positive (or null for one head per block)"));
        }
        let ch = &self.block_out_channels;
        let mut attn_channels: Vec<usize> = Vec::new();
        for (i, k) in down.iter().enumerate() {
            if matches!(k, DownBlockKind::AttnDown | DownBlockKind::AttnSkipDown) {
                attn_channels.push(ch[i]);
            }
        }
        for (i, k) in up.iter().enumerate() {
            if matches!(k, UpBlockKind::AttnUp | UpBlockKind::AttnSkipUp) {
                attn_channels.push(ch[ch.len() - 1 - i]);
            }
        }
        if has_mid && self.add_attention {
            attn_channels.push(ch[ch.len() - 1]);
        }
        if let Some(&c) = attn_channels.iter().find(|&&c| c < head_dim) {
            return Err(Error::config(
                "attention_head_dim",
                format!("{head_dim} is wider than an attention block's {c} channels (zero heads)"),
            ));
        }
        Ok(())
    }
}

fn check_size(field: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::config(field, "must be positive"));
    }
    if value > max {
        return Err(Error::config(field, format!("{value} is larger than the supported maximum {max}")));
    }
    Ok(())
}

const DOWN_BLOCKS: &[&str] =
    &["DownBlock2D", "ResnetDownsampleBlock2D", "AttnDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D"];
const UP_BLOCKS: &[&str] =
    &["UpBlock2D", "ResnetUpsampleBlock2D", "AttnUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D"];

fn unknown(field: &str, value: &str, expected: &[&str]) -> Error {
    Error::config(field, format!("unknown value {value:?}; expected one of {}", expected.join(", ")))
}

/// diffusers strips a `UNetRes` prefix from block names (`UNetResDownBlock2D` is `DownBlock2D`).
fn strip_unet_res(name: &str) -> &str {
    name.strip_prefix("UNetRes").unwrap_or(name)
}

fn parse_down_block(name: &str) -> Option<DownBlockKind> {
    Some(match strip_unet_res(name) {
        "DownBlock2D" => DownBlockKind::Down,
        "ResnetDownsampleBlock2D" => DownBlockKind::ResnetDownsample,
        "AttnDownBlock2D" => DownBlockKind::AttnDown,
        "SkipDownBlock2D" => DownBlockKind::SkipDown,
        "AttnSkipDownBlock2D" => DownBlockKind::AttnSkipDown,
        _ => return None,
    })
}

fn parse_up_block(name: &str) -> Option<UpBlockKind> {
    Some(match strip_unet_res(name) {
        "UpBlock2D" => UpBlockKind::Up,
        "ResnetUpsampleBlock2D" => UpBlockKind::ResnetUpsample,
        "AttnUpBlock2D" => UpBlockKind::AttnUp,
        "SkipUpBlock2D" => UpBlockKind::SkipUp,
        "AttnSkipUpBlock2D" => UpBlockKind::AttnSkipUp,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<UNet2DConfig> {
        UNet2DConfig::from_json_str(json, Path::new("config.json"))
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidConfig { field, .. } => field,
            other => panic!("expected InvalidConfig, got {other}"),
        }
    }

    #[test]
    fn empty_config_takes_diffusers_defaults() {
        let c = UNet2DConfig::default();
        assert_eq!(c.in_channels, 3);
        assert_eq!(c.block_out_channels, vec![224, 448, 672, 896]);
        assert_eq!(c.attention_head_dim, Some(8));
        assert_eq!(c.norm_num_groups, Some(32));
        assert_eq!(c.mid_block_type.as_deref(), Some("UNetMidBlock2D"));
        assert!(c.flip_sin_to_cos);
        assert_eq!(c.norm_eps, 1e-5);
        assert_eq!(c.time_embed_dim(), 896);
        let spec = c.validate().unwrap();
        assert_eq!(spec.down_blocks[1], DownBlockKind::AttnDown);
        assert_eq!(spec.up_blocks[3], UpBlockKind::Up);
    }

    #[test]
    fn null_differs_from_missing() {
        let c = parse(r#"{"attention_head_dim": null, "block_out_channels": [32, 64, 64, 64]}"#).unwrap();
        assert_eq!(c.attention_head_dim, None);
        let c = parse(r#"{"mid_block_type": null, "block_out_channels": [32, 64, 64, 64]}"#).unwrap();
        assert_eq!(c.mid_block_type, None);
    }

    #[test]
    fn sample_size_int_or_pair() {
        let c = parse(r#"{"sample_size": [16, 24], "block_out_channels": [32, 64, 64, 64]}"#).unwrap();
        assert_eq!(c.sample_size.unwrap().height_width(), (16, 24));
        let c = parse(r#"{"sample_size": 32, "block_out_channels": [32, 64, 64, 64]}"#).unwrap();
        assert_eq!(c.sample_size.unwrap().height_width(), (32, 32));
    }

    #[test]
    fn metadata_and_unknown_keys_are_ignored() {
        parse(r#"{"_class_name": "UNet2DModel", "_diffusers_version": "0.42.1", "something_new": 1}"#).unwrap();
    }

    #[test]
    fn wrong_type_names_the_field() {
        assert_eq!(field_of(parse(r#"{"layers_per_block": "two"}"#).unwrap_err()), "layers_per_block");
        assert_eq!(field_of(parse(r#"{"block_out_channels": [32, -1]}"#).unwrap_err()), "block_out_channels[1]");
    }

    #[test]
    fn not_json_is_a_parse_error() {
        assert!(matches!(parse("not json").unwrap_err(), Error::ConfigParse { .. }));
        assert!(matches!(parse("{1: 2}").unwrap_err(), Error::ConfigParse { .. }));
        assert!(matches!(parse("[1, 2]").unwrap_err(), Error::ConfigParse { .. }));
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (r#"{"down_block_types": ["DownBlock2D"]}"#, "up_block_types"),
            (
                r#"{"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "Nope"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}"#,
                "down_block_types[1]",
            ),
            (r#"{"act_fn": "tanh"}"#, "act_fn"),
            (r#"{"time_embedding_type": "adm"}"#, "time_embedding_type"),
            (r#"{"time_embedding_type": "learned"}"#, "num_train_timesteps"),
            (r#"{"class_embed_type": "projection"}"#, "class_embed_type"),
            (r#"{"norm_num_groups": 5}"#, "norm_num_groups"),
            (r#"{"norm_num_groups": null}"#, "norm_num_groups"),
            (r#"{"block_out_channels": [0, 64, 64, 64]}"#, "block_out_channels[0]"),
            (r#"{"block_out_channels": [99999999, 64, 64, 64]}"#, "block_out_channels[0]"),
            (r#"{"attention_head_dim": 4096}"#, "attention_head_dim"),
            (r#"{"resnet_time_scale_shift": "spatial"}"#, "resnet_time_scale_shift"),
            (r#"{"mid_block_type": "UNetMidBlock2DCrossAttn"}"#, "mid_block_type"),
            (r#"{"layers_per_block": 0}"#, "layers_per_block"),
            (r#"{"norm_eps": -1.0}"#, "norm_eps"),
        ];
        for (json, field) in cases {
            assert_eq!(field_of(parse(json).unwrap_err()), field, "{json}");
        }
    }
}
