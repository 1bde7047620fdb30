//! `ilr bench` (kernel and training-step throughput, the equilibrium-time budget, JSON for
//! regression tracking) and `ilr profile` (a per-op time table of one training step).

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ilr::backend::cpu::Cpu;
use ilr::backend::cuda::Cuda;
use ilr::backend::Backend;
use ilr::bench::report::{fmt_duration, fmt_pct_of_copy, load_avg};
use ilr::bench::{
    gpu, profile_train_step, run_cases, BenchFile, BenchResult, EqBudget, Machine, Net, Plan, Suite, Target,
    WallClock, Work,
};
use ilr::train::Device;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A shorter run (fewer repetitions, a smaller copy): under two minutes on a 2-core CPU.
    #[arg(long)]
    pub quick: bool,
    /// Also write the results as JSON (atomically) for regression tracking; peers/pytorch writes the
    /// same schema, and `python3 peers/pytorch/compare.py A.json B.json` prints their ratios.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Where to benchmark: auto picks the GPU when the CUDA backend opens one, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// CPU threads, at least 1 (default: all cores).
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one::<usize>)]
    pub threads: Option<usize>,
    /// c = T_eq·λ_e, the steps to equilibrium times λ_e, from a measured run (see `ilr train`'s
    /// summary): the budget table, the paper's setting included, assumes c/λ_e steps.
    #[arg(long = "t-eq-lambda-e", alias = "c", value_name = "C", default_value_t = 2.0)]
    pub c: f64,
    /// Depths of the width-1 PreResNets on 32×32 images whose shapes and training steps are
    /// benchmarked. The tiny recipes' steps (PreResNet-8 ×0.5, batch 32, 8×8 and 16×16 images) run
    /// besides them; --filter selects.
    #[arg(long, value_delimiter = ',', default_value = "20,32,56", value_parser = super::values::whole::<usize>)]
    pub depths: Vec<usize>,
    /// Batch sizes of the BatchNorm shapes (default 128,512).
    #[arg(long, value_delimiter = ',', value_parser = super::values::whole::<usize>)]
    pub kernel_batches: Option<Vec<usize>>,
    /// Batch sizes of the training steps of the --depths nets (CPU default 128; GPU 128,512); the
    /// tiny recipes' steps stay at their batch 32.
    #[arg(long, value_delimiter = ',', value_parser = super::values::whole::<usize>)]
    pub train_batches: Option<Vec<usize>>,
    /// Only cases whose name or shape label contains this (e.g. bn_, sgd, train_step, preresnet20,
    /// "preresnet20 b128", preresnet8x0.5 for the tiny recipes' steps); the copy always runs.
    #[arg(long)]
    pub filter: Option<String>,
}

#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// cpu: time every backend op with the wall clock; cuda: with CUDA events; auto: the GPU when
    /// one opens.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// PreResNet depth (6n+2), on --size × --size × 3 inputs with 10 classes.
    #[arg(long, default_value_t = 20, value_parser = super::values::whole::<usize>)]
    pub depth: usize,
    /// Channel width multiplier (the tiny recipes' net: --depth 8 --width 0.5).
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Image side (the tiny recipes: 8 or 16).
    #[arg(long, default_value_t = 32, value_parser = super::values::at_least_one::<usize>)]
    pub size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128, value_parser = super::values::whole::<usize>)]
    pub batch: usize,
    /// Steps to profile (after one untimed warmup step).
    #[arg(long, default_value_t = 3, value_parser = super::values::whole::<usize>)]
    pub steps: usize,
    /// CPU threads, at least 1 (default: all cores).
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one::<usize>)]
    pub threads: Option<usize>,
    /// Rows of the per-(op, shape) table.
    #[arg(long, value_name = "N", default_value_t = 15, value_parser = super::values::whole::<usize>)]
    pub top: usize,
    /// Per-op times: `min` takes each op's fastest time over the steps (robust on a shared machine),
    /// `mean` the average.
    #[arg(long, value_enum, default_value = "min")]
    pub stat: ProfileStat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileStat {
    Min,
    Mean,
}

fn suite(a: &BenchArgs, gpu: bool) -> Suite {
    let mut s = if gpu { Suite::gpu() } else { Suite::cpu() };
    s.depths = a.depths.clone();
    if a.quick {
        s.copy_bytes /= 2;
    }
    if let Some(b) = &a.kernel_batches {
        s.kernel_batches = b.clone();
    }
    if let Some(b) = &a.train_batches {
        s.train_batches = b.clone();
    }
    s
}

fn progress(r: &BenchResult) {
    let rate = match (r.images_per_s, r.gbps) {
        (Some(i), _) => format!("{i:.1} images/s"),
        (_, Some(g)) => {
            format!(
                "{g:.2} GB/s{}",
                r.pct_of_copy.map_or(String::new(), |p| format!(" ({} of copy)", fmt_pct_of_copy(p)))
            )
        }
        _ => String::new(),
    };
    eprintln!("  {:<14} {:<5} {:<24} {:>10}  {rate}", r.name, r.device, r.shape, fmt_duration(r.median_s));
}

/// The CUDA backend on GPU 0 for `device`, or why not (None with a note under auto).
fn open_gpu(device: Device, detected: &Result<String, String>) -> Result<Option<Cuda>, String> {
    match (device, detected) {
        (Device::Cpu, _) => Ok(None),
        (Device::Auto, Err(_)) => Ok(None),
        (Device::Cuda, Err(why)) => Err(why.clone()),
        (_, Ok(_)) => match Cuda::new(0) {
            Ok(be) => Ok(Some(be)),
            Err(e) if device == Device::Cuda => Err(format!("{e:#}")),
            Err(e) => {
                eprintln!("note: the GPU cannot be used ({e:#}); benchmarking the CPU");
                Ok(None)
            }
        },
    }
}

pub fn run_bench(a: BenchArgs) -> Result<ExitCode> {
    if !(a.c.is_finite() && a.c > 0.0) {
        bail!("--t-eq-lambda-e {} must be a positive number (T_eq·λ_e of a measured run)", a.c);
    }
    if a.depths.iter().any(|&d| d < 8 || (d - 2) % 6 != 0) {
        bail!("--depths {:?}: each depth must be 6n+2 (8, 20, 32, 56, ...)", a.depths);
    }
    if a.kernel_batches.iter().flatten().any(|&b| b == 0) || a.train_batches.iter().flatten().any(|&b| b < 2)
    {
        bail!(
            "--kernel-batches must be at least 1 and --train-batches at least 2 (BatchNorm needs 2 samples)"
        );
    }
    super::set_threads(a.threads)?;
    super::on_worker(|| bench(a))
}

/// `ilr bench` once the thread count is set.
fn bench(a: BenchArgs) -> Result<ExitCode> {
    let detected = gpu::detect();
    let cuda = open_gpu(a.device, &detected).map_err(|why| anyhow!("--device cuda: {why}"))?;
    let gpu_name = cuda.as_ref().map(|be| be.device_description()).or(detected.clone().ok());
    let machine = Machine::detect(rayon::current_num_threads(), gpu_name);
    let mut file = BenchFile::new(std::env::args().collect::<Vec<_>>().join(" "), machine);
    let plan = if a.quick { Plan::QUICK } else { Plan::FULL };
    let keep = |w: &Work| a.filter.as_ref().is_none_or(|f| w.matches(f));
    // The copy always runs: the other cases are reported as a share of its bandwidth.
    let cases = |s: Suite| -> (Vec<Work>, Vec<Work>) {
        let kernels = s.kernels().into_iter().filter(|w| keep(w) || w.name() == "copy").collect();
        (kernels, s.train_steps().into_iter().filter(keep).collect())
    };

    if let Some(be) = &cuda {
        let (kernels, steps) = cases(suite(&a, true));
        eprintln!(
            "ilr bench: {} kernel cases and {} training steps on {}",
            kernels.len(),
            steps.len(),
            be.device_description()
        );
        let clock = gpu::EventClock::new(be)?;
        let cold = suite(&a, true).cold_bytes;
        gpu::run_suite(be, &clock, &plan, &kernels, &steps, cold, &mut file, &mut progress)?;
    } else {
        file.notes.push(match &detected {
            Ok(name) => format!(
                "GPU {name} present but not used (--device cpu, or it failed to open): GPU tables pending"
            ),
            Err(why) => format!("{why}: GPU tables pending"),
        });
    }
    if cuda.is_none() {
        let be = Cpu::<f32>::new();
        let s = suite(&a, false);
        let cold_bytes = s.cold_bytes;
        let (kernels, steps) = cases(s);
        eprintln!(
            "ilr bench: {} kernel cases and {} training steps on {} with {} threads",
            kernels.len(),
            steps.len(),
            file.machine.cpu_model,
            file.machine.threads
        );
        let label = format!("ilr {}", be.name());
        let target = Target { implementation: &label, device: "cpu", cold_bytes };
        run_cases(&be, &WallClock, &plan, &kernels, &target, &mut file, &mut progress)?;
        run_cases(&be, &WallClock, &plan, &steps, &target, &mut file, &mut progress)?;
    }
    if let Some(l) = load_avg() {
        if l[0] > file.machine.cores as f64 * 0.5 {
            file.notes.push(format!(
                "load average {:.2} on {} cores at the end: other processes shared the CPU, figures are noisy",
                l[0], file.machine.cores
            ));
        }
    }
    finish(&a, &mut file)?;
    Ok(ExitCode::SUCCESS)
}

/// Adds the equilibrium budget, prints the tables and writes the JSON.
fn finish(a: &BenchArgs, file: &mut BenchFile) -> Result<()> {
    if file.results.iter().any(|r| r.name == "train_step") {
        file.equilibrium = Some(EqBudget::new(a.c, &file.results));
    }
    println!("{}", file.tables());
    if let Some(p) = &a.json {
        ilr::util::atomic::write_json_atomic(p, file).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

pub fn run_profile(a: ProfileArgs) -> Result<ExitCode> {
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if (a.depth < 8 || (a.depth - 2) % 6 != 0) || !(a.width.is_finite() && a.width > 0.0) {
        bail!("--depth must be 6n+2 (8, 20, 32, ...) and --width positive (got {} and {})", a.depth, a.width);
    }
    super::set_threads(a.threads)?;
    super::on_worker(|| profile(a))
}

/// `ilr profile` once the thread count is set.
fn profile(a: ProfileArgs) -> Result<ExitCode> {
    let net = Net { depth: a.depth, width: a.width, size: a.size };
    let detected = gpu::detect();
    let (p, backend) = match open_gpu(a.device, &detected).map_err(|why| anyhow!("--device cuda: {why}"))? {
        Some(be) => {
            let clock = gpu::EventClock::new(&be)?;
            (profile_train_step(&be, clock, &net, a.batch, 1, a.steps)?, be.name())
        }
        None => {
            let be = Cpu::<f32>::new();
            (profile_train_step(&be, WallClock, &net, a.batch, 1, a.steps)?, be.name())
        }
    };
    let measured = ilr::bench::timing::median(&p.step_s);
    let p = if a.stat == ProfileStat::Min { p.fastest() } else { p };
    let ops = p.rows(false);
    let step: f64 = ops.iter().map(|r| r.seconds).sum();
    println!(
        "PreResNet-{}{} on {}×{} batch {} on {backend} ({} threads), {} steps: median step {} ({:.1} images/s); \
         ops below {} ({}, {:.1} images/s)",
        a.depth,
        if a.width == 1.0 { String::new() } else { format!(" ×{}", a.width) },
        a.size,
        a.size,
        a.batch,
        rayon::current_num_threads(),
        a.steps,
        fmt_duration(measured),
        a.batch as f64 / measured,
        if a.stat == ProfileStat::Min { "at each op's fastest over the steps" } else { "averaged over the steps" },
        fmt_duration(step),
        a.batch as f64 / step
    );
    println!("\n{:<28} {:>10} {:>12} {:>8} {:>12}", "op", "calls/step", "time/step", "% step", "per call");
    for r in &ops {
        println!(
            "{:<28} {:>10} {:>12} {:>7.1}% {:>12}",
            r.op,
            r.calls,
            fmt_duration(r.seconds),
            100.0 * r.seconds / step,
            fmt_duration(r.seconds / r.calls)
        );
    }
    println!(
        "\n{:<28} {:<24} {:>6} {:>12} {:>8}",
        "op (top by shape)", "shape", "calls", "time/step", "% step"
    );
    for r in p.rows(true).iter().take(a.top) {
        println!(
            "{:<28} {:<24} {:>6} {:>12} {:>7.1}%",
            r.op,
            r.shape.as_deref().unwrap_or(""),
            r.calls,
            fmt_duration(r.seconds),
            100.0 * r.seconds / step
        );
    }
    Ok(ExitCode::SUCCESS)
}
