//! [`Bf16Cpu`]: the CPU reference with its convolutions in bf16-conv arithmetic, emulated exactly
//! as the CUDA backend's bf16 mode computes them (cuDNN's PSEUDO_BFLOAT16 configuration): both
//! operands rounded to bf16 (round to nearest even, as `cast_f32_to_bf16`), products summed in
//! f32 (the CPU's order), the result rounded to bf16 and widened back to f32. Everything else is
//! `Cpu<f32>`. `ilr check` uses it as the yardstick of bf16 error for the whole training step: it
//! rounds at the same points, on the same inputs, as the GPU.

use crate::backend::cpu::Cpu;
use crate::backend::{Backend, ConvBackwardData, ConvBackwardFilter, ConvForward, Layer};
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

impl Layer for Bf16Cpu {
    type Inner = Cpu<f32>;
    fn inner(&self) -> &Cpu<f32> {
        &self.cpu
    }
    fn name(&self) -> String {
        "cpu-f32/bf16-conv-emulated".into()
    }
    fn conv2d_forward(&self, a: ConvForward<'_, &[f32], &mut [f32]>) {
        let ConvForward { s, x, w, y } = a;
        self.cpu.conv2d_forward(ConvForward { s, x: &rounded(x), w: &rounded(w), y: &mut *y });
        round_in_place(y);
    }
    fn conv2d_backward_data(&self, a: ConvBackwardData<'_, &[f32], &mut [f32]>) {
        let ConvBackwardData { s, dy, w, dx } = a;
        self.cpu.conv2d_backward_data(ConvBackwardData { s, dy: &rounded(dy), w: &rounded(w), dx: &mut *dx });
        round_in_place(dx);
    }
    fn conv2d_backward_filter(&self, a: ConvBackwardFilter<'_, &[f32], &mut [f32]>) {
        let ConvBackwardFilter { s, x, dy, dw } = a;
        self.cpu.conv2d_backward_filter(ConvBackwardFilter {
            s,
            x: &rounded(x),
            dy: &rounded(dy),
            dw: &mut *dw,
        });
        round_in_place(dw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ConvShape;

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
        Backend::conv2d_forward(&Bf16Cpu::new(), ConvForward { s: &s, x: &[x], w: &[w], y: &mut y });
        // bf16(x) = 1 + 2^-7; 3·(1 + 2^-7) = 3 + 3·2^-7, which bf16 rounds to 3 + 2^-5.
        assert_eq!(y[0], 3.0 + 1.0 / 32.0);
    }
}
