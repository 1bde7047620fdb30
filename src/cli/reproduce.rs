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
    #[command(flatten)]
    pub workers: super::sweep::WorkerArgs,
}

pub fn run(a: ReproduceArgs) -> Result<ExitCode> {
    let exec = ExecOptions {
        device: a.device,
        flags: a.workers.flags(),
        checkpoint_every: None,
        progress_bar: std::io::stderr().is_terminal(),
        name: String::new(),
    };
    let r = reproduce::reproduce(a.recipe, a.scale, &a.out, a.data.as_deref(), &exec)?;
    for line in &r.report {
        println!("{line}");
    }
    println!("\n{} ({} scale)\n\n{}", a.recipe.name(), a.scale.name(), r.table);
    println!("verdict: {}", r.verdict.text);
    println!(
        "wrote {} and the report in {}",
        a.out.join("reproduce.json").display(),
        a.out.join("report").display()
    );
    Ok(if r.incomplete > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
