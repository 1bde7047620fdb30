//! Tests of the CPU backend: finite-difference gradient checks in f64, comparisons with naive
//! reference loops, f32 against f64, determinism and error handling.

mod adaptive;
mod determinism;
mod direct;
mod gradcheck;
mod reference;
mod vectorize;

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

/// Whether this CPU takes the direct 3×3 path (AVX2 + FMA): asked with a shape that qualifies.
pub(super) fn cpu_has_direct_path() -> bool {
    let s = crate::backend::ConvShape { n: 1, c_in: 1, h: 8, w: 8, c_out: 16, kernel: 3, stride: 1, pad: 1 };
    super::direct3x3::applies(&s, s.c_out)
}

/// Whether `f` panics (its message still goes to stderr).
pub(super) fn panics(f: impl FnOnce() + std::panic::UnwindSafe) -> bool {
    std::panic::catch_unwind(f).is_err()
}

/// Largest |a − b| relative to the largest |b|: the error measure for whole tensors. Infinite when
/// any difference is not finite (a NaN or an infinity on either side), so that no tolerance accepts
/// it: a plain fold with `f64::max` would drop the NaNs.
pub(super) fn rel_err<A: Copy + Into<f64>>(a: &[A], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths");
    let mut worst = 0.0f64;
    for (&x, y) in a.iter().zip(b) {
        let d = (x.into() - y).abs();
        if !d.is_finite() {
            return f64::INFINITY;
        }
        worst = worst.max(d);
    }
    // Every b is finite here (a finite difference from a finite or infinite a needs a finite b).
    worst / b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE)
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
/// component, so that components near zero are not held to an impossible relative standard. A
/// non-finite component, analytic or numeric, fails (see [`rel_err`]).
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

/// A NaN or an infinity on either side is an error no tolerance accepts, in [`rel_err`],
/// [`assert_close`] and [`check_gradient`].
#[test]
fn non_finite_values_never_compare_close() {
    let want = [1.0, 2.0, 3.0];
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_eq!(rel_err(&[bad; 3], &want), f64::INFINITY, "{bad} against finite values");
        assert_eq!(rel_err(&[1.0, bad, 3.0], &want), f64::INFINITY, "one {bad} among finite values");
        assert_eq!(rel_err(&[1.0f32, 2.0, 3.0], &[1.0, f64::from(bad), 3.0]), f64::INFINITY, "{bad} in b");
        assert!(panics(|| assert_close("x", &[bad; 3], &want, 1e-6)), "assert_close accepts {bad}");
    }
    assert_eq!(rel_err(&[f32::INFINITY], &[f64::INFINITY]), f64::INFINITY, "inf − inf is NaN");
    // Finite values still measure as before: the largest difference over the largest |b|.
    assert_eq!(rel_err(&[1.0f32, 2.5, 3.0], &want), 0.5 / 3.0);

    // The loss x₀² + 2x₁ has gradient (2x₀, 2).
    let (x, loss) = ([0.5, -1.0], |x: &[f64]| x[0] * x[0] + 2.0 * x[1]);
    check_gradient("finite", &x, &[1.0, 2.0], loss);
    for bad in [f64::NAN, f64::INFINITY] {
        assert!(panics(|| check_gradient("analytic", &x, &[bad, 2.0], loss)), "analytic {bad} accepted");
        let numeric_bad = move |x: &[f64]| if x[0] > 0.5 { bad } else { loss(x) };
        assert!(panics(|| check_gradient("numeric", &x, &[1.0, 2.0], numeric_bad)), "numeric {bad} accepted");
    }
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

/// Training-mode BatchNorm forward on the CPU backend: (y, saved), updating `running`.
pub(super) fn bn_forward<T: crate::backend::Real>(
    s: &crate::backend::BnShape,
    x: &[T],
    affine: &[T],
    running: &mut [T],
) -> (Vec<T>, Vec<T>) {
    bn_forward_by(|a| Cpu::<T>::new().batchnorm_forward_train(a), s, x, affine, running)
}

/// [`bn_forward`] with BatchNorm's loops compiled for `isa` (None: the baseline).
pub(super) fn bn_forward_with<T: crate::backend::Real>(
    isa: Option<super::direct3x3::Simd>,
    s: &crate::backend::BnShape,
    x: &[T],
    affine: &[T],
    running: &mut [T],
) -> (Vec<T>, Vec<T>) {
    bn_forward_by(|a| super::batchnorm::forward_train_with(isa, a), s, x, affine, running)
}

/// (y, saved) of `forward` on NaN-filled outputs, updating `running`.
fn bn_forward_by<T: crate::backend::Real>(
    forward: impl FnOnce(crate::backend::BnTrain<'_, &[T], &mut [T]>),
    s: &crate::backend::BnShape,
    x: &[T],
    affine: &[T],
    running: &mut [T],
) -> (Vec<T>, Vec<T>) {
    let (mut y, mut saved) = (vec![T::nan(); s.len()], vec![T::nan(); 2 * s.c]);
    forward(crate::backend::BnTrain { s, x, affine, running, saved: &mut saved, y: &mut y });
    (y, saved)
}

/// BatchNorm backward on the CPU backend from a forward's y and saved statistics: (dx, d_affine).
pub(super) fn bn_backward<T: crate::backend::Real>(
    s: &crate::backend::BnShape,
    inputs: [&[T]; 5],
) -> (Vec<T>, Vec<T>) {
    bn_backward_by(|a| Cpu::<T>::new().batchnorm_backward(a), s, inputs)
}

/// [`bn_backward`] with BatchNorm's loops compiled for `isa` (None: the baseline).
pub(super) fn bn_backward_with<T: crate::backend::Real>(
    isa: Option<super::direct3x3::Simd>,
    s: &crate::backend::BnShape,
    inputs: [&[T]; 5],
) -> (Vec<T>, Vec<T>) {
    bn_backward_by(|a| super::batchnorm::backward_with(isa, a), s, inputs)
}

/// (dx, d_affine) of `backward` on NaN-filled outputs.
fn bn_backward_by<T: crate::backend::Real>(
    backward: impl FnOnce(crate::backend::BnBackward<'_, &[T], &mut [T]>),
    s: &crate::backend::BnShape,
    [x, y, dy, affine, saved]: [&[T]; 5],
) -> (Vec<T>, Vec<T>) {
    let (mut dx, mut d_affine) = (vec![T::nan(); s.len()], vec![T::nan(); 2 * s.c]);
    backward(crate::backend::BnBackward {
        s,
        x,
        y,
        dy,
        affine,
        saved,
        dx: &mut dx[..],
        d_affine: &mut d_affine[..],
    });
    (dx, d_affine)
}

/// One f32 SGD step on the CPU with the statistics sums, one per segment (NaN-filled before).
pub(super) fn sgd_with_sums(
    segments: &[crate::backend::Segment],
    w: &mut Vec<f32>,
    grads: &Vec<f32>,
    v: &mut Vec<f32>,
) -> Vec<crate::backend::StepSums> {
    let mut sums = vec![crate::backend::StepSums { ww: f64::NAN, ..Default::default() }; segments.len()];
    let a = crate::backend::SgdStep { segments, params: w, grads, momenta: v, sums: Some(&mut sums) };
    Cpu::<f32>::new().sgd_step(a).expect("a valid SGD step");
    sums
}
