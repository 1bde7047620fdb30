//! Shapes of the ops in [`super::Backend`], with the derived sizes each op needs.

use serde::{Deserialize, Serialize};

/// A 2-D convolution with square kernel, no bias, no dilation, no groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvShape {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvShape {
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.kernel) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.kernel) / self.stride + 1
    }
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }
    pub fn w_len(&self) -> usize {
        self.c_out * self.c_in * self.kernel * self.kernel
    }
    /// Multiply-adds of the forward pass (each of the backward passes costs the same).
    pub fn macs(&self) -> usize {
        self.y_len() * self.c_in * self.kernel * self.kernel
    }
}

/// BatchNorm over N·HW values per channel, with an optional fused ReLU after the affine map.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BnShape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub eps: f64,
    /// Running-statistics momentum m: running = (1−m)·running + m·batch (PyTorch's convention).
    pub momentum: f64,
    pub relu: bool,
}

impl BnShape {
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parameter-free (option-A) shortcut: subsample by `stride`, zero-pad channels c_in → c_out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortcutShape {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub stride: usize,
}

impl ShortcutShape {
    pub fn out_h(&self) -> usize {
        self.h.div_ceil(self.stride)
    }
    pub fn out_w(&self) -> usize {
        self.w.div_ceil(self.stride)
    }
    /// First output channel that holds input channel 0.
    pub fn channel_offset(&self) -> usize {
        (self.c_out - self.c_in) / 2
    }
}

/// Global average pooling of [n][c][hw] to [n][c].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolShape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

/// A linear layer on a batch: x [n][inp] → y [n][out], params = [W (out×inp) | b (out)].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearShape {
    pub n: usize,
    pub inp: usize,
    pub out: usize,
}

/// Softmax cross-entropy on a batch of n rows of `classes` logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossShape {
    pub n: usize,
    pub classes: usize,
}
