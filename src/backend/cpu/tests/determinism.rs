//! Bit-reproducibility: the ops with parallel reductions (and the optimizer steps, SGD, Adam and
//! Lion, with their statistics sums) give identical bits on a 1-thread and a 3-thread rayon pool,
//! and on repeated runs. Also a timing of the conv passes (ignored by default).

use super::{bn_backward, bn_forward, rng, to_f32, uniform, Cpu};
use crate::backend::{
    AdamHyper, AdamStep, Backend, BnBackward, BnShape, BnTrain, ConvBackwardData, ConvBackwardFilter,
    ConvForward, ConvShape, LionHyper, LionStep, Segment, SgdStep, StepSums,
};

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// Runs `f` on 1, 3 and again 3 threads and asserts bit-identical results.
fn assert_reproducible<R: PartialEq + std::fmt::Debug + Send>(what: &str, f: impl Fn() -> R + Sync) {
    let one = in_pool(1, &f);
    for _ in 0..2 {
        assert!(in_pool(3, &f) == one, "{what}: results differ between runs");
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn conv_filter_gradient_is_reproducible() {
    // 12×12 with 8 outputs: im2col + GEMM; 16×16 with 32 outputs: the direct path (on AVX2 + FMA);
    // 32×32 at stride 2 (16×16 outputs, 4 images per f32 group, 5 per chunk): the direct stride-2
    // path. All sum over fixed chunks of the batch of 37.
    for (hw, c_out, stride, seed) in [(12, 8, 1, 60), (16, 32, 1, 61), (32, 32, 2, 64)] {
        let s = ConvShape { n: 37, c_in: 8, h: hw, w: hw, c_out, kernel: 3, stride, pad: 1 };
        let mut g = rng(seed);
        let (x, dy) = (to_f32(&uniform(&mut g, s.x_len())), to_f32(&uniform(&mut g, s.y_len())));
        assert_reproducible("conv backward_filter", || {
            let mut dw = vec![0.0f32; s.w_len()];
            Cpu::<f32>::new().conv2d_backward_filter(ConvBackwardFilter {
                s: &s,
                x: &x,
                dy: &dy,
                dw: &mut dw,
            });
            bits(&dw)
        });
    }
}

#[test]
fn batchnorm_is_reproducible() {
    let s = BnShape { n: 64, c: 8, hw: 64, eps: 1e-5, momentum: 0.1, relu: true };
    let mut g = rng(61);
    let (x, dy, affine) =
        (to_f32(&uniform(&mut g, s.len())), to_f32(&uniform(&mut g, s.len())), to_f32(&uniform(&mut g, 16)));
    assert_reproducible("batchnorm forward + backward", || {
        let mut running = vec![1.0f32; 16];
        let (y, saved) = bn_forward(&s, &x, &affine, &mut running);
        let (dx, d_affine) = bn_backward(&s, [&x, &y, &dy, &affine, &saved]);
        [bits(&y), bits(&running), bits(&saved), bits(&dx), bits(&d_affine)]
    });
}

/// A step over one 300_000-element segment (five chunks, the last partial) with the statistics
/// sums: `op(w, [state…], sums)` on copies of fixed random inputs must give the same bits for the
/// weights, the state and the sums on any thread count.
fn assert_step_reproducible<const K: usize>(
    what: &str,
    op: impl Fn(&Cpu<f32>, &[Segment], &mut Vec<f32>, &mut [Vec<f32>; K], &mut [StepSums]) + Sync,
) {
    let len = 300_000;
    let mut g = rng(62);
    let w = to_f32(&uniform(&mut g, len));
    let state: [Vec<f32>; K] =
        std::array::from_fn(|_| to_f32(&uniform(&mut g, len)).iter().map(|x| x * x).collect());
    let segments = [Segment { offset: 0, len, lr: 0.1, wd: 5e-4, momentum: 0.9 }];
    assert_reproducible(what, || {
        let (mut w, mut state, mut sums) = (w.clone(), state.clone(), [StepSums::default()]);
        op(&Cpu::<f32>::new(), &segments, &mut w, &mut state, &mut sums);
        let s = sums[0];
        (
            bits(&w),
            state.iter().map(|b| bits(b)).collect::<Vec<_>>(),
            [s.ww, s.gg, s.dd, s.wd].map(f64::to_bits),
        )
    });
}

#[test]
fn optimizer_steps_and_sums_are_reproducible() {
    let gr = to_f32(&uniform(&mut rng(63), 300_000));
    let gr = &gr;
    assert_step_reproducible("sgd", |cpu, segments, params, [momenta], sums| {
        cpu.sgd_step(SgdStep { segments, params, grads: gr, momenta, sums: Some(sums) }).unwrap()
    });
    for decoupled in [true, false] {
        assert_step_reproducible("adam", |cpu, segments, params, [m, v], sums| {
            let hyper = AdamHyper { beta1: 0.9, beta2: 0.999, eps: 1e-8, t: 3, decoupled };
            cpu.adam_step(AdamStep { segments, hyper, params, grads: gr, m, v, sums: Some(sums) }).unwrap()
        });
    }
    assert_step_reproducible("lion", |cpu, segments, params, [m], sums| {
        let hyper = LionHyper { beta1: 0.9, beta2: 0.99 };
        cpu.lion_step(LionStep { segments, hyper, params, grads: gr, m, sums: Some(sums) }).unwrap()
    });
}

/// The fastest of 10 calls of `f` after a warm-up, in seconds: the machine may be shared, so the
/// minimum is the signal.
fn best_of_10(mut f: impl FnMut()) -> f64 {
    f();
    (0..10)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The three stages of a CIFAR ResNet at batch 128 (each pass: 302 M multiply-adds), and its two
/// stride-2 convs (151 M each). Run with
/// `cargo test --release --lib backend::cpu::tests::determinism::conv_timing -- --ignored --nocapture`.
#[test]
#[ignore = "timing, not a test"]
fn conv_timing() {
    for (c, hw, c_out, stride) in
        [(16, 32, 16, 1), (32, 16, 32, 1), (64, 8, 64, 1), (16, 32, 32, 2), (32, 16, 64, 2)]
    {
        let s = ConvShape { n: 128, c_in: c, h: hw, w: hw, c_out, kernel: 3, stride, pad: 1 };
        let mut g = rng(63);
        let (x, w, dy) = (
            to_f32(&uniform(&mut g, s.x_len())),
            to_f32(&uniform(&mut g, s.w_len())),
            to_f32(&uniform(&mut g, s.y_len())),
        );
        let (mut y, mut dx, mut dw) =
            (vec![0.0f32; s.y_len()], vec![0.0f32; s.x_len()], vec![0.0f32; s.w_len()]);
        let cpu = Cpu::<f32>::new();
        let mut total = 0.0;
        let passes: [(&str, &mut dyn FnMut()); 3] = [
            ("forward", &mut || cpu.conv2d_forward(ConvForward { s: &s, x: &x, w: &w, y: &mut y })),
            ("backward data", &mut || {
                cpu.conv2d_backward_data(ConvBackwardData { s: &s, dy: &dy, w: &w, dx: &mut dx })
            }),
            ("backward filter", &mut || {
                cpu.conv2d_backward_filter(ConvBackwardFilter { s: &s, x: &x, dy: &dy, dw: &mut dw })
            }),
        ];
        for (name, f) in passes {
            let secs = best_of_10(f);
            total += secs;
            println!(
                "{c}->{c_out} s{stride} {hw}x{hw} {name:>16}: {:7.2} ms, {:5.1} GFLOP/s",
                secs * 1e3,
                2.0 * s.macs() as f64 / secs / 1e9
            );
        }
        println!("{c}->{c_out} s{stride} {hw}x{hw} {:>16}: {:7.2} ms", "total", total * 1e3);
    }
}

/// BatchNorm + ReLU at the three stages of a CIFAR ResNet at batch 128, with the bytes each pass
/// must move at least (forward: read x, write y; backward: read x, y, dy, write dx). Run like
/// [`conv_timing`].
#[test]
#[ignore = "timing, not a test"]
fn batchnorm_timing() {
    for (c, hw) in [(16, 1024), (32, 256), (64, 64)] {
        let s = BnShape { n: 128, c, hw, eps: 1e-5, momentum: 0.1, relu: true };
        let mut g = rng(64);
        let (x, dy) = (to_f32(&uniform(&mut g, s.len())), to_f32(&uniform(&mut g, s.len())));
        let affine = to_f32(&uniform(&mut g, 2 * c));
        let (mut running, mut saved, mut y) =
            (vec![1.0f32; 2 * c], vec![0.0f32; 2 * c], vec![0.0f32; s.len()]);
        let (mut dx, mut d_affine) = (vec![0.0f32; s.len()], vec![0.0f32; 2 * c]);
        let cpu = Cpu::<f32>::new();
        let fwd = best_of_10(|| {
            cpu.batchnorm_forward_train(BnTrain {
                s: &s,
                x: &x,
                affine: &affine,
                running: &mut running,
                saved: &mut saved,
                y: &mut y,
            })
        });
        let bwd = best_of_10(|| {
            cpu.batchnorm_backward(BnBackward {
                s: &s,
                x: &x,
                y: &y,
                dy: &dy,
                affine: &affine,
                saved: &saved,
                dx: &mut dx,
                d_affine: &mut d_affine,
            })
        });
        let mb = (s.len() * 4) as f64 / 1e6;
        println!(
            "n128 c{c} hw{hw}  forward: {:6.2} ms ({:5.1} GB/s)  backward: {:6.2} ms ({:5.1} GB/s)",
            fwd * 1e3,
            2.0 * mb / fwd / 1e3,
            bwd * 1e3,
            4.0 * mb / bwd / 1e3
        );
    }
}
