//! The training loop.
//!
//! Per step t: (η, λ) from the schedule at epoch t/S; the batch for t (a pure function of seed and
//! t); forward, loss, backward; the SGD step. Every `stats_every` steps the step also returns the
//! per-tensor sums (Σw², Σg², Σd², Σw·d), from which the per-tensor and per-group statistics, the
//! equilibrium detector and one metrics.jsonl record are made.

use super::config::TrainConfig;
use super::data::Datasets;
use super::record::*;
use super::rundir::RunDir;
use crate::backend::{Backend, Real, StepSums};
use crate::data::Batcher;
use crate::model::PreResNet;
use crate::optim::{Hyper, Sgd};
use crate::stats::{Detector, VectorStats};
use anyhow::Result;
use num_traits::Zero;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Instant;

/// Whether to draw a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Bar,
    Quiet,
}

/// Running means of the training loss and accuracy since the last record.
#[derive(Default)]
struct TrainAccum {
    loss: f64,
    correct: usize,
    seen: usize,
}

impl TrainAccum {
    fn take(&mut self) -> (f64, f64) {
        let s = std::mem::take(self);
        let n = s.seen.max(1) as f64;
        (s.loss / n, s.correct as f64 / n)
    }
}

/// One logged step's angular data, kept for the final averages.
struct LoggedAngles {
    step: u64,
    groups: Vec<VectorStats>,
    layers: Vec<VectorStats>,
}

fn evaluate<B: Backend>(
    be: &B,
    model: &mut PreResNet<B>,
    batcher: &Batcher,
    host: &mut HostBatch<B>,
) -> Result<(f64, f64)> {
    let total = batcher.dataset().len();
    let (mut loss, mut correct) = (0.0, 0usize);
    let mut predictions = vec![0u32; model.batch];
    let mut start = 0;
    while start < total {
        let count = model.batch.min(total - start);
        batcher.fill_eval(start, count, &mut host.images, &mut host.labels);
        host.upload(be, model)?;
        model.forward(be, false);
        let s = model.eval_loss(be, count, &mut predictions[..count])?;
        loss += s.loss_sum;
        correct += s.correct;
        start += count;
    }
    Ok((loss / total as f64, correct as f64 / total as f64))
}

/// Host staging for one batch.
struct HostBatch<B: Backend> {
    images: Vec<f32>,
    elems: Vec<B::Elem>,
    labels: Vec<u32>,
}

impl<B: Backend> HostBatch<B> {
    fn new(len: usize, batch: usize) -> Self {
        Self { images: vec![0.0; len], elems: vec![B::Elem::zero(); len], labels: vec![0; batch] }
    }
    fn upload(&mut self, be: &B, model: &mut PreResNet<B>) -> Result<()> {
        for (e, &v) in self.elems.iter_mut().zip(&self.images) {
            *e = B::Elem::from_f64(v as f64);
        }
        model.set_batch(be, &self.elems, &self.labels)
    }
}

/// Per-tensor and per-group statistics of one step from the per-tensor sums.
fn step_stats<B: Backend>(
    model: &PreResNet<B>,
    opt: &Sgd<B>,
    h: &Hyper,
    sums: &[(usize, StepSums)],
) -> (Vec<VectorStats>, Vec<(VectorStats, Vec<String>)>) {
    let l = &model.layout;
    let layers = sums
        .iter()
        .map(|(t, s)| {
            let info = &l.tensors[*t];
            let wd = info.invariant_alone.then(|| opt.tensor_wd(*t, h)).flatten();
            VectorStats::new(&info.name, s, h, wd)
        })
        .collect();
    let groups = l
        .groups
        .iter()
        .map(|g| {
            let mut total = StepSums::default();
            for m in &g.members {
                if let Some((_, s)) = sums.iter().find(|(t, _)| t == m) {
                    total += *s;
                }
            }
            let wd = opt.tensor_wd(g.members[0], h);
            let names = g.members.iter().map(|&m| l.tensors[m].name.clone()).collect();
            (VectorStats::new(&g.name, &total, h, wd), names)
        })
        .collect();
    (layers, groups)
}

fn mean_summary(name: &str, members: Vec<String>, window: &[&VectorStats]) -> AngularSummary {
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
    }
}

/// Train `cfg` on `be`, writing records to `out` when given. A diverged run returns Ok with
/// `status: diverged`; errors are reserved for things that stop the run from being measured.
pub fn train<B: Backend>(
    be: &B,
    cfg: &TrainConfig,
    data: &Datasets,
    mut out: Option<&mut RunDir>,
    progress: Progress,
) -> Result<Summary> {
    cfg.validate()?;
    let t0 = Instant::now();
    let (train_set, test_set) = (&data.train, &data.test);
    let batch = cfg.train.batch_size;
    let mut model = PreResNet::new(be, &cfg.model, train_set.channels, train_set.height, train_set.classes, batch)?;
    model.init(be, cfg.seed)?;
    let mut opt = Sgd::new(be, &cfg.optim, &model.layout)?;
    let batcher = Batcher::new(train_set, data.norm.clone(), batch, cfg.data.augment, cfg.seed)?;
    // Evaluation reads the test set in order through fill_eval; its batch size only bounds the chunk.
    let eval_batcher = Batcher::new(test_set, data.norm.clone(), 1, false, cfg.seed)?;
    let spe = batcher.steps_per_epoch();
    let mut host = HostBatch::<B>::new(batcher.batch_len(), batch);

    let steps = cfg.train.steps;
    let every = cfg.train.stats_every;
    let group_members: Vec<Vec<String>> =
        model.layout.groups.iter().map(|g| g.members.iter().map(|&m| model.layout.tensors[m].name.clone()).collect()).collect();
    let mut hyper = opt.hyper_at(0.0);
    let mut detector = Detector::new(&cfg.equilibrium, model.layout.groups.len(), hyper.lambda_e(), every, 0);
    let mut accum = TrainAccum::default();
    let mut history: Vec<LoggedAngles> = Vec::new();
    let mut last_train = (f64::NAN, f64::NAN);
    let mut last_test: (Option<f64>, Option<f64>) = (None, None);
    let mut divergence = None;
    let bar = match progress {
        Progress::Bar => ProgressBar::new(steps),
        Progress::Quiet => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("valid template"),
    );
    let mut done = 0;
    for step in 0..steps {
        let epoch = step as f64 / spe as f64;
        let h = opt.hyper_at(epoch);
        if h != hyper {
            hyper = h;
            detector = Detector::new(&cfg.equilibrium, model.layout.groups.len(), h.lambda_e(), every, step);
        }
        batcher.fill(step, &mut host.images, &mut host.labels);
        host.upload(be, &mut model)?;
        model.forward(be, true);
        let loss = model.loss_and_backward(be)?;
        if !loss.loss_sum.is_finite() {
            divergence = Some(Divergence { step, reason: format!("training loss is {} at step {step}", loss.loss_sum) });
            break;
        }
        accum.loss += loss.loss_sum;
        accum.correct += loss.correct;
        accum.seen += batch;
        let completed = step + 1;
        let log_now = completed % every == 0 || completed == steps;
        let sums = opt.step(be, &h, &mut model.params, &model.grads, log_now)?;
        done = completed;
        let Some(sums) = sums else {
            bar.inc(1);
            continue;
        };
        let (layers, groups) = step_stats(&model, &opt, &h, &sums);
        if let Some(bad) = layers.iter().find(|s| !(s.norm.is_finite() && s.update_norm.is_finite())) {
            divergence =
                Some(Divergence { step: completed, reason: format!("weights of {} became non-finite", bad.name) });
            break;
        }
        let ratios: Vec<f64> = groups.iter().map(|(g, _)| g.angular_ratio.unwrap_or(f64::NAN)).collect();
        detector.observe(completed, &ratios);
        last_train = accum.take();
        let eval_now = completed == steps || (cfg.train.eval_every > 0 && completed % cfg.train.eval_every == 0);
        let test = if eval_now {
            let (l, a) = evaluate(be, &mut model, &eval_batcher, &mut host)?;
            last_test = (Some(l), Some(a));
            (Some(l), Some(a))
        } else {
            (None, None)
        };
        let smoothed = detector.smoothed();
        let record = MetricsRecord {
            step: completed,
            epoch: completed as f64 / spe as f64,
            lr: h.lr,
            wd: h.wd,
            momentum: h.momentum,
            lambda_e: h.lambda_e(),
            train_loss: last_train.0,
            train_acc: last_train.1,
            test_loss: test.0,
            test_acc: test.1,
            groups: groups
                .iter()
                .zip(&smoothed)
                .map(|((s, m), sm)| GroupRecord { stats: s.clone(), members: m.clone(), smoothed_ratio: *sm })
                .collect(),
            layers: layers.clone(),
        };
        if let Some(dir) = out.as_deref_mut() {
            dir.append_metrics(&record)?;
        }
        let (lo, hi) = smoothed.iter().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        bar.set_message(format!(
            "loss {:.3} acc {:.1}% Δ/Δ* {lo:.2}–{hi:.2}{}",
            last_train.0,
            100.0 * last_train.1,
            if detector.t_eq().is_some() { " (equilibrium)" } else { "" }
        ));
        bar.inc(1);
        history.push(LoggedAngles { step: completed, groups: groups.into_iter().map(|g| g.0).collect(), layers });
    }
    bar.finish_and_clear();
    let wall = t0.elapsed().as_secs_f64();

    // Final angular updates: mean over the logged steps in the last 20% of the current phase.
    let phase_start = detector.phase_start();
    let from = done - (done - phase_start) / 5;
    let window: Vec<&LoggedAngles> = history.iter().filter(|r| r.step >= from.max(phase_start + 1)).collect();
    let window: Vec<&LoggedAngles> = if window.is_empty() { history.iter().rev().take(1).collect() } else { window };
    let avg_window = [window.first().map_or(0, |r| r.step), window.last().map_or(0, |r| r.step)];
    let groups = model
        .layout
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| mean_summary(&g.name, group_members[i].clone(), &window.iter().map(|r| &r.groups[i]).collect::<Vec<_>>()))
        .collect();
    let layers = window
        .first()
        .map(|w| {
            (0..w.layers.len())
                .map(|i| {
                    let name = &w.layers[i].name;
                    mean_summary(name, vec![name.clone()], &window.iter().map(|r| &r.layers[i]).collect::<Vec<_>>())
                })
                .collect()
        })
        .unwrap_or_default();
    let t_eq = detector.t_eq();
    let summary = Summary {
        run_id: cfg.run_id(),
        status: if divergence.is_some() { RunStatus::Diverged } else { RunStatus::Completed },
        divergence,
        backend: be.name(),
        steps: done,
        lambda_e: hyper.lambda_e(),
        t_eq_steps: t_eq,
        t_eq_lambda_e: t_eq.map(|t| t as f64 * hyper.lambda_e()),
        in_equilibrium_at_end: detector.inside_now(),
        averaging_window: avg_window,
        final_metrics: FinalMetrics {
            train_loss: last_train.0,
            train_acc: last_train.1,
            test_loss: last_test.0,
            test_acc: last_test.1,
        },
        wall_time_s: wall,
        steps_per_s: done as f64 / wall.max(1e-9),
        groups,
        layers,
    };
    if let Some(dir) = out {
        dir.write_summary(&summary)?;
    }
    Ok(summary)
}
