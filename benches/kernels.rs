//! Kernel throughput at the shapes of PreResNet-20/32/56, batch 128 and 512: BatchNorm forward and
//! backward, the fused SGD step (with and without the statistics sums), the per-segment reductions,
//! and a copy as the bandwidth ceiling. Throughput is bytes/s with the bytes the kernel comments state
//! (src/bench/cost.rs). Always on the CPU; on the GPU too when the CUDA backend opens one (CUDA
//! events; BatchNorm under each launch variant).
//!
//!     cargo bench --bench kernels                 # a few minutes on 2 cores
//!     cargo bench --bench kernels -- bn_bwd       # a subset

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ilr::backend::cpu::Cpu;
use ilr::backend::cuda::{BnMode, Cuda};
use ilr::bench::{gpu, BenchOps, BenchResult, Clock, Suite, WallClock, Work};
use std::time::Duration;

fn report(rows: &[BenchResult]) {
    for r in rows {
        eprintln!(
            "{} {:<14} {:<32} {:<24} {:>9.2} GB/s {:>5.0}% of copy",
            r.device,
            r.name,
            r.implementation,
            r.shape,
            r.gbps.unwrap_or(f64::NAN),
            r.pct_of_copy.unwrap_or(100.0)
        );
    }
}

/// Benchmarks `works` in order (the copy first), each case's bandwidth as a share of the copy's.
#[allow(clippy::too_many_arguments)]
fn run<B: BenchOps, C: Clock<B>>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    be: &B,
    clock: &C,
    works: &[Work],
    variant: &str,
    implementation: &str,
    device: &str,
    rows: &mut Vec<BenchResult>,
) {
    for w in works {
        let copy = rows.iter().find(|r| r.name == "copy").and_then(|r| r.gbps);
        rows.push(common::bench_work(g, be, clock, w, variant, implementation, device, copy));
    }
}

fn cpu(c: &mut Criterion) {
    let be = Cpu::<f32>::new();
    let mut g = c.benchmark_group("cpu");
    common::configure(&mut g, Duration::from_millis(300), Duration::from_secs(1));
    let mut rows = Vec::new();
    run(&mut g, &be, &WallClock, &Suite::cpu().kernels(), "", "ilr cpu-f32", "cpu", &mut rows);
    g.finish();
    report(&rows);
}

fn cuda(c: &mut Criterion) {
    let be = match gpu::detect().and_then(|_| Cuda::new(0).map_err(|e| format!("{e:#}"))) {
        Ok(be) => be,
        Err(why) => return eprintln!("gpu kernels: skipped ({why})"),
    };
    let clock = gpu::EventClock::new(&be).expect("CUDA event clock");
    let mut g = c.benchmark_group("cuda");
    common::configure(&mut g, Duration::from_millis(300), Duration::from_secs(1));
    let kernels: Vec<Work> =
        Suite::gpu().kernels().into_iter().filter(|w| !matches!(w, Work::Reduce { .. })).collect();
    let is_bn = |w: &&Work| matches!(w, Work::BnForward(_) | Work::BnBackward(_));
    let bn: Vec<Work> = kernels.iter().filter(is_bn).copied().collect();
    let rest: Vec<Work> = kernels.iter().filter(|w| !is_bn(w)).copied().collect();
    let label = "ilr cuda-f32";
    let mut rows = Vec::new();
    run(&mut g, &be, &clock, &rest, "", label, "cuda", &mut rows);
    for mode in gpu::BN_MODES {
        be.set_bn_mode(mode);
        let m = gpu::bn_mode_label(mode);
        run(&mut g, &be, &clock, &bn, &format!("/{m}"), &format!("{label} bn={m}"), "cuda", &mut rows);
    }
    be.set_bn_mode(BnMode::Auto);
    g.finish();
    report(&rows);
    eprintln!("{}", gpu::REDUCTIONS_PENDING);
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = cpu, cuda
}
criterion_main!(benches);
