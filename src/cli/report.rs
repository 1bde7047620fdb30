//! `ilr report`.

use anyhow::Result;
use clap::Args;
use ilr::report::{analyse, collect, ReportOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Sweep directory (with runs/), or a folder of run directories such as `ilr train`'s runs/.
    pub dir: PathBuf,
    /// Plot only this run (id or unique id prefix; repeatable) in the per-run and overview plots.
    #[arg(long = "run", value_name = "ID")]
    pub runs: Vec<String>,
    /// Write the tables and fits only.
    #[arg(long)]
    pub no_plots: bool,
    /// Draw per-run figures only when at most this many runs are selected.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = super::values::whole::<usize>)]
    pub max_run_plots: usize,
}

pub fn run(a: ReportArgs) -> Result<ExitCode> {
    let opts = ReportOptions { runs: a.runs, plots: !a.no_plots, max_run_plots: a.max_run_plots };
    let runs = collect::load(&a.dir)?;
    let data = analyse(&runs, &opts)?;
    let written = data.write(&a.dir)?;
    data.print(&written);
    Ok(ExitCode::SUCCESS)
}
