//! Typed errors of the data module. Every message names the file (or directory) and says what to do.

use std::path::PathBuf;

use thiserror::Error;

/// Where to get the official binary archives (named in error messages).
pub(crate) const CIFAR10_HINT: &str =
    "download cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it";
pub(crate) const CIFAR100_HINT: &str =
    "download cifar-100-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it";

#[derive(Debug, Error)]
pub enum DataError {
    /// A required file does not exist.
    #[error("{}: file not found ({what}); {hint}", path.display())]
    Missing { path: PathBuf, what: &'static str, hint: &'static str },

    /// The path exists but could not be read (no permission, a symlink loop, a directory where a
    /// file belongs): the OS error, said once (it is part of the message, not a separate source, so
    /// that `{:#}` does not repeat it).
    #[error("{}: cannot read: {error}; check the path and its permissions", path.display())]
    Io { path: PathBuf, error: std::io::Error },

    /// `--data` (data.dir) does not exist.
    #[error(
        "{}: no such directory; data.dir (--data) takes the folder that holds the CIFAR binary files \
         (data_batch_*.bin and test_batch.bin, or train.bin and test.bin)",
        dir.display()
    )]
    DirNotFound { dir: PathBuf },

    /// `--data` (data.dir) is a file.
    #[error(
        "{}: not a directory; data.dir (--data) takes the folder that holds the CIFAR binary files, e.g. {}",
        path.display(),
        path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).display()
    )]
    NotADirectory { path: PathBuf },

    /// The file has zero bytes.
    #[error("{}: file is empty (0 bytes); re-download or re-extract it", path.display())]
    Empty { path: PathBuf },

    /// The size is not a whole number of records.
    #[error(
        "{}: truncated: {len} bytes is not a whole number of {record}-byte records ({whole} whole records \
         and {extra} extra bytes); the file is damaged or not a CIFAR binary file, re-download or re-extract it",
        path.display()
    )]
    Truncated { path: PathBuf, len: usize, record: usize, whole: usize, extra: usize },

    /// A label byte is outside `0..classes`.
    #[error(
        "{}: record {record}: {kind} label {value} is out of range (must be < {classes}); the file is damaged \
         or of another dataset, re-download it",
        path.display()
    )]
    LabelOutOfRange { path: PathBuf, record: usize, kind: &'static str, value: u32, classes: usize },

    /// Training batches are not a prefix of data_batch_1..5 (e.g. 3 present, 2 missing).
    #[error(
        "{}: present but {} is missing; training batches must be consecutive from data_batch_1.bin; \
         restore the missing file or remove the later ones",
        present.display(),
        missing.display()
    )]
    BatchGap { present: PathBuf, missing: PathBuf },

    /// Neither the CIFAR-10 nor the CIFAR-100 layout was found.
    #[error(
        "{}: no CIFAR dataset found; looked for {}; download cifar-10-binary.tar.gz or cifar-100-binary.tar.gz \
         from https://www.cs.toronto.edu/~kriz/cifar.html and extract it there",
        dir.display(),
        looked_for.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoDataset { dir: PathBuf, looked_for: Vec<PathBuf> },

    /// A batcher cannot be built (batch size, normalization or dataset shape).
    #[error("dataset '{dataset}': {reason}")]
    Batcher { dataset: String, reason: String },
}
