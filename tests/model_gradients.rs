//! Finite-difference gradient check of a whole PreResNet, in f64.
//!
//! Central differences with h = 1e-7 have truncation error O(h^2 L''') ~ 1e-14 and rounding error
//! O(eps L / h) ~ 1e-9, so analytic and numeric gradients must agree to ~1e-8 absolute; we allow
//! 1e-6 + 1e-5·|g|. A wrong index or a missing term in any op gives errors of order |g| instead.
//! h is that small because ReLU is piecewise linear: with ~10^4 units, a larger step (1e-5) can move
//! some pre-activation across 0 and bias every difference (seen with h = 1e-5 on some seeds).

mod common;

use common::{loss, net};
use ilr::model::{ModelConfig, ShortcutKind};
use rand::{Rng, SeedableRng};

fn check(cfg: ModelConfig) {
    let (be, mut m) = net(&cfg, 11);
    let base = loss(&be, &mut m);
    assert!(base.is_finite());
    let grads = m.grads.clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let h = 1e-7;
    let mut checked = 0;
    for t in m.layout.tensors.clone() {
        // Every tensor, a few random elements each.
        for _ in 0..3 {
            let i = t.offset + rng.gen_range(0..t.len);
            let w0 = m.params[i];
            m.params[i] = w0 + h;
            let lp = loss(&be, &mut m);
            m.params[i] = w0 - h;
            let lm = loss(&be, &mut m);
            m.params[i] = w0;
            let fd = (lp - lm) / (2.0 * h);
            let g = grads[i];
            let ok = (fd - g).abs() <= 1e-6 + 1e-5 * g.abs();
            assert!(ok, "{}[{}]: analytic {g:e}, numeric {fd:e}", t.name, i - t.offset);
            checked += 1;
        }
    }
    assert!(checked >= 3 * m.layout.tensors.len());
}

#[test]
fn whole_net_option_a_with_affine() {
    check(ModelConfig { depth: 14, width: 0.25, shortcut: ShortcutKind::OptionA, ..ModelConfig::default() });
}

#[test]
fn whole_net_bn_projection_with_affine() {
    check(ModelConfig {
        depth: 8,
        width: 0.25,
        shortcut: ShortcutKind::BnProjection,
        ..ModelConfig::default()
    });
}

#[test]
fn whole_net_scale_invariant() {
    check(ModelConfig { depth: 8, width: 0.25, scale_invariant: true, ..ModelConfig::default() });
}
