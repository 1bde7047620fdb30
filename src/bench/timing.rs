//! A small timing harness: warmup, then N repetitions, median and min.
//!
//! Time is read through a [`Clock`], so the same code times the CPU (wall clock; every CPU op is
//! synchronous) and a GPU (CUDA events recorded on the backend's stream, see [`super::gpu`]).

use crate::backend::Backend;
use anyhow::Result;
use std::time::Instant;

/// Reads time on a backend. `mark` must be cheap and must not wait for the device; `seconds` may.
pub trait Clock<B: Backend>: Sync {
    type Mark: Send;
    /// A point in the backend's stream of work (CPU: now; GPU: an event recorded on the stream).
    fn mark(&self, be: &B) -> Self::Mark;
    /// Seconds between two marks, once the work between them has finished.
    fn seconds(&self, be: &B, start: &Self::Mark, end: &Self::Mark) -> Result<f64>;

    /// Seconds that the work `f` enqueues on `be` takes.
    fn time(&self, be: &B, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        let a = self.mark(be);
        f()?;
        let b = self.mark(be);
        self.seconds(be, &a, &b)
    }
}

/// The host's monotonic clock: right for backends whose ops return when they are done (the CPU).
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl<B: Backend> Clock<B> for WallClock {
    type Mark = Instant;
    fn mark(&self, _: &B) -> Instant {
        Instant::now()
    }
    fn seconds(&self, _: &B, start: &Instant, end: &Instant) -> Result<f64> {
        Ok(end.duration_since(*start).as_secs_f64())
    }
}

/// How long to measure one case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// Untimed calls before the first sample, after the calibration call (none for a case whose one
    /// call takes over a quarter of `budget_s`).
    pub warmup: usize,
    /// Samples wanted.
    pub reps: usize,
    /// Calls are batched so that one sample lasts at least this long (timer resolution, launch
    /// jitter); a sample's time is divided by its calls.
    pub min_sample_s: f64,
    /// Fewer samples (at least 3) when `reps` of them would take longer than this.
    pub budget_s: f64,
}

impl Plan {
    /// A few minutes for the whole suite on a 2-core CPU.
    pub const QUICK: Plan = Plan { warmup: 1, reps: 5, min_sample_s: 2e-3, budget_s: 3.0 };
    pub const FULL: Plan = Plan { warmup: 2, reps: 15, min_sample_s: 5e-3, budget_s: 15.0 };
}

/// Per-call seconds of one case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub median_s: f64,
    pub min_s: f64,
    /// Samples taken, and calls per sample.
    pub reps: usize,
    pub calls_per_rep: usize,
}

/// Median (the mean of the middle two for an even length; NaN for an empty slice).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.is_empty() {
        f64::NAN
    } else if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    }
}

/// Times `run` under `plan` on `be`: one calibration call, `warmup` more, then the samples.
pub fn measure<B: Backend, C: Clock<B>>(
    be: &B,
    clock: &C,
    plan: &Plan,
    run: &mut dyn FnMut() -> Result<()>,
) -> Result<Timing> {
    measure_with(plan, &mut |f| clock.time(be, f), run)
}

/// One call of the work being timed.
pub type Call<'a> = dyn FnMut() -> Result<()> + 'a;

/// [`measure`] with any timer: `time(f)` returns the seconds that the work `f` enqueues takes.
pub fn measure_with(
    plan: &Plan,
    time: &mut dyn FnMut(&mut Call) -> Result<f64>,
    run: &mut Call,
) -> Result<Timing> {
    let once = time(run)?.max(1e-9);
    let calls = ((plan.min_sample_s / once).ceil() as usize).clamp(1, 100_000);
    let reps = plan.reps.min(((plan.budget_s / (once * calls as f64)) as usize).max(3)).max(1);
    let mut batch = || -> Result<()> {
        for _ in 0..calls {
            run()?;
        }
        Ok(())
    };
    // The calibration call already warmed up a case that takes a large part of the budget.
    let warmup = if once * calls as f64 > plan.budget_s / 4.0 { 0 } else { plan.warmup };
    for _ in 0..warmup {
        batch()?;
    }
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        samples.push(time(&mut batch)? / calls as f64);
    }
    Ok(Timing {
        median_s: median(&samples),
        min_s: samples.iter().copied().fold(f64::INFINITY, f64::min),
        reps,
        calls_per_rep: calls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;

    #[test]
    fn median_and_measure() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let be = Cpu::<f32>::new();
        let mut n = 0usize;
        let plan = Plan { warmup: 1, reps: 4, min_sample_s: 1e-4, budget_s: 1.0 };
        let t = measure(&be, &WallClock, &plan, &mut || {
            n += 1;
            std::thread::sleep(std::time::Duration::from_micros(200));
            Ok(())
        })
        .unwrap();
        assert_eq!(t.reps, 4);
        assert!(t.min_s >= 2e-4 && t.min_s <= t.median_s, "{t:?}");
        assert_eq!(n, 1 + 5 * t.calls_per_rep);
    }
}
