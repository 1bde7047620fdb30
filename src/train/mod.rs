//! One training loop for every backend: batches in, SGD steps, statistics, evaluation, and the run
//! directory out.

pub mod config;
pub mod data;
pub mod record;
pub mod rundir;
mod trainer;

pub use config::{DataConfig, Device, LoopConfig, TrainConfig};
pub use data::{load_datasets, Datasets};
pub use record::{MetricsRecord, RunStatus, Summary};
pub use rundir::{read_metrics, read_predictions, Predictions, RunDir};
pub use trainer::{train, train_with, Progress, TrainOptions};
