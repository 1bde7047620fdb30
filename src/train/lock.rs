//! One holder per run: an exclusive flock(2) on `<run>/lock` (fs2), held while the run trains, by
//! `ilr train` and by each sweep worker. The kernel drops it when the holder exits or dies, so a
//! crashed process never leaves a run locked. The file's text (pid, host) is only for humans: it
//! names the holder in the message a second process gets.

use anyhow::{Context, Result};
use fs2::FileExt;
use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::path::Path;

pub const LOCK_FILE: &str = "lock";

/// A held run lock; dropping it releases the lock.
pub struct RunLock {
    file: File,
}

impl RunLock {
    /// Take the lock of `run_dir` if no one holds it; None if someone does.
    pub fn try_acquire(run_dir: &Path) -> Result<Option<Self>> {
        std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        let path = run_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock_exclusive() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "pid {} host {}", std::process::id(), host.trim())?;
        Ok(Some(Self { file }))
    }
}

/// Who holds the lock of `run_dir`, as its lock file says ("pid 123 host node7"), if it says.
pub fn holder(run_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join(LOCK_FILE)).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let a = RunLock::try_acquire(d.path()).unwrap().expect("free");
        assert!(
            RunLock::try_acquire(d.path()).unwrap().is_none(),
            "flock is per open file: a second open is refused"
        );
        let who = holder(d.path()).expect("the holder writes its pid");
        assert!(who.starts_with(&format!("pid {} host", std::process::id())), "{who}");
        drop(a);
        assert!(RunLock::try_acquire(d.path()).unwrap().is_some());
    }
}
