//! Fused SGD step (PyTorch semantics, dampening 0) over a table of segments of one flat buffer:
//! g' = g + λw;  v = γv + g';  w_new = w − ηv, computed in the element type. With `sums`, each
//! segment also gets Σw², Σg² (g without the λw term), Σd², Σw·d in f64, d = w_new − w as stored.
//! Reads w, g, v and writes w, v (5 elements per parameter); pieces and sums as in segments.rs.

use super::segments::{accumulate, for_each_piece};
use crate::backend::{Real, SgdStep, StepSums};
use anyhow::Result;

/// One step over every segment; `sums` (one per segment) is overwritten when given.
pub(crate) fn step<T: Real>(a: SgdStep<'_, Vec<T>>) -> Result<()> {
    let SgdStep { segments, params, grads, momenta, sums } = a;
    let bufs = [&mut params[..], &mut momenta[..]];
    for_each_piece("sgd", ["params", "momenta"], segments, bufs, grads, sums, |seg, [w, v], g, want| {
        let (lr, wd, mom) = (T::from_f64(seg.lr), T::from_f64(seg.wd), T::from_f64(seg.momentum));
        let mut s = StepSums::default();
        for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
            let old = *w;
            *v = mom * *v + (g + wd * old);
            *w = old - lr * *v;
            if want {
                accumulate(&mut s, old, g, *w);
            }
        }
        s
    })
}
