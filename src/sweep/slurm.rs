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
    let tasks = o.tasks.unwrap_or(runs).clamp(1, runs.max(1));
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
            &SlurmOptions { tasks: Some(3), ..o },
            &[],
        );
        assert!(fewer.contains("--array=0-2%4") && fewer.contains("/3\""), "{fewer}");
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }
}
