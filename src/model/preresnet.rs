//! A pre-activation ResNet for CIFAR on any [`Backend`]: buffers allocated once, forward and backward
//! written out layer by layer.
//!
//! Block (He et al. 2016, pre-activation): a = ReLU(BN1(x)); h = conv1(a); h2 = ReLU(BN2(h));
//! out = conv2(h2) + shortcut, where shortcut is x (identity), option-A(x), or BN(conv1×1(a)).
//! Head: ReLU(BN(stream)) → global average pool → linear.

use super::config::ModelConfig;
use super::layout::{BlockLayout, BnLayout, Layout, ShortcutLayout};
use crate::backend::{
    AddAssign, Backend, BnBackward, BnEval, BnShape, BnTrain, ConvBackwardData, ConvBackwardFilter,
    ConvForward, ConvShape, LinearBackward, LinearForward, LinearShape, LossShape, LossSums, PoolBackward,
    PoolForward, PoolShape, Real, ShortcutBackward, ShortcutForward, ShortcutShape, SoftmaxXent,
    SoftmaxXentEval,
};
use anyhow::{bail, Result};
use num_traits::{One, Zero};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::ops::Range;

/// Buffers of one block's forward pass (kept for the backward pass).
struct BlockActs<B: Backend> {
    a: B::Buf,
    h: B::Buf,
    h2: B::Buf,
    out: B::Buf,
    saved1: B::Buf,
    saved2: B::Buf,
    /// Option-A output, or the projection BN's output.
    shortcut_out: Option<B::Buf>,
    /// Projection conv output and its BN's saved statistics.
    projection: Option<(B::Buf, B::Buf)>,
}

/// Scratch gradients, sized for the largest activation and reused by every block.
struct Grads<B: Backend> {
    stream: [B::Buf; 2],
    a: B::Buf,
    h: B::Buf,
    h2: B::Buf,
    head: B::Buf,
    pooled: B::Buf,
    logits: B::Buf,
}

pub struct PreResNet<B: Backend> {
    pub cfg: ModelConfig,
    pub layout: Layout,
    /// Batch size every buffer is sized for.
    pub batch: usize,
    /// All parameters, tiled as `layout.tensors` says.
    pub params: B::Buf,
    /// ∇L for every parameter (frozen ones included), same tiling. Overwritten by each backward.
    pub grads: B::Buf,
    /// Running [mean | var] of every BN.
    pub bn_state: B::Buf,
    input: B::Buf,
    labels: B::Labels,
    stem_out: B::Buf,
    blocks: Vec<BlockActs<B>>,
    head: B::Buf,
    head_saved: B::Buf,
    pooled: B::Buf,
    logits: B::Buf,
    g: Grads<B>,
}

/// A view of a whole buffer.
fn all<'a, B: Backend>(be: &'a B, b: &'a B::Buf) -> B::View<'a> {
    be.view(b, 0..be.len(b))
}

fn all_mut<'a, B: Backend>(be: &'a B, b: &'a mut B::Buf) -> B::ViewMut<'a> {
    let n = be.len(b);
    be.view_mut(b, 0..n)
}

impl<B: Backend> PreResNet<B> {
    /// Allocate every buffer for batches of `batch` images of `in_channels`×`image_size`².
    pub fn new(
        be: &B,
        cfg: &ModelConfig,
        in_channels: usize,
        image_size: usize,
        classes: usize,
        batch: usize,
    ) -> Result<Self> {
        cfg.validate()?;
        if batch < 2 {
            bail!("batch size {batch} is too small: BatchNorm needs at least 2 samples per batch");
        }
        if image_size < 4 {
            bail!("image size {image_size} is too small for three stages (need at least 4 pixels)");
        }
        let layout = Layout::new(cfg, in_channels, image_size, classes);
        let n = batch;
        let mut blocks = Vec::with_capacity(layout.blocks.len());
        let mut max_act = n * in_channels * image_size * image_size;
        for bl in &layout.blocks {
            let in_len = n * bl.c_in * bl.size_in * bl.size_in;
            let out_len = n * bl.c_out * bl.size_out() * bl.size_out();
            max_act = max_act.max(in_len).max(out_len);
            let shortcut_out = match bl.shortcut {
                ShortcutLayout::Identity => None,
                _ => Some(be.alloc(out_len)?),
            };
            let projection = match bl.shortcut {
                ShortcutLayout::Projection { .. } => Some((be.alloc(out_len)?, be.alloc(2 * bl.c_out)?)),
                _ => None,
            };
            blocks.push(BlockActs {
                a: be.alloc(in_len)?,
                h: be.alloc(out_len)?,
                h2: be.alloc(out_len)?,
                out: be.alloc(out_len)?,
                saved1: be.alloc(2 * bl.c_in)?,
                saved2: be.alloc(2 * bl.c_out)?,
                shortcut_out,
                projection,
            });
        }
        let widths = cfg.stage_widths();
        let stem_len = n * widths[0] * image_size * image_size;
        max_act = max_act.max(stem_len);
        let last_len = Self::stream_len_after(&layout, n);
        let g = Grads {
            stream: [be.alloc(max_act)?, be.alloc(max_act)?],
            a: be.alloc(max_act)?,
            h: be.alloc(max_act)?,
            h2: be.alloc(max_act)?,
            head: be.alloc(last_len)?,
            pooled: be.alloc(n * layout.features)?,
            logits: be.alloc(n * classes)?,
        };
        Ok(Self {
            cfg: cfg.clone(),
            params: be.alloc(layout.num_params)?,
            grads: be.alloc(layout.num_params)?,
            bn_state: be.alloc(layout.num_bn_state)?,
            input: be.alloc(n * in_channels * image_size * image_size)?,
            labels: be.alloc_labels(n)?,
            stem_out: be.alloc(stem_len)?,
            blocks,
            head: be.alloc(last_len)?,
            head_saved: be.alloc(2 * layout.features)?,
            pooled: be.alloc(n * layout.features)?,
            logits: be.alloc(n * classes)?,
            g,
            layout,
            batch,
        })
    }

    fn stream_len_after(layout: &Layout, n: usize) -> usize {
        let size = layout.blocks.last().map_or(layout.image_size, |b| b.size_out());
        n * layout.features * size * size
    }

    /// Initial parameters, from `seed`: conv weights Kaiming-normal N(0, 2/fan_in); BN γ = 1, β = 0;
    /// linear W and b uniform in ±1/sqrt(fan_in) (PyTorch's nn.Linear default). Running stats
    /// start at mean 0, var 1. Drawn in f64, so f32 and f64 backends start from the same values.
    /// Then `model.init_norm` and `model.init_scale` rescale the scale-invariant groups (see
    /// [`rescale_init`]).
    pub fn init(&mut self, be: &B, seed: u64) -> Result<()> {
        let mut host = init_params(&self.layout, seed);
        rescale_init(&self.layout, &self.cfg, &mut host)?;
        let host: Vec<B::Elem> = host.into_iter().map(B::Elem::from_f64).collect();
        be.upload(&host, &mut self.params)?;
        let mut state = vec![B::Elem::zero(); self.layout.num_bn_state];
        for bn in self.all_bns() {
            for v in &mut state[bn.state_offset + bn.channels..bn.state_offset + 2 * bn.channels] {
                *v = B::Elem::one();
            }
        }
        be.upload(&state, &mut self.bn_state)
    }

    /// Every BatchNorm of the net, in forward order.
    pub fn all_bns(&self) -> Vec<BnLayout> {
        let mut v = Vec::new();
        for bl in &self.layout.blocks {
            v.push(bl.bn1);
            v.push(bl.bn2);
            if let ShortcutLayout::Projection { bn, .. } = bl.shortcut {
                v.push(bn);
            }
        }
        v.push(self.layout.bn_final);
        v
    }

    /// Load a batch: `images` NCHW (exactly `batch` images), `labels` one per image.
    pub fn set_batch(&mut self, be: &B, images: &[B::Elem], labels: &[u32]) -> Result<()> {
        be.upload(images, &mut self.input)?;
        be.upload_labels(labels, &mut self.labels)
    }

    fn bn_shape(&self, bn: &BnLayout, size: usize, relu: bool) -> BnShape {
        BnShape {
            n: self.batch,
            c: bn.channels,
            hw: size * size,
            eps: self.cfg.bn_eps,
            momentum: self.cfg.bn_momentum,
            relu,
        }
    }

    fn conv_shape(&self, c_in: usize, c_out: usize, size: usize, kernel: usize, stride: usize) -> ConvShape {
        ConvShape { n: self.batch, c_in, h: size, w: size, c_out, kernel, stride, pad: kernel / 2 }
    }

    fn tensor_range(&self, t: usize) -> Range<usize> {
        self.layout.tensors[t].range()
    }

    fn state_range(bn: &BnLayout) -> Range<usize> {
        bn.state_offset..bn.state_offset + 2 * bn.channels
    }

    /// BatchNorm forward in training mode (batch statistics) or eval mode (running statistics).
    #[allow(clippy::too_many_arguments)]
    fn bn_forward(
        be: &B,
        s: &BnShape,
        train: bool,
        x: &B::Buf,
        (params, affine): (&B::Buf, Range<usize>),
        state: &mut B::Buf,
        state_range: Range<usize>,
        saved: &mut B::Buf,
        y: &mut B::Buf,
    ) {
        let affine = be.view(params, affine);
        if train {
            be.batchnorm_forward_train(BnTrain {
                s,
                x: all(be, x),
                affine,
                running: be.view_mut(state, state_range),
                saved: all_mut(be, saved),
                y: all_mut(be, y),
            });
        } else {
            be.batchnorm_forward_eval(BnEval {
                s,
                x: all(be, x),
                affine,
                running: be.view(state, state_range),
                y: all_mut(be, y),
            });
        }
    }

    /// Forward pass on the loaded batch; `train` selects batch statistics (and updates the running
    /// ones) or running statistics. Leaves the logits in place for [`Self::loss_and_backward`].
    pub fn forward(&mut self, be: &B, train: bool) {
        let l = &self.layout;
        let s = self.conv_shape(l.in_channels, self.cfg.stage_widths()[0], l.image_size, 3, 1);
        be.conv2d_forward(ConvForward {
            s: &s,
            x: all(be, &self.input),
            w: be.view(&self.params, self.tensor_range(l.stem)),
            y: all_mut(be, &mut self.stem_out),
        });
        for i in 0..self.blocks.len() {
            let bl = self.layout.blocks[i];
            self.block_forward(be, i, &bl, train);
        }
        let last = self.blocks.last().map_or(&self.stem_out, |b| &b.out);
        let size = self.layout.blocks.last().map_or(self.layout.image_size, |b| b.size_out());
        let bn = self.layout.bn_final;
        let s = self.bn_shape(&bn, size, true);
        Self::bn_forward(
            be,
            &s,
            train,
            last,
            (&self.params, self.layout.bn_affine_range(&bn)),
            &mut self.bn_state,
            Self::state_range(&bn),
            &mut self.head_saved,
            &mut self.head,
        );
        let ps = PoolShape { n: self.batch, c: self.layout.features, hw: size * size };
        be.avgpool_forward(PoolForward { s: &ps, x: all(be, &self.head), y: all_mut(be, &mut self.pooled) });
        let fc = be.view(&self.params, self.layout.fc_range());
        be.linear_forward(LinearForward {
            s: LinearShape { n: self.batch, inp: self.layout.features, out: self.layout.classes },
            x: all(be, &self.pooled),
            params: fc,
            y: all_mut(be, &mut self.logits),
        });
    }

    fn block_forward(&mut self, be: &B, i: usize, bl: &BlockLayout, train: bool) {
        let (n_in, n_out) = (bl.size_in, bl.size_out());
        let s_bn1 = self.bn_shape(&bl.bn1, n_in, true);
        let s_bn2 = self.bn_shape(&bl.bn2, n_out, true);
        let s_c1 = self.conv_shape(bl.c_in, bl.c_out, n_in, 3, bl.stride);
        let s_c2 = self.conv_shape(bl.c_out, bl.c_out, n_out, 3, 1);
        let (r_c1, r_c2) = (self.tensor_range(bl.conv1), self.tensor_range(bl.conv2));
        let s_a = self.option_a_shape(bl);
        let (s_proj, s_bn_proj) = self.projection_shapes(bl);
        let (prev, rest) = self.blocks.split_at_mut(i);
        let x = prev.last().map_or(&self.stem_out, |b| &b.out);
        let act = &mut rest[0];
        let p = &self.params;
        let aff = |bn: &BnLayout| (p, self.layout.bn_affine_range(bn));
        Self::bn_forward(
            be,
            &s_bn1,
            train,
            x,
            aff(&bl.bn1),
            &mut self.bn_state,
            Self::state_range(&bl.bn1),
            &mut act.saved1,
            &mut act.a,
        );
        be.conv2d_forward(ConvForward {
            s: &s_c1,
            x: all(be, &act.a),
            w: be.view(p, r_c1),
            y: all_mut(be, &mut act.h),
        });
        Self::bn_forward(
            be,
            &s_bn2,
            train,
            &act.h,
            aff(&bl.bn2),
            &mut self.bn_state,
            Self::state_range(&bl.bn2),
            &mut act.saved2,
            &mut act.h2,
        );
        be.conv2d_forward(ConvForward {
            s: &s_c2,
            x: all(be, &act.h2),
            w: be.view(p, r_c2),
            y: all_mut(be, &mut act.out),
        });
        match bl.shortcut {
            ShortcutLayout::Identity => {
                be.add_assign(AddAssign { y: all_mut(be, &mut act.out), x: all(be, x) })
            }
            ShortcutLayout::OptionA => {
                let sc = act.shortcut_out.as_mut().expect("allocated for option A");
                be.shortcut_forward(ShortcutForward { s: &s_a, x: all(be, x), y: all_mut(be, sc) });
                be.add_assign(AddAssign { y: all_mut(be, &mut act.out), x: all(be, sc) });
            }
            ShortcutLayout::Projection { conv, bn } => {
                let (pc, saved) = act.projection.as_mut().expect("allocated for projection");
                let sc = act.shortcut_out.as_mut().expect("allocated for projection");
                be.conv2d_forward(ConvForward {
                    s: &s_proj,
                    x: all(be, &act.a),
                    w: be.view(p, self.layout.tensors[conv].range()),
                    y: all_mut(be, pc),
                });
                Self::bn_forward(
                    be,
                    &s_bn_proj,
                    train,
                    pc,
                    aff(&bn),
                    &mut self.bn_state,
                    Self::state_range(&bn),
                    saved,
                    sc,
                );
                be.add_assign(AddAssign { y: all_mut(be, &mut act.out), x: all(be, sc) });
            }
        }
    }

    /// The projection shortcut's 1×1 strided conv and its BN (no ReLU).
    fn projection_shapes(&self, bl: &BlockLayout) -> (ConvShape, BnShape) {
        let bn = match bl.shortcut {
            ShortcutLayout::Projection { bn, .. } => bn,
            _ => bl.bn2,
        };
        (
            self.conv_shape(bl.c_in, bl.c_out, bl.size_in, 1, bl.stride),
            self.bn_shape(&bn, bl.size_out(), false),
        )
    }

    fn option_a_shape(&self, bl: &BlockLayout) -> ShortcutShape {
        ShortcutShape {
            n: self.batch,
            c_in: bl.c_in,
            h: bl.size_in,
            w: bl.size_in,
            c_out: bl.c_out,
            stride: bl.stride,
        }
    }

    /// Mean cross-entropy of the last forward pass and, through the whole net, ∇L into `grads`.
    /// Must follow a training-mode [`Self::forward`].
    pub fn loss_and_backward(&mut self, be: &B) -> Result<LossSums> {
        let l = &self.layout;
        let (n, classes, feat) = (self.batch, l.classes, l.features);
        let sums = be.softmax_cross_entropy(SoftmaxXent {
            s: LossShape { n, classes },
            logits: all(be, &self.logits),
            labels: &self.labels,
            dlogits: all_mut(be, &mut self.g.logits),
        })?;
        let size = l.blocks.last().map_or(l.image_size, |b| b.size_out());
        let bn = l.bn_final;
        let s = self.bn_shape(&bn, size, true);
        let p = &self.params;
        let gr = &mut self.grads;
        be.linear_backward(LinearBackward {
            s: LinearShape { n, inp: feat, out: classes },
            x: all(be, &self.pooled),
            params: be.view(p, l.fc_range()),
            dy: all(be, &self.g.logits),
            dx: all_mut(be, &mut self.g.pooled),
            d_params: be.view_mut(gr, l.fc_range()),
        });
        let hw = size * size;
        be.avgpool_backward(PoolBackward {
            s: &PoolShape { n, c: feat, hw },
            dy: all(be, &self.g.pooled),
            dx: all_mut(be, &mut self.g.head),
        });
        let last = self.blocks.last().map_or(&self.stem_out, |b| &b.out);
        let len = n * feat * hw;
        be.batchnorm_backward(BnBackward {
            s: &s,
            x: all(be, last),
            y: all(be, &self.head),
            dy: all(be, &self.g.head),
            affine: be.view(p, l.bn_affine_range(&bn)),
            saved: all(be, &self.head_saved),
            dx: be.view_mut(&mut self.g.stream[0], 0..len),
            d_affine: be.view_mut(gr, l.bn_affine_range(&bn)),
        });
        let mut cur = 0;
        for i in (0..self.blocks.len()).rev() {
            let bl = self.layout.blocks[i];
            self.block_backward(be, i, &bl, cur);
            cur = 1 - cur;
        }
        let l = &self.layout;
        let s = self.conv_shape(l.in_channels, self.cfg.stage_widths()[0], l.image_size, 3, 1);
        be.conv2d_backward_filter(ConvBackwardFilter {
            s: &s,
            x: all(be, &self.input),
            dy: be.view(&self.g.stream[cur], 0..s.y_len()),
            dw: be.view_mut(&mut self.grads, l.tensors[l.stem].range()),
        });
        Ok(sums)
    }

    /// Backward through block `i`: reads dL/d(out) from `g.stream[cur]`, writes dL/d(x) to the other.
    fn block_backward(&mut self, be: &B, i: usize, bl: &BlockLayout, cur: usize) {
        let (n_in, n_out) = (bl.size_in, bl.size_out());
        let s_bn1 = self.bn_shape(&bl.bn1, n_in, true);
        let s_bn2 = self.bn_shape(&bl.bn2, n_out, true);
        let s_c1 = self.conv_shape(bl.c_in, bl.c_out, n_in, 3, bl.stride);
        let s_c2 = self.conv_shape(bl.c_out, bl.c_out, n_out, 3, 1);
        let (in_len, out_len) = (s_c1.x_len(), s_c1.y_len());
        let s_a = self.option_a_shape(bl);
        let (s_proj, s_bn_proj) = self.projection_shapes(bl);
        let l = &self.layout;
        let p = &self.params;
        let gr = &mut self.grads;
        let g = &mut self.g;
        let x = if i == 0 { &self.stem_out } else { &self.blocks[i - 1].out };
        let act = &self.blocks[i];
        let [s0, s1] = &mut g.stream;
        let (dout, dx) = if cur == 0 { (&*s0, s1) } else { (&*s1, s0) };
        let dout = be.view(dout, 0..out_len);
        let aff = |bn: &BnLayout| l.bn_affine_range(bn);

        be.conv2d_backward_filter(ConvBackwardFilter {
            s: &s_c2,
            x: all(be, &act.h2),
            dy: dout,
            dw: be.view_mut(gr, l.tensors[bl.conv2].range()),
        });
        be.conv2d_backward_data(ConvBackwardData {
            s: &s_c2,
            dy: dout,
            w: be.view(p, l.tensors[bl.conv2].range()),
            dx: be.view_mut(&mut g.h2, 0..out_len),
        });
        be.batchnorm_backward(BnBackward {
            s: &s_bn2,
            x: all(be, &act.h),
            y: all(be, &act.h2),
            dy: be.view(&g.h2, 0..out_len),
            affine: be.view(p, aff(&bl.bn2)),
            saved: all(be, &act.saved2),
            dx: be.view_mut(&mut g.h, 0..out_len),
            d_affine: be.view_mut(gr, aff(&bl.bn2)),
        });
        be.conv2d_backward_filter(ConvBackwardFilter {
            s: &s_c1,
            x: all(be, &act.a),
            dy: be.view(&g.h, 0..out_len),
            dw: be.view_mut(gr, l.tensors[bl.conv1].range()),
        });
        be.conv2d_backward_data(ConvBackwardData {
            s: &s_c1,
            dy: be.view(&g.h, 0..out_len),
            w: be.view(p, l.tensors[bl.conv1].range()),
            dx: be.view_mut(&mut g.a, 0..in_len),
        });
        if let ShortcutLayout::Projection { conv, bn } = bl.shortcut {
            // dL/da gains the projection's share: BN backward into g.h, conv backward into g.h2.
            let (pc, saved) = act.projection.as_ref().expect("allocated for projection");
            let sc = act.shortcut_out.as_ref().expect("allocated for projection");
            be.batchnorm_backward(BnBackward {
                s: &s_bn_proj,
                x: all(be, pc),
                y: all(be, sc),
                dy: dout,
                affine: be.view(p, aff(&bn)),
                saved: all(be, saved),
                dx: be.view_mut(&mut g.h, 0..out_len),
                d_affine: be.view_mut(gr, aff(&bn)),
            });
            be.conv2d_backward_filter(ConvBackwardFilter {
                s: &s_proj,
                x: all(be, &act.a),
                dy: be.view(&g.h, 0..out_len),
                dw: be.view_mut(gr, l.tensors[conv].range()),
            });
            be.conv2d_backward_data(ConvBackwardData {
                s: &s_proj,
                dy: be.view(&g.h, 0..out_len),
                w: be.view(p, l.tensors[conv].range()),
                dx: be.view_mut(&mut g.h2, 0..in_len),
            });
            be.add_assign(AddAssign { y: be.view_mut(&mut g.a, 0..in_len), x: be.view(&g.h2, 0..in_len) });
        }
        be.batchnorm_backward(BnBackward {
            s: &s_bn1,
            x: all(be, x),
            y: all(be, &act.a),
            dy: be.view(&g.a, 0..in_len),
            affine: be.view(p, aff(&bl.bn1)),
            saved: all(be, &act.saved1),
            dx: be.view_mut(dx, 0..in_len),
            d_affine: be.view_mut(gr, aff(&bl.bn1)),
        });
        match bl.shortcut {
            ShortcutLayout::Identity => be.add_assign(AddAssign { y: be.view_mut(dx, 0..in_len), x: dout }),
            ShortcutLayout::OptionA => be.shortcut_backward_acc(ShortcutBackward {
                s: &s_a,
                dy: dout,
                dx: be.view_mut(dx, 0..in_len),
            }),
            ShortcutLayout::Projection { .. } => {}
        }
    }

    /// Loss and predictions of the last eval-mode forward pass, over the first `count` samples.
    pub fn eval_loss(&self, be: &B, count: usize, predictions: &mut [u32]) -> Result<LossSums> {
        let classes = self.layout.classes;
        be.softmax_cross_entropy_eval(SoftmaxXentEval {
            s: LossShape { n: count, classes },
            logits: be.view(&self.logits, 0..count * classes),
            labels: &self.labels,
            predictions,
        })
    }

    /// Copy of the logits of the last forward pass.
    pub fn logits_host(&self, be: &B) -> Result<Vec<B::Elem>> {
        let mut v = vec![B::Elem::zero(); be.len(&self.logits)];
        be.download(&self.logits, &mut v)?;
        Ok(v)
    }
}

/// Rescale each scale-invariant group of the initial `params`: to its `init_norm` target when one is
/// set, then by `init_scale`. Other tensors are untouched, so the function at step 0 is the same.
pub fn rescale_init(layout: &Layout, cfg: &ModelConfig, params: &mut [f64]) -> Result<()> {
    let norms = layout.group_norms(params);
    for (g, group) in layout.groups.iter().enumerate() {
        let to_norm = match &cfg.init_norm {
            Some(n) => n.target(g, layout.groups.len())? / norms[g],
            None => 1.0,
        };
        let factor = to_norm * cfg.init_scale;
        if factor != 1.0 {
            for &t in &group.members {
                params[layout.tensors[t].range()].iter_mut().for_each(|v| *v *= factor);
            }
        }
    }
    Ok(())
}

/// Host-side initial parameters in f64, deterministic from `seed` (see [`PreResNet::init`]), before
/// [`rescale_init`].
pub fn init_params(layout: &Layout, seed: u64) -> Vec<f64> {
    use super::layout::TensorKind::*;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![0.0; layout.num_params];
    for t in &layout.tensors {
        let dst = &mut out[t.range()];
        match t.kind {
            ConvWeight => {
                let fan_in: usize = t.shape[1..].iter().product();
                let normal = Normal::new(0.0, (2.0 / fan_in as f64).sqrt()).expect("positive std");
                dst.iter_mut().for_each(|v| *v = normal.sample(&mut rng));
            }
            BnWeight => dst.fill(1.0),
            BnBias => dst.fill(0.0),
            LinearWeight | LinearBias => {
                let bound = 1.0 / (layout.features as f64).sqrt();
                dst.iter_mut().for_each(|v| *v = rng.gen_range(-bound..bound));
            }
        }
    }
    out
}
