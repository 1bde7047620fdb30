//! The driver of the fused optimizer steps: every segment of the flat buffers is cut into fixed
//! `CHUNK`-element pieces, and all pieces of all segments run as one parallel loop (a PreResNet's
//! ~60 tensors are mostly smaller than one chunk, so a loop per segment would leave the other
//! threads idle). Each segment's statistics sums are its pieces' sums added in piece order, so they
//! do not depend on the thread count.

use crate::backend::{check_step_args, Real, Segment, StepSums};
use anyhow::Result;
use rayon::prelude::*;

/// Elements per parallel piece (PyTorch's multi-tensor apply uses the same).
pub(crate) const CHUNK: usize = 1 << 16;

/// The first `n` elements of each of `bufs`, leaving the rest in `bufs`.
fn split_front<'a, T, const K: usize>(bufs: &mut [&'a mut [T]; K], n: usize) -> [&'a mut [T]; K] {
    std::array::from_fn(|k| {
        let (head, tail) = std::mem::take(&mut bufs[k]).split_at_mut(n);
        bufs[k] = tail;
        head
    })
}

/// Runs `update(segment, [w, state…], g, want_sums)` on every piece of every segment, in parallel,
/// where `bufs` = [params, state buffers…] are updated in place and `grads` is read; fills `sums`
/// (one per segment, overwritten) with the pieces' returned sums. `want_sums` is whether `sums` was
/// given: an update skips its f64 sums without it (their serial chain would keep the loop from
/// vectorizing). `op` names the step in errors.
pub(crate) fn for_each_piece<T: Real, const K: usize>(
    op: &str,
    names: [&str; K],
    segments: &[Segment],
    bufs: [&mut [T]; K],
    grads: &[T],
    sums: Option<&mut [StepSums]>,
    update: impl Fn(&Segment, [&mut [T]; K], &[T], bool) -> StepSums + Sync,
) -> Result<()> {
    let mut lens: Vec<(&str, usize)> =
        names[1..].iter().zip(&bufs[1..]).map(|(n, b)| (*n, b.len())).collect();
    lens.insert(0, ("grads", grads.len()));
    check_step_args(op, segments, bufs[0].len(), &lens, sums.as_deref().map(<[_]>::len))?;
    // The segments are disjoint (checked above); in offset order the buffers split in one pass.
    let mut order: Vec<usize> = (0..segments.len()).collect();
    order.sort_by_key(|&i| segments[i].offset);
    let (mut rest, mut at) = (bufs, 0);
    let mut pieces = Vec::new();
    for &i in &order {
        let seg = &segments[i];
        split_front(&mut rest, seg.offset - at);
        let mut seg_bufs = split_front(&mut rest, seg.len);
        at = seg.offset + seg.len;
        for g in grads[seg.offset..at].chunks(CHUNK) {
            pieces.push((i, split_front(&mut seg_bufs, g.len()), g));
        }
    }
    let want = sums.is_some();
    let partials: Vec<(usize, StepSums)> =
        pieces.into_par_iter().map(|(i, b, g)| (i, update(&segments[i], b, g, want))).collect();
    if let Some(sums) = sums {
        sums.fill(StepSums::default());
        for (i, p) in partials {
            sums[i] += p;
        }
    }
    Ok(())
}

/// The statistics sums of one element: w = w_t, g = the gradient (without any WD term) and
/// w_new = w_{t+1}, each widened to f64 (d = w_new − w as stored).
#[inline]
pub(crate) fn accumulate<T: Real>(s: &mut StepSums, w: T, g: T, w_new: T) {
    let (w0, g0) = (Real::to_f64(w), Real::to_f64(g));
    let d = Real::to_f64(w_new) - w0;
    s.ww += w0 * w0;
    s.gg += g0 * g0;
    s.dd += d * d;
    s.wd += w0 * d;
}
