//! The two operations the benchmarks need beyond [`Backend`]: a device copy (the bandwidth ceiling)
//! and the per-segment reductions of reduce.cu (statistics without an optimizer step; in training
//! they are fused into `sgd_step`). A GPU backend implements this trait with `memcpy_dtod` and the
//! `multi_sums4` kernel.

use crate::backend::cpu::Cpu;
use crate::backend::{Backend, Real, Segment, StepSums};
use anyhow::{ensure, Result};
use rayon::prelude::*;

pub trait BenchOps: Backend {
    /// dst = src (same length).
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf) -> Result<()>;
    /// Per segment, in f64: [Σw², Σg², Σd², Σw·d] with d = w_next − w. A buffer that is not given
    /// contributes 0 to its sums (and is not read).
    fn segment_sums(
        &self,
        segments: &[Segment],
        w: &Self::Buf,
        g: Option<&Self::Buf>,
        w_next: Option<&Self::Buf>,
        out: &mut [StepSums],
    ) -> Result<()>;
    /// Waits for queued work and returns any error an op could not return itself (a GPU backend
    /// records those and skips later ops, which would otherwise look fast).
    fn finish(&self) -> Result<()> {
        Ok(())
    }
}

/// Elements per parallel chunk, as in the CPU optimizer step and PyTorch's multi_tensor_apply.
const CHUNK: usize = 1 << 16;

/// Σ f(a_i, b_i) in f64 with 8 interleaved accumulators: a fixed order (deterministic) that the
/// compiler can vectorize, unlike one serial chain of f64 adds.
fn sum8<T: Real>(a: &[T], b: &[T], f: impl Fn(f64, f64) -> f64) -> f64 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 =
        ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| f(Real::to_f64(x), Real::to_f64(y))).sum();
    let mut acc = [0.0; 8];
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += f(Real::to_f64(x[l]), Real::to_f64(y[l]));
        }
    }
    acc.iter().sum::<f64>() + tail
}

fn sums_of<T: Real>(w: &[T], g: Option<&[T]>, wn: Option<&[T]>) -> StepSums {
    StepSums {
        ww: sum8(w, w, |a, _| a * a),
        gg: g.map_or(0.0, |g| sum8(g, g, |b, _| b * b)),
        dd: wn.map_or(0.0, |n| sum8(w, n, |a, b| (b - a) * (b - a))),
        wd: wn.map_or(0.0, |n| sum8(w, n, |a, b| a * (b - a))),
    }
}

impl<T: Real> BenchOps for Cpu<T> {
    fn copy(&self, src: &Vec<T>, dst: &mut Vec<T>) -> Result<()> {
        ensure!(src.len() == dst.len(), "copy: {} elements into {}", src.len(), dst.len());
        dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| d.copy_from_slice(s));
        Ok(())
    }

    fn segment_sums(
        &self,
        segments: &[Segment],
        w: &Vec<T>,
        g: Option<&Vec<T>>,
        w_next: Option<&Vec<T>>,
        out: &mut [StepSums],
    ) -> Result<()> {
        ensure!(
            out.len() == segments.len(),
            "segment_sums: {} outputs for {} segments",
            out.len(),
            segments.len()
        );
        ensure!(
            g.is_none_or(|g| g.len() == w.len()) && w_next.is_none_or(|n| n.len() == w.len()),
            "segment_sums: buffer lengths differ"
        );
        // One task per (segment, chunk); partials are added in chunk order, so the sums are deterministic.
        let tasks: Vec<(usize, usize, usize)> = segments
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                (s.offset..s.offset + s.len)
                    .step_by(CHUNK)
                    .map(move |o| (i, o, (s.offset + s.len).min(o + CHUNK)))
            })
            .collect();
        ensure!(
            tasks.iter().all(|t| t.2 <= w.len()),
            "segment_sums: a segment exceeds the buffer of {}",
            w.len()
        );
        let partials: Vec<StepSums> = tasks
            .par_iter()
            .map(|&(_, a, b)| sums_of(&w[a..b], g.map(|g| &g[a..b]), w_next.map(|n| &n[a..b])))
            .collect();
        out.fill(StepSums::default());
        for (&(i, _, _), p) in tasks.iter().zip(partials) {
            out[i] += p;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_segment_sums_and_copy() {
        let be = Cpu::<f32>::new();
        let n = CHUNK + 10;
        let w: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        let g: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
        let wn: Vec<f32> = w.iter().map(|v| v + 1.0).collect();
        let seg = |offset, len| Segment { offset, len, lr: 0.1, wd: 0.0, momentum: 0.0 };
        let segs = [seg(0, 3), seg(3, 0), seg(3, n - 3)];
        let mut out = [StepSums::default(); 3];
        be.segment_sums(&segs, &w, Some(&g), Some(&wn), &mut out).unwrap();
        let exact = |r: std::ops::Range<usize>| StepSums {
            ww: r.clone().map(|i| (w[i] as f64).powi(2)).sum(),
            gg: r.clone().map(|i| (g[i] as f64).powi(2)).sum(),
            dd: r.len() as f64,
            wd: r.map(|i| w[i] as f64).sum(),
        };
        assert_eq!(out, [exact(0..3), StepSums::default(), exact(3..n)]);
        be.segment_sums(&segs, &w, None, None, &mut out).unwrap();
        assert_eq!(out[2], StepSums { ww: exact(3..n).ww, ..Default::default() });
        let mut dst = vec![0.0; n];
        be.copy(&w, &mut dst).unwrap();
        assert_eq!(dst, w);
    }
}
