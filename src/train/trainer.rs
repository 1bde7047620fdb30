//! The training loop, as a [`Trainer`] with named operations and a short loop ([`train_with`]).
//!
//! Per step t: (η, λ) from the schedule at epoch t/S; the batch for t (a pure function of seed and
//! t); forward, loss, backward; the optimizer step (`optim.kind`). Every `stats_every` steps the
//! step also returns the per-tensor sums (Σw², Σg², Σd², Σw·d), from which the per-tensor and
//! per-group statistics, the equilibrium detector and one metrics.jsonl record are made. Each evaluation also appends the
//! test-set predictions to predictions.bin.
//!
//! With [`TrainOptions`], the loop writes a checkpoint every K steps and at the end, and resumes from
//! the newest usable one. Everything a step depends on is either in the checkpoint or a pure
//! function of (seed, step), so on the CPU a resumed run's records are bit-identical to those of an
//! uninterrupted one.

use super::config::TrainConfig;
use super::data::Datasets;
use super::eval::{evaluate, HostBatch};
use super::loop_state::LoopState;
use super::progress::{Progress, Reporter};
use super::record::*;
use super::resume::{download_f64, find_checkpoint, upload_f64};
use super::rundir::RunDir;
use super::window::{final_window, mean_summary, test_window, window_start, Angles, LoggedAngles};
use crate::backend::{Backend, DeferredStep, StepSums};
use crate::checkpoint::{self, Checkpoint, OptimizerState, Precision, Rows};
use crate::data::Batcher;
use crate::model::PreResNet;
use crate::optim::{Hyper, OptimKind, Optimizer};
use crate::stats::plateau::plateau_equilibrium;
use crate::stats::{relaxation_rate, unit_label, Detector, Reference, VectorStats};
use crate::util::provenance::Provenance;
use anyhow::{bail, Context, Result};
use std::time::Instant;

/// Checkpointing and resuming; the default (as in [`train`]) does neither.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrainOptions {
    /// Write a checkpoint every this many steps and at the end of a completed run (0: never).
    pub checkpoint_every: u64,
    /// Also write one at step 0 (the initial weights), when checkpoint_every > 0.
    pub checkpoint_at_start: bool,
    /// Continue from the newest usable checkpoint of the run directory (falling back to older ones,
    /// then to a fresh start, and saying so), after cutting metrics.jsonl and predictions.bin back
    /// to its step. The run directory must come from [`RunDir::open`].
    pub resume: bool,
}

/// Per-tensor and per-group statistics of one step from the per-tensor sums.
fn step_stats<B: Backend>(
    model: &PreResNet<B>,
    opt: &Optimizer<B>,
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

/// ‖w₀‖ of every group and trained tensor (layout order), from the weights as initialized.
fn initial_norms<B: Backend>(be: &B, model: &PreResNet<B>) -> Result<(Vec<f64>, Vec<f64>)> {
    let params = download_f64(be, &model.params)?;
    let l = &model.layout;
    let sq = |t: usize| params[l.tensors[t].range()].iter().map(|x| x * x).sum::<f64>();
    let groups = l.groups.iter().map(|g| g.members.iter().map(|&m| sq(m)).sum::<f64>().sqrt()).collect();
    let layers = (0..l.tensors.len()).filter(|&t| l.tensors[t].trainable).map(|t| sq(t).sqrt()).collect();
    Ok((groups, layers))
}

/// What one step did.
pub enum Stepped {
    /// The loss became non-finite: the run stops, before this step counts as done.
    Diverged(Divergence),
    /// Done, with the per-tensor sums on a logged step.
    Done(Option<Vec<(usize, StepSums)>>),
}

/// One run being trained: the model, the optimizer, the data, the detector and the loop's state,
/// with the run directory it writes. Build it with [`Trainer::new`], [`Trainer::resume`] it if
/// asked, then per step [`Trainer::enter_step`] (the schedule), [`Trainer::step`] and, on logged
/// steps, [`Trainer::record`]; [`Trainer::checkpoint`] now and then, and [`Trainer::finish`] with
/// the summary. [`train_with`] is that loop.
pub struct Trainer<'a, B: Backend> {
    be: &'a B,
    cfg: &'a TrainConfig,
    out: Option<&'a mut RunDir>,
    model: PreResNet<B>,
    opt: Optimizer<B>,
    batcher: Batcher<'a>,
    eval_batcher: Batcher<'a>,
    host: HostBatch<B>,
    run_id: String,
    /// Precision of the checkpoints (that of the backend).
    precision: Precision,
    /// ‖w₀‖ per group and per trained tensor.
    initial_norms: (Vec<f64>, Vec<f64>),
    /// The hyperparameters of the current phase, and the detector restarted at its start.
    hyper: Hyper,
    detector: Detector,
    st: LoopState,
    /// Steps done when this session began, and now.
    start: u64,
    done: u64,
    graph_steps: u64,
    reporter: Reporter,
    t0: Instant,
    /// Declared last, so dropped after the model's buffers.
    _graph_guard: StepGraphGuard<'a, B>,
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// Check the config against the backend, then build the model (initialized from the seed),
    /// the optimizer, the batchers and the detector of a fresh run.
    pub fn new(
        be: &'a B,
        cfg: &'a TrainConfig,
        data: &'a Datasets,
        out: Option<&'a mut RunDir>,
        checkpointing: bool,
        progress: Progress,
    ) -> Result<Self> {
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
        let elem_bytes = std::mem::size_of::<B::Elem>();
        if cfg.train.dtype.bytes() != elem_bytes {
            bail!(
                "train.dtype = \"{}\" but {} computes in {}-bit floats: use --dtype f64 with --device cpu, \
                 or train.dtype = \"f32\"",
                cfg.train.dtype.label(),
                be.name(),
                8 * elem_bytes
            );
        }
        // CUDA graphs (where the backend has them): see Backend::step_begin.
        let graph_guard = StepGraphGuard::new(be);
        let t0 = Instant::now();
        let (train_set, test_set) = (&data.train, &data.test);
        let batch = cfg.train.batch_size;
        let mut model =
            PreResNet::new(be, &cfg.model, train_set.channels, train_set.height, train_set.classes, batch)?;
        model.init(be, cfg.seed)?;
        let initial_norms = initial_norms(be, &model)?;
        let opt = Optimizer::new(be, &cfg.optim, &model.layout)?;
        let batcher =
            Batcher::new(train_set, data.norm.clone(), batch, cfg.data.augment_enabled(), cfg.seed)?;
        // Evaluation reads the test set in order through fill_eval; its batch size only bounds the chunk.
        let eval_batcher = Batcher::new(test_set, data.norm.clone(), 1, false, cfg.seed)?;
        let host = HostBatch::<B>::new(batcher.batch_len(), batch);
        if checkpointing && out.is_none() {
            bail!("checkpoints and resuming need a run directory");
        }
        let precision = if checkpointing { Precision::of_size(elem_bytes)? } else { Precision::F32 };
        let hyper = opt.hyper_at(0.0);
        let n_groups = model.layout.groups.len();
        let detector = phase_detector(cfg, n_groups, &hyper, 0);
        Ok(Self {
            be,
            cfg,
            out,
            model,
            opt,
            batcher,
            eval_batcher,
            host,
            run_id: cfg.run_id(),
            precision,
            initial_norms,
            hyper,
            detector,
            st: LoopState::fresh(),
            start: 0,
            done: 0,
            graph_steps: 0,
            reporter: Reporter::new(progress, cfg.train.steps, 0),
            t0,
            _graph_guard: graph_guard,
        })
    }

    /// Steps done.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Continue from the newest usable checkpoint of the run directory, if it has one.
    pub fn resume(&mut self, progress: Progress) -> Result<()> {
        let dir = self.out.as_deref_mut().context("resuming needs a run directory")?;
        let kind = self.cfg.optim.kind;
        let Some(ck) = find_checkpoint(dir, &self.model.layout, kind, &self.run_id, self.precision)? else {
            return Ok(());
        };
        let be = self.be;
        upload_f64(be, &ck.params, &mut self.model.params)?;
        upload_f64(be, &ck.bn_state, &mut self.model.bn_state)?;
        for (name, buf) in self.opt.state_mut() {
            let saved = ck.optim.buffer(name).context("the checkpoint lacks an optimizer buffer")?;
            upload_f64(be, saved, buf)?;
        }
        self.opt.set_steps(ck.optim.step.unwrap_or(ck.step));
        let (n_groups, n_layers) = (self.model.layout.groups.len(), self.initial_norms.1.len());
        self.st = LoopState::from_checkpoint(&ck.trainer, n_groups, n_layers);
        (self.start, self.done) = (ck.step, ck.step);
        if ck.step > 0 {
            self.hyper = self.opt.hyper_at((ck.step - 1) as f64 / self.batcher.steps_per_epoch() as f64);
        }
        // The detector is a pure function of its inputs since its restart: replay them.
        self.detector = phase_detector(self.cfg, n_groups, &self.hyper, ck.trainer.phase_start);
        for (k, &s) in self.st.ratios.steps.iter().enumerate() {
            self.detector.observe(s, &self.st.ratios.values[k * n_groups..(k + 1) * n_groups]);
        }
        self.reporter = Reporter::new(progress, self.cfg.train.steps, ck.step);
        Ok(())
    }

    /// The hyperparameters of `step`; a change starts a new phase (the detector restarts).
    pub fn enter_step(&mut self, step: u64) -> Hyper {
        let h = self.opt.hyper_at(step as f64 / self.batcher.steps_per_epoch() as f64);
        if h != self.hyper {
            self.hyper = h;
            let n_groups = self.model.layout.groups.len();
            self.detector = phase_detector(self.cfg, n_groups, &h, step);
            self.st.ratios = Rows::default();
        }
        h
    }

    /// Train step `step` (0-based): batch, forward, loss, backward, optimizer; on logged steps the
    /// optimizer also returns the per-tensor sums.
    pub fn step(&mut self, step: u64, h: &Hyper, log_now: bool) -> Result<Stepped> {
        let (be, model) = (self.be, &mut self.model);
        self.batcher.fill(step, &mut self.host.images, &mut self.host.labels);
        self.host.upload(be, model)?;
        // A deferred step (captured or replayed as a CUDA graph) returns placeholders for the loss
        // and the sums; step_end runs it and returns the real ones. Its optimizer step is then
        // already taken when a non-finite loss is seen, which changes nothing recorded: the run
        // stops there either way, and a diverged run writes no final checkpoint.
        let deferred = self.cfg.train.cuda_graphs && be.step_begin()?;
        model.forward(be, true);
        let mut loss = model.loss_and_backward(be)?;
        let mut sums = None;
        if deferred {
            let placeholders = self.opt.step(be, h, &mut model.params, &model.grads, log_now)?;
            let DeferredStep { loss: l, sums: s } = be.step_end()?;
            loss = l;
            sums = with_deferred_sums(placeholders, s)?;
            self.graph_steps += 1;
        }
        if !loss.loss_sum.is_finite() {
            let reason = format!("training loss is {} at step {step}", loss.loss_sum);
            return Ok(Stepped::Diverged(Divergence { step, reason }));
        }
        self.st.accum.loss += loss.loss_sum;
        self.st.accum.correct += loss.correct;
        self.st.accum.seen += self.cfg.train.batch_size;
        if !deferred {
            sums = self.opt.step(be, h, &mut model.params, &model.grads, log_now)?;
        }
        self.done = step + 1;
        self.reporter.inc();
        Ok(Stepped::Done(sums))
    }

    /// Evaluate on the test set after `step` steps, appending the predictions to predictions.bin.
    fn evaluate(&mut self, step: u64) -> Result<(f64, f64)> {
        let e = evaluate(self.be, &mut self.model, &self.eval_batcher, &mut self.host)?;
        self.st.last_test = (Some(e.loss), Some(e.acc));
        self.st.evals.steps.push(step);
        self.st.evals.values.extend([e.loss, e.acc]);
        let classes = self.eval_batcher.dataset().classes;
        if let Some(dir) = self.out.as_deref_mut().filter(|_| classes <= 256) {
            dir.append_predictions(step, classes, &e.classes)?;
        }
        Ok((e.loss, e.acc))
    }

    /// Record a logged step from its sums: statistics, detector, evaluation when due, the
    /// metrics.jsonl line, progress, and the history of the final window. Non-finite weights
    /// diverge the run.
    pub fn record(&mut self, h: &Hyper, sums: &[(usize, StepSums)]) -> Result<Option<Divergence>> {
        let completed = self.done;
        let (layers, groups) = step_stats(&self.model, &self.opt, h, sums);
        if let Some(bad) = layers.iter().find(|s| !(s.norm.is_finite() && s.update_norm.is_finite())) {
            let reason = format!("weights of {} became non-finite", bad.name);
            return Ok(Some(Divergence { step: completed, reason }));
        }
        let ratios: Vec<f64> = groups.iter().map(|(g, _)| g.angular_ratio.unwrap_or(f64::NAN)).collect();
        self.detector.observe(completed, &ratios);
        self.st.ratios.steps.push(completed);
        self.st.ratios.values.extend_from_slice(&ratios);
        self.st.last_train = self.st.accum.take();
        let t = &self.cfg.train;
        let eval_now = completed == t.steps || (t.eval_every > 0 && completed % t.eval_every == 0);
        let test = if eval_now { self.evaluate(completed)? } else { (f64::NAN, f64::NAN) };
        let test = (eval_now.then_some(test.0), eval_now.then_some(test.1));
        let smoothed = self.detector.smoothed();
        let record = MetricsRecord {
            step: completed,
            epoch: completed as f64 / self.batcher.steps_per_epoch() as f64,
            lr: h.lr,
            wd: h.wd,
            momentum: h.momentum(),
            optimizer: (h.rule.kind() != OptimKind::Sgd).then_some(h.rule.kind()),
            lambda_e: h.lambda_e(),
            train_loss: self.st.last_train.0,
            train_acc: self.st.last_train.1,
            test_loss: test.0,
            test_acc: test.1,
            groups: groups
                .iter()
                .zip(&smoothed)
                .map(|((s, m), sm)| GroupRecord { stats: s.clone(), members: m.clone(), smoothed_ratio: *sm })
                .collect(),
            layers: layers.clone(),
        };
        if let Some(dir) = self.out.as_deref_mut() {
            dir.append_metrics(&record)?;
        }
        let (lo, hi) = smoothed
            .iter()
            .flatten()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let ratio = if h.rule.has_prediction() {
            format!("smoothed RMS Δ/Δ* {lo:.2}–{hi:.2}")
        } else {
            format!("Δ*: no prediction for {}", h.rule.kind())
        };
        self.reporter.logged(
            completed,
            format!(
                "loss {:.3} acc {:.1}% {ratio}{}",
                self.st.last_train.0,
                100.0 * self.st.last_train.1,
                if self.detector.t_eq().is_some() { " (equilibrium)" } else { "" }
            ),
        );
        self.st.history.push_back(LoggedAngles {
            step: completed,
            groups: groups.iter().map(|g| Angles::of(&g.0)).collect(),
            layers: layers.iter().map(Angles::of).collect(),
        });
        let keep_from = window_start(completed, self.detector.phase_start());
        while self.st.history.len() > 1 && self.st.history[0].step < keep_from {
            self.st.history.pop_front();
        }
        Ok(None)
    }

    /// Write a checkpoint of the state after the steps done (the records are synced first, as the
    /// checkpoint names their lengths).
    pub fn checkpoint(&mut self) -> Result<()> {
        let step = self.done;
        let wall = self.st.wall_before + self.t0.elapsed().as_secs_f64();
        let dir = self.out.as_deref_mut().context("checkpoints need a run directory")?;
        dir.sync()?;
        let ck = Checkpoint {
            run_id: self.run_id.clone(),
            step,
            precision: self.precision,
            params: download_f64(self.be, &self.model.params)?,
            bn_state: download_f64(self.be, &self.model.bn_state)?,
            optim: OptimizerState {
                buffers: self
                    .opt
                    .state()
                    .map(|(name, b)| Ok((name.to_string(), download_f64(self.be, b)?)))
                    .collect::<Result<_>>()?,
                step: self.cfg.optim.kind.counts_steps().then_some(self.opt.steps()),
            },
            trainer: self.st.to_checkpoint(self.detector.phase_start(), dir, wall),
        };
        checkpoint::save(&checkpoint::dir_of(&dir.path), &self.model.layout, &ck, checkpoint::KEEP)
            .with_context(|| format!("writing the checkpoint at step {step}"))?;
        Ok(())
    }

    /// T_eq, whether the run ended in equilibrium, and the groups' plateaus: from the online detector
    /// against Δ*, or with `equilibrium.reference = "plateau"` from the phase's logged ratios against
    /// each group's own plateau (`stats::plateau`).
    fn equilibrium(&self) -> (Option<u64>, bool, Option<Vec<Option<f64>>>) {
        match self.cfg.equilibrium.reference {
            Reference::Predicted => (self.detector.t_eq(), self.detector.inside_now(), None),
            Reference::Plateau => {
                let p = plateau_equilibrium(
                    &self.cfg.equilibrium,
                    self.hyper.lambda_e(),
                    self.hyper.momentum(),
                    self.cfg.train.stats_every,
                    self.detector.phase_start(),
                    &self.st.ratios.steps,
                    &self.st.ratios.values,
                );
                (p.t_eq, p.inside_at_end, Some(p.plateau))
            }
        }
    }

    /// The summary of the run (written to the run directory): final averages over the window,
    /// equilibrium, final metrics.
    pub fn finish(mut self, divergence: Option<Divergence>) -> Result<Summary> {
        self.reporter.finish();
        let wall = self.st.wall_before + self.t0.elapsed().as_secs_f64();
        let (done, phase_start) = (self.done, self.detector.phase_start());
        let from = window_start(done, phase_start);
        let window = final_window(&self.st.history, from);
        let avg_window = [window.first().map_or(0, |r| r.step), window.last().map_or(0, |r| r.step)];
        let l = &self.model.layout;
        let (init_groups, init_layers) = &self.initial_norms;
        let groups = l
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let members = g.members.iter().map(|&m| l.tensors[m].name.clone()).collect();
                let w: Vec<&Angles> = window.iter().map(|r| &r.groups[i]).collect();
                mean_summary(&g.name, members, &w, init_groups[i])
            })
            .collect();
        let layers = if window.is_empty() {
            Vec::new()
        } else {
            let names = checkpoint::trained_names(l);
            let tensor = |(i, name): (usize, &String)| {
                let w: Vec<&Angles> = window.iter().map(|r| &r.layers[i]).collect();
                mean_summary(name, vec![name.clone()], &w, init_layers[i])
            };
            names.iter().enumerate().map(tensor).collect()
        };
        let (t_eq, in_equilibrium_at_end, plateau) = self.equilibrium();
        let be = self.be;
        let summary = Summary {
            run_id: self.run_id.clone(),
            status: if divergence.is_some() { RunStatus::Diverged } else { RunStatus::Completed },
            divergence,
            backend: if self.graph_steps > 0 { format!("{} + CUDA graphs", be.name()) } else { be.name() },
            steps: done,
            lambda_e: self.hyper.lambda_e(),
            t_eq_steps: t_eq,
            t_eq_lambda_e: t_eq.map(|t| t as f64 * self.hyper.lambda_e()),
            t_eq_units: t_eq
                .map(|t| t as f64 * relaxation_rate(self.hyper.lambda_e(), self.hyper.momentum())),
            time_unit: unit_label(self.hyper.momentum()).to_string(),
            in_equilibrium_at_end,
            plateau,
            averaging_window: avg_window,
            final_metrics: FinalMetrics {
                train_loss: self.st.last_train.0,
                train_acc: self.st.last_train.1,
                test_loss: self.st.last_test.0,
                test_acc: self.st.last_test.1,
                last_eval_step: self.st.evals.steps.last().copied(),
                test_window_mean: test_window(&self.st.evals, from),
            },
            wall_time_s: wall,
            steps_per_s: done as f64 / wall.max(1e-9),
            groups,
            layers,
            normalization: Some(self.batcher.normalization().clone()),
            provenance: Some(Provenance::current(be.gpu_provenance())),
        };
        if let Some(dir) = self.out.as_deref_mut() {
            dir.write_summary(&summary)?;
        }
        Ok(summary)
    }
}

/// The equilibrium detector of a phase of constant (η, λ, γ) `h` that starts at step `start`.
fn phase_detector(cfg: &TrainConfig, groups: usize, h: &Hyper, start: u64) -> Detector {
    Detector::new(&cfg.equilibrium, groups, h.lambda_e(), h.momentum(), cfg.train.stats_every, start)
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
    out: Option<&mut RunDir>,
    progress: Progress,
    opts: &TrainOptions,
) -> Result<Summary> {
    let checkpointing = opts.checkpoint_every > 0 || opts.resume;
    let mut t = Trainer::new(be, cfg, data, out, checkpointing, progress)?;
    if opts.resume {
        t.resume(progress)?;
    }
    let (start, steps, every) = (t.done(), cfg.train.steps, cfg.train.stats_every);
    if opts.checkpoint_every > 0 && opts.checkpoint_at_start && start == 0 {
        t.checkpoint()?;
    }
    let mut divergence = None;
    for step in start..steps {
        let h = t.enter_step(step);
        let completed = step + 1;
        let log_now = completed % every == 0 || completed == steps;
        match t.step(step, &h, log_now)? {
            Stepped::Diverged(d) => divergence = Some(d),
            Stepped::Done(Some(sums)) => divergence = t.record(&h, &sums)?,
            Stepped::Done(None) => {}
        }
        if divergence.is_some() {
            break;
        }
        if opts.checkpoint_every > 0 && completed % opts.checkpoint_every == 0 && completed < steps {
            t.checkpoint()?;
        }
    }
    if opts.checkpoint_every > 0 && divergence.is_none() && t.done() > start {
        t.checkpoint()?;
    }
    t.finish(divergence)
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
