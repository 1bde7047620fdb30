//! Checkpoints: the model under PyTorch state_dict names (safetensors), the optimizer and trainer
//! state beside it, written atomically with SHA-256 checksums; the newest two (and the step-0 one) are kept.
//!
//! Layout of one run directory's `checkpoints/` (see [`store`] and [`state`] for the formats):
//! ```text
//! step-0000000500/model.safetensors   weights + BN buffers, PyTorch names
//! step-0000000500/state.safetensors   optimizer state, trainer accumulators, detector inputs
//! step-0000000500/manifest.json       format, run id, step, precision, SHA-256 of both files
//! ```

pub mod state;
pub mod store;
pub mod tensors;

pub use state::{batchnorms, trained_names, Checkpoint, OptimizerState, Rows, TrainerState, HISTORY_WIDTH};
pub use store::{list, load, prune, remove_after, save, step_dir, Manifest};
pub use tensors::Precision;

/// Complete checkpoints kept per run: the newest and the one before, to fall back on if the newest
/// turns out corrupt (plus the one at step 0, where `ilr train --checkpoint-every` wrote it).
pub const KEEP: usize = 2;

/// The checkpoint folder of a run directory.
pub fn dir_of(run_dir: &std::path::Path) -> std::path::PathBuf {
    run_dir.join("checkpoints")
}
