//! matrixmultiply against the `gemm` crate on the GEMM shapes of the CPU convolutions
//! (src/backend/cpu/conv.rs), single-threaded, as the CPU backend calls them: one GEMM per block of
//! `images` images, with the block's columns side by side (N or K = images·P).
//!
//! For a conv c_in→c_out with K = c_in·k·k and P = out_h·out_w per image, a block of B images runs
//! - forward:         Y (c_out × B·P)  = W (c_out × K) · col (K × B·P)
//! - backward data: col (K × B·P)      = Wᵀ (K × c_out) · dY (c_out × B·P)   (Wᵀ a strided view)
//! - backward filter: dW (c_out × K)   = dY (c_out × B·P) · colᵀ (B·P × K)   (colᵀ a strided view)
//!
//! Run: `cargo bench --bench conv_gemm` (about 1 min on 2 idle cores). Prints GFLOP/s (2 per
//! multiply-add), the fastest of several timed repetitions.

use ilr::backend::{GemmArgs, Real};
use std::time::Instant;

/// (label, c_in, c_out, out_h·out_w) of every distinct conv in PreResNet-20 (32×32) and PreResNet-8
/// ×0.5 at 16×16 and 8×8, kernel 3.
const CONVS: &[(&str, usize, usize, usize)] = &[
    ("r20 3->16 32x32", 3, 16, 1024),
    ("r20 16->16 32x32", 16, 16, 1024),
    ("r20 16->32 s2 16x16", 16, 32, 256),
    ("r20 32->32 16x16", 32, 32, 256),
    ("r20 32->64 s2 8x8", 32, 64, 64),
    ("r20 64->64 8x8", 64, 64, 64),
    ("r8x0.5 8->8 16x16", 8, 8, 256),
    ("r8x0.5 16->16 8x8", 16, 16, 64),
    ("r8x0.5 8->8 8x8", 8, 8, 64),
    ("r8x0.5 32->32 2x2", 32, 32, 4),
];

/// A GEMM C (m×n) = A (m×k) · B (k×n) with element strides (row, column) for each operand.
#[derive(Clone, Copy)]
struct Call {
    m: usize,
    n: usize,
    k: usize,
    a: (usize, usize),
    b: (usize, usize),
}

/// One of the backend's two GEMMs ([`Real::gemm_matrixmultiply`], [`Real::gemm_crate`]), exactly as
/// src/backend/cpu/gemm.rs calls them.
type Gemm = unsafe fn(&GemmArgs<f32>);

fn run(f: Gemm, c: Call, a: &[f32], b: &[f32], out: &mut [f32]) {
    let s = |x: usize| x as isize;
    let args = GemmArgs {
        m: c.m,
        k: c.k,
        n: c.n,
        alpha: 1.0,
        a: a.as_ptr(),
        rsa: s(c.a.0),
        csa: s(c.a.1),
        b: b.as_ptr(),
        rsb: s(c.b.0),
        csb: s(c.b.1),
        beta: 0.0,
        c: out.as_mut_ptr(),
        rsc: s(c.n),
        csc: 1,
    };
    // SAFETY: the buffers are sized in `main` for exactly these shapes and strides.
    unsafe { f(&args) }
}

/// Fastest of `reps` timed calls (after one warm-up), in seconds.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    println!(
        "{:<22} {:>6} {:<9} {:>5} {:>6} {:>6}  {:>12} {:>12}",
        "conv", "images", "pass", "M", "N", "K", "matrixmul", "gemm"
    );
    for &(label, c_in, c_out, p) in CONVS {
        if filter.as_deref().is_some_and(|f| !label.contains(f)) {
            continue;
        }
        let kk = c_in * 9;
        for images in [1, 8, 32] {
            let bp = images * p;
            // (pass, call): matrices stored row-major as the backend stores them.
            let passes = [
                ("forward", Call { m: c_out, n: bp, k: kk, a: (kk, 1), b: (bp, 1) }),
                ("data", Call { m: kk, n: bp, k: c_out, a: (1, kk), b: (bp, 1) }),
                ("filter", Call { m: c_out, n: kk, k: bp, a: (bp, 1), b: (1, bp) }),
            ];
            for (pass, c) in passes {
                let a: Vec<f32> = (0..c.m * c.k).map(|i| (i % 7) as f32 * 0.1).collect();
                let b: Vec<f32> = (0..c.k * c.n).map(|i| (i % 5) as f32 * 0.1).collect();
                let mut out = vec![0.0f32; c.m * c.n];
                let flops = 2.0 * (c.m * c.n * c.k) as f64;
                let reps = ((2e8 / flops) as usize).clamp(3, 200);
                let mm = time(reps, || run(f32::gemm_matrixmultiply, c, &a, &b, &mut out));
                let ge = time(reps, || run(f32::gemm_crate, c, &a, &b, &mut out));
                println!(
                    "{label:<22} {images:>6} {pass:<9} {:>5} {:>6} {:>6}  {:>7.1} GF/s {:>7.1} GF/s",
                    c.m,
                    c.n,
                    c.k,
                    flops / mm / 1e9,
                    flops / ge / 1e9
                );
            }
        }
    }
}
