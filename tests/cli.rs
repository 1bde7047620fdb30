//! The `ilr` binary end to end: bad input gets a clear error and no panic; real CIFAR files train.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ilr(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ilr")).args(args).current_dir(cwd).output().expect("ilr runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `records` CIFAR-10 records (label i % 10, pixels i) in the real binary format.
fn write_cifar10(path: &Path, records: usize) {
    let mut bytes = Vec::with_capacity(records * 3073);
    for i in 0..records {
        bytes.push((i % 10) as u8);
        bytes.extend(std::iter::repeat_n(i as u8, 3072));
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_truncated_test_batch_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(&dir.path().join("data_batch_1.bin"), 64);
    write_cifar10(&dir.path().join("test_batch.bin"), 8);
    let test = dir.path().join("test_batch.bin");
    let bytes = std::fs::read(&test).unwrap();
    std::fs::write(&test, &bytes[..bytes.len() - 100]).unwrap();
    let o = ilr(
        &["train", "--data", dir.path().to_str().unwrap(), "--steps", "2", "--quiet", "--device", "cpu"],
        dir.path(),
    );
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("test_batch.bin") && err.contains("truncated"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.path().join("runs").exists(), "nothing is written for a run that could not start");
}

#[test]
fn a_missing_directory_and_a_bad_config_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = ilr(&["train", "--data", "/nonexistent/cifar", "--steps", "2", "--device", "cpu"], dir.path());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/cifar"), "{}", stderr(&o));
    let o = ilr(&["train", "--set", "optim.learning_rate=0.1", "--device", "cpu"], dir.path());
    assert!(!o.status.success() && stderr(&o).contains("learning_rate"), "{}", stderr(&o));
    let o = ilr(&["train", "--lr=-1", "--device", "cpu"], dir.path());
    assert!(!o.status.success() && stderr(&o).contains("optim.lr"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn trains_on_real_cifar10_files_when_present() {
    let data: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "shared", "data", "cifar10-jpeg"].iter().collect();
    if !data.join("test_batch.bin").exists() {
        println!("skipped: no CIFAR-10 sample files at {}", data.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = ilr(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "20",
            "--quiet",
            "--device",
            "cpu",
            "--set",
            "data.test_limit=512",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("using 1 of 5 training batches"), "{}", stderr(&o));
    let runs: Vec<_> =
        std::fs::read_dir(dir.path().join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 20);
    assert!(summary["final"]["test_acc"].as_f64().unwrap() >= 0.0);
}

/// `--set optim.kind=…` trains with that optimizer on the CPU and prints its Δ* (or "no prediction"
/// for Adam + L2) and η/‖w‖; metrics.jsonl names the optimizer and has a null Δ* for adam; a
/// heavy-ball momentum with AdamW is an error that says why.
#[test]
fn other_optimizers_train_and_print_their_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["train", "--device", "cpu", "--quiet", "--steps", "6", "--lr", "1e-3", "--wd", "0.1"];
    let base =
        base.iter().copied().chain(["--set", "data.synthetic.train=256", "--set", "data.synthetic.test=64"]);
    let base: Vec<&str> = base.collect();
    // Δ* at λ_e = 1e-4 from the balance of stats::rotational (the table prints 4 digits).
    let adamw = format!("{:.3e}", ilr::stats::rotational::adamw_angular_update(1e-4, 0.9));
    let lion = format!("{:.3e}", ilr::stats::rotational::lion_angular_update(1e-4, 0.9, 0.99));
    for (kind, delta_star) in [("adamw", adamw.as_str()), ("lion", lion.as_str()), ("adam", "no prediction")]
    {
        let set = format!("optim.kind={kind}");
        let o = ilr(&[&base[..], &["--set", &set]].concat(), dir.path());
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{kind}: {}", stderr(&o));
        assert!(
            out.contains(&format!("Δ* ({kind})")) && out.contains("η/‖w‖") && !out.contains("η/‖w‖²"),
            "{out}"
        );
        let stream = out.lines().find(|l| l.starts_with("stream")).unwrap_or_default();
        assert!(stream.contains(delta_star), "{kind}: {out}");
    }
    let adam = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p.join("config.toml")).unwrap().contains("kind = \"adam\""))
        .unwrap();
    let first = std::fs::read_to_string(adam.join("metrics.jsonl")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(rec["optimizer"], "adam");
    assert!(rec["groups"][0]["angular_theory"].is_null() && rec["groups"][0]["angular_ratio"].is_null());
    let o = ilr(&[&base[..], &["--set", "optim.kind=adamw", "--momentum", "0.9"]].concat(), dir.path());
    assert!(!o.status.success() && stderr(&o).contains("optim.betas"), "{}", stderr(&o));
}
