//! Checkpoint directories: `<run>/checkpoints/step-<10-digit step>/` holding model.safetensors,
//! state.safetensors and manifest.json.
//!
//! Each file is written atomically (temp file, fsync, rename; util::atomic). manifest.json is written
//! last and is the commit point: it names the other files with their SHA-256 and size, so a
//! checkpoint without it is incomplete, and one whose files do not match it is corrupt. After a save
//! the newest `keep` complete checkpoints (and the one at step 0, if written) are kept and everything
//! else is removed.

use super::state::Checkpoint;
use super::tensors::Precision;
use crate::model::Layout;
use crate::optim::OptimKind;
use crate::util::atomic::{write_atomic, write_json_atomic};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "ilr-checkpoint/1";
pub const MODEL_FILE: &str = "model.safetensors";
pub const STATE_FILE: &str = "state.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileSum {
    pub sha256: String,
    pub bytes: u64,
}

/// manifest.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub run_id: String,
    pub step: u64,
    pub precision: Precision,
    pub files: BTreeMap<String, FileSum>,
}

fn sum(bytes: &[u8]) -> FileSum {
    FileSum { sha256: hex::encode(Sha256::digest(bytes)), bytes: bytes.len() as u64 }
}

pub fn step_dir(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:010}"))
}

/// Checkpoint folders in `dir` (complete or not), newest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<u64>().ok()) {
            out.push((step, e.path()));
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.0));
    Ok(out)
}

/// Write `ckpt` under `dir`, then keep only the newest `keep` complete checkpoints.
pub fn save(dir: &Path, layout: &Layout, ckpt: &Checkpoint, keep: usize) -> Result<PathBuf> {
    let path = step_dir(dir, ckpt.step);
    if path.exists() {
        // Left by an earlier session that was rolled back past it: replace it whole.
        std::fs::remove_dir_all(&path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    let (model, state) = ckpt.encode(layout)?;
    write_atomic(&path.join(MODEL_FILE), &model)?;
    write_atomic(&path.join(STATE_FILE), &state)?;
    let manifest = Manifest {
        format: FORMAT.into(),
        run_id: ckpt.run_id.clone(),
        step: ckpt.step,
        precision: ckpt.precision,
        files: BTreeMap::from([(MODEL_FILE.into(), sum(&model)), (STATE_FILE.into(), sum(&state))]),
    };
    write_json_atomic(&path.join(MANIFEST_FILE), &manifest)?;
    prune(dir, keep)?;
    Ok(path)
}

/// Read and verify the checkpoint in `path`: manifest present, run id as expected, checksums and
/// sizes matching, tensors matching `layout` and the optimizer state of `kind`.
pub fn load(path: &Path, layout: &Layout, kind: OptimKind, run_id: &str) -> Result<Checkpoint> {
    let mpath = path.join(MANIFEST_FILE);
    if !mpath.exists() {
        bail!("no {MANIFEST_FILE}: it was interrupted while being written");
    }
    let text = std::fs::read_to_string(&mpath).with_context(|| format!("reading {}", mpath.display()))?;
    let m: Manifest =
        serde_json::from_str(&text).with_context(|| format!("{MANIFEST_FILE} is unreadable"))?;
    if m.format != FORMAT {
        bail!("format {:?}, this build reads {FORMAT:?}", m.format);
    }
    if m.run_id != run_id {
        bail!("it belongs to run {}, not {run_id}", m.run_id);
    }
    let read = |name: &str| -> Result<Vec<u8>> {
        let expect = m.files.get(name).with_context(|| format!("{MANIFEST_FILE} does not list {name}"))?;
        let bytes = std::fs::read(path.join(name)).with_context(|| format!("reading {name}"))?;
        let got = sum(&bytes);
        if &got != expect {
            bail!(
                "checksum mismatch in {name}: SHA-256 {} ({} bytes), manifest says {} ({} bytes)",
                &got.sha256[..12],
                got.bytes,
                &expect.sha256[..12],
                expect.bytes
            );
        }
        Ok(bytes)
    };
    let (model, state) = (read(MODEL_FILE)?, read(STATE_FILE)?);
    Checkpoint::decode(layout, kind, &m.run_id, m.step, m.precision, &model, &state)
}

/// Remove every checkpoint after `step` (they belong to a future that is being recomputed).
pub fn remove_after(dir: &Path, step: u64) -> Result<()> {
    for (s, p) in list(dir)? {
        if s > step {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

/// Keep the newest `keep` complete checkpoints, and the one at step 0 (the initial weights) where
/// there is one; remove the others and every incomplete one.
pub fn prune(dir: &Path, keep: usize) -> Result<()> {
    let mut kept = 0;
    for (step, p) in list(dir)? {
        let complete = p.join(MANIFEST_FILE).exists();
        if complete && step == 0 {
            continue;
        }
        if kept < keep && complete {
            kept += 1;
        } else {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}
