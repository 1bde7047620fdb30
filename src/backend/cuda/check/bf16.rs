//! bf16-conv: the per-op convolution rows, the whole-step yardstick factor, and the lower bound of
//! every bf16 row (an f32 computation labelled bf16 must fail the check).

use super::compare::{compare, wide, Tol, U_BF16};
use super::conv::{conv_on_cpu, CONV_OPS};
use super::Harness;
use crate::backend::{Backend, ConvShape};
use anyhow::Result;

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
pub(crate) const STEP_BF16_FACTOR: f64 = 4.0;

/// Lower bound of a bf16 convolution row: ‖got − exact‖₂ ≥ (u/16)·‖exact‖₂. Rounding the output
/// alone to 8 significant bits leaves an rms relative error of about u/√3 ÷ (mean mantissa ≈ 1.4)
/// ≈ 0.4u, and rounding the operands adds to it: tests/step_hooks.rs's emulation with f64 sums
/// shows 0.64u–0.80u on every row (seeds 1–3). f32 arithmetic sits near k·ε ≈ u/4000 or below.
/// u/16 is 10× below the one and > 200× above the other.
pub(super) const OP_MIN_REL_ERR: f64 = U_BF16 / 16.0;
/// Fewer elements than this say too little about the error's size (one product can round to
/// almost nothing by chance): such rows get no lower bound, and say so.
pub(super) const OP_MIN_ELEMS: usize = 32;
/// Lower bound of a bf16 whole-step row: ‖gpu − f64‖ ≥ this × ‖emu − f64‖ over the row's tensors.
/// The GPU rounds the same operands at the same points as the emulation, so their errors are of
/// one size (the emulation with f64 sums, another valid order of the sums, gives 0.97–1.00× on
/// every row, seeds 1–3); an f32 computation's error is ~u/ε ≈ 3·10⁴ times smaller.
pub(super) const STEP_MIN_OF_EMU: f64 = 0.25;

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

/// The lower bound of one bf16 convolution output: `Err(why)` when its error is too small to be
/// bf16 arithmetic, `Ok(note)` otherwise (a note when the row is too small to be judged).
pub(super) fn op_lower_bound(got: &[f64], exact: &[f64]) -> Result<String, String> {
    if exact.len() < OP_MIN_ELEMS {
        return Ok(format!("{} elements: too few for the bf16 lower bound", exact.len()));
    }
    let rel = dist(got, exact) / norm(exact).max(f64::MIN_POSITIVE);
    if rel >= OP_MIN_REL_ERR {
        Ok(String::new())
    } else {
        Err(format!(
            "error ‖Δ‖/‖exact‖ = {rel:.1e} is below u/16 = {OP_MIN_REL_ERR:.1e}: not bf16 arithmetic (f32 under a bf16 label?)"
        ))
    }
}

/// The lower bound of one bf16 whole-step row, from ‖gpu − f64‖ and ‖emu − f64‖ over its tensors.
pub(crate) fn step_lower_bound(err_gpu: f64, err_emu: f64) -> Result<(), String> {
    if err_gpu >= STEP_MIN_OF_EMU * err_emu {
        Ok(())
    } else {
        Err(format!(
            "‖gpu−f64‖ {err_gpu:.2e} is below ¼ of the bf16 emulation's {err_emu:.2e}: not bf16 arithmetic (f32 under a bf16 label?)"
        ))
    }
}

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    /// Adds the verdict of a lower bound to the last row: a failure fails it, a note is kept.
    pub(super) fn apply_lower_bound(&mut self, verdict: Result<String, String>) {
        let Some(row) = self.rows.last_mut() else { return };
        let note = match verdict {
            Ok(note) => note,
            Err(why) => {
                row.pass = false;
                why
            }
        };
        if !note.is_empty() {
            row.detail = if row.detail.is_empty() { note } else { format!("{}; {note}", row.detail) };
        }
    }

    /// The convolution case in bf16-conv mode (the backend is set to it), against the exact result
    /// of the f32 inputs, with [`Tol::Bf16`] as the upper bound and [`op_lower_bound`] below.
    pub(super) fn conv_bf16(&mut self, s: &ConvShape, off: usize) -> Result<()> {
        const WHY: &str = "bf16 operands and output (≤ u each), f32 sums; against the exact result";
        let c = self.conv_case(s, off);
        let want = conv_on_cpu(&self.cpu64, s, &wide(&c.x), &wide(&c.w), &wide(&c.dy));
        self.conv_on_backend(s, off, &c, |h, d, k, got, ok| {
            let (op, out, operands) = CONV_OPS[d];
            let tol = format!("(3u+4·max(K,16)·ε)·Σ|{operands}| K={k}; ≥ u/16 rel");
            let got = wide(&got);
            let st = compare(&got, &want[d], &Tol::Bf16 { k, mag: &c.mag[d] });
            h.push(&format!("{op} bf16"), c.shape.clone(), &[(out, st)], ok, &tol, WHY);
            h.apply_lower_bound(op_lower_bound(&got, &want[d]));
        })
    }
}
