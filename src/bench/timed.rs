//! [`Timed`]: a backend adapter that forwards every op to an inner backend and records how long each
//! one took (through a [`Clock`]: wall time on the CPU, CUDA events on a GPU), with an NVTX range
//! around each. Any model code runs on it unchanged, which gives `ilr profile` its per-op tables.
//! Steps always run eagerly on it (no CUDA-graph replay), so that each op runs where it is called.

use super::cost::Net;
use super::nvtx::nvtx_range;
use super::ops::BenchOps;
use super::timing::Clock;
use super::work::TrainStep;
use crate::backend::{Backend, Layer, OpShape, Segment, StepSums};
use anyhow::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

struct OpRecord<M> {
    op: &'static str,
    shape: String,
    start: M,
    end: M,
}

/// One timed call of a backend op.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    pub op: &'static str,
    /// The op's shape, e.g. "16->32 k3 s2 32x32" for a convolution.
    pub shape: String,
    pub seconds: f64,
}

/// `B` with every op timed. Recording starts off; see [`Timed::record`].
pub struct Timed<'b, B: Backend, C: Clock<B>> {
    inner: &'b B,
    clock: C,
    recording: AtomicBool,
    log: Mutex<Vec<OpRecord<C::Mark>>>,
}

/// The label of an op's shape in profiles, e.g. "16->32 k3 s2 32x32" for a convolution.
fn shape_label(shape: OpShape<'_>) -> String {
    match shape {
        OpShape::None => String::new(),
        OpShape::Len(n) => n.to_string(),
        OpShape::Conv(s) => format!("{}->{} k{} s{} {}x{}", s.c_in, s.c_out, s.kernel, s.stride, s.h, s.w),
        OpShape::Bn(s) => super::cost::bn_label(s),
        OpShape::Shortcut(s) => format!("{}->{} s{} {}x{}", s.c_in, s.c_out, s.stride, s.h, s.w),
        OpShape::Pool(s) => format!("c{} hw{}", s.c, s.hw),
        OpShape::Linear(s) => format!("{}->{}", s.inp, s.out),
        OpShape::Loss(s) => format!("n{} k{}", s.n, s.classes),
        OpShape::Step { params, segments, sums } => {
            format!("p{params} segs{segments}{}", if sums { " sums" } else { "" })
        }
    }
}

impl<'b, B: Backend, C: Clock<B>> Timed<'b, B, C> {
    pub fn new(inner: &'b B, clock: C) -> Self {
        Self { inner, clock, recording: AtomicBool::new(false), log: Mutex::new(Vec::new()) }
    }

    /// Turns recording on or off (e.g. off during warmup).
    pub fn record(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// The recorded calls in order, as seconds each; clears the log.
    pub fn take(&self) -> Result<Vec<OpTime>> {
        let log = std::mem::take(&mut *self.log.lock().expect("timing log lock"));
        log.into_iter()
            .map(|r| {
                Ok(OpTime {
                    op: r.op,
                    shape: r.shape,
                    seconds: self.clock.seconds(self.inner, &r.start, &r.end)?,
                })
            })
            .collect()
    }

    fn timed<R>(&self, op: &'static str, shape: impl FnOnce() -> String, f: impl FnOnce(&B) -> R) -> R {
        let _range = nvtx_range(op);
        if !self.recording.load(Ordering::Relaxed) {
            return f(self.inner);
        }
        let start = self.clock.mark(self.inner);
        let r = f(self.inner);
        let end = self.clock.mark(self.inner);
        self.log.lock().expect("timing log lock").push(OpRecord { op, shape: shape(), start, end });
        r
    }
}

impl<'b, B: Backend, C: Clock<B>> Layer for Timed<'b, B, C> {
    type Inner = B;
    fn inner(&self) -> &B {
        self.inner
    }
    fn name(&self) -> String {
        format!("timed-{}", self.inner.name())
    }
    fn around<R>(&self, op: &'static str, shape: OpShape<'_>, f: impl FnOnce(&B) -> R) -> R {
        self.timed(op, || shape_label(shape), f)
    }
    /// Every step runs eagerly, op by op, so that each op can be timed: a deferred
    /// (graph-replayed) step would not run the ops where they are called.
    fn step_begin(&self) -> Result<bool> {
        Ok(false)
    }
}

impl<'b, B: BenchOps, C: Clock<B>> BenchOps for Timed<'b, B, C> {
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf) -> Result<()> {
        self.timed("copy", String::new, |be| be.copy(src, dst))
    }
    fn segment_sums(
        &self,
        segments: &[Segment],
        w: &Self::Buf,
        g: Option<&Self::Buf>,
        w_next: Option<&Self::Buf>,
        out: &mut [StepSums],
    ) -> Result<()> {
        self.timed(
            "segment_sums",
            || format!("segs{}", segments.len()),
            |be| be.segment_sums(segments, w, g, w_next, out),
        )
    }
    fn finish(&self) -> Result<()> {
        self.inner.finish()
    }
}

/// Per-op times of training steps.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Whole-step seconds, one per profiled step.
    pub step_s: Vec<f64>,
    /// Every op of every profiled step, in order.
    pub ops: Vec<OpTime>,
}

/// Profiles `steps` training steps of `net` at `batch` on `be` (after `warmup` untimed ones).
pub fn profile_train_step<B: BenchOps, C: Clock<B> + Clone>(
    be: &B,
    clock: C,
    net: &Net,
    batch: usize,
    warmup: usize,
    steps: usize,
) -> Result<Profile> {
    let timed = Timed::new(be, clock.clone());
    let mut step = TrainStep::new(&timed, net, batch)?;
    for _ in 0..warmup {
        step.run(&timed)?;
    }
    let mut step_s = Vec::with_capacity(steps);
    timed.record(true);
    for _ in 0..steps {
        step_s.push(clock.time(be, &mut || step.run(&timed))?);
    }
    timed.record(false);
    be.finish()?;
    Ok(Profile { step_s, ops: timed.take()? })
}

/// One row of a profile table: an op (and shape, when grouped by shape) with its total time.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    pub op: &'static str,
    pub shape: Option<String>,
    /// Calls and seconds per step.
    pub calls: f64,
    pub seconds: f64,
}

impl Profile {
    /// One step made of each op's fastest time over the profiled steps (every step issues the same
    /// ops in the same order): robust to other work on the machine, which only ever adds time.
    pub fn fastest(&self) -> Profile {
        let steps = self.step_s.len().max(1);
        let per = self.ops.len() / steps;
        if per * steps != self.ops.len()
            || (0..per).any(|i| (1..steps).any(|s| self.ops[s * per + i].op != self.ops[i].op))
        {
            return self.clone();
        }
        let ops: Vec<OpTime> = (0..per)
            .map(|i| {
                let all = (0..steps).map(|s| &self.ops[s * per + i]);
                all.min_by(|a, b| a.seconds.total_cmp(&b.seconds)).expect("at least one step").clone()
            })
            .collect();
        Profile { step_s: vec![ops.iter().map(|o| o.seconds).sum()], ops }
    }

    /// Totals per op (or per op and shape), per step, largest first.
    pub fn rows(&self, by_shape: bool) -> Vec<ProfileRow> {
        let steps = self.step_s.len().max(1) as f64;
        let mut rows: Vec<ProfileRow> = Vec::new();
        for t in &self.ops {
            let shape = by_shape.then(|| t.shape.clone());
            match rows.iter_mut().find(|r| r.op == t.op && r.shape == shape) {
                Some(r) => {
                    r.calls += 1.0;
                    r.seconds += t.seconds;
                }
                None => rows.push(ProfileRow { op: t.op, shape, calls: 1.0, seconds: t.seconds }),
            }
        }
        for r in &mut rows {
            r.calls /= steps;
            r.seconds /= steps;
        }
        rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::bench::WallClock;

    #[test]
    fn profile_covers_the_step_and_matches_the_plain_backend() {
        let be = Cpu::<f32>::new();
        let p = profile_train_step(&be, WallClock, &Net::cifar(8), 4, 1, 2).unwrap();
        assert_eq!(p.step_s.len(), 2);
        let rows = p.rows(false);
        let ops: Vec<_> = rows.iter().map(|r| r.op).collect();
        for op in [
            "conv2d_forward",
            "conv2d_backward_data",
            "conv2d_backward_filter",
            "batchnorm_backward",
            "sgd_step",
        ] {
            assert!(ops.contains(&op), "{op} missing from {ops:?}");
        }
        // PreResNet-8: 7 convs forward per step.
        assert_eq!(rows.iter().find(|r| r.op == "conv2d_forward").unwrap().calls, 7.0);
        let covered: f64 = rows.iter().map(|r| r.seconds).sum();
        let step = p.step_s.iter().sum::<f64>() / 2.0;
        assert!(covered <= step * 1.0001, "ops {covered} > step {step}");
        let best = p.fastest();
        assert_eq!((best.step_s.len(), best.ops.len()), (1, p.ops.len() / 2));
        assert!(best.step_s[0] <= covered * 1.0001);

        // The adapter changes nothing: same parameters after a step as on the plain backend.
        let mut plain = TrainStep::new(&be, &Net::cifar(8), 4).unwrap();
        plain.run(&be).unwrap();
        let timed = Timed::new(&be, WallClock);
        let mut wrapped = TrainStep::new(&timed, &Net::cifar(8), 4).unwrap();
        wrapped.run(&timed).unwrap();
        assert_eq!(plain.model.params, wrapped.model.params);
    }
}
