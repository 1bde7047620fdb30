//! The fused optimizer steps: one launch of `sgd_step_multi`, `adam_step_multi` or `lion_step_multi`
//! (kernels/optim.cu) over every segment.
//!
//! The three share everything but the per-element math: the segment table (one [`MtSegment`] per
//! segment: its chunk layout and the step's scalars `h`, formed in f64 on the host and rounded to
//! f32 as the CPU reference rounds them), the launch, and the statistics [Σw², Σg², Σd², Σw·d] per
//! segment, reduced deterministically into a device array that is then downloaded (the only
//! synchronisation of a step's optimizer part). The table is copied into a device buffer before the
//! launch and the kernel reads it from there, so a CUDA graph that captured the launch picks up
//! each step's scalars (lr, wd, Adam's bias corrections) when the table is rewritten before the
//! replay (see graph.rs). The reduction workspace (one f64×4 per chunk) and the last-block counter
//! (one u32, zeroed once, reset by the kernel) persist across steps; the workspaces are allocated
//! on the first step even without statistics (a captured step always computes them).

use super::context::{addr, addr_mut, driver_error, Grow};
use super::{lock, Cuda, Gpu};
use crate::backend::{check_step_args, Segment, StepSums};
use anyhow::{ensure, Context as _, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};

/// Elements per block (PyTorch's multi_tensor_apply chunk; a multiple of 4).
pub(crate) const CHUNK: usize = 1 << 16;
/// Threads per block (the kernels' bound).
const BLOCK: u32 = 512;

/// Mirror of `MtSegment` in kernels/common.cuh (56 bytes, 8-byte aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct MtSegment {
    pub offset: u64,
    pub len: u64,
    /// The step's scalars for this segment, in the order the kernel reads them (see [`Optimizer`]).
    pub h: [f32; 8],
    pub first_chunk: u32,
    pub pad: u32,
}

// SAFETY: a #[repr(C)] struct of plain numbers that matches the C struct field for field.
unsafe impl DeviceRepr for MtSegment {}
// SAFETY: all-zero bits are a valid MtSegment.
unsafe impl ValidAsZeroBits for MtSegment {}

/// The fused steps of kernels/optim.cu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Optimizer {
    /// h = [η, λ, γ]; state: momenta.
    Sgd,
    /// h = `AdamHyper::scalars`; state: m, v.
    Adam,
    /// h = `LionHyper::scalars`; state: m.
    Lion,
}

impl Optimizer {
    /// The Backend op (errors, graph fingerprints).
    pub fn op(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd_step",
            Optimizer::Adam => "adam_step",
            Optimizer::Lion => "lion_step",
        }
    }

    fn kernel(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd_step_multi",
            Optimizer::Adam => "adam_step_multi",
            Optimizer::Lion => "lion_step_multi",
        }
    }

    /// The name in argument errors (as the CPU backend's) and the state buffers, in kernel order.
    fn names(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Optimizer::Sgd => ("sgd", &["momenta"]),
            Optimizer::Adam => ("adam", &["m", "v"]),
            Optimizer::Lion => ("lion", &["m"]),
        }
    }
}

/// A segment's scalars, rounded to f32 once (as `T::from_f64` on the CPU), padded with zeros.
pub(crate) fn scalars<const N: usize>(x: [f64; N]) -> [f32; 8] {
    let mut h = [0f32; 8];
    for (h, x) in h.iter_mut().zip(x) {
        *h = x as f32;
    }
    h
}

/// The device table for `segments`, with `h(segment)` as each entry's scalars, and the grid size
/// (total chunks).
pub(crate) fn table(segments: &[Segment], h: impl Fn(&Segment) -> [f32; 8]) -> Result<(Vec<MtSegment>, u32)> {
    let mut out = Vec::with_capacity(segments.len());
    let mut first: u64 = 0;
    for s in segments {
        out.push(MtSegment {
            offset: s.offset as u64,
            len: s.len as u64,
            h: h(s),
            first_chunk: u32::try_from(first).context("optimizer step: too many chunks for one launch")?,
            pad: 0,
        });
        first += s.len.div_ceil(CHUNK) as u64;
    }
    // The grid's x dimension holds up to 2^31 − 1 blocks.
    let total = u32::try_from(first)
        .ok()
        .filter(|&t| t <= i32::MAX as u32)
        .context("optimizer step: too many chunks")?;
    Ok((out, total))
}

/// The device buffers of a step as (address, length), in the kernel's order: params, grads, then
/// the optimizer's state. The caller holds their borrows while it uses this.
pub(crate) struct Operands(Vec<(u64, usize)>);

impl Operands {
    pub fn new<const K: usize>(
        gpu: &Gpu,
        params: &mut CudaSlice<f32>,
        grads: &CudaSlice<f32>,
        states: [&mut CudaSlice<f32>; K],
    ) -> Self {
        let mut v = vec![(addr_mut(gpu, params), params.len()), (addr(gpu, grads), grads.len())];
        v.extend(states.into_iter().map(|s| (addr_mut(gpu, s), s.len())));
        Operands(v)
    }

    /// The (address, length) words of the step fingerprint.
    pub fn words(&self) -> Vec<u64> {
        self.0.iter().flat_map(|&(a, n)| [a, n as u64]).collect()
    }
}

/// Device buffers of the step (shared by the three kernels: one step runs at a time).
pub(crate) struct StepWorkspace {
    segs: Grow<MtSegment>,
    partials: Grow<f64>,
    sums: Grow<f64>,
    counter: CudaSlice<u32>,
}

impl StepWorkspace {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        Ok(StepWorkspace {
            segs: Grow::new(),
            partials: Grow::new(),
            sums: Grow::new(),
            counter: gpu.alloc_zeros(1)?,
        })
    }
}

/// A validated step: its kernel, segment table and grid size.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub opt: Optimizer,
    pub table: Vec<MtSegment>,
    pub total: u32,
}

/// Validates the buffers and segments (and the length of `sums`), and builds the table with the
/// scalars `h(segment)`.
pub(crate) fn prepare(
    opt: Optimizer,
    segments: &[Segment],
    ops: &Operands,
    sums: Option<usize>,
    h: impl Fn(&Segment) -> [f32; 8],
) -> Result<Prepared> {
    let (name, states) = opt.names();
    ensure!(ops.0.len() == 2 + states.len(), "{name}: {} buffers for {} states", ops.0.len(), states.len());
    let mut lens = vec![("grads", ops.0[1].1)];
    lens.extend(states.iter().zip(&ops.0[2..]).map(|(n, &(_, len))| (*n, len)));
    check_step_args(name, segments, ops.0[0].1, &lens, sums)?;
    let (table, total) = table(segments, h)?;
    Ok(Prepared { opt, table, total })
}

/// Copies `table` into the device table that the kernel (eager, or inside a graph) reads.
pub(crate) fn upload_table(be: &Cuda, table: &[MtSegment]) -> Result<()> {
    if table.is_empty() {
        return Ok(());
    }
    let gpu = &be.gpu;
    let mut ws = lock(&be.optim);
    let segs = ws.segs.ensure(gpu, table.len())?;
    gpu.stream.memcpy_htod(table, segs).map_err(|e| driver_error(e, "uploading the segment table"))
}

/// Launches the kernel of `p` on `ops` (the table must be on the device by the time it runs), with
/// the statistics when `stats`. The statistics workspaces are allocated on the first launch whether
/// or not it computes statistics, so that a step captured later (which always does) allocates
/// nothing.
fn launch(be: &Cuda, p: &Prepared, ops: &Operands, stats: bool) -> Result<()> {
    let gpu = &be.gpu;
    let mut ws = lock(&be.optim);
    let segs_ptr = addr(gpu, ws.segs.ensure(gpu, p.table.len())?);
    let partials = addr_mut(gpu, ws.partials.ensure(gpu, p.total as usize * 4)?);
    let sums_dev = addr_mut(gpu, ws.sums.ensure(gpu, p.table.len() * 4)?);
    let counter = addr_mut(gpu, &mut ws.counter);
    let (partials, sums_dev, counter) =
        if stats { (partials, sums_dev, counter) } else { (0u64, 0u64, 0u64) };
    let num_segs = i32::try_from(p.table.len()).context("optimizer step: too many segments")?;
    let chunk = CHUNK as i32;
    let cfg = LaunchConfig { grid_dim: (p.total, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: (float* w, const float* g, float* state…, const MtSegment* segs, int num_segs,
    // int chunk, double* partials, double* sums, unsigned* counter), the states as `Optimizer::names`
    // lists them (checked in `prepare`): the buffers hold every segment (validated), the table
    // `num_segs` entries, partials grid·4 and sums num_segs·4 doubles, counter one u32 that is zero
    // between launches.
    unsafe {
        super::ops::launch(be, p.opt.kernel(), cfg, |b| {
            for (ptr, _) in &ops.0 {
                b.arg(ptr);
            }
            b.arg(&segs_ptr).arg(&num_segs).arg(&chunk);
            b.arg(&partials).arg(&sums_dev).arg(&counter);
        })
    }
}

/// Queues the copy of the first `num_segs` statistics sums into `host` (num_segs·4 doubles); the
/// caller synchronises before reading it.
pub(crate) fn queue_sums_readback(be: &Cuda, num_segs: usize, host: &mut [f64]) -> Result<()> {
    ensure!(host.len() == num_segs * 4, "optimizer step: {} doubles for {num_segs} segments", host.len());
    if num_segs == 0 {
        return Ok(());
    }
    let gpu = &be.gpu;
    let mut ws = lock(&be.optim);
    let dev = ws.sums.ensure(gpu, num_segs * 4)?;
    gpu.stream
        .memcpy_dtoh(&dev.slice(0..num_segs * 4), host)
        .map_err(|e| driver_error(e, "reading the step sums"))
}

/// The sums as [`StepSums`], one per segment.
pub(crate) fn unpack_sums(host: &[f64]) -> Vec<StepSums> {
    host.chunks_exact(4).map(|q| StepSums { ww: q[0], gg: q[1], dd: q[2], wd: q[3] }).collect()
}

/// The eager step of `p` (prepared with the lengths of `ops` and of `sums`): upload the table,
/// launch, and read the sums back when asked (one sync).
pub(crate) fn step(be: &Cuda, p: &Prepared, ops: &Operands, sums: Option<&mut [StepSums]>) -> Result<()> {
    if p.total == 0 {
        // Nothing to update (no segments, or all empty): the sums are zero.
        if let Some(s) = sums {
            s.fill(StepSums::default());
        }
        return Ok(());
    }
    upload_table(be, &p.table)?;
    launch(be, p, ops, sums.is_some())?;
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
pub(crate) fn launch_captured(be: &Cuda, p: &Prepared, ops: &Operands) -> Result<()> {
    if p.total == 0 {
        return Ok(());
    }
    launch(be, p, ops, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{AdamHyper, LionHyper};

    fn seg(offset: usize, len: usize) -> Segment {
        Segment { offset, len, lr: 0.1, wd: 5e-4, momentum: 0.9 }
    }

    #[test]
    fn mt_segment_matches_the_c_layout() {
        assert_eq!(std::mem::size_of::<MtSegment>(), 56);
        assert_eq!(std::mem::align_of::<MtSegment>(), 8);
        assert_eq!(std::mem::offset_of!(MtSegment, h), 16);
        assert_eq!(std::mem::offset_of!(MtSegment, first_chunk), 48);
    }

    #[test]
    fn table_counts_chunks_and_rounds_to_f32() {
        let segs = [seg(0, 5), seg(5, 0), seg(10, CHUNK), seg(CHUNK + 10, CHUNK + 1)];
        let (t, total) = table(&segs, |s| scalars([s.lr, s.wd, s.momentum])).unwrap();
        assert_eq!(t.iter().map(|s| s.first_chunk).collect::<Vec<_>>(), [0, 1, 1, 2]);
        assert_eq!(total, 4);
        assert_eq!(t[0].h, [0.1f64 as f32, 5e-4f64 as f32, 0.9f64 as f32, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(t[3].offset, (CHUNK + 10) as u64);
        assert_eq!(table(&[], |_| [0.0; 8]).unwrap().1, 0);
    }

    /// The kernels' scalars are the CPU's, in the order kernels/optim.cu reads them.
    #[test]
    fn adam_and_lion_scalars_are_the_cpu_ones_in_kernel_order() {
        let s = Segment { offset: 0, len: 1, lr: 1e-3, wd: 0.1, momentum: 0.0 };
        let adam = |decoupled| AdamHyper { beta1: 0.9, beta2: 0.999, eps: 1e-8, t: 3, decoupled };
        let h = scalars(adam(true).scalars(&s));
        let bc1 = 1.0 - 0.9f64.powi(3);
        assert_eq!(h[0], (1.0 - 1e-3 * 0.1) as f32, "AdamW decay");
        assert_eq!((h[1], h[2], h[3], h[4]), (0.0, 0.1f64 as f32, 0.999, (1.0 - 0.999f64) as f32));
        assert_eq!(h[5], (1e-3 / bc1) as f32);
        assert_eq!(h[6], (1.0 - 0.999f64.powi(3)).sqrt() as f32);
        assert_eq!(h[7], 1e-8f64 as f32);
        let h = scalars(adam(false).scalars(&s));
        assert_eq!((h[0], h[1]), (1.0, 0.1), "Adam + L2: no decay, l2 = λ");
        let h = scalars(LionHyper { beta1: 0.9, beta2: 0.99 }.scalars(&s));
        assert_eq!(
            h,
            [1e-3, (1.0 - 1e-4f64) as f32, 0.9, 0.1f64 as f32, 0.99, (1.0 - 0.99f64) as f32, 0.0, 0.0]
        );
    }

    #[test]
    fn prepare_checks_each_state_buffer_by_name() {
        let ops = |lens: &[usize]| Operands(lens.iter().map(|&n| (0, n)).collect());
        let segs = [seg(0, 4), seg(5, 3)];
        let h = |_: &Segment| [0.0; 8];
        let p = prepare(Optimizer::Adam, &segs, &ops(&[8, 8, 8, 8]), Some(2), h).unwrap();
        assert_eq!((p.total, p.table.len(), p.opt.kernel()), (2, 2, "adam_step_multi"));
        let e = prepare(Optimizer::Adam, &segs, &ops(&[8, 8, 8, 7]), None, h).unwrap_err().to_string();
        assert!(e.starts_with("adam:") && e.contains("v 7"), "{e}");
        let e = prepare(Optimizer::Lion, &segs, &ops(&[8, 8, 9]), None, h).unwrap_err().to_string();
        assert!(e.starts_with("lion:") && e.contains("m 9"), "{e}");
        assert!(prepare(Optimizer::Lion, &segs, &ops(&[8, 8, 8, 8]), None, h).is_err(), "one state too many");
        assert!(prepare(Optimizer::Sgd, &segs, &ops(&[8, 8, 8]), Some(1), h).is_err(), "sums per segment");
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
