//! Which vector instruction set the CPU kernels run: detected once at run time (the wheel and the
//! binary are built for baseline x86-64, never `target-cpu=native`), and lowered by the
//! `CANDLE_UNET2D_ISA` environment variable (`scalar`, `avx2`, `avx512`) so that one machine can run
//! and test every level below its best.
//!
//! Two kinds of kernel use it:
//! - the convolutions, written once over the 16-lane vector of [`super::simd::Simd`] and instantiated
//!   per level; a convolution's weights record the level they were prepared for, so a call always
//!   runs the variant its weights name;
//! - plain-Rust loops (group norm, softmax, ...) that the compiler vectorises, compiled once per level
//!   by [`multiversion!`] and dispatched on [`Isa::active`].

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The environment variable that lowers the instruction set the kernels use.
pub const ISA_ENV: &str = "CANDLE_UNET2D_ISA";

/// A level of vector instructions, ordered from the narrowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust on 16-float arrays (what the compiler makes of it on the target's baseline).
    Scalar,
    /// x86-64 AVX2 + FMA: 8-lane vectors, 16 registers.
    Avx2,
    /// x86-64 AVX-512 (F, DQ, VL): 16-lane vectors, 32 registers, masks.
    Avx512,
}

impl Isa {
    /// Every level, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// The name `CANDLE_UNET2D_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the level.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest level this CPU supports.
    pub fn best() -> Isa {
        *Isa::ALL.iter().rev().find(|isa| isa.is_supported()).unwrap_or(&Isa::Scalar)
    }

    /// The level the kernels use now: [`Isa::best`], lowered by `CANDLE_UNET2D_ISA` (read once), or
    /// by [`Isa::run_at`] on this thread.
    pub fn active() -> Isa {
        if let Some(isa) = FORCED.with(Cell::get) {
            return isa;
        }
        *CONFIGURED.get_or_init(|| from_env(std::env::var(ISA_ENV).ok().as_deref()))
    }

    /// The level [`Isa::run_at`] forces on this thread, if any.
    pub(crate) fn forced() -> Option<Isa> {
        FORCED.with(Cell::get)
    }

    /// Runs `f` with [`Isa::active`] returning `self` on this thread (kernels that `f` spreads over
    /// other threads do not see it: run `f` on a one-thread pool to cover everything). An error when
    /// the CPU lacks the level.
    pub fn run_at<R>(self, f: impl FnOnce() -> R) -> Result<R, UnsupportedIsa> {
        if !self.is_supported() {
            return Err(UnsupportedIsa(self));
        }
        Ok(self.force(f))
    }

    /// [`Isa::run_at`] for a level already known to be supported (one a caller forced).
    pub(crate) fn force<R>(self, f: impl FnOnce() -> R) -> R {
        debug_assert!(self.is_supported());
        let previous = FORCED.with(|forced| forced.replace(Some(self)));
        // Restored on unwind too, so a panicking test does not leak the level into the next.
        struct Restore(Option<Isa>);
        impl Drop for Restore {
            fn drop(&mut self) {
                FORCED.with(|forced| forced.set(self.0));
            }
        }
        let _restore = Restore(previous);
        f()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        Isa::ALL.into_iter().find(|isa| isa.name() == s).ok_or_else(|| {
            let names: Vec<_> = Isa::ALL.iter().map(|isa| isa.name()).collect();
            format!("unknown instruction set {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// A level this CPU cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsupportedIsa(pub Isa);

impl fmt::Display for UnsupportedIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "this CPU cannot run the {} kernels (its best level is {})", self.0, Isa::best())
    }
}

impl std::error::Error for UnsupportedIsa {}

static CONFIGURED: OnceLock<Isa> = OnceLock::new();

thread_local! {
    static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// The level the last [`multiversion!`] function on this thread ran, for tests to assert.
    pub(crate) static LAST_DISPATCH: Cell<Option<Isa>> = const { Cell::new(None) };
}

/// Runs `f` at every level this CPU supports, each on a one-thread pool so that the kernels' rayon
/// tasks see the level too, and checks that the [`multiversion!`] functions it calls ran that level.
/// Prints the levels it could not run.
#[cfg(test)]
pub(crate) fn for_each_level(f: impl Fn(Isa) + Sync) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for isa in Isa::ALL {
        if !isa.is_supported() {
            println!("level {isa} not run: {}", UnsupportedIsa(isa));
            continue;
        }
        pool.install(|| {
            LAST_DISPATCH.with(|last| last.set(None));
            isa.run_at(|| f(isa)).unwrap();
            assert_eq!(LAST_DISPATCH.with(Cell::get), Some(isa), "the variant that ran");
        });
    }
}

/// The level for a `CANDLE_UNET2D_ISA` value. The variable only lowers the level: a level the CPU lacks,
/// or a name that is none, keeps the best one and says so once on stderr (the kernels cannot fail on
/// it, and a typo must not go unnoticed).
fn from_env(value: Option<&str>) -> Isa {
    let best = Isa::best();
    match value.map(str::parse::<Isa>) {
        None => best,
        Some(Ok(isa)) if isa.is_supported() => isa,
        Some(Ok(isa)) => {
            eprintln!("candle-unet2d: {ISA_ENV}={isa} ignored: {}", UnsupportedIsa(isa));
            best
        }
        Some(Err(message)) => {
            eprintln!("candle-unet2d: {ISA_ENV} ignored: {message}");
            best
        }
    }
}

/// Defines `$name`, a safe function that runs `$body` compiled for [`Isa::active`]: the body (safe
/// code) is duplicated into one `#[target_feature]` function per x86 level, where the compiler
/// vectorises it for that level.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                generic($($arg),*)
            }
            let isa = $crate::kernels::isa::Isa::active();
            #[cfg(test)]
            $crate::kernels::isa::LAST_DISPATCH.with(|last| last.set(Some(isa)));
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `active()` only returns levels the CPU supports.
                $crate::kernels::isa::Isa::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                $crate::kernels::isa::Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => generic($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_order_and_lower() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
            assert_eq!(isa.name().to_uppercase().parse::<Isa>(), Ok(isa));
        }
        assert!("avx3".parse::<Isa>().unwrap_err().contains("scalar, avx2, avx512"));
        assert!(Isa::Scalar < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
        assert!(Isa::Scalar.is_supported() && Isa::best().is_supported());
        // The variable lowers, never raises; junk keeps the best.
        assert_eq!(from_env(Some("scalar")), Isa::Scalar);
        assert_eq!(from_env(Some("nonsense")), Isa::best());
        assert_eq!(from_env(None), Isa::best());
        for isa in Isa::ALL {
            let expected = if isa.is_supported() { isa } else { Isa::best() };
            assert_eq!(from_env(Some(isa.name())), expected);
        }
    }

    #[test]
    fn run_at_forces_this_thread_and_refuses_what_the_cpu_lacks() {
        let outer = Isa::active();
        for isa in Isa::ALL {
            match isa.run_at(Isa::active) {
                Ok(active) => assert_eq!(active, isa),
                Err(error) => {
                    assert!(!isa.is_supported());
                    assert!(error.to_string().contains(isa.name()));
                    println!("level {isa} not run: {error}");
                }
            }
        }
        assert_eq!(Isa::active(), outer);
    }

    multiversion! {
        fn sum_of_exps(xs: &[f32]) -> f32 {
            xs.iter().map(|&x| crate::kernels::simd::exp(x)).sum()
        }
    }

    #[test]
    fn dispatched_function_runs_at_every_level() {
        let xs: Vec<f32> = (0..100).map(|i| i as f32 / 50.0 - 1.0).collect();
        let expected: f32 = xs.iter().map(|x| x.exp()).sum();
        for_each_level(|isa| {
            let sum = sum_of_exps(&xs);
            assert!((sum - expected).abs() < 1e-4, "{isa}: {sum} vs {expected}");
        });
    }
}
