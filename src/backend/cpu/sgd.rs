//! Fused SGD step (PyTorch semantics, dampening 0) over a table of segments of one flat buffer:
//! g' = g + λw;  v = γv + g';  w_new = w − ηv, computed in the element type. With `sums`, each
//! segment also gets Σw², Σg² (g without the λw term), Σd², Σw·d in f64, d = w_new − w as stored.
//! Reads w, g, v and writes w, v (5 elements per parameter). Parallel over fixed chunks whose partial
//! sums are added in chunk order, so the sums are deterministic.

use super::wide;
use crate::backend::{check_sgd_args, Real, Segment, StepSums};
use anyhow::Result;
use rayon::prelude::*;

/// Elements per parallel chunk (PyTorch's multi-tensor apply uses the same).
const CHUNK: usize = 1 << 16;

/// Updates one chunk of a segment in place and returns its sums.
fn update<T: Real>(seg: &Segment, w: &mut [T], g: &[T], v: &mut [T]) -> StepSums {
    let (lr, wd, mom) = (T::from_f64(seg.lr), T::from_f64(seg.wd), T::from_f64(seg.momentum));
    let mut s = StepSums::default();
    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
        let old = *w;
        *v = mom * *v + (g + wd * old);
        *w = old - lr * *v;
        let (w0, g0) = (wide(old), wide(g));
        let d = wide(*w) - w0;
        s.ww += w0 * w0;
        s.gg += g0 * g0;
        s.dd += d * d;
        s.wd += w0 * d;
    }
    s
}

/// One step over every segment; `sums` (one per segment) is overwritten when given.
pub(crate) fn step<T: Real>(
    segments: &[Segment],
    params: &mut [T],
    grads: &[T],
    momenta: &mut [T],
    mut sums: Option<&mut [StepSums]>,
) -> Result<()> {
    check_sgd_args(segments, params.len(), grads.len(), momenta.len(), sums.as_deref().map(<[_]>::len))?;
    for (i, seg) in segments.iter().enumerate() {
        let r = seg.offset..seg.offset + seg.len;
        let partials: Vec<StepSums> = params[r.clone()]
            .par_chunks_mut(CHUNK)
            .zip(grads[r.clone()].par_chunks(CHUNK))
            .zip(momenta[r].par_chunks_mut(CHUNK))
            .map(|((w, g), v)| update(seg, w, g, v))
            .collect();
        if let Some(sums) = sums.as_deref_mut() {
            sums[i] = StepSums::default();
            for p in partials {
                sums[i] += p;
            }
        }
    }
    Ok(())
}
