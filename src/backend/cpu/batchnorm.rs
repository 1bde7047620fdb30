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
//! on the thread count. The elementwise maps run in parallel over (image, channel) planes as
//! per-channel affine maps whose coefficients are computed in f64 and applied in the element type
//! (as PyTorch does), in loops the compiler vectorizes. The train forward reads x twice (the second pass mostly from
//! cache: a channel of n128 c16 32×32 is 512 KiB) and writes y; the backward reads x, y, dy twice
//! and writes dx.

use super::wide;
use crate::backend::{BnBackward, BnEval, BnShape, BnTrain, Real};
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

/// Σ_i f(a[i], b[i], c[i]) over three equally long planes (pass the same plane for unused ones),
/// element i into accumulator i mod LANES. Chunks of exactly LANES elements carry no bounds checks,
/// so the compiler can vectorize the lanes.
#[inline(always)]
fn lane_sum<T: Real, const K: usize>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> [f64; K]) -> [f64; K] {
    let n = a.len();
    let (b, c) = (&b[..n], &c[..n]);
    let mut acc = [[0.0; LANES]; K];
    let chunks = a.chunks_exact(LANES).zip(b.chunks_exact(LANES)).zip(c.chunks_exact(LANES));
    for ((a, b), c) in chunks {
        for l in 0..LANES {
            let v = f(a[l], b[l], c[l]);
            for k in 0..K {
                acc[k][l] += v[k];
            }
        }
    }
    let full = n / LANES * LANES;
    for i in full..n {
        let v = f(a[i], b[i], c[i]);
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
                lane_sum(p, p, p, |v, _, _| [wide(v)])
            });
            let mean = sum / m;
            let [ss] = channel_sum(s, |b| {
                let p = plane(s, x, b, c);
                lane_sum(p, p, p, |v, _, _| {
                    let d = wide(v) - mean;
                    [d * d]
                })
            });
            (mean, ss / m)
        })
        .collect()
}

/// The per-channel affine map y = relu?(a·x + b) that normalizes: a = γ/sqrt(σ²+ε), b = β − μ·a
/// (computed in f64, applied in T).
#[derive(Clone, Copy)]
struct Normalize<T> {
    a: T,
    b: T,
}

impl<T: Real> Normalize<T> {
    fn new(mean: f64, invstd: f64, gamma: f64, beta: f64) -> Self {
        let a = gamma * invstd;
        Normalize { a: T::from_f64(a), b: T::from_f64(beta - mean * a) }
    }
}

/// y = relu?(a_c·x + b_c), plane by plane. Reads x, writes y.
fn apply<T: Real>(s: &BnShape, maps: &[Normalize<T>], x: &[T], y: &mut [T]) {
    if y.is_empty() {
        return;
    }
    y.par_chunks_mut(s.hw).zip(x.par_chunks(s.hw)).enumerate().for_each(|(i, (yp, xp))| {
        let Normalize { a, b } = maps[i % s.c];
        let xp = &xp[..yp.len()];
        if s.relu {
            for (o, &v) in yp.iter_mut().zip(xp) {
                *o = (a * v + b).max(T::zero());
            }
        } else {
            for (o, &v) in yp.iter_mut().zip(xp) {
                *o = a * v + b;
            }
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
pub(crate) fn forward_train<T: Real>(a: BnTrain<'_, &[T], &mut [T]>) {
    let BnTrain { s, x, affine, running, saved, y } = a;
    check(s, x.len(), y.len(), affine.len(), running.len());
    assert_eq!(saved.len(), 2 * s.c, "batchnorm: saved length");
    let m = count(s);
    // PyTorch refuses m = 1; there the biased variance (0) is what we can offer.
    let unbias = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
    let mom = s.momentum;
    let (gamma, beta) = affine.split_at(s.c);
    let maps: Vec<Normalize<T>> = channel_stats(s, x)
        .into_iter()
        .enumerate()
        .map(|(c, (mean, var))| {
            let invstd = 1.0 / (var + s.eps).sqrt();
            saved[c] = T::from_f64(mean);
            saved[s.c + c] = T::from_f64(invstd);
            let (rm, rv) = (wide(running[c]), wide(running[s.c + c]));
            running[c] = T::from_f64((1.0 - mom) * rm + mom * mean);
            running[s.c + c] = T::from_f64((1.0 - mom) * rv + mom * var * unbias);
            Normalize::new(mean, invstd, wide(gamma[c]), wide(beta[c]))
        })
        .collect();
    apply(s, &maps, x, y);
}

/// Eval forward: normalize with the running statistics [mean | var].
pub(crate) fn forward_eval<T: Real>(a: BnEval<'_, &[T], &mut [T]>) {
    let BnEval { s, x, affine, running, y } = a;
    check(s, x.len(), y.len(), affine.len(), running.len());
    let maps: Vec<Normalize<T>> = (0..s.c)
        .map(|c| {
            let invstd = 1.0 / (wide(running[s.c + c]) + s.eps).sqrt();
            Normalize::new(wide(running[c]), invstd, wide(affine[c]), wide(affine[s.c + c]))
        })
        .collect();
    apply(s, &maps, x, y);
}

/// Backward of [`forward_train`]: dx and d_affine = [dγ | dβ], both overwritten.
pub(crate) fn backward<T: Real>(a: BnBackward<'_, &[T], &mut [T]>) {
    let BnBackward { s, x, y, dy, affine, saved, dx, d_affine } = a;
    check(s, x.len(), y.len(), affine.len(), saved.len());
    assert_eq!(dy.len(), s.len(), "batchnorm: dy length");
    assert_eq!(dx.len(), s.len(), "batchnorm: dx length");
    assert_eq!(d_affine.len(), 2 * s.c, "batchnorm: d_affine length");
    let m = count(s);
    // The mask compiles to a select, so the loops below vectorize.
    let masked = |dy: T, y: T| if s.relu && y <= T::zero() { T::zero() } else { dy };
    let mean = |c: usize| wide(saved[c]);
    let invstd = |c: usize| wide(saved[s.c + c]);

    // (Σdy', Σdy'·x̂) per channel.
    let sums: Vec<(f64, f64)> = (0..s.c)
        .into_par_iter()
        .map(|c| {
            let (mu, is) = (mean(c), invstd(c));
            let [dbeta, dgamma] = channel_sum(s, |b| {
                let (xp, yp, dyp) = (plane(s, x, b, c), plane(s, y, b, c), plane(s, dy, b, c));
                lane_sum(xp, yp, dyp, |xv, yv, dv| {
                    let d = wide(masked(dv, yv));
                    [d, d * (wide(xv) - mu) * is]
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

    // dx = k·(dy' − dβ/m − (x − μ)·is·dγ/m) = k·dy' + u·x + v per channel, with k = γ·is,
    // u = −k·is·dγ/m and v = −k·dβ/m − u·μ computed in f64 and applied in T.
    let coefs: Vec<[T; 3]> = (0..s.c)
        .map(|c| {
            let k = wide(affine[c]) * invstd(c);
            let u = -k * invstd(c) * sums[c].1 / m;
            let v = -k * sums[c].0 / m - u * mean(c);
            [k, u, v].map(T::from_f64)
        })
        .collect();
    let planes_in = x.par_chunks(s.hw).zip(y.par_chunks(s.hw)).zip(dy.par_chunks(s.hw));
    dx.par_chunks_mut(s.hw).zip(planes_in).enumerate().for_each(|(i, (dxp, ((xp, yp), dyp)))| {
        let [k, u, v] = coefs[i % s.c];
        let n = dxp.len();
        let (xp, yp, dyp) = (&xp[..n], &yp[..n], &dyp[..n]);
        for i in 0..n {
            dxp[i] = k * masked(dyp[i], yp[i]) + (u * xp[i] + v);
        }
    });
}
