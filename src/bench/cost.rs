//! The two numbers of every benchmarked kernel: the bytes it moves and the FLOPs it does, as the
//! kernel comments in kernels/*.cu state them (see docs/KERNELS.md). One place, shared by `ilr bench`,
//! the criterion benches and docs/PERFORMANCE.md, so GB/s figures always mean the same thing.
//!
//! `bytes` is the traffic of the split (two-pass) kernels, the ones that work at every size;
//! `min_bytes` is the compulsory traffic (every input read once, every output written once), the
//! floor a fused kernel with an on-chip cache could reach. FLOPs count adds, multiplies and compares
//! per element, one each.

use crate::backend::{BnShape, ConvShape};
use crate::model::layout::ShortcutLayout;
use crate::model::{Layout, ModelConfig};
use serde::{Deserialize, Serialize};

const F32: u64 = 4;

/// Bytes moved and floating-point operations done by one call of a kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub bytes: u64,
    pub min_bytes: u64,
    pub flops: u64,
}

impl Cost {
    fn per_elem(n: usize, bytes: u64, min_bytes: u64, flops: u64) -> Self {
        let n = n as u64;
        Cost { bytes: n * bytes, min_bytes: n * min_bytes, flops: n * flops }
    }
}

/// A device copy of `bytes`: read once, written once.
pub fn copy(bytes: usize) -> Cost {
    let b = 2 * bytes as u64;
    Cost { bytes: b, min_bytes: b, flops: 0 }
}

/// BatchNorm training forward. Two passes: read x for the statistics, read x again and write y,
/// 12 B/elem (8 with one pass). Statistics: x−K, add, square, add; map: sub, mul, add (+ max).
pub fn bn_forward_train(s: &BnShape) -> Cost {
    Cost::per_elem(s.len(), 3 * F32, 2 * F32, 7 + s.relu as u64)
}

/// BatchNorm backward. Two passes: read x, y (the ReLU mask), dy for the sums, then read them again
/// and write dx: 28 B/elem with ReLU, 20 without (one pass: 16 and 12). Sums: sub, mul, mul, add,
/// add; dx: sub, mul, sub, mul, sub, mul.
pub fn bn_backward(s: &BnShape) -> Cost {
    let reads = if s.relu { 3 } else { 2 };
    Cost::per_elem(s.len(), (2 * reads + 1) * F32, (reads + 1) * F32, 11 + s.relu as u64)
}

/// The fused SGD step over `params` elements: read w, g, v, write w, v (20 B/param); g' = g + λw,
/// v = γv + g', w −= ηv (6 FLOPs). With the statistics: + Σw², Σg², Σd², Σw·d in the same pass
/// (d = w_new − w: 9 FLOPs more, no extra bytes beyond 32 per 65,536-element chunk).
pub fn sgd_step(params: usize, with_sums: bool) -> Cost {
    let flops = if with_sums { 15 } else { 6 };
    Cost::per_elem(params, 5 * F32, 5 * F32, flops)
}

/// The fused AdamW step over `params` elements: read w, g, m, v, write w, m, v (28 B/param);
/// w(1−ηλ), m += (1−β₁)(g − m), v = β₂v + (1−β₂)g², w −= s·m/(√v/c + ε): 13 FLOPs with the
/// square root and the division counted as one each.
pub fn adamw_step(params: usize) -> Cost {
    Cost::per_elem(params, 7 * F32, 7 * F32, 13)
}

/// The fused Lion step over `params` elements: read w, g, m, write w, m (20 B/param);
/// c = β₁m + (1−β₁)g, w = w(1−ηλ) − η·sign(c), m = β₂m + (1−β₂)g: 10 FLOPs.
pub fn lion_step(params: usize) -> Cost {
    Cost::per_elem(params, 5 * F32, 5 * F32, 10)
}

/// Which buffers a per-segment reduction reads (reduce.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// Σw² per segment (`multi_sqnorm`; torch._foreach_norm's work): 4 B/elem, 2 FLOPs.
    SqNorm,
    /// [Σw², Σg², Σd², Σw·d] with d = w_next − w (`multi_sums4` with all three buffers): 12 B/elem,
    /// 9 FLOPs.
    Sums4,
}

impl Reduction {
    pub fn name(self) -> &'static str {
        match self {
            Reduction::SqNorm => "reduce_sqnorm",
            Reduction::Sums4 => "reduce_sums4",
        }
    }
}

pub fn reduction(r: Reduction, elems: usize) -> Cost {
    match r {
        Reduction::SqNorm => Cost::per_elem(elems, F32, F32, 2),
        Reduction::Sums4 => Cost::per_elem(elems, 3 * F32, 3 * F32, 9),
    }
}

// ---- shapes of the nets we benchmark --------------------------------------------------------------

/// The CIFAR input: 3×32×32 images, 10 classes.
pub const IN_CHANNELS: usize = 3;
pub const IMAGE_SIZE: usize = 32;
pub const CLASSES: usize = 10;

/// A benchmarked net: PreResNet-`depth` with width multiplier `width` on `size`×`size`×3 images and
/// 10 classes; option-A shortcuts, trained BN affine and last layer (the ordinary net: the paper's
/// scale-invariant variant runs the same ops and only skips those tensors in the SGD step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Net {
    pub depth: usize,
    pub width: f64,
    pub size: usize,
}

impl Net {
    /// PreResNet-`depth`, width 1, on CIFAR's 32×32 images: the nets of the paper-scale recipes.
    pub const fn cifar(depth: usize) -> Self {
        Net { depth, width: 1.0, size: IMAGE_SIZE }
    }

    /// The net of the tiny recipes (experiments/*.tiny.toml): PreResNet-8 ×0.5 on `size`×`size`
    /// synthetic images.
    pub const fn tiny(size: usize) -> Self {
        Net { depth: 8, width: 0.5, size }
    }

    pub fn config(&self) -> ModelConfig {
        ModelConfig { depth: self.depth, width: self.width, ..ModelConfig::default() }
    }

    pub fn layout(&self) -> Layout {
        Layout::new(&self.config(), IN_CHANNELS, self.size, CLASSES)
    }

    /// "preresnet20 b128 32x32", "preresnet8x0.5 b32 8x8": the shape label of a training step at
    /// `batch` (peers/pytorch/bench_torch.py writes the same).
    pub fn step_label(&self, batch: usize) -> String {
        format!("{} b{batch} {}x{}", self.config().label(), self.size, self.size)
    }
}

/// The PreResNet-`depth` we benchmark the kernels on: [`Net::cifar`].
pub fn net_config(depth: usize) -> ModelConfig {
    Net::cifar(depth).config()
}

pub fn net_layout(depth: usize) -> Layout {
    Net::cifar(depth).layout()
}

/// Every BatchNorm of one forward pass at `batch`, in order, derived from the layout.
pub fn bn_shapes(layout: &Layout, cfg: &ModelConfig, batch: usize) -> Vec<BnShape> {
    let bn = |c: usize, size: usize, relu: bool| BnShape {
        n: batch,
        c,
        hw: size * size,
        eps: cfg.bn_eps,
        momentum: cfg.bn_momentum,
        relu,
    };
    let mut v = Vec::new();
    for b in &layout.blocks {
        v.push(bn(b.c_in, b.size_in, true));
        v.push(bn(b.c_out, b.size_out(), true));
        if let ShortcutLayout::Projection { .. } = b.shortcut {
            v.push(bn(b.c_out, b.size_out(), false));
        }
    }
    let last = layout.blocks.last().map_or(layout.image_size, |b| b.size_out());
    v.push(bn(layout.features, last, true));
    v
}

/// The distinct BatchNorm shapes over several nets, with how many times each occurs per forward
/// pass in each net (same order as `depths`).
pub fn distinct_bn_shapes(depths: &[usize], batch: usize) -> Vec<(BnShape, Vec<usize>)> {
    let mut out: Vec<(BnShape, Vec<usize>)> = Vec::new();
    for (i, &d) in depths.iter().enumerate() {
        let cfg = net_config(d);
        for s in bn_shapes(&net_layout(d), &cfg, batch) {
            match out.iter_mut().find(|(t, _)| *t == s) {
                Some((_, counts)) => counts[i] += 1,
                None => {
                    let mut counts = vec![0; depths.len()];
                    counts[i] = 1;
                    out.push((s, counts));
                }
            }
        }
    }
    out
}

/// Every convolution of one forward pass at `batch`: (shape, whether its input gradient is needed —
/// not for the stem, whose input is the data).
pub fn conv_shapes(layout: &Layout, batch: usize) -> Vec<(ConvShape, bool)> {
    let conv = |c_in, c_out, size, kernel, stride| ConvShape {
        n: batch,
        c_in,
        h: size,
        w: size,
        c_out,
        kernel,
        stride,
        pad: kernel / 2,
    };
    let stem_out = layout.tensors[layout.stem].shape[0];
    let mut v = vec![(conv(layout.in_channels, stem_out, layout.image_size, 3, 1), false)];
    for b in &layout.blocks {
        v.push((conv(b.c_in, b.c_out, b.size_in, 3, b.stride), true));
        v.push((conv(b.c_out, b.c_out, b.size_out(), 3, 1), true));
        if let ShortcutLayout::Projection { .. } = b.shortcut {
            v.push((conv(b.c_in, b.c_out, b.size_in, 1, b.stride), true));
        }
    }
    v
}

/// FLOPs of one training step (forward + backward; a multiply-add is 2 FLOPs): three GEMM-like
/// passes per conv (forward, input gradient, weight gradient; two for the stem) and the linear layer.
/// The elementwise ops (BN, ReLU, adds) are ~1% of this and left out.
pub fn train_step_flops(layout: &Layout, batch: usize) -> u64 {
    let convs: u64 =
        conv_shapes(layout, batch).iter().map(|(s, dx)| 2 * s.macs() as u64 * if *dx { 3 } else { 2 }).sum();
    let linear = 2 * 3 * (batch * layout.features * layout.classes) as u64;
    convs + linear
}

/// Bytes of one training batch as uploaded: f32 images.
pub fn batch_bytes(layout: &Layout, batch: usize) -> usize {
    batch * layout.in_channels * layout.image_size * layout.image_size * F32 as usize
}

/// A readable shape label: "n128 c16 32x32 relu".
pub fn bn_label(s: &BnShape) -> String {
    let side = (s.hw as f64).sqrt().round() as usize;
    let plane = if side * side == s.hw { format!("{side}x{side}") } else { format!("hw{}", s.hw) };
    format!("n{} c{} {plane}{}", s.n, s.c, if s.relu { " relu" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preresnet_bn_shapes_are_three_per_batch_for_every_depth() {
        let shapes = distinct_bn_shapes(&[20, 32, 56], 128);
        let labels: Vec<String> = shapes.iter().map(|(s, _)| bn_label(s)).collect();
        assert_eq!(labels, ["n128 c16 32x32 relu", "n128 c32 16x16 relu", "n128 c64 8x8 relu"]);
        // 2 BNs per block (3n blocks, depth 6n+2) plus the final one: depth − 1 per net.
        for (i, d) in [20, 32, 56].iter().enumerate() {
            let total: usize = shapes.iter().map(|(_, c)| c[i]).sum();
            assert_eq!(total, d - 1);
        }
    }

    #[test]
    fn costs_match_the_kernel_comments() {
        let s = BnShape { n: 2, c: 3, hw: 4, eps: 1e-5, momentum: 0.1, relu: true };
        assert_eq!(bn_forward_train(&s).bytes, 12 * 24);
        assert_eq!(bn_forward_train(&s).min_bytes, 8 * 24);
        assert_eq!(bn_backward(&s).bytes, 28 * 24);
        assert_eq!(bn_backward(&s).min_bytes, 16 * 24);
        let s = BnShape { relu: false, ..s };
        assert_eq!(bn_backward(&s).bytes, 20 * 24);
        assert_eq!(sgd_step(10, true).bytes, 200);
        assert_eq!(reduction(Reduction::Sums4, 10).bytes, 120);
        assert_eq!(copy(100).bytes, 200);
    }

    #[test]
    fn preresnet20_has_the_known_size() {
        let l = net_layout(20);
        // 0.27 M parameters; about 41 MFLOPs per image forward (He et al.), so ~3× that per step.
        assert!((265_000..275_000).contains(&l.num_params), "{}", l.num_params);
        let fwd_per_image = train_step_flops(&l, 1) as f64 / 3.0;
        assert!((75e6..90e6).contains(&fwd_per_image), "{fwd_per_image}");
    }
}
