//! The whole training step of a small PreResNet, judged tensor by tensor against `Cpu<f64>`.

use super::momenta;
use crate::backend::cpu::Cpu;
use crate::backend::cuda::bf16emu::Bf16Cpu;
use crate::backend::cuda::check::bf16::{step_lower_bound, STEP_BF16_FACTOR};
use crate::backend::cuda::check::compare::{compare, wide, Tol, U_BF16};
use crate::backend::cuda::check::{CheckRow, Harness};
use crate::backend::Backend;
use crate::model::{init_params, ModelConfig, PreResNet, ShortcutKind};
use crate::optim::{OptimConfig, Optimizer};
use anyhow::{ensure, Result};
use rand::Rng;

/// One whole-step quantity of one tensor: (name, backend under test, cpu-f32, cpu-f64).
pub(super) type Measured = (String, Vec<f64>, Vec<f64>, Vec<f64>);

/// A whole-step quantity: its name, the three results, and the named ranges to judge separately.
pub(super) type Quantity<'a> =
    (&'a str, Vec<f64>, Vec<f64>, Vec<f64>, &'a [(String, std::ops::Range<usize>)]);

/// How a whole-step quantity is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StepTol {
    F32,
    Bf16,
}

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    /// One training step of a small PreResNet-8 on the backend under test, on Cpu<f32> and on
    /// Cpu<f64> from identical (f32-rounded) parameters and batch, then an eval forward. Each
    /// quantity is judged by [`Self::judge`].
    /// With `bf16`, the backend under test is in bf16-conv mode, and its yardstick is
    /// [`Bf16Cpu`] (the CPU with exactly emulated bf16 convolutions) instead of `Cpu<f32>`.
    pub(super) fn whole_step(&mut self, kind: ShortcutKind, seed: u64, bf16: bool) -> Result<()> {
        if bf16 {
            self.whole_step_on(kind, seed, Bf16Cpu::new(), StepTol::Bf16)
        } else {
            self.whole_step_on(kind, seed, Cpu::<f32>::new(), StepTol::F32)
        }
    }

    /// The whole step on the backend under test, on `r` (the yardstick: `Cpu<f32>`, or
    /// [`Bf16Cpu`] in bf16-conv mode) and on `Cpu<f64>`, judged by [`Self::judge`] with `tol`.
    pub(super) fn whole_step_on<R>(&mut self, kind: ShortcutKind, seed: u64, r: R, tol: StepTol) -> Result<()>
    where
        R: Backend<Elem = f32, Buf = Vec<f32>, Labels = Vec<u32>>,
    {
        let be = self.be;
        let bf16 = tol == StepTol::Bf16;
        let (batch, channels, size, classes) = (8, 3, 8, 10);
        let mcfg = ModelConfig { depth: 8, width: 0.5, shortcut: kind, ..ModelConfig::default() };
        let ocfg =
            OptimConfig { lr: 0.1, wd: Some(5e-4), lambda_e: None, momentum: 0.9, ..OptimConfig::default() };
        let images = self.randn(batch * channels * size * size, 1.0, 0.0);
        let labels: Vec<u32> = (0..batch).map(|_| self.rng.gen_range(0..classes as u32)).collect();
        let shape = format!("preresnet8x0.5 {kind:?} n{batch} {size}x{size}");
        let prefix = if bf16 { "step bf16-conv" } else { "step" };

        let mut m32 = PreResNet::new(&r, &mcfg, channels, size, classes, batch)?;
        m32.init(&r, seed)?;
        let p0: Vec<f32> = init_params(&m32.layout, seed).into_iter().map(|v| v as f32).collect();
        let mut mg = PreResNet::new(be, &mcfg, channels, size, classes, batch)?;
        mg.init(be, seed)?;
        let mut m64 = PreResNet::new(&self.cpu64, &mcfg, channels, size, classes, batch)?;
        m64.init(&self.cpu64, seed)?;
        self.cpu64.upload(&wide(&p0), &mut m64.params)?;
        let mut o32 = Optimizer::new(&r, &ocfg, &m32.layout)?;
        let mut og = Optimizer::new(be, &ocfg, &mg.layout)?;
        let mut o64 = Optimizer::new(&self.cpu64, &ocfg, &m64.layout)?;
        let h = o32.hyper_at(0.0);

        m32.set_batch(&r, &images, &labels)?;
        mg.set_batch(be, &images, &labels)?;
        m64.set_batch(&self.cpu64, &wide(&images), &labels)?;
        m32.forward(&r, true);
        mg.forward(be, true);
        m64.forward(&self.cpu64, true);
        let l32 = m32.loss_and_backward(&r)?;
        let lg = mg.loss_and_backward(be)?;
        let l64 = m64.loss_and_backward(&self.cpu64)?;
        let s32 = o32.step(&r, &h, &mut m32.params, &m32.grads, true)?.unwrap_or_default();
        let sg = og.step(be, &h, &mut mg.params, &mg.grads, true)?.unwrap_or_default();
        let s64 = o64.step(&self.cpu64, &h, &mut m64.params, &m64.grads, true)?.unwrap_or_default();

        let get = |b: &B::Buf| -> Result<Vec<f64>> {
            let mut v = vec![0f32; be.len(b)];
            be.download(b, &mut v)?;
            Ok(wide(&v))
        };
        let tensors: Vec<(String, std::ops::Range<usize>)> =
            mg.layout.tensors.iter().map(|t| (t.name.clone(), t.range())).collect();
        let bn_ranges: Vec<(String, std::ops::Range<usize>)> = mg
            .all_bns()
            .iter()
            .map(|bn| {
                (
                    mg.layout.tensors[bn.gamma].name.trim_end_matches(".weight").to_string(),
                    bn.state_offset..bn.state_offset + 2 * bn.channels,
                )
            })
            .collect();
        let p0_64 = wide(&p0);
        let delta = |p: &[f64]| -> Vec<f64> { p.iter().zip(&p0_64).map(|(a, b)| a - b).collect() };
        let quantities: Vec<Quantity> = vec![
            ("grads", get(&mg.grads)?, wide(&m32.grads), m64.grads.clone(), &tensors[..]),
            (
                "param update",
                delta(&get(&mg.params)?),
                delta(&wide(&m32.params)),
                delta(&m64.params),
                &tensors[..],
            ),
            ("momenta", get(momenta(&og))?, wide(momenta(&o32)), momenta(&o64).clone(), &tensors[..]),
            (
                "bn running stats",
                get(&mg.bn_state)?,
                wide(&m32.bn_state),
                m64.bn_state.clone(),
                &bn_ranges[..],
            ),
        ];
        for (what, g, c32, c64, ranges) in &quantities {
            self.judge(
                &format!("{prefix}: {what}"),
                &shape,
                tol,
                ranges
                    .iter()
                    .map(|(n, r)| {
                        (n.clone(), g[r.clone()].to_vec(), c32[r.clone()].to_vec(), c64[r.clone()].to_vec())
                    })
                    .collect(),
            );
        }
        let scalars = vec![("loss".to_string(), vec![lg.loss_sum], vec![l32.loss_sum], vec![l64.loss_sum])];
        self.judge(&format!("{prefix}: loss"), &shape, tol, scalars);
        let mut sums = Vec::new();
        for ((t, a), ((_, b), (_, c))) in sg.iter().zip(s32.iter().zip(&s64)) {
            let name = mg.layout.tensors[*t].name.clone();
            sums.push((
                name,
                vec![a.ww, a.gg, a.dd, a.wd],
                vec![b.ww, b.gg, b.dd, b.wd],
                vec![c.ww, c.gg, c.dd, c.wd],
            ));
        }
        self.judge(&format!("{prefix}: sgd sums"), &shape, tol, sums);
        if !bf16 {
            // (In bf16 an arg-max of nearly equal logits may flip; the loss row covers the logits.)
            let st = compare(&[lg.correct as f64], &[l32.correct as f64], &Tol::Exact);
            self.push(
                "step: correct count",
                shape.clone(),
                &[("correct", st)],
                true,
                "equal to cpu-f32",
                "arg-max of nearly equal logits",
            );
        }

        // Evaluation forward with the updated running statistics.
        mg.forward(be, false);
        m32.forward(&r, false);
        m64.forward(&self.cpu64, false);
        let lgits = vec![(
            "logits".to_string(),
            wide(&mg.logits_host(be)?),
            wide(&m32.logits_host(&r)?),
            m64.logits_host(&self.cpu64)?,
        )];
        self.judge(&format!("{prefix}: eval logits"), &shape, tol, lgits);
        ensure!(mg.layout.num_params == m32.layout.num_params, "layouts differ");
        Ok(())
    }

    /// One row for a whole-step quantity, judged tensor by tensor against cpu-f64:
    /// ‖gpu − f64‖ ≤ max(10·‖cpu32 − f64‖, 1e-4·‖f64‖, 1e-5·rms·sqrt(len)), where rms is that of
    /// the whole quantity. The first term says "as accurate as the CPU's f32 path"; the others are
    /// floors for tensors that the CPU happens to get nearly exact, or whose true value is ~0 (the
    /// bias gradient of a BN that feeds another BN is exactly zero in exact arithmetic).
    ///
    /// In bf16-conv mode ([`StepTol::Bf16`]) the yardstick (the "cpu32" column) is [`Bf16Cpu`]:
    /// ‖gpu − f64‖ ≤ max(4·‖emu − f64‖, (u/4)·‖f64‖, (u/32)·rms·sqrt(len)), u = 2⁻⁸ (see
    /// [`STEP_BF16_FACTOR`]); the floors sit below bf16's typical error of ~u. A bf16 row also has
    /// a lower bound: over the row's tensors ‖gpu − f64‖ ≥ ¼·‖emu − f64‖ ([`step_lower_bound`]),
    /// which an f32 computation under a bf16 label fails.
    pub(super) fn judge(&mut self, op: &str, shape: &str, tol: StepTol, tensors: Vec<Measured>) {
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
        let total_len: usize = tensors.iter().map(|t| t.3.len()).sum();
        let total_sq: f64 = tensors.iter().map(|t| t.3.iter().map(|x| x * x).sum::<f64>()).sum();
        let rms = (total_sq / total_len.max(1) as f64).sqrt();
        let (mut max_abs, mut err_sq, mut yardstick_sq, mut worst) = (0f64, 0f64, 0f64, 0f64);
        let mut note = if tensors.is_empty() { "nothing to compare".to_string() } else { String::new() };
        for (name, g, c32, c64) in &tensors {
            let e_gpu = if g.len() == c64.len() { diff(g, c64) } else { f64::INFINITY };
            let e_cpu = diff(c32, c64);
            let (factor, rel, floor) = match tol {
                StepTol::F32 => (10.0, 1e-4, 1e-5),
                StepTol::Bf16 => (STEP_BF16_FACTOR, U_BF16 / 4.0, U_BF16 / 32.0),
            };
            let allowed = (factor * e_cpu).max(rel * norm(c64)).max(floor * rms * (c64.len() as f64).sqrt());
            let ratio = if e_gpu.is_nan() {
                f64::INFINITY
            } else if e_gpu == 0.0 {
                0.0
            } else if allowed > 0.0 {
                e_gpu / allowed
            } else {
                f64::INFINITY
            };
            for (a, b) in g.iter().zip(c64) {
                let d = (a - b).abs();
                max_abs = max_abs.max(if d.is_nan() { f64::INFINITY } else { d });
            }
            err_sq += if e_gpu.is_nan() { f64::INFINITY } else { e_gpu * e_gpu };
            yardstick_sq += e_cpu * e_cpu;
            if note.is_empty() || ratio > worst {
                worst = worst.max(ratio);
                let yardstick = if tol == StepTol::Bf16 { "emu" } else { "cpu32" };
                note = format!(
                    "worst {name}: ‖gpu−f64‖ {e_gpu:.2e}, ‖{yardstick}−f64‖ {e_cpu:.2e}, allowed {allowed:.2e}"
                );
            }
        }
        let rel = if total_sq > 0.0 { (err_sq / total_sq).sqrt() } else { err_sq.sqrt() };
        let too_accurate = match tol {
            StepTol::Bf16 => step_lower_bound(err_sq.sqrt(), yardstick_sq.sqrt()).err(),
            StepTol::F32 => None,
        };
        let pass = worst <= 1.0 && too_accurate.is_none();
        if let Some(why) = too_accurate {
            note = format!("{note}; {why}");
        }
        self.rows.push(CheckRow {
            op: op.into(),
            shape: shape.into(),
            max_abs,
            max_rel: rel,
            err_over_tol: worst,
            tolerance: match tol {
                StepTol::F32 => "≤ max(10·cpu32 err, 1e-4 rel)".into(),
                StepTol::Bf16 => "≤ max(4·emu err, u/4 rel), ≥ emu/4".into(),
            },
            why: match tol {
                StepTol::F32 => "f32 rounding compounded over layers; per tensor, against cpu-f64".into(),
                StepTol::Bf16 => {
                    "as accurate as exact bf16 emulation on the CPU; per tensor, against cpu-f64".into()
                }
            },
            pass,
            detail: note,
        });
    }
}
