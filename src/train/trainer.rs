//! The training loop.
//!
//! Per step t: (η, λ) from the schedule at epoch t/S; the batch for t (a pure function of seed and
//! t); forward, loss, backward; the SGD step. Every `stats_every` steps the step also returns the
//! per-tensor sums (Σw², Σg², Σd², Σw·d), from which the per-tensor and per-group statistics, the
//! equilibrium detector and one metrics.jsonl record are made. Each evaluation also appends the
//! test-set predictions to predictions.bin.
//!
//! With [`TrainOptions`], the loop writes a checkpoint every K steps and at the end, and resumes from
//! the newest usable one. Everything a step depends on is either in the checkpoint or a pure
//! function of (seed, step), so on the CPU a resumed run's records are bit-identical to those of an
//! uninterrupted one.

use super::config::TrainConfig;
use super::data::Datasets;
use super::record::*;
use super::rundir::RunDir;
use crate::backend::{Backend, DeferredStep, Real, StepSums};
use crate::checkpoint::{self, Checkpoint, Precision, Rows, TrainerState, HISTORY_WIDTH};
use crate::data::Batcher;
use crate::model::PreResNet;
use crate::optim::{Hyper, Sgd};
use crate::stats::{Detector, VectorStats};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use num_traits::Zero;
use std::collections::VecDeque;
use std::time::Instant;

/// Whether to draw a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Bar,
    Quiet,
}

/// Checkpointing and resuming; the default (as in [`train`]) does neither.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrainOptions {
    /// Write a checkpoint every this many steps and at the end of a completed run (0: never).
    pub checkpoint_every: u64,
    /// Continue from the newest usable checkpoint of the run directory (falling back to older ones,
    /// then to a fresh start, and saying so), after cutting metrics.jsonl and predictions.bin back
    /// to its step. The run directory must come from [`RunDir::open`].
    pub resume: bool,
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

/// What the final averages need of one vector at one logged step.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Angles {
    angular_update: f64,
    angular_theory: Option<f64>,
    norm: f64,
    effective_lr: f64,
}

impl Angles {
    fn of(s: &VectorStats) -> Self {
        Self {
            angular_update: s.angular_update,
            angular_theory: s.angular_theory,
            norm: s.norm,
            effective_lr: s.effective_lr,
        }
    }

    /// [Δ, Δ* (NaN for none: Δ* itself is always finite), ‖w‖, η/‖w‖²], as checkpoints store it.
    fn to_row(self) -> [f64; HISTORY_WIDTH] {
        [self.angular_update, self.angular_theory.unwrap_or(f64::NAN), self.norm, self.effective_lr]
    }

    fn from_row(r: &[f64]) -> Self {
        Self {
            angular_update: r[0],
            angular_theory: (!r[1].is_nan()).then_some(r[1]),
            norm: r[2],
            effective_lr: r[3],
        }
    }
}

/// One logged step's angular data, kept for the final averages.
struct LoggedAngles {
    step: u64,
    groups: Vec<Angles>,
    layers: Vec<Angles>,
}

/// First step that the final averaging window can still contain once `done` steps are done in a
/// phase that began at `phase_start`: the window is the logged steps ≥ this at the end, and it
/// only grows with `done` and `phase_start`.
fn window_start(done: u64, phase_start: u64) -> u64 {
    (done - (done - phase_start) / 5).max(phase_start + 1)
}

/// Test loss, accuracy and the arg-max class of every test sample (in order).
fn evaluate<B: Backend>(
    be: &B,
    model: &mut PreResNet<B>,
    batcher: &Batcher,
    host: &mut HostBatch<B>,
) -> Result<(f64, f64, Vec<u8>)> {
    let total = batcher.dataset().len();
    let (mut loss, mut correct) = (0.0, 0usize);
    let mut predictions = vec![0u32; model.batch];
    let mut classes = Vec::with_capacity(total);
    let mut start = 0;
    while start < total {
        let count = model.batch.min(total - start);
        batcher.fill_eval(start, count, &mut host.images, &mut host.labels);
        host.upload(be, model)?;
        model.forward(be, false);
        let s = model.eval_loss(be, count, &mut predictions[..count])?;
        loss += s.loss_sum;
        correct += s.correct;
        classes.extend(predictions[..count].iter().map(|&p| p.min(255) as u8));
        start += count;
    }
    Ok((loss / total as f64, correct as f64 / total as f64, classes))
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

fn mean_summary(name: &str, members: Vec<String>, window: &[&Angles]) -> AngularSummary {
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

/// The loop's state between steps, beyond the model, the optimizer and the detector: with them,
/// what a checkpoint holds.
#[derive(Default)]
struct LoopState {
    accum: TrainAccum,
    /// Logged steps that may still enter the final averaging window (see [`window_start`]).
    history: VecDeque<LoggedAngles>,
    /// The detector's inputs since its last restart, G ratios per logged step (replayed on resume).
    ratios: Rows,
    last_train: (f64, f64),
    last_test: (Option<f64>, Option<f64>),
    /// Wall time of earlier sessions of this run.
    wall_before: f64,
}

impl LoopState {
    fn fresh() -> Self {
        Self { last_train: (f64::NAN, f64::NAN), ..Self::default() }
    }

    fn to_checkpoint(&self, phase_start: u64, dir: &RunDir, wall: f64) -> TrainerState {
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
            metrics_records: dir.metrics_records(),
            prediction_records: dir.prediction_records(),
            wall_time_s: wall,
        }
    }

    fn from_checkpoint(t: &TrainerState, groups: usize, layers: usize) -> Self {
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
            last_train: (t.last_train[0], t.last_train[1]),
            last_test: (t.last_test[0], t.last_test[1]),
            wall_before: t.wall_time_s,
        }
    }
}

fn download_f64<B: Backend>(be: &B, buf: &B::Buf) -> Result<Vec<f64>> {
    let mut v = vec![B::Elem::zero(); be.len(buf)];
    be.download(buf, &mut v)?;
    Ok(v.into_iter().map(Real::to_f64).collect())
}

fn upload_f64<B: Backend>(be: &B, src: &[f64], buf: &mut B::Buf) -> Result<()> {
    let v: Vec<B::Elem> = src.iter().map(|&x| <B::Elem as Real>::from_f64(x)).collect();
    be.upload(&v, buf)
}

/// The newest usable checkpoint of `dir`, with metrics.jsonl and predictions.bin cut back to its
/// step and later checkpoints removed. Unusable ones (incomplete, corrupt, inconsistent with the
/// records) are reported and skipped; with none left, the directory is rewound to the start.
fn find_checkpoint(
    dir: &mut RunDir,
    layout: &crate::model::Layout,
    run_id: &str,
    precision: Precision,
) -> Result<Option<Checkpoint>> {
    let cdir = checkpoint::dir_of(&dir.path);
    let found = checkpoint::list(&cdir)?;
    for (i, (_, path)) in found.iter().enumerate() {
        let name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let fallback = if i + 1 < found.len() {
            "falling back to the previous checkpoint"
        } else {
            "starting from scratch"
        };
        let ck = match checkpoint::load(path, layout, run_id) {
            Ok(ck) if ck.precision != precision => {
                eprintln!("warning: {run_id}: checkpoint {name} holds {:?} weights, this backend computes in {precision:?}; {fallback}", ck.precision);
                continue;
            }
            Ok(ck) => ck,
            Err(e) => {
                eprintln!("warning: {run_id}: checkpoint {name} is unusable ({e:#}); {fallback}");
                continue;
            }
        };
        let counts = dir.rewind(ck.step)?;
        let want = (ck.trainer.metrics_records, ck.trainer.prediction_records);
        if counts != want {
            eprintln!(
                "warning: {run_id}: up to step {} the run directory has {} metrics records and {} prediction records, \
                 checkpoint {name} expects {} and {}; {fallback}",
                ck.step, counts.0, counts.1, want.0, want.1
            );
            continue;
        }
        checkpoint::remove_after(&cdir, ck.step)?;
        eprintln!("note: {run_id}: resuming from checkpoint {name}");
        return Ok(Some(ck));
    }
    dir.rewind(0)?;
    checkpoint::remove_after(&cdir, 0)?;
    Ok(None)
}

/// Forgets the backend's captured training step (CUDA graphs) when created and when dropped, so
/// that no graph outlives the buffers of the run that captured it, whichever way the run ends
/// (a capture cut short by an error is ended too). A no-op on the CPU.
struct StepGraphGuard<'a, B: Backend>(&'a B);

impl<'a, B: Backend> StepGraphGuard<'a, B> {
    fn new(be: &'a B) -> Self {
        be.step_reset();
        StepGraphGuard(be)
    }
}

impl<B: Backend> Drop for StepGraphGuard<'_, B> {
    fn drop(&mut self) {
        self.0.step_reset();
    }
}

/// The optimizer's per-tensor sums of a deferred step with the placeholders replaced by the sums
/// the backend read back after running the step.
fn with_deferred_sums(
    sums: Option<Vec<(usize, StepSums)>>,
    deferred: Option<Vec<StepSums>>,
) -> Result<Option<Vec<(usize, StepSums)>>> {
    match (sums, deferred) {
        (None, _) => Ok(None),
        (Some(mut s), Some(d)) if s.len() == d.len() => {
            for ((_, x), v) in s.iter_mut().zip(d) {
                *x = v;
            }
            Ok(Some(s))
        }
        (Some(s), d) => bail!(
            "the backend returned {} statistics sums for a step with {} trained tensors",
            d.map_or(0, |d| d.len()),
            s.len()
        ),
    }
}

/// Train `cfg` on `be`, writing records to `out` when given. A diverged run returns Ok with
/// `status: diverged`; errors are reserved for things that stop the run from being measured.
pub fn train<B: Backend>(
    be: &B,
    cfg: &TrainConfig,
    data: &Datasets,
    out: Option<&mut RunDir>,
    progress: Progress,
) -> Result<Summary> {
    train_with(be, cfg, data, out, progress, &TrainOptions::default())
}

/// [`train`] with checkpoints and resuming as `opts` says.
pub fn train_with<B: Backend>(
    be: &B,
    cfg: &TrainConfig,
    data: &Datasets,
    mut out: Option<&mut RunDir>,
    progress: Progress,
    opts: &TrainOptions,
) -> Result<Summary> {
    cfg.validate()?;
    if !be.set_conv_precision(cfg.train.precision) {
        // Training anyway would record full-precision results under a bf16 run id.
        bail!(
            "train.precision = \"{}\" is not available on {}, which computes convolutions in full precision: \
             use a CUDA GPU (--device cuda), or set train.precision = \"f32\" (--precision f32)",
            cfg.train.precision.label(),
            be.name()
        );
    }
    // CUDA graphs (where the backend has them): see Backend::step_begin.
    let graphs = cfg.train.cuda_graphs;
    let _graph_guard = StepGraphGuard::new(be);
    let mut graph_steps = 0u64;
    let t0 = Instant::now();
    let (train_set, test_set) = (&data.train, &data.test);
    let batch = cfg.train.batch_size;
    let mut model =
        PreResNet::new(be, &cfg.model, train_set.channels, train_set.height, train_set.classes, batch)?;
    model.init(be, cfg.seed)?;
    let mut opt = Sgd::new(be, &cfg.optim, &model.layout)?;
    let batcher = Batcher::new(train_set, data.norm.clone(), batch, cfg.data.augment_enabled(), cfg.seed)?;
    // Evaluation reads the test set in order through fill_eval; its batch size only bounds the chunk.
    let eval_batcher = Batcher::new(test_set, data.norm.clone(), 1, false, cfg.seed)?;
    let spe = batcher.steps_per_epoch();
    let mut host = HostBatch::<B>::new(batcher.batch_len(), batch);

    let run_id = cfg.run_id();
    let steps = cfg.train.steps;
    let every = cfg.train.stats_every;
    let n_groups = model.layout.groups.len();
    let n_layers = checkpoint::trained_names(&model.layout).len();
    let group_members: Vec<Vec<String>> = model
        .layout
        .groups
        .iter()
        .map(|g| g.members.iter().map(|&m| model.layout.tensors[m].name.clone()).collect())
        .collect();
    let checkpointing = opts.checkpoint_every > 0 || opts.resume;
    if checkpointing && out.is_none() {
        bail!("checkpoints and resuming need a run directory");
    }
    let precision =
        if checkpointing { Precision::of_size(std::mem::size_of::<B::Elem>())? } else { Precision::F32 };
    let mut hyper = opt.hyper_at(0.0);
    let mut detector = Detector::new(&cfg.equilibrium, n_groups, hyper.lambda_e(), every, 0);
    let mut st = LoopState::fresh();
    let mut start = 0;
    if opts.resume {
        let dir = out.as_deref_mut().expect("checked above");
        if let Some(ck) = find_checkpoint(dir, &model.layout, &run_id, precision)? {
            upload_f64(be, &ck.params, &mut model.params)?;
            upload_f64(be, &ck.bn_state, &mut model.bn_state)?;
            upload_f64(be, &ck.momenta, &mut opt.momenta)?;
            st = LoopState::from_checkpoint(&ck.trainer, n_groups, n_layers);
            start = ck.step;
            if start > 0 {
                hyper = opt.hyper_at((start - 1) as f64 / spe as f64);
            }
            // The detector is a pure function of its inputs since its restart: replay them.
            detector =
                Detector::new(&cfg.equilibrium, n_groups, hyper.lambda_e(), every, ck.trainer.phase_start);
            for (k, &s) in st.ratios.steps.iter().enumerate() {
                detector.observe(s, &st.ratios.values[k * n_groups..(k + 1) * n_groups]);
            }
        }
    }
    let save = |model: &PreResNet<B>,
                opt: &Sgd<B>,
                st: &LoopState,
                phase_start: u64,
                step: u64,
                dir: &mut RunDir|
     -> Result<()> {
        dir.sync()?;
        let ck = Checkpoint {
            run_id: run_id.clone(),
            step,
            precision,
            params: download_f64(be, &model.params)?,
            bn_state: download_f64(be, &model.bn_state)?,
            momenta: download_f64(be, &opt.momenta)?,
            trainer: st.to_checkpoint(phase_start, dir, st.wall_before + t0.elapsed().as_secs_f64()),
        };
        checkpoint::save(&checkpoint::dir_of(&dir.path), &model.layout, &ck, checkpoint::KEEP)
            .with_context(|| format!("writing the checkpoint at step {step}"))?;
        Ok(())
    };
    let mut divergence = None;
    let bar = match progress {
        Progress::Bar => ProgressBar::new(steps),
        Progress::Quiet => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    bar.set_position(start);
    let mut done = start;
    for step in start..steps {
        let epoch = step as f64 / spe as f64;
        let h = opt.hyper_at(epoch);
        if h != hyper {
            hyper = h;
            detector = Detector::new(&cfg.equilibrium, n_groups, h.lambda_e(), every, step);
            st.ratios = Rows::default();
        }
        batcher.fill(step, &mut host.images, &mut host.labels);
        host.upload(be, &mut model)?;
        let completed = step + 1;
        let log_now = completed % every == 0 || completed == steps;
        // A deferred step (captured or replayed as a CUDA graph) returns placeholders for the loss
        // and the sums; step_end runs it and returns the real ones. Its optimizer step is then
        // already taken when a non-finite loss is seen, which changes nothing recorded: the run
        // stops there either way, and a diverged run writes no final checkpoint.
        let deferred = graphs && be.step_begin()?;
        model.forward(be, true);
        let mut loss = model.loss_and_backward(be)?;
        let mut sums = None;
        if deferred {
            let placeholders = opt.step(be, &h, &mut model.params, &model.grads, log_now)?;
            let DeferredStep { loss: l, sums: s } = be.step_end()?;
            loss = l;
            sums = with_deferred_sums(placeholders, s)?;
            graph_steps += 1;
        }
        if !loss.loss_sum.is_finite() {
            divergence = Some(Divergence {
                step,
                reason: format!("training loss is {} at step {step}", loss.loss_sum),
            });
            break;
        }
        st.accum.loss += loss.loss_sum;
        st.accum.correct += loss.correct;
        st.accum.seen += batch;
        if !deferred {
            sums = opt.step(be, &h, &mut model.params, &model.grads, log_now)?;
        }
        done = completed;
        if let Some(sums) = sums {
            let (layers, groups) = step_stats(&model, &opt, &h, &sums);
            if let Some(bad) = layers.iter().find(|s| !(s.norm.is_finite() && s.update_norm.is_finite())) {
                divergence = Some(Divergence {
                    step: completed,
                    reason: format!("weights of {} became non-finite", bad.name),
                });
                break;
            }
            let ratios: Vec<f64> = groups.iter().map(|(g, _)| g.angular_ratio.unwrap_or(f64::NAN)).collect();
            detector.observe(completed, &ratios);
            st.ratios.steps.push(completed);
            st.ratios.values.extend_from_slice(&ratios);
            st.last_train = st.accum.take();
            let eval_now =
                completed == steps || (cfg.train.eval_every > 0 && completed % cfg.train.eval_every == 0);
            let test = if eval_now {
                let (l, a, classes) = evaluate(be, &mut model, &eval_batcher, &mut host)?;
                st.last_test = (Some(l), Some(a));
                if let Some(dir) = out.as_deref_mut().filter(|_| test_set.classes <= 256) {
                    dir.append_predictions(completed, test_set.classes, &classes)?;
                }
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
                train_loss: st.last_train.0,
                train_acc: st.last_train.1,
                test_loss: test.0,
                test_acc: test.1,
                groups: groups
                    .iter()
                    .zip(&smoothed)
                    .map(|((s, m), sm)| GroupRecord {
                        stats: s.clone(),
                        members: m.clone(),
                        smoothed_ratio: *sm,
                    })
                    .collect(),
                layers: layers.clone(),
            };
            if let Some(dir) = out.as_deref_mut() {
                dir.append_metrics(&record)?;
            }
            let (lo, hi) = smoothed
                .iter()
                .flatten()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            bar.set_message(format!(
                "loss {:.3} acc {:.1}% Δ/Δ* {lo:.2}–{hi:.2}{}",
                st.last_train.0,
                100.0 * st.last_train.1,
                if detector.t_eq().is_some() { " (equilibrium)" } else { "" }
            ));
            st.history.push_back(LoggedAngles {
                step: completed,
                groups: groups.iter().map(|g| Angles::of(&g.0)).collect(),
                layers: layers.iter().map(Angles::of).collect(),
            });
            let keep_from = window_start(completed, detector.phase_start());
            while st.history.len() > 1 && st.history[0].step < keep_from {
                st.history.pop_front();
            }
        }
        bar.inc(1);
        if opts.checkpoint_every > 0 && completed % opts.checkpoint_every == 0 && completed < steps {
            save(
                &model,
                &opt,
                &st,
                detector.phase_start(),
                completed,
                out.as_deref_mut().expect("checked above"),
            )?;
        }
    }
    bar.finish_and_clear();
    if opts.checkpoint_every > 0 && divergence.is_none() && done > start {
        save(&model, &opt, &st, detector.phase_start(), done, out.as_deref_mut().expect("checked above"))?;
    }
    let wall = st.wall_before + t0.elapsed().as_secs_f64();

    // Final angular updates: mean over the logged steps in the last 20% of the current phase.
    let phase_start = detector.phase_start();
    let from = done - (done - phase_start) / 5;
    let history = &st.history;
    let window: Vec<&LoggedAngles> = history.iter().filter(|r| r.step >= from.max(phase_start + 1)).collect();
    let window: Vec<&LoggedAngles> =
        if window.is_empty() { history.iter().rev().take(1).collect() } else { window };
    let avg_window = [window.first().map_or(0, |r| r.step), window.last().map_or(0, |r| r.step)];
    let groups = model
        .layout
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            mean_summary(
                &g.name,
                group_members[i].clone(),
                &window.iter().map(|r| &r.groups[i]).collect::<Vec<_>>(),
            )
        })
        .collect();
    let layer_names = checkpoint::trained_names(&model.layout);
    let layers = if window.is_empty() {
        Vec::new()
    } else {
        layer_names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                mean_summary(
                    name,
                    vec![name.clone()],
                    &window.iter().map(|r| &r.layers[i]).collect::<Vec<_>>(),
                )
            })
            .collect()
    };
    let t_eq = detector.t_eq();
    let summary = Summary {
        run_id,
        status: if divergence.is_some() { RunStatus::Diverged } else { RunStatus::Completed },
        divergence,
        backend: if graph_steps > 0 { format!("{} + CUDA graphs", be.name()) } else { be.name() },
        steps: done,
        lambda_e: hyper.lambda_e(),
        t_eq_steps: t_eq,
        t_eq_lambda_e: t_eq.map(|t| t as f64 * hyper.lambda_e()),
        in_equilibrium_at_end: detector.inside_now(),
        averaging_window: avg_window,
        final_metrics: FinalMetrics {
            train_loss: st.last_train.0,
            train_acc: st.last_train.1,
            test_loss: st.last_test.0,
            test_acc: st.last_test.1,
        },
        wall_time_s: wall,
        steps_per_s: done as f64 / wall.max(1e-9),
        groups,
        layers,
        normalization: Some(data.norm.clone()),
    };
    if let Some(dir) = out {
        dir.write_summary(&summary)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod graph_tests {
    use super::*;

    #[test]
    fn deferred_sums_replace_the_placeholders_in_order() {
        let nan = StepSums { ww: f64::NAN, gg: f64::NAN, dd: f64::NAN, wd: f64::NAN };
        let real = |k: f64| StepSums { ww: k, gg: 2.0 * k, dd: 3.0 * k, wd: 4.0 * k };
        let got =
            with_deferred_sums(Some(vec![(3, nan), (7, nan)]), Some(vec![real(1.0), real(2.0)])).unwrap();
        assert_eq!(got, Some(vec![(3, real(1.0)), (7, real(2.0))]));
        assert_eq!(with_deferred_sums(None, None).unwrap(), None, "no statistics asked, none read");
        assert_eq!(with_deferred_sums(None, Some(vec![real(1.0)])).unwrap(), None);
        assert!(with_deferred_sums(Some(vec![(3, nan)]), None).is_err(), "asked for but not read back");
        assert!(with_deferred_sums(Some(vec![(3, nan)]), Some(vec![])).is_err());
    }
}
