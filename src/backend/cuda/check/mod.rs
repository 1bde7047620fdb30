//! `ilr check`: every op of a backend under test against the CPU reference `Cpu<f32>`, on fresh
//! random inputs at several shapes (odd sizes, stride 2, views at odd and 16-byte-aligned offsets),
//! plus one whole PreResNet-8 training step judged against `Cpu<f64>`. Where the backend supports
//! them (see [`Backend::set_conv_precision`] and [`Backend::step_begin`]):
//! - **bf16 convolutions**: each convolution case and the whole step again with
//!   `ComputePrecision::Bf16Conv`, judged against the exact (f64) result of the same f32 inputs
//!   with a bf16 tolerance: a worst-case rounding bound per op ([`Tol::Bf16`]), and for the whole
//!   step the error of an exact CPU emulation of the same bf16 roundings ([`STEP_BF16_FACTOR`]);
//! - **CUDA graphs**: five training steps of one model run eagerly against the same five steps of
//!   a second model through `step_begin`/`step_end` (warm-up, capture, replays; changing lr and
//!   statistics on/off). Our own kernels are bitwise by construction (same kernels, arguments and
//!   order); cuDNN/cuBLAS calls are first compared eager against eager on a second instance of the
//!   backend (its own stream and handles), and the graph rows are judged **bitwise** only if that
//!   was bitwise, else with a stated tolerance (each row's tolerance column says which; see
//!   graph.rs);
//! - **lower bounds for bf16 rows**: a bf16 row must also show an error of bf16's size, so that f32
//!   arithmetic under a bf16 label fails (see bf16.rs).
//!
//! How each comparison is made:
//! - outputs are **poisoned** with NaN before the op (accumulating outputs get random values), so an
//!   element the op fails to write shows up as NaN;
//! - every view sits inside a larger buffer whose other elements hold a sentinel (**guards**); a
//!   guard that changed means the op wrote outside its view;
//! - the **tolerance** of each op follows from how its arithmetic differs from the CPU's, and is
//!   printed with the reason. An element passes when |gpu − cpu| ≤ its allowance; `err/tol` is the
//!   worst ratio (≤ 1 passes).
//!
//! The harness is generic over the backend under test, so it also runs (and must pass exactly)
//! with the CPU backend standing in for the GPU: that checks the harness itself without a GPU.

mod bf16;
mod compare;
mod conv;
mod graph;
mod ops;
mod placement;
mod step;

use super::{BnMode, Cuda};
use crate::backend::cpu::Cpu;
use crate::backend::{Backend, BnShape, ComputePrecision, ConvShape, PoolShape, ShortcutShape};
use crate::model::ShortcutKind;
use anyhow::Result;
use compare::Stats;
use placement::{ALIGNED, ODD};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::io::Write;

/// A BatchNorm variant to check: its name and a setter that selects it on the backend.
pub type BnVariant<'a, B> = (&'a str, &'a dyn Fn(&B));

/// One line of the report.
#[derive(Clone, Debug)]
pub struct CheckRow {
    pub op: String,
    pub shape: String,
    /// Largest |gpu − reference| over the compared elements.
    pub max_abs: f64,
    /// Largest |gpu − reference| / |reference| (informative; near-zero references inflate it).
    pub max_rel: f64,
    /// Largest |gpu − reference| / allowance; the row passes when ≤ 1.
    pub err_over_tol: f64,
    pub tolerance: String,
    pub why: String,
    pub pass: bool,
    /// The worst element, an error, or a note.
    pub detail: String,
}

/// Runs every check on `be` (all BatchNorm variants) and returns one row per op and shape; a case
/// that errors gives a failing row that carries the error. `second`, a second `Cuda` on the same
/// GPU, serves the library eager-vs-eager row before the graph rows (None: that row says so and
/// the graph rows stay bitwise).
pub fn run_checks(be: &Cuda, second: Option<&Cuda>, seed: u64) -> Vec<CheckRow> {
    let previous = be.bn_mode();
    let (fused, nocache, split, auto) = (
        |b: &Cuda| b.set_bn_mode(BnMode::Fused),
        |b: &Cuda| b.set_bn_mode(BnMode::FusedNoCache),
        |b: &Cuda| b.set_bn_mode(BnMode::Split),
        |b: &Cuda| b.set_bn_mode(BnMode::Auto),
    );
    // Auto last: the whole-step check runs with the default.
    let variants: [BnVariant<Cuda>; 4] =
        [("fused", &fused), ("fused-nocache", &nocache), ("split", &split), ("auto", &auto)];
    let mut rows = run_checks_on(be, second, seed, &variants, &|b: &Cuda| b.clear_error());
    be.set_bn_mode(previous);
    if let Err(e) = be.synchronize() {
        rows.push(error_row("synchronize", &e));
    }
    rows
}

/// The checks on any f32 backend; `second` as in [`run_checks`]. `bn_variants` are (name, setter)
/// pairs: each BatchNorm case runs once per variant after calling its setter. A case that errors gives a failing row; `reset` then
/// clears the backend's recorded error and the next case runs.
pub fn run_checks_on<B: Backend<Elem = f32>>(
    be: &B,
    second: Option<&B>,
    seed: u64,
    bn_variants: &[BnVariant<B>],
    reset: &dyn Fn(&B),
) -> Vec<CheckRow> {
    let mut h = Harness {
        be,
        second,
        reset,
        rng: ChaCha8Rng::seed_from_u64(seed),
        rows: Vec::new(),
        cpu: Cpu::new(),
        cpu64: Cpu::new(),
    };
    h.all(bn_variants, seed);
    h.rows
}

fn error_row(op: &str, e: &anyhow::Error) -> CheckRow {
    CheckRow {
        op: op.into(),
        shape: String::new(),
        max_abs: f64::NAN,
        max_rel: f64::NAN,
        err_over_tol: f64::INFINITY,
        tolerance: String::new(),
        why: String::new(),
        pass: false,
        detail: format!("error: {e:#}"),
    }
}

/// Prints the table, then a one-line verdict.
pub fn print_table(rows: &[CheckRow], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:<34} {:>9} {:>9} {:>8}  {:<4}  {:<28} why",
        "op", "shape", "max|Δ|", "max rel", "err/tol", "", "tolerance"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<24} {:<34} {:>9.2e} {:>9.2e} {:>8.2e}  {:<4}  {:<28} {}",
            r.op,
            r.shape,
            r.max_abs,
            r.max_rel,
            r.err_over_tol,
            if r.pass { "PASS" } else { "FAIL" },
            r.tolerance,
            r.why
        )?;
        if !r.pass || !r.detail.is_empty() {
            writeln!(out, "{:<24}   └ {}", "", r.detail)?;
        }
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    if failed == 0 {
        writeln!(out, "all {} checks passed", rows.len())
    } else {
        writeln!(out, "{failed} of {} checks FAILED", rows.len())
    }
}

// ---- the checks -------------------------------------------------------------------------------------

struct Harness<'a, B: Backend<Elem = f32>> {
    be: &'a B,
    /// A second instance of the backend (its own stream and library handles), for comparing
    /// library calls eager against eager before the graph rows; None where there is none.
    second: Option<&'a B>,
    /// Clears an error the backend recorded, so that the next case runs.
    reset: &'a dyn Fn(&B),
    rng: ChaCha8Rng,
    rows: Vec<CheckRow>,
    cpu: Cpu<f32>,
    cpu64: Cpu<f64>,
}

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    fn randn(&mut self, n: usize, scale: f32, shift: f32) -> Vec<f32> {
        (0..n).map(|_| shift + scale * self.rng.sample::<f32, _>(StandardNormal)).collect()
    }
    fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.gen_range(lo..hi)).collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        op: &str,
        shape: String,
        parts: &[(&str, Stats)],
        guards_ok: bool,
        tolerance: &str,
        why: &str,
    ) {
        let mut r = CheckRow {
            op: op.into(),
            shape,
            max_abs: 0.0,
            max_rel: 0.0,
            err_over_tol: 0.0,
            tolerance: tolerance.into(),
            why: why.into(),
            pass: true,
            detail: String::new(),
        };
        let mut notes = Vec::new();
        for (name, s) in parts {
            r.max_abs = r.max_abs.max(s.max_abs);
            r.max_rel = r.max_rel.max(s.max_rel);
            r.err_over_tol = r.err_over_tol.max(s.worst);
            if let Some((i, g, w)) = s.bad {
                if i == usize::MAX {
                    notes.push(format!("{name}: {g} elements, expected {w}"));
                } else if g.is_nan() {
                    notes.push(format!("{name}[{i}] = NaN (not written?), expected {w:e}"));
                } else {
                    notes.push(format!("{name}[{i}] = {g:e}, expected {w:e}"));
                }
            }
        }
        if !guards_ok {
            notes.push("wrote outside its view (a guard changed)".into());
        }
        r.pass = r.err_over_tol <= 1.0 && guards_ok;
        r.detail = notes.join("; ");
        self.rows.push(r);
    }

    /// Runs one case; an error becomes a failing row, the backend's recorded error is cleared, and
    /// the run goes on.
    fn attempt(&mut self, what: &str, case: String, f: impl FnOnce(&mut Self) -> Result<()>) {
        if let Err(e) = f(self) {
            let mut row = error_row(what, &e);
            row.shape = case;
            self.rows.push(row);
            (self.reset)(self.be);
        }
    }

    fn all(&mut self, bn_variants: &[BnVariant<B>], seed: u64) {
        let convs = [
            (ConvShape { n: 3, c_in: 5, h: 7, w: 7, c_out: 4, kernel: 3, stride: 2, pad: 1 }, ODD),
            (ConvShape { n: 3, c_in: 5, h: 7, w: 7, c_out: 4, kernel: 3, stride: 2, pad: 1 }, ALIGNED),
            (ConvShape { n: 2, c_in: 3, h: 8, w: 8, c_out: 8, kernel: 3, stride: 1, pad: 1 }, ALIGNED),
            (ConvShape { n: 4, c_in: 8, h: 8, w: 8, c_out: 16, kernel: 1, stride: 2, pad: 0 }, ODD),
            (ConvShape { n: 2, c_in: 16, h: 8, w: 8, c_out: 16, kernel: 3, stride: 1, pad: 1 }, ALIGNED),
            (ConvShape { n: 5, c_in: 4, h: 6, w: 9, c_out: 3, kernel: 3, stride: 1, pad: 1 }, ODD),
            (ConvShape { n: 1, c_in: 1, h: 1, w: 1, c_out: 1, kernel: 1, stride: 1, pad: 0 }, ODD),
        ];
        for (s, off) in convs {
            self.attempt("conv2d", format!("{s:?} off {off}"), |h| h.conv(&s, off));
        }
        if self.be.set_conv_precision(ComputePrecision::Bf16Conv) {
            for (s, off) in convs {
                self.attempt("conv2d bf16", format!("{s:?} off {off}"), |h| h.conv_bf16(&s, off));
            }
        }
        self.be.set_conv_precision(ComputePrecision::F32);
        for (n, inp, out, off) in
            [(3, 5, 7, ODD), (8, 64, 10, ALIGNED), (1, 1, 1, ODD), (128, 64, 100, ALIGNED), (37, 33, 10, ODD)]
        {
            self.attempt("linear", format!("n{n} in{inp} out{out} off {off}"), |h| {
                h.linear(n, inp, out, off)
            });
        }
        let bns = [
            (BnShape { n: 3, c: 5, hw: 49, eps: 1e-5, momentum: 0.1, relu: true }, ODD),
            (BnShape { n: 4, c: 16, hw: 64, eps: 1e-5, momentum: 0.1, relu: true }, ALIGNED),
            (BnShape { n: 2, c: 3, hw: 1, eps: 1e-5, momentum: 0.1, relu: false }, ALIGNED),
            (BnShape { n: 16, c: 3, hw: 225, eps: 1e-3, momentum: 0.2, relu: false }, ODD),
            (BnShape { n: 8, c: 4, hw: 4096, eps: 1e-5, momentum: 0.1, relu: true }, ALIGNED),
        ];
        for (s, off) in bns {
            for (i, (name, set)) in bn_variants.iter().enumerate() {
                set(self.be);
                self.attempt("batchnorm", format!("{s:?} off {off} [{name}]"), |h| {
                    h.batchnorm(&s, off, name, i == 0)
                });
            }
        }
        for (len, off) in [(1, ODD), (7, ALIGNED), (1000, ODD), (4099, ALIGNED)] {
            self.attempt("add_assign", format!("len{len} off {off}"), |h| h.add_assign(len, off));
        }
        let shortcuts = [
            (ShortcutShape { n: 3, c_in: 5, h: 7, w: 7, c_out: 9, stride: 2 }, ODD),
            (ShortcutShape { n: 2, c_in: 4, h: 8, w: 8, c_out: 8, stride: 2 }, ALIGNED),
            (ShortcutShape { n: 2, c_in: 3, h: 5, w: 5, c_out: 3, stride: 1 }, ODD),
        ];
        for (s, off) in shortcuts {
            self.attempt("shortcut", format!("{s:?} off {off}"), |h| h.shortcut(&s, off));
        }
        for (s, off) in [
            (PoolShape { n: 3, c: 5, hw: 49 }, ODD),
            (PoolShape { n: 2, c: 16, hw: 64 }, ALIGNED),
            (PoolShape { n: 1, c: 1, hw: 1 }, ODD),
            (PoolShape { n: 4, c: 7, hw: 36 }, ALIGNED),
        ] {
            self.attempt("avgpool", format!("{s:?} off {off}"), |h| h.avgpool(&s, off));
        }
        for (n, classes, ties, off) in [
            (3, 5, false, ODD),
            (8, 10, false, ALIGNED),
            (1, 1, false, ODD),
            (64, 100, false, ALIGNED),
            (37, 33, false, ODD),
            (16, 7, true, ALIGNED),
        ] {
            self.attempt("softmax_cross_entropy", format!("n{n} classes{classes} off {off}"), |h| {
                h.softmax(n, classes, ties, off)
            });
        }
        self.attempt("sgd_step", String::new(), |h| h.sgd());
        for kind in [ShortcutKind::OptionA, ShortcutKind::BnProjection] {
            self.attempt("step", format!("{kind:?}"), |h| h.whole_step(kind, seed, false));
        }
        if self.be.set_conv_precision(ComputePrecision::Bf16Conv) {
            for kind in [ShortcutKind::OptionA, ShortcutKind::BnProjection] {
                self.attempt("step bf16-conv", format!("{kind:?}"), |h| h.whole_step(kind, seed, true));
            }
        }
        self.be.set_conv_precision(ComputePrecision::F32);
        self.attempt("graph", String::new(), |h| {
            let r = h.graph_vs_eager(seed);
            h.be.step_reset();
            r
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness, with the CPU backend standing in for the GPU, must pass every check exactly:
    /// this exercises all of it (placement, guards, poisoning, tolerances, the whole step) here.
    #[test]
    fn harness_passes_with_the_cpu_as_the_device() {
        let be = Cpu::<f32>::new();
        let noop = |_: &Cpu<f32>| {};
        let second = Cpu::<f32>::new();
        let rows = run_checks_on(&be, Some(&second), 3, &[("cpu", &noop)], &noop);
        let mut out = Vec::new();
        print_table(&rows, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        eprintln!("{text}");
        assert!(rows.iter().all(|r| r.pass), "{text}");
        assert!(rows.len() > 60, "{text}");
        for r in rows.iter().filter(|r| !r.op.starts_with("step:")) {
            assert_eq!(r.err_over_tol, 0.0, "CPU against itself must agree exactly: {r:?}");
        }
    }
}
