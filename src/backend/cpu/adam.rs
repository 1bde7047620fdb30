//! Fused Adam step, as torch.optim.AdamW (decoupled decay) or torch.optim.Adam (coupled L2), over
//! a table of segments, in the element type with the per-step scalars formed in f64 as PyTorch's
//! single-tensor path forms them (Python floats):
//! [AdamW: w ← w·(1 − ηλ) | Adam: g ← g + λw];  m ← m + (1−β₁)(g − m);  v ← β₂v + (1−β₂)g²;
//! w ← w − (η/(1−β₁ᵗ)) · m / (√v/√(1−β₂ᵗ) + ε).
//! Reads w, g, m, v and writes w, m, v (7 elements per parameter); statistics sums as for SGD.

use super::segments::{accumulate, for_each_piece};
use crate::backend::{AdamStep, Real, StepSums};
use anyhow::{ensure, Result};

/// One step over every segment; `sums` (one per segment) is overwritten when given.
pub(crate) fn step<T: Real>(a: AdamStep<'_, Vec<T>>) -> Result<()> {
    let AdamStep { segments, hyper: h, params, grads, m, v, sums } = a;
    ensure!(h.t >= 1, "adam: the step count t must be ≥ 1 (it is {})", h.t);
    let t = i32::try_from(h.t).unwrap_or(i32::MAX);
    let (bc1, bc2) = (1.0 - h.beta1.powi(t), 1.0 - h.beta2.powi(t));
    let (c1, b2, c2) = (T::from_f64(1.0 - h.beta1), T::from_f64(h.beta2), T::from_f64(1.0 - h.beta2));
    let (bc2_sqrt, eps) = (T::from_f64(bc2.sqrt()), T::from_f64(h.eps));
    let bufs = [&mut params[..], &mut m[..], &mut v[..]];
    for_each_piece("adam", ["params", "m", "v"], segments, bufs, grads, sums, |seg, [w, m, v], g| {
        let step = T::from_f64(seg.lr / bc1);
        let (decay, l2) = if h.decoupled {
            (T::from_f64(1.0 - seg.lr * seg.wd), T::zero())
        } else {
            (T::one(), T::from_f64(seg.wd))
        };
        let mut s = StepSums::default();
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let old = *w;
            let gl = g + l2 * old;
            *m = *m + c1 * (gl - *m);
            *v = b2 * *v + c2 * (gl * gl);
            *w = old * decay - step * (*m / (v.sqrt() / bc2_sqrt + eps));
            accumulate(&mut s, old, g, *w);
        }
        s
    })
}
