//! Train a list of planned runs in this process: choose the workers (GPUs or CPU thread pools),
//! run the pool, and summarise what became of each run. Shared by `ilr sweep` and `ilr reproduce`.

use super::pool::{
    auto_cpu_workers, available_memory, finished, plan_slots, run_pool, runs_root, visible_gpus,
    worker_bytes, Outcome, PoolOptions, WorkerFlags,
};
use super::spec::PlannedRun;
use crate::train::{Device, RunStatus};
use crate::util::text::count;
use anyhow::Result;
use std::path::Path;

/// How to train the runs of one process.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    pub device: Device,
    /// Workers, threads and runs per GPU. On the CPU with neither workers nor threads set: one
    /// worker per core up to the runs left to train and the memory (see [`auto_cpu_workers`]).
    pub flags: WorkerFlags,
    pub checkpoint_every: Option<u64>,
    pub progress_bar: bool,
    /// A word for the log lines, e.g. the sweep's name.
    pub name: String,
}

/// Counts of what became of the runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub trained: usize,
    pub already_done: usize,
    pub busy: usize,
    pub failed: usize,
    pub diverged: usize,
}

impl Tally {
    pub fn of(outcomes: &[(String, Outcome)]) -> Self {
        let mut t = Tally::default();
        for (_, o) in outcomes {
            match o {
                Outcome::Trained(s) | Outcome::AlreadyDone(s) if s.status == RunStatus::Diverged => {
                    t.diverged += 1;
                }
                _ => {}
            }
            match o {
                Outcome::Trained(_) => t.trained += 1,
                Outcome::AlreadyDone(_) => t.already_done += 1,
                Outcome::Busy => t.busy += 1,
                Outcome::Failed(_) => t.failed += 1,
            }
        }
        t
    }
}

/// The device the workers use: the flag's, unless it is auto and every run's config names the same
/// device (`train.device = "cpu"` in a spec then keeps the sweep off the GPUs, silently).
pub fn sweep_device(flag: Device, runs: &[PlannedRun]) -> Device {
    let mut devices = runs.iter().map(|r| r.config.train.device);
    match (flag, devices.next()) {
        (Device::Auto, Some(first)) if devices.all(|d| d == first) => first,
        _ => flag,
    }
}

/// Train `runs` into `sweep_dir/runs/`, logging the workers and a closing tally to stderr; failed
/// runs are listed with their errors.
pub fn execute(
    runs: &[PlannedRun],
    sweep_dir: &Path,
    o: &ExecOptions,
) -> Result<(Vec<(String, Outcome)>, Tally)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let device = sweep_device(o.device, runs);
    let gpus = if device == Device::Cpu || o.flags.workers.is_some() {
        Vec::new()
    } else {
        match visible_gpus(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref()) {
            Ok(g) => g,
            Err(e) if o.device == Device::Cuda => return Err(e.context("--device cuda")),
            Err(e) if device == Device::Cuda => {
                return Err(e.context("every run of the sweep sets train.device = \"cuda\""))
            }
            Err(e) => {
                eprintln!("note: training on the CPU: {e:#}");
                Vec::new()
            }
        }
    };
    let root = runs_root(sweep_dir);
    let mut flags = o.flags;
    if gpus.is_empty() && device != Device::Cuda && flags.workers.is_none() && flags.threads.is_none() {
        let pending: Vec<&PlannedRun> =
            runs.iter().filter(|r| finished(&root.join(&r.id)).is_none()).collect();
        let per_worker = pending.iter().map(|r| worker_bytes(&r.config)).max().unwrap_or(0);
        let n = auto_cpu_workers(pending.len(), cores, per_worker, available_memory());
        eprintln!(
            "{}: {} to train on {}: {} × {} (--workers/--threads override)",
            o.name,
            count(pending.len(), "run"),
            count(cores, "core"),
            count(n, "CPU worker"),
            count((cores / n).max(1), "thread")
        );
        flags.workers = Some(n);
        flags.runs_per_gpu = 1;
    }
    let slots = plan_slots(device, &flags, &gpus, cores)?;
    let slot_desc = slots.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
    eprintln!(
        "{}: {}; {}: {slot_desc} → {}",
        o.name,
        count(runs.len(), "run"),
        count(slots.len(), "worker"),
        root.display()
    );
    let opts = PoolOptions {
        checkpoint_every: o.checkpoint_every,
        progress_bar: o.progress_bar && slots.len() == 1,
    };
    let t0 = std::time::Instant::now();
    let outcomes = run_pool(&root, runs, &slots, &opts)?;
    let t = Tally::of(&outcomes);
    eprintln!(
        "{}: {} trained now, {} finished before, {} in progress elsewhere, {} failed ({} of the finished diverged) in {:.1}s",
        o.name,
        t.trained,
        t.already_done,
        t.busy,
        t.failed,
        t.diverged,
        t0.elapsed().as_secs_f64()
    );
    for (id, out) in &outcomes {
        if let Outcome::Failed(e) = out {
            eprintln!("  failed: {id}: {e}");
        }
    }
    Ok((outcomes, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::Spec;

    fn runs(spec: &str) -> Vec<PlannedRun> {
        Spec::parse(spec, "t").unwrap().expand().unwrap()
    }

    #[test]
    fn the_runs_choose_the_device_when_the_flag_says_auto() {
        let cpu = runs("[base.train]\ndevice = \"cpu\"\n[grid]\nseed = [0, 1]\n");
        let mixed = runs("[[runs]]\nseed = 0\ntrain.device = \"cpu\"\n[[runs]]\nseed = 1\n");
        assert_eq!(mixed.len(), 2);
        assert_eq!(sweep_device(Device::Auto, &cpu), Device::Cpu);
        assert_eq!(sweep_device(Device::Cuda, &cpu), Device::Cuda, "the flag wins");
        assert_eq!(sweep_device(Device::Auto, &mixed), Device::Auto);
        assert_eq!(sweep_device(Device::Cpu, &mixed), Device::Cpu);
        assert_eq!(sweep_device(Device::Auto, &[]), Device::Auto);
    }
}
