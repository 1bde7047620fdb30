//! `ilr sweep`.

use anyhow::{bail, Context, Result};
use clap::Args;
use ilr::sweep::{self, ExecOptions, Shard, SlurmOptions, WorkerFlags};
use ilr::train::Device;
use ilr::util::text::count;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The worker flags of `ilr sweep` and `ilr reproduce`.
#[derive(Args, Debug, Clone, Copy)]
pub struct WorkerArgs {
    /// CPU workers in this process, at least 1 (each with cores/N threads unless --threads).
    /// Default: --runs-per-gpu workers per visible GPU (CUDA_VISIBLE_DEVICES); on the CPU with
    /// neither this nor --threads, one worker of one thread per core, fewer when fewer runs are
    /// left to train (their threads then take the spare cores) or memory is short.
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one::<usize>)]
    pub workers: Option<usize>,
    /// Host threads per worker, at least 1 (default: cores/workers).
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one::<usize>)]
    pub threads: Option<usize>,
    /// Workers on each visible GPU, at least 1: a tiny net uses a sliver of a large GPU, so K runs
    /// can share it (passed through by --slurm).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = super::values::at_least_one::<usize>)]
    pub runs_per_gpu: usize,
}

impl WorkerArgs {
    pub fn flags(&self) -> WorkerFlags {
        WorkerFlags { workers: self.workers, threads: self.threads, runs_per_gpu: self.runs_per_gpu }
    }
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Sweep spec (TOML): [base] config, [grid] of dotted keys → arrays, optional [[runs]]
    /// (see examples/sweep-tiny.toml).
    pub spec: PathBuf,
    /// Sweep directory: runs go to DIR/runs/<run-id>/.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub workers: WorkerArgs,
    /// Where workers train; auto follows the runs' train.device when they all set cpu or cuda.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Train only shard INDEX/COUNT of the runs (run k goes to shard k mod COUNT). Default inside
    /// a SLURM array task: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT; else all runs.
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<String>,
    /// Steps between checkpoints, at least 1 (default: [sweep] checkpoint_every in the spec, else
    /// steps/10).
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one::<u64>)]
    pub checkpoint_every: Option<u64>,
    /// Check the spec and every flag, print the expanded runs and exit; writes nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write DIR/sweep.sbatch, a SLURM array job over the runs, instead of training.
    #[arg(long)]
    pub slurm: bool,
    /// With --slurm: number of array tasks, at least 1 (default: one per run; each task trains its
    /// shard). Capped at the cluster's MaxArraySize (read with `scontrol show config`; 1000 where it
    /// cannot be read), with a note when the cap applies.
    #[arg(long, value_name = "N", requires = "slurm", value_parser = super::values::at_least_one::<usize>)]
    pub array_tasks: Option<usize>,
    /// With --slurm: sbatch --partition.
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// With --slurm: sbatch --gpus-per-task.
    #[arg(long, value_name = "N", requires = "slurm", value_parser = super::values::whole::<u32>)]
    pub gpus_per_task: Option<u32>,
    /// With --slurm: sbatch --cpus-per-task (also the threads each task trains with), at least 1.
    #[arg(long, value_name = "N", requires = "slurm", value_parser = super::values::at_least_one::<u32>)]
    pub cpus_per_task: Option<u32>,
    /// With --slurm: sbatch --time (e.g. 04:00:00).
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    /// With --slurm: the most array tasks running at once (%N), at least 1.
    #[arg(long, value_name = "N", requires = "slurm", value_parser = super::values::at_least_one::<usize>)]
    pub max_concurrent: Option<usize>,
    /// With --slurm: an extra sbatch option, verbatim (repeatable), e.g. --sbatch-arg=--account=abc.
    #[arg(long = "sbatch-arg", requires = "slurm", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
}

pub fn run(a: SweepArgs) -> Result<ExitCode> {
    // Everything is checked before anything is written, so that --dry-run checks it all.
    let (spec, runs) = sweep::plan(&a.spec)?;
    let checkpoint_every = a.checkpoint_every.or(spec.checkpoint_every);
    let shard = match &a.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::from_env(|k| std::env::var(k).ok())?.unwrap_or(Shard::ALL),
    };
    sweep::check_worker_flags(sweep::sweep_device(a.device, &runs), &a.workers.flags())?;
    if a.dry_run {
        let mine: Vec<usize> = shard.select(runs.len()).collect();
        for &i in &mine {
            println!("{i:>4}  {}  {}", runs[i].id, runs[i].label());
        }
        if shard.count > 1 {
            println!("{} of {} (shard {shard}); nothing written", mine.len(), count(runs.len(), "run"));
        } else {
            println!("{}; nothing written", count(runs.len(), "run"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    sweep::record(&a.spec, &a.out, &runs)?;
    if a.slurm {
        return write_slurm(&a, &spec.name, runs.len(), checkpoint_every);
    }
    let mine: Vec<_> = shard.select(runs.len()).map(|i| runs[i].clone()).collect();
    let name = if shard.count > 1 {
        format!("sweep {} (shard {shard} of {})", spec.name, count(runs.len(), "run"))
    } else {
        format!("sweep {}", spec.name)
    };
    let exec = ExecOptions {
        device: a.device,
        flags: a.workers.flags(),
        checkpoint_every,
        progress_bar: std::io::stderr().is_terminal(),
        name,
    };
    let (_, tally) = sweep::execute(&mine, &a.out, &exec)?;
    if tally.failed > 0 {
        eprintln!("rerun the same command to retry the failed runs (finished runs are not rerun)");
        return Ok(ExitCode::from(1));
    }
    eprintln!("next: ilr report {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    p.canonicalize().with_context(|| format!("resolving {}", p.display()))
}

fn write_slurm(a: &SweepArgs, name: &str, runs: usize, checkpoint_every: Option<u64>) -> Result<ExitCode> {
    let dir = absolute(&a.out)?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let ilr = std::env::current_exe().context("finding the ilr binary")?;
    let workdir = std::env::current_dir()?;
    let job_name: String = format!("ilr-{name}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    let (max_array_size, read) = sweep::slurm::max_array_size();
    let o = SlurmOptions {
        job_name,
        tasks: a.array_tasks,
        partition: a.partition.clone(),
        gpus_per_task: a.gpus_per_task,
        cpus_per_task: a.cpus_per_task,
        time: a.time.clone(),
        max_concurrent: a.max_concurrent,
        extra: a.sbatch_args.clone(),
        max_array_size: Some(max_array_size),
    };
    if o.tasks == Some(0) {
        bail!("--array-tasks must be at least 1");
    }
    let mut worker_args = Vec::new();
    if let Some(k) = checkpoint_every {
        worker_args.extend(["--checkpoint-every".to_string(), k.to_string()]);
    }
    if a.workers.runs_per_gpu > 1 {
        worker_args.extend(["--runs-per-gpu".to_string(), a.workers.runs_per_gpu.to_string()]);
    }
    if a.device != Device::Auto {
        worker_args.extend(["--device".to_string(), format!("{:?}", a.device).to_lowercase()]);
    }
    let text = sweep::slurm::script(&ilr, &dir, &workdir, runs, &o, &worker_args);
    let path = dir.join("sweep.sbatch");
    ilr::util::atomic::write_atomic(&path, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    let tasks = sweep::slurm::array_tasks(runs, o.tasks, o.max_array_size);
    if tasks < o.tasks.unwrap_or(runs).min(runs) {
        eprintln!(
            "note: {} exceed the cluster's MaxArraySize of {max_array_size}{}: {} array tasks, each training \
             a shard of up to {} runs",
            count(runs, "run"),
            if read { " (scontrol show config)" } else { " (assumed: scontrol show config could not be read)" },
            tasks,
            runs.div_ceil(tasks)
        );
    }
    eprintln!(
        "wrote {}: {} in an array of {}; logs go to {}",
        path.display(),
        count(runs, "run"),
        count(tasks, "task"),
        dir.join("logs").display()
    );
    println!("sbatch {}", path.display());
    Ok(ExitCode::SUCCESS)
}
