//! `ilr train` run again on the same run id, through the binary: a finished run is never lost (a
//! rerun, killed or not, leaves it byte for byte; --force moves it aside), an unfinished one resumes
//! bit-identically, a second process on a run in training is refused, and checkpoints are
//! byte-reproducible across processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A run of a few seconds: PreResNet-8 ×0.25 on 8×8 synthetic images.
const CONFIG: &str = "[data.synthetic]\ntrain = 256\ntest = 64\nsize = 8\n\
    [model]\ndepth = 8\nwidth = 0.25\n[optim]\nlr = 0.2\nlambda_e = 5e-3\nmomentum = 0.9\n\
    [train]\nbatch_size = 16\nstats_every = 5\neval_every = 10\ndevice = \"cpu\"\n";

fn cmd(dir: &Path, steps: u64, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ilr"));
    c.args(["train", "--config", "run.toml", "--out", "runs", "--threads", "1", "--quiet"])
        .args(["--steps", &steps.to_string(), "--checkpoint-every", "10"])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("run.toml"), CONFIG).unwrap();
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one run directory under runs/ (not moved aside).
fn run_dir(dir: &Path) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().contains(".replaced-"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

/// Every file of a run directory (but its lock) with its bytes, by relative path.
fn snapshot(run: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.file_name().unwrap() != "lock" {
                out.push((p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(run, run, &mut out);
    out.sort();
    out
}

/// What must be identical between two runs of one config: the records, the summary without its
/// wall times, and the weights of every checkpoint (state.safetensors holds wall times).
fn results(run: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(run)
        .into_iter()
        .filter(|(name, _)| !name.ends_with("state.safetensors") && !name.ends_with("manifest.json"))
        .map(|(name, bytes)| {
            if name != "summary.json" {
                return (name, bytes);
            }
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            for k in ["wall_time_s", "steps_per_s"] {
                v.as_object_mut().unwrap().remove(k);
            }
            (name, serde_json::to_vec(&v).unwrap())
        })
        .collect()
}

/// Wait (up to a minute, polling) until `run` has at least `records` metrics records.
fn wait_for_records(run: &Path, records: usize, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
        if n >= records {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before writing {records} records");
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress in a minute");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_finished_run_survives_reruns_and_kills_and_force_moves_it_aside() {
    let dir = setup();
    let first = cmd(dir.path(), 40, &[]).output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let run = run_dir(dir.path());
    let finished = snapshot(&run);
    let names: Vec<&str> = finished.iter().map(|(n, _)| n.as_str()).collect();
    for want in
        ["summary.json", "metrics.jsonl", "predictions.bin", "checkpoints/step-0000000000/model.safetensors"]
    {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    let steps: Vec<&str> = names.iter().filter(|n| n.ends_with("manifest.json")).copied().collect();
    assert_eq!(steps.len(), 3, "step 0 and the newest two checkpoints are kept: {steps:?}");

    // A plain rerun: says where the results are, exits 0, changes nothing.
    let again = cmd(dir.path(), 40, &[]).output().unwrap();
    assert!(again.status.success());
    let err = stderr(&again);
    let id = run.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains("is finished") && err.contains(&format!("runs/{id}")), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(snapshot(&run), finished, "a rerun changed the finished run");

    // Reruns killed (SIGKILL) at once and a little later: nothing changes either.
    for wait in [0, 50, 300] {
        let mut child = cmd(dir.path(), 40, &[]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(wait));
        let _ = child.kill();
        child.wait().unwrap();
        assert_eq!(snapshot(&run), finished, "a rerun killed after {wait} ms changed the finished run");
    }

    // --force, killed mid-training: the finished run is moved aside whole, never deleted.
    let mut child = cmd(dir.path(), 40, &["--force"]).spawn().unwrap();
    let moved = || {
        std::fs::read_dir(dir.path().join("runs"))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains(".replaced-"))
    };
    let t0 = Instant::now();
    while !moved() {
        assert!(t0.elapsed() < Duration::from_secs(60), "--force moved nothing aside");
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_for_records(&run, 2, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".replaced-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(snapshot(&aside[0]), finished, "--force must move the old run, not change it");
    assert!(!run.join("summary.json").exists(), "the killed run did not finish");

    // Rerun: the unfinished run resumes from its checkpoint and ends exactly as the first did,
    // down to the bytes of every checkpoint's model.safetensors.
    let resumed = cmd(dir.path(), 40, &[]).output().unwrap();
    let err = stderr(&resumed);
    assert!(resumed.status.success(), "{err}");
    assert!(err.contains("unfinished run"), "{err}");
    assert_eq!(results(&run), results(&aside[0]), "the resumed run differs from the uninterrupted one");
}

#[test]
fn a_second_process_on_a_run_in_training_is_refused_and_names_the_first() {
    let dir = setup();
    let mut first = cmd(dir.path(), 100_000, &[]).spawn().unwrap();
    let runs = dir.path().join("runs");
    let t0 = Instant::now();
    let run = loop {
        if let Some(e) = std::fs::read_dir(&runs).ok().and_then(|mut d| d.next()) {
            break e.unwrap().path();
        }
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_for_records(&run, 1, &mut first);
    let second = cmd(dir.path(), 100_000, &[]).output().unwrap();
    // --force does not take a run from its holder either.
    let forced = cmd(dir.path(), 100_000, &["--force"]).output().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    for o in [&second, &forced] {
        let err = stderr(o);
        assert!(!o.status.success());
        assert!(err.contains(&format!("pid {}", first.id())) && err.contains("being trained by"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 1, "nothing was moved aside");
}

#[test]
fn f64_runs_on_the_cpu_under_their_own_id_and_logs_get_progress_lines() {
    let dir = setup();
    let o = cmd(dir.path(), 10, &["--dtype", "f64"]).output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let run = run_dir(dir.path());
    assert!(run.file_name().unwrap().to_string_lossy().contains("-f64-"), "{}", run.display());
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["backend"], "cpu-f64");
    assert!(s["groups"][0]["initial_norm"].as_f64().unwrap() > 0.0);
    // stderr is a pipe here, and no --quiet: plain progress lines, at every logged step with
    // --progress-every 0.
    let o = Command::new(env!("CARGO_BIN_EXE_ilr"))
        .args(["train", "--config", "run.toml", "--out", "other", "--steps", "10", "--progress-every", "0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("step 5/10: loss ") && err.contains("Δ/Δ*"), "{err}");

    let o = cmd(dir.path(), 10, &["--dtype", "f64", "--device", "cuda"]).output().unwrap();
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("CPU only") && !err.contains("panicked"), "{err}");
}
