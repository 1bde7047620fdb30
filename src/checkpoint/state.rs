//! What a checkpoint holds, and its two safetensors files.
//!
//! model.safetensors: the weights under the equivalent PyTorch model's state_dict keys
//! (`conv1.weight`, `layer1.0.bn1.weight`, `layer2.0.shortcut.0.weight`, `fc.bias`, ...) and every
//! BatchNorm's buffers `<bn>.running_mean`, `<bn>.running_var` (f32 or f64, as trained) and
//! `<bn>.num_batches_tracked` (i64 scalar = steps trained). `torch.nn.Module.load_state_dict` takes it
//! as it is.
//!
//! state.safetensors: everything else needed to continue bit-identically, f64/u64 so that it is
//! exact (NaN included):
//! - the optimizer's state under PyTorch's names, `<state name>.<param name>` for each trained
//!   tensor: `momentum_buffer` (SGD's heavy-ball buffer v); `exp_avg`, `exp_avg_sq` (m, v) and
//!   `step` (i64 scalar t, the same for every tensor) for adam and adamw; `exp_avg` (m) for lion,
//!   as lion-pytorch names it; buffers in the weights' precision (as the backend holds them);
//! - `trainer.scalars` u64 [5]: phase_start, accum_correct, accum_seen, metrics_records, prediction_records;
//! - `trainer.floats` f64 [6]: accum_loss, last train loss/acc, last test loss/acc, wall_time_s;
//!   `trainer.test_present` u8 [2]: whether the last test loss/acc exist;
//! - `history.steps` u64 [m], `history.groups` f64 [m, G, 4], `history.layers` f64 [m, L, 4]: the
//!   logged steps that can still enter the final averaging window, per group / trained tensor
//!   (Δ, Δ* or NaN where none, ‖w‖, the effective LR);
//! - `detector.steps` u64 [n], `detector.ratios` f64 [n, G]: the Δ/Δ* fed to the equilibrium
//!   detector since its last restart; replaying them rebuilds it exactly;
//! - `evals.steps` u64 [k], `evals.values` f64 [k, 2]: every evaluation's test loss and accuracy
//!   (for the windowed test metrics of the summary; absent from checkpoints written before they
//!   existed, which then resume with an empty list).
//!
//! There is no RNG state: batches, augmentation and init are pure functions of (seed, step).

use super::tensors::{Precision, TensorReader, TensorWriter};
use crate::model::layout::{BnLayout, Layout, ShortcutLayout};
use crate::optim::OptimKind;
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Values per vector and logged step in `history.*`.
pub const HISTORY_WIDTH: usize = 4;

/// Rows of per-step values, `width` per row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    pub steps: Vec<u64>,
    pub values: Vec<f64>,
}

/// The training loop's own state beside the model and optimizer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainerState {
    /// Step of the last (η, λ, γ) change, where the detector last restarted.
    pub phase_start: u64,
    pub accum_loss: f64,
    pub accum_correct: u64,
    pub accum_seen: u64,
    /// Last logged train loss and accuracy.
    pub last_train: [f64; 2],
    /// Last evaluated test loss and accuracy.
    pub last_test: [Option<f64>; 2],
    /// Per logged step: G·4 group values (`history_groups`) and L·4 layer values.
    pub history_steps: Vec<u64>,
    pub history_groups: Vec<f64>,
    pub history_layers: Vec<f64>,
    /// Detector inputs since `phase_start`: G ratios per logged step.
    pub ratios: Rows,
    /// Every evaluation so far: [test loss, test accuracy] per evaluated step.
    pub evals: Rows,
    /// Lines in metrics.jsonl and records in predictions.bin at this step.
    pub metrics_records: u64,
    pub prediction_records: u64,
    /// Wall time spent training up to this step, over all sessions.
    pub wall_time_s: f64,
}

/// Everything needed to continue a run at `step` exactly as if it had not stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub run_id: String,
    /// Steps completed.
    pub step: u64,
    pub precision: Precision,
    /// The flat parameter buffer, tiled as `Layout::tensors`.
    pub params: Vec<f64>,
    /// BN running statistics, [mean (C) | var (C)] per BN at its `state_offset`.
    pub bn_state: Vec<f64>,
    pub optim: OptimizerState,
    pub trainer: TrainerState,
}

/// The optimizer's state: its buffers, each tiled like `params` (zero for untrained tensors), under
/// the names of [`OptimKind::state_names`], and its step count where it keeps one
/// ([`OptimKind::counts_steps`]).
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub buffers: Vec<(String, Vec<f64>)>,
    pub step: Option<u64>,
}

impl OptimizerState {
    /// The buffer called `name`.
    pub fn buffer(&self, name: &str) -> Option<&[f64]> {
        self.buffers.iter().find(|(n, _)| n == name).map(|(_, b)| &b[..])
    }
}

/// Every BatchNorm of the model with its state_dict prefix (e.g. `layer2.0.shortcut.1`).
pub fn batchnorms(layout: &Layout) -> Vec<(String, BnLayout)> {
    let mut bns = Vec::new();
    for b in &layout.blocks {
        bns.push(b.bn1);
        bns.push(b.bn2);
        if let ShortcutLayout::Projection { bn, .. } = b.shortcut {
            bns.push(bn);
        }
    }
    bns.push(layout.bn_final);
    bns.into_iter()
        .map(|bn| (layout.tensors[bn.gamma].name.trim_end_matches(".weight").to_string(), bn))
        .collect()
}

fn groups_width(layout: &Layout) -> usize {
    layout.groups.len()
}

/// Trained tensors, in layout order (the order of the optimizer's statistics).
pub fn trained_names(layout: &Layout) -> Vec<String> {
    layout.tensors.iter().filter(|t| t.trainable).map(|t| t.name.clone()).collect()
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        bail!("checkpoint {what} has {got} values, the model needs {want}");
    }
    Ok(())
}

impl Checkpoint {
    /// model.safetensors and state.safetensors.
    pub fn encode(&self, layout: &Layout) -> Result<(Vec<u8>, Vec<u8>)> {
        check_len("params", self.params.len(), layout.num_params)?;
        check_len("bn_state", self.bn_state.len(), layout.num_bn_state)?;
        for (name, b) in &self.optim.buffers {
            check_len(name, b.len(), layout.num_params)?;
        }
        let p = self.precision;
        let meta = BTreeMap::from([
            ("format".to_string(), "pt".to_string()),
            ("ilr_run_id".to_string(), self.run_id.clone()),
            ("ilr_step".to_string(), self.step.to_string()),
        ]);
        let mut model = TensorWriter::default();
        for t in &layout.tensors {
            model.floats(&t.name, p, t.shape.clone(), &self.params[t.range()]);
        }
        for (prefix, bn) in batchnorms(layout) {
            let (c, o) = (bn.channels, bn.state_offset);
            model.floats(&format!("{prefix}.running_mean"), p, vec![c], &self.bn_state[o..o + c]);
            model.floats(&format!("{prefix}.running_var"), p, vec![c], &self.bn_state[o + c..o + 2 * c]);
            model.i64s(&format!("{prefix}.num_batches_tracked"), vec![], &[self.step as i64]);
        }

        let s = &self.trainer;
        let (g, l) = (groups_width(layout), trained_names(layout).len());
        let m = s.history_steps.len();
        check_len("history.groups", s.history_groups.len(), m * g * HISTORY_WIDTH)?;
        check_len("history.layers", s.history_layers.len(), m * l * HISTORY_WIDTH)?;
        check_len("detector.ratios", s.ratios.values.len(), s.ratios.steps.len() * g)?;
        let mut state = TensorWriter::default();
        for (name, b) in &self.optim.buffers {
            for t in layout.tensors.iter().filter(|t| t.trainable) {
                state.floats(&format!("{name}.{}", t.name), p, t.shape.clone(), &b[t.range()]);
            }
        }
        if let Some(step) = self.optim.step {
            for t in layout.tensors.iter().filter(|t| t.trainable) {
                state.i64s(&format!("step.{}", t.name), vec![], &[step as i64]);
            }
        }
        state.u64s(
            "trainer.scalars",
            vec![5],
            &[s.phase_start, s.accum_correct, s.accum_seen, s.metrics_records, s.prediction_records],
        );
        let [tl, ta] = s.last_test;
        state.f64s(
            "trainer.floats",
            vec![6],
            &[
                s.accum_loss,
                s.last_train[0],
                s.last_train[1],
                tl.unwrap_or(0.0),
                ta.unwrap_or(0.0),
                s.wall_time_s,
            ],
        );
        state.u8s("trainer.test_present", vec![2], &[tl.is_some() as u8, ta.is_some() as u8]);
        state.u64s("history.steps", vec![m], &s.history_steps);
        state.f64s("history.groups", vec![m, g, HISTORY_WIDTH], &s.history_groups);
        state.f64s("history.layers", vec![m, l, HISTORY_WIDTH], &s.history_layers);
        let n = s.ratios.steps.len();
        state.u64s("detector.steps", vec![n], &s.ratios.steps);
        state.f64s("detector.ratios", vec![n, g], &s.ratios.values);
        check_len("evals.values", s.evals.values.len(), s.evals.steps.len() * 2)?;
        let k = s.evals.steps.len();
        state.u64s("evals.steps", vec![k], &s.evals.steps);
        state.f64s("evals.values", vec![k, 2], &s.evals.values);
        Ok((model.serialize(&meta)?, state.serialize(&meta)?))
    }

    /// Parse the two files against `layout` and the optimizer `kind`; every tensor must be there
    /// with its shape, and model.safetensors must hold nothing else.
    pub fn decode(
        layout: &Layout,
        kind: OptimKind,
        run_id: &str,
        step: u64,
        precision: Precision,
        model: &[u8],
        state: &[u8],
    ) -> Result<Self> {
        let p = precision;
        let r = TensorReader::new(model, "model.safetensors")?;
        let mut params = vec![0.0; layout.num_params];
        let mut expected = BTreeSet::new();
        for t in &layout.tensors {
            params[t.range()].copy_from_slice(&r.floats(&t.name, p, &t.shape)?);
            expected.insert(t.name.clone());
        }
        let mut bn_state = vec![0.0; layout.num_bn_state];
        for (prefix, bn) in batchnorms(layout) {
            let (c, o) = (bn.channels, bn.state_offset);
            let names = [
                format!("{prefix}.running_mean"),
                format!("{prefix}.running_var"),
                format!("{prefix}.num_batches_tracked"),
            ];
            bn_state[o..o + c].copy_from_slice(&r.floats(&names[0], p, &[c])?);
            bn_state[o + c..o + 2 * c].copy_from_slice(&r.floats(&names[1], p, &[c])?);
            r.i64s(&names[2], &[])?;
            expected.extend(names);
        }
        if let Some(extra) = r.names().into_iter().find(|n| !expected.contains(n)) {
            bail!("model.safetensors: tensor {extra:?} is not part of this model");
        }

        let r = TensorReader::new(state, "state.safetensors")?;
        let optim = read_optimizer(&r, layout, kind, p)?;
        let sc = r.u64s("trainer.scalars", &[5])?;
        let fl = r.f64s("trainer.floats", &[6])?;
        let present = r.u8s("trainer.test_present", &[2])?;
        let (g, l) = (groups_width(layout), trained_names(layout).len());
        let m = r.rows("history.steps")?;
        let n = r.rows("detector.steps")?;
        let evals = if r.contains("evals.steps") {
            let k = r.rows("evals.steps")?;
            Rows { steps: r.u64s("evals.steps", &[k])?, values: r.f64s("evals.values", &[k, 2])? }
        } else {
            Rows::default()
        };
        let trainer = TrainerState {
            phase_start: sc[0],
            accum_correct: sc[1],
            accum_seen: sc[2],
            metrics_records: sc[3],
            prediction_records: sc[4],
            accum_loss: fl[0],
            last_train: [fl[1], fl[2]],
            last_test: [(present[0] != 0).then_some(fl[3]), (present[1] != 0).then_some(fl[4])],
            wall_time_s: fl[5],
            history_steps: r.u64s("history.steps", &[m])?,
            history_groups: r.f64s("history.groups", &[m, g, HISTORY_WIDTH])?,
            history_layers: r.f64s("history.layers", &[m, l, HISTORY_WIDTH])?,
            ratios: Rows {
                steps: r.u64s("detector.steps", &[n])?,
                values: r.f64s("detector.ratios", &[n, g])?,
            },
            evals,
        };
        Ok(Self { run_id: run_id.to_string(), step, precision, params, bn_state, optim, trainer })
    }
}

/// The optimizer state of `kind` from state.safetensors (see the module doc).
fn read_optimizer(
    r: &TensorReader,
    layout: &Layout,
    kind: OptimKind,
    p: Precision,
) -> Result<OptimizerState> {
    let trained = || layout.tensors.iter().filter(|t| t.trainable);
    let mut buffers = Vec::new();
    for name in kind.state_names() {
        let mut b = vec![0.0; layout.num_params];
        for t in trained() {
            b[t.range()].copy_from_slice(&r.floats(&format!("{name}.{}", t.name), p, &t.shape)?);
        }
        buffers.push((name.to_string(), b));
    }
    let mut step = None;
    if kind.counts_steps() {
        for t in trained() {
            let s = r.i64s(&format!("step.{}", t.name), &[])?[0];
            match step {
                Some(first) if first != s => {
                    bail!("state.safetensors: step.{} = {s}, other tensors' step = {first}", t.name)
                }
                _ => step = Some(s),
            }
        }
    }
    let step = step
        .map(u64::try_from)
        .transpose()
        .map_err(|_| anyhow::anyhow!("state.safetensors: negative step"))?;
    Ok(OptimizerState { buffers, step })
}
