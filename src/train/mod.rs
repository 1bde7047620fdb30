//! One training loop for every backend: batches in, SGD steps, statistics, evaluation, and the run
//! directory out.

pub mod claim;
pub mod config;
pub mod data;
mod eval;
pub mod job;
pub mod lock;
mod loop_state;
mod progress;
pub mod record;
mod resume;
pub mod rundir;
mod trainer;
mod window;

pub use claim::{busy_error, claim, Claim};
pub use config::{DataConfig, Device, Dtype, LoopConfig, TrainConfig};
pub use data::{load_datasets, Datasets};
pub use job::{run_config, AnyBackend, Mode, Outcome};
pub use progress::Progress;
pub use record::{MetricsRecord, RunStatus, Summary};
pub use rundir::{finished, read_metrics, read_predictions, Predictions, RunDir};
pub use trainer::{train, train_with, Stepped, TrainOptions, Trainer};
