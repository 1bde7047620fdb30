//! The run directory: config.toml, metrics.jsonl and summary.json.

use super::config::TrainConfig;
use super::record::{MetricsRecord, Summary};
use crate::util::atomic::{write_atomic, write_json_atomic};
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct RunDir {
    pub path: PathBuf,
    metrics: BufWriter<File>,
}

impl RunDir {
    /// Create `root/<run-id>/`, write the resolved config and start a fresh metrics.jsonl.
    pub fn create(root: &Path, cfg: &TrainConfig) -> Result<Self> {
        let path = root.join(cfg.run_id());
        std::fs::create_dir_all(&path).with_context(|| format!("creating run directory {}", path.display()))?;
        write_atomic(&path.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        let metrics_path = path.join("metrics.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&metrics_path)
            .with_context(|| format!("opening {}", metrics_path.display()))?;
        Ok(Self { path, metrics: BufWriter::new(file) })
    }

    /// Append one record as a JSON line (flushed, so a crash loses at most the line being written).
    pub fn append_metrics(&mut self, rec: &MetricsRecord) -> Result<()> {
        serde_json::to_writer(&mut self.metrics, rec).context("writing metrics.jsonl")?;
        self.metrics.write_all(b"\n")?;
        self.metrics.flush().context("flushing metrics.jsonl")
    }

    pub fn write_summary(&mut self, s: &Summary) -> Result<()> {
        self.metrics.get_ref().sync_all().context("syncing metrics.jsonl")?;
        write_json_atomic(&self.path.join("summary.json"), s)
    }
}

/// Read every record of a metrics.jsonl.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1)))
        .collect()
}
