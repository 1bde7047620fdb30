//! BatchNorm over the N·HW values of each channel, with an optional fused ReLU.
//!
//! With m = N·HW, per channel c:
//! - train forward: μ = Σx/m, σ² = Σ(x−μ)²/m (two passes, in f64), x̂ = (x−μ)/sqrt(σ²+ε),
//!   y = relu?(γ x̂ + β); running = (1−mom)·running + mom·[μ | σ²·m/(m−1)];
//! - backward, with dy' = dy·[y > 0] under ReLU (else dy): dβ = Σdy', dγ = Σdy'·x̂ (in f64),
//!   dx = γ/sqrt(σ²+ε) · (dy' − dβ/m − x̂·dγ/m).
//!
//! Statistics run in parallel over channels (one task sums all of a channel's planes, in image
//! order, with [`LANES`] f64 accumulators per plane combined in a fixed tree), so they do not depend
//! on the thread count. The elementwise maps run in parallel over (image, channel) planes, computed
//! in f64 with indexed loops the compiler vectorizes. The train forward reads x twice (the second pass mostly from
//! cache: a channel of n128 c16 32×32 is 512 KiB) and writes y; the backward reads x, y, dy twice
//! and writes dx.

use super::wide;
use crate::backend::{BnShape, Real};
use rayon::prelude::*;

/// Independent f64 accumulators per plane sum: they break the chain of dependent adds (4 cycles
/// each) and let the compiler use SIMD; combined by [`combine`] in a fixed order.
const LANES: usize = 8;

/// Σ of the lanes, pairwise in a fixed order.
fn combine(a: [f64; LANES]) -> f64 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// The `hw`-long plane of image b, channel c.
fn plane<'a, T>(s: &BnShape, x: &'a [T], b: usize, c: usize) -> &'a [T] {
    &x[(b * s.c + c) * s.hw..][..s.hw]
}

/// Σ_i f(i) over 0..len, in LANES interleaved accumulators.
#[inline(always)]
fn lane_sum<const K: usize>(len: usize, mut f: impl FnMut(usize) -> [f64; K]) -> [f64; K] {
    let mut acc = [[0.0; LANES]; K];
    let full = len / LANES * LANES;
    for i0 in (0..full).step_by(LANES) {
        for l in 0..LANES {
            let v = f(i0 + l);
            for k in 0..K {
                acc[k][l] += v[k];
            }
        }
    }
    for i in full..len {
        let v = f(i);
        for k in 0..K {
            acc[k][i - full] += v[k];
        }
    }
    acc.map(combine)
}

/// Σ_b Σ_i f(plane values at i) over a channel's planes, in image order.
fn channel_sum<const K: usize>(s: &BnShape, mut plane_sum: impl FnMut(usize) -> [f64; K]) -> [f64; K] {
    let mut total = [0.0; K];
    for b in 0..s.n {
        let p = plane_sum(b);
        for k in 0..K {
            total[k] += p[k];
        }
    }
    total
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
            let [sum] = channel_sum(s, |b| {
                let p = plane(s, x, b, c);
                lane_sum(p.len(), |i| [wide(p[i])])
            });
            let mean = sum / m;
            let [ss] = channel_sum(s, |b| {
                let p = plane(s, x, b, c);
                lane_sum(p.len(), |i| {
                    let d = wide(p[i]) - mean;
                    [d * d]
                })
            });
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
    // The mask compiles to a select, so the loops below vectorize.
    let masked = |dy: T, y: T| if s.relu && y <= T::zero() { 0.0 } else { wide(dy) };
    let mean = |c: usize| wide(saved[c]);
    let invstd = |c: usize| wide(saved[s.c + c]);

    // (Σdy', Σdy'·x̂) per channel.
    let sums: Vec<(f64, f64)> = (0..s.c)
        .into_par_iter()
        .map(|c| {
            let (mu, is) = (mean(c), invstd(c));
            let [dbeta, dgamma] = channel_sum(s, |b| {
                let (xp, yp, dyp) = (plane(s, x, b, c), plane(s, y, b, c), plane(s, dy, b, c));
                lane_sum(xp.len(), |i| {
                    let d = masked(dyp[i], yp[i]);
                    [d, d * (wide(xp[i]) - mu) * is]
                })
            });
            (dbeta, dgamma)
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
        let n = dxp.len();
        let (xp, yp, dyp) = (&xp[..n], &yp[..n], &dyp[..n]);
        for i in 0..n {
            let xhat = (wide(xp[i]) - mu) * is;
            dxp[i] = T::from_f64(k * (masked(dyp[i], yp[i]) - dbeta - xhat * dgamma));
        }
    });
}
