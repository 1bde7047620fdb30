//! Loading the datasets a config names, and the normalization they are trained with.

use super::config::DataConfig;
use crate::data::{cifar10_train_note, detect_and_load, synthetic, Dataset, Normalization};
use anyhow::Result;

pub struct Datasets {
    pub train: Dataset,
    pub test: Dataset,
    pub norm: Normalization,
    /// Something the user should know, e.g. "using 1 of 5 training batches".
    pub note: Option<String>,
}

fn truncate(d: &mut Dataset, limit: Option<usize>) {
    if let Some(n) = limit.filter(|&n| n < d.len()) {
        d.images.truncate(n * d.image_len());
        d.labels.truncate(n);
    }
}

/// The CIFAR directory of `cfg.dir`, or the synthetic set. Normalization: per-channel mean and std
/// of the training set (for CIFAR-10 this gives the usual 0.49/0.48/0.45, 0.25/0.24/0.26).
pub fn load_datasets(cfg: &DataConfig) -> Result<Datasets> {
    let (mut train, mut test, note) = match &cfg.dir {
        Some(dir) => {
            let (train, test) = detect_and_load(dir)?;
            let note = cifar10_train_note(&train);
            (train, test, note)
        }
        None => {
            let (train, test) = synthetic(&cfg.synthetic);
            (train, test, None)
        }
    };
    truncate(&mut train, cfg.train_limit);
    truncate(&mut test, cfg.test_limit);
    let norm = Normalization::from_dataset(&train);
    Ok(Datasets { train, test, norm, note })
}
