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
///
/// Every segment is cut into fixed `CHUNK`-element pieces and all pieces of all segments run as one
/// parallel loop (a PreResNet's ~60 tensors are mostly smaller than one chunk, so a loop per segment
/// would leave the other threads idle). Each segment's sums are its pieces' sums added in order.
pub(crate) fn step<T: Real>(
    segments: &[Segment],
    params: &mut [T],
    grads: &[T],
    momenta: &mut [T],
    sums: Option<&mut [StepSums]>,
) -> Result<()> {
    check_sgd_args(segments, params.len(), grads.len(), momenta.len(), sums.as_deref().map(<[_]>::len))?;
    // (segment index, piece of params, piece of grads, piece of momenta), in segment order. The
    // segments are disjoint (checked above); sorting by offset lets us split the buffers in one pass.
    let mut order: Vec<usize> = (0..segments.len()).collect();
    order.sort_by_key(|&i| segments[i].offset);
    let (mut w_rest, mut v_rest, mut at) = (params, momenta, 0);
    let mut pieces = Vec::new();
    for &i in &order {
        let seg = &segments[i];
        let (_, w_tail) = std::mem::take(&mut w_rest).split_at_mut(seg.offset - at);
        let (_, v_tail) = std::mem::take(&mut v_rest).split_at_mut(seg.offset - at);
        let (w_seg, w_tail) = w_tail.split_at_mut(seg.len);
        let (v_seg, v_tail) = v_tail.split_at_mut(seg.len);
        (w_rest, v_rest, at) = (w_tail, v_tail, seg.offset + seg.len);
        let g_seg = &grads[seg.offset..seg.offset + seg.len];
        for ((w, g), v) in w_seg.chunks_mut(CHUNK).zip(g_seg.chunks(CHUNK)).zip(v_seg.chunks_mut(CHUNK)) {
            pieces.push((i, w, g, v));
        }
    }
    let partials: Vec<(usize, StepSums)> =
        pieces.into_par_iter().map(|(i, w, g, v)| (i, update(&segments[i], w, g, v))).collect();
    if let Some(sums) = sums {
        sums.fill(StepSums::default());
        for (i, p) in partials {
            sums[i] += p;
        }
    }
    Ok(())
}
