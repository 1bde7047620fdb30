//! `ilr check`: every op of a backend under test against the CPU reference `Cpu<f32>`, on fresh
//! random inputs at several shapes (odd sizes, stride 2, views at odd and 16-byte-aligned offsets),
//! plus one whole PreResNet-8 training step judged against `Cpu<f64>`. Where the backend supports
//! them (see [`Backend::set_conv_precision`] and [`Backend::step_begin`]):
//! - **bf16 convolutions**: each convolution case and the whole step again with
//!   `ComputePrecision::Bf16Conv`, judged against the exact (f64) result of the same f32 inputs
//!   with a bf16 tolerance: a worst-case rounding bound per op (`Tol::Bf16`), and for the whole
//!   step the error of an exact CPU emulation of the same bf16 roundings (`STEP_BF16_FACTOR`);
//! - **CUDA graphs**: five training steps of one model run eagerly against the same five steps of
//!   a second model through `step_begin`/`step_end` (warm-up, capture, replays; changing lr and
//!   statistics on/off). Our own kernels are bitwise by construction (same kernels, arguments and
//!   order); cuDNN/cuBLAS calls are first compared eager against eager on a second instance of the
//!   backend (its own stream and handles), and the graph rows are judged **bitwise** only if that
//!   was bitwise, else with a stated tolerance (each row's tolerance column says which; see
//!   graph.rs);
//! - **lower bounds for bf16 rows**: a bf16 row must also show an error of bf16's size, so that f32
//!   arithmetic under a bf16 label fails (see bf16.rs).
//!
//! How each comparison is made:
//! - outputs are **poisoned** with NaN before the op (accumulating outputs get random values), so an
//!   element the op fails to write shows up as NaN;
//! - every view sits inside a larger buffer whose other elements hold a sentinel (**guards**); a
//!   guard that changed means the op wrote outside its view;
//! - the **tolerance** of each op follows from how its arithmetic differs from the CPU's, and is
//!   printed with the reason. An element passes when |gpu − cpu| ≤ its allowance; `err/tol` is the
//!   worst ratio (≤ 1 passes).
//!
//! The harness is generic over the backend under test, so it also runs (and must pass exactly)
//! with the CPU backend standing in for the GPU: that checks the harness itself without a GPU.
//!
//! The per-op checks, the `Harness` and the comparisons live in `backend::cuda::check`; this
//! module, above the model and the optimizer, adds the whole-step (step.rs) and CUDA-graph
//! (graph.rs) checks, which build a PreResNet and its SGD, and runs everything in order.

mod graph;
mod step;

use crate::backend::cuda::check::{error_row, Harness};
pub use crate::backend::cuda::check::{print_table, BnVariant, CheckRow};
use crate::backend::cuda::{BnMode, Cuda};

/// The heavy-ball buffer of an SGD optimizer (the checks step SGD).
fn momenta<B: crate::backend::Backend>(o: &crate::optim::Optimizer<B>) -> &B::Buf {
    o.buffer("momentum_buffer").expect("the checks' optimizers are SGD")
}
use crate::backend::{Backend, ComputePrecision};
use crate::model::ShortcutKind;

/// Runs every check on `be` (all BatchNorm variants) and returns one row per op and shape; a case
/// that errors gives a failing row that carries the error. `second`, a second `Cuda` on the same
/// GPU, serves the library eager-vs-eager row before the graph rows (None: that row says so and
/// the graph rows stay bitwise).
pub fn run_checks(be: &Cuda, second: Option<&Cuda>, seed: u64) -> Vec<CheckRow> {
    let previous = be.bn_mode();
    let (fused, nocache, split, auto) = (
        |b: &Cuda| b.set_bn_mode(BnMode::Fused),
        |b: &Cuda| b.set_bn_mode(BnMode::FusedNoCache),
        |b: &Cuda| b.set_bn_mode(BnMode::Split),
        |b: &Cuda| b.set_bn_mode(BnMode::Auto),
    );
    // Auto last: the whole-step check runs with the default.
    let variants: [BnVariant<Cuda>; 4] =
        [("fused", &fused), ("fused-nocache", &nocache), ("split", &split), ("auto", &auto)];
    let mut rows = run_checks_on(be, second, seed, &variants, &|b: &Cuda| b.clear_error());
    be.set_bn_mode(previous);
    if let Err(e) = be.synchronize() {
        rows.push(error_row("synchronize", &e));
    }
    rows
}

/// The checks on any f32 backend; `second` as in [`run_checks`]. `bn_variants` are (name, setter)
/// pairs: each BatchNorm case runs once per variant after calling its setter. A case that errors gives a failing row; `reset` then
/// clears the backend's recorded error and the next case runs.
pub fn run_checks_on<B: Backend<Elem = f32>>(
    be: &B,
    second: Option<&B>,
    seed: u64,
    bn_variants: &[BnVariant<B>],
    reset: &dyn Fn(&B),
) -> Vec<CheckRow> {
    let mut h = Harness::new(be, second, seed, reset);
    h.op_checks(bn_variants);
    whole_step_and_graph(&mut h, seed);
    h.rows
}

/// The whole-step rows (f32, then bf16-conv where the backend has it) and the CUDA-graph rows,
/// after the per-op rows.
fn whole_step_and_graph<B: Backend<Elem = f32>>(h: &mut Harness<B>, seed: u64) {
    for kind in [ShortcutKind::OptionA, ShortcutKind::BnProjection] {
        h.attempt("step", format!("{kind:?}"), |h| h.whole_step(kind, seed, false));
    }
    if h.be.set_conv_precision(ComputePrecision::Bf16Conv) {
        for kind in [ShortcutKind::OptionA, ShortcutKind::BnProjection] {
            h.attempt("step bf16-conv", format!("{kind:?}"), |h| h.whole_step(kind, seed, true));
        }
    }
    h.be.set_conv_precision(ComputePrecision::F32);
    h.attempt("graph", String::new(), |h| {
        let r = h.graph_vs_eager(seed);
        h.be.step_reset();
        r
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;

    /// The harness, with the CPU backend standing in for the GPU, must pass every check exactly:
    /// this exercises all of it (placement, guards, poisoning, tolerances, the whole step) here.
    #[test]
    fn harness_passes_with_the_cpu_as_the_device() {
        let be = Cpu::<f32>::new();
        let noop = |_: &Cpu<f32>| {};
        let second = Cpu::<f32>::new();
        let rows = run_checks_on(&be, Some(&second), 3, &[("cpu", &noop)], &noop);
        let mut out = Vec::new();
        print_table(&rows, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        eprintln!("{text}");
        assert!(rows.iter().all(|r| r.pass), "{text}");
        assert!(rows.len() > 60, "{text}");
        for r in rows.iter().filter(|r| !r.op.starts_with("step:")) {
            assert_eq!(r.err_over_tol, 0.0, "CPU against itself must agree exactly: {r:?}");
        }
    }
}
