//! The checks of every non-convolution op: linear, BatchNorm, add, shortcut, pooling, softmax
//! cross-entropy and the optimizer steps (SGD, Adam(W), Lion), each against `Cpu<f32>`.

use super::compare::{abs64, compare, wide, Stats, Tol, EPS};
use super::placement::{off_tag, one_input, poison, Placed};
use super::Harness;
use crate::backend::cpu::Cpu;
use crate::backend::{
    AdamHyper, AdamStep, AddAssign, Backend, BnBackward, BnEval, BnShape, BnTrain, LinearBackward,
    LinearForward, LinearShape, LionHyper, LionStep, LossShape, PoolBackward, PoolForward, PoolShape, Real,
    Segment, SgdStep, ShortcutBackward, ShortcutForward, ShortcutShape, SoftmaxXent, SoftmaxXentEval,
    StepSums,
};
use anyhow::{bail, Result};
use rand::Rng;

pub(super) const WHY_BLAS: &str = "f32 sums of K products in another order (cuBLAS)";
pub(super) const WHY_F64: &str = "f64 math rounded once to f32; only the f64 sum order differs";
pub(super) const WHY_EXACT: &str = "same f32 operations in the same order";

/// The CPU's linear forward and backward of `s`: (y, dx, d_params).
fn linear_pass<T: Real>(
    cpu: &Cpu<T>,
    s: LinearShape,
    x: &[T],
    p: &[T],
    dy: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (mut y, mut dx, mut dp) =
        (vec![T::zero(); s.n * s.out], vec![T::zero(); s.n * s.inp], vec![T::zero(); p.len()]);
    cpu.linear_forward(LinearForward { s, x, params: p, y: &mut y });
    cpu.linear_backward(LinearBackward { s, x, params: p, dy, dx: &mut dx, d_params: &mut dp });
    (y, dx, dp)
}

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    pub(super) fn linear(&mut self, n: usize, inp: usize, out: usize, off: usize) -> Result<()> {
        let be = self.be;
        let x = self.randn(n * inp, 1.0, 0.0);
        let p = self.randn(out * inp + out, 1.0 / (inp as f32).sqrt(), 0.0);
        let dy = self.randn(n * out, 1.0, 0.0);
        let shape = format!("n{n} in{inp} out{out} {}", off_tag(off));
        let s = LinearShape { n, inp, out };
        let (y, dx, dp) = linear_pass(&self.cpu, s, &x, &p, &dy);
        let (ax, ap, ady) = (abs64(&x), abs64(&p), abs64(&dy));
        let (my, mdx, mdp) = linear_pass(&self.cpu64, s, &ax, &ap, &ady);

        let (px, pp, pdy) =
            (Placed::new(be, &x, off)?, Placed::new(be, &p, off)?, Placed::new(be, &dy, off)?);
        let mut py = Placed::poisoned(be, n * out, off)?;
        be.linear_forward(LinearForward { s, x: px.v(be), params: pp.v(be), y: py.m(be) });
        let (gy, ok) = py.read(be)?;
        let st = compare(&wide(&gy), &wide(&y), &Tol::Sum { k: inp + 1, mag: &my });
        self.push(
            "linear_forward",
            shape.clone(),
            &[("y", st)],
            ok,
            &format!("4·max(K,16)·ε·Σ|x·w| K={}", inp + 1),
            WHY_BLAS,
        );

        let mut pdx = Placed::poisoned(be, n * inp, off)?;
        let mut pdp = Placed::poisoned(be, p.len(), off)?;
        be.linear_backward(LinearBackward {
            s,
            x: px.v(be),
            params: pp.v(be),
            dy: pdy.v(be),
            dx: pdx.m(be),
            d_params: pdp.m(be),
        });
        let (gdx, ok1) = pdx.read(be)?;
        let (gdp, ok2) = pdp.read(be)?;
        let sdx = compare(&wide(&gdx), &wide(&dx), &Tol::Sum { k: out, mag: &mdx });
        let sdp = compare(&wide(&gdp), &wide(&dp), &Tol::Sum { k: n, mag: &mdp });
        self.push(
            "linear_backward",
            shape,
            &[("dx", sdx), ("d_params", sdp)],
            ok1 && ok2,
            &format!("4·max(K,16)·ε·Σ|a·b| K={out}/{n}"),
            "cuBLAS f32 sums in another order; db summed in f32 (CPU: f64)",
        );
        Ok(())
    }

    pub(super) fn batchnorm(
        &mut self,
        s: &BnShape,
        off: usize,
        variant: &str,
        with_eval: bool,
    ) -> Result<()> {
        let be = self.be;
        let c = s.c;
        let x = self.randn(s.len(), 2.0, 0.5);
        let mut affine = self.uniform(c, 0.5, 1.5);
        affine.extend(self.randn(c, 0.1, 0.0));
        let mut running = self.randn(c, 0.1, 0.0);
        running.extend(self.uniform(c, 0.5, 1.5));
        let dy = self.randn(s.len(), 1.0, 0.0);
        let shape = format!(
            "n{} c{} hw{}{} {} [{variant}]",
            s.n,
            c,
            s.hw,
            if s.relu { " relu" } else { "" },
            off_tag(off)
        );

        let (mut y, mut saved, mut run_c) = (vec![0f32; s.len()], vec![0f32; 2 * c], running.clone());
        self.cpu.batchnorm_forward_train(BnTrain {
            s,
            x: &x,
            affine: &affine,
            running: &mut run_c,
            saved: &mut saved,
            y: &mut y,
        });
        let (px, paff) = (Placed::new(be, &x, off)?, Placed::new(be, &affine, off)?);
        let mut prun = Placed::new(be, &running, off)?;
        let mut psaved = Placed::poisoned(be, 2 * c, off)?;
        let mut py = Placed::poisoned(be, s.len(), off)?;
        be.batchnorm_forward_train(BnTrain {
            s,
            x: px.v(be),
            affine: paff.v(be),
            running: prun.m(be),
            saved: psaved.m(be),
            y: py.m(be),
        });
        let (gy, ok1) = py.read(be)?;
        let (gsaved, ok2) = psaved.read(be)?;
        let (grun, ok3) = prun.read(be)?;
        let tol = Tol::Rel { rel: 2.0 * EPS, abs: 1e-9 };
        let parts = [
            ("y", compare(&wide(&gy), &wide(&y), &tol)),
            ("saved", compare(&wide(&gsaved), &wide(&saved), &tol)),
            ("running", compare(&wide(&grun), &wide(&run_c), &tol)),
        ];
        self.push(
            "batchnorm_forward_train",
            shape.clone(),
            &parts,
            ok1 && ok2 && ok3,
            "2ε·|ref| + 1e-9·max|ref|",
            WHY_F64,
        );

        if with_eval {
            let mut ye = vec![0f32; s.len()];
            self.cpu.batchnorm_forward_eval(BnEval {
                s,
                x: &x,
                affine: &affine,
                running: &run_c,
                y: &mut ye,
            });
            let prun_c = Placed::new(be, &run_c, off)?;
            let mut pye = Placed::poisoned(be, s.len(), off)?;
            be.batchnorm_forward_eval(BnEval {
                s,
                x: px.v(be),
                affine: paff.v(be),
                running: prun_c.v(be),
                y: pye.m(be),
            });
            let (gye, ok) = pye.read(be)?;
            let st = compare(&wide(&gye), &wide(&ye), &tol);
            let eval_shape = shape.replace(&format!(" [{variant}]"), "");
            self.push(
                "batchnorm_forward_eval",
                eval_shape,
                &[("y", st)],
                ok,
                "2ε·|ref| + 1e-9·max|ref|",
                "f64 math rounded once to f32",
            );
        }

        // Backward from identical inputs: the CPU's y and saved statistics.
        let (mut dx, mut daff) = (vec![0f32; s.len()], vec![0f32; 2 * c]);
        self.cpu.batchnorm_backward(BnBackward {
            s,
            x: &x,
            y: &y,
            dy: &dy,
            affine: &affine,
            saved: &saved,
            dx: &mut dx,
            d_affine: &mut daff,
        });
        let (pyc, pdy, psc) =
            (Placed::new(be, &y, off)?, Placed::new(be, &dy, off)?, Placed::new(be, &saved, off)?);
        let mut pdx = Placed::poisoned(be, s.len(), off)?;
        let mut pdaff = Placed::poisoned(be, 2 * c, off)?;
        be.batchnorm_backward(BnBackward {
            s,
            x: px.v(be),
            y: pyc.v(be),
            dy: pdy.v(be),
            affine: paff.v(be),
            saved: psc.v(be),
            dx: pdx.m(be),
            d_affine: pdaff.m(be),
        });
        let (gdx, ok1) = pdx.read(be)?;
        let (gdaff, ok2) = pdaff.read(be)?;
        let parts = [
            ("dx", compare(&wide(&gdx), &wide(&dx), &tol)),
            ("d_affine", compare(&wide(&gdaff), &wide(&daff), &tol)),
        ];
        self.push("batchnorm_backward", shape, &parts, ok1 && ok2, "2ε·|ref| + 1e-9·max|ref|", WHY_F64);
        Ok(())
    }

    pub(super) fn add_assign(&mut self, len: usize, off: usize) -> Result<()> {
        let be = self.be;
        let (y0, x) = (self.randn(len, 1.0, 0.0), self.randn(len, 1.0, 0.0));
        let mut y = y0.clone();
        self.cpu.add_assign(AddAssign { y: &mut y, x: &x });
        let (gy, ok) = one_input(be, off, &x, &y0, |x, y| be.add_assign(AddAssign { y, x }))?;
        let st = compare(&wide(&gy), &wide(&y), &Tol::Exact);
        self.push("add_assign", format!("len{len} {}", off_tag(off)), &[("y", st)], ok, "bitwise", WHY_EXACT);
        Ok(())
    }

    pub(super) fn shortcut(&mut self, s: &ShortcutShape, off: usize) -> Result<()> {
        let be = self.be;
        let (x_len, y_len) = (s.n * s.c_in * s.h * s.w, s.n * s.c_out * s.out_h() * s.out_w());
        let shape =
            format!("n{} ci{} {}x{} co{} s{} {}", s.n, s.c_in, s.h, s.w, s.c_out, s.stride, off_tag(off));
        let x = self.randn(x_len, 1.0, 0.0);
        let mut y = vec![0f32; y_len];
        self.cpu.shortcut_forward(ShortcutForward { s, x: &x, y: &mut y });
        let (gy, ok) =
            one_input(be, off, &x, &poison(y_len), |x, y| be.shortcut_forward(ShortcutForward { s, x, y }))?;
        let st = compare(&wide(&gy), &wide(&y), &Tol::Exact);
        self.push("shortcut_forward", shape.clone(), &[("y", st)], ok, "bitwise", "copies and zeros");

        let (dy, dx0) = (self.randn(y_len, 1.0, 0.0), self.randn(x_len, 1.0, 0.0));
        let mut dx = dx0.clone();
        self.cpu.shortcut_backward_acc(ShortcutBackward { s, dy: &dy, dx: &mut dx });
        let (gdx, ok) =
            one_input(be, off, &dy, &dx0, |dy, dx| be.shortcut_backward_acc(ShortcutBackward { s, dy, dx }))?;
        let st = compare(&wide(&gdx), &wide(&dx), &Tol::Exact);
        self.push("shortcut_backward_acc", shape, &[("dx", st)], ok, "bitwise", "one f32 add per element");
        Ok(())
    }

    pub(super) fn avgpool(&mut self, s: &PoolShape, off: usize) -> Result<()> {
        let be = self.be;
        let (x_len, y_len) = (s.n * s.c * s.hw, s.n * s.c);
        let shape = format!("n{} c{} hw{} {}", s.n, s.c, s.hw, off_tag(off));
        let x = self.randn(x_len, 1.0, 0.3);
        let mut y = vec![0f32; y_len];
        self.cpu.avgpool_forward(PoolForward { s, x: &x, y: &mut y });
        let (gy, ok) =
            one_input(be, off, &x, &poison(y_len), |x, y| be.avgpool_forward(PoolForward { s, x, y }))?;
        let st = compare(&wide(&gy), &wide(&y), &Tol::Rel { rel: EPS, abs: 1e-12 });
        self.push(
            "avgpool_forward",
            shape.clone(),
            &[("y", st)],
            ok,
            "ε·|ref| + 1e-12·max|ref|",
            "f64 sum (another order) rounded once",
        );

        let dy = self.randn(y_len, 1.0, 0.0);
        let mut dx = vec![0f32; x_len];
        self.cpu.avgpool_backward(PoolBackward { s, dy: &dy, dx: &mut dx });
        let (gdx, ok) = one_input(be, off, &dy, &poison(x_len), |dy, dx| {
            be.avgpool_backward(PoolBackward { s, dy, dx })
        })?;
        let st = compare(&wide(&gdx), &wide(&dx), &Tol::Exact);
        self.push("avgpool_backward", shape, &[("dx", st)], ok, "bitwise", "one correctly rounded division");
        Ok(())
    }

    pub(super) fn softmax(&mut self, n: usize, classes: usize, ties: bool, off: usize) -> Result<()> {
        let be = self.be;
        let logits: Vec<f32> = if ties {
            (0..n * classes).map(|_| self.rng.gen_range(-1i32..=1) as f32).collect()
        } else {
            self.randn(n * classes, 3.0, 0.0)
        };
        let labels: Vec<u32> = (0..n).map(|_| self.rng.gen_range(0..classes as u32)).collect();
        let shape = format!("n{n} classes{classes}{} {}", if ties { " ties" } else { "" }, off_tag(off));
        let mut dl = vec![0f32; n * classes];
        let want = self.cpu.softmax_cross_entropy(SoftmaxXent {
            s: LossShape { n, classes },
            logits: &logits,
            labels: &labels,
            dlogits: &mut dl,
        })?;
        let pl = Placed::new(be, &logits, off)?;
        let mut lab = be.alloc_labels(n)?;
        be.upload_labels(&labels, &mut lab)?;
        let mut pdl = Placed::poisoned(be, n * classes, off)?;
        let got = be.softmax_cross_entropy(SoftmaxXent {
            s: LossShape { n, classes },
            logits: pl.v(be),
            labels: &lab,
            dlogits: pdl.m(be),
        })?;
        let (gdl, ok) = pdl.read(be)?;
        // Per sample the f64 loss differs by a few ulps of (1 + loss); the terms are ≥ 0.
        let loss_allowed = [1e-12 * (want.loss_sum.abs() + n as f64)];
        let loss_tol = Tol::Abs(&loss_allowed);
        let parts = [
            ("dlogits", compare(&wide(&gdl), &wide(&dl), &Tol::Rel { rel: EPS, abs: 1e-12 })),
            ("loss_sum", compare(&[got.loss_sum], &[want.loss_sum], &loss_tol)),
            ("correct", compare(&[got.correct as f64], &[want.correct as f64], &Tol::Exact)),
        ];
        self.push(
            "softmax_cross_entropy",
            shape.clone(),
            &parts,
            ok,
            "ε·|ref|+1e-12·max; loss 1e-12·(Σ+n)",
            "f64 exp/log (CUDA vs libm ulps), one f32 rounding",
        );

        // Evaluation, with a labels buffer longer than n as the trainer's last batch has.
        let mut want_pred = vec![0u32; n];
        let want = self.cpu.softmax_cross_entropy_eval(SoftmaxXentEval {
            s: LossShape { n, classes },
            logits: &logits,
            labels: &labels,
            predictions: &mut want_pred,
        })?;
        let mut long = labels.clone();
        long.extend([0, 0, 0]);
        let mut lab_long = be.alloc_labels(n + 3)?;
        be.upload_labels(&long, &mut lab_long)?;
        let mut got_pred = vec![u32::MAX; n];
        let got = be.softmax_cross_entropy_eval(SoftmaxXentEval {
            s: LossShape { n, classes },
            logits: pl.v(be),
            labels: &lab_long,
            predictions: &mut got_pred,
        })?;
        let loss_allowed = [1e-12 * (want.loss_sum.abs() + n as f64)];
        let loss_tol = Tol::Abs(&loss_allowed);
        let to64 = |v: &[u32]| v.iter().map(|&p| p as f64).collect::<Vec<_>>();
        let parts = [
            ("predictions", compare(&to64(&got_pred), &to64(&want_pred), &Tol::Exact)),
            ("loss_sum", compare(&[got.loss_sum], &[want.loss_sum], &loss_tol)),
            ("correct", compare(&[got.correct as f64], &[want.correct as f64], &Tol::Exact)),
        ];
        self.push(
            "softmax_xent_eval",
            shape,
            &parts,
            true,
            "predictions bitwise; loss 1e-12·(Σ+n)",
            "arg-max ties go to the lowest index",
        );
        Ok(())
    }

    /// Three steps of optimizer `kind` (step counts 1, 2, 3; gradients g1, g2, g1; statistics on
    /// the first and last) over segments with a gap, a zero-length one and ones longer than a
    /// chunk, on the CPU and the backend from the same start. Parameters and optimizer state must
    /// agree bitwise: the kernels do the CPU's f32 operations in its order (--fmad=false, IEEE
    /// division and sqrt), with the per-step scalars formed in f64 by the same function and rounded
    /// once. Lion's sign(c) therefore agrees even where c is 0 or within rounding of it; the row
    /// counts the elements with c = 0 (some gradients are exactly 0 so that it happens).
    pub(super) fn optimizer(&mut self, kind: StepKind) -> Result<()> {
        const CHUNK: usize = super::super::optim_step::CHUNK;
        let be = self.be;
        let len = 2 * CHUNK + 400;
        let (lr, wd) = match kind {
            StepKind::Sgd => (0.1, 5e-4),
            StepKind::Adam { decoupled: true } => (1e-3, 0.1),
            StepKind::Adam { decoupled: false } => (1e-3, 5e-4),
            StepKind::Lion => (1e-4, 1.0),
        };
        let seg = |offset, len, scale: f64, wd: f64, momentum| Segment {
            offset,
            len,
            lr: lr * scale,
            wd,
            momentum,
        };
        let segments = vec![
            seg(1, 5, 1.0, wd, 0.9),
            seg(6, 0, 1.0, wd, 0.9),
            seg(10, CHUNK + 7, 0.5, 2.0 * wd, 0.9),
            seg(CHUNK + 20, CHUNK - 3, 3.0, 0.0, 0.0),
            seg(2 * CHUNK + 30, 333, 1.0, wd, 0.5),
        ];
        let w0 = self.randn(len, 0.1, 0.0);
        let (mut g1, mut g2) = (self.randn(len, 1.0, 0.0), self.randn(len, 1.0, 0.0));
        for i in (0..len).step_by(101) {
            (g1[i], g2[i]) = (0.0, 0.0);
        }
        // [params, state…] on the CPU and on the backend; the state starts at 0.
        let names = kind.buffers();
        let mut bufs = vec![vec![0f32; len]; names.len()];
        bufs[0].clone_from(&w0);
        let mut dev = names.iter().map(|_| be.alloc(len)).collect::<Result<Vec<_>>>()?;
        be.upload(&w0, &mut dev[0])?;
        let (mut pg1, mut pg2) = (be.alloc(len)?, be.alloc(len)?);
        be.upload(&g1, &mut pg1)?;
        be.upload(&g2, &mut pg2)?;
        for (t, g, pg, with_sums) in [(1, &g1, &pg1, true), (2, &g2, &pg2, false), (3, &g1, &pg1, true)] {
            let (before, zero_c) = (bufs[0].clone(), kind.zero_c(&segments, g, &bufs));
            let mut want = vec![StepSums::default(); segments.len()];
            kind.step(&self.cpu, &segments, t, &mut bufs, g, with_sums.then_some(&mut want[..]))?;
            let mut got =
                vec![StepSums { ww: f64::NAN, gg: f64::NAN, dd: f64::NAN, wd: f64::NAN }; segments.len()];
            kind.step(be, &segments, t, &mut dev, pg, with_sums.then_some(&mut got[..]))?;
            let mut parts = Vec::new();
            for (name, (d, want)) in names.iter().zip(dev.iter().zip(&bufs)) {
                let mut got = vec![0f32; len];
                be.download(d, &mut got)?;
                parts.push((*name, compare(&wide(&got), &wide(want), &Tol::Exact)));
            }
            if with_sums {
                parts.push(("sums", sums_stats(&segments, &before, g, &bufs[0], &got, &want)));
            }
            let why = match zero_c {
                Some(n) => format!(
                    "same f32 ops (--fmad=false), so sign(c) too ({n} with c = 0); f64 sums reordered"
                ),
                None => "same f32 ops (--fmad=false); f64 sums reordered".into(),
            };
            let sums_tag = if with_sums { "+sums" } else { "" };
            self.push(
                kind.label(),
                format!("{} segs, {len} elems, step {t}{sums_tag}", segments.len()),
                &parts,
                true,
                "bitwise; sums 1e-9·Σ|terms|",
                &why,
            );
        }
        Ok(())
    }
}

/// The statistics sums against the CPU's, allowing 1e-9 of the sum of each sum's absolute terms
/// (the GPU adds them in another order, in f64).
fn sums_stats(
    segments: &[Segment],
    before: &[f32],
    g: &[f32],
    after: &[f32],
    got: &[StepSums],
    want: &[StepSums],
) -> Stats {
    let (mut got_flat, mut want_flat, mut allowed) = (Vec::new(), Vec::new(), Vec::new());
    for (i, s) in segments.iter().enumerate() {
        let mut mag = [0f64; 4];
        for j in s.offset..s.offset + s.len {
            let (a, gg, d) = (before[j] as f64, g[j] as f64, after[j] as f64 - before[j] as f64);
            for (m, term) in mag.iter_mut().zip([a * a, gg * gg, d * d, (a * d).abs()]) {
                *m += term;
            }
        }
        got_flat.extend([got[i].ww, got[i].gg, got[i].dd, got[i].wd]);
        want_flat.extend([want[i].ww, want[i].gg, want[i].dd, want[i].wd]);
        allowed.extend(mag.map(|m| 1e-9 * m));
    }
    compare(&got_flat, &want_flat, &Tol::Abs(&allowed))
}

/// The optimizer of a step row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum StepKind {
    Sgd,
    Adam { decoupled: bool },
    Lion,
}

const ADAM: (f64, f64, f64) = (0.9, 0.999, 1e-8);
const LION: LionHyper = LionHyper { beta1: 0.9, beta2: 0.99 };

impl StepKind {
    pub(super) fn label(self) -> &'static str {
        match self {
            StepKind::Sgd => "sgd_step",
            StepKind::Adam { decoupled: true } => "adam_step (AdamW)",
            StepKind::Adam { decoupled: false } => "adam_step (Adam+L2)",
            StepKind::Lion => "lion_step",
        }
    }

    /// The buffers a step updates: the parameters, then the optimizer's state.
    fn buffers(self) -> &'static [&'static str] {
        match self {
            StepKind::Sgd => &["params", "momenta"],
            StepKind::Adam { .. } => &["params", "m", "v"],
            StepKind::Lion => &["params", "m"],
        }
    }

    /// One step at step count `t` on backend `b` (the CPU reference or the backend under test) of
    /// `bufs` = [params, state…] (as [`Self::buffers`] names them).
    fn step<C: Backend>(
        self,
        b: &C,
        segments: &[Segment],
        t: u64,
        bufs: &mut [C::Buf],
        grads: &C::Buf,
        sums: Option<&mut [StepSums]>,
    ) -> Result<()> {
        match (self, bufs) {
            (StepKind::Sgd, [params, momenta]) => {
                b.sgd_step(SgdStep { segments, params, grads, momenta, sums })
            }
            (StepKind::Adam { decoupled }, [params, m, v]) => {
                let (beta1, beta2, eps) = ADAM;
                let hyper = AdamHyper { beta1, beta2, eps, t, decoupled };
                b.adam_step(AdamStep { segments, hyper, params, grads, m, v, sums })
            }
            (StepKind::Lion, [params, m]) => {
                b.lion_step(LionStep { segments, hyper: LION, params, grads, m, sums })
            }
            (_, s) => bail!("{}: {} buffers", self.label(), s.len()),
        }
    }

    /// Lion: the number of elements whose c = β₁m + (1−β₁)g (in f32, as the step forms it) is 0.
    fn zero_c(self, segments: &[Segment], g: &[f32], bufs: &[Vec<f32>]) -> Option<usize> {
        if self != StepKind::Lion {
            return None;
        }
        let (m, mut n) = (&bufs[1], 0);
        for s in segments {
            let [_, _, b1, c1, _, _] = LION.scalars(s).map(|x| x as f32);
            n += (s.offset..s.offset + s.len).filter(|&j| b1 * m[j] + c1 * g[j] == 0.0).count();
        }
        Some(n)
    }
}
