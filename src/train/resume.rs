//! Moving a run's state between the backend and a checkpoint, and choosing the checkpoint to
//! resume from.

use super::rundir::RunDir;
use crate::backend::{Backend, Real};
use crate::checkpoint::{self, Checkpoint, Precision};
use crate::model::Layout;
use crate::optim::OptimKind;
use anyhow::Result;
use num_traits::Zero;

pub(super) fn download_f64<B: Backend>(be: &B, buf: &B::Buf) -> Result<Vec<f64>> {
    let mut v = vec![B::Elem::zero(); be.len(buf)];
    be.download(buf, &mut v)?;
    Ok(v.into_iter().map(Real::to_f64).collect())
}

pub(super) fn upload_f64<B: Backend>(be: &B, src: &[f64], buf: &mut B::Buf) -> Result<()> {
    let v: Vec<B::Elem> = src.iter().map(|&x| <B::Elem as Real>::from_f64(x)).collect();
    be.upload(&v, buf)
}

/// The newest usable checkpoint of `dir`, with metrics.jsonl and predictions.bin cut back to its
/// step and later checkpoints removed. Unusable ones (incomplete, corrupt, inconsistent with the
/// records) are reported and skipped; with none left, the directory is rewound to the start.
pub(super) fn find_checkpoint(
    dir: &mut RunDir,
    layout: &Layout,
    kind: OptimKind,
    run_id: &str,
    precision: Precision,
) -> Result<Option<Checkpoint>> {
    let cdir = checkpoint::dir_of(&dir.path);
    let found = checkpoint::list(&cdir)?;
    for (i, (_, path)) in found.iter().enumerate() {
        let name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let fallback = if i + 1 < found.len() {
            "falling back to the previous checkpoint"
        } else {
            "starting from scratch"
        };
        let ck = match checkpoint::load(path, layout, kind, run_id) {
            Ok(ck) if ck.precision != precision => {
                eprintln!("warning: {run_id}: checkpoint {name} holds {:?} weights, this backend computes in {precision:?}; {fallback}", ck.precision);
                continue;
            }
            Ok(ck) => ck,
            Err(e) => {
                eprintln!("warning: {run_id}: checkpoint {name} is unusable ({e:#}); {fallback}");
                continue;
            }
        };
        let counts = dir.rewind(ck.step)?;
        let want = (ck.trainer.metrics_records, ck.trainer.prediction_records);
        if counts != want {
            eprintln!(
                "warning: {run_id}: up to step {} the run directory has {} metrics records and {} prediction records, \
                 checkpoint {name} expects {} and {}; {fallback}",
                ck.step, counts.0, counts.1, want.0, want.1
            );
            continue;
        }
        checkpoint::remove_after(&cdir, ck.step)?;
        eprintln!("note: {run_id}: resuming from checkpoint {name}");
        return Ok(Some(ck));
    }
    dir.rewind(0)?;
    checkpoint::remove_after(&cdir, 0)?;
    Ok(None)
}
