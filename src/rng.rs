//! PyTorch's CPU random generator, reproduced bit for bit: `torch.Generator()` and
//! `torch.randn(shape, generator=g)` for float32 output.
//!
//! diffusers draws a sampler's initial noise, and DDPM/DDIM's per-step noise, with
//! `torch.randn(shape, generator=torch.Generator().manual_seed(seed))`. To get the same images as
//! diffusers for the same seed, this module reproduces exactly what ATen does on the CPU:
//!
//! * the engine is ATen's `at::mt19937` (`aten/src/ATen/core/MT19937RNGEngine.h`): the standard
//!   32-bit Mersenne Twister, seeded with the low 32 bits of the seed by the usual
//!   `init_genrand` recurrence (the full 64-bit seed is kept for [`Generator::initial_seed`]);
//!   `random()` is one 32-bit output, `random64()` is two, the first one in the high half
//!   (`aten/src/ATen/CPUGeneratorImpl.cpp`);
//! * uniforms (`at::uniform_real_distribution`, `transformation::uniform_real` in
//!   `aten/src/ATen/core/TransformationHelper.h`): a float32 uniform takes the low 24 bits of one
//!   `random()` times 2⁻²⁴; a float64 uniform takes the low 53 bits of one `random64()` times 2⁻⁵³;
//! * `normal_kernel` (`aten/src/ATen/native/cpu/DistributionTemplates.h`) for a contiguous float32
//!   tensor of 16 or more elements runs `normal_fill`: it fills the whole tensor with float32
//!   uniforms, turns every full block of 16 into normals with `normal_fill_16` (Box–Muller in
//!   float32: `u1 = 1 - data[j]`, `u2 = data[j + 8]`, `data[j] = r·cos θ`, `data[j + 8] = r·sin θ`),
//!   and when the element count is not a multiple of 16, draws 16 fresh uniforms into the *last*
//!   16 elements and transforms those again. On x86-64 with AVX2 (where diffusers' reference data
//!   was made) PyTorch runs `normal_fill_16_AVX2`, whose `log256_ps`/`sincos256_ps`
//!   (`avx_mathfun.h`, Cephes polynomials) differ from `logf`/`sinf`/`cosf` in the last bits; it
//!   is emulated lane by lane in plain float32 arithmetic, with the multiply–adds GCC fuses into
//!   FMA instructions fused here too, which makes it bit-identical to PyTorch on every platform
//!   (checked exhaustively against the compiled kernel over all 2²⁴ float32 uniforms).
//!   [`NormalFillKernel::Scalar`] selects the portable kernel instead (PyTorch on aarch64);
//! * with fewer than 16 elements it draws each value from `at::normal_distribution<double>`
//!   (`aten/src/ATen/core/DistributionsHelper.h`): two float64 uniforms `u1`, `u2`,
//!   `r = sqrt(-2·log1p(-u2))`, `θ = 2π·u1`, returns `r·cos θ` and caches `r·sin θ` in the generator
//!   (`next_double_normal_sample`), which the next small draw returns first; the cache lives
//!   across calls and is cleared by [`Generator::manual_seed`], while `normal_fill` neither reads
//!   nor writes it. The result is cast to float32.
//!
//! The small-draw path and the portable kernel call the C library's `log1p`/`sin`/`cos` (and
//! `logf`/`sinf`/`cosf`) as ATen does, so they are bit-identical where the math library is the
//! same (glibc on Linux) and within a float32 ulp elsewhere.

use std::fmt;

/// The seed of a fresh `torch.Generator()` (`c10::detail::default_rng_seed_val`).
pub const DEFAULT_SEED: u64 = 67_280_421_310_721;

const MT_N: usize = 624;
const MT_M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UMASK: u32 = 0x8000_0000;
const LMASK: u32 = 0x7fff_ffff;

/// Which of ATen's two `normal_fill_16` kernels a float32 draw of 16 or more elements reproduces.
///
/// They differ only in the last bits (about 1e-6 at most for standard normals): the AVX2 kernel
/// uses Cephes polynomial `log`/`sincos` and a float32 `θ = 2π·u2`, the portable one the C
/// library's `logf`/`cosf`/`sinf` and a `θ` rounded from double. Draws of fewer than 16 elements
/// and the state of the generator are the same with either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NormalFillKernel {
    /// `normal_fill_16_AVX2`, bit for bit: what PyTorch runs on x86-64 CPUs with AVX2 and FMA,
    /// and what diffusers' reference data in this crate was made with. The default.
    #[default]
    Avx2,
    /// The portable `normal_fill_16`: what PyTorch runs where its AVX2 kernels are not used
    /// (e.g. aarch64 such as Apple silicon, or `ATEN_CPU_CAPABILITY=default`). Identical to
    /// PyTorch's where the C math library is the same (glibc on Linux).
    Scalar,
}

/// ATen's `at::mt19937` engine (`MT19937RNGEngine.h`): the 32-bit Mersenne Twister with lazy
/// state regeneration (`left`/`next` as in mt19937ar-cok.c).
#[derive(Clone)]
struct Mt19937 {
    state: [u32; MT_N],
    /// Outputs left before the state must be regenerated, plus one (ATen's `left_`).
    left: usize,
    /// Index of the next state word to temper (ATen's `next_`).
    next: usize,
}

impl Mt19937 {
    /// `init_with_uint32`: only the low 32 bits of the seed enter the state.
    fn new(seed: u64) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = (seed & 0xffff_ffff) as u32;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(j as u32);
        }
        Mt19937 { state, left: 1, next: 0 }
    }

    #[inline]
    fn twist(u: u32, v: u32) -> u32 {
        let mixed = (u & UMASK) | (v & LMASK);
        (mixed >> 1) ^ if v & 1 != 0 { MATRIX_A } else { 0 }
    }

    fn next_state(&mut self) {
        let s = &mut self.state;
        self.left = MT_N;
        self.next = 0;
        for p in 0..MT_N - MT_M {
            s[p] = s[p + MT_M] ^ Self::twist(s[p], s[p + 1]);
        }
        for p in MT_N - MT_M..MT_N - 1 {
            s[p] = s[p + MT_M - MT_N] ^ Self::twist(s[p], s[p + 1]);
        }
        s[MT_N - 1] = s[MT_M - 1] ^ Self::twist(s[MT_N - 1], s[0]);
    }

    #[inline]
    fn next_u32(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.next_state();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }
}

/// A PyTorch-compatible CPU random generator: the same state, the same draws, the same numbers as
/// `torch.Generator()` on the CPU (see the [module docs](self)).
///
/// ```
/// use candle_unet2d::rng::Generator;
/// // torch.randn((2, 3), generator=torch.Generator().manual_seed(0))
/// let mut g = Generator::new();
/// g.manual_seed(0);
/// let x = g.randn(&[2, 3]);
/// assert_eq!(x.len(), 6);
/// ```
#[derive(Clone)]
pub struct Generator {
    seed: u64,
    engine: Mt19937,
    /// ATen's `next_double_normal_sample_`: the second Box–Muller value of the last
    /// `at::normal_distribution<double>` draw, returned by the next one.
    next_double_normal: Option<f64>,
    /// Which `normal_fill_16` to reproduce; configuration, not random state.
    kernel: NormalFillKernel,
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("initial_seed", &self.seed)
            .field("next", &self.engine.next)
            .field("left", &self.engine.left)
            .field("next_double_normal_sample", &self.next_double_normal)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl Default for Generator {
    fn default() -> Self {
        Self::new()
    }
}

impl Generator {
    /// A generator in the state of a fresh `torch.Generator()`: seeded with [`DEFAULT_SEED`].
    pub fn new() -> Self {
        Self::from_seed(DEFAULT_SEED)
    }

    /// A generator seeded with `seed`, like `torch.Generator().manual_seed(seed)`.
    pub fn from_seed(seed: u64) -> Self {
        Generator { seed, engine: Mt19937::new(seed), next_double_normal: None, kernel: NormalFillKernel::default() }
    }

    /// Re-seeds the generator, like `torch.Generator.manual_seed`: resets the engine and clears the
    /// cached normal sample (the [`NormalFillKernel`] choice is kept). Returns `self` for chaining,
    /// as torch does.
    ///
    /// A negative Python seed `s` corresponds to `s as u64` (torch wraps it the same way).
    pub fn manual_seed(&mut self, seed: u64) -> &mut Self {
        self.seed = seed;
        self.engine = Mt19937::new(seed);
        self.next_double_normal = None;
        self
    }

    /// Chooses which PyTorch `normal_fill_16` kernel draws of 16 or more elements reproduce
    /// (default [`NormalFillKernel::Avx2`]). Returns `self` for chaining.
    pub fn set_normal_fill_kernel(&mut self, kernel: NormalFillKernel) -> &mut Self {
        self.kernel = kernel;
        self
    }

    /// The [`NormalFillKernel`] in use.
    pub fn normal_fill_kernel(&self) -> NormalFillKernel {
        self.kernel
    }

    /// The seed the generator was last seeded with, like `torch.Generator.initial_seed()`.
    pub fn initial_seed(&self) -> u64 {
        self.seed
    }

    /// One 32-bit draw from the engine (ATen's `CPUGeneratorImpl::random`).
    pub fn random_u32(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// One 64-bit draw: two engine outputs, the first in the high half
    /// (ATen's `CPUGeneratorImpl::random64`).
    pub fn random_u64(&mut self) -> u64 {
        let hi = self.engine.next_u32();
        let lo = self.engine.next_u32();
        (u64::from(hi) << 32) | u64::from(lo)
    }

    /// `at::uniform_real_distribution<float>(0, 1)`: low 24 bits of `random()` times 2⁻²⁴.
    #[inline]
    fn uniform_f32(&mut self) -> f32 {
        const MASK: u32 = (1 << f32::MANTISSA_DIGITS) - 1;
        const DIVISOR: f32 = 1.0 / (1u64 << f32::MANTISSA_DIGITS) as f32;
        let x = (self.random_u32() & MASK) as f32 * DIVISOR;
        x * (1.0 - 0.0) + 0.0
    }

    /// `at::uniform_real_distribution<double>(0, 1)`: low 53 bits of `random64()` times 2⁻⁵³.
    #[inline]
    fn uniform_f64(&mut self) -> f64 {
        const MASK: u64 = (1 << f64::MANTISSA_DIGITS) - 1;
        const DIVISOR: f64 = 1.0 / (1u64 << f64::MANTISSA_DIGITS) as f64;
        let x = (self.random_u64() & MASK) as f64 * DIVISOR;
        x * (1.0 - 0.0) + 0.0
    }

    /// `at::normal_distribution<double>(0, 1)`, with the generator's cached second sample.
    fn normal_f64(&mut self) -> f64 {
        let (mean, std) = (0.0f64, 1.0f64);
        if let Some(cached) = self.next_double_normal.take() {
            return cached * std + mean;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        (r * theta.cos()) * std + mean
    }

    /// Number of elements of `shape`, or `None` when the product overflows `usize`.
    fn numel(shape: &[usize]) -> Option<usize> {
        shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Fills `out` (the contiguous buffer of one tensor) exactly as `normal_kernel` fills a float32
    /// tensor of `out.len()` elements.
    fn fill_normal(&mut self, out: &mut [f32]) {
        let n = out.len();
        if n >= 16 {
            // normal_fill
            for v in out.iter_mut() {
                *v = self.uniform_f32();
            }
            let fill_16 = match self.kernel {
                NormalFillKernel::Avx2 => normal_fill_16_avx2,
                NormalFillKernel::Scalar => normal_fill_16_scalar,
            };
            for block in out.chunks_exact_mut(16) {
                fill_16(block);
            }
            if !n.is_multiple_of(16) {
                let tail = &mut out[n - 16..];
                for v in tail.iter_mut() {
                    *v = self.uniform_f32();
                }
                fill_16(tail);
            }
        } else {
            // cpu_serial_kernel over at::normal_distribution<double>
            for v in out.iter_mut() {
                *v = self.normal_f64() as f32;
            }
        }
    }

    /// `torch.randn(shape, generator=self, dtype=torch.float32)`, flattened in row-major order.
    ///
    /// The generator advances exactly as torch's does, so successive calls reproduce successive
    /// `torch.randn` calls on one generator. A shape with a zero dimension returns an empty vector
    /// and leaves the generator untouched (as torch does); an empty shape is a scalar (one value).
    /// A shape whose element count overflows `usize`, or cannot be allocated, also returns an empty
    /// vector without advancing the generator; use [`Generator::randn_tensor`] to get an error instead.
    pub fn randn(&mut self, shape: &[usize]) -> Vec<f32> {
        self.try_randn(shape).unwrap_or_default()
    }

    /// Like [`Generator::randn`], but `None` when the element count overflows or the buffer cannot
    /// be allocated.
    pub fn try_randn(&mut self, shape: &[usize]) -> Option<Vec<f32>> {
        let n = Self::numel(shape)?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).ok()?;
        out.resize(n, 0.0);
        self.fill_normal(&mut out);
        Some(out)
    }

    /// `torch.empty(n).uniform_(from, to, generator=self)` for float32, flattened: ATen's CPU
    /// `uniform_` draws each element in order from `at::uniform_real_distribution<float>`, i.e.
    /// `x·(to − from) + from` in float32 with `x` the low 24 bits of one `random()` times 2⁻²⁴.
    /// Values lie in `[from, to)`. Returns an empty vector when `n` elements cannot be allocated.
    pub fn uniform(&mut self, n: usize, from: f32, to: f32) -> Vec<f32> {
        let mut out = Vec::new();
        if out.try_reserve_exact(n).is_err() {
            return out;
        }
        for _ in 0..n {
            let x = self.uniform_f32();
            out.push(x * (to - from) + from);
        }
        out
    }

    /// [`Generator::randn`] as an f32 tensor of `shape` on `device` (drawn on the CPU, then copied).
    pub fn randn_tensor(
        &mut self,
        shape: &[usize],
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let data = self.try_randn(shape).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "randn: cannot allocate a tensor of shape {shape:?} (element count overflows or out of memory)"
            ))
        })?;
        candle_core::Tensor::from_vec(data, shape.to_vec(), device)
    }
}

/// ATen's `normal_fill_16_AVX2` with mean 0 and std 1, lane by lane: Box–Muller on 8 pairs of
/// float32 uniforms with `log256_ps` and `sincos256_ps` (Cephes polynomials from
/// `aten/src/ATen/native/cpu/avx_mathfun.h`). Every operation is a float32 IEEE operation, and the
/// multiply–adds that GCC contracts into FMA instructions when it builds PyTorch's AVX2 kernels
/// (`-mavx2 -mfma`, `-ffp-contract=fast`) are fused here too, so the result is bit-identical.
fn normal_fill_16_avx2(data: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the `fma` target feature, as just checked.
            unsafe { normal_fill_16_avx2_fma(data) };
            return;
        }
    }
    normal_fill_16_avx2_body(data);
}

/// [`normal_fill_16_avx2`] compiled with hardware FMA instructions: `f32::mul_add` is otherwise a
/// call into the C library's `fmaf` on x86-64, several times slower. Same results either way.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn normal_fill_16_avx2_fma(data: &mut [f32]) {
    normal_fill_16_avx2_body(data);
}

#[inline(always)]
fn normal_fill_16_avx2_body(data: &mut [f32]) {
    // `_mm256_set1_ps(2.0f * c10::pi<double>)`: 2π rounded to float once.
    let two_pi = (2.0f64 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0f32 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0f32 * log256(u1)).sqrt();
        let theta = two_pi * u2;
        let (sin, cos) = sincos256(theta);
        // `_mm256_fmadd_ps(n, std, mean)` with std = 1 and mean = 0 (exact either way).
        data[j] = radius * cos + 0.0;
        data[j + 8] = radius * sin + 0.0;
    }
}

/// `a·b + c` rounded once, like the `vfmadd` instructions GCC emits for the fused pairs.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// One lane of `log256_ps` (the float literals are C++ doubles rounded to float, hence `as f32`).
#[inline(always)]
fn log256(x: f32) -> f32 {
    const MIN_NORM_POS: u32 = 0x0080_0000;
    const INV_MANT_MASK: u32 = !0x7f80_0000;
    const HALF_BITS: u32 = 0x3f00_0000; // 0.5f
    let sqrthf = std::f64::consts::FRAC_1_SQRT_2 as f32; // cephes_SQRTHF 0.707106781186547524
    let p = [
        7.037_683_629_2E-2_f64 as f32,
        -1.151_461_031_0E-1_f64 as f32,
        1.167_699_874_0E-1_f64 as f32,
        -1.242_014_084_6E-1_f64 as f32,
        1.424_932_278_7E-1_f64 as f32,
        -1.666_805_766_5E-1_f64 as f32,
        2.000_071_476_5E-1_f64 as f32,
        -2.499_999_399_3E-1_f64 as f32,
        3.333_333_117_4E-1_f64 as f32,
    ];
    let q1 = -2.121_944_40e-4_f64 as f32;
    let q2 = 0.693_359_375_f64 as f32;

    let invalid = x <= 0.0;
    // `_mm256_max_ps(x, min_norm_pos)`: returns the second operand when x is NaN.
    let min_norm = f32::from_bits(MIN_NORM_POS);
    let x = if x > min_norm { x } else { min_norm };
    let bits = x.to_bits();
    let exponent = (bits >> 23) as i32 - 0x7f;
    let mut x = f32::from_bits((bits & INV_MANT_MASK) | HALF_BITS);
    let mut e = exponent as f32 + 1.0;
    let below = x < sqrthf;
    let tmp = if below { x } else { 0.0 };
    x -= 1.0;
    e -= if below { 1.0 } else { 0.0 };
    x += tmp;
    let z = x * x;
    let mut y = p[0];
    for &pk in &p[1..] {
        y = fma(y, x, pk);
    }
    y *= x;
    y = fma(y, z, e * q1);
    y = fma(-z, 0.5, y);
    x += y;
    x = fma(e, q2, x);
    if invalid {
        f32::NAN
    } else {
        x
    }
}

/// One lane of `sincos256_ps`: returns `(sin x, cos x)`.
// The constants are copied verbatim from avx_mathfun.h, digits the f64 cannot hold included.
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn sincos256(x: f32) -> (f32, f32) {
    const SIGN: u32 = 0x8000_0000;
    let minus_dp1 = -0.785_156_25_f64 as f32;
    let minus_dp2 = -2.418_756_484_985_351_562_5e-4_f64 as f32;
    let minus_dp3 = -3.774_894_977_445_941_08e-8_f64 as f32;
    let sincof = [-1.951_529_589_1E-4_f64 as f32, 8.332_160_873_6E-3_f64 as f32, -1.666_665_461_1E-1_f64 as f32];
    let coscof = [
        2.443_315_711_809_948E-5_f64 as f32,
        -1.388_731_625_493_765E-3_f64 as f32,
        4.166_664_568_298_827E-2_f64 as f32,
    ];
    let fopi = 1.273_239_544_735_16_f64 as f32; // 4 / π

    let mut sign_sin = x.to_bits() & SIGN;
    let mut x = x.abs();
    // `_mm256_cvttps_epi32`: truncation; out-of-range and NaN lanes give i32::MIN.
    let scaled = x * fopi;
    let mut j = if scaled.is_finite() && scaled.abs() < 2_147_483_648.0 { scaled as i32 } else { i32::MIN };
    j = j.wrapping_add(1) & !1;
    let y = j as f32;
    let swap_sign_sin = ((j & 4) as u32) << 29;
    let use_sin_poly = j & 2 == 0;
    x = fma(y, minus_dp1, x);
    x = fma(y, minus_dp2, x);
    x = fma(y, minus_dp3, x);
    let sign_cos = ((!j.wrapping_sub(2) & 4) as u32) << 29;
    sign_sin ^= swap_sign_sin;

    let z = x * x;
    let mut yc = coscof[0];
    yc = fma(yc, z, coscof[1]);
    yc = fma(yc, z, coscof[2]);
    yc *= z;
    yc = fma(yc, z, -(z * 0.5));
    yc += 1.0;

    let mut ys = sincof[0];
    ys = fma(ys, z, sincof[1]);
    ys = fma(ys, z, sincof[2]);
    ys *= z;
    ys = fma(ys, x, x);

    // Blend exactly as the vector code does (and/andnot, then subtract and add).
    let ysin2 = if use_sin_poly { ys } else { 0.0 };
    let ysin1 = if use_sin_poly { 0.0 } else { yc };
    let ys = ys - ysin2;
    let yc = yc - ysin1;
    let s = ysin1 + ysin2;
    let c = yc + ys;
    (f32::from_bits(s.to_bits() ^ sign_sin), f32::from_bits(c.to_bits() ^ sign_cos))
}

/// ATen's portable `normal_fill_16<float>` with mean 0 and std 1: Box–Muller on 8 pairs of float32
/// uniforms, `u1 = 1 - data[j]`, `u2 = data[j + 8]`, with the C library's `logf`, `cosf`, `sinf`.
fn normal_fill_16_scalar(data: &mut [f32]) {
    let (mean, std) = (0.0f32, 1.0f32);
    for j in 0..8 {
        let u1 = 1.0f32 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0f32 * u1.ln()).sqrt();
        // `2.0f * c10::pi<double> * u2` is evaluated in double, then stored in a float.
        let theta = (2.0f64 * std::f64::consts::PI * f64::from(u2)) as f32;
        data[j] = radius * theta.cos() * std + mean;
        data[j + 8] = radius * theta.sin() * std + mean;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_10000th_output_seeded_5489() {
        let mut e = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = e.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn mt19937_first_outputs_seeded_5489() {
        // std::mt19937 default-constructed: 3499211612, 581869302, 3890346734, ...
        let mut e = Mt19937::new(5489);
        assert_eq!(e.next_u32(), 3_499_211_612);
        assert_eq!(e.next_u32(), 581_869_302);
        assert_eq!(e.next_u32(), 3_890_346_734);
    }

    #[test]
    fn only_low_32_bits_of_seed_seed_the_engine() {
        let mut a = Generator::from_seed(7);
        let mut b = Generator::from_seed(7 | (1 << 40));
        assert_eq!(a.random_u64(), b.random_u64());
        assert_eq!(b.initial_seed(), 7 | (1 << 40));
    }

    #[test]
    fn fresh_generator_has_torch_default_seed() {
        let g = Generator::new();
        assert_eq!(g.initial_seed(), 67_280_421_310_721);
        assert_eq!(Generator::default().initial_seed(), DEFAULT_SEED);
    }

    #[test]
    fn manual_seed_resets_state_and_cache() {
        let mut g = Generator::new();
        g.manual_seed(3);
        let first = g.randn(&[3]);
        assert!(g.next_double_normal.is_some());
        g.manual_seed(3);
        assert!(g.next_double_normal.is_none());
        assert_eq!(g.manual_seed(3).randn(&[3]), first);
        assert_eq!(g.initial_seed(), 3);
    }

    #[test]
    fn random64_is_high_then_low() {
        let mut a = Generator::from_seed(11);
        let mut b = a.clone();
        let hi = b.random_u32();
        let lo = b.random_u32();
        assert_eq!(a.random_u64(), (u64::from(hi) << 32) | u64::from(lo));
    }

    #[test]
    fn degenerate_shapes_do_not_panic() {
        let mut g = Generator::from_seed(0);
        let before = g.clone().random_u64();
        assert!(g.randn(&[0]).is_empty());
        assert!(g.randn(&[4, 0, 7]).is_empty());
        assert!(g.randn(&[usize::MAX, 2]).is_empty());
        assert!(g.randn(&[usize::MAX / 2]).is_empty());
        assert_eq!(g.clone().random_u64(), before, "empty draws must not advance the state");
        assert_eq!(g.randn(&[]).len(), 1);
        let t = g.randn_tensor(&[2, 0, 3], &candle_core::Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 0, 3]);
        assert!(g.randn_tensor(&[usize::MAX, 3], &candle_core::Device::Cpu).is_err());
    }

    #[test]
    fn randn_tensor_matches_randn() {
        let mut a = Generator::from_seed(5);
        let mut b = a.clone();
        let t = a.randn_tensor(&[2, 3, 4], &candle_core::Device::Cpu).unwrap();
        assert_eq!(t.dtype(), candle_core::DType::F32);
        assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.randn(&[2, 3, 4]));
    }

    #[test]
    fn values_are_finite_and_standard() {
        let mut g = Generator::from_seed(1234);
        let x = g.randn(&[100_003]);
        assert!(x.iter().all(|v| v.is_finite()));
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn known_torch_values_seed0() {
        // torch.randn(16, generator=torch.Generator().manual_seed(0))[:3]
        let x = Generator::from_seed(0).randn(&[16]);
        for (ours, torch) in x.iter().zip([-1.125_839_8f32, -1.152_360_2, -0.250_578_58]) {
            assert!((ours - torch).abs() < 1e-7, "{ours} vs {torch}");
        }
    }

    #[test]
    fn scalar_kernel_is_close_to_avx2_and_survives_reseeding() {
        let mut a = Generator::from_seed(9);
        let mut b = a.clone();
        b.set_normal_fill_kernel(NormalFillKernel::Scalar);
        b.manual_seed(9);
        assert_eq!(b.normal_fill_kernel(), NormalFillKernel::Scalar);
        assert_eq!(a.normal_fill_kernel(), NormalFillKernel::Avx2);
        let (x, y) = (a.randn(&[4099]), b.randn(&[4099]));
        let max = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(max < 1e-5, "max diff {max}");
        // Small draws and the generator state do not depend on the kernel.
        assert_eq!(a.randn(&[7]), b.randn(&[7]));
    }

    #[test]
    fn avx2_helpers_on_edge_inputs() {
        assert_eq!(log256(1.0), 0.0);
        assert!((log256(0.5) - 0.5f32.ln()).abs() < 1e-7);
        assert!((log256(f32::EPSILON / 2.0) - (f32::EPSILON / 2.0).ln()).abs() < 1e-5);
        assert!(log256(0.0).is_nan() && log256(-1.0).is_nan());
        let (s, c) = sincos256(0.0);
        assert_eq!((s, c), (0.0, 1.0));
        assert_eq!(fma(0.1, 0.2, -0.3).to_bits(), 0.1f32.mul_add(0.2, -0.3).to_bits());
        for k in 0..64 {
            let t = k as f32 * 0.1;
            let (s, c) = sincos256(t);
            assert!((s - t.sin()).abs() < 1e-6 && (c - t.cos()).abs() < 1e-6, "{t}");
        }
        // Out-of-range and non-finite arguments must not panic.
        let _ = sincos256(f32::NAN);
        let _ = sincos256(f32::INFINITY);
        let _ = sincos256(-3.0e38);
    }

    #[test]
    fn avx2_kernel_is_the_same_with_and_without_hardware_fma() {
        let mut g = Generator::from_seed(77);
        for _ in 0..2000 {
            let mut a: Vec<f32> = (0..16).map(|_| g.uniform_f32()).collect();
            let mut b = a.clone();
            normal_fill_16_avx2(&mut a);
            normal_fill_16_avx2_body(&mut b);
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    fn assert_send<T: Send + Sync>() {}

    #[test]
    fn generator_is_send() {
        assert_send::<Generator>();
    }
}
