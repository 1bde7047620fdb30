//! The runs of a sweep directory (or of any folder of run directories), with their status.

use crate::checkpoint;
use crate::sweep::{finished, pool::ERROR_FILE, runs_root, PLAN_FILE};
use crate::train::rundir::{read_predictions, CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE};
use crate::train::{read_metrics, MetricsRecord, Predictions, RunStatus, Summary, TrainConfig};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Completed,
    Diverged,
    /// The last attempt failed with an error (error.txt).
    Failed,
    /// Started (metrics or checkpoints exist) but not finished: running, or interrupted.
    Unfinished,
    /// Planned, not started.
    Pending,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Diverged => "diverged",
            Status::Failed => "failed",
            Status::Unfinished => "unfinished",
            Status::Pending => "pending",
        }
    }
}

#[derive(Debug)]
pub struct RunInfo {
    pub id: String,
    pub dir: PathBuf,
    pub config: TrainConfig,
    pub summary: Option<Summary>,
    pub status: Status,
    /// Newest checkpoint step, for unfinished runs.
    pub checkpoint_step: Option<u64>,
    pub error: Option<String>,
}

impl RunInfo {
    pub fn metrics(&self) -> Result<Vec<MetricsRecord>> {
        let p = self.dir.join(METRICS_FILE);
        if !p.exists() {
            return Ok(Vec::new());
        }
        read_metrics(&p)
    }

    pub fn predictions(&self) -> Result<Option<Predictions>> {
        let p = self.dir.join(PREDICTIONS_FILE);
        if !p.exists() {
            return Ok(None);
        }
        read_predictions(&p).map(Some)
    }

    /// λ_e at the end of the run (from the summary), else at its start.
    pub fn lambda_e(&self) -> f64 {
        self.summary.as_ref().map_or_else(|| self.config.optim.lambda_e().unwrap_or(f64::NAN), |s| s.lambda_e)
    }
}

/// The run folder of `dir`: DIR/runs when it exists (a sweep directory), else DIR itself (e.g. the
/// `runs/` of `ilr train`).
pub fn runs_folder(dir: &Path) -> PathBuf {
    let r = runs_root(dir);
    if r.is_dir() {
        r
    } else {
        dir.to_path_buf()
    }
}

/// Every run directory (one with a config.toml) under the run folder of `dir`, in the order of
/// DIR/plan.json, then by id.
pub fn collect(dir: &Path) -> Result<Vec<RunInfo>> {
    let root = runs_folder(dir);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&root).with_context(|| format!("listing {}", root.display()))? {
        let path = e?.path();
        let cfg_path = path.join(CONFIG_FILE);
        if !cfg_path.is_file() {
            continue;
        }
        let config = TrainConfig::from_toml_file(&cfg_path)?;
        let id = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let summary = finished(&path);
        let error = std::fs::read_to_string(path.join(ERROR_FILE)).ok().map(|s| s.trim().to_string());
        let checkpoint_step = checkpoint::list(&checkpoint::dir_of(&path))?.first().map(|c| c.0);
        let status = match (&summary, &error) {
            (Some(s), _) if s.status == RunStatus::Diverged => Status::Diverged,
            (Some(_), _) => Status::Completed,
            (None, Some(_)) => Status::Failed,
            (None, None) if checkpoint_step.is_some() || path.join(METRICS_FILE).exists() => {
                Status::Unfinished
            }
            _ => Status::Pending,
        };
        out.push(RunInfo { id, dir: path, config, summary, status, checkpoint_step, error });
    }
    let plan: Vec<String> = std::fs::read_to_string(dir.join(PLAN_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        .map(|v| v.iter().filter_map(|r| r["id"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let rank = |id: &str| plan.iter().position(|p| p == id).unwrap_or(usize::MAX);
    out.sort_by(|a, b| rank(&a.id).cmp(&rank(&b.id)).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// A run with its records read: what [`super::analyse()`] works on.
#[derive(Debug)]
pub struct LoadedRun {
    pub info: RunInfo,
    /// metrics.jsonl (empty when the run has none).
    pub metrics: Vec<MetricsRecord>,
    /// predictions.bin of completed and unfinished runs (the ones function space compares); None
    /// for the others and where the run has none.
    pub predictions: Option<Predictions>,
}

/// The runs of `dir` ([`collect`]) with their records; an error when there are none.
pub fn load(dir: &Path) -> Result<Vec<LoadedRun>> {
    let runs = collect(dir)?;
    if runs.is_empty() {
        bail!(
            "no runs in {} (expected run directories with a config.toml in DIR/runs/ or DIR/)",
            dir.display()
        );
    }
    runs.into_iter()
        .map(|info| {
            let metrics = info.metrics()?;
            let predictions = match info.status {
                Status::Completed | Status::Unfinished => info.predictions()?,
                _ => None,
            };
            Ok(LoadedRun { info, metrics, predictions })
        })
        .collect()
}
