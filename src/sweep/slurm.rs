//! The sbatch array script of a sweep: task i of N runs `ilr sweep DIR/spec.toml --out DIR
//! --shard i/N`, logging to DIR/logs/<job name>-%A_%a.out (%A: array job id, %a: task index).

use std::path::Path;

/// Pass-through sbatch options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlurmOptions {
    pub job_name: String,
    /// Array tasks (default: one per run).
    pub tasks: Option<usize>,
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// sbatch --time, e.g. 04:00:00.
    pub time: Option<String>,
    /// The most tasks running at once (the array's %N).
    pub max_concurrent: Option<usize>,
    /// Further `#SBATCH` lines, verbatim (e.g. --account=abc).
    pub extra: Vec<String>,
    /// The cluster's MaxArraySize (see [`array_tasks`]); None: no cap.
    pub max_array_size: Option<usize>,
}

/// The array size SLURM assumes when `scontrol show config` cannot be read: its default
/// MaxArraySize is 1001 (task ids 0..=1000); 1000 tasks stay within it.
pub const ASSUMED_MAX_ARRAY_SIZE: usize = 1000;

/// MaxArraySize from the output of `scontrol show config` ("MaxArraySize = 1001"); None when the
/// line is missing or not a whole number.
pub fn parse_max_array_size(scontrol: &str) -> Option<usize> {
    scontrol.lines().find_map(|l| {
        let (key, value) = l.split_once('=')?;
        (key.trim() == "MaxArraySize").then(|| value.trim().parse().ok())?
    })
}

/// The cluster's MaxArraySize, read with `scontrol show config` where it runs, else
/// [`ASSUMED_MAX_ARRAY_SIZE`]; the second value says which.
pub fn max_array_size() -> (usize, bool) {
    let out = std::process::Command::new("scontrol").args(["show", "config"]).output();
    let read = out
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| parse_max_array_size(&String::from_utf8_lossy(&o.stdout)));
    match read {
        Some(n) => (n.max(1), true),
        None => (ASSUMED_MAX_ARRAY_SIZE, false),
    }
}

/// The array tasks for `runs` runs: the requested number (default one per run), at least 1, at most
/// one per run and at most `max_array_size` (array task ids run from 0 to MaxArraySize − 1). Each
/// task trains shard i/tasks of the runs, so a capped array still covers every run.
pub fn array_tasks(runs: usize, requested: Option<usize>, max_array_size: Option<usize>) -> usize {
    let wanted = requested.unwrap_or(runs).clamp(1, runs.max(1));
    max_array_size.map_or(wanted, |m| wanted.min(m.max(1)))
}

/// Single-quote `s` for bash.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script, for `runs` runs. Paths must be absolute; `ilr` is the binary to run.
pub fn script(
    ilr: &Path,
    sweep_dir: &Path,
    workdir: &Path,
    runs: usize,
    o: &SlurmOptions,
    worker_args: &[String],
) -> String {
    let tasks = array_tasks(runs, o.tasks, o.max_array_size);
    let throttle = o.max_concurrent.map_or(String::new(), |m| format!("%{m}"));
    let logs = sweep_dir.join("logs");
    let mut s = String::from("#!/bin/bash\n");
    s += &format!(
        "# ilr sweep: {runs} runs in {tasks} array tasks. Submit with: sbatch {}\n",
        quote(&sweep_dir.join("sweep.sbatch").display().to_string())
    );
    s += &format!("#SBATCH --job-name={}\n", o.job_name);
    s += &format!("#SBATCH --array=0-{}{throttle}\n", tasks - 1);
    s += &format!("#SBATCH --output={}/%x-%A_%a.out\n", logs.display());
    s += &format!("#SBATCH --chdir={}\n", workdir.display());
    s += "#SBATCH --ntasks=1\n";
    if let Some(p) = &o.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if let Some(g) = o.gpus_per_task {
        s += &format!("#SBATCH --gpus-per-task={g}\n");
    }
    if let Some(c) = o.cpus_per_task {
        s += &format!("#SBATCH --cpus-per-task={c}\n");
    }
    if let Some(t) = &o.time {
        s += &format!("#SBATCH --time={t}\n");
    }
    for e in &o.extra {
        s += &format!("#SBATCH {e}\n");
    }
    s += "set -euo pipefail\n";
    s += "echo \"ilr sweep task ${SLURM_ARRAY_TASK_ID} of ${SLURM_ARRAY_JOB_ID} on $(hostname)\"\n";
    let mut cmd = vec![
        quote(&ilr.display().to_string()),
        "sweep".into(),
        quote(&sweep_dir.join("spec.toml").display().to_string()),
        "--out".into(),
        quote(&sweep_dir.display().to_string()),
        "--shard".into(),
        format!("\"${{SLURM_ARRAY_TASK_ID}}/{tasks}\""),
        "--threads".into(),
        "\"${SLURM_CPUS_PER_TASK:-1}\"".into(),
    ];
    cmd.extend(worker_args.iter().map(|a| quote(a)));
    s += &format!("exec {}\n", cmd.join(" "));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_has_the_array_logs_and_options() {
        let o = SlurmOptions {
            job_name: "ilr-tiny".into(),
            partition: Some("gpu".into()),
            gpus_per_task: Some(1),
            time: Some("01:00:00".into()),
            max_concurrent: Some(4),
            extra: vec!["--account=abc".into()],
            max_array_size: Some(1001),
            ..Default::default()
        };
        let s = script(
            Path::new("/bin/ilr"),
            Path::new("/s/d"),
            Path::new("/w"),
            10,
            &o,
            &["--checkpoint-every".into(), "50".into()],
        );
        for want in [
            "#SBATCH --array=0-9%4",
            "#SBATCH --output=/s/d/logs/%x-%A_%a.out",
            "#SBATCH --partition=gpu",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --time=01:00:00",
            "#SBATCH --account=abc",
            "--shard \"${SLURM_ARRAY_TASK_ID}/10\"",
            "'--checkpoint-every' '50'",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        let fewer = script(
            Path::new("/bin/ilr"),
            Path::new("/s/d"),
            Path::new("/w"),
            10,
            &SlurmOptions { tasks: Some(3), ..o.clone() },
            &[],
        );
        assert!(fewer.contains("--array=0-2%4") && fewer.contains("/3\""), "{fewer}");
        let capped = script(
            Path::new("/bin/ilr"),
            Path::new("/s/d"),
            Path::new("/w"),
            2500,
            &SlurmOptions { tasks: None, max_array_size: Some(1001), ..fewer_opts() },
            &[],
        );
        assert!(capped.contains("--array=0-1000") && capped.contains("/1001\""), "{capped}");
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }

    fn fewer_opts() -> SlurmOptions {
        SlurmOptions { job_name: "j".into(), ..Default::default() }
    }

    #[test]
    fn the_array_fits_the_clusters_max_array_size() {
        let config = "Configuration data as of 2026-12-04T10:00:00\nMaxArraySize            = 1001\nMaxJobCount = 10000\n";
        assert_eq!(parse_max_array_size(config), Some(1001));
        assert_eq!(parse_max_array_size("MaxArraySize = lots\n"), None);
        assert_eq!(parse_max_array_size(""), None);
        assert_eq!(array_tasks(2500, None, Some(1001)), 1001, "one task per run, capped");
        assert_eq!(array_tasks(10, None, Some(4)), 4);
        assert_eq!(array_tasks(10, Some(3), Some(4)), 3, "fewer tasks than the cap stay");
        assert_eq!(array_tasks(10, Some(50), None), 10, "never more tasks than runs");
        assert_eq!(array_tasks(0, None, Some(1000)), 1);
    }
}
