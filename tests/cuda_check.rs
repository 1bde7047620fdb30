//! The CUDA backend against the CPU reference (`ilr check` as a test), and its behaviour on a
//! machine without a GPU.

use ilr::backend::cuda::{self, Cuda};

/// Every GPU op and one whole training step agree with the CPU within the stated tolerances.
/// Skipped, with the reason, where no GPU can be opened.
#[test]
fn gpu_matches_the_cpu_reference() {
    let be = match Cuda::new(0) {
        Ok(be) => be,
        Err(e) => {
            eprintln!("skipping the GPU checks: {e:#}");
            return;
        }
    };
    let second = Cuda::new(0).ok();
    let rows = ilr::check::run_checks(&be, second.as_ref(), 7);
    let mut out = Vec::new();
    ilr::check::print_table(&rows, &mut out).expect("writing to memory");
    let table = String::from_utf8_lossy(&out);
    eprintln!("{}\n{table}", be.device_description());
    assert!(rows.iter().all(|r| r.pass), "GPU checks failed:\n{table}");
}

/// `Cuda::new` returns an error, never panics; without the driver the error names it and the fix.
#[test]
fn opening_without_a_driver_is_a_clear_error() {
    let opened = std::panic::catch_unwind(|| Cuda::new(0).map(|_| ()));
    let result = opened.expect("Cuda::new must not panic");
    if !cuda::driver_present() {
        let e = result.expect_err("without libcuda, Cuda::new must fail");
        let msg = format!("{e:#}");
        assert!(msg.contains("no NVIDIA driver"), "{msg}");
        assert!(msg.contains("libcuda.so.1"), "{msg}");
        assert!(msg.contains("--device cpu"), "{msg}");
    } else if let Err(e) = result {
        // A driver without a usable GPU (or libraries): the message must still say what is missing.
        let msg = format!("{e:#}");
        eprintln!("Cuda::new failed with a driver present: {msg}");
        assert!(!msg.is_empty());
    }
}

/// Training with CUDA graphs (warm-up, capture, replays) writes byte-identical metrics and
/// predictions to training without them, in f32 and in bf16-conv. Skipped where no GPU opens.
#[test]
fn graph_steps_train_bitwise_like_eager_steps() {
    use ilr::backend::ComputePrecision;
    use ilr::train::{self, Progress, RunDir, TrainConfig};
    let be = match Cuda::new(0) {
        Ok(be) => be,
        Err(e) => {
            eprintln!("skipping the CUDA-graph training check: {e:#}");
            return;
        }
    };
    for precision in [ComputePrecision::F32, ComputePrecision::Bf16Conv] {
        let mut outputs = Vec::new();
        for graphs in [false, true] {
            let mut cfg = TrainConfig::from_toml_str(
                "[data.synthetic]\ntrain = 512\ntest = 128\nsize = 8\n\
                 [model]\ndepth = 8\nwidth = 0.5\n\
                 [train]\nsteps = 30\nbatch_size = 32\nstats_every = 3\neval_every = 10\ndevice = \"cuda\"\n",
            )
            .unwrap();
            cfg.train.cuda_graphs = graphs;
            cfg.train.precision = precision;
            let data = train::load_datasets(&cfg.data).unwrap();
            let root = tempfile::tempdir().unwrap();
            let mut dir = RunDir::create(root.path(), &cfg).unwrap();
            let s = train::train(&be, &cfg, &data, Some(&mut dir), Progress::Quiet).unwrap();
            assert_eq!(s.backend.ends_with("+ CUDA graphs"), graphs, "{}", s.backend);
            let read = |f: &str| std::fs::read(dir.path.join(f)).unwrap();
            outputs.push((read("metrics.jsonl"), read("predictions.bin")));
        }
        assert!(outputs[0] == outputs[1], "{precision:?}: graphs changed the metrics or predictions");
    }
}
