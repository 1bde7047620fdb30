//! The PreResNet's parameter table and scale-invariant groups, derived from the graph.
//!
//! The layout is pure description: names, shapes and offsets into one flat parameter buffer, and
//! which tensors form scale-invariant groups. [`super::PreResNet`] allocates buffers from it.
//!
//! Groups (Li, Lyu and Arora 2020; ../shared/DESIGN.md): a conv followed directly by a BN is
//! scale-invariant on its own (each block's conv1, each projection conv). The tensors that write into
//! the residual stream — the stem conv, every block's conv2, and a projection shortcut's BN (through
//! γ and β) — are invariant only jointly, for as long as every consumer of the stream is a BN. A
//! projection block consumes the stream only through its first BN, so it ends one stream segment and
//! starts the next. A segment one of whose writers cannot be scaled (a projection BN with fixed γ, β)
//! is not scale-invariant, and its conv2s are reported as not invariant.

use super::config::{ModelConfig, ShortcutKind};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    ConvWeight,
    BnWeight,
    BnBias,
    LinearWeight,
    LinearBias,
}

/// One parameter tensor in the flat buffer; `name` is the equivalent PyTorch state_dict key.
#[derive(Clone, Debug, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub kind: TensorKind,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
    pub trainable: bool,
    /// L(c·w) = L(w) for this tensor alone.
    pub invariant_alone: bool,
    /// The scale-invariant group this tensor belongs to, if any.
    pub group: Option<usize>,
}

impl TensorInfo {
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupInfo {
    pub name: String,
    /// Indices into [`Layout::tensors`].
    pub members: Vec<usize>,
    /// More than one tensor, invariant only together.
    pub joint: bool,
}

/// A BatchNorm: γ and β adjacent in the parameter buffer, running [mean | var] at `state_offset`.
#[derive(Clone, Copy, Debug)]
pub struct BnLayout {
    pub gamma: usize,
    pub channels: usize,
    pub state_offset: usize,
}

#[derive(Clone, Copy, Debug)]
pub enum ShortcutLayout {
    Identity,
    OptionA,
    /// conv tensor index and the BN after it; both read the block's pre-activation.
    Projection {
        conv: usize,
        bn: BnLayout,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct BlockLayout {
    pub c_in: usize,
    pub c_out: usize,
    pub stride: usize,
    /// Input resolution (square).
    pub size_in: usize,
    pub bn1: BnLayout,
    pub conv1: usize,
    pub bn2: BnLayout,
    pub conv2: usize,
    pub shortcut: ShortcutLayout,
}

impl BlockLayout {
    pub fn size_out(&self) -> usize {
        self.size_in.div_ceil(self.stride)
    }
}

#[derive(Clone, Debug)]
pub struct Layout {
    pub tensors: Vec<TensorInfo>,
    pub groups: Vec<GroupInfo>,
    /// Elements in the flat parameter buffer.
    pub num_params: usize,
    /// Elements in the running-statistics buffer (2C per BN).
    pub num_bn_state: usize,
    pub in_channels: usize,
    pub image_size: usize,
    pub classes: usize,
    pub stem: usize,
    pub blocks: Vec<BlockLayout>,
    pub bn_final: BnLayout,
    /// Linear weight; its bias is the next tensor.
    pub fc: usize,
    pub features: usize,
}

struct Builder {
    tensors: Vec<TensorInfo>,
    offset: usize,
    bn_state: usize,
    affine_trained: bool,
}

impl Builder {
    fn push(&mut self, name: String, kind: TensorKind, shape: Vec<usize>, trainable: bool) -> usize {
        let len = shape.iter().product();
        self.tensors.push(TensorInfo {
            name,
            kind,
            shape,
            offset: self.offset,
            len,
            trainable,
            invariant_alone: false,
            group: None,
        });
        self.offset += len;
        self.tensors.len() - 1
    }

    fn conv(&mut self, name: &str, c_out: usize, c_in: usize, k: usize) -> usize {
        self.push(format!("{name}.weight"), TensorKind::ConvWeight, vec![c_out, c_in, k, k], true)
    }

    fn bn(&mut self, name: &str, c: usize) -> BnLayout {
        let gamma = self.push(format!("{name}.weight"), TensorKind::BnWeight, vec![c], self.affine_trained);
        self.push(format!("{name}.bias"), TensorKind::BnBias, vec![c], self.affine_trained);
        let state_offset = self.bn_state;
        self.bn_state += 2 * c;
        BnLayout { gamma, channels: c, state_offset }
    }
}

/// The writers of one residual-stream segment.
#[derive(Default)]
struct Segment {
    members: Vec<usize>,
    scalable: bool,
}

impl Layout {
    /// ‖w‖ of each scale-invariant group's concatenated vector in `params` (the flat buffer), in
    /// group order.
    pub fn group_norms(&self, params: &[f64]) -> Vec<f64> {
        self.groups
            .iter()
            .map(|g| {
                let sq: f64 =
                    g.members.iter().flat_map(|&t| &params[self.tensors[t].range()]).map(|v| v * v).sum();
                sq.sqrt()
            })
            .collect()
    }

    /// Lay out a PreResNet for `in_channels`×`image_size`² inputs and `classes` outputs.
    pub fn new(cfg: &ModelConfig, in_channels: usize, image_size: usize, classes: usize) -> Self {
        let widths = cfg.stage_widths();
        let mut b =
            Builder { tensors: Vec::new(), offset: 0, bn_state: 0, affine_trained: cfg.affine_trained() };
        let stem = b.conv("conv1", widths[0], in_channels, 3);
        let mut segments = vec![Segment { members: vec![stem], scalable: true }];
        let mut blocks = Vec::new();
        let (mut c_in, mut size) = (widths[0], image_size);
        for (s, &c_out) in widths.iter().enumerate() {
            for i in 0..cfg.blocks_per_stage() {
                let name = format!("layer{}.{i}", s + 1);
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                let bn1 = b.bn(&format!("{name}.bn1"), c_in);
                let conv1 = b.conv(&format!("{name}.conv1"), c_out, c_in, 3);
                let bn2 = b.bn(&format!("{name}.bn2"), c_out);
                let conv2 = b.conv(&format!("{name}.conv2"), c_out, c_out, 3);
                b.tensors[conv1].invariant_alone = true;
                let reshapes = stride != 1 || c_in != c_out;
                let shortcut = match (reshapes, cfg.shortcut) {
                    (false, _) => ShortcutLayout::Identity,
                    (true, ShortcutKind::OptionA) => ShortcutLayout::OptionA,
                    (true, ShortcutKind::BnProjection) => {
                        let conv = b.conv(&format!("{name}.shortcut.0"), c_out, c_in, 1);
                        let bn = b.bn(&format!("{name}.shortcut.1"), c_out);
                        b.tensors[conv].invariant_alone = true;
                        // The stream so far feeds only this block's bn1: its segment ends here. The
                        // new one starts with the projection BN's output, scalable through γ and β.
                        let members = if b.affine_trained { vec![bn.gamma, bn.gamma + 1] } else { vec![] };
                        segments.push(Segment { members, scalable: b.affine_trained });
                        ShortcutLayout::Projection { conv, bn }
                    }
                };
                segments.last_mut().expect("at least the stem's segment").members.push(conv2);
                blocks.push(BlockLayout {
                    c_in,
                    c_out,
                    stride,
                    size_in: size,
                    bn1,
                    conv1,
                    bn2,
                    conv2,
                    shortcut,
                });
                size = size.div_ceil(stride);
                c_in = c_out;
            }
        }
        let bn_final = b.bn("bn", c_in);
        let fc_trainable = !cfg.scale_invariant;
        let fc = b.push("fc.weight".into(), TensorKind::LinearWeight, vec![classes, c_in], fc_trainable);
        b.push("fc.bias".into(), TensorKind::LinearBias, vec![classes], fc_trainable);

        let mut layout = Layout {
            tensors: b.tensors,
            groups: Vec::new(),
            num_params: b.offset,
            num_bn_state: b.bn_state,
            in_channels,
            image_size,
            classes,
            stem,
            blocks,
            bn_final,
            fc,
            features: c_in,
        };
        layout.declare_groups(segments);
        layout
    }

    /// Each tensor invariant alone is its own group; each scalable stream segment is a joint group.
    fn declare_groups(&mut self, segments: Vec<Segment>) {
        let singles: Vec<usize> =
            (0..self.tensors.len()).filter(|&t| self.tensors[t].invariant_alone).collect();
        for t in singles {
            self.add_group(self.tensors[t].name.trim_end_matches(".weight").to_string(), vec![t]);
        }
        let n_segments = segments.len();
        for (i, seg) in segments.into_iter().enumerate().filter(|(_, s)| s.scalable && !s.members.is_empty())
        {
            let name = if n_segments == 1 { "stream".to_string() } else { format!("stream{i}") };
            self.add_group(name, seg.members);
        }
    }

    fn add_group(&mut self, name: String, members: Vec<usize>) {
        let id = self.groups.len();
        for &m in &members {
            self.tensors[m].group = Some(id);
        }
        let joint = members.len() > 1;
        self.groups.push(GroupInfo { name, members, joint });
    }

    /// Trained tensors that belong to no scale-invariant group.
    pub fn non_invariant_trained(&self) -> impl Iterator<Item = &TensorInfo> {
        self.tensors.iter().filter(|t| t.trainable && t.group.is_none())
    }

    /// Element range of a BN's [γ | β].
    pub fn bn_affine_range(&self, bn: &BnLayout) -> std::ops::Range<usize> {
        let o = self.tensors[bn.gamma].offset;
        o..o + 2 * bn.channels
    }

    /// Element range of the linear layer's [W | b].
    pub fn fc_range(&self) -> std::ops::Range<usize> {
        let o = self.tensors[self.fc].offset;
        o..o + self.tensors[self.fc].len + self.tensors[self.fc + 1].len
    }

    pub fn tensor_by_name(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(shortcut: ShortcutKind, scale_invariant: bool) -> Layout {
        let cfg = ModelConfig { depth: 14, width: 0.5, shortcut, scale_invariant, ..Default::default() };
        Layout::new(&cfg, 3, 16, 10)
    }

    #[test]
    fn option_a_has_one_stream_group_and_a_group_per_conv1() {
        let l = layout(ShortcutKind::OptionA, true);
        let stream: Vec<_> = l.groups.iter().filter(|g| g.joint).collect();
        assert_eq!(stream.len(), 1);
        // stem + one conv2 per block
        assert_eq!(stream[0].members.len(), 1 + l.blocks.len());
        assert_eq!(l.groups.len(), 1 + l.blocks.len());
        // Every trained tensor is in a group when scale_invariant is set.
        assert_eq!(l.non_invariant_trained().count(), 0);
        // The flat buffer is tiled exactly.
        let mut next = 0;
        for t in &l.tensors {
            assert_eq!(t.offset, next);
            next += t.len;
        }
        assert_eq!(next, l.num_params);
    }

    #[test]
    fn projection_shortcut_splits_the_stream() {
        let l = layout(ShortcutKind::BnProjection, false);
        let joint: Vec<_> = l.groups.iter().filter(|g| g.joint).map(|g| g.name.clone()).collect();
        assert_eq!(joint, ["stream0", "stream1", "stream2"]);
        let shortcut_bn = l.tensor_by_name("layer2.0.shortcut.1.weight").unwrap();
        assert_eq!(l.groups[l.tensors[shortcut_bn].group.unwrap()].name, "stream1");
        assert!(l.groups.iter().any(|g| g.name == "layer3.0.shortcut.0"));
    }

    #[test]
    fn fixed_projection_bn_leaves_later_conv2s_without_a_group() {
        let l = layout(ShortcutKind::BnProjection, true);
        let names: Vec<_> = l.non_invariant_trained().map(|t| t.name.as_str()).collect();
        assert!(names.contains(&"layer2.0.conv2.weight"), "{names:?}");
        assert!(!names.contains(&"layer1.0.conv2.weight"), "{names:?}");
    }
}
