//! The per-op checks of `ilr check`: every op of a backend under test against the CPU reference
//! `Cpu<f32>`, on fresh random inputs at several shapes (odd sizes, stride 2, views at odd and
//! 16-byte-aligned offsets), and, where the backend supports them (see
//! [`Backend::set_conv_precision`]), each convolution case again in bf16 (see bf16.rs). The
//! whole-step and CUDA-graph checks, and the entry points that run everything, live in the
//! top-level `check` module (above the model and the optimizer), which drives this `Harness`
//! through `Harness::new` and `Harness::op_checks`.
//!
//! How each comparison is made:
//! - outputs are **poisoned** with NaN before the op (accumulating outputs get random values), so an
//!   element the op fails to write shows up as NaN;
//! - every view sits inside a larger buffer whose other elements hold a sentinel (**guards**); a
//!   guard that changed means the op wrote outside its view;
//! - the **tolerance** of each op follows from how its arithmetic differs from the CPU's, and is
//!   printed with the reason. An element passes when |gpu − cpu| ≤ its allowance; `err/tol` is the
//!   worst ratio (≤ 1 passes).

pub(crate) mod bf16;
pub(crate) mod compare;
mod conv;
mod ops;
mod placement;

use crate::backend::cpu::Cpu;
use crate::backend::{Backend, BnShape, ComputePrecision, ConvShape, PoolShape, ShortcutShape};
use anyhow::Result;
use compare::Stats;
use ops::StepKind;
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

pub(crate) fn error_row(op: &str, e: &anyhow::Error) -> CheckRow {
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

/// The state of one run of the checks: the backend under test, the references, the random inputs'
/// generator and the rows so far. The per-op checks are its methods here; the whole-step and graph
/// checks add theirs in the top-level `check` module.
pub(crate) struct Harness<'a, B: Backend<Elem = f32>> {
    pub(crate) be: &'a B,
    /// A second instance of the backend (its own stream and library handles), for comparing
    /// library calls eager against eager before the graph rows; None where there is none.
    pub(crate) second: Option<&'a B>,
    /// Clears an error the backend recorded, so that the next case runs.
    reset: &'a dyn Fn(&B),
    pub(crate) rng: ChaCha8Rng,
    pub(crate) rows: Vec<CheckRow>,
    cpu: Cpu<f32>,
    pub(crate) cpu64: Cpu<f64>,
}

impl<'a, B: Backend<Elem = f32>> Harness<'a, B> {
    /// A harness on `be` (and `second`, see [`Harness::second`]) with inputs drawn from `seed`;
    /// `reset` clears the backend's recorded error after a case that failed.
    pub(crate) fn new(be: &'a B, second: Option<&'a B>, seed: u64, reset: &'a dyn Fn(&B)) -> Self {
        Harness {
            be,
            second,
            reset,
            rng: ChaCha8Rng::seed_from_u64(seed),
            rows: Vec::new(),
            cpu: Cpu::new(),
            cpu64: Cpu::new(),
        }
    }
}

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    pub(crate) fn randn(&mut self, n: usize, scale: f32, shift: f32) -> Vec<f32> {
        (0..n).map(|_| shift + scale * self.rng.sample::<f32, _>(StandardNormal)).collect()
    }
    fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.gen_range(lo..hi)).collect()
    }

    pub(crate) fn push(
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
    pub(crate) fn attempt(&mut self, what: &str, case: String, f: impl FnOnce(&mut Self) -> Result<()>) {
        if let Err(e) = f(self) {
            let mut row = error_row(what, &e);
            row.shape = case;
            self.rows.push(row);
            (self.reset)(self.be);
        }
    }

    /// Every per-op check, in the report's order (the whole-step and graph rows follow them).
    pub(crate) fn op_checks(&mut self, bn_variants: &[BnVariant<B>]) {
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
        for kind in [
            StepKind::Sgd,
            StepKind::Adam { decoupled: true },
            StepKind::Adam { decoupled: false },
            StepKind::Lion,
        ] {
            self.attempt(kind.label(), String::new(), |h| h.optimizer(kind));
        }
    }
}
