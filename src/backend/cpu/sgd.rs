//! Fused SGD step (PyTorch semantics, dampening 0) over a table of segments of one flat buffer:
//! g' = g + λw;  v = γv + g';  w_new = w − ηv, computed in the element type. With `sums`, each
//! segment also gets Σw², Σg² (g without the λw term), Σd², Σw·d in f64, d = w_new − w as stored.
//! Reads w, g, v and writes w, v (5 elements per parameter). Parallel over fixed chunks whose partial
//! sums are added in chunk order, so the sums are deterministic.

use super::wide;
use crate::backend::{Real, Segment, StepSums};
use anyhow::{ensure, Context, Result};
use rayon::prelude::*;

/// Elements per parallel chunk (PyTorch's multi-tensor apply uses the same).
const CHUNK: usize = 1 << 16;

/// Checks that every segment lies inside all three buffers and that no two overlap.
fn check(segments: &[Segment], len: usize, grads: usize, momenta: usize) -> Result<()> {
    ensure!(
        grads == len && momenta == len,
        "sgd: buffer lengths differ: params {len}, grads {grads}, momenta {momenta}"
    );
    let mut ranges = Vec::with_capacity(segments.len());
    for (i, s) in segments.iter().enumerate() {
        let end = s.offset.checked_add(s.len).with_context(|| format!("sgd: segment {i} overflows"))?;
        ensure!(end <= len, "sgd: segment {i} ({}..{end}) exceeds the buffer of {len}", s.offset);
        ranges.push((s.offset, end));
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        ensure!(pair[0].1 <= pair[1].0, "sgd: segments {:?} and {:?} overlap", pair[0], pair[1]);
    }
    Ok(())
}

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
    check(segments, params.len(), grads.len(), momenta.len())?;
    if let Some(sums) = sums.as_deref() {
        ensure!(sums.len() == segments.len(), "sgd: {} sums for {} segments", sums.len(), segments.len());
    }
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
