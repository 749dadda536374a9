//! [`super::math`]'s functions over [`Simd`] vectors, written once for every level: the same
//! Cephes polynomial as the scalar `exp`, with fused multiply-adds where the level has them, so the
//! loops that call it (the group norm's SiLU) run on explicit vectors rather than on what the
//! compiler makes of the scalar code (which held constants in memory and spent about four cycles per
//! element at AVX2).

use super::Simd;

/// `e^x` per lane: within a few ulp of the true value on [−87, 88], saturating outside it as
/// [`super::exp`] does; NaN stays NaN.
///
/// # Safety
/// Inside [`Simd::vectorize`] of a level the CPU supports.
#[inline(always)]
pub(crate) unsafe fn exp_vector<S: Simd>(x: S::V) -> S::V {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer (as the scalar version does).
    const ROUND: f32 = 12_582_912.0;
    let k = S::splat;
    // Operands in this order so a NaN lane of `x` passes through both (see `Simd::max`).
    let x = S::min(k(88.3), S::max(k(-87.3), x));
    let n = S::sub(S::mul_add(x, k(std::f32::consts::LOG2_E), k(ROUND)), k(ROUND));
    let r = S::mul_add(n, k(-LN2_LO), S::mul_add(n, k(-LN2_HI), x));
    let mut p = k(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1] {
        p = S::mul_add(p, r, k(c));
    }
    let p = S::mul_add(S::mul(p, r), r, S::add(r, k(1.0)));
    S::ldexp(p, n)
}

/// `x · sigmoid(x) = x / (1 + e^−x)` per lane.
///
/// # Safety
/// As [`exp_vector`].
#[inline(always)]
pub(crate) unsafe fn silu_vector<S: Simd>(x: S::V) -> S::V {
    let exp = exp_vector::<S>(S::sub(S::zero(), x));
    S::div(x, S::add(S::splat(1.0), exp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::{for_each_simd_level, LANES};

    /// Every level against libm's `exp` and the scalar SiLU, NaN and the saturated ends included.
    #[test]
    fn exp_and_silu_match_the_scalar_functions_at_every_level() {
        // SAFETY: a supported level; every pointer has 16 floats of room.
        for_each_simd_level!(S => unsafe { S::vectorize(|| check::<S>()) });
    }

    unsafe fn check<S: Simd>() {
        let apply = |f: unsafe fn(S::V) -> S::V, xs: &[f32; LANES]| {
            let mut out = [0f32; LANES];
            // SAFETY: per `check`'s caller.
            unsafe { S::store(out.as_mut_ptr(), f(S::load(xs.as_ptr()))) };
            out
        };
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let xs: [f32; LANES] = std::array::from_fn(|i| (x + 0.0137 * i as f32).min(88.0));
            let ours = apply(exp_vector::<S>, &xs);
            for i in 0..LANES {
                let libm = xs[i].exp();
                worst = worst.max(((ours[i] - libm) / libm).abs());
            }
            let silu = apply(silu_vector::<S>, &xs.map(|x| x / 8.0));
            for i in 0..LANES {
                let expected = super::super::silu(xs[i] / 8.0);
                assert!((silu[i] - expected).abs() <= 4.0 * f32::EPSILON * expected.abs().max(1e-30), "{}", xs[i]);
            }
            x += 0.0137 * LANES as f32;
        }
        assert!(worst < 3.0 * f32::EPSILON, "relative error {worst}");
        let edges = [
            -200.0,
            200.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1.0,
            -1000.0,
            1000.0,
            88.3,
            -87.3,
            1e-30,
            -1e-30,
            f32::MAX,
            f32::MIN,
        ];
        let exp = apply(exp_vector::<S>, &edges);
        let silu = apply(silu_vector::<S>, &edges);
        for i in 0..LANES {
            let (x, scalar_exp, scalar_silu) = (edges[i], super::super::exp(edges[i]), super::super::silu(edges[i]));
            assert!(exp[i].is_nan() == x.is_nan() && silu[i].is_nan() == scalar_silu.is_nan(), "NaN at {x}");
            // Equal, or within a few ulp (infinities are only ever equal).
            let close = |ours: f32, expected: f32| {
                ours == expected || (ours - expected).abs() <= 3.0 * f32::EPSILON * expected.abs()
            };
            if !x.is_nan() {
                assert!(close(exp[i], scalar_exp), "exp({x}): {} vs {scalar_exp}", exp[i]);
                assert!(close(silu[i], scalar_silu), "silu({x}): {} vs {scalar_silu}", silu[i]);
            }
        }
    }
}
