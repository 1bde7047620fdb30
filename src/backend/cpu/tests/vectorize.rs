//! BatchNorm's loops compiled for the baseline, AVX2 and AVX-512 (`vectorize::run`) give the same
//! bits, and its lane sums (blocks of up to 1024 elements in the element type, then f64) match the
//! formulas computed one value at a time in f64.

use super::super::direct3x3::{self, Simd};
use super::super::vectorize;
use super::{assert_close, bn_backward_with, bn_forward_with, rng, to_f32, to_f64, uniform};
use crate::backend::{BnShape, Real};

/// Shapes: ragged lanes (hw = 37), blocks of several planes (hw = 64: 16 planes a block, 37 images:
/// a ragged last block), planes longer than a block (hw = 1500: pieces of 1024 and 476), without
/// and with ReLU.
fn shapes() -> [BnShape; 4] {
    let s = |n, c, hw, relu| BnShape { n, c, hw, eps: 1e-5, momentum: 0.1, relu };
    [s(5, 3, 37, true), s(37, 8, 64, true), s(2, 4, 1500, false), s(3, 16, 256, true)]
}

/// The inputs (x, dy, affine) of seed: x about 3 (an offset mean, so that the centred sums differ
/// from the raw ones), dy in (−1, 1), γ and β in (0.5, 1.5).
fn inputs(s: &BnShape, seed: u64) -> [Vec<f64>; 3] {
    let mut g = rng(seed);
    let x = uniform(&mut g, s.len()).into_iter().map(|v| 3.0 + v).collect();
    let dy = uniform(&mut g, s.len());
    let affine = uniform(&mut g, 2 * s.c).into_iter().map(|v| 1.0 + 0.5 * v).collect();
    [x, dy, affine]
}

/// (y, saved, running, dx, d_affine) of a train forward and a backward with the loops of `isa`.
fn bn_pass<T: Real>(isa: Option<Simd>, s: &BnShape, seed: u64) -> [Vec<f64>; 5] {
    let [x, dy, affine] = inputs(s, seed).map(|v| v.into_iter().map(T::from_f64).collect::<Vec<T>>());
    let mut running = vec![T::from_f64(0.5); 2 * s.c];
    let (y, saved) = bn_forward_with(isa, s, &x, &affine, &mut running);
    let (dx, d_affine) = bn_backward_with(isa, s, [&x, &y, &dy, &affine, &saved]);
    [to_f64(&y), to_f64(&saved), to_f64(&running), to_f64(&dx), to_f64(&d_affine)]
}

#[test]
fn batchnorm_gives_the_same_bits_with_every_vector_width() {
    let isas: Vec<Option<Simd>> = [None, Some(Simd::Avx2), Some(Simd::Avx512)]
        .into_iter()
        .filter(|i| i.is_none_or(direct3x3::supported))
        .collect();
    for (i, s) in shapes().iter().enumerate() {
        let base = bn_pass::<f32>(None, s, 40 + i as u64);
        for out in &base {
            assert!(out.iter().all(|v| v.is_finite()), "{s:?}: non-finite output");
        }
        for &isa in &isas[1..] {
            assert!(
                bn_pass::<f32>(isa, s, 40 + i as u64) == base,
                "{s:?}: {isa:?} differs from the baseline"
            );
        }
    }
    if isas.len() < 3 {
        eprintln!("compared {} of 3 instruction sets: this CPU lacks the others", isas.len());
    }
}

/// The values of channel c of `v`, in image order.
fn channel(s: &BnShape, v: &[f64], c: usize) -> Vec<f64> {
    (0..s.n).flat_map(|b| v[(b * s.c + c) * s.hw..][..s.hw].to_vec()).collect()
}

/// (y, [μ | invstd], dx, [dγ | dβ]) by the formulas, one channel at a time in plain f64 loops.
fn naive(s: &BnShape, x: &[f64], dy: &[f64], affine: &[f64]) -> [Vec<f64>; 4] {
    let m = (s.n * s.hw) as f64;
    let (mut y, mut dx) = (vec![0.0; s.len()], vec![0.0; s.len()]);
    let (mut saved, mut d_affine) = (vec![0.0; 2 * s.c], vec![0.0; 2 * s.c]);
    for c in 0..s.c {
        let xs = channel(s, x, c);
        let mean = xs.iter().sum::<f64>() / m;
        let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m;
        let is = 1.0 / (var + s.eps).sqrt();
        let (gamma, beta) = (affine[c], affine[s.c + c]);
        let at = |b: usize, i: usize| (b * s.c + c) * s.hw + i;
        let (mut dbeta, mut dgamma) = (0.0, 0.0);
        for b in 0..s.n {
            for i in 0..s.hw {
                let xhat = (x[at(b, i)] - mean) * is;
                let pre = gamma * xhat + beta;
                y[at(b, i)] = if s.relu { pre.max(0.0) } else { pre };
                let d = if s.relu && pre <= 0.0 { 0.0 } else { dy[at(b, i)] };
                dbeta += d;
                dgamma += d * xhat;
            }
        }
        for b in 0..s.n {
            for i in 0..s.hw {
                let xhat = (x[at(b, i)] - mean) * is;
                let pre = gamma * xhat + beta;
                let d = if s.relu && pre <= 0.0 { 0.0 } else { dy[at(b, i)] };
                dx[at(b, i)] = gamma * is * (d - dbeta / m - xhat * dgamma / m);
            }
        }
        (saved[c], saved[s.c + c], d_affine[c], d_affine[s.c + c]) = (mean, is, dgamma, dbeta);
    }
    [y, saved, dx, d_affine]
}

/// The f32 and f64 passes against [`naive`]: every plane split, block flush and lane is checked,
/// not only the agreement of two runs of the same code.
#[test]
fn batchnorm_matches_the_formulas_in_f32_and_f64() {
    for (i, s) in shapes().iter().enumerate() {
        let seed = 60 + i as u64;
        let [y, saved, _, dx, d_affine] = bn_pass::<f64>(vectorize::widest(), s, seed);
        // The inputs bn_pass drew, as f32 values (so the f32 comparison sees only its arithmetic).
        let [x, dy, affine] = inputs(s, seed).map(|v| to_f64(&to_f32(&v)));
        let want = naive(s, &x, &dy, &affine);
        let [y32, saved32, _, dx32, d_affine32] = bn_pass::<f32>(vectorize::widest(), s, seed);
        let want64 = {
            let [x, dy, affine] = inputs(s, seed);
            naive(s, &x, &dy, &affine)
        };
        for (name, got, got32, w64, w32) in [
            ("y", &y, &y32, &want64[0], &want[0]),
            ("saved", &saved, &saved32, &want64[1], &want[1]),
            ("dx", &dx, &dx32, &want64[2], &want[2]),
            ("d_affine", &d_affine, &d_affine32, &want64[3], &want[3]),
        ] {
            // f64: the same sums in another order, 1e-12 of the largest value. f32: each output is
            // a few roundings (2⁻²⁴ each) of values ≤ about 10 and of lane sums whose error is at
            // most (64 + 1024/hw)·2⁻²⁴ ≤ 80·2⁻²⁴ ≈ 5e-6 (hw ≥ 37 here) of their terms' magnitude:
            // 1e-5 of the largest value covers both,
            // while a lost, repeated or misplaced piece of a plane is off by far more.
            assert_close(&format!("f64 {name} {s:?}"), got, w64, 1e-12);
            assert_close(&format!("f32 {name} {s:?}"), &to_f32(got32), w32, 1e-5);
        }
    }
}
