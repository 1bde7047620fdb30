//! CUDA graphs: training steps run through `step_begin`/`step_end` against the same steps run
//! eagerly.
//!
//! Which rows are bitwise: a replayed step runs our own kernels with the same arguments in the
//! same order, so they are bitwise by construction. cuDNN and cuBLAS may choose other kernels
//! inside a capture (or on another stream or handle) than outside. So the library calls are first
//! compared eager against eager on a second instance of the backend (its own stream, cuDNN and
//! cuBLAS handles and plans): one training step on each from the same state and batch. If that is
//! bitwise, the graph rows are judged bitwise; if not, they are judged with [`LIBRARY_TOL`] and
//! say so in their tolerance column.

use super::momenta;
use crate::backend::cuda::check::compare::{compare, wide, Stats, Tol};
use crate::backend::cuda::check::Harness;
use crate::backend::{Backend, StepSums};
use crate::model::{ModelConfig, PreResNet};
use crate::optim::{Hyper, OptimConfig, Optimizer};
use anyhow::Result;
use rand::Rng;

/// Relative tolerance of the graph rows when the library calls were not bitwise eager against
/// eager: their results then differ by summation order (~1e-7 relative per op), which five SGD
/// steps through eight layers amplify; 1e-4 (the whole-step check's f32 floor) is far below what
/// a wrong argument or a stale buffer would produce.
pub(super) const LIBRARY_TOL: f64 = 1e-4;

const GRAPH_MODEL: (usize, usize, usize, usize) = (8, 3, 8, 10); // batch, channels, size, classes

/// The model and optimizer of the graph rows on `be`, initialised from `seed`.
fn graph_model<B: Backend<Elem = f32>>(be: &B, seed: u64) -> Result<(PreResNet<B>, Optimizer<B>)> {
    let (batch, channels, size, classes) = GRAPH_MODEL;
    let mcfg = ModelConfig { depth: 8, width: 0.5, ..ModelConfig::default() };
    let ocfg =
        OptimConfig { lr: 0.1, wd: Some(5e-4), lambda_e: None, momentum: 0.9, ..OptimConfig::default() };
    let mut m = PreResNet::new(be, &mcfg, channels, size, classes, batch)?;
    m.init(be, seed)?;
    let o = Optimizer::new(be, &ocfg, &m.layout)?;
    Ok((m, o))
}

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    /// One eager training step on the backend under test and on the second instance (its own
    /// stream and library handles), from the same state and batch: loss, gradients and updated
    /// parameters compared bitwise. Returns whether all were bitwise; the row passes when they
    /// agree within [`LIBRARY_TOL`] (a sanity bound: this row only decides how the graph rows are
    /// judged). Without a second instance, it says so and returns true (the rows stay bitwise).
    pub(super) fn library_eager_vs_eager(&mut self, seed: u64) -> Result<bool> {
        let Some(be2) = self.second else {
            let why = "our kernels are bitwise by construction; library calls assumed so";
            self.push("graph: library eager vs eager", "no second instance".into(), &[], true, "-", why);
            return Ok(true);
        };
        let (batch, channels, size, classes) = GRAPH_MODEL;
        let images = self.randn(batch * channels * size * size, 1.0, 0.0);
        let labels: Vec<u32> = (0..batch).map(|_| self.rng.gen_range(0..classes as u32)).collect();
        let h = Hyper::sgd(0.1, 5e-4, 0.9);
        let mut results = Vec::new();
        for be in [self.be, be2] {
            let (mut m, mut o) = graph_model(be, seed)?;
            m.set_batch(be, &images, &labels)?;
            m.forward(be, true);
            let l = m.loss_and_backward(be)?;
            let grads = download(be, &m.grads)?;
            o.step(be, &h, &mut m.params, &m.grads, false)?;
            results.push((l.loss_sum, grads, download(be, &m.params)?));
        }
        let (a, b) = (&results[0], &results[1]);
        let parts = [
            ("loss_sum", compare(&[b.0], &[a.0], &Tol::Exact)),
            ("grads", compare(&b.1, &a.1, &Tol::Exact)),
            ("params", compare(&b.2, &a.2, &Tol::Exact)),
        ];
        let bitwise = parts.iter().all(|(_, s)| s.worst == 0.0);
        let rel = Tol::Rel { rel: LIBRARY_TOL, abs: LIBRARY_TOL };
        let judged = [
            ("loss_sum", compare(&[b.0], &[a.0], &rel)),
            ("grads", compare(&b.1, &a.1, &rel)),
            ("params", compare(&b.2, &a.2, &rel)),
        ];
        self.push(
            "graph: library eager vs eager",
            "one step, second stream and handles".into(),
            &judged,
            true,
            "bitwise, else 1e-4 rel (decides)",
            "cuDNN/cuBLAS may pick other kernels on another stream or inside a capture",
        );
        if let Some(r) = self.rows.last_mut() {
            r.detail = if bitwise {
                "bitwise: the graph rows below are judged bitwise".into()
            } else {
                "NOT bitwise: the graph rows below are tolerance-judged (1e-4 rel)".into()
            };
        }
        Ok(bitwise)
    }

    /// Five training steps of model A run eagerly against the same five steps of model B (same
    /// initial state, batches and hyperparameters) run through `step_begin`/`step_end`: on a
    /// backend with CUDA graphs, step 0 warms up, step 1 is captured and launched, steps 2–4 are
    /// replayed. The lr changes every step (it must reach the replayed graph through the segment
    /// table), and statistics are asked for on some steps and not others (one graph serves both).
    /// Loss, correct count and sums per step, then parameters, momenta and running statistics are
    /// compared bitwise, or with [`LIBRARY_TOL`] when the library calls were not bitwise eager
    /// against eager ([`Self::library_eager_vs_eager`]). The caller resets the captured step
    /// afterwards.
    pub(super) fn graph_vs_eager(&mut self, seed: u64) -> Result<()> {
        let be = self.be;
        let bitwise = self.library_eager_vs_eager(seed)?;
        let (batch, channels, size, classes) = GRAPH_MODEL;
        let (wd, momentum) = (5e-4, 0.9);
        let (mut ma, mut oa) = graph_model(be, seed)?;
        let (mut mb, mut ob) = graph_model(be, seed)?;
        let shape = format!("preresnet8x0.5 n{batch} {size}x{size}");
        let tol = if bitwise { Tol::Exact } else { Tol::Rel { rel: LIBRARY_TOL, abs: LIBRARY_TOL } };
        let exact = |a: &[f64], b: &[f64]| -> Stats { compare(a, b, &tol) };
        let (tolerance, why_step, why_state) = if bitwise {
            (
                "bitwise",
                "same kernels, arguments and order as the eager step",
                "same kernels, arguments and order as the eager steps",
            )
        } else {
            let why = "tolerance-judged: library calls were not bitwise eager vs eager";
            ("1e-4 rel (library not bitwise)", why, why)
        };
        let flat = |s: &[(usize, StepSums)]| -> Vec<f64> {
            s.iter().flat_map(|(_, x)| [x.ww, x.gg, x.dd, x.wd]).collect()
        };
        be.step_reset();
        let mut deferred_steps = 0;
        // (lr, statistics wanted): statistics off for the warm-up and the capture, on and off in replays.
        let plan = [(0.1, false), (0.05, false), (0.2, true), (0.1, true), (0.3, false)];
        for (i, &(lr, want)) in plan.iter().enumerate() {
            let h = Hyper::sgd(lr, wd, momentum);
            let images = self.randn(batch * channels * size * size, 1.0, 0.0);
            let labels: Vec<u32> = (0..batch).map(|_| self.rng.gen_range(0..classes as u32)).collect();

            ma.set_batch(be, &images, &labels)?;
            ma.forward(be, true);
            let la = ma.loss_and_backward(be)?;
            let sa = oa.step(be, &h, &mut ma.params, &ma.grads, want)?;

            mb.set_batch(be, &images, &labels)?;
            let deferred = be.step_begin()?;
            mb.forward(be, true);
            let mut lb = mb.loss_and_backward(be)?;
            let mut sb = ob.step(be, &h, &mut mb.params, &mb.grads, want)?;
            if deferred {
                let d = be.step_end()?;
                lb = d.loss;
                match (&mut sb, d.sums) {
                    (Some(s), Some(real)) if s.len() == real.len() => {
                        for ((_, x), r) in s.iter_mut().zip(real) {
                            *x = r;
                        }
                    }
                    (None, None) => {}
                    (s, real) => anyhow::bail!(
                        "step_end returned {} sums for {} asked",
                        real.map_or(0, |r| r.len()),
                        s.as_ref().map_or(0, |s| s.len())
                    ),
                }
                deferred_steps += 1;
            }
            let how = match (deferred, deferred_steps) {
                (false, _) => "eager",
                (true, 1) => "captured",
                (true, _) => "replayed",
            };
            let correct_tol = if bitwise { Tol::Exact } else { Tol::Abs(&[1.0]) }; // one arg-max may flip
            let mut parts = vec![
                ("loss_sum", exact(&[lb.loss_sum], &[la.loss_sum])),
                ("correct", compare(&[lb.correct as f64], &[la.correct as f64], &correct_tol)),
            ];
            if let (Some(a), Some(b)) = (&sa, &sb) {
                parts.push(("sums", exact(&flat(b), &flat(a))));
            }
            self.push(
                "graph: step vs eager",
                format!("{shape} step {i} ({how}) lr {lr}{}", if want { " +sums" } else { "" }),
                &parts,
                true,
                tolerance,
                why_step,
            );
        }
        let get = |b: &B::Buf| download(be, b);
        let parts = [
            ("params", exact(&get(&mb.params)?, &get(&ma.params)?)),
            ("momenta", exact(&get(momenta(&ob))?, &get(momenta(&oa))?)),
            ("bn running stats", exact(&get(&mb.bn_state)?, &get(&ma.bn_state)?)),
        ];
        self.push(
            "graph: state vs eager",
            format!("{shape} after {} steps", plan.len()),
            &parts,
            true,
            tolerance,
            why_state,
        );
        if deferred_steps == 0 {
            if let Some(r) = self.rows.last_mut() {
                r.detail = "this backend runs every step eagerly: eager compared with eager".into();
            }
        }
        Ok(())
    }
}

/// A whole buffer, widened to f64.
fn download<B: Backend<Elem = f32>>(be: &B, b: &B::Buf) -> Result<Vec<f64>> {
    let mut v = vec![0f32; be.len(b)];
    be.download(b, &mut v)?;
    Ok(wide(&v))
}
