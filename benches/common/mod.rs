//! Criterion glue shared by the benches: each case comes from `ilr::bench::Suite` (the same cases,
//! byte counts and FLOP counts as `ilr bench`) and is timed through an `ilr::bench::Clock` in
//! `iter_custom`, so a GPU backend is timed with CUDA events.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, SamplingMode, Throughput};
use ilr::bench::{BenchOps, BenchResult, Clock, Target, Timing, Work};
use std::time::Duration;

/// Few samples, short windows: the whole CPU suite in a few minutes on 2 cores.
pub fn configure(g: &mut BenchmarkGroup<'_, WallTime>, warm_up: Duration, measure: Duration) {
    g.sample_size(10)
        .warm_up_time(warm_up)
        .measurement_time(measure)
        .sampling_mode(SamplingMode::Flat)
        .nresamples(2000);
}

/// Benchmarks `w` on `be` (named `<name><variant>/<shape>`); returns its result as `ilr bench`
/// would report it (median and min over every timed batch of calls criterion asked for, warmup
/// included), or None when criterion's filter skipped it. The buffers are built only for a case
/// that runs.
pub fn bench_work<B: BenchOps, C: Clock<B>>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    be: &B,
    clock: &C,
    w: &Work,
    variant: &str,
    target: &Target,
    copy_gbps: Option<f64>,
) -> Option<BenchResult> {
    let what = || format!("{} {}", w.name(), w.shape());
    g.throughput(match w.images() {
        Some(n) => Throughput::Elements(n as u64),
        None => Throughput::Bytes(w.cost().bytes),
    });
    let mut run = None;
    let mut per_call = Vec::new();
    g.bench_function(BenchmarkId::new(format!("{}{variant}", w.name()), w.shape()), |b| {
        let run = run.get_or_insert_with(|| {
            w.build(be, target.cold_bytes).unwrap_or_else(|e| panic!("setting up {}: {e:#}", what()))
        });
        b.iter_custom(|iters| {
            let secs = clock
                .time(be, &mut || {
                    for _ in 0..iters {
                        run()?;
                    }
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{}: {e:#}", what()));
            per_call.push(secs / iters as f64);
            Duration::from_secs_f64(secs)
        })
    });
    drop(run);
    if per_call.is_empty() {
        return None;
    }
    be.finish().unwrap_or_else(|e| panic!("{}: {e:#}", what()));
    let t = Timing {
        median_s: ilr::bench::timing::median(&per_call),
        min_s: per_call.iter().copied().fold(f64::INFINITY, f64::min),
        reps: per_call.len(),
        calls_per_rep: 1,
    };
    Some(BenchResult::new(w, target.implementation, target.device, &t, copy_gbps))
}
