//! `ilr check`: compare every GPU op with the CPU reference.

use anyhow::{anyhow, Result};
use clap::Args;
use ilr::backend::cuda::Cuda;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Print the ptxas report (registers, spills, shared memory per kernel) of the kernels embedded
    /// in this build, and exit. Needs no GPU.
    #[arg(long)]
    pub kernels: bool,
    /// Seed of the random inputs and of the model in the whole-step check.
    #[arg(long, default_value_t = 1, value_parser = super::values::whole::<u64>)]
    pub seed: u64,
    /// GPU ordinal.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = super::values::whole::<usize>)]
    pub gpu: usize,
}

pub fn run(a: CheckArgs) -> Result<ExitCode> {
    if a.kernels {
        if ilr::kernels::BUILT {
            println!(
                "kernels: nvcc {}, PTX {}, ptxas report for {}",
                ilr::kernels::NVCC_VERSION.unwrap_or("?"),
                ilr::kernels::PTX_ARCH,
                ilr::kernels::PTXAS_ARCH
            );
            print!("{}", ilr::kernels::PTXAS_REPORT);
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("error: this build has no kernels: {}", ilr::kernels::NOT_BUILT_REASON);
        return Ok(ExitCode::from(1));
    }
    let be = Cuda::new(a.gpu).map_err(|e| no_gpu(&e))?;
    println!("ilr check on {} (seed {}): GPU against the CPU reference", be.device_description(), a.seed);
    // A second instance (its own stream and cuDNN/cuBLAS handles) for the library eager-vs-eager
    // row that decides whether the graph rows are bitwise.
    let second = Cuda::new(a.gpu).map_err(|e| eprintln!("note: no second GPU instance ({e:#})")).ok();
    let rows = ilr::check::run_checks(&be, second.as_ref(), a.seed);
    ilr::check::print_table(&rows, &mut std::io::stdout().lock())?;
    Ok(if rows.iter().all(|r| r.pass) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `ilr check` without a usable GPU: the backend's reason, without its advice to run with
/// `--device cpu` (check has no such flag), and what can be checked instead.
fn no_gpu(e: &anyhow::Error) -> anyhow::Error {
    let reason = format!("{e:#}");
    let cut = |r: &str| r.trim_end_matches([' ', ',', ';']).to_string();
    let reason = match reason.strip_suffix("run with --device cpu").map(cut) {
        Some(r) => cut(r.strip_suffix(" or").unwrap_or(&r)),
        None => reason,
    };
    anyhow!(
        "ilr check compares the GPU with the CPU reference and needs a GPU: {reason}. Without one, \
         `ilr check --kernels` prints the ptxas report of the kernels, `cargo test --release` runs the CPU \
         backend's own checks, and `ilr train --device cpu` trains on the CPU"
    )
}
