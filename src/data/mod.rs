//! Data: CIFAR-10/100 binary loaders, a synthetic CIFAR-shaped dataset, augmentation and batching.
//!
//! Images are u8 CHW in a [`Dataset`]; a [`Batcher`] turns them into normalized NCHW f32 batches as a
//! pure function of (seed, step).

mod augment;
mod batcher;
mod cifar;
mod dataset;
mod error;
pub(crate) mod rng;
mod synthetic;

pub use augment::{write_image, Augment, NormTable, PAD};
pub use batcher::Batcher;
pub use cifar::{
    cifar10_train_note, detect_and_load, load_cifar10, load_cifar100, Cifar100Labels, CIFAR100_SUBDIR,
    CIFAR100_TEST_FILE, CIFAR100_TRAIN_FILE, CIFAR10_SUBDIR, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES,
    CIFAR_PIXELS, CIFAR_SIDE,
};
pub use dataset::{Dataset, Normalization};
pub use error::DataError;
pub use synthetic::{synthetic, SyntheticConfig};
