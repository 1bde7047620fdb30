//! `ilr calibrate` end to end at a small size, and its refusals of bad input.

use std::process::Command;

fn ilr(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ilr")).args(args).output().expect("runs ilr")
}

#[test]
fn a_small_calibration_prints_the_bias_table_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = ilr(&[
        "calibrate",
        "--out",
        out,
        "--dim",
        "64",
        "--seeds",
        "3",
        "--lambda-e",
        "1.6e-2,8e-3,4e-3",
        "--momentum-rates",
        "1.6e-2",
        "--units",
        "8",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    // Exit 0 (all checks pass) or 2 (a check fails at 3 seeds): never an error.
    assert!(matches!(o.status.code(), Some(0 | 2)), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("bias") && stdout.contains("slope of log T_eq"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("large ") && l.contains("3/3")).count(),
        3,
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("calibration.json")).unwrap()).unwrap();
    assert_eq!(
        json["n_lambda"].as_u64().unwrap_or(0),
        json["rows"].as_array().unwrap().iter().filter(|r| !r["t_eq_steps"].is_null()).count() as u64
    );
    assert!(dir.path().join("calibration.png").exists() && dir.path().join("calibration.svg").exists());
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    for (args, want) in [
        (vec!["--lambda-e", "1e-3,2e-3"], "at least 3"),
        (vec!["--momentum", "1.5"], "[0, 1)"),
        (vec!["--smoothing", "-1"], "positive"),
        (vec!["--seeds", "0"], "at least 1"),
    ] {
        let mut a = vec!["calibrate", "--out", out];
        a.extend(args.iter());
        let o = ilr(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
