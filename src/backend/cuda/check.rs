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
//!   statistics on/off), compared **bitwise**: a replayed step runs the same kernels with the same
//!   arguments in the same order.
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

use super::bf16emu::Bf16Cpu;
use super::{BnMode, Cuda};
use crate::backend::cpu::Cpu;
use crate::backend::{
    Backend, BnShape, ComputePrecision, ConvShape, PoolShape, Real, Segment, ShortcutShape, StepSums,
};
use crate::model::{init_params, ModelConfig, PreResNet, ShortcutKind};
use crate::optim::{Hyper, OptimConfig, Sgd};
use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::io::Write;

/// A BatchNorm variant to check: its name and a setter that selects it on the backend.
pub type BnVariant<'a, B> = (&'a str, &'a dyn Fn(&B));

/// One whole-step quantity of one tensor: (name, backend under test, cpu-f32, cpu-f64).
type Measured = (String, Vec<f64>, Vec<f64>, Vec<f64>);

/// A whole-step quantity: its name, the three results, and the named ranges to judge separately.
type Quantity<'a> = (&'a str, Vec<f64>, Vec<f64>, Vec<f64>, &'a [(String, std::ops::Range<usize>)]);

/// How a whole-step quantity is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StepTol {
    F32,
    Bf16,
}

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
/// that errors gives a failing row that carries the error.
pub fn run_checks(be: &Cuda, seed: u64) -> Vec<CheckRow> {
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
    let mut rows = run_checks_on(be, seed, &variants, &|b: &Cuda| b.clear_error());
    be.set_bn_mode(previous);
    if let Err(e) = be.synchronize() {
        rows.push(error_row("synchronize", &e));
    }
    rows
}

/// The checks on any f32 backend. `bn_variants` are (name, setter) pairs: each BatchNorm case runs
/// once per variant after calling its setter. A case that errors gives a failing row; `reset` then
/// clears the backend's recorded error and the next case runs.
pub fn run_checks_on<B: Backend<Elem = f32>>(
    be: &B,
    seed: u64,
    bn_variants: &[BnVariant<B>],
    reset: &dyn Fn(&B),
) -> Vec<CheckRow> {
    let mut h = Harness {
        be,
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

// ---- comparison -----------------------------------------------------------------------------------

/// f32 machine epsilon (one ulp of 1.0).
const EPS: f64 = f32::EPSILON as f64;
/// bf16 unit roundoff: 8 significant bits, round to nearest, so |bf16(a) − a| ≤ 2⁻⁸·|a|.
const U_BF16: f64 = 1.0 / 256.0;
/// The whole step in bf16-conv mode is judged against the error of [`Bf16Cpu`] (the CPU with the
/// same bf16 roundings, emulated exactly), times this factor. Why not a fixed fraction of each
/// tensor's norm: gradients that are sums of many cancelling terms (a BatchNorm's β gradient is
/// Σ dy over a batch) carry bf16's per-term error u·sqrt(Σ terms²), which can be 10% of their
/// norm (seen in the emulation), while others are good to ~u; only a computation that rounds at
/// the same points knows which is which. The GPU rounds the same inputs at the same points, so
/// it differs from the emulation only where an f32 sum (summed in another order) lands on the
/// other side of a bf16 rounding boundary, or through a transform algorithm's intermediate
/// roundings: 4× the emulation's error leaves room for that, and is far below what a wrong
/// rounding point (an operand not rounded, an output left in bf16 twice) would produce.
const STEP_BF16_FACTOR: f64 = 4.0;
/// Sentinel of the guard elements around every view.
const GUARD: f32 = -1.234_567e30;
/// Elements after each view.
const TAIL: usize = 3;

/// How the allowance of each element is computed.
enum Tol<'a> {
    /// Bitwise equality (NaN matches NaN).
    Exact,
    /// rel·|ref| + abs·max|ref|.
    Rel { rel: f64, abs: f64 },
    /// Sums of k products: 4·max(k,16)·ε·(mag_i + 0.01·max mag), mag = Σ|a·b| per element.
    Sum { k: usize, mag: &'a [f64] },
    /// A given allowance per element.
    Abs(&'a [f64]),
    /// bf16 convolutions (PSEUDO_BFLOAT16: bf16 operands and output, f32 sums) against the exact
    /// result of the f32 inputs: (3u + 4·max(k,16)·ε)·(mag_i + 0.01·max mag), u = 2⁻⁸. Why: each
    /// operand is rounded to bf16 (≤ u relative), so a product is off by ≤ (2u + u²)·|a·b|; the f32
    /// sum adds ≤ k·ε·Σ|a·b|; rounding the sum to bf16 adds ≤ u·|sum| ≤ u·Σ|a·b|. Altogether
    /// ≤ (3u + u² + kε)·Σ|a·b|, a worst case (random-sign errors give ~u·sqrt(Σ(a·b)²)). The
    /// 4·max(k,16)·ε and 0.01·max-magnitude terms are the f32 allowance's, kept for transform
    /// algorithms (Winograd/FFT), whose errors scale with the largest magnitudes.
    Bf16 { k: usize, mag: &'a [f64] },
}

#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    max_abs: f64,
    max_rel: f64,
    worst: f64,
    /// (index, got, want) of the worst element when it fails.
    bad: Option<(usize, f64, f64)>,
}

fn compare(got: &[f64], want: &[f64], tol: &Tol) -> Stats {
    if got.len() != want.len() {
        return Stats {
            worst: f64::INFINITY,
            bad: Some((usize::MAX, got.len() as f64, want.len() as f64)),
            ..Default::default()
        };
    }
    let max_want = want.iter().fold(0f64, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    let max_mag = match tol {
        Tol::Sum { mag, .. } | Tol::Bf16 { mag, .. } => mag.iter().fold(0f64, |m, v| m.max(*v)),
        _ => 0.0,
    };
    let mut s = Stats::default();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (ratio, d) = if g.is_nan() || w.is_nan() {
            if g.is_nan() && w.is_nan() {
                (0.0, 0.0)
            } else {
                (f64::INFINITY, f64::INFINITY)
            }
        } else {
            let d = (g - w).abs();
            let allowed = match tol {
                Tol::Exact => 0.0,
                Tol::Rel { rel, abs } => rel * w.abs() + abs * max_want,
                Tol::Sum { k, mag } => 4.0 * (*k).max(16) as f64 * EPS * (mag[i] + 0.01 * max_mag),
                Tol::Abs(allowed) => allowed[i],
                Tol::Bf16 { k, mag } => {
                    (3.0 * U_BF16 + 4.0 * (*k).max(16) as f64 * EPS) * (mag[i] + 0.01 * max_mag)
                }
            };
            let ratio = match tol {
                Tol::Exact if g.to_bits() == w.to_bits() => 0.0,
                Tol::Exact => f64::INFINITY,
                _ if d == 0.0 => 0.0,
                _ if allowed > 0.0 => d / allowed,
                _ => f64::INFINITY,
            };
            (ratio, d)
        };
        s.max_abs = s.max_abs.max(d);
        if d > 0.0 {
            s.max_rel = s.max_rel.max(d / w.abs().max(f64::MIN_POSITIVE));
        }
        if ratio > s.worst {
            s.worst = ratio;
            if ratio > 1.0 {
                s.bad = Some((i, g, w));
            }
        }
    }
    s
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn abs64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| (x as f64).abs()).collect()
}

// ---- device placement -------------------------------------------------------------------------------

/// `len` elements at offset `off` of a buffer of `off + len + TAIL`, the rest holding `GUARD`.
struct Placed<B: Backend<Elem = f32>> {
    buf: B::Buf,
    off: usize,
    len: usize,
}

impl<B: Backend<Elem = f32>> Placed<B> {
    fn new(be: &B, data: &[f32], off: usize) -> Result<Self> {
        let mut host = vec![GUARD; off + data.len() + TAIL];
        host[off..off + data.len()].copy_from_slice(data);
        let mut buf = be.alloc(host.len())?;
        be.upload(&host, &mut buf)?;
        Ok(Placed { buf, off, len: data.len() })
    }
    /// An output: NaN everywhere in the view.
    fn poisoned(be: &B, len: usize, off: usize) -> Result<Self> {
        Self::new(be, &poison(len), off)
    }
    fn v<'a>(&'a self, be: &'a B) -> B::View<'a> {
        be.view(&self.buf, self.off..self.off + self.len)
    }
    fn m<'a>(&'a mut self, be: &'a B) -> B::ViewMut<'a> {
        be.view_mut(&mut self.buf, self.off..self.off + self.len)
    }
    /// The view's contents and whether every guard is intact.
    fn read(&self, be: &B) -> Result<(Vec<f32>, bool)> {
        let mut host = vec![0f32; be.len(&self.buf)];
        be.download(&self.buf, &mut host)?;
        let guards_ok = host[..self.off]
            .iter()
            .chain(&host[self.off + self.len..])
            .all(|g| g.to_bits() == GUARD.to_bits());
        Ok((host[self.off..self.off + self.len].to_vec(), guards_ok))
    }
}

/// The contents of a poisoned output: NaN, so that an element the op fails to write shows.
fn poison(len: usize) -> Vec<f32> {
    vec![f32::NAN; len]
}

/// A one-input op on the backend: places `x`, then the output with the contents `out`, at `off`;
/// runs `op` on their views; returns the output and whether its guards are intact.
fn one_input<B: Backend<Elem = f32>>(
    be: &B,
    off: usize,
    x: &[f32],
    out: &[f32],
    op: impl FnOnce(B::View<'_>, B::ViewMut<'_>),
) -> Result<(Vec<f32>, bool)> {
    let px = Placed::new(be, x, off)?;
    let mut py = Placed::new(be, out, off)?;
    op(px.v(be), py.m(be));
    py.read(be)
}

// ---- the checks -------------------------------------------------------------------------------------

struct Harness<'a, B: Backend<Elem = f32>> {
    be: &'a B,
    /// Clears an error the backend recorded, so that the next case runs.
    reset: &'a dyn Fn(&B),
    rng: ChaCha8Rng,
    rows: Vec<CheckRow>,
    cpu: Cpu<f32>,
    cpu64: Cpu<f64>,
}

/// View offsets: 4 elements (16-byte aligned: vector paths) and 1 (misaligned: scalar paths).
const ALIGNED: usize = 4;
const ODD: usize = 1;

fn off_tag(off: usize) -> &'static str {
    if off % 4 == 0 {
        "a16"
    } else {
        "odd"
    }
}

/// The three convolution ops: (name, output, the operands of its sums Σ|a·b|).
const CONV_OPS: [(&str, &str, &str); 3] = [
    ("conv2d_forward", "y", "x·w"),
    ("conv2d_backward_data", "dx", "dy·w"),
    ("conv2d_backward_filter", "dw", "x·dy"),
];

/// The inputs of a convolution check, its label, and Σ|a·b| of each output ([`CONV_OPS`] order).
struct ConvCase {
    x: Vec<f32>,
    w: Vec<f32>,
    dy: Vec<f32>,
    shape: String,
    mag: [Vec<f64>; 3],
}

/// y, dx and dw of the convolution `s` on a CPU backend.
fn conv_on_cpu<T: Real>(cpu: &Cpu<T>, s: &ConvShape, x: &[T], w: &[T], dy: &[T]) -> [Vec<T>; 3] {
    let zeros = |n| vec![T::from_f64(0.0); n];
    let (mut y, mut dx, mut dw) = (zeros(s.y_len()), zeros(s.x_len()), zeros(s.w_len()));
    cpu.conv2d_forward(s, x, w, &mut y);
    cpu.conv2d_backward_data(s, dy, w, &mut dx);
    cpu.conv2d_backward_filter(s, x, dy, &mut dw);
    [y, dx, dw]
}

const WHY_GEMM: &str = "f32 sums of K products in another order (cuDNN may use Winograd/FFT)";
const WHY_BLAS: &str = "f32 sums of K products in another order (cuBLAS)";
const WHY_F64: &str = "f64 math rounded once to f32; only the f64 sum order differs";
const WHY_EXACT: &str = "same f32 operations in the same order";

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

    /// A convolution case: random x, w and dy for `s`, its label, and Σ|a·b| of y, dx and dw.
    fn conv_case(&mut self, s: &ConvShape, off: usize) -> ConvCase {
        let k_fwd = s.c_in * s.kernel * s.kernel;
        let x = self.randn(s.x_len(), 1.0, 0.0);
        let w = self.randn(s.w_len(), 1.0 / (k_fwd as f32).sqrt(), 0.0);
        let dy = self.randn(s.y_len(), 1.0, 0.0);
        let shape = format!(
            "n{} ci{} {}x{} co{} k{} s{} p{} {}",
            s.n,
            s.c_in,
            s.h,
            s.w,
            s.c_out,
            s.kernel,
            s.stride,
            s.pad,
            off_tag(off)
        );
        let mag = conv_on_cpu(&self.cpu64, s, &abs64(&x), &abs64(&w), &abs64(&dy));
        ConvCase { x, w, dy, shape, mag }
    }

    /// Runs the three convolutions of `c` on the backend ([`CONV_OPS`] order), each into a
    /// poisoned output, and hands each result to `judge` with its direction's index, the K of its
    /// sums and whether the guards are intact.
    fn conv_on_backend(
        &mut self,
        s: &ConvShape,
        off: usize,
        c: &ConvCase,
        mut judge: impl FnMut(&mut Self, usize, usize, Vec<f32>, bool),
    ) -> Result<()> {
        let be = self.be;
        let (px, pw, pdy) =
            (Placed::new(be, &c.x, off)?, Placed::new(be, &c.w, off)?, Placed::new(be, &c.dy, off)?);
        let ks = [s.c_in * s.kernel * s.kernel, s.c_out * s.kernel * s.kernel, s.n * s.out_h() * s.out_w()];
        let lens = [s.y_len(), s.x_len(), s.w_len()];
        for (d, (k, len)) in ks.into_iter().zip(lens).enumerate() {
            let mut out = Placed::poisoned(be, len, off)?;
            match d {
                0 => be.conv2d_forward(s, px.v(be), pw.v(be), out.m(be)),
                1 => be.conv2d_backward_data(s, pdy.v(be), pw.v(be), out.m(be)),
                _ => be.conv2d_backward_filter(s, px.v(be), pdy.v(be), out.m(be)),
            }
            let (got, ok) = out.read(be)?;
            judge(self, d, k, got, ok);
        }
        Ok(())
    }

    fn conv(&mut self, s: &ConvShape, off: usize) -> Result<()> {
        let c = self.conv_case(s, off);
        let want = conv_on_cpu(&self.cpu, s, &c.x, &c.w, &c.dy);
        self.conv_on_backend(s, off, &c, |h, d, k, got, ok| {
            let (op, out, operands) = CONV_OPS[d];
            let st = compare(&wide(&got), &wide(&want[d]), &Tol::Sum { k, mag: &c.mag[d] });
            let tol = format!("4·max(K,16)·ε·Σ|{operands}| K={k}");
            h.push(op, c.shape.clone(), &[(out, st)], ok, &tol, WHY_GEMM);
        })
    }

    /// The convolution case in bf16-conv mode (the backend is set to it), against the exact result
    /// of the f32 inputs, with [`Tol::Bf16`].
    fn conv_bf16(&mut self, s: &ConvShape, off: usize) -> Result<()> {
        const WHY: &str = "bf16 operands and output (≤ u each), f32 sums; against the exact result";
        let c = self.conv_case(s, off);
        let want = conv_on_cpu(&self.cpu64, s, &wide(&c.x), &wide(&c.w), &wide(&c.dy));
        self.conv_on_backend(s, off, &c, |h, d, k, got, ok| {
            let (op, out, operands) = CONV_OPS[d];
            let st = compare(&wide(&got), &want[d], &Tol::Bf16 { k, mag: &c.mag[d] });
            let tol = format!("(3u+4·max(K,16)·ε)·Σ|{operands}| K={k}");
            h.push(&format!("{op} bf16"), c.shape.clone(), &[(out, st)], ok, &tol, WHY);
        })
    }

    fn linear(&mut self, n: usize, inp: usize, out: usize, off: usize) -> Result<()> {
        let be = self.be;
        let x = self.randn(n * inp, 1.0, 0.0);
        let p = self.randn(out * inp + out, 1.0 / (inp as f32).sqrt(), 0.0);
        let dy = self.randn(n * out, 1.0, 0.0);
        let shape = format!("n{n} in{inp} out{out} {}", off_tag(off));
        let (mut y, mut dx, mut dp) = (vec![0f32; n * out], vec![0f32; n * inp], vec![0f32; p.len()]);
        self.cpu.linear_forward(n, inp, out, &x, &p, &mut y);
        self.cpu.linear_backward(n, inp, out, &x, &p, &dy, &mut dx, &mut dp);
        let (ax, ap, ady) = (abs64(&x), abs64(&p), abs64(&dy));
        let (mut my, mut mdx, mut mdp) = (vec![0f64; n * out], vec![0f64; n * inp], vec![0f64; p.len()]);
        self.cpu64.linear_forward(n, inp, out, &ax, &ap, &mut my);
        self.cpu64.linear_backward(n, inp, out, &ax, &ap, &ady, &mut mdx, &mut mdp);

        let (px, pp, pdy) =
            (Placed::new(be, &x, off)?, Placed::new(be, &p, off)?, Placed::new(be, &dy, off)?);
        let mut py = Placed::poisoned(be, n * out, off)?;
        be.linear_forward(n, inp, out, px.v(be), pp.v(be), py.m(be));
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
        be.linear_backward(n, inp, out, px.v(be), pp.v(be), pdy.v(be), pdx.m(be), pdp.m(be));
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

    fn batchnorm(&mut self, s: &BnShape, off: usize, variant: &str, with_eval: bool) -> Result<()> {
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
        self.cpu.batchnorm_forward_train(s, &x, &affine, &mut run_c, &mut saved, &mut y);
        let (px, paff) = (Placed::new(be, &x, off)?, Placed::new(be, &affine, off)?);
        let mut prun = Placed::new(be, &running, off)?;
        let mut psaved = Placed::poisoned(be, 2 * c, off)?;
        let mut py = Placed::poisoned(be, s.len(), off)?;
        be.batchnorm_forward_train(s, px.v(be), paff.v(be), prun.m(be), psaved.m(be), py.m(be));
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
            self.cpu.batchnorm_forward_eval(s, &x, &affine, &run_c, &mut ye);
            let prun_c = Placed::new(be, &run_c, off)?;
            let mut pye = Placed::poisoned(be, s.len(), off)?;
            be.batchnorm_forward_eval(s, px.v(be), paff.v(be), prun_c.v(be), pye.m(be));
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
        self.cpu.batchnorm_backward(s, &x, &y, &dy, &affine, &saved, &mut dx, &mut daff);
        let (pyc, pdy, psc) =
            (Placed::new(be, &y, off)?, Placed::new(be, &dy, off)?, Placed::new(be, &saved, off)?);
        let mut pdx = Placed::poisoned(be, s.len(), off)?;
        let mut pdaff = Placed::poisoned(be, 2 * c, off)?;
        be.batchnorm_backward(
            s,
            px.v(be),
            pyc.v(be),
            pdy.v(be),
            paff.v(be),
            psc.v(be),
            pdx.m(be),
            pdaff.m(be),
        );
        let (gdx, ok1) = pdx.read(be)?;
        let (gdaff, ok2) = pdaff.read(be)?;
        let parts = [
            ("dx", compare(&wide(&gdx), &wide(&dx), &tol)),
            ("d_affine", compare(&wide(&gdaff), &wide(&daff), &tol)),
        ];
        self.push("batchnorm_backward", shape, &parts, ok1 && ok2, "2ε·|ref| + 1e-9·max|ref|", WHY_F64);
        Ok(())
    }

    fn add_assign(&mut self, len: usize, off: usize) -> Result<()> {
        let be = self.be;
        let (y0, x) = (self.randn(len, 1.0, 0.0), self.randn(len, 1.0, 0.0));
        let mut y = y0.clone();
        self.cpu.add_assign(&mut y, &x);
        let (gy, ok) = one_input(be, off, &x, &y0, |x, y| be.add_assign(y, x))?;
        let st = compare(&wide(&gy), &wide(&y), &Tol::Exact);
        self.push("add_assign", format!("len{len} {}", off_tag(off)), &[("y", st)], ok, "bitwise", WHY_EXACT);
        Ok(())
    }

    fn shortcut(&mut self, s: &ShortcutShape, off: usize) -> Result<()> {
        let be = self.be;
        let (x_len, y_len) = (s.n * s.c_in * s.h * s.w, s.n * s.c_out * s.out_h() * s.out_w());
        let shape =
            format!("n{} ci{} {}x{} co{} s{} {}", s.n, s.c_in, s.h, s.w, s.c_out, s.stride, off_tag(off));
        let x = self.randn(x_len, 1.0, 0.0);
        let mut y = vec![0f32; y_len];
        self.cpu.shortcut_forward(s, &x, &mut y);
        let (gy, ok) = one_input(be, off, &x, &poison(y_len), |x, y| be.shortcut_forward(s, x, y))?;
        let st = compare(&wide(&gy), &wide(&y), &Tol::Exact);
        self.push("shortcut_forward", shape.clone(), &[("y", st)], ok, "bitwise", "copies and zeros");

        let (dy, dx0) = (self.randn(y_len, 1.0, 0.0), self.randn(x_len, 1.0, 0.0));
        let mut dx = dx0.clone();
        self.cpu.shortcut_backward_acc(s, &dy, &mut dx);
        let (gdx, ok) = one_input(be, off, &dy, &dx0, |dy, dx| be.shortcut_backward_acc(s, dy, dx))?;
        let st = compare(&wide(&gdx), &wide(&dx), &Tol::Exact);
        self.push("shortcut_backward_acc", shape, &[("dx", st)], ok, "bitwise", "one f32 add per element");
        Ok(())
    }

    fn avgpool(&mut self, s: &PoolShape, off: usize) -> Result<()> {
        let be = self.be;
        let (x_len, y_len) = (s.n * s.c * s.hw, s.n * s.c);
        let shape = format!("n{} c{} hw{} {}", s.n, s.c, s.hw, off_tag(off));
        let x = self.randn(x_len, 1.0, 0.3);
        let mut y = vec![0f32; y_len];
        self.cpu.avgpool_forward(s, &x, &mut y);
        let (gy, ok) = one_input(be, off, &x, &poison(y_len), |x, y| be.avgpool_forward(s, x, y))?;
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
        self.cpu.avgpool_backward(s, &dy, &mut dx);
        let (gdx, ok) = one_input(be, off, &dy, &poison(x_len), |dy, dx| be.avgpool_backward(s, dy, dx))?;
        let st = compare(&wide(&gdx), &wide(&dx), &Tol::Exact);
        self.push("avgpool_backward", shape, &[("dx", st)], ok, "bitwise", "one correctly rounded division");
        Ok(())
    }

    fn softmax(&mut self, n: usize, classes: usize, ties: bool, off: usize) -> Result<()> {
        let be = self.be;
        let logits: Vec<f32> = if ties {
            (0..n * classes).map(|_| self.rng.gen_range(-1i32..=1) as f32).collect()
        } else {
            self.randn(n * classes, 3.0, 0.0)
        };
        let labels: Vec<u32> = (0..n).map(|_| self.rng.gen_range(0..classes as u32)).collect();
        let shape = format!("n{n} classes{classes}{} {}", if ties { " ties" } else { "" }, off_tag(off));
        let mut dl = vec![0f32; n * classes];
        let want = self.cpu.softmax_cross_entropy(n, classes, &logits, &labels, &mut dl)?;
        let pl = Placed::new(be, &logits, off)?;
        let mut lab = be.alloc_labels(n)?;
        be.upload_labels(&labels, &mut lab)?;
        let mut pdl = Placed::poisoned(be, n * classes, off)?;
        let got = be.softmax_cross_entropy(n, classes, pl.v(be), &lab, pdl.m(be))?;
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
        let want = self.cpu.softmax_cross_entropy_eval(n, classes, &logits, &labels, &mut want_pred)?;
        let mut long = labels.clone();
        long.extend([0, 0, 0]);
        let mut lab_long = be.alloc_labels(n + 3)?;
        be.upload_labels(&long, &mut lab_long)?;
        let mut got_pred = vec![u32::MAX; n];
        let got = be.softmax_cross_entropy_eval(n, classes, pl.v(be), &lab_long, &mut got_pred)?;
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

    fn sgd(&mut self) -> Result<()> {
        const CHUNK: usize = super::sgd::CHUNK;
        let be = self.be;
        let len = 2 * CHUNK + 400;
        let seg = |offset, len, lr, wd, momentum| Segment { offset, len, lr, wd, momentum };
        let segments = vec![
            seg(1, 5, 0.1, 5e-4, 0.9),
            seg(6, 0, 0.1, 5e-4, 0.9),
            seg(10, CHUNK + 7, 0.05, 1e-3, 0.9),
            seg(CHUNK + 20, CHUNK - 3, 0.3, 0.0, 0.0),
            seg(2 * CHUNK + 30, 333, 0.1, 5e-4, 0.5),
        ];
        let w0 = self.randn(len, 0.1, 0.0);
        let (g1, g2) = (self.randn(len, 1.0, 0.0), self.randn(len, 1.0, 0.0));
        let (mut w, mut v) = (w0.clone(), vec![0f32; len]);
        let (mut pw, mut pv) = (be.alloc(len)?, be.alloc(len)?);
        be.upload(&w0, &mut pw)?;
        let (mut pg1, mut pg2) = (be.alloc(len)?, be.alloc(len)?);
        be.upload(&g1, &mut pg1)?;
        be.upload(&g2, &mut pg2)?;
        let shape = format!("{} segs, {len} elems", segments.len());
        for (round, g, pg, with_sums) in [(1, &g1, &pg1, true), (2, &g2, &pg2, false), (3, &g1, &pg1, true)] {
            let before = w.clone();
            let mut want = vec![StepSums::default(); segments.len()];
            self.cpu.sgd_step(&segments, &mut w, g, &mut v, with_sums.then_some(&mut want[..]))?;
            let mut got =
                vec![StepSums { ww: f64::NAN, gg: f64::NAN, dd: f64::NAN, wd: f64::NAN }; segments.len()];
            be.sgd_step(&segments, &mut pw, pg, &mut pv, with_sums.then_some(&mut got[..]))?;
            let (mut gw, mut gv) = (vec![0f32; len], vec![0f32; len]);
            be.download(&pw, &mut gw)?;
            be.download(&pv, &mut gv)?;
            let mut parts = vec![
                ("params", compare(&wide(&gw), &wide(&w), &Tol::Exact)),
                ("momenta", compare(&wide(&gv), &wide(&v), &Tol::Exact)),
            ];
            if with_sums {
                // Allowance: 1e-9 of the sum of the absolute terms of each sum.
                let mut got_flat = Vec::new();
                let mut want_flat = Vec::new();
                let mut allowed = Vec::new();
                for (i, s) in segments.iter().enumerate() {
                    let r = s.offset..s.offset + s.len;
                    let (mut aw, mut ag, mut ad, mut awd) = (0f64, 0f64, 0f64, 0f64);
                    for j in r {
                        let (a, gg, d) = (before[j] as f64, g[j] as f64, w[j] as f64 - before[j] as f64);
                        aw += a * a;
                        ag += gg * gg;
                        ad += d * d;
                        awd += (a * d).abs();
                    }
                    got_flat.extend([got[i].ww, got[i].gg, got[i].dd, got[i].wd]);
                    want_flat.extend([want[i].ww, want[i].gg, want[i].dd, want[i].wd]);
                    allowed.extend([aw, ag, ad, awd].map(|m| 1e-9 * m));
                }
                parts.push(("sums", compare(&got_flat, &want_flat, &Tol::Abs(&allowed))));
            }
            self.push(
                "sgd_step",
                format!("{shape}, step {round}{}", if with_sums { "+sums" } else { "" }),
                &parts,
                true,
                "bitwise; sums 1e-9·Σ|terms|",
                "same f32 ops (--fmad=false); f64 sums reordered",
            );
        }
        Ok(())
    }

    /// One training step of a small PreResNet-8 on the backend under test, on Cpu<f32> and on
    /// Cpu<f64> from identical (f32-rounded) parameters and batch, then an eval forward. Each
    /// quantity is judged by [`Self::judge`].
    /// With `bf16`, the backend under test is in bf16-conv mode, and its yardstick is
    /// [`Bf16Cpu`] (the CPU with exactly emulated bf16 convolutions) instead of `Cpu<f32>`.
    fn whole_step(&mut self, kind: ShortcutKind, seed: u64, bf16: bool) -> Result<()> {
        if bf16 {
            self.whole_step_on(kind, seed, Bf16Cpu::new(), StepTol::Bf16)
        } else {
            self.whole_step_on(kind, seed, Cpu::<f32>::new(), StepTol::F32)
        }
    }

    /// The whole step on the backend under test, on `r` (the yardstick: `Cpu<f32>`, or
    /// [`Bf16Cpu`] in bf16-conv mode) and on `Cpu<f64>`, judged by [`Self::judge`] with `tol`.
    fn whole_step_on<R>(&mut self, kind: ShortcutKind, seed: u64, r: R, tol: StepTol) -> Result<()>
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
        let mut o32 = Sgd::new(&r, &ocfg, &m32.layout)?;
        let mut og = Sgd::new(be, &ocfg, &mg.layout)?;
        let mut o64 = Sgd::new(&self.cpu64, &ocfg, &m64.layout)?;
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
            ("momenta", get(&og.momenta)?, wide(&o32.momenta), o64.momenta.clone(), &tensors[..]),
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

    /// Five training steps of model A run eagerly against the same five steps of model B (same
    /// initial state, batches and hyperparameters) run through `step_begin`/`step_end`: on a
    /// backend with CUDA graphs, step 0 warms up, step 1 is captured and launched, steps 2–4 are
    /// replayed. The lr changes every step (it must reach the replayed graph through the segment
    /// table), and statistics are asked for on some steps and not others (one graph serves both).
    /// Everything is compared bitwise: loss, correct count and sums per step, then parameters,
    /// momenta and running statistics. The caller resets the captured step afterwards.
    fn graph_vs_eager(&mut self, seed: u64) -> Result<()> {
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

    /// One row for a whole-step quantity, judged tensor by tensor against cpu-f64:
    /// ‖gpu − f64‖ ≤ max(10·‖cpu32 − f64‖, 1e-4·‖f64‖, 1e-5·rms·sqrt(len)), where rms is that of
    /// the whole quantity. The first term says "as accurate as the CPU's f32 path"; the others are
    /// floors for tensors that the CPU happens to get nearly exact, or whose true value is ~0 (the
    /// bias gradient of a BN that feeds another BN is exactly zero in exact arithmetic).
    ///
    /// In bf16-conv mode ([`StepTol::Bf16`]) the yardstick (the "cpu32" column) is [`Bf16Cpu`]:
    /// ‖gpu − f64‖ ≤ max(4·‖emu − f64‖, (u/4)·‖f64‖, (u/32)·rms·sqrt(len)), u = 2⁻⁸ (see
    /// [`STEP_BF16_FACTOR`]); the floors sit below bf16's typical error of ~u.
    fn judge(&mut self, op: &str, shape: &str, tol: StepTol, tensors: Vec<Measured>) {
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
        let total_len: usize = tensors.iter().map(|t| t.3.len()).sum();
        let total_sq: f64 = tensors.iter().map(|t| t.3.iter().map(|x| x * x).sum::<f64>()).sum();
        let rms = (total_sq / total_len.max(1) as f64).sqrt();
        let (mut max_abs, mut err_sq, mut worst) = (0f64, 0f64, 0f64);
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
            if note.is_empty() || ratio > worst {
                worst = worst.max(ratio);
                let yardstick = if tol == StepTol::Bf16 { "emu" } else { "cpu32" };
                note = format!(
                    "worst {name}: ‖gpu−f64‖ {e_gpu:.2e}, ‖{yardstick}−f64‖ {e_cpu:.2e}, allowed {allowed:.2e}"
                );
            }
        }
        let rel = if total_sq > 0.0 { (err_sq / total_sq).sqrt() } else { err_sq.sqrt() };
        self.rows.push(CheckRow {
            op: op.into(),
            shape: shape.into(),
            max_abs,
            max_rel: rel,
            err_over_tol: worst,
            tolerance: match tol {
                StepTol::F32 => "≤ max(10·cpu32 err, 1e-4 rel)".into(),
                StepTol::Bf16 => "≤ max(4·bf16-emu err, u/4 rel)".into(),
            },
            why: match tol {
                StepTol::F32 => "f32 rounding compounded over layers; per tensor, against cpu-f64".into(),
                StepTol::Bf16 => {
                    "as accurate as exact bf16 emulation on the CPU; per tensor, against cpu-f64".into()
                }
            },
            pass: worst <= 1.0,
            detail: note,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_flags_nan_and_respects_allowances() {
        let s = compare(&[1.0, f64::NAN], &[1.0, 2.0], &Tol::Exact);
        assert!(s.worst.is_infinite());
        assert_eq!(s.bad.map(|b| b.0), Some(1));
        let s = compare(&[1.0 + 1e-7], &[1.0], &Tol::Rel { rel: 2.0 * EPS, abs: 0.0 });
        assert!(s.worst <= 1.0, "{s:?}");
        let s = compare(&[1.0 + 1e-6], &[1.0], &Tol::Rel { rel: 2.0 * EPS, abs: 0.0 });
        assert!(s.worst > 1.0, "{s:?}");
        let s = compare(&[f64::NAN], &[f64::NAN], &Tol::Exact);
        assert_eq!(s.worst, 0.0);
        let s = compare(&[-0.0], &[0.0], &Tol::Exact);
        assert!(s.worst.is_infinite(), "bitwise means the sign of zero too");
        let mag = [10.0];
        let s = compare(&[1.0 + 1e-5], &[1.0], &Tol::Sum { k: 16, mag: &mag });
        assert!(s.worst <= 1.0, "{s:?}");
    }

    #[test]
    fn guards_catch_stray_writes_and_poison_catches_unwritten_elements() {
        let be = Cpu::<f32>::new();
        let mut p = Placed::<Cpu<f32>>::new(&be, &[1.0, 2.0, 3.0], ODD).unwrap();
        assert!(p.read(&be).unwrap().1);
        p.buf[0] = 0.0; // before the view
        assert!(!p.read(&be).unwrap().1);
        let mut q = Placed::<Cpu<f32>>::poisoned(&be, 4, ALIGNED).unwrap();
        let v = q.m(&be);
        v[..3].copy_from_slice(&[1.0, 2.0, 3.0]); // the op "forgets" the last element
        let (got, guards_ok) = q.read(&be).unwrap();
        assert!(guards_ok);
        let s = compare(&wide(&got), &[1.0, 2.0, 3.0, 4.0], &Tol::Rel { rel: 1.0, abs: 1.0 });
        assert!(s.worst.is_infinite() && s.bad.map(|b| b.0) == Some(3), "{s:?}");
        q.buf[ALIGNED + 4] = 0.0; // just past the view
        assert!(!q.read(&be).unwrap().1);
    }

    /// The harness, with the CPU backend standing in for the GPU, must pass every check exactly:
    /// this exercises all of it (placement, guards, poisoning, tolerances, the whole step) here.
    #[test]
    fn harness_passes_with_the_cpu_as_the_device() {
        let be = Cpu::<f32>::new();
        let noop = |_: &Cpu<f32>| {};
        let rows = run_checks_on(&be, 3, &[("cpu", &noop)], &noop);
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
