//! One full training step (upload, forward, loss, backward, SGD) of PreResNet-20/32/56 and of the
//! tiny recipes' PreResNet-8 ×0.5 (batch 32, 8×8 and 16×16), reported as images/s, then the
//! equilibrium-time budget: c/λ_e steps × the measured step time (c = T_eq·λ_e, from `ILR_BENCH_C`,
//! default 2.0: the quick default run's value). CPU at batch 128; the GPU at 128 and 512 (the tiny
//! nets at 32) when the CUDA backend opens one: eager, as CUDA graphs, and as graphs with bf16
//! convolutions.
//!
//!     cargo bench --bench train_step              # about 35 s on 2 idle cores
//!     ILR_BENCH_C=1.0 cargo bench --bench train_step -- preresnet20
//!     cargo bench --bench train_step -- preresnet8x0.5

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ilr::backend::cpu::Cpu;
use ilr::backend::cuda::Cuda;
use ilr::bench::{gpu, BenchOps, BenchResult, Clock, EqBudget, Suite, Target, WallClock};
use std::time::Duration;

fn steps<B: BenchOps, C: Clock<B>>(
    c: &mut Criterion,
    be: &B,
    clock: &C,
    suite: Suite,
    device: &str,
) -> Vec<BenchResult> {
    let mut g = c.benchmark_group(device);
    common::configure(&mut g, Duration::from_secs(1), Duration::from_secs(5));
    let label = format!("ilr {}", be.name());
    let target = Target { implementation: &label, device, cold_bytes: 0 };
    let rows = suite
        .train_steps()
        .iter()
        .filter_map(|w| common::bench_work(&mut g, be, clock, w, "", &target, None))
        .collect();
    g.finish();
    rows
}

fn budget(rows: &[BenchResult]) {
    let c_value = std::env::var("ILR_BENCH_C").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0);
    eprintln!("\n{}", EqBudget::new(c_value, rows).table());
}

fn cpu(c: &mut Criterion) {
    let be = Cpu::<f32>::new();
    budget(&steps(c, &be, &WallClock, Suite::cpu(), "cpu"));
}

fn cuda(c: &mut Criterion) {
    match gpu::detect().and_then(|_| Cuda::new(0).map_err(|e| format!("{e:#}"))) {
        Ok(be) => {
            let clock = gpu::EventClock::new(&be).expect("CUDA event clock");
            budget(&steps(c, &be, &clock, Suite::gpu(), "cuda"));
        }
        Err(why) => eprintln!("gpu train step: skipped ({why})"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = cpu, cuda
}
criterion_main!(benches);
