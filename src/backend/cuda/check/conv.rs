//! The f32 convolution checks (forward, backward-data, backward-filter) against `Cpu<f32>`.

use super::super::conv_algo::shape_label;
use super::compare::{abs64, compare, wide, Tol};
use super::placement::{off_tag, Placed};
use super::Harness;
use crate::backend::cpu::Cpu;
use crate::backend::{Backend, ConvBackwardData, ConvBackwardFilter, ConvForward, ConvShape, Real};
use anyhow::Result;

/// The three convolution ops: (name, output, the operands of its sums Σ|a·b|).
pub(super) const CONV_OPS: [(&str, &str, &str); 3] = [
    ("conv2d_forward", "y", "x·w"),
    ("conv2d_backward_data", "dx", "dy·w"),
    ("conv2d_backward_filter", "dw", "x·dy"),
];

/// The inputs of a convolution check, its label, and Σ|a·b| of each output ([`CONV_OPS`] order).
pub(super) struct ConvCase {
    pub(super) x: Vec<f32>,
    pub(super) w: Vec<f32>,
    pub(super) dy: Vec<f32>,
    pub(super) shape: String,
    pub(super) mag: [Vec<f64>; 3],
}

/// y, dx and dw of the convolution `s` on a CPU backend.
pub(super) fn conv_on_cpu<T: Real>(cpu: &Cpu<T>, s: &ConvShape, x: &[T], w: &[T], dy: &[T]) -> [Vec<T>; 3] {
    let zeros = |n| vec![T::from_f64(0.0); n];
    let (mut y, mut dx, mut dw) = (zeros(s.y_len()), zeros(s.x_len()), zeros(s.w_len()));
    cpu.conv2d_forward(ConvForward { s, x, w, y: &mut y });
    cpu.conv2d_backward_data(ConvBackwardData { s, dy, w, dx: &mut dx });
    cpu.conv2d_backward_filter(ConvBackwardFilter { s, x, dy, dw: &mut dw });
    [y, dx, dw]
}

pub(super) const WHY_GEMM: &str = "f32 sums of K products in another order (cuDNN may use Winograd/FFT)";

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    /// A convolution case: random x, w and dy for `s`, its label, and Σ|a·b| of y, dx and dw.
    pub(super) fn conv_case(&mut self, s: &ConvShape, off: usize) -> ConvCase {
        let k_fwd = s.c_in * s.kernel * s.kernel;
        let x = self.randn(s.x_len(), 1.0, 0.0);
        let w = self.randn(s.w_len(), 1.0 / (k_fwd as f32).sqrt(), 0.0);
        let dy = self.randn(s.y_len(), 1.0, 0.0);
        let shape = format!("{} {}", shape_label(s), off_tag(off));
        let mag = conv_on_cpu(&self.cpu64, s, &abs64(&x), &abs64(&w), &abs64(&dy));
        ConvCase { x, w, dy, shape, mag }
    }

    /// Runs the three convolutions of `c` on the backend ([`CONV_OPS`] order), each into a
    /// poisoned output, and hands each result to `judge` with its direction's index, the K of its
    /// sums and whether the guards are intact.
    pub(super) fn conv_on_backend(
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
                0 => be.conv2d_forward(ConvForward { s, x: px.v(be), w: pw.v(be), y: out.m(be) }),
                1 => {
                    be.conv2d_backward_data(ConvBackwardData { s, dy: pdy.v(be), w: pw.v(be), dx: out.m(be) })
                }
                _ => be.conv2d_backward_filter(ConvBackwardFilter {
                    s,
                    x: px.v(be),
                    dy: pdy.v(be),
                    dw: out.m(be),
                }),
            }
            let (got, ok) = out.read(be)?;
            judge(self, d, k, got, ok);
        }
        Ok(())
    }

    pub(super) fn conv(&mut self, s: &ConvShape, off: usize) -> Result<()> {
        let c = self.conv_case(s, off);
        let want = conv_on_cpu(&self.cpu, s, &c.x, &c.w, &c.dy);
        self.conv_on_backend(s, off, &c, |h, d, k, got, ok| {
            let (op, out, operands) = CONV_OPS[d];
            let st = compare(&wide(&got), &wide(&want[d]), &Tol::Sum { k, mag: &c.mag[d] });
            let tol = format!("4·max(K,16)·ε·Σ|{operands}| K={k}");
            h.push(op, c.shape.clone(), &[(out, st)], ok, &tol, WHY_GEMM);
        })
    }
}
