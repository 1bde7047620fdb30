//! The final averaging window: what summary.json averages over the end of a run.
//!
//! The angular updates are averaged over the logged steps in the last 20% of the current phase
//! (the steps since the last (η, λ, γ) change); the test metrics over the evaluations in that
//! window, or the last [`MIN_EVALS`] evaluations when it holds fewer.

use super::record::{AngularSummary, TestWindow};
use crate::checkpoint::{Rows, HISTORY_WIDTH};
use crate::stats::VectorStats;
use std::collections::VecDeque;

/// Fewest evaluations the windowed test metrics average, where the run has that many.
pub const MIN_EVALS: usize = 3;

/// What the final averages need of one vector at one logged step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Angles {
    angular_update: f64,
    angular_theory: Option<f64>,
    norm: f64,
    effective_lr: f64,
}

impl Angles {
    pub fn of(s: &VectorStats) -> Self {
        Self {
            angular_update: s.angular_update,
            angular_theory: s.angular_theory,
            norm: s.norm,
            effective_lr: s.effective_lr,
        }
    }

    /// [Δ, Δ* (NaN for none: Δ* itself is always finite), ‖w‖, η/‖w‖²], as checkpoints store it.
    pub fn to_row(self) -> [f64; HISTORY_WIDTH] {
        [self.angular_update, self.angular_theory.unwrap_or(f64::NAN), self.norm, self.effective_lr]
    }

    pub fn from_row(r: &[f64]) -> Self {
        Self {
            angular_update: r[0],
            angular_theory: (!r[1].is_nan()).then_some(r[1]),
            norm: r[2],
            effective_lr: r[3],
        }
    }
}

/// One logged step's angular data, kept for the final averages.
pub(super) struct LoggedAngles {
    pub step: u64,
    pub groups: Vec<Angles>,
    pub layers: Vec<Angles>,
}

/// First step of the final averaging window once `done` steps are done in a phase that began at
/// `phase_start`: the window is the logged steps ≥ this at the end, and it only grows with `done`
/// and `phase_start`, so history older than it can be dropped as the run goes.
pub(super) fn window_start(done: u64, phase_start: u64) -> u64 {
    (done - (done - phase_start) / 5).max(phase_start + 1)
}

/// The logged steps of the final window; the last logged step when the window holds none.
pub(super) fn final_window(history: &VecDeque<LoggedAngles>, from: u64) -> Vec<&LoggedAngles> {
    let window: Vec<&LoggedAngles> = history.iter().filter(|r| r.step >= from).collect();
    if window.is_empty() {
        history.iter().rev().take(1).collect()
    } else {
        window
    }
}

/// The mean Δ over `window`, with Δ*, ‖w‖ and η/‖w‖² at its last step.
pub(super) fn mean_summary(
    name: &str,
    members: Vec<String>,
    window: &[&Angles],
    initial_norm: f64,
) -> AngularSummary {
    let n = window.len().max(1) as f64;
    let angular_update = window.iter().map(|s| s.angular_update).sum::<f64>() / n;
    let last = window.last();
    let theory = last.and_then(|s| s.angular_theory);
    AngularSummary {
        name: name.to_string(),
        members,
        angular_update,
        angular_theory: theory,
        angular_ratio: theory.filter(|t| *t > 0.0).map(|t| angular_update / t),
        norm: last.map_or(f64::NAN, |s| s.norm),
        effective_lr: last.map_or(f64::NAN, |s| s.effective_lr),
        initial_norm,
    }
}

/// Mean test loss and accuracy over the evaluations at steps ≥ `from`, or over the last
/// [`MIN_EVALS`] when fewer are there; `evals` holds [loss, accuracy] per evaluation, in step order.
pub(super) fn test_window(evals: &Rows, from: u64) -> Option<TestWindow> {
    let total = evals.steps.len();
    let inside = evals.steps.iter().filter(|&&s| s >= from).count();
    let n = inside.max(MIN_EVALS).min(total);
    if n == 0 {
        return None;
    }
    let rows = &evals.values[2 * (total - n)..];
    let mean = |k: usize| rows.iter().skip(k).step_by(2).sum::<f64>() / n as f64;
    Some(TestWindow {
        steps: [evals.steps[total - n], evals.steps[total - 1]],
        evaluations: n,
        test_loss: mean(0),
        test_acc: mean(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evals(steps: &[u64]) -> Rows {
        Rows {
            steps: steps.to_vec(),
            values: steps.iter().flat_map(|&s| [s as f64, s as f64 / 100.0]).collect(),
        }
    }

    #[test]
    fn the_test_window_takes_the_evaluations_in_the_window_and_at_least_three() {
        let e = evals(&[100, 200, 300, 400, 500, 600]);
        let w = test_window(&e, 350).unwrap();
        assert_eq!((w.steps, w.evaluations), ([400, 600], 3));
        assert_eq!((w.test_loss, w.test_acc), (500.0, 5.0));
        let w = test_window(&e, 250).unwrap();
        assert_eq!((w.steps, w.evaluations, w.test_loss), ([300, 600], 4, 450.0));
        let w = test_window(&e, 600).unwrap();
        assert_eq!((w.steps, w.evaluations), ([400, 600], 3), "fewer inside: the last three");
        let w = test_window(&evals(&[600]), 550).unwrap();
        assert_eq!((w.steps, w.evaluations, w.test_acc), ([600, 600], 1, 6.0), "all there is");
        assert!(test_window(&evals(&[]), 0).is_none());
    }

    #[test]
    fn the_angular_window_is_the_last_fifth_of_the_phase() {
        assert_eq!(window_start(1000, 0), 800);
        assert_eq!(window_start(1000, 500), 900);
        assert_eq!(window_start(500, 500), 501, "nothing logged in the phase yet");
        let a = Angles { angular_update: 1.0, angular_theory: None, norm: 2.0, effective_lr: 3.0 };
        let history: VecDeque<LoggedAngles> =
            [2u64, 4, 6].iter().map(|&step| LoggedAngles { step, groups: vec![a], layers: vec![] }).collect();
        assert_eq!(final_window(&history, 4).iter().map(|r| r.step).collect::<Vec<_>>(), [4, 6]);
        assert_eq!(final_window(&history, 7).iter().map(|r| r.step).collect::<Vec<_>>(), [6]);
    }
}
