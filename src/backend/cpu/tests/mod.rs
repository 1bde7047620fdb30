//! Tests of the CPU backend: finite-difference gradient checks in f64, comparisons with naive
//! reference loops, f32 against f64, determinism and error handling.

mod determinism;
mod direct;
mod gradcheck;
mod reference;

use super::Cpu;
use crate::backend::Backend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(super) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `len` draws from U(−1, 1).
pub(super) fn uniform(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(super) fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// `v` widened to f64, exactly.
pub(super) fn to_f64<T: crate::backend::Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&x| crate::backend::Real::to_f64(x)).collect()
}

/// Largest |a − b| relative to the largest |b|: the error measure for whole tensors.
pub(super) fn rel_err<A: Copy + Into<f64>>(a: &[A], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    a.iter().zip(b).fold(0.0f64, |m, (&x, y)| m.max((x.into() - y).abs())) / scale
}

/// Asserts `a` ≈ `b` with [`rel_err`] ≤ tol.
#[track_caller]
pub(super) fn assert_close<A: Copy + Into<f64>>(what: &str, a: &[A], b: &[f64], tol: f64) {
    let e = rel_err(a, b);
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

/// Checks `analytic` = ∇loss(x) against central differences (loss(x + h eᵢ) − loss(x − h eᵢ)) / 2h.
///
/// Why h = 1e-6 and tolerance 1e-6: the truncation error is h²/6·|∂³L| ≈ 1e-13 for these smooth
/// (mostly linear) losses, and the rounding error is about ε·Σ|terms of L|/h ≈ 1e-16·100/1e-6 = 1e-8
/// for losses of ≤ 100 O(1) terms, so a correct gradient agrees to ~1e-8 while any indexing or
/// formula error shows up at O(1). Each component is compared relative to the gradient's largest
/// component, so that components near zero are not held to an impossible relative standard.
#[track_caller]
pub(super) fn check_gradient(what: &str, x: &[f64], analytic: &[f64], loss: impl Fn(&[f64]) -> f64) {
    const H: f64 = 1e-6;
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let mut xp = x.to_vec();
    let numeric: Vec<f64> = (0..x.len())
        .map(|i| {
            xp[i] = x[i] + H;
            let up = loss(&xp);
            xp[i] = x[i] - H;
            let down = loss(&xp);
            xp[i] = x[i];
            (up - down) / (2.0 * H)
        })
        .collect();
    assert!(numeric.iter().any(|g| g.abs() > 1e-3), "{what}: gradient is (nearly) zero; test is vacuous");
    assert_close(what, analytic, &numeric, 1e-6);
}

#[test]
fn names() {
    assert_eq!(Cpu::<f32>::new().name(), "cpu-f32");
    assert_eq!(Cpu::<f64>::default().name(), "cpu-f64");
}

#[test]
fn memory_round_trip_and_length_errors() {
    let cpu = Cpu::<f32>::new();
    let mut buf = cpu.alloc(4).unwrap();
    assert_eq!(buf, vec![0.0; 4]);
    cpu.upload(&[1.0, 2.0, 3.0, 4.0], &mut buf).unwrap();
    cpu.zero(cpu.view_mut(&mut buf, 1..3));
    assert_eq!(cpu.view(&buf, 0..4), &[1.0, 0.0, 0.0, 4.0]);
    let mut out = [0.0f32; 4];
    cpu.download(&buf, &mut out).unwrap();
    assert_eq!(out, [1.0, 0.0, 0.0, 4.0]);
    assert!(cpu.upload(&[1.0; 3], &mut buf).is_err());
    assert!(cpu.download(&buf, &mut [0.0; 5]).is_err());
    let mut labels = cpu.alloc_labels(2).unwrap();
    cpu.upload_labels(&[3, 1], &mut labels).unwrap();
    assert_eq!(labels, vec![3, 1]);
    assert!(cpu.upload_labels(&[1], &mut labels).is_err());
}
