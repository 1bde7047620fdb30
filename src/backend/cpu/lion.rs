//! Fused Lion step (Chen et al. 2023; the lion-pytorch package's order of operations) over a table
//! of segments, in the element type: c = β₁m + (1−β₁)g;  w ← w·(1 − ηλ) − η·sign(c);
//! m ← β₂m + (1−β₂)g, with sign(0) = 0. Reads w, g, m and writes w, m (5 elements per parameter);
//! statistics sums as for SGD.

use super::segments::{accumulate, for_each_piece};
use crate::backend::{LionStep, Real, StepSums};
use anyhow::Result;

/// sign(x) ∈ {−1, 0, 1} (±0 and NaN stay as they are), as torch.sign and the CUDA kernel. Written
/// as selects of `signum` (a bit operation) so that the loop vectorizes.
#[inline]
fn sign<T: Real>(x: T) -> T {
    let s = x.signum();
    if x == T::zero() {
        x
    } else {
        s
    }
}

/// One step over every segment; `sums` (one per segment) is overwritten when given.
pub(crate) fn step<T: Real>(a: LionStep<'_, Vec<T>>) -> Result<()> {
    let LionStep { segments, hyper: h, params, grads, m, sums } = a;
    let bufs = [&mut params[..], &mut m[..]];
    for_each_piece("lion", ["params", "m"], segments, bufs, grads, sums, |seg, [w, m], g, want| {
        let [lr, decay, b1, c1, b2, c2] = h.scalars(seg).map(T::from_f64);
        let mut s = StepSums::default();
        for ((w, &g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
            let old = *w;
            let c = b1 * *m + c1 * g;
            *w = old * decay - lr * sign(c);
            *m = b2 * *m + c2 * g;
            if want {
                accumulate(&mut s, old, g, *w);
            }
        }
        s
    })
}
