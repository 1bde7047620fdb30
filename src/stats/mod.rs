//! Per-layer and per-group equilibrium statistics: norms, the angular update (cancellation-free),
//! the effective LR and the theory value Δ* (SGD: sqrt(2ηλ/(1+γ)); per optimizer in `optim::rule`); and
//! the equilibrium detector.

pub mod angle;
pub mod equilibrium;
pub mod layer;
pub mod plateau;
pub mod rotational;
pub mod units;

pub use angle::angle_from_sums;
pub use equilibrium::{Detector, EquilibriumConfig, Reference};
pub use layer::VectorStats;
pub use units::{relaxation_rate, unit_label};
