//! `ilr sweep` end to end with the built binary: a SIGKILL mid-run and a restart, two concurrent
//! processes on one directory, divergence, and bad specs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SPEC: &str = r#"
[sweep]
name = "test"

[base]
data = { augment = true, synthetic = { train = 256, test = 64, size = 8 } }
model = { depth = 8, width = 0.25 }
optim = { lr = 0.2, momentum = 0.9 }
train = { steps = 400, batch_size = 16, stats_every = 5, eval_every = 25, device = "cpu" }

[grid]
"optim.lambda_e" = [8e-3, 4e-3]
seed = [0, 1]
"#;

/// A run with η·λ = 10 > 2: the weights blow up within a few dozen steps.
const DIVERGING: &str = "\n[[runs]]\n\n[[runs]]\noptim.lr = 10.0\n";

fn ilr() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ilr"));
    c.env("MATMUL_NUM_THREADS", "1");
    c
}

fn write_spec(dir: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("spec-in.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn sweep(spec: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = ilr();
    c.arg("sweep")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .args(["--threads", "1", "--checkpoint-every", "20"])
        .args(extra);
    c
}

fn run_ok(mut c: Command) -> Output {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{:?} failed:\n{}", c, String::from_utf8_lossy(&o.stderr));
    o
}

/// run id → (metrics.jsonl, predictions.bin, summary.json without timings).
type Records = BTreeMap<String, (Vec<u8>, Vec<u8>, serde_json::Value)>;

fn records(out: &Path) -> Records {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(out.join("runs")).unwrap() {
        let d = e.unwrap().path();
        let id = d.file_name().unwrap().to_string_lossy().into_owned();
        let mut s: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.join("summary.json"))
                .unwrap_or_else(|_| panic!("{id} has no summary")),
        )
        .unwrap();
        s.as_object_mut().unwrap().retain(|k, _| k != "wall_time_s" && k != "steps_per_s");
        m.insert(
            id,
            (
                std::fs::read(d.join("metrics.jsonl")).unwrap(),
                std::fs::read(d.join("predictions.bin")).unwrap(),
                s,
            ),
        );
    }
    m
}

/// The uninterrupted reference sweep, run once per test binary.
fn reference() -> &'static (tempfile::TempDir, Records) {
    static R: OnceLock<(tempfile::TempDir, Records)> = OnceLock::new();
    R.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let spec = write_spec(t.path(), SPEC);
        run_ok(sweep(&spec, &t.path().join("out"), &[]));
        let r = records(&t.path().join("out"));
        assert_eq!(r.len(), 4);
        (t, r)
    })
}

/// Outcome lines of a sweep's stderr per run id: "trained", "already", "busy".
fn outcomes(stderr: &str) -> Vec<(String, &'static str)> {
    stderr
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| {
            let id = l.split_whitespace().nth(1).unwrap().to_string();
            let kind = if l.contains("already finished") {
                "already"
            } else if l.contains("in progress in another worker") {
                "busy"
            } else {
                assert!(!l.contains("FAILED"), "{l}");
                "trained"
            };
            (id, kind)
        })
        .collect()
}

#[test]
fn sigkill_mid_run_then_restart_finishes_every_run_once_with_identical_records() {
    let (_, want) = reference();
    let t = tempfile::tempdir().unwrap();
    let spec = write_spec(t.path(), SPEC);
    let out = t.path().join("out");
    let mut child = sweep(&spec, &out, &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Kill as soon as a run has a complete checkpoint but no summary: mid-run, past a checkpoint.
    let t0 = Instant::now();
    let killed_mid_run = loop {
        let mid = std::fs::read_dir(out.join("runs")).into_iter().flatten().flatten().any(|e| {
            let d = e.path();
            !d.join("summary.json").exists()
                && d.join("checkpoints")
                    .read_dir()
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|c| c.path().join("manifest.json").exists())
        });
        if mid {
            child.kill().unwrap(); // SIGKILL
            break true;
        }
        if child.try_wait().unwrap().is_some() || t0.elapsed() > Duration::from_secs(120) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    child.wait().unwrap();
    assert!(killed_mid_run, "the sweep finished before it could be killed");
    let done_before: Vec<String> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("summary.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(done_before.len() < 4);

    let o = run_ok(sweep(&spec, &out, &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("resuming from checkpoint step-"),
        "the interrupted run resumes from its checkpoint:\n{err}"
    );
    let outs = outcomes(&err);
    assert_eq!(outs.len(), 4, "{err}");
    for (id, kind) in &outs {
        let expect = if done_before.contains(id) { "already" } else { "trained" };
        assert_eq!(*kind, expect, "{id}:\n{err}");
    }
    assert_eq!(&records(&out), want, "resumed records differ from the uninterrupted sweep");
    // A third invocation trains nothing.
    let o = run_ok(sweep(&spec, &out, &[]));
    assert!(outcomes(&String::from_utf8_lossy(&o.stderr)).iter().all(|(_, k)| *k == "already"));
}

#[test]
fn two_concurrent_processes_never_train_a_run_twice() {
    let (_, want) = reference();
    let t = tempfile::tempdir().unwrap();
    let spec = write_spec(t.path(), SPEC);
    let out = t.path().join("out");
    let a = sweep(&spec, &out, &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let b =
        sweep(&spec, &out, &["--workers", "2"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let (ea, eb) = (String::from_utf8_lossy(&a.stderr), String::from_utf8_lossy(&b.stderr));
    let mut trained: BTreeMap<String, usize> = BTreeMap::new();
    for (id, kind) in outcomes(&ea).into_iter().chain(outcomes(&eb)) {
        if kind == "trained" {
            *trained.entry(id).or_default() += 1;
        }
    }
    assert_eq!(trained.len(), 4, "every run trained:\nA:\n{ea}\nB:\n{eb}");
    assert!(trained.values().all(|&n| n == 1), "a run trained twice: {trained:?}\nA:\n{ea}\nB:\n{eb}");
    assert_eq!(&records(&out), want, "concurrent workers corrupted a file");
}

#[test]
fn divergence_is_recorded_and_the_sweep_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let text = SPEC
        .replace("\"optim.lambda_e\" = [8e-3, 4e-3]\nseed = [0, 1]", "\"optim.lambda_e\" = [10.0]")
        + DIVERGING;
    let spec = write_spec(t.path(), &text.replace("lr = 0.2, momentum = 0.9", "lr = 1.0, momentum = 0.0"));
    let out = t.path().join("out");
    let o = run_ok(sweep(&spec, &out, &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("diverged at step"), "{err}");
    let r = records(&out);
    assert_eq!(r.len(), 2, "{err}");
    let diverged: Vec<_> = r.values().filter(|v| v.2["status"] == "diverged").collect();
    assert!(!diverged.is_empty(), "{err}");
    assert!(diverged.iter().all(|v| v.2["divergence"]["reason"].as_str().unwrap().contains("non-finite")
        || v.2["divergence"]["reason"].as_str().unwrap().contains("loss")));
    // Diverged runs are finished: a rerun trains nothing.
    let o = run_ok(sweep(&spec, &out, &[]));
    assert!(outcomes(&String::from_utf8_lossy(&o.stderr)).iter().all(|(_, k)| *k == "already"));
}

#[test]
fn bad_specs_and_shards_are_errors_that_name_the_key() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let fails = |text: &str, extra: &[&str], want: &str| {
        let spec = write_spec(t.path(), text);
        let o = sweep(&spec, &out, extra).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "want {want:?} in:\n{err}");
    };
    fails("[grid]\n\"optim.learning_rate\" = [0.1]\n", &[], "learning_rate");
    fails("[grid]\n\"optim.lr\" = []\n", &[], "optim.lr");
    fails("[grid]\n\"optim.lr\" = [0.1, -0.5]\n", &[], "optim.lr = -0.5");
    fails("[grid]\nseed = [1]\n", &["--shard", "3/3"], "out of range");
    // --dry-run lists the runs; sharding by hand covers each exactly once.
    let spec = write_spec(t.path(), SPEC);
    let list = |extra: &[&str]| {
        String::from_utf8_lossy(&run_ok(sweep(&spec, &out, &[&["--dry-run"], extra].concat())).stdout)
            .into_owned()
    };
    assert!(list(&[]).contains("4 runs"));
    // An empty grid (or [base] alone) is one run of the base config.
    let spec = write_spec(t.path(), "[grid]\n");
    let o = run_ok(sweep(&spec, &out, &["--dry-run"]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 run;"));
}

#[test]
fn slurm_flag_writes_an_array_script() {
    let t = tempfile::tempdir().unwrap();
    let spec = write_spec(t.path(), SPEC);
    let out = t.path().join("out");
    let o = run_ok(sweep(
        &spec,
        &out,
        &[
            "--slurm",
            "--partition",
            "gpu",
            "--gpus-per-task",
            "1",
            "--time",
            "02:00:00",
            "--max-concurrent",
            "2",
            "--sbatch-arg=--account=x",
        ],
    ));
    assert!(String::from_utf8_lossy(&o.stdout).contains("sbatch"));
    let s = std::fs::read_to_string(out.join("sweep.sbatch")).unwrap();
    for want in [
        "#SBATCH --array=0-3%2",
        "%A_%a.out",
        "--partition=gpu",
        "--gpus-per-task=1",
        "--time=02:00:00",
        "--account=x",
        "/4\"",
    ] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
    assert!(
        out.join("spec.toml").exists()
            && out.join("logs").is_dir()
            && !out.join("runs").read_dir().unwrap().any(|_| true)
    );
}

#[test]
fn a_damaged_summary_is_never_rewound_by_a_rerun() {
    let t = tempfile::tempdir().unwrap();
    // One short run from [base] alone.
    let text = SPEC.replace("steps = 400", "steps = 40");
    let text = &text[..text.find("[grid]").unwrap()];
    let spec = write_spec(t.path(), text);
    let out = t.path().join("out");
    run_ok(sweep(&spec, &out, &[]));
    let run = std::fs::read_dir(out.join("runs")).unwrap().next().unwrap().unwrap().path();
    std::fs::write(run.join("summary.json"), b"{ damaged").unwrap();
    let before: Vec<_> = ["summary.json", "metrics.jsonl", "predictions.bin"]
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();
    let o = sweep(&spec, &out, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot be read"), "{err}");
    let after: Vec<_> = ["summary.json", "metrics.jsonl", "predictions.bin"]
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();
    assert!(before == after, "the rerun touched the run's records:\n{err}");
}
