//! Claiming a run directory before training into it, so that nothing a user ran is lost:
//! - another process holds the run's lock: [`Claim::Busy`] ([`busy_error`] names the holder);
//! - the run has a summary.json (it finished, or diverged): [`Claim::Finished`], nothing touched;
//! - with `force`, a directory holding anything is first renamed to
//!   `<run-id>.replaced-<UTC time>` beside it (never deleted), and the run starts afresh;
//! - else the run is new or unfinished, and is trained under the lock (resuming from its
//!   checkpoints, see [`super::TrainOptions::resume`]).

use super::lock::{holder, RunLock, LOCK_FILE};
use super::record::Summary;
use super::rundir::{finished, refuse_unreadable_summary};
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};

/// What [`claim`] found.
pub enum Claim {
    /// Another process holds the run's lock.
    Busy { path: PathBuf },
    /// The run finished before; its directory was left as it was.
    Finished { path: PathBuf, summary: Box<Summary> },
    /// This process may train the run while it holds `lock`.
    Ready {
        path: PathBuf,
        lock: RunLock,
        /// The directory held records of an unfinished run, which the trainer continues.
        unfinished: bool,
        /// Where `force` moved the old directory.
        moved_aside: Option<PathBuf>,
    },
}

/// Claim `root/<run_id>/` for training (see the module doc).
pub fn claim(root: &Path, run_id: &str, force: bool) -> Result<Claim> {
    let path = root.join(run_id);
    let Some(lock) = RunLock::try_acquire(&path)? else {
        return Ok(Claim::Busy { path });
    };
    let holds_records = holds_records(&path)?;
    if !force {
        if let Some(summary) = finished(&path) {
            return Ok(Claim::Finished { path, summary: Box::new(summary) });
        }
        refuse_unreadable_summary(&path)?;
        return Ok(Claim::Ready { path, lock, unfinished: holds_records, moved_aside: None });
    }
    if !holds_records {
        return Ok(Claim::Ready { path, lock, unfinished: false, moved_aside: None });
    }
    let aside = aside_path(root, run_id);
    std::fs::rename(&path, &aside)
        .with_context(|| format!("moving {} aside to {}", path.display(), aside.display()))?;
    if let Ok(d) = std::fs::File::open(root) {
        let _ = d.sync_all();
    }
    // The old lock moved with its directory; hold it until the new one is ours.
    let Some(fresh) = RunLock::try_acquire(&path)? else {
        return Ok(Claim::Busy { path });
    };
    drop(lock);
    Ok(Claim::Ready { path, lock: fresh, unfinished: false, moved_aside: Some(aside) })
}

/// The error `ilr train` gives for [`Claim::Busy`]: who holds `path` (pid and host) and what to do.
pub fn busy_error(path: &Path) -> anyhow::Error {
    let who = holder(path).map_or("another process".into(), |h| format!("another process ({h})"));
    anyhow!(
        "{} is being trained by {who}: two processes must not write one run. Wait for it to \
         finish (rerunning then prints its results), or stop that process and rerun to resume it",
        path.display()
    )
}

/// Whether `path` holds anything but its lock file.
fn holds_records(path: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))?;
    for e in entries {
        if e?.file_name() != LOCK_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `root/<run_id>.replaced-<UTC time>`, with `-2`, `-3`, ... if that exists.
fn aside_path(root: &Path, run_id: &str) -> PathBuf {
    let stamp = crate::util::provenance::utc_now().replace([':', '-'], "");
    let base = format!("{run_id}.replaced-{stamp}");
    let mut path = root.join(&base);
    let mut k = 2;
    while path.exists() {
        path = root.join(format!("{base}-{k}"));
        k += 1;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_run_is_refused_and_force_moves_records_aside() {
        let root = tempfile::tempdir().unwrap();
        let Claim::Ready { path, lock, unfinished, moved_aside } = claim(root.path(), "r", false).unwrap()
        else {
            panic!("a new run is ready to train")
        };
        assert!(!unfinished && moved_aside.is_none());
        let Claim::Busy { path: busy } = claim(root.path(), "r", false).unwrap() else {
            panic!("the lock is held")
        };
        let e = busy_error(&busy);
        assert!(format!("{e}").contains(&format!("pid {}", std::process::id())), "{e}");
        drop(lock);

        std::fs::write(path.join("metrics.jsonl"), "{}\n").unwrap();
        let Claim::Ready { unfinished, .. } = claim(root.path(), "r", false).unwrap() else {
            panic!("no summary: unfinished")
        };
        assert!(unfinished);

        // (Finished runs and --force are tested through the binary, in tests/train_rerun.rs.)
        let Claim::Ready { moved_aside: Some(aside), unfinished: false, .. } =
            claim(root.path(), "r", true).unwrap()
        else {
            panic!("force moves an unfinished run aside too")
        };
        assert_eq!(std::fs::read_to_string(aside.join("metrics.jsonl")).unwrap(), "{}\n");
        assert!(aside.file_name().unwrap().to_string_lossy().starts_with("r.replaced-"));
        assert!(!path.join("metrics.jsonl").exists());
    }
}
