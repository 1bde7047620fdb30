//! BatchNorm over the N·HW values of each channel, with an optional fused ReLU.
//!
//! With m = N·HW, per channel c:
//! - train forward: μ = Σx/m, σ² = Σ(x−μ)²/m (two passes, in f64), x̂ = (x−μ)/sqrt(σ²+ε),
//!   y = relu?(γ x̂ + β); running = (1−mom)·running + mom·[μ | σ²·m/(m−1)];
//! - backward, with dy' = dy·[y > 0] under ReLU (else dy): dβ = Σdy', dγ = Σdy'·x̂ (in f64),
//!   dx = γ/sqrt(σ²+ε) · (dy' − dβ/m − x̂·dγ/m).
//!
//! Statistics run in parallel over channels, the elementwise maps over (image, channel) planes.
//! The train forward reads x twice and writes y; the backward reads x, y, dy twice and writes dx.

use super::wide;
use crate::backend::{BnShape, Real};
use rayon::prelude::*;

/// The `hw`-long planes of channel c, one per image.
fn planes<'a, T>(s: &'a BnShape, x: &'a [T], c: usize) -> impl Iterator<Item = &'a [T]> {
    (0..s.n).map(move |b| &x[(b * s.c + c) * s.hw..][..s.hw])
}

fn count(s: &BnShape) -> f64 {
    (s.n * s.hw) as f64
}

/// Per channel (μ, biased σ²), two passes in f64.
fn channel_stats<T: Real>(s: &BnShape, x: &[T]) -> Vec<(f64, f64)> {
    let m = count(s);
    (0..s.c)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = planes(s, x, c).flatten().map(|&v| wide(v)).sum();
            let mean = sum / m;
            let ss: f64 = planes(s, x, c).flatten().map(|&v| (wide(v) - mean).powi(2)).sum();
            (mean, ss / m)
        })
        .collect()
}

/// The per-channel affine map y = relu?((x − μ)·a + β), with a = γ/sqrt(σ²+ε).
#[derive(Clone, Copy)]
struct Normalize {
    mean: f64,
    scale: f64,
    shift: f64,
}

/// y = relu?((x − μ_c)·a_c + β_c), plane by plane, computed in f64.
fn apply<T: Real>(s: &BnShape, maps: &[Normalize], x: &[T], y: &mut [T]) {
    if y.is_empty() {
        return;
    }
    y.par_chunks_mut(s.hw).zip(x.par_chunks(s.hw)).enumerate().for_each(|(i, (yp, xp))| {
        let Normalize { mean, scale, shift } = maps[i % s.c];
        for (o, &v) in yp.iter_mut().zip(xp) {
            let out = (wide(v) - mean) * scale + shift;
            *o = T::from_f64(if s.relu { out.max(0.0) } else { out });
        }
    });
}

fn check(s: &BnShape, x: usize, y: usize, affine: usize, stats: usize) {
    assert_eq!(x, s.len(), "batchnorm: x length");
    assert_eq!(y, s.len(), "batchnorm: y length");
    assert_eq!(affine, 2 * s.c, "batchnorm: affine length");
    assert_eq!(stats, 2 * s.c, "batchnorm: statistics length");
}

/// Training forward: batch statistics, `saved` = [μ | 1/sqrt(σ²+ε)], running statistics updated.
pub(crate) fn forward_train<T: Real>(
    s: &BnShape,
    x: &[T],
    affine: &[T],
    running: &mut [T],
    saved: &mut [T],
    y: &mut [T],
) {
    check(s, x.len(), y.len(), affine.len(), running.len());
    assert_eq!(saved.len(), 2 * s.c, "batchnorm: saved length");
    let m = count(s);
    // PyTorch refuses m = 1; there the biased variance (0) is what we can offer.
    let unbias = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
    let mom = s.momentum;
    let (gamma, beta) = affine.split_at(s.c);
    let maps: Vec<Normalize> = channel_stats(s, x)
        .into_iter()
        .enumerate()
        .map(|(c, (mean, var))| {
            let invstd = 1.0 / (var + s.eps).sqrt();
            saved[c] = T::from_f64(mean);
            saved[s.c + c] = T::from_f64(invstd);
            let (rm, rv) = (wide(running[c]), wide(running[s.c + c]));
            running[c] = T::from_f64((1.0 - mom) * rm + mom * mean);
            running[s.c + c] = T::from_f64((1.0 - mom) * rv + mom * var * unbias);
            Normalize { mean, scale: wide(gamma[c]) * invstd, shift: wide(beta[c]) }
        })
        .collect();
    apply(s, &maps, x, y);
}

/// Eval forward: normalize with the running statistics [mean | var].
pub(crate) fn forward_eval<T: Real>(s: &BnShape, x: &[T], affine: &[T], running: &[T], y: &mut [T]) {
    check(s, x.len(), y.len(), affine.len(), running.len());
    let maps: Vec<Normalize> = (0..s.c)
        .map(|c| {
            let invstd = 1.0 / (wide(running[s.c + c]) + s.eps).sqrt();
            Normalize {
                mean: wide(running[c]),
                scale: wide(affine[c]) * invstd,
                shift: wide(affine[s.c + c]),
            }
        })
        .collect();
    apply(s, &maps, x, y);
}

/// Backward of [`forward_train`]: dx and d_affine = [dγ | dβ], both overwritten.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Real>(
    s: &BnShape,
    x: &[T],
    y: &[T],
    dy: &[T],
    affine: &[T],
    saved: &[T],
    dx: &mut [T],
    d_affine: &mut [T],
) {
    check(s, x.len(), y.len(), affine.len(), saved.len());
    assert_eq!(dy.len(), s.len(), "batchnorm: dy length");
    assert_eq!(dx.len(), s.len(), "batchnorm: dx length");
    assert_eq!(d_affine.len(), 2 * s.c, "batchnorm: d_affine length");
    let m = count(s);
    let masked = |dy: T, y: T| if s.relu && y <= T::zero() { 0.0 } else { wide(dy) };
    let mean = |c: usize| wide(saved[c]);
    let invstd = |c: usize| wide(saved[s.c + c]);

    // (Σdy', Σdy'·x̂) per channel.
    let sums: Vec<(f64, f64)> = (0..s.c)
        .into_par_iter()
        .map(|c| {
            let (mu, is) = (mean(c), invstd(c));
            let mut sum = (0.0, 0.0);
            for ((xp, yp), dyp) in planes(s, x, c).zip(planes(s, y, c)).zip(planes(s, dy, c)) {
                for ((&xv, &yv), &dv) in xp.iter().zip(yp).zip(dyp) {
                    let d = masked(dv, yv);
                    sum.0 += d;
                    sum.1 += d * (wide(xv) - mu) * is;
                }
            }
            sum
        })
        .collect();
    for (c, &(dbeta, dgamma)) in sums.iter().enumerate() {
        d_affine[c] = T::from_f64(dgamma);
        d_affine[s.c + c] = T::from_f64(dbeta);
    }
    if dx.is_empty() {
        return;
    }

    let planes_in = x.par_chunks(s.hw).zip(y.par_chunks(s.hw)).zip(dy.par_chunks(s.hw));
    dx.par_chunks_mut(s.hw).zip(planes_in).enumerate().for_each(|(i, (dxp, ((xp, yp), dyp)))| {
        let c = i % s.c;
        let (mu, is) = (mean(c), invstd(c));
        let (dbeta, dgamma) = (sums[c].0 / m, sums[c].1 / m);
        let k = wide(affine[c]) * is;
        for (((o, &xv), &yv), &dv) in dxp.iter_mut().zip(xp).zip(yp).zip(dyp) {
            let xhat = (wide(xv) - mu) * is;
            *o = T::from_f64(k * (masked(dv, yv) - dbeta - xhat * dgamma));
        }
    });
}
