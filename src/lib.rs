//! ilr: a harness for the intrinsic learning rate λ_e = η·λ of BatchNorm networks trained by SGD with
//! weight decay (Li, Lyu and Arora, NeurIPS 2020).
//!
//! Data flows one way: config → data + model + backend → train loop → stats → run directory.

pub mod backend;
pub mod data;
pub mod model;
pub mod optim;
pub mod stats;
pub mod train;
pub mod util;
