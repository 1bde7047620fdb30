//! The worker pool of one `ilr sweep` process: one worker per slot (a CPU thread pool, or a GPU),
//! each taking the next run of its shard's list and training it with [`run_config`]: only by the
//! worker that holds its lock, only if it has no summary.json yet, and from its newest usable
//! checkpoint.

use super::spec::PlannedRun;
use crate::backend::cpu::Cpu;
use crate::backend::cuda::Cuda;
use crate::train::{
    load_datasets, run_config, AnyBackend, Datasets, Device, Mode, Progress, RunStatus, Summary, TrainOptions,
};
use anyhow::{bail, Context, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub use crate::train::job::{Outcome, ERROR_FILE};

/// Where one worker trains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    Cpu {
        threads: usize,
    },
    /// A GPU: its CUDA ordinal among the visible devices, and its CUDA_VISIBLE_DEVICES entry.
    Gpu {
        ordinal: usize,
        name: String,
        threads: usize,
    },
}

impl Slot {
    fn threads(&self) -> usize {
        match self {
            Slot::Cpu { threads } | Slot::Gpu { threads, .. } => *threads,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Cpu { threads } => write!(f, "CPU ({})", crate::util::text::count(*threads, "thread")),
            Slot::Gpu { name, .. } => write!(f, "GPU {name}"),
        }
    }
}

/// How the workers of one process are chosen: the `--workers`, `--threads` and `--runs-per-gpu`
/// flags of `ilr sweep` and `ilr reproduce`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerFlags {
    /// CPU workers (None: one per visible GPU, or automatic on the CPU).
    pub workers: Option<usize>,
    /// Host threads per worker (None: cores/workers).
    pub threads: Option<usize>,
    /// Workers on each visible GPU: a tiny net uses a sliver of a large GPU, so K runs share it.
    pub runs_per_gpu: usize,
}

impl Default for WorkerFlags {
    fn default() -> Self {
        Self { workers: None, threads: None, runs_per_gpu: 1 }
    }
}

/// The checks of [`plan_slots`] that need no hardware: at least one worker, one thread and one run
/// per GPU, no `--workers` with `--device cuda` (which has one worker per visible GPU), and no
/// `--runs-per-gpu` above 1 where no GPU is used.
pub fn check_worker_flags(device: Device, f: &WorkerFlags) -> Result<()> {
    if f.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    if f.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    if f.runs_per_gpu == 0 {
        bail!("--runs-per-gpu must be at least 1");
    }
    if device == Device::Cuda && f.workers.is_some() {
        bail!("--workers sets CPU workers; with --device cuda there is one worker per visible GPU");
    }
    if f.runs_per_gpu > 1 && (device == Device::Cpu || f.workers.is_some()) {
        bail!("--runs-per-gpu applies to GPU workers; with --device cpu or --workers N the runs train on the CPU");
    }
    Ok(())
}

/// The workers of one process. `workers` gives that many CPU workers; else, with usable `gpus`
/// (the visible GPUs, e.g. from CUDA_VISIBLE_DEVICES), `runs_per_gpu` workers per GPU; else one CPU
/// worker. `device` cpu never uses GPUs; cuda requires them. Each worker gets `threads` host
/// threads, default cores/N.
pub fn plan_slots(device: Device, f: &WorkerFlags, gpus: &[String], cores: usize) -> Result<Vec<Slot>> {
    check_worker_flags(device, f)?;
    let use_gpus = match device {
        Device::Cpu => false,
        Device::Cuda => {
            if gpus.is_empty() {
                bail!("--device cuda: no usable GPU is visible");
            }
            true
        }
        Device::Auto => f.workers.is_none() && !gpus.is_empty(),
    };
    let n = if use_gpus { gpus.len() * f.runs_per_gpu } else { f.workers.unwrap_or(1) };
    let threads = f.threads.unwrap_or((cores / n).max(1));
    Ok(if use_gpus {
        gpus.iter()
            .enumerate()
            .flat_map(|(ordinal, name)| {
                std::iter::repeat_n(Slot::Gpu { ordinal, name: name.clone(), threads }, f.runs_per_gpu)
            })
            .collect()
    } else {
        vec![Slot::Cpu { threads }; n]
    })
}

/// Resident bytes one CPU worker of `cfg` needs, roughly: the datasets (u8 images), plus
/// activations that scale from a measured point (a PreResNet-20 ×1 step at batch 128 on 32×32
/// images peaks at about 256 MB of RSS; activations grow with batch · H · W · width · (depth − 2)),
/// plus 64 MiB for the rest. Only used to keep the automatic worker count within memory.
pub fn worker_bytes(cfg: &crate::train::TrainConfig) -> u64 {
    let syn = &cfg.data.synthetic;
    let images = if cfg.data.dir.is_some() { 60_000 } else { syn.train + syn.test };
    let side = image_side(cfg);
    let data = (images * 3 * side * side) as f64;
    let m = &cfg.model;
    let scale = (cfg.train.batch_size * side * side) as f64 * m.width * (m.depth.max(3) - 2) as f64
        / (128.0 * 1024.0 * 18.0);
    (data + 256e6 * scale + 64.0 * 1024.0 * 1024.0) as u64
}

/// The side of a run's images: 32 for CIFAR, the synthetic set's size otherwise.
fn image_side(cfg: &crate::train::TrainConfig) -> usize {
    if cfg.data.dir.is_some() {
        32
    } else {
        cfg.data.synthetic.size
    }
}

/// The CPU workers to use when neither `--workers` nor `--threads` is given: one per core, as many
/// as there are runs left to train and as fit in memory, each with cores/workers threads. Separate
/// runs scale perfectly across cores, while one small net's step does not (the tiny recipe: 6:58
/// with 2 workers × 1 thread, 13:22 with 1 worker × 2 threads, docs/PERFORMANCE.md); with fewer
/// runs than cores the spare cores go to each run's threads.
pub fn auto_cpu_workers(pending: usize, cores: usize, per_worker: u64, available: Option<u64>) -> usize {
    let by_memory = available.map_or(usize::MAX, |a| (a / per_worker.max(1)) as usize);
    pending.min(cores).min(by_memory).max(1)
}

/// MemAvailable from /proc/meminfo, in bytes (None where there is no such file).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A run's relative cost, for ordering: steps · batch · H · W · width² · depth (a conv's FLOPs go as
/// channels² · H · W).
fn relative_cost(cfg: &crate::train::TrainConfig) -> f64 {
    let side = image_side(cfg) as f64;
    let m = &cfg.model;
    cfg.train.steps as f64 * cfg.train.batch_size as f64 * side * side * m.width * m.width * m.depth as f64
}

/// The order workers take runs in: the most expensive first (longest-processing-time first), so that
/// no long run starts last while the other workers idle. Ties keep the plan's order.
fn dispatch_order(runs: &[PlannedRun]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| relative_cost(&runs[b].config).total_cmp(&relative_cost(&runs[a].config)));
    order
}

/// The GPUs this process may use, named as CUDA_VISIBLE_DEVICES names them (CUDA numbers them 0..n
/// in that order), each checked by opening it; with the variable unset, GPUs 0, 1, ... up to the
/// first that does not open. When none opens, the error says why.
pub fn visible_gpus(cuda_visible: Option<&str>) -> Result<Vec<String>> {
    let listed: Option<Vec<String>> = cuda_visible.map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .take_while(|s| !s.starts_with('-'))
            .map(String::from)
            .collect()
    });
    if listed.as_ref().is_some_and(|l| l.is_empty()) {
        bail!("CUDA_VISIBLE_DEVICES={:?} hides every GPU", cuda_visible.unwrap_or_default());
    }
    let max = listed.as_ref().map_or(64, Vec::len);
    let mut found = Vec::new();
    for k in 0..max {
        match Cuda::new(k) {
            Ok(_) => found.push(listed.as_ref().map_or(k.to_string(), |l| l[k].clone())),
            Err(e) if k == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(found)
}

#[derive(Clone, Debug, Default)]
pub struct PoolOptions {
    /// Steps between checkpoints (default: each run's steps/10, at least 1).
    pub checkpoint_every: Option<u64>,
    /// Draw the trainer's progress bar (sensible with one worker on a terminal).
    pub progress_bar: bool,
}

pub use crate::train::rundir::finished;

/// The last dataset a worker loaded, reused while the runs share a data config.
#[derive(Default)]
struct DataCache {
    key: String,
    data: Option<Datasets>,
}

impl DataCache {
    fn get(&mut self, cfg: &crate::train::DataConfig) -> Result<&Datasets> {
        let key = serde_json::to_string(cfg)?;
        if self.key != key || self.data.is_none() {
            self.data = None;
            let d = load_datasets(cfg)?;
            if let Some(note) = &d.note {
                eprintln!("note: {note}");
            }
            self.data = Some(d);
            self.key = key;
        }
        Ok(self.data.as_ref().expect("loaded above"))
    }
}

/// The backend of a worker's slot.
fn open_slot(slot: &Slot) -> Result<AnyBackend> {
    Ok(match slot {
        Slot::Cpu { .. } => AnyBackend::CpuF32(Cpu::new()),
        Slot::Gpu { ordinal, name, .. } => {
            AnyBackend::gpu(*ordinal).with_context(|| format!("opening GPU {name}"))?
        }
    })
}

/// What a worker keeps between runs: its backend, opened on its first run that needs training, and
/// its data.
struct Worker<'a> {
    slot: &'a Slot,
    backend: Option<AnyBackend>,
    cache: DataCache,
}

/// Lock, check, and train one run.
fn run_one(runs_root: &Path, run: &PlannedRun, w: &mut Worker, opts: &PoolOptions) -> Result<Outcome> {
    let mode = Mode {
        force: false,
        worker: true,
        progress: if opts.progress_bar { Progress::Bar } else { Progress::Quiet },
        options: TrainOptions {
            checkpoint_every: opts.checkpoint_every.unwrap_or((run.config.train.steps / 10).max(1)),
            resume: true,
            ..TrainOptions::default()
        },
    };
    let Worker { slot, backend, cache } = w;
    // Passed directly, so that the closure is inferred as FnOnce and may lend out the worker's state.
    run_config(
        runs_root,
        &run.config,
        move || {
            if backend.is_none() {
                *backend = Some(open_slot(slot)?);
            }
            let backend: &AnyBackend = backend.as_ref().expect("opened above");
            Ok((backend, cache.get(&run.config.data)?))
        },
        &mode,
    )
}

fn describe(s: &Summary) -> String {
    let acc = s.final_metrics.test_acc.map_or("—".into(), |a| format!("{:.2}%", 100.0 * a));
    let teq = match (s.t_eq_steps, s.t_eq_lambda_e, s.t_eq_units) {
        (Some(t), _, Some(u)) if !s.time_unit.is_empty() && s.time_unit != crate::stats::unit_label(0.0) => {
            format!("T_eq {t} steps ({u:.2} units of {})", s.time_unit)
        }
        (Some(t), Some(tl), _) => format!("T_eq {t} steps (T_eq·λ_e {tl:.2})"),
        _ => "no equilibrium".into(),
    };
    match (&s.status, &s.divergence) {
        (RunStatus::Diverged, Some(d)) => format!("diverged at step {}: {}", d.step, d.reason),
        _ => format!("test acc {acc}, {teq}"),
    }
}

/// Train `runs` (a shard's list) with one worker per slot; returns each run's outcome, in order.
pub fn run_pool(
    runs_root: &Path,
    runs: &[PlannedRun],
    slots: &[Slot],
    opts: &PoolOptions,
) -> Result<Vec<(String, Outcome)>> {
    let next = AtomicUsize::new(0);
    let order = dispatch_order(runs);
    let finished_count = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; runs.len()]);
    let total = runs.len();
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for slot in slots {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(slot.threads())
                .build()
                .context("building a worker's thread pool")?;
            let (next, order, finished_count, outcomes) = (&next, &order, &finished_count, &outcomes);
            handles.push(scope.spawn(move || {
                let mut worker = Worker { slot, backend: None, cache: DataCache::default() };
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let run = &runs[i];
                    let t0 = std::time::Instant::now();
                    let outcome = pool.install(|| {
                        catch_unwind(AssertUnwindSafe(|| run_one(runs_root, run, &mut worker, opts)))
                    });
                    let outcome = match outcome {
                        Ok(Ok(o)) => o,
                        Ok(Err(e)) => Outcome::Failed(format!("{e:#}")),
                        Err(panic) => {
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                            Outcome::Failed(format!("panicked: {}", msg.unwrap_or_default()))
                        }
                    };
                    let k = finished_count.fetch_add(1, Ordering::SeqCst) + 1;
                    let what = match &outcome {
                        Outcome::Trained(s) => {
                            format!("{} in {:.1}s", describe(s), t0.elapsed().as_secs_f64())
                        }
                        Outcome::AlreadyDone(s) => format!("already finished: {}", describe(s)),
                        Outcome::Busy => "in progress in another worker; skipped".into(),
                        Outcome::Failed(e) => format!("FAILED: {e}"),
                    };
                    eprintln!("[{k}/{total}] {} ({}): {what}", run.id, run.label());
                    outcomes.lock().expect("no worker panics while holding it")[i] = Some(outcome);
                }
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a sweep worker panicked"))?;
        }
        Ok(())
    })?;
    let outcomes = outcomes.into_inner().expect("workers are done");
    Ok(runs
        .iter()
        .zip(outcomes)
        .map(|(r, o)| (r.id.clone(), o.unwrap_or(Outcome::Failed("not attempted".into()))))
        .collect())
}

/// The folder that holds every run of a sweep directory.
pub fn runs_root(sweep_dir: &Path) -> PathBuf {
    sweep_dir.join("runs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_flags_and_the_visible_gpus() {
        let gpus = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let flags = |workers, threads, runs_per_gpu| WorkerFlags { workers, threads, runs_per_gpu };
        let plain = WorkerFlags::default();
        assert_eq!(plan_slots(Device::Auto, &plain, &[], 8).unwrap(), vec![Slot::Cpu { threads: 8 }]);
        assert_eq!(
            plan_slots(Device::Auto, &flags(Some(4), None, 1), &gpus(&["0", "1"]), 8).unwrap(),
            vec![Slot::Cpu { threads: 2 }; 4]
        );
        assert_eq!(
            plan_slots(Device::Cpu, &flags(Some(3), Some(1), 1), &[], 2).unwrap(),
            vec![Slot::Cpu { threads: 1 }; 3]
        );
        assert_eq!(
            plan_slots(Device::Cpu, &flags(Some(3), None, 1), &gpus(&["0"]), 2).unwrap(),
            vec![Slot::Cpu { threads: 1 }; 3]
        );
        let gpu = |ordinal, name: &str, threads| Slot::Gpu { ordinal, name: name.into(), threads };
        assert_eq!(
            plan_slots(Device::Auto, &plain, &gpus(&["2", "3"]), 8).unwrap(),
            vec![gpu(0, "2", 4), gpu(1, "3", 4)]
        );
        // K runs per GPU: K workers on each, in GPU order, sharing the cores.
        assert_eq!(
            plan_slots(Device::Auto, &flags(None, None, 3), &gpus(&["2", "3"]), 12).unwrap(),
            vec![
                gpu(0, "2", 2),
                gpu(0, "2", 2),
                gpu(0, "2", 2),
                gpu(1, "3", 2),
                gpu(1, "3", 2),
                gpu(1, "3", 2)
            ]
        );
        assert!(plan_slots(Device::Cuda, &plain, &[], 8).is_err());
        assert!(plan_slots(Device::Cuda, &flags(Some(2), None, 1), &gpus(&["0"]), 8).is_err());
        assert!(plan_slots(Device::Cpu, &flags(Some(0), None, 1), &[], 8).is_err());
        assert!(plan_slots(Device::Cpu, &flags(None, Some(0), 1), &[], 8).is_err());
        assert!(plan_slots(Device::Auto, &flags(None, None, 0), &gpus(&["0"]), 8).is_err());
        let cpu_only = plan_slots(Device::Cpu, &flags(None, None, 2), &[], 8).unwrap_err().to_string();
        assert!(cpu_only.contains("--runs-per-gpu applies to GPU workers"), "{cpu_only}");
    }

    #[test]
    fn automatic_workers_fill_the_cores_up_to_the_runs_and_the_memory() {
        let gib = 1u64 << 30;
        assert_eq!(auto_cpu_workers(34, 2, gib, Some(20 * gib)), 2, "many runs: one worker per core");
        assert_eq!(auto_cpu_workers(1, 16, gib, Some(20 * gib)), 1, "one run: one worker, all threads");
        assert_eq!(auto_cpu_workers(5, 16, gib, None), 5);
        assert_eq!(auto_cpu_workers(64, 16, 4 * gib, Some(10 * gib)), 2, "memory caps the workers");
        assert_eq!(auto_cpu_workers(0, 4, gib, Some(0)), 1, "never fewer than one");
    }

    #[test]
    fn the_most_expensive_runs_are_dispatched_first() {
        let spec = "[base.train]\nsteps = 10\n[[runs]]\nseed = 0\ntrain.steps = 100\n\
                    [[runs]]\nseed = 1\ntrain.steps = 400\n[[runs]]\nseed = 2\ntrain.steps = 100\n\
                    [[runs]]\nseed = 3\nmodel.width = 2.0\ntrain.steps = 200\n";
        let runs = crate::sweep::Spec::parse(spec, "t").unwrap().expand().unwrap();
        // Costs 100, 400, 100, 200·2² = 800: ties keep the plan's order.
        assert_eq!(dispatch_order(&runs), vec![3, 1, 0, 2]);
        let cfg = &runs[0].config;
        assert!(worker_bytes(cfg) > 64 << 20, "at least the fixed part");
    }
}
