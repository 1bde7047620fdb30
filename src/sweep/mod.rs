//! Sweeps: a spec expanded into runs ([`spec`]), split into shards ([`shard`]), trained by a pool of
//! workers ([`pool`]) that lock each run ([`lock`]) and resume it from its checkpoints, or submitted
//! to SLURM as an array job ([`slurm`]).
//!
//! A sweep directory:
//! ```text
//! DIR/spec.toml            the spec, as the SLURM tasks read it
//! DIR/plan.json            the expanded runs: [{"id", "overrides": {key: value}}]
//! DIR/runs/<run-id>/       config.toml, metrics.jsonl, predictions.bin, summary.json,
//!                          checkpoints/, lock, error.txt (a failed attempt)
//! DIR/sweep.sbatch, logs/  with --slurm
//! DIR/report/              written by `ilr report`
//! ```

pub mod execute;
pub mod pool;
pub mod shard;
pub mod slurm;
pub mod spec;

/// The run lock lives with the trainer (plain `ilr train` takes it too); re-exported here for the pool.
pub use crate::train::lock;

pub use execute::{execute, sweep_device, ExecOptions, Tally};
pub use pool::{
    check_worker_flags, finished, plan_slots, run_pool, runs_root, Outcome, PoolOptions, Slot, WorkerFlags,
};
pub use shard::Shard;
pub use slurm::SlurmOptions;
pub use spec::{PlannedRun, Spec};

use crate::util::atomic::{write_atomic, write_json_atomic};
use anyhow::{Context, Result};
use std::path::Path;

pub const SPEC_FILE: &str = "spec.toml";
pub const PLAN_FILE: &str = "plan.json";

/// Read and expand the spec at `spec_path`, resolving and validating every run; writes nothing.
pub fn plan(spec_path: &Path) -> Result<(Spec, Vec<PlannedRun>)> {
    let spec = Spec::from_file(spec_path)?;
    let runs = spec.expand().with_context(|| format!("in sweep spec {}", spec_path.display()))?;
    Ok((spec, runs))
}

/// [`plan`], then [`record`].
pub fn prepare(spec_path: &Path, dir: &Path) -> Result<(Spec, Vec<PlannedRun>)> {
    let (spec, runs) = plan(spec_path)?;
    record(spec_path, dir, &runs)?;
    Ok((spec, runs))
}

/// Record a planned sweep in `dir`: a copy of the spec (spec.toml), its runs (plan.json), runs/.
pub fn record(spec_path: &Path, dir: &Path, runs: &[PlannedRun]) -> Result<()> {
    std::fs::create_dir_all(runs_root(dir)).with_context(|| format!("creating {}", dir.display()))?;
    let text = std::fs::read(spec_path)?;
    let copy = dir.join(SPEC_FILE);
    let same_file = copy.canonicalize().ok() == spec_path.canonicalize().ok();
    if !same_file {
        if let Ok(old) = std::fs::read(&copy) {
            if old != text {
                eprintln!(
                    "note: {} held a different spec; replacing it (the runs of both stay in {})",
                    copy.display(),
                    runs_root(dir).display()
                );
            }
        }
        write_atomic(&copy, &text)?;
    }
    let plan: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            let o: serde_json::Map<String, serde_json::Value> =
                r.overrides.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            serde_json::json!({ "id": r.id, "overrides": o })
        })
        .collect();
    write_json_atomic(&dir.join(PLAN_FILE), &plan)
}
