//! `ilr train`.

use super::overrides;
use anyhow::{Context, Result};
use clap::Args;
use ilr::backend::ComputePrecision;
use ilr::model::ShortcutKind;
use ilr::optim::Rule;
use ilr::train::{
    self, AnyBackend, Device, Dtype, Mode, Outcome, Progress, RunStatus, Summary, TrainConfig, TrainOptions,
};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML config file; keys it leaves out keep their defaults (see README). Without it, the quick
    /// default run: a scale-invariant PreResNet-8 on synthetic data that reaches equilibrium, in
    /// about 20 s on 2 idle cores (AMD EPYC Zen 4).
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
    /// Learning rate η (of every optimizer kind).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay λ: L2 coupled into the gradient for optim.kind sgd (PyTorch's SGD) and adam
    /// (torch.optim.Adam's weight_decay); decoupled, w ← w(1 − ηλ), for adamw and lion.
    #[arg(long, conflicts_with = "lambda_e")]
    pub wd: Option<f64>,
    /// Intrinsic learning rate λ_e = η·λ; sets λ = λ_e/η.
    #[arg(long)]
    pub lambda_e: Option<f64>,
    /// Heavy-ball momentum γ (optim.kind = sgd only; adam, adamw and lion take β₁ from
    /// optim.betas, and refuse a non-zero γ).
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
    /// Any config key, as section.key=value (repeatable), e.g. --set optim.schedule.kind=step. The
    /// optimizer: --set optim.kind=adamw (or adam, lion; default sgd), with optim.betas=[0.9,0.999]
    /// and optim.eps=1e-8 (their defaults; lion's betas default to [0.9,0.99]).
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
    /// Write a checkpoint to OUT/<run-id>/checkpoints/ at step 0, every N steps and at the end
    /// (kept: the step-0 one and the newest 2; 0 or absent: none). A run stopped before its end
    /// continues from its newest checkpoint when the same command is run again.
    #[arg(long, value_name = "N", value_parser = super::values::whole::<u64>)]
    pub checkpoint_every: Option<u64>,
    /// Train again a run that OUT/<run-id>/ already holds (finished or not): the old directory is
    /// renamed to <run-id>.replaced-<UTC time>, never deleted. Without it, a finished run is not
    /// trained again (its results are printed) and an unfinished one resumes.
    #[arg(long)]
    pub force: bool,
    /// Element type of the whole computation: f32 (default), or f64 on the CPU (the exact
    /// reference, slower; part of the run id, and the summary's backend says cpu-f64).
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// When stderr is not a terminal (a log file, a pipe): print a progress line (step, loss,
    /// accuracy, Δ/Δ* range) every this many seconds, at the next logged step (default 30; 0: at
    /// every logged step). On a terminal a progress bar is drawn instead.
    #[arg(long, value_name = "SECONDS", value_parser = super::values::whole::<u64>)]
    pub progress_every: Option<u64>,
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
        precision => t.train.precision, dtype => t.train.dtype);
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
    super::set_threads(a.threads)?;
    super::on_worker(|| train(a, cfg))
}

/// `ilr train` once the thread count is set.
fn train(a: TrainArgs, cfg: TrainConfig) -> Result<ExitCode> {
    // A finished run is never trained again; checked before a backend is opened or data loaded
    // (and again under the lock, in run_config).
    let run_dir = a.out.join(cfg.run_id());
    let rule = cfg.optim.rule();
    if let Some(summary) = train::finished(&run_dir).filter(|_| !a.force) {
        return Ok(already_finished(&run_dir, &summary, &rule));
    }
    let backend = AnyBackend::open(cfg.train.device, cfg.train.dtype)?;
    let data = train::load_datasets(&cfg.data)?;
    if let Some(note) = &data.note {
        eprintln!("note: {note}");
    }
    let progress = if a.quiet {
        Progress::Quiet
    } else if std::io::stderr().is_terminal() {
        Progress::Bar
    } else {
        Progress::Lines { every: Duration::from_secs(a.progress_every.unwrap_or(30)) }
    };
    let mode = Mode {
        force: a.force,
        worker: false,
        progress,
        options: TrainOptions {
            checkpoint_every: a.checkpoint_every.unwrap_or(0),
            checkpoint_at_start: true,
            resume: true,
        },
    };
    match train::run_config(&a.out, &cfg, || Ok((&backend, &data)), &mode)? {
        Outcome::Trained(summary) => {
            print_summary(&summary, &rule);
            Ok(exit_code(&summary, &run_dir))
        }
        Outcome::AlreadyDone(summary) => Ok(already_finished(&run_dir, &summary, &rule)),
        Outcome::Busy => Err(train::busy_error(&run_dir)),
        Outcome::Failed(e) => Err(anyhow::anyhow!(e)),
    }
}

/// A rerun of a finished run: where its results are, and the exit code the run itself had.
fn already_finished(path: &std::path::Path, summary: &Summary, rule: &Rule) -> ExitCode {
    eprintln!(
        "{} is finished: its results are in {} (summary.json, metrics.jsonl). Not training it again; \
         --force trains it afresh, moving this directory aside",
        summary.run_id,
        path.display()
    );
    print_summary(summary, rule);
    exit_code(summary, path)
}

/// 0 for a completed run; 3, with the reason, for a diverged one.
fn exit_code(summary: &Summary, path: &std::path::Path) -> ExitCode {
    match summary.status {
        RunStatus::Completed => ExitCode::SUCCESS,
        RunStatus::Diverged => {
            let d = summary.divergence.as_ref().expect("diverged runs say why");
            eprintln!(
                "error: the run diverged at step {}: {}. Lower the learning rate (--lr) or the weight decay, \
                 or check the data; the metrics up to the divergence are in {}",
                d.step,
                d.reason,
                path.display()
            );
            ExitCode::from(3)
        }
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

/// Where Δ* would be printed for an optimizer without a prediction (adam).
const NO_PREDICTION: &str = "no prediction";

fn print_summary(s: &Summary, rule: &Rule) {
    let f = &s.final_metrics;
    println!(
        "{}: {} steps in {:.1}s ({:.1} steps/s, {})",
        s.run_id, s.steps, s.wall_time_s, s.steps_per_s, s.backend
    );
    println!(
        "final: train loss {:.4} acc {:.2}% | last test evaluation{}: loss {} acc {}%",
        f.train_loss,
        100.0 * f.train_acc,
        f.last_eval_step.map_or(String::new(), |s| format!(" (step {s})")),
        fmt_opt(f.test_loss, 4),
        fmt_opt(f.test_acc.map(|a| 100.0 * a), 2)
    );
    if let Some(w) = &f.test_window_mean {
        println!(
            "       test mean of the last {} evaluations (steps {}-{}): loss {:.4} acc {:.2}%",
            w.evaluations,
            w.steps[0],
            w.steps[1],
            w.test_loss,
            100.0 * w.test_acc
        );
    }
    match s.t_eq_steps {
        _ if !rule.has_prediction() => println!(
            "equilibrium: {NO_PREDICTION} (optim.kind = {} has no Δ*: its L2 term is normalized with the gradient)",
            rule.kind()
        ),
        Some(t) => {
            let against = match &s.plateau {
                None => "smoothed RMS Δ/Δ* in band".to_string(),
                Some(p) => format!(
                    "against each group's plateau, RMS Δ/Δ* = {}",
                    p.iter().map(|v| v.map_or("—".into(), |v| format!("{v:.3}"))).collect::<Vec<_>>().join(", ")
                ),
            };
            println!(
                "equilibrium ({against}): T_eq = {t} steps, T_eq·λ_e = {:.3}, {:.3} units of {}",
                s.t_eq_lambda_e.unwrap_or(f64::NAN),
                s.t_eq_units.unwrap_or(f64::NAN),
                s.time_unit
            )
        }
        None => println!("equilibrium: not reached within {} steps (see README: the criterion)", s.steps),
    }
    println!(
        "{:<28} {:>11} {:>13} {:>10} {:>9} {:>10}",
        "group (steps {}-{})"
            .replace("{}-{}", &format!("{}-{}", s.averaging_window[0], s.averaging_window[1])),
        "Δ",
        format!("Δ* ({})", rule.kind()),
        "mean Δ/Δ*",
        "‖w‖",
        rule.effective_lr_label()
    );
    for g in &s.groups {
        println!(
            "{:<28} {:>11.3e} {:>13} {:>10} {:>9.3} {:>10.3e}",
            g.name,
            g.angular_update,
            g.angular_theory.map_or(NO_PREDICTION.into(), |t| format!("{t:.3e}")),
            fmt_opt(g.angular_ratio, 3),
            g.norm,
            g.effective_lr
        );
    }
}
