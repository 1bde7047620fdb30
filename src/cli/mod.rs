//! Subcommands and their options.

mod bench;
mod calibrate;
mod check;
mod overrides;
mod report;
mod reproduce;
mod sweep;
mod train;
mod values;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// ilr: train BatchNorm ResNets with SGD + weight decay and measure the intrinsic learning rate
/// λ_e = η·λ, the angular update against its theory value sqrt(2ηλ/(1+γ)), and the time to
/// equilibrium (Li, Lyu and Arora, NeurIPS 2020).
#[derive(Parser, Debug)]
#[command(name = "ilr", version, about, long_about = None, max_term_width = 110)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand takes negative numbers as values (`--lr -1`), so that ilr's own validation, not
/// clap's "unexpected argument", says what is wrong with them.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train one run and write OUT/<run-id>/ (default runs/<run-id>/): config.toml, metrics.jsonl,
    /// predictions.bin, summary.json.
    #[command(allow_negative_numbers = true)]
    Train(train::TrainArgs),
    /// Compare every GPU op (and one whole training step) with the CPU reference; print a table
    /// with errors and tolerances, and exit non-zero on any failure. --kernels prints the ptxas
    /// register/spill report of the embedded kernels (no GPU needed).
    #[command(allow_negative_numbers = true)]
    Check(check::CheckArgs),
    /// Train a sweep (grid and lists over a base config) with resumable, locked runs in
    /// DIR/runs/<run-id>/, or write a SLURM array script for it (--slurm).
    #[command(allow_negative_numbers = true)]
    Sweep(sweep::SweepArgs),
    /// Tabulate a sweep's runs (CSV, JSON), fit T_eq against 1/λ_e, measure function-space
    /// equilibrium across runs, and plot (PNG, SVG) into DIR/report/.
    #[command(allow_negative_numbers = true)]
    Report(report::ReportArgs),
    /// Test one of the paper's claims with a named recipe (a sweep, its report, and an analysis with
    /// a verdict): angular-update, fast-equilibrium, intrinsic-lr, schedule-independence, small-lr.
    #[command(allow_negative_numbers = true)]
    Reproduce(reproduce::ReproduceArgs),
    /// Time the kernels (GB/s against the copy ceiling) and the training steps (images/s) of the
    /// 32×32 nets and of the tiny recipes' PreResNet-8 ×0.5 at 8×8 and 16×16, print the
    /// time-to-equilibrium budget, and optionally write JSON for regression tracking.
    #[command(allow_negative_numbers = true)]
    Bench(bench::BenchArgs),
    /// Calibrate the equilibrium detector on a toy with known dynamics: T_eq against its analytic
    /// value over λ_e, the slope of log T_eq on log(1/λ_e), the delay at a matched start, and the
    /// momentum unit (1−γ)/λ_e; then AdamW's and Lion's predicted equilibria on the same toy. Writes
    /// DIR/calibration.{json,png,svg}; exits 2 if a criterion fails.
    #[command(allow_negative_numbers = true)]
    Calibrate(calibrate::CalibrateArgs),
    /// Per-op time table of a training step (CPU: wall clock; GPU: CUDA events), with NVTX ranges.
    #[command(allow_negative_numbers = true)]
    Profile(bench::ProfileArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Check(a) => check::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Report(a) => report::run(a),
        Command::Reproduce(a) => reproduce::run(a),
        Command::Bench(a) => bench::run_bench(a),
        Command::Profile(a) => bench::run_profile(a),
        Command::Calibrate(a) => calibrate::run_cmd(a),
    }
}

/// Sets the CPU backend's thread count (rayon's global pool), where one is given.
fn set_threads(n: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("setting the CPU thread count to {n}: {e}"))?;
    }
    Ok(())
}

/// `f()` on a worker thread of the global rayon pool, so that the CPU backend's parallel loops
/// start on a thread that takes part in them: a loop of one task then runs inline, and a larger
/// one starts at once, instead of each being handed from the main thread to a sleeping worker and
/// waited for (two thread wake-ups per op; a tiny net's step has about 150 ops, and this took its
/// median step from 2.6–2.8 to 1.9 ms, docs/PERFORMANCE.md).
fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}
