//! Vector-friendly math for the CPU kernels: branch-free scalar functions that the compiler
//! vectorises inside the loops of [`crate::kernels::isa::multiversion!`] functions.

/// `e^x` for f32, branch-free so that loops around it vectorise (Cephes' `expf` polynomial: within
/// 2 ulp of the true value on [-87, 88]). Saturates to about 2·10³⁸ above 88.3 (so 2ⁿ stays a normal float) and to 0 below -87.3;
/// NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer in the mantissa, without a branch or a call.
    const ROUND: f32 = 12_582_912.0;
    let nan = x.is_nan();
    let x = x.clamp(-87.3, 88.3);
    let rounded = x * LOG2E + ROUND;
    let n = rounded - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let p = p * r * r + r + 1.0;
    // 2ⁿ from the bits: `rounded` is 1.5·2^23 + n exactly, so its bit pattern is ROUND's plus n. (An
    // `n as i32` cast would not vectorise: its saturating, NaN-to-zero semantics are scalar code.)
    let n_bits = rounded.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if nan {
        f32::NAN
    } else {
        p * scale
    }
}

/// `x · sigmoid(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (exp(x), x.exp());
            worst = worst.max(((ours - libm) / libm).abs());
            x += 0.0137;
        }
        assert!(worst < 3.0 * f32::EPSILON, "relative error {worst}");
        assert_eq!(exp(-200.0), exp(-87.3));
        assert!(exp(-200.0) < 1e-37 && exp(200.0) > 1e38 && exp(200.0).is_finite());
        assert!(exp(f32::NAN).is_nan());
        assert!(silu(-1000.0).abs() < 1e-30);
        assert!(silu(f32::NAN).is_nan());
        assert!((silu(2.0) - 2.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
    }
}
