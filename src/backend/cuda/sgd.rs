//! The optimizer step: one `sgd_step_multi` launch over every segment (kernels/sgd.cu).
//!
//! The segment table is built on the host (f32-rounded hyperparameters, as the CPU reference uses)
//! and copied into a device buffer before the launch; the kernel reads it from device memory, so a
//! CUDA graph that captured the launch picks up each step's lr/wd when the table is rewritten
//! before the replay (see graph.rs). With statistics, the kernel also reduces [Σw², Σg², Σd², Σw·d]
//! per segment, deterministically, into a device array that is then downloaded (the only
//! synchronisation of a step's optimizer part). The reduction workspace (one f64×4 per chunk) and
//! the last-block counter (one u32, zeroed once, reset by the kernel) persist across steps; the
//! workspaces are allocated on the first step even without statistics (a captured step always
//! computes them).

use super::context::{addr, addr_mut, driver_error, Grow};
use super::{lock, Cuda, Gpu};
use crate::backend::{check_step_args, Segment, StepSums};
use anyhow::{ensure, Context as _, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};

/// Elements per block (PyTorch's multi_tensor_apply chunk; a multiple of 4).
pub(crate) const CHUNK: usize = 1 << 16;
/// Threads per block (the kernel's bound).
const BLOCK: u32 = 512;

/// Mirror of `MtSegment` in kernels/common.cuh (32 bytes, 8-byte aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct MtSegment {
    pub offset: u64,
    pub len: u64,
    pub lr: f32,
    pub wd: f32,
    pub momentum: f32,
    pub first_chunk: u32,
}

// SAFETY: a #[repr(C)] struct of plain numbers that matches the C struct field for field.
unsafe impl DeviceRepr for MtSegment {}
// SAFETY: all-zero bits are a valid MtSegment.
unsafe impl ValidAsZeroBits for MtSegment {}

/// The device table for `segments` and the grid size (total chunks).
pub(crate) fn table(segments: &[Segment]) -> Result<(Vec<MtSegment>, u32)> {
    let mut out = Vec::with_capacity(segments.len());
    let mut first: u64 = 0;
    for s in segments {
        out.push(MtSegment {
            offset: s.offset as u64,
            len: s.len as u64,
            lr: s.lr as f32,
            wd: s.wd as f32,
            momentum: s.momentum as f32,
            first_chunk: u32::try_from(first).context("sgd: too many chunks for one launch")?,
        });
        first += s.len.div_ceil(CHUNK) as u64;
    }
    // The grid's x dimension holds up to 2^31 − 1 blocks.
    let total =
        u32::try_from(first).ok().filter(|&t| t <= i32::MAX as u32).context("sgd: too many chunks")?;
    Ok((out, total))
}

/// Device buffers of the step.
pub(crate) struct SgdWorkspace {
    segs: Grow<MtSegment>,
    partials: Grow<f64>,
    sums: Grow<f64>,
    counter: CudaSlice<u32>,
}

impl SgdWorkspace {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        Ok(SgdWorkspace {
            segs: Grow::new(),
            partials: Grow::new(),
            sums: Grow::new(),
            counter: gpu.alloc_zeros(1)?,
        })
    }
}

/// A validated step: its segment table and grid size.
pub(crate) struct Prepared {
    pub table: Vec<MtSegment>,
    pub total: u32,
}

/// Validates the buffers and segments (and the length of `sums`), and builds the table.
pub(crate) fn prepare(
    segments: &[Segment],
    params: usize,
    grads: usize,
    momenta: usize,
    sums: Option<usize>,
) -> Result<Prepared> {
    check_step_args("sgd", segments, params, &[("grads", grads), ("momenta", momenta)], sums)?;
    let (table, total) = table(segments)?;
    Ok(Prepared { table, total })
}

/// Copies `table` into the device table that the kernel (eager, or inside a graph) reads.
pub(crate) fn upload_table(be: &Cuda, table: &[MtSegment]) -> Result<()> {
    if table.is_empty() {
        return Ok(());
    }
    let gpu = &be.gpu;
    let mut ws = lock(&be.sgd);
    let segs = ws.segs.ensure(gpu, table.len())?;
    gpu.stream.memcpy_htod(table, segs).map_err(|e| driver_error(e, "uploading the segment table"))
}

/// Launches `sgd_step_multi` over `p` (whose table must be on the device by the time it runs),
/// with the statistics when `stats`. The statistics workspaces are allocated on the first launch
/// whether or not it computes statistics, so that a step captured later (which always does)
/// allocates nothing.
fn launch(
    be: &Cuda,
    p: &Prepared,
    params: &mut CudaSlice<f32>,
    grads: &CudaSlice<f32>,
    momenta: &mut CudaSlice<f32>,
    stats: bool,
) -> Result<()> {
    let gpu = &be.gpu;
    let mut ws = lock(&be.sgd);
    let segs_ptr = addr(gpu, ws.segs.ensure(gpu, p.table.len())?);
    let partials = addr_mut(gpu, ws.partials.ensure(gpu, p.total as usize * 4)?);
    let sums_dev = addr_mut(gpu, ws.sums.ensure(gpu, p.table.len() * 4)?);
    let counter = addr_mut(gpu, &mut ws.counter);
    let (partials, sums_dev, counter) =
        if stats { (partials, sums_dev, counter) } else { (0u64, 0u64, 0u64) };
    let (num_segs, chunk) = (i32::try_from(p.table.len()).context("sgd: too many segments")?, CHUNK as i32);
    let (w, g, v) = (addr_mut(gpu, params), addr(gpu, grads), addr_mut(gpu, momenta));
    let cfg = LaunchConfig { grid_dim: (p.total, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: (float* w, const float* g, float* v, const MtSegment* segs, int num_segs, int chunk,
    // double* partials, double* sums, unsigned* counter): the buffers hold every segment (validated),
    // the table `num_segs` entries, partials grid·4 and sums num_segs·4 doubles, counter one u32
    // that is zero between launches.
    unsafe {
        super::ops::launch(be, "sgd_step_multi", cfg, |b| {
            b.arg(&w).arg(&g).arg(&v).arg(&segs_ptr).arg(&num_segs).arg(&chunk);
            b.arg(&partials).arg(&sums_dev).arg(&counter);
        })
    }
}

/// Queues the copy of the first `num_segs` statistics sums into `host` (num_segs·4 doubles); the
/// caller synchronises before reading it.
pub(crate) fn queue_sums_readback(be: &Cuda, num_segs: usize, host: &mut [f64]) -> Result<()> {
    ensure!(host.len() == num_segs * 4, "sgd: {} doubles for {num_segs} segments", host.len());
    if num_segs == 0 {
        return Ok(());
    }
    let gpu = &be.gpu;
    let mut ws = lock(&be.sgd);
    let dev = ws.sums.ensure(gpu, num_segs * 4)?;
    gpu.stream
        .memcpy_dtoh(&dev.slice(0..num_segs * 4), host)
        .map_err(|e| driver_error(e, "reading the step sums"))
}

/// The sums as [`StepSums`], one per segment.
pub(crate) fn unpack_sums(host: &[f64]) -> Vec<StepSums> {
    host.chunks_exact(4).map(|q| StepSums { ww: q[0], gg: q[1], dd: q[2], wd: q[3] }).collect()
}

/// The eager step of `p` (prepared with the lengths of these buffers and of `sums`): upload the
/// table, launch, and read the sums back when asked (one sync).
pub(crate) fn step(
    be: &Cuda,
    p: &Prepared,
    params: &mut CudaSlice<f32>,
    grads: &CudaSlice<f32>,
    momenta: &mut CudaSlice<f32>,
    sums: Option<&mut [StepSums]>,
) -> Result<()> {
    if p.total == 0 {
        // Nothing to update (no segments, or all empty): the sums are zero.
        if let Some(s) = sums {
            s.fill(StepSums::default());
        }
        return Ok(());
    }
    upload_table(be, &p.table)?;
    launch(be, p, params, grads, momenta, sums.is_some())?;
    if let Some(out) = sums {
        let mut host = vec![0f64; p.table.len() * 4];
        queue_sums_readback(be, p.table.len(), &mut host)?;
        be.gpu.sync()?;
        for (o, s) in out.iter_mut().zip(unpack_sums(&host)) {
            *o = s;
        }
    }
    Ok(())
}

/// The step inside a CUDA-graph capture: the launch, always with the statistics, and no table
/// upload (the host copy would be captured too; `step_end` uploads the table before each launch
/// of the graph instead).
pub(crate) fn launch_captured(
    be: &Cuda,
    p: &Prepared,
    params: &mut CudaSlice<f32>,
    grads: &CudaSlice<f32>,
    momenta: &mut CudaSlice<f32>,
) -> Result<()> {
    if p.total == 0 {
        return Ok(());
    }
    launch(be, p, params, grads, momenta, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(offset: usize, len: usize) -> Segment {
        Segment { offset, len, lr: 0.1, wd: 5e-4, momentum: 0.9 }
    }

    #[test]
    fn mt_segment_matches_the_c_layout() {
        assert_eq!(std::mem::size_of::<MtSegment>(), 32);
        assert_eq!(std::mem::align_of::<MtSegment>(), 8);
        assert_eq!(std::mem::offset_of!(MtSegment, lr), 16);
        assert_eq!(std::mem::offset_of!(MtSegment, first_chunk), 28);
    }

    #[test]
    fn table_counts_chunks_and_rounds_to_f32() {
        let (t, total) = table(&[seg(0, 5), seg(5, 0), seg(10, CHUNK), seg(CHUNK + 10, CHUNK + 1)]).unwrap();
        assert_eq!(t.iter().map(|s| s.first_chunk).collect::<Vec<_>>(), [0, 1, 1, 2]);
        assert_eq!(total, 4);
        assert_eq!(t[0].lr, 0.1f64 as f32);
        assert_eq!(t[0].wd, 5e-4f64 as f32);
        assert_eq!(t[3].offset, (CHUNK + 10) as u64);
        assert_eq!(table(&[]).unwrap().1, 0);
    }

    #[test]
    fn step_args_with_overlap_overflow_or_bad_lengths_are_errors() {
        let check_sgd_args = |segs: &[Segment], len, grads, momenta, sums| {
            check_step_args("sgd", segs, len, &[("grads", grads), ("momenta", momenta)], sums)
        };
        assert!(check_sgd_args(&[seg(0, 4), seg(4, 4)], 8, 8, 8, None).is_ok());
        assert!(check_sgd_args(&[seg(0, 5), seg(4, 4)], 8, 8, 8, None).is_err());
        assert!(check_sgd_args(&[seg(6, 4)], 8, 8, 8, None).is_err());
        assert!(check_sgd_args(&[seg(usize::MAX, 2)], 8, 8, 8, None).is_err());
        assert!(check_sgd_args(&[seg(0, 4)], 8, 7, 8, None).is_err());
        assert!(check_sgd_args(&[seg(0, 4)], 8, 8, 8, Some(1)).is_ok());
        assert!(check_sgd_args(&[seg(0, 4)], 8, 8, 8, Some(2)).is_err());
    }
}
