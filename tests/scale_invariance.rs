//! Every declared scale-invariant group is invariant: L(c·w) = L(w), ⟨∇L(w), w⟩ = 0 and
//! ∇L(c·w) = ∇L(w)/c; and scaling one member of a joint group alone changes the loss.
//!
//! BN's ε breaks invariance at relative order ε/σ², so these nets use ε = 1e-14: the identities
//! then hold to ~1e-12 in f64, and we assert 1e-9. Training-mode BN (batch statistics) is what the
//! theory is about; running statistics do not enter the training loss.

mod common;

use common::{loss, net};
use ilr::model::{ModelConfig, ShortcutKind};

fn cfg(shortcut: ShortcutKind, scale_invariant: bool) -> ModelConfig {
    ModelConfig { depth: 14, width: 0.25, shortcut, scale_invariant, bn_eps: 1e-14, ..ModelConfig::default() }
}

fn scale(m: &mut ilr::model::PreResNet<ilr::backend::cpu::Cpu<f64>>, members: &[usize], c: f64) {
    for &t in members {
        let r = m.layout.tensors[t].range();
        m.params[r].iter_mut().for_each(|v| *v *= c);
    }
}

fn gather(v: &[f64], m: &ilr::model::PreResNet<ilr::backend::cpu::Cpu<f64>>, members: &[usize]) -> Vec<f64> {
    members.iter().flat_map(|&t| v[m.layout.tensors[t].range()].to_vec()).collect()
}

fn check_groups(cfg: ModelConfig) {
    let (be, mut m) = net(&cfg, 3);
    let groups = m.layout.groups.clone();
    assert!(!groups.is_empty());
    for g in &groups {
        let l0 = loss(&be, &mut m);
        let g0 = gather(&m.grads, &m, &g.members);
        let w0 = gather(&m.params, &m, &g.members);
        let dot: f64 = g0.iter().zip(&w0).map(|(a, b)| a * b).sum();
        let norms =
            g0.iter().map(|x| x * x).sum::<f64>().sqrt() * w0.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(dot.abs() <= 1e-9 * norms, "{}: ⟨∇L, w⟩ = {dot:e} vs ‖∇L‖‖w‖ = {norms:e}", g.name);
        for c in [2.7, 0.3] {
            scale(&mut m, &g.members, c);
            let l1 = loss(&be, &mut m);
            let g1 = gather(&m.grads, &m, &g.members);
            scale(&mut m, &g.members, 1.0 / c);
            assert!((l1 - l0).abs() <= 1e-9 * l0.abs(), "{}: L(cw) = {l1} vs L(w) = {l0} (c = {c})", g.name);
            // Elementwise, relative to the largest gradient entry of the group.
            let gmax = g0.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            for (a, b) in g1.iter().zip(&g0) {
                assert!((a * c - b).abs() <= 1e-9 * gmax, "{}: c·∇L(cw) = {} vs ∇L(w) = {b}", g.name, a * c);
            }
        }
        if g.joint {
            // A single member alone is not invariant.
            let l0 = loss(&be, &mut m);
            scale(&mut m, &g.members[..1], 2.7);
            let l1 = loss(&be, &mut m);
            scale(&mut m, &g.members[..1], 1.0 / 2.7);
            assert!(
                (l1 - l0).abs() > 1e-6 * l0.abs(),
                "{}: scaling {} alone did not change L",
                g.name,
                m.layout.tensors[g.members[0]].name
            );
        }
    }
}

#[test]
fn option_a_groups_are_invariant() {
    check_groups(cfg(ShortcutKind::OptionA, true));
    check_groups(cfg(ShortcutKind::OptionA, false));
}

#[test]
fn bn_projection_groups_are_invariant() {
    check_groups(cfg(ShortcutKind::BnProjection, false));
}

#[test]
fn fixed_projection_bn_makes_later_stream_convs_not_invariant() {
    // With BN's affine fixed, the stream after a projection block mixes conv2 outputs with a BN
    // output of fixed scale: scaling those conv2s together changes the loss, which is why the
    // layout declares no group for them.
    let (be, mut m) = net(&cfg(ShortcutKind::BnProjection, true), 3);
    let orphans: Vec<usize> = (0..m.layout.tensors.len())
        .filter(|&t| m.layout.tensors[t].trainable && m.layout.tensors[t].group.is_none())
        .collect();
    assert!(!orphans.is_empty());
    let l0 = loss(&be, &mut m);
    scale(&mut m, &orphans, 2.7);
    let l1 = loss(&be, &mut m);
    assert!((l1 - l0).abs() > 1e-6 * l0.abs());
}

/// `model.init_scale` and `model.init_norm` change ‖w₀‖ of every group but not the network's
/// function at step 0: the training-mode logits and the loss agree to rounding (relative 1e-9 with
/// ε = 1e-14, as above), while each group's initial norm is exactly as asked.
#[test]
fn init_scale_and_init_norm_leave_the_step0_function_unchanged() {
    use ilr::model::InitNorm;
    let base = cfg(ShortcutKind::OptionA, true);
    let (be, mut m1) = net(&base, 5);
    let l1 = loss(&be, &mut m1);
    let logits1 = m1.logits_host(&be).unwrap();
    let norms1 = m1.layout.group_norms(&m1.params);
    let targets: Vec<f64> = (0..norms1.len()).map(|g| 0.5 + 3.0 * g as f64).collect();
    let variants = [
        (
            ModelConfig { init_scale: 10.0, ..base.clone() },
            norms1.iter().map(|n| 10.0 * n).collect::<Vec<_>>(),
        ),
        (ModelConfig { init_norm: Some(InitNorm::All(7.0)), ..base.clone() }, vec![7.0; norms1.len()]),
        (
            ModelConfig {
                init_norm: Some(InitNorm::PerGroup(targets.clone())),
                init_scale: 0.1,
                ..base.clone()
            },
            targets.iter().map(|t| 0.1 * t).collect(),
        ),
    ];
    for (c, want) in variants {
        let (be, mut m) = net(&c, 5);
        let got = m.layout.group_norms(&m.params);
        for (g, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a / b - 1.0).abs() < 1e-12, "group {g}: ‖w₀‖ = {a} but asked for {b} ({c:?})");
        }
        // Tensors outside every group (the fixed last layer) are untouched.
        for t in m.layout.tensors.iter().filter(|t| t.group.is_none()) {
            assert_eq!(m.params[t.range()], m1.params[t.range()], "{} changed", t.name);
        }
        let l = loss(&be, &mut m);
        assert!((l - l1).abs() <= 1e-9 * l1.abs(), "loss at step 0: {l} vs {l1} ({c:?})");
        let logits = m.logits_host(&be).unwrap();
        let scale = logits1.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        for (a, b) in logits.iter().zip(&logits1) {
            assert!((a - b).abs() <= 1e-9 * scale, "logit {a} vs {b} ({c:?})");
        }
    }
}

#[test]
fn a_wrong_init_norm_is_a_clear_error() {
    use ilr::model::InitNorm;
    let be = ilr::backend::cpu::Cpu::<f64>::new();
    let c = ModelConfig {
        init_norm: Some(InitNorm::PerGroup(vec![1.0, 2.0])),
        ..cfg(ShortcutKind::OptionA, true)
    };
    let mut m = ilr::model::PreResNet::new(&be, &c, 3, 8, 5, 4).unwrap();
    let e = m.init(&be, 0).unwrap_err().to_string();
    assert!(e.contains("lists 2 norms") && e.contains("scale-invariant groups"), "{e}");
    let bad = ModelConfig { init_scale: 0.0, ..c.clone() };
    assert!(bad.validate().unwrap_err().to_string().contains("init_scale"));
    let bad = ModelConfig { init_norm: Some(InitNorm::All(-1.0)), ..c };
    assert!(bad.validate().unwrap_err().to_string().contains("init_norm"));
}
