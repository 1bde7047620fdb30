//! `ilr train`.

use super::device::Chosen;
use super::overrides;
use anyhow::{Context, Result};
use clap::Args;
use ilr::backend::ComputePrecision;
use ilr::model::ShortcutKind;
use ilr::train::{self, Device, Progress, RunDir, RunStatus, Summary, TrainConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML config file; keys it leaves out keep their defaults (see README). Without it, the quick
    /// default run: a scale-invariant PreResNet-8 on synthetic data that reaches equilibrium, in
    /// about 40 s on 2 idle cores.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// CIFAR-10 or CIFAR-100 binary directory (data_batch_*.bin + test_batch.bin, or train.bin +
    /// test.bin). Without it: the synthetic dataset.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(long, value_parser = super::values::whole::<u64>)]
    pub steps: Option<u64>,
    /// Where to compute (default: auto, or train.device of the config): auto picks the GPU when one
    /// works, else the CPU.
    #[arg(long, value_enum)]
    pub device: Option<Device>,
    /// CUDA: capture each training step as one CUDA graph and replay it (true/false; default
    /// true). Results are bitwise the same either way. Ignored on the CPU.
    #[arg(long, value_name = "BOOL")]
    pub cuda_graphs: Option<bool>,
    /// Arithmetic of the convolutions: f32 (default), or bf16-conv (CUDA only: bf16 operands,
    /// f32 accumulation; weights, BatchNorm and the optimizer stay f32; not yet validated on
    /// hardware, see `ilr check`).
    #[arg(long, value_enum)]
    pub precision: Option<ComputePrecision>,
    /// Seed of the weights, the data order, the augmentation and the synthetic data.
    #[arg(long, value_parser = super::values::whole::<u64>)]
    pub seed: Option<u64>,
    /// Learning rate η.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay λ (L2, coupled into the gradient as in PyTorch's SGD).
    #[arg(long, conflicts_with = "lambda_e")]
    pub wd: Option<f64>,
    /// Intrinsic learning rate λ_e = η·λ; sets λ = λ_e/η.
    #[arg(long)]
    pub lambda_e: Option<f64>,
    /// Heavy-ball momentum γ.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Batch size.
    #[arg(long, value_parser = super::values::whole::<usize>)]
    pub batch_size: Option<usize>,
    /// Network depth 6n+2 (8, 20, 32, 56, ...).
    #[arg(long, value_parser = super::values::whole::<usize>)]
    pub depth: Option<usize>,
    /// Width multiplier k (stages of 16k, 32k, 64k channels).
    #[arg(long)]
    pub width: Option<f64>,
    /// Shortcut of the blocks that change shape.
    #[arg(long, value_enum)]
    pub shortcut: Option<ShortcutArg>,
    /// Fix the last layer and BN's affine at init, as in the paper (true/false).
    #[arg(long, value_name = "BOOL")]
    pub scale_invariant: Option<bool>,
    /// Log per-layer statistics every N steps.
    #[arg(long, value_name = "N", value_parser = super::values::whole::<u64>)]
    pub stats_every: Option<u64>,
    /// Evaluate on the test set every N steps (0: only at the end).
    #[arg(long, value_name = "N", value_parser = super::values::whole::<u64>)]
    pub eval_every: Option<u64>,
    /// Any config key, as section.key=value (repeatable), e.g. --set optim.schedule.kind=step.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Directory of runs: this run goes to OUT/<run-id>/.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// CPU threads, at least 1 (default: all cores).
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one::<usize>)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the resolved config and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ShortcutArg {
    OptionA,
    BnProjection,
}

/// The config file (or the defaults), then `--set`, then the named flags.
fn resolve(a: &TrainArgs) -> Result<TrainConfig> {
    let mut table = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
            text.parse().map_err(|e| anyhow::anyhow!("invalid TOML in {}: {e}", p.display()))?
        }
        None => toml::Table::new(),
    };
    for s in &a.set {
        overrides::apply(&mut table, s)?;
    }
    let mut cfg = TrainConfig::from_table(table).with_context(|| {
        a.config.as_ref().map_or("in the --set overrides".into(), |p| format!("in config {}", p.display()))
    })?;
    let t = &mut cfg;
    if let Some(d) = &a.data {
        t.data.dir = Some(d.clone());
    }
    macro_rules! set {
        ($($flag:ident => $field:expr),* $(,)?) => { $(if let Some(v) = a.$flag.clone() { $field = v; })* };
    }
    set!(steps => t.train.steps, seed => t.seed, lr => t.optim.lr, momentum => t.optim.momentum,
        batch_size => t.train.batch_size, depth => t.model.depth, width => t.model.width,
        scale_invariant => t.model.scale_invariant, stats_every => t.train.stats_every,
        eval_every => t.train.eval_every, device => t.train.device, cuda_graphs => t.train.cuda_graphs,
        precision => t.train.precision);
    if let Some(wd) = a.wd {
        t.optim.wd = Some(wd);
        t.optim.lambda_e = None;
    }
    if let Some(le) = a.lambda_e {
        t.optim.lambda_e = Some(le);
        t.optim.wd = None;
    }
    if let Some(s) = a.shortcut {
        t.model.shortcut = match s {
            ShortcutArg::OptionA => ShortcutKind::OptionA,
            ShortcutArg::BnProjection => ShortcutKind::BnProjection,
        };
    }
    cfg.validate()?;
    Ok(cfg)
}

pub fn run(a: TrainArgs) -> Result<ExitCode> {
    let cfg = resolve(&a)?;
    if a.print_config {
        print!("{}", cfg.to_toml()?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(n) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting the CPU thread count")?;
    }
    let chosen = super::device::choose(cfg.train.device)?;
    let data = train::load_datasets(&cfg.data)?;
    if let Some(note) = &data.note {
        eprintln!("note: {note}");
    }
    let mut dir = RunDir::create(&a.out, &cfg)?;
    eprintln!(
        "training {} on {} ({} train / {} test images), λ_e = {:.3e}, {} steps → {}",
        cfg.model.label(),
        data.train.name,
        data.train.len(),
        data.test.len(),
        cfg.optim.lambda_e()?,
        cfg.train.steps,
        dir.path.display()
    );
    let progress = if a.quiet { Progress::Quiet } else { Progress::Bar };
    let summary = match &chosen {
        Chosen::Cpu(be) => train::train(be, &cfg, &data, Some(&mut dir), progress)?,
        Chosen::Cuda(be) => train::train(be.as_ref(), &cfg, &data, Some(&mut dir), progress)?,
    };
    print_summary(&summary);
    Ok(match summary.status {
        RunStatus::Completed => ExitCode::SUCCESS,
        RunStatus::Diverged => {
            let d = summary.divergence.as_ref().expect("diverged runs say why");
            eprintln!(
                "error: the run diverged at step {}: {}. Lower the learning rate (--lr) or the weight decay, \
                 or check the data; the metrics up to the divergence are in {}",
                d.step,
                d.reason,
                dir.path.display()
            );
            ExitCode::from(3)
        }
    })
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

fn print_summary(s: &Summary) {
    let f = &s.final_metrics;
    println!(
        "{}: {} steps in {:.1}s ({:.1} steps/s, {})",
        s.run_id, s.steps, s.wall_time_s, s.steps_per_s, s.backend
    );
    println!(
        "final: train loss {:.4} acc {:.2}% | test loss {} acc {}%",
        f.train_loss,
        100.0 * f.train_acc,
        fmt_opt(f.test_loss, 4),
        fmt_opt(f.test_acc.map(|a| 100.0 * a), 2)
    );
    match s.t_eq_steps {
        Some(t) => {
            println!("equilibrium: T_eq = {t} steps, T_eq·λ_e = {:.3}", s.t_eq_lambda_e.unwrap_or(f64::NAN))
        }
        None => println!("equilibrium: not reached within {} steps (see README: the criterion)", s.steps),
    }
    println!(
        "{:<28} {:>11} {:>11} {:>8} {:>9} {:>10}",
        "group (steps {}-{})"
            .replace("{}-{}", &format!("{}-{}", s.averaging_window[0], s.averaging_window[1])),
        "Δ",
        "Δ*",
        "Δ/Δ*",
        "‖w‖",
        "η/‖w‖²"
    );
    for g in &s.groups {
        println!(
            "{:<28} {:>11.3e} {:>11} {:>8} {:>9.3} {:>10.3e}",
            g.name,
            g.angular_update,
            g.angular_theory.map_or("—".into(), |t| format!("{t:.3e}")),
            fmt_opt(g.angular_ratio, 3),
            g.norm,
            g.effective_lr
        );
    }
}
