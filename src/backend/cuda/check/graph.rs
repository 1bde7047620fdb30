//! CUDA graphs: training steps run through `step_begin`/`step_end` against the same steps run
//! eagerly.

use super::compare::{compare, wide, Tol};
use super::Harness;
use crate::backend::{Backend, StepSums};
use crate::model::{ModelConfig, PreResNet};
use crate::optim::{Hyper, OptimConfig, Sgd};
use anyhow::Result;
use rand::Rng;

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    /// Five training steps of model A run eagerly against the same five steps of model B (same
    /// initial state, batches and hyperparameters) run through `step_begin`/`step_end`: on a
    /// backend with CUDA graphs, step 0 warms up, step 1 is captured and launched, steps 2–4 are
    /// replayed. The lr changes every step (it must reach the replayed graph through the segment
    /// table), and statistics are asked for on some steps and not others (one graph serves both).
    /// Everything is compared bitwise: loss, correct count and sums per step, then parameters,
    /// momenta and running statistics. The caller resets the captured step afterwards.
    pub(super) fn graph_vs_eager(&mut self, seed: u64) -> Result<()> {
        let be = self.be;
        let (batch, channels, size, classes) = (8, 3, 8, 10);
        let mcfg = ModelConfig { depth: 8, width: 0.5, ..ModelConfig::default() };
        let (wd, momentum) = (5e-4, 0.9);
        let ocfg = OptimConfig { lr: 0.1, wd: Some(wd), lambda_e: None, momentum, ..OptimConfig::default() };
        let mut ma = PreResNet::new(be, &mcfg, channels, size, classes, batch)?;
        ma.init(be, seed)?;
        let mut mb = PreResNet::new(be, &mcfg, channels, size, classes, batch)?;
        mb.init(be, seed)?;
        let mut oa = Sgd::new(be, &ocfg, &ma.layout)?;
        let mut ob = Sgd::new(be, &ocfg, &mb.layout)?;
        let shape = format!("preresnet8x0.5 n{batch} {size}x{size}");
        let exact = |a: &[f64], b: &[f64]| compare(a, b, &Tol::Exact);
        let flat = |s: &[(usize, StepSums)]| -> Vec<f64> {
            s.iter().flat_map(|(_, x)| [x.ww, x.gg, x.dd, x.wd]).collect()
        };
        be.step_reset();
        let mut deferred_steps = 0;
        // (lr, statistics wanted): statistics off for the warm-up and the capture, on and off in replays.
        let plan = [(0.1, false), (0.05, false), (0.2, true), (0.1, true), (0.3, false)];
        for (i, &(lr, want)) in plan.iter().enumerate() {
            let h = Hyper { lr, wd, momentum };
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
            let mut parts = vec![
                ("loss_sum", exact(&[lb.loss_sum], &[la.loss_sum])),
                ("correct", exact(&[lb.correct as f64], &[la.correct as f64])),
            ];
            if let (Some(a), Some(b)) = (&sa, &sb) {
                parts.push(("sums", exact(&flat(b), &flat(a))));
            }
            self.push(
                "graph: step vs eager",
                format!("{shape} step {i} ({how}) lr {lr}{}", if want { " +sums" } else { "" }),
                &parts,
                true,
                "bitwise",
                "same kernels, arguments and order as the eager step",
            );
        }
        let get = |b: &B::Buf| -> Result<Vec<f64>> {
            let mut v = vec![0f32; be.len(b)];
            be.download(b, &mut v)?;
            Ok(wide(&v))
        };
        let parts = [
            ("params", exact(&get(&mb.params)?, &get(&ma.params)?)),
            ("momenta", exact(&get(&ob.momenta)?, &get(&oa.momenta)?)),
            ("bn running stats", exact(&get(&mb.bn_state)?, &get(&ma.bn_state)?)),
        ];
        self.push(
            "graph: state vs eager",
            format!("{shape} after {} steps", plan.len()),
            &parts,
            true,
            "bitwise",
            "same kernels, arguments and order as the eager steps",
        );
        if deferred_steps == 0 {
            if let Some(r) = self.rows.last_mut() {
                r.detail = "this backend runs every step eagerly: eager compared with eager".into();
            }
        }
        Ok(())
    }
}
