//! Kernel throughput at the shapes of PreResNet-20/32/56, batch 128 and 512: BatchNorm forward and
//! backward, the fused SGD step (with and without the statistics sums), the per-segment reductions,
//! and a copy as the bandwidth ceiling. Throughput is bytes/s with the bytes the kernel comments state
//! (src/bench/cost.rs). Always on the CPU; on the GPU too when the CUDA backend opens one (CUDA
//! events; BatchNorm under each launch variant).
//!
//!     cargo bench --bench kernels                 # about 45 s on 2 idle cores
//!     cargo bench --bench kernels -- bn_bwd       # a subset

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ilr::backend::cpu::Cpu;
use ilr::backend::cuda::{BnMode, Cuda};
use ilr::backend::Backend;
use ilr::bench::{gpu, BenchOps, BenchResult, Clock, Suite, Target, WallClock, Work};
use std::time::Duration;

fn report(rows: &[BenchResult]) {
    for r in rows {
        eprintln!(
            "{} {:<14} {:<32} {:<24} {:>9.2} GB/s {:>6} of copy",
            r.device,
            r.name,
            r.implementation,
            r.shape,
            r.gbps.unwrap_or(f64::NAN),
            r.pct_of_copy.map_or("-".into(), |p| format!("{p:.0}%"))
        );
    }
}

/// Benchmarks `works` in order (the copy first), each case's bandwidth as a share of the copy's.
fn run<B: BenchOps, C: Clock<B>>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    be: &B,
    clock: &C,
    works: &[Work],
    variant: &str,
    target: &Target,
    rows: &mut Vec<BenchResult>,
) {
    for w in works {
        let copy = rows.iter().find(|r| r.name == "copy").and_then(|r| r.gbps);
        rows.extend(common::bench_work(g, be, clock, w, variant, target, copy));
    }
}

fn cpu(c: &mut Criterion) {
    let be = Cpu::<f32>::new();
    let suite = Suite::cpu();
    let mut g = c.benchmark_group("cpu");
    common::configure(&mut g, Duration::from_millis(300), Duration::from_secs(1));
    let target = Target { implementation: "ilr cpu-f32", device: "cpu", cold_bytes: suite.cold_bytes };
    let mut rows = Vec::new();
    run(&mut g, &be, &WallClock, &suite.kernels(), "", &target, &mut rows);
    g.finish();
    report(&rows);
}

fn cuda(c: &mut Criterion) {
    let be = match gpu::detect().and_then(|_| Cuda::new(0).map_err(|e| format!("{e:#}"))) {
        Ok(be) => be,
        Err(why) => return eprintln!("gpu kernels: skipped ({why})"),
    };
    let clock = gpu::EventClock::new(&be).expect("CUDA event clock");
    let suite = Suite::gpu();
    let mut g = c.benchmark_group("cuda");
    common::configure(&mut g, Duration::from_millis(300), Duration::from_secs(1));
    let kernels: Vec<Work> =
        suite.kernels().into_iter().filter(|w| !matches!(w, Work::Reduce { .. })).collect();
    let is_bn = |w: &&Work| matches!(w, Work::BnForward(_) | Work::BnBackward(_));
    let bn: Vec<Work> = kernels.iter().filter(is_bn).copied().collect();
    let rest: Vec<Work> = kernels.iter().filter(|w| !is_bn(w)).copied().collect();
    let label = format!("ilr {}", be.name());
    let target = |implementation| Target { implementation, device: "cuda", cold_bytes: suite.cold_bytes };
    let labels: Vec<String> =
        gpu::BN_MODES.iter().map(|&m| format!("{label} bn={}", gpu::bn_mode_label(m))).collect();
    let mut rows = Vec::new();
    run(&mut g, &be, &clock, &rest, "", &target(&label), &mut rows);
    for (mode, l) in gpu::BN_MODES.into_iter().zip(&labels) {
        be.set_bn_mode(mode);
        run(&mut g, &be, &clock, &bn, &format!("/{}", gpu::bn_mode_label(mode)), &target(l), &mut rows);
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
