//! `ilr reproduce`.

use anyhow::Result;
use clap::Args;
use ilr::reproduce::{self, Recipe, Scale};
use ilr::sweep::ExecOptions;
use ilr::train::Device;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// The claim to test: angular-update, fast-equilibrium, intrinsic-lr, schedule-independence,
    /// small-lr (see experiments/README.md).
    #[arg(value_enum)]
    pub recipe: Recipe,
    /// tiny: minutes on 2 CPU cores on synthetic data; small: about an hour on 2 CPU cores on
    /// real CIFAR-10 (needs --data; fast-equilibrium only so far);
    /// paper: the paper's PreResNet-32 on CIFAR-10 (a GPU job; needs --data).
    #[arg(long, value_enum, default_value = "tiny")]
    pub scale: Scale,
    /// Output directory: runs in DIR/runs/, the standard report in DIR/report/, and
    /// DIR/reproduce.{json,md}. Rerunning resumes unfinished runs and reuses finished ones.
    #[arg(long)]
    pub out: PathBuf,
    /// CIFAR-10 directory (required at small and paper scale; at tiny scale it replaces the
    /// synthetic data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where the runs train: auto picks the GPUs when they work, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// CPU workers, at least 1. Default: one per visible GPU; on the CPU with neither this nor
    /// --threads, one worker of one thread per core, fewer when fewer runs are left to train
    /// (their threads take the spare cores) or memory is short.
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one::<usize>)]
    pub workers: Option<usize>,
    /// Host threads per worker, at least 1 (default: cores/workers).
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one::<usize>)]
    pub threads: Option<usize>,
}

pub fn run(a: ReproduceArgs) -> Result<ExitCode> {
    let exec = ExecOptions {
        device: a.device,
        workers: a.workers,
        threads: a.threads,
        checkpoint_every: None,
        progress_bar: std::io::stderr().is_terminal(),
        name: String::new(),
    };
    let r = reproduce::reproduce(a.recipe, a.scale, &a.out, a.data.as_deref(), &exec)?;
    println!("\n{} ({} scale)\n\n{}", a.recipe.name(), a.scale.name(), r.table);
    println!("verdict: {}", r.verdict.text);
    println!(
        "wrote {} and the report in {}",
        a.out.join("reproduce.json").display(),
        a.out.join("report").display()
    );
    Ok(if r.incomplete > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
