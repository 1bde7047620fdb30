//! Subcommands and their options.

mod overrides;
mod train;

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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train one run and write runs/<run-id>/{config.toml, metrics.jsonl, summary.json}.
    Train(train::TrainArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train::run(a),
    }
}
