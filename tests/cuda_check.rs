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
    let rows = cuda::run_checks(&be, 7);
    let mut out = Vec::new();
    cuda::print_table(&rows, &mut out).expect("writing to memory");
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
