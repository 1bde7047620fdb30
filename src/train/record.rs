//! What a run writes: one metrics record per logged step, and the summary at the end.

use crate::optim::OptimKind;
use crate::stats::VectorStats;
use serde::{Deserialize, Serialize};

/// A group's statistics at one logged step, with the detector's smoothed ratio.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    #[serde(flatten)]
    pub stats: VectorStats,
    pub members: Vec<String>,
    pub smoothed_ratio: Option<f64>,
}

/// One line of metrics.jsonl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    /// Steps completed (this record describes the update from step − 1 to step).
    pub step: u64,
    pub epoch: f64,
    pub lr: f64,
    pub wd: f64,
    /// SGD's heavy-ball momentum γ (0 for adam, adamw and lion, whose momentum is β₁).
    pub momentum: f64,
    /// The optimizer, for adam, adamw and lion; absent for SGD (so SGD records are as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimKind>,
    pub lambda_e: f64,
    /// Mean training loss and accuracy over the steps since the previous record.
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
    pub groups: Vec<GroupRecord>,
    pub layers: Vec<VectorStats>,
}

/// A summary of the end state of one group or tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AngularSummary {
    pub name: String,
    pub members: Vec<String>,
    /// Mean Δ over the logged steps of the final averaging window (radians per step).
    pub angular_update: f64,
    /// Δ* at the end of the run (null where the tensor is not scale-invariant on its own).
    pub angular_theory: Option<f64>,
    /// angular_update / angular_theory.
    pub angular_ratio: Option<f64>,
    /// ‖w‖ and the effective LR (η/‖w‖² for SGD, η/‖w‖ for adam, adamw and lion) at the last step
    /// of the window.
    pub norm: f64,
    pub effective_lr: f64,
    /// ‖w₀‖: the norm of the weights at step 0, as initialized (0 in summaries written before
    /// this field existed).
    #[serde(default)]
    pub initial_norm: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    Diverged,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    pub step: u64,
    pub reason: String,
}

/// The mean of the last evaluations (see train::window): one evaluation of a small test set can
/// swing by tens of points, their mean much less.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestWindow {
    /// Steps of the first and the last evaluation averaged.
    pub steps: [u64; 2],
    pub evaluations: usize,
    pub test_loss: f64,
    pub test_acc: f64,
}

/// The end of the run's metrics: `final` in summary.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalMetrics {
    /// Mean training loss and accuracy over the steps since the previous logged step.
    pub train_loss: f64,
    pub train_acc: f64,
    /// Test loss and accuracy of the last evaluation (at the last step of a completed run).
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
    /// Step of the last evaluation (absent in summaries written before this field existed).
    #[serde(default)]
    pub last_eval_step: Option<u64>,
    /// Test loss and accuracy averaged over the evaluations of the final averaging window (at least
    /// the last 3 where the run has 3).
    #[serde(default)]
    pub test_window_mean: Option<TestWindow>,
}

/// summary.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub run_id: String,
    pub status: RunStatus,
    pub divergence: Option<Divergence>,
    pub backend: String,
    pub steps: u64,
    /// λ_e = η·λ at the end of the run.
    pub lambda_e: f64,
    /// Steps from the last (η, λ, γ) change to the start of equilibrium; null if not reached (always
    /// for adam, which has no Δ*).
    pub t_eq_steps: Option<u64>,
    /// T_eq·λ_e (the Fast Equilibrium Conjecture says this is O(1), up to log factors).
    pub t_eq_lambda_e: Option<f64>,
    /// T_eq in units of relaxation, T_eq·λ_e/(1 − γ) (`stats::relaxation_rate`): comparable across
    /// momenta; equal to `t_eq_lambda_e` at γ = 0. Null if not reached (and in older summaries).
    #[serde(default)]
    pub t_eq_units: Option<f64>,
    /// The unit of `t_eq_units`: "1/λ_e" or "(1−γ)/λ_e" (`stats::unit_label`); empty in older
    /// summaries.
    #[serde(default)]
    pub time_unit: String,
    /// Whether every group's smoothed RMS Δ/Δ* (the detector's) was within tolerance at the last
    /// logged step.
    pub in_equilibrium_at_end: bool,
    /// With `equilibrium.reference = "plateau"`: each group's plateau, its RMS Δ/Δ* over the last
    /// `stats::plateau::PLATEAU_UNITS` units (what T_eq and `in_equilibrium_at_end` are measured
    /// against; null for a group without a finite ratio). Absent with the default reference, Δ*.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plateau: Option<Vec<Option<f64>>>,
    /// The logged steps over which the final angular updates were averaged: [first, last].
    pub averaging_window: [u64; 2],
    #[serde(rename = "final")]
    pub final_metrics: FinalMetrics,
    pub wall_time_s: f64,
    pub steps_per_s: f64,
    pub groups: Vec<AngularSummary>,
    pub layers: Vec<AngularSummary>,
    /// The per-channel input normalisation the run trained and evaluated with: mean and std of the
    /// training images it used (after data.train_limit). Absent in summaries written before it.
    #[serde(default)]
    pub normalization: Option<crate::data::Normalization>,
    /// Where this result came from: ilr version, git commit and dirty flag, CPU model and SIMD
    /// features, threads, and the GPU (name, driver CUDA, cuDNN, PTX hash) where one trained
    /// (`util::provenance`). Absent in summaries written before it.
    #[serde(default)]
    pub provenance: Option<crate::util::provenance::Provenance>,
}
