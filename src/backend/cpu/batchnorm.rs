//! BatchNorm over the N·HW values of each channel, with an optional fused ReLU.
//!
//! With m = N·HW, per channel c:
//! - train forward: μ = Σx/m, σ² = Σ(x−μ)²/m (two passes), x̂ = (x−μ)/sqrt(σ²+ε),
//!   y = relu?(γ x̂ + β); running = (1−mom)·running + mom·[μ | σ²·m/(m−1)];
//! - backward, with dy' = dy·[y > 0] under ReLU (else dy): dβ = Σdy', dγ = Σdy'·x̂,
//!   dx = γ/sqrt(σ²+ε) · (dy' − dβ/m − x̂·dγ/m).
//!
//! Statistics run in parallel over channels: one task sums all of a channel's planes, in image
//! order, in blocks of at most [`BLOCK`] elements summed in [`LANES`] lanes of the element type
//! (combined in a fixed tree), the block sums added in f64. So they do not depend on the thread
//! count. The elementwise maps run in parallel over (image, channel) planes as per-channel affine
//! maps whose coefficients are computed in f64 and applied in the element type (as PyTorch does).
//! All loops are compiled for the CPU's widest vectors ([`vectorize::run`]), with the same bits.
//! The train forward reads x twice (the second pass mostly from cache: a channel of n128 c16 32×32
//! is 512 KiB) and writes y; the backward reads x, y, dy twice and writes dx.

use super::direct3x3::Simd;
use super::{vectorize, wide};
use crate::backend::{BnBackward, BnEval, BnShape, BnTrain, Real};
use rayon::prelude::*;

/// Accumulators per plane sum, in the element type: element i goes to lane i mod LANES, so the
/// loop is one vector operation per LANES elements at any vector width, and 16 lanes break the
/// chain of dependent adds. Combined by [`combine`] in a fixed tree.
const LANES: usize = 16;

/// Elements summed in the element type before the sum is widened to f64 (whole planes while they
/// fit). Element i of a plane goes to lane i mod 16, so a lane holds at most 64 + BLOCK/hw terms
/// of a block (64 for planes of 1024 and more, 128 at 16 values, 320 at 4): an f32 lane sum
/// carries a relative error of at most that many times 2⁻²⁴ of its terms' magnitude (4e-6 to 2e-5).
const BLOCK: usize = 64 * LANES;

/// Σ of the lanes, pairwise in a fixed order (lane l with lane l + 8, then l + 4, l + 2, l + 1).
#[inline(always)]
fn combine<T: Real>(mut a: [T; LANES]) -> T {
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            a[l] = a[l] + a[l + half];
        }
        half /= 2;
    }
    a[0]
}

/// The `hw`-long plane of image b, channel c.
fn plane<'a, T>(s: &BnShape, x: &'a [T], b: usize, c: usize) -> &'a [T] {
    &x[(b * s.c + c) * s.hw..][..s.hw]
}

/// acc[k][i mod LANES] += f(a[i], b[i], c[i])[k] over three equally long slices (pass the same
/// slice for unused ones). Chunks of exactly LANES elements carry no bounds checks, so the compiler
/// vectorizes the lanes (with the widest vectors under [`vectorize::run`]).
#[inline(always)]
fn accumulate<T: Real, const K: usize>(
    acc: &mut [[T; LANES]; K],
    (a, b, c): (&[T], &[T], &[T]),
    f: &impl Fn(T, T, T) -> [T; K],
) {
    let n = a.len();
    let (b, c) = (&b[..n], &c[..n]);
    let chunks = a.chunks_exact(LANES).zip(b.chunks_exact(LANES)).zip(c.chunks_exact(LANES));
    for ((a, b), c) in chunks {
        for l in 0..LANES {
            let v = f(a[l], b[l], c[l]);
            for k in 0..K {
                acc[k][l] = acc[k][l] + v[k];
            }
        }
    }
    let full = n / LANES * LANES;
    for i in full..n {
        let v = f(a[i], b[i], c[i]);
        for k in 0..K {
            acc[k][i - full] = acc[k][i - full] + v[k];
        }
    }
}

/// Σ over a channel's planes (`planes(b)` gives image b's three planes) of Σ_i f(values at i):
/// in image order, each plane in pieces of at most [`BLOCK`] elements, accumulated in T lanes
/// ([`accumulate`]) until the next piece would take them past BLOCK elements; then the lanes are
/// combined and added to the f64 total. The blocks depend on the shape alone.
#[inline(always)]
fn channel_sum<'a, T: Real, const K: usize>(
    s: &BnShape,
    planes: impl Fn(usize) -> (&'a [T], &'a [T], &'a [T]),
    f: impl Fn(T, T, T) -> [T; K],
) -> [f64; K] {
    let mut total = [0.0; K];
    let mut acc = [[T::zero(); LANES]; K];
    let mut held = 0;
    let mut flush = |acc: &mut [[T; LANES]; K]| {
        for (t, lanes) in total.iter_mut().zip(acc.iter_mut()) {
            *t += wide(combine(*lanes));
            *lanes = [T::zero(); LANES];
        }
    };
    for b in 0..s.n {
        let (x, y, z) = planes(b);
        for start in (0..s.hw).step_by(BLOCK) {
            let len = BLOCK.min(s.hw - start);
            if held + len > BLOCK {
                flush(&mut acc);
                held = 0;
            }
            let piece = |p: &'a [T]| &p[start..start + len];
            accumulate(&mut acc, (piece(x), piece(y), piece(z)), &f);
            held += len;
        }
    }
    flush(&mut acc);
    total
}

/// Items of `len` elements per parallel task: enough for 16 Ki elements, so that small maps (a
/// PreResNet-8 ×0.5 layer at 2×2 has 1024 planes of 4) do not pay a task per plane. Only how the
/// items are shared out depends on it, never a result.
fn per_task(len: usize) -> usize {
    (16 * 1024 / len.max(1)).max(1)
}

fn count(s: &BnShape) -> f64 {
    (s.n * s.hw) as f64
}

/// Per channel (μ, biased σ²), two passes: Σx, then Σ(x − μ)² with μ rounded to T (which adds
/// m·(μ − μ_T)² ≈ m·(2⁻²⁴μ)², negligible beside Σ(x − μ)² unless |μ| ≫ 2²⁴σ).
fn channel_stats<T: Real>(isa: Option<Simd>, s: &BnShape, x: &[T]) -> Vec<(f64, f64)> {
    let m = count(s);
    (0..s.c)
        .into_par_iter()
        .with_min_len(per_task(s.n * s.hw))
        .map(|c| {
            vectorize::run(
                isa,
                #[inline(always)]
                || {
                    let planes = |b| {
                        let p = plane(s, x, b, c);
                        (p, p, p)
                    };
                    let [sum] = channel_sum(
                        s,
                        planes,
                        #[inline(always)]
                        |v, _, _| [v],
                    );
                    let mean = sum / m;
                    let mean_t = T::from_f64(mean);
                    let [ss] = channel_sum(
                        s,
                        planes,
                        #[inline(always)]
                        |v, _, _| {
                            let d = v - mean_t;
                            [d * d]
                        },
                    );
                    (mean, ss / m)
                },
            )
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
fn apply<T: Real>(isa: Option<Simd>, s: &BnShape, maps: &[Normalize<T>], x: &[T], y: &mut [T]) {
    if y.is_empty() {
        return;
    }
    let planes = y.par_chunks_mut(s.hw).zip(x.par_chunks(s.hw)).enumerate();
    planes.with_min_len(per_task(s.hw)).for_each(|(i, (yp, xp))| {
        let Normalize { a, b } = maps[i % s.c];
        let xp = &xp[..yp.len()];
        vectorize::run(
            isa,
            #[inline(always)]
            || {
                if s.relu {
                    for (o, &v) in yp.iter_mut().zip(xp) {
                        *o = (a * v + b).max(T::zero());
                    }
                } else {
                    for (o, &v) in yp.iter_mut().zip(xp) {
                        *o = a * v + b;
                    }
                }
            },
        )
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
    forward_train_with(vectorize::widest(), a)
}

/// [`forward_train`] with its loops compiled for `isa` (the same bits for every `isa`).
pub(super) fn forward_train_with<T: Real>(isa: Option<Simd>, a: BnTrain<'_, &[T], &mut [T]>) {
    let BnTrain { s, x, affine, running, saved, y } = a;
    check(s, x.len(), y.len(), affine.len(), running.len());
    assert_eq!(saved.len(), 2 * s.c, "batchnorm: saved length");
    let m = count(s);
    // PyTorch refuses m = 1; there the biased variance (0) is what we can offer.
    let unbias = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
    let mom = s.momentum;
    let (gamma, beta) = affine.split_at(s.c);
    let maps: Vec<Normalize<T>> = channel_stats(isa, s, x)
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
    apply(isa, s, &maps, x, y);
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
    apply(vectorize::widest(), s, &maps, x, y);
}

/// Backward of [`forward_train`]: dx and d_affine = [dγ | dβ], both overwritten.
pub(crate) fn backward<T: Real>(a: BnBackward<'_, &[T], &mut [T]>) {
    backward_with(vectorize::widest(), a)
}

/// [`backward`] with its loops compiled for `isa` (the same bits for every `isa`).
pub(super) fn backward_with<T: Real>(isa: Option<Simd>, a: BnBackward<'_, &[T], &mut [T]>) {
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

    // (Σdy', Σdy'·x̂) per channel, the second as is·Σdy'·(x − μ).
    let sums: Vec<(f64, f64)> = (0..s.c)
        .into_par_iter()
        .with_min_len(per_task(s.n * s.hw))
        .map(|c| {
            let mu = saved[c];
            vectorize::run(
                isa,
                #[inline(always)]
                || {
                    let planes = |b| (plane(s, x, b, c), plane(s, y, b, c), plane(s, dy, b, c));
                    let [dbeta, dxmu] = channel_sum(
                        s,
                        planes,
                        #[inline(always)]
                        |xv, yv, dv| {
                            let d = masked(dv, yv);
                            [d, d * (xv - mu)]
                        },
                    );
                    (dbeta, dxmu * invstd(c))
                },
            )
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
    let planes = dx.par_chunks_mut(s.hw).zip(planes_in).enumerate();
    planes.with_min_len(per_task(s.hw)).for_each(|(i, (dxp, ((xp, yp), dyp)))| {
        let [k, u, v] = coefs[i % s.c];
        let n = dxp.len();
        let (xp, yp, dyp) = (&xp[..n], &yp[..n], &dyp[..n]);
        vectorize::run(
            isa,
            #[inline(always)]
            || {
                for i in 0..n {
                    dxp[i] = k * masked(dyp[i], yp[i]) + (u * xp[i] + v);
                }
            },
        )
    });
}

#[cfg(test)]
mod tests {
    use super::super::tests::bn_forward;
    use super::*;

    /// The reduction order is part of the result's bits, so it is pinned here on a sum whose f32
    /// rounding shows it: 2²⁴ followed by 1.0s. In f32, 2²⁴ + 1 rounds back to 2²⁴, so every 1.0
    /// that meets the 2²⁴ inside its block's lane 0 is lost, and none is lost once the block is
    /// widened to f64. With lanes of 16 and blocks of 1024 elements (whole planes of 1024, or four
    /// planes of 256), lane 0 of the first block holds 2²⁴ and 63 lost ones; lanes 1–15 hold 64
    /// each (960 in all, exact in the tree); the second block adds 1024. The sum is
    /// 2²⁴ + 1984, not the exact 2²⁴ + 2047. Other block sizes lose a different number of ones
    /// (checked: 5 at blocks of 80, 1 at blocks of 4), and one block for all 2048 would lose 127.
    #[test]
    fn channel_sums_lose_exactly_the_bits_of_their_documented_order() {
        for (n, hw) in [(2, 1024), (8, 256)] {
            let s = BnShape { n, c: 1, hw, eps: 1e-5, momentum: 0.1, relu: false };
            let mut x = vec![1.0f32; n * hw];
            x[0] = 16_777_216.0;
            let [sum] = channel_sum(
                &s,
                |b| {
                    let p = plane(&s, &x, b, 0);
                    (p, p, p)
                },
                |v, _, _| [v],
            );
            assert_eq!(sum, 16_777_216.0 + 1984.0, "n {n}, hw {hw}");
        }
    }

    /// One value per channel (m = 1): PyTorch refuses it; here the batch variance is 0 and the
    /// running variance decays as (1 − mom)·var without the m/(m − 1) = ∞ correction.
    #[test]
    fn a_single_value_per_channel_keeps_the_running_variance_finite() {
        let s = BnShape { n: 1, c: 2, hw: 1, eps: 1e-5, momentum: 0.1, relu: false };
        let mut running = [0.0f64, 0.0, 1.0, 4.0];
        let (y, _) = bn_forward(&s, &[3.0, -2.0], &[1.0, 1.0, 0.0, 0.0], &mut running);
        assert_eq!(running, [0.1 * 3.0, 0.1 * -2.0, 0.9, 0.9 * 4.0]);
        assert_eq!(y, [0.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "batchnorm: x length")]
    fn a_short_input_is_refused_by_name() {
        let s = BnShape { n: 2, c: 1, hw: 4, eps: 1e-5, momentum: 0.1, relu: false };
        bn_forward(&s, &[1.0f32; 7], &[1.0, 0.0], &mut [0.0, 1.0]);
    }
}
