//! ilr: a harness for the intrinsic learning rate λ_e = η·λ of BatchNorm networks trained by SGD with
//! weight decay (Li, Lyu and Arora, NeurIPS 2020).
//!
//! Data flows one way: config → data + model + backend → train loop → stats → run directory.

pub mod backend;
pub mod bench;
pub mod calibrate;
pub mod check;
pub mod checkpoint;
pub mod data;
pub mod model;
pub mod optim;
pub mod report;
pub mod reproduce;
pub mod stats;
pub mod sweep;
pub mod train;
pub mod util;

/// The PTX of kernels/*.cu as compiled by build.rs (empty when no nvcc was found), with the ptxas
/// report for sm_90.
pub mod kernels {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}
