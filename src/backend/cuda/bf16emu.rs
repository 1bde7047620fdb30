//! [`Bf16Cpu`]: the CPU reference with its convolutions in bf16-conv arithmetic, emulated exactly
//! as the CUDA backend's bf16 mode computes them (cuDNN's PSEUDO_BFLOAT16 configuration): both
//! operands rounded to bf16 (round to nearest even, as `cast_f32_to_bf16`), products summed in
//! f32 (the CPU's order), the result rounded to bf16 and widened back to f32. Everything else is
//! `Cpu<f32>`. `ilr check` uses it as the yardstick of bf16 error for the whole training step: it
//! rounds at the same points, on the same inputs, as the GPU.

use crate::backend::cpu::Cpu;
use crate::backend::{Backend, ConvShape, LossSums, Segment, StepSums};
use anyhow::Result;
use half::bf16;

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bf16Cpu {
    cpu: Cpu<f32>,
}

impl Bf16Cpu {
    pub fn new() -> Self {
        Self::default()
    }
}

/// bf16(x), widened back to f32.
pub fn round_bf16(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| round_bf16(x)).collect()
}

fn round_in_place(v: &mut [f32]) {
    for x in v {
        *x = round_bf16(*x);
    }
}

/// The `Backend` items of a wrapper around a `Cpu<f32>` (in the field `$cpu`) that it passes
/// through unchanged: the associated types, `alloc_labels`, the views, `zero`, BatchNorm, the
/// elementwise and shape ops and the linear layer. [`Bf16Cpu`] and the emulator of
/// tests/step_hooks.rs (the CUDA backend's hooks on the CPU) write only the methods they change.
#[doc(hidden)]
#[macro_export]
macro_rules! cpu_f32_passthrough {
    ($cpu:ident) => {
        type Elem = f32;
        type Buf = Vec<f32>;
        type Labels = Vec<u32>;
        type View<'a> = &'a [f32];
        type ViewMut<'a> = &'a mut [f32];

        fn alloc_labels(&self, len: usize) -> ::anyhow::Result<Vec<u32>> {
            self.$cpu.alloc_labels(len)
        }
        fn len(&self, b: &Vec<f32>) -> usize {
            b.len()
        }
        fn view<'a>(&'a self, b: &'a Vec<f32>, r: ::std::ops::Range<usize>) -> &'a [f32] {
            &b[r]
        }
        fn view_mut<'a>(&'a self, b: &'a mut Vec<f32>, r: ::std::ops::Range<usize>) -> &'a mut [f32] {
            &mut b[r]
        }
        fn zero(&self, x: &mut [f32]) {
            self.$cpu.zero(x)
        }
        fn batchnorm_forward_train(
            &self,
            s: &$crate::backend::BnShape,
            x: &[f32],
            affine: &[f32],
            running: &mut [f32],
            saved: &mut [f32],
            y: &mut [f32],
        ) {
            self.$cpu.batchnorm_forward_train(s, x, affine, running, saved, y)
        }
        fn batchnorm_forward_eval(
            &self,
            s: &$crate::backend::BnShape,
            x: &[f32],
            affine: &[f32],
            running: &[f32],
            y: &mut [f32],
        ) {
            self.$cpu.batchnorm_forward_eval(s, x, affine, running, y)
        }
        fn batchnorm_backward(
            &self,
            s: &$crate::backend::BnShape,
            x: &[f32],
            y: &[f32],
            dy: &[f32],
            affine: &[f32],
            saved: &[f32],
            dx: &mut [f32],
            d_affine: &mut [f32],
        ) {
            self.$cpu.batchnorm_backward(s, x, y, dy, affine, saved, dx, d_affine)
        }
        fn add_assign(&self, y: &mut [f32], x: &[f32]) {
            self.$cpu.add_assign(y, x)
        }
        fn shortcut_forward(&self, s: &$crate::backend::ShortcutShape, x: &[f32], y: &mut [f32]) {
            self.$cpu.shortcut_forward(s, x, y)
        }
        fn shortcut_backward_acc(&self, s: &$crate::backend::ShortcutShape, dy: &[f32], dx: &mut [f32]) {
            self.$cpu.shortcut_backward_acc(s, dy, dx)
        }
        fn avgpool_forward(&self, s: &$crate::backend::PoolShape, x: &[f32], y: &mut [f32]) {
            self.$cpu.avgpool_forward(s, x, y)
        }
        fn avgpool_backward(&self, s: &$crate::backend::PoolShape, dy: &[f32], dx: &mut [f32]) {
            self.$cpu.avgpool_backward(s, dy, dx)
        }
        fn linear_forward(&self, n: usize, inp: usize, out: usize, x: &[f32], params: &[f32], y: &mut [f32]) {
            self.$cpu.linear_forward(n, inp, out, x, params, y)
        }
        fn linear_backward(
            &self,
            n: usize,
            inp: usize,
            out: usize,
            x: &[f32],
            params: &[f32],
            dy: &[f32],
            dx: &mut [f32],
            d_params: &mut [f32],
        ) {
            self.$cpu.linear_backward(n, inp, out, x, params, dy, dx, d_params)
        }
    };
}

impl Backend for Bf16Cpu {
    crate::cpu_f32_passthrough!(cpu);

    fn name(&self) -> String {
        "cpu-f32/bf16-conv-emulated".into()
    }
    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        self.cpu.alloc(len)
    }
    fn upload(&self, src: &[f32], dst: &mut Vec<f32>) -> Result<()> {
        self.cpu.upload(src, dst)
    }
    fn upload_labels(&self, src: &[u32], dst: &mut Vec<u32>) -> Result<()> {
        self.cpu.upload_labels(src, dst)
    }
    fn download(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<()> {
        self.cpu.download(src, dst)
    }
    fn conv2d_forward(&self, s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
        self.cpu.conv2d_forward(s, &rounded(x), &rounded(w), y);
        round_in_place(y);
    }
    fn conv2d_backward_data(&self, s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
        self.cpu.conv2d_backward_data(s, &rounded(dy), &rounded(w), dx);
        round_in_place(dx);
    }
    fn conv2d_backward_filter(&self, s: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
        self.cpu.conv2d_backward_filter(s, &rounded(x), &rounded(dy), dw);
        round_in_place(dw);
    }
    fn softmax_cross_entropy(
        &self,
        n: usize,
        classes: usize,
        logits: &[f32],
        labels: &Vec<u32>,
        dlogits: &mut [f32],
    ) -> Result<LossSums> {
        self.cpu.softmax_cross_entropy(n, classes, logits, labels, dlogits)
    }
    fn softmax_cross_entropy_eval(
        &self,
        n: usize,
        classes: usize,
        logits: &[f32],
        labels: &Vec<u32>,
        predictions: &mut [u32],
    ) -> Result<LossSums> {
        self.cpu.softmax_cross_entropy_eval(n, classes, logits, labels, predictions)
    }
    fn sgd_step(
        &self,
        segments: &[Segment],
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        momenta: &mut Vec<f32>,
        sums: Option<&mut [StepSums]>,
    ) -> Result<()> {
        self.cpu.sgd_step(segments, params, grads, momenta, sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_with_8_significant_bits() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even one, 1.
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        for x in [0.1f32, -3.7, 1e-20, 6.5e4] {
            assert!(((round_bf16(x) - x) / x).abs() <= 1.0 / 256.0, "{x}");
        }
    }

    #[test]
    fn convolutions_round_operands_and_result() {
        let s = ConvShape { n: 1, c_in: 1, h: 1, w: 1, c_out: 1, kernel: 1, stride: 1, pad: 0 };
        let (x, w) = (1.0 + 1.0 / 128.0 + 1.0 / 1024.0, 3.0f32);
        let mut y = [0f32];
        Bf16Cpu::new().conv2d_forward(&s, &[x], &[w], &mut y);
        // bf16(x) = 1 + 2^-7; 3·(1 + 2^-7) = 3 + 3·2^-7, which bf16 rounds to 3 + 2^-5.
        assert_eq!(y[0], 3.0 + 1.0 / 32.0);
    }
}
