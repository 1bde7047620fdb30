//! The run directory: config.toml, metrics.jsonl, predictions.bin and summary.json (checkpoints/
//! is managed by crate::checkpoint).
//!
//! predictions.bin holds the arg-max class of every test sample at every evaluation:
//! ```text
//! header  16 bytes: b"ILRPRED1" | n: u32 LE (test samples) | classes: u32 LE
//! record  8 + n bytes: step: u64 LE | n × u8 (class of test sample i, in test-set order)
//! ```
//! Records have a fixed size, so record k starts at byte 16 + k·(8 + n): that and the step in each
//! record are the index. A trailing partial record (a crash mid-write) is ignored on reading and cut
//! off on resume.

use super::config::TrainConfig;
use super::record::{MetricsRecord, Summary};
use crate::util::atomic::{write_atomic, write_json_atomic};
use anyhow::{bail, ensure, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const PREDICTIONS_FILE: &str = "predictions.bin";
pub const SUMMARY_FILE: &str = "summary.json";
pub const CONFIG_FILE: &str = "config.toml";
const PRED_MAGIC: &[u8; 8] = b"ILRPRED1";
const PRED_HEADER: u64 = 16;

pub struct RunDir {
    pub path: PathBuf,
    metrics: BufWriter<File>,
    metrics_records: u64,
    predictions: Option<File>,
    prediction_records: u64,
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

impl RunDir {
    /// Create `root/<run-id>/`, write the resolved config and start fresh metrics and predictions.
    pub fn create(root: &Path, cfg: &TrainConfig) -> Result<Self> {
        let mut dir = Self::open(root, cfg)?;
        dir.rewind(0)?;
        Ok(dir)
    }

    /// Open `root/<run-id>/` keeping what it holds (for a resume, which then calls [`Self::rewind`]).
    pub fn open(root: &Path, cfg: &TrainConfig) -> Result<Self> {
        let path = root.join(cfg.run_id());
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating run directory {}", path.display()))?;
        write_atomic(&path.join(CONFIG_FILE), cfg.to_toml()?.as_bytes())?;
        let metrics = BufWriter::new(open_append(&path.join(METRICS_FILE))?);
        Ok(Self { path, metrics, metrics_records: 0, predictions: None, prediction_records: 0 })
    }

    /// Cut metrics.jsonl and predictions.bin back to the records of steps ≤ `step`; returns how many
    /// of each remain. Records are appended in step order, so what remains is a prefix.
    pub fn rewind(&mut self, step: u64) -> Result<(u64, u64)> {
        self.metrics.flush()?;
        let mpath = self.path.join(METRICS_FILE);
        let (keep_bytes, records) = metrics_prefix(&mpath, step)?;
        let f = OpenOptions::new()
            .write(true)
            .open(&mpath)
            .with_context(|| format!("opening {}", mpath.display()))?;
        f.set_len(keep_bytes)?;
        f.sync_all()?;
        self.metrics = BufWriter::new(open_append(&mpath)?);
        self.metrics_records = records;

        let spath = self.path.join(SUMMARY_FILE);
        if spath.exists() {
            // A rewound run is not finished.
            std::fs::remove_file(&spath).with_context(|| format!("removing {}", spath.display()))?;
        }
        self.predictions = None;
        self.prediction_records = 0;
        let ppath = self.path.join(PREDICTIONS_FILE);
        if ppath.exists() {
            let keep = match read_prediction_header(&ppath) {
                Ok((n, _)) => {
                    let steps = read_prediction_steps(&ppath, n)?;
                    let k = steps.iter().take_while(|&&s| s <= step).count() as u64;
                    self.prediction_records = k;
                    if k == 0 {
                        0
                    } else {
                        PRED_HEADER + k * (8 + n as u64)
                    }
                }
                Err(_) => 0,
            };
            let f = OpenOptions::new().write(true).open(&ppath)?;
            f.set_len(keep)?;
            f.sync_all()?;
        }
        Ok((self.metrics_records, self.prediction_records))
    }

    pub fn metrics_records(&self) -> u64 {
        self.metrics_records
    }

    pub fn prediction_records(&self) -> u64 {
        self.prediction_records
    }

    /// Append one record as a JSON line (flushed, so a crash loses at most the line being written).
    pub fn append_metrics(&mut self, rec: &MetricsRecord) -> Result<()> {
        serde_json::to_writer(&mut self.metrics, rec).context("writing metrics.jsonl")?;
        self.metrics.write_all(b"\n")?;
        self.metrics_records += 1;
        self.metrics.flush().context("flushing metrics.jsonl")
    }

    /// Append the test-set predictions of the evaluation at `step` (classes must fit in a u8).
    pub fn append_predictions(&mut self, step: u64, classes: usize, predictions: &[u8]) -> Result<()> {
        ensure!(classes <= 256, "predictions.bin stores classes as u8; this dataset has {classes}");
        if self.predictions.is_none() {
            let path = self.path.join(PREDICTIONS_FILE);
            let mut f = open_append(&path)?;
            if f.metadata()?.len() == 0 {
                let mut header = PRED_MAGIC.to_vec();
                header.extend((predictions.len() as u32).to_le_bytes());
                header.extend((classes as u32).to_le_bytes());
                f.write_all(&header)?;
            } else {
                let (n, c) = read_prediction_header(&path)?;
                ensure!(
                    n as usize == predictions.len() && c as usize == classes,
                    "{} holds {n} predictions over {c} classes per record, not {} over {classes}",
                    path.display(),
                    predictions.len()
                );
            }
            self.predictions = Some(f);
        }
        let f = self.predictions.as_mut().expect("opened above");
        let mut rec = step.to_le_bytes().to_vec();
        rec.extend_from_slice(predictions);
        f.write_all(&rec).context("writing predictions.bin")?;
        self.prediction_records += 1;
        Ok(())
    }

    /// Flush and fsync metrics and predictions (before a checkpoint refers to their lengths).
    pub fn sync(&mut self) -> Result<()> {
        self.metrics.flush()?;
        self.metrics.get_ref().sync_all().context("syncing metrics.jsonl")?;
        if let Some(f) = &self.predictions {
            f.sync_all().context("syncing predictions.bin")?;
        }
        Ok(())
    }

    pub fn write_summary(&mut self, s: &Summary) -> Result<()> {
        self.sync()?;
        write_json_atomic(&self.path.join(SUMMARY_FILE), s)
    }
}

/// The summary of a finished run directory, if it has one (a run is finished once summary.json is
/// there, whether it completed or diverged).
pub fn finished(run_dir: &Path) -> Option<Summary> {
    let text = std::fs::read_to_string(run_dir.join(SUMMARY_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// An error when `run_dir` has a summary.json that [`finished`] cannot read: the run may be
/// finished, so neither `ilr train` nor a sweep worker may rewind or overwrite it.
pub fn refuse_unreadable_summary(run_dir: &Path) -> Result<()> {
    if run_dir.join(SUMMARY_FILE).exists() {
        bail!(
            "{} has a {SUMMARY_FILE} that cannot be read (damaged, or from another version of ilr), so \
             the run may be finished; not touching it. Move that file away to resume the run, or (with \
             ilr train) pass --force to train it afresh (the directory is moved aside, not deleted)",
            run_dir.display()
        );
    }
    Ok(())
}

/// Bytes and number of the leading complete lines of metrics.jsonl with step ≤ `step`.
fn metrics_prefix(path: &Path, step: u64) -> Result<(u64, u64)> {
    #[derive(serde::Deserialize)]
    struct StepOnly {
        step: u64,
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (mut keep, mut records) = (0usize, 0u64);
    while let Some(nl) = bytes[keep..].iter().position(|&b| b == b'\n') {
        match serde_json::from_slice::<StepOnly>(&bytes[keep..keep + nl]) {
            Ok(r) if r.step <= step => {
                keep += nl + 1;
                records += 1;
            }
            _ => break,
        }
    }
    Ok((keep as u64, records))
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

/// (test samples, classes) from the header of a predictions.bin.
fn read_prediction_header(path: &Path) -> Result<(u32, u32)> {
    let mut h = [0u8; PRED_HEADER as usize];
    File::open(path)?.read_exact(&mut h).with_context(|| format!("{}: no header", path.display()))?;
    if &h[..8] != PRED_MAGIC {
        bail!("{}: not a predictions file (bad magic)", path.display());
    }
    Ok((u32::from_le_bytes(h[8..12].try_into().unwrap()), u32::from_le_bytes(h[12..16].try_into().unwrap())))
}

/// The step of every complete record.
fn read_prediction_steps(path: &Path, n: u32) -> Result<Vec<u64>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let rec = 8 + n as u64;
    let count = len.saturating_sub(PRED_HEADER) / rec;
    let mut steps = Vec::with_capacity(count as usize);
    let mut b = [0u8; 8];
    for k in 0..count {
        f.seek(SeekFrom::Start(PRED_HEADER + k * rec))?;
        f.read_exact(&mut b)?;
        steps.push(u64::from_le_bytes(b));
    }
    Ok(steps)
}

/// The contents of a predictions.bin.
#[derive(Clone, Debug, PartialEq)]
pub struct Predictions {
    pub samples: usize,
    pub classes: usize,
    pub steps: Vec<u64>,
    /// steps.len() × samples classes, record after record.
    pub classes_by_record: Vec<u8>,
}

impl Predictions {
    /// The predicted classes at record `k`.
    pub fn record(&self, k: usize) -> &[u8] {
        &self.classes_by_record[k * self.samples..(k + 1) * self.samples]
    }

    /// The record of the evaluation at `step`, if any.
    pub fn at_step(&self, step: u64) -> Option<&[u8]> {
        self.steps.binary_search(&step).ok().map(|k| self.record(k))
    }
}

/// Read a predictions.bin (complete records only).
pub fn read_predictions(path: &Path) -> Result<Predictions> {
    let (n, classes) = read_prediction_header(path)?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let rec = 8 + n as usize;
    let body = &bytes[PRED_HEADER as usize..];
    let count = body.len() / rec;
    let mut steps = Vec::with_capacity(count);
    let mut classes_by_record = Vec::with_capacity(count * n as usize);
    for r in body.chunks_exact(rec) {
        steps.push(u64::from_le_bytes(r[..8].try_into().unwrap()));
        classes_by_record.extend_from_slice(&r[8..]);
    }
    Ok(Predictions { samples: n as usize, classes: classes as usize, steps, classes_by_record })
}
