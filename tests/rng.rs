//! `rng::Generator` against PyTorch: every tensor in `tests/fixtures/rng/torch_randn.safetensors`
//! (made by `make_rng_fixtures.py` with PyTorch's CPU generator) must be reproduced to 1e-6.
//!
//! Keys: `randn_seed{S}_shape{a}x{b}…` = `torch.randn(shape, generator=torch.Generator().manual_seed(S))`;
//! `randn_seq_seed{S}` = two draws in a row from one generator, `(2,1,4,4)` then `(3,5)`, flattened
//! and concatenated.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use candle_unet2d::rng::Generator;

const TOL: f32 = 1e-6;

fn fixture() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rng/torch_randn.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Largest |a - b|, after checking the lengths agree.
fn max_abs_diff(key: &str, ours: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(ours.len(), expected.len(), "{key}: length");
    ours.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// `randn_seed{S}_shape{a}x{b}…` → (S, [a, b, …]).
fn parse_single(key: &str) -> Option<(u64, Vec<usize>)> {
    let rest = key.strip_prefix("randn_seed")?;
    let (seed, shape) = rest.split_once("_shape")?;
    let seed = seed.parse().ok()?;
    let shape = shape.split('x').map(|d| d.parse().ok()).collect::<Option<Vec<usize>>>()?;
    Some((seed, shape))
}

#[test]
fn fixture_has_the_expected_keys() {
    let t = fixture();
    let singles = t.keys().filter(|k| parse_single(k).is_some()).count();
    let seqs = t.keys().filter(|k| k.starts_with("randn_seq_seed")).count();
    assert_eq!(singles, 27, "3 seeds × 9 shapes");
    assert_eq!(seqs, 3);
    assert_eq!(singles + seqs, t.len(), "unrecognised keys: {:?}", t.keys().collect::<Vec<_>>());
}

#[test]
fn single_draws_match_torch() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (key, expected) in fixture() {
        let Some((seed, shape)) = parse_single(&key) else {
            continue;
        };
        assert_eq!(expected.dims(), shape.as_slice(), "{key}: stored shape");
        let mut g = Generator::new();
        g.manual_seed(seed);
        let ours = g.randn(&shape);
        let err = max_abs_diff(&key, &ours, &flat(&expected));
        if err > TOL {
            failures.push(format!("{key}: max |ours - torch| = {err:e}"));
        }
        checked += 1;
    }
    assert!(checked > 0, "no randn_seed keys in the fixture");
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// Draws of 16 or more elements go through `normal_fill_16_AVX2`, reproduced with plain IEEE float32
/// operations (no C library calls), so they must match bit for bit on every platform.
#[test]
fn large_draws_are_bit_identical() {
    let mut checked = 0;
    for (key, expected) in fixture() {
        let Some((seed, shape)) = parse_single(&key) else {
            continue;
        };
        if shape.iter().product::<usize>() < 16 {
            continue;
        }
        let ours = Generator::from_seed(seed).randn(&shape);
        let expected = flat(&expected);
        let differing = ours.iter().zip(&expected).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differing, 0, "{key}: {differing} of {} values differ in some bit", expected.len());
        checked += 1;
    }
    assert_eq!(checked, 18);
}

#[test]
fn single_draws_as_tensors_match_torch() {
    for (key, expected) in fixture() {
        let Some((seed, shape)) = parse_single(&key) else {
            continue;
        };
        let t = Generator::from_seed(seed).randn_tensor(&shape, &Device::Cpu).unwrap();
        assert_eq!(t.dtype(), candle_core::DType::F32, "{key}");
        assert_eq!(t.dims(), expected.dims(), "{key}");
        let err = max_abs_diff(&key, &flat(&t), &flat(&expected));
        assert!(err <= TOL, "{key}: max |ours - torch| = {err:e}");
    }
}

#[test]
fn successive_draws_match_torch() {
    let mut checked = 0;
    for (key, expected) in fixture() {
        let Some(seed) = key.strip_prefix("randn_seq_seed") else {
            continue;
        };
        let seed: u64 = seed.parse().unwrap_or_else(|e| panic!("{key}: bad seed: {e}"));
        let mut g = Generator::new();
        g.manual_seed(seed);
        let mut ours = g.randn(&[2, 1, 4, 4]);
        ours.extend(g.randn(&[3, 5]));
        let err = max_abs_diff(&key, &ours, &flat(&expected));
        assert!(err <= TOL, "{key}: max |ours - torch| = {err:e}");
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[test]
fn clone_continues_identically() {
    let mut a = Generator::from_seed(42);
    a.randn(&[5]); // leaves a cached normal sample
    let mut b = a.clone();
    assert_eq!(a.randn(&[3]), b.randn(&[3]));
    assert_eq!(a.randn(&[2, 17]), b.randn(&[2, 17]));
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
