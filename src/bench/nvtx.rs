//! NVTX ranges for Nsight Systems, a no-op where the NVTX library is absent.
//!
//! ```no_run
//! let _r = ilr::bench::nvtx_range("layer1.0.bn1");
//! // ... the layer's launches; the range ends when `_r` is dropped
//! ```
//!
//! Ranges are on when libnvToolsExt loads (it comes with the CUDA toolkit, and with PyTorch's
//! `nvidia-nvtx` wheel: put its `lib` folder on LD_LIBRARY_PATH) and `ILR_NVTX` is not `0`. Without
//! a profiler attached, a range costs a function call. [`super::Timed`] opens one around every
//! backend op, so `nsys profile ilr profile --device cuda` names every kernel; per-layer ranges go in
//! the model's forward/backward (one `nvtx_range` per block).

use std::sync::OnceLock;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        // SAFETY: only tries to dlopen the NVTX library.
        std::env::var("ILR_NVTX").map_or(true, |v| v != "0")
            && unsafe { cudarc::nvtx::sys::is_culib_present() }
    })
}

/// An open NVTX range; it ends when dropped.
#[must_use = "the range ends when this guard is dropped"]
pub struct NvtxRange(#[allow(dead_code)] Option<cudarc::nvtx::Range>);

/// Opens an NVTX range named `name` (nothing happens without the NVTX library).
pub fn nvtx_range(name: &str) -> NvtxRange {
    NvtxRange(enabled().then(|| cudarc::nvtx::scoped_range(name)))
}

/// Whether ranges are being emitted.
pub fn nvtx_enabled() -> bool {
    enabled()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_are_harmless_without_the_library() {
        let r = super::nvtx_range("test");
        drop(r);
    }
}
