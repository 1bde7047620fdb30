//! Fused Adam step, as torch.optim.AdamW (decoupled decay) or torch.optim.Adam (coupled L2), over
//! a table of segments, in the element type with the per-step scalars formed in f64 as PyTorch's
//! single-tensor path forms them (Python floats):
//! [AdamW: w ← w·(1 − ηλ) | Adam: g ← g + λw];  m ← m + (1−β₁)(g − m);  v ← β₂v + (1−β₂)g²;
//! w ← w − (η/(1−β₁ᵗ)) · m / (√v/√(1−β₂ᵗ) + ε).
//! Reads w, g, m, v and writes w, m, v (7 elements per parameter); statistics sums as for SGD.

use super::segments::{accumulate, for_each_piece};
use crate::backend::{AdamStep, Real, StepSums};
use anyhow::Result;

/// One step over every segment; `sums` (one per segment) is overwritten when given.
pub(crate) fn step<T: Real>(a: AdamStep<'_, Vec<T>>) -> Result<()> {
    let AdamStep { segments, hyper: h, params, grads, m, v, sums } = a;
    h.check()?;
    let bufs = [&mut params[..], &mut m[..], &mut v[..]];
    for_each_piece("adam", ["params", "m", "v"], segments, bufs, grads, sums, |seg, [w, m, v], g, want| {
        let [decay, l2, c1, b2, c2, step, bc2_sqrt, eps] = h.scalars(seg).map(T::from_f64);
        let mut s = StepSums::default();
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let old = *w;
            let gl = g + l2 * old;
            *m = *m + c1 * (gl - *m);
            *v = b2 * *v + c2 * (gl * gl);
            *w = old * decay - step * (*m / (v.sqrt() / bc2_sqrt + eps));
            if want {
                accumulate(&mut s, old, g, *w);
            }
        }
        s
    })
}
