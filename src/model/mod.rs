//! The PreResNet family for CIFAR: its configuration, its parameter layout and scale-invariant
//! groups, and the network itself on any backend.

pub mod config;
pub mod layout;
pub mod preresnet;

pub use config::{InitNorm, ModelConfig, ShortcutKind};
pub use layout::{GroupInfo, Layout, TensorInfo, TensorKind};
pub use preresnet::{init_params, rescale_init, PreResNet};
