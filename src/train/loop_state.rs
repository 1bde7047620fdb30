//! The training loop's state between steps beyond the model, the optimizer and the detector, and
//! its conversion to and from a checkpoint's [`TrainerState`].

use super::rundir::RunDir;
use super::window::{Angles, LoggedAngles};
use crate::checkpoint::{Rows, TrainerState, HISTORY_WIDTH};
use std::collections::VecDeque;

/// Running sums of the training loss and accuracy since the last record.
#[derive(Default)]
pub(super) struct TrainAccum {
    pub loss: f64,
    pub correct: usize,
    pub seen: usize,
}

impl TrainAccum {
    /// The means since the last call, and a fresh start.
    pub fn take(&mut self) -> (f64, f64) {
        let s = std::mem::take(self);
        let n = s.seen.max(1) as f64;
        (s.loss / n, s.correct as f64 / n)
    }
}

/// With the model, the optimizer and the detector: what a checkpoint holds.
#[derive(Default)]
pub(super) struct LoopState {
    pub accum: TrainAccum,
    /// Logged steps that may still enter the final averaging window (see window::window_start).
    pub history: VecDeque<LoggedAngles>,
    /// The detector's inputs since its last restart, G ratios per logged step (replayed on resume).
    pub ratios: Rows,
    /// Every evaluation: [test loss, test accuracy] per evaluated step.
    pub evals: Rows,
    pub last_train: (f64, f64),
    pub last_test: (Option<f64>, Option<f64>),
    /// Wall time of earlier sessions of this run.
    pub wall_before: f64,
}

impl LoopState {
    pub fn fresh() -> Self {
        Self { last_train: (f64::NAN, f64::NAN), ..Self::default() }
    }

    pub fn to_checkpoint(&self, phase_start: u64, dir: &RunDir, wall: f64) -> TrainerState {
        let rows = |pick: fn(&LoggedAngles) -> &Vec<Angles>| -> Vec<f64> {
            self.history.iter().flat_map(|r| pick(r).iter().flat_map(|a| a.to_row())).collect()
        };
        TrainerState {
            phase_start,
            accum_loss: self.accum.loss,
            accum_correct: self.accum.correct as u64,
            accum_seen: self.accum.seen as u64,
            last_train: [self.last_train.0, self.last_train.1],
            last_test: [self.last_test.0, self.last_test.1],
            history_steps: self.history.iter().map(|r| r.step).collect(),
            history_groups: rows(|r| &r.groups),
            history_layers: rows(|r| &r.layers),
            ratios: self.ratios.clone(),
            evals: self.evals.clone(),
            metrics_records: dir.metrics_records(),
            prediction_records: dir.prediction_records(),
            wall_time_s: wall,
        }
    }

    pub fn from_checkpoint(t: &TrainerState, groups: usize, layers: usize) -> Self {
        let w = HISTORY_WIDTH;
        let history = t
            .history_steps
            .iter()
            .enumerate()
            .map(|(k, &step)| LoggedAngles {
                step,
                groups: t.history_groups[k * groups * w..(k + 1) * groups * w]
                    .chunks_exact(w)
                    .map(Angles::from_row)
                    .collect(),
                layers: t.history_layers[k * layers * w..(k + 1) * layers * w]
                    .chunks_exact(w)
                    .map(Angles::from_row)
                    .collect(),
            })
            .collect();
        Self {
            accum: TrainAccum {
                loss: t.accum_loss,
                correct: t.accum_correct as usize,
                seen: t.accum_seen as usize,
            },
            history,
            ratios: t.ratios.clone(),
            evals: t.evals.clone(),
            last_train: (t.last_train[0], t.last_train[1]),
            last_test: (t.last_test[0], t.last_test[1]),
            wall_before: t.wall_time_s,
        }
    }
}
