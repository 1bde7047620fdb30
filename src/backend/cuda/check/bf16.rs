//! bf16-conv: the per-op convolution rows and the whole-step yardstick factor.

use super::compare::{compare, wide, Tol};
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
pub(super) const STEP_BF16_FACTOR: f64 = 4.0;

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    /// The convolution case in bf16-conv mode (the backend is set to it), against the exact result
    /// of the f32 inputs, with [`Tol::Bf16`].
    pub(super) fn conv_bf16(&mut self, s: &ConvShape, off: usize) -> Result<()> {
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
}
