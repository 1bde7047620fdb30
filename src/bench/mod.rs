//! Benchmarks shared by `ilr bench`, `ilr profile` and the criterion benches (benches/*.rs).
//!
//! - [`cost`]: the bytes and FLOPs of every kernel, as the kernel comments state them (one place);
//! - [`work`]: the workloads (BN forward/backward, the fused SGD step, the per-segment reductions, a
//!   copy, a whole training step), generic over the backend;
//! - [`timing`]: warmup, repetitions, median and min, through a [`Clock`] (wall time on the CPU,
//!   CUDA events on a GPU);
//! - [`report`]: the JSON schema (shared with peers/pytorch), machine info, the equilibrium-time
//!   budget and the tables for people;
//! - [`timed`]: [`Timed`], a backend adapter that times every op, for per-op profiles;
//! - [`nvtx`]: [`nvtx_range`], NVTX ranges that cost nothing without the library;
//! - [`gpu`]: GPU detection, the CUDA-event clock, and the GPU suite on the CUDA backend.
//!
//! See docs/PERFORMANCE.md for the figures and how they were taken.

pub mod cost;
pub mod gpu;
pub mod nvtx;
pub mod ops;
pub mod report;
pub mod timed;
pub mod timing;
pub mod work;

pub use cost::Net;
pub use nvtx::nvtx_range;
pub use ops::BenchOps;
pub use report::{BenchFile, BenchResult, EqBudget, Machine};
pub use timed::{profile_train_step, Profile, Timed};
pub use timing::{measure, Clock, Plan, Timing, WallClock};
pub use work::{StepMode, Suite, Work, TINY_STEPS};

use anyhow::{Context, Result};

/// Who and where a set of cases runs: the labels of its results and the cold-cache setting.
#[derive(Clone, Copy, Debug)]
pub struct Target<'s> {
    /// e.g. "ilr cpu-f32".
    pub implementation: &'s str,
    /// "cpu" or "cuda".
    pub device: &'s str,
    /// See [`Work::build`].
    pub cold_bytes: usize,
}

/// Measures each case of `works` on `be` under `plan`, appending to `file.results`; `done` sees each
/// result as it lands. Put the copy first: later cases report their bandwidth as a share of it.
pub fn run_cases<B: BenchOps, C: Clock<B>>(
    be: &B,
    clock: &C,
    plan: &Plan,
    works: &[Work],
    target: &Target,
    file: &mut BenchFile,
    done: &mut dyn FnMut(&BenchResult),
) -> Result<()> {
    for w in works {
        let what = || format!("{} {}", w.name(), w.shape());
        let timing = {
            let mut run = w.build(be, target.cold_bytes).with_context(|| format!("setting up {}", what()))?;
            let t = measure(be, clock, plan, &mut run);
            t.and_then(|t| be.finish().map(|_| t)).with_context(|| format!("running {}", what()))?
        };
        let r =
            BenchResult::new(w, target.implementation, target.device, &timing, file.copy_gbps(target.device));
        done(&r);
        file.results.push(r);
    }
    Ok(())
}
