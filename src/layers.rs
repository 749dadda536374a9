//! Small building blocks shared by the model files: activations, convolutions, group norm and linear
//! layers loaded under diffusers' weight names, plus the error conversion used while building.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::Linear;

use crate::loading::WeightSource;

use crate::config::Activation;
use crate::kernels::conv2d::{
    conv2d_bias, conv2d_bias_prepadded, Conv2dParams, Conv2dWeight, ConvEpilogue, ConvKernel,
};
use crate::kernels::group_norm::{group_norm_cpu, group_norm_padded_cpu, Epilogue};
use crate::kernels::linear::linear_cpu;
use crate::profile;

impl Activation {
    /// Applies the activation (diffusers' `get_activation`: SiLU, Mish, exact-erf GELU, ReLU).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        profile::time("activation", || self.apply_untimed(x))
    }

    fn apply_untimed(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Silu => candle_nn::ops::silu(x),
            // mish(x) = x · tanh(softplus(x)); softplus is computed stably as max(x, 0) + ln(1 + e^{-|x|}).
            Activation::Mish => {
                let softplus = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                x * softplus.tanh()?
            }
            Activation::Gelu => x.gelu_erf(),
            Activation::Relu => x.relu(),
        }
    }
}

/// A 2D convolution with bias (`weight` [out, in, k, k], `bias` [out]), symmetric padding and a stride;
/// the bias is fused into the convolution's output on the CPU.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Conv2dWeight,
    bias: Tensor,
    params: Conv2dParams,
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, ConvEpilogue::default())
    }
}

impl Conv2d {
    /// The convolution followed by `epilogue`, fused into the convolution where the kernel allows.
    pub fn forward_with(&self, x: &Tensor, epilogue: ConvEpilogue) -> Result<Tensor> {
        profile::time(self.profile_label(), || conv2d_bias(x, &self.weight, &self.bias, self.params, epilogue))
    }

    /// The zero border this convolution's input may carry already ([`Self::forward_prepadded`]):
    /// its padding, when its kernel reads a bordered input as it is; `None` when it pads itself.
    pub fn prepadded_border(&self) -> Option<usize> {
        (self.weight.accepts_prepadded_input() && self.params.padding > 0).then_some(self.params.padding)
    }

    /// The convolution of `xp`, an input already written with the [`Self::prepadded_border`].
    pub fn forward_prepadded(&self, xp: &Tensor, epilogue: ConvEpilogue) -> Result<Tensor> {
        profile::time(self.profile_label(), || {
            conv2d_bias_prepadded(xp, &self.weight, &self.bias, self.params, epilogue)
        })
    }

    /// The per-op profile's name for this convolution: which kernel computes it.
    fn profile_label(&self) -> &'static str {
        match self.weight.kernel() {
            Some((ConvKernel::Winograd | ConvKernel::WinogradF2 | ConvKernel::WinogradF4, _)) => "conv2d.winograd",
            Some((ConvKernel::Direct, _)) => "conv2d.direct",
            None => "conv2d",
        }
    }

    /// `conv(act(norm(x)))` then `epilogue`. With prepared weights on the CPU the norm writes its output
    /// straight into the zero-padded buffer the convolution reads, saving a copy of the activations.
    pub fn forward_normed(
        &self,
        x: &Tensor,
        norm: &GroupNorm,
        act: Activation,
        epilogue: ConvEpilogue,
    ) -> Result<Tensor> {
        if let Some(padding) = self.prepadded_border() {
            if let Some(xp) = norm.forward_padded(x, act, padding)? {
                return self.forward_prepadded(&xp, epilogue);
            }
        }
        self.forward_with(&norm.forward_then(x, Some(act))?, epilogue)
    }
}

/// Loads a [`Conv2d`] under diffusers' names (`weight`, `bias`).
pub fn conv2d(
    cin: usize,
    cout: usize,
    kernel: usize,
    padding: usize,
    stride: usize,
    vb: WeightSource,
) -> Result<Conv2d> {
    let params = Conv2dParams { kernel, stride, padding };
    let shape = (cout, cin, kernel, kernel);
    // Float32 filters in a mapped file are prepared from the file's bytes: the direct kernel's packed
    // in one pass, the Winograd kernels' left in the mapping until the layer's first call (see
    // `kernels::conv2d::winograd::weights`), not first copied into a tensor.
    let weight = match vb.mapped_f32(shape, "weight")? {
        Some(filters) => Conv2dWeight::for_params_mapped(filters, cout, cin, params)?,
        None => Conv2dWeight::for_params(vb.get(shape, "weight")?, params)?,
    };
    let bias = vb.get(cout, "bias")?;
    Ok(Conv2d { weight, bias, params })
}

/// A linear layer (`weight` [out, in], `bias` [out]).
pub fn linear(cin: usize, cout: usize, vb: WeightSource) -> Result<Linear> {
    let weight = vb.get((cout, cin), "weight")?;
    let bias = vb.get(cout, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

/// `linear.forward(x)`, through the single-threaded small-product kernel for 2-D float32 CPU inputs.
pub fn linear_forward(linear: &Linear, x: &Tensor) -> Result<Tensor> {
    if let Some(bias) = linear.bias() {
        if let Some(y) = linear_cpu(x, linear.weight(), bias)? {
            return Ok(y);
        }
    }
    linear.forward(x)
}

/// Group normalisation computed in float32 whatever the model dtype (diffusers' half-precision
/// models keep norms in float32 too), cast back to the input dtype.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(groups: usize, channels: usize, eps: f64, vb: WeightSource) -> Result<Self> {
        let weight = vb.get(channels, "weight")?.to_dtype(DType::F32)?;
        let bias = vb.get(channels, "bias")?.to_dtype(DType::F32)?;
        let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
        Ok(Self { inner, weight, bias, groups, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, None)
    }

    /// The norm followed by `act` (fused into one pass for SiLU on the CPU).
    pub fn forward_then(&self, x: &Tensor, act: Option<Activation>) -> Result<Tensor> {
        profile::time("group_norm", || self.forward_then_untimed(x, act))
    }

    /// `act(norm(x))` with a zero border of `padding` around each plane, for a padded convolution to
    /// read; `None` where only the plain path exists (not float32 CPU, or an activation other than SiLU).
    pub fn forward_padded(&self, x: &Tensor, act: Activation, padding: usize) -> Result<Option<Tensor>> {
        if act != Activation::Silu {
            return Ok(None);
        }
        profile::time("group_norm", || {
            group_norm_padded_cpu(x, &self.weight, &self.bias, self.groups, self.eps, Epilogue::Silu, padding)
        })
    }

    fn forward_then_untimed(&self, x: &Tensor, act: Option<Activation>) -> Result<Tensor> {
        let epilogue = match act {
            None => Epilogue::None,
            Some(Activation::Silu) => Epilogue::Silu,
            Some(other) => return other.apply(&self.forward(x)?),
        };
        if let Some(y) = group_norm_cpu(x, &self.weight, &self.bias, self.groups, self.eps, epilogue)? {
            return Ok(y);
        }
        let dtype = x.dtype();
        let y = self.inner.forward(&x.to_dtype(DType::F32)?)?;
        let y = if epilogue == Epilogue::Silu { candle_nn::ops::silu(&y)? } else { y };
        y.to_dtype(dtype)
    }
}
