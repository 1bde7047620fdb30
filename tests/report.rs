//! `ilr report` on run directories made by hand with known answers: T_eq = 4/λ_e (slope 1),
//! and two seeds whose predictions agree from step 500 on.

mod common;

use common::files_under;
use ilr::report::{analyse, collect, ReportOptions, Show};
use ilr::stats::VectorStats;
use ilr::train::record::{
    AngularSummary, Divergence, FinalMetrics, GroupRecord, MetricsRecord, RunStatus, Summary,
};
use ilr::train::{RunDir, TrainConfig};
use ilr::util::provenance::Provenance;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

const STEPS: u64 = 1000;
const TEST: usize = 200;

fn stats(name: &str, step: u64, lambda_e: f64) -> VectorStats {
    let theory = (2.0 * lambda_e).sqrt();
    let ratio = 1.0 - 0.8 * (-(step as f64) * lambda_e).exp();
    VectorStats {
        name: name.into(),
        norm: 1.0 + 4.0 * (-(step as f64) * lambda_e).exp(),
        grad_norm: 1.0,
        update_norm: 0.1,
        angular_update: ratio * theory,
        effective_lr: 0.1,
        angular_theory: Some(theory),
        angular_ratio: Some(ratio),
    }
}

/// A finished run; `pred(step, i)` is its predicted class of test sample i at an evaluation.
fn fake_run(dir: &Path, lambda_e: f64, seed: u64, t_eq: u64, pred: impl Fn(u64, usize) -> u8) {
    fake_run_with(dir, lambda_e, seed, t_eq, "", pred)
}

/// As [`fake_run`], with extra `[model]` keys (e.g. `init_norm = 5.0`).
fn fake_run_with(
    dir: &Path,
    lambda_e: f64,
    seed: u64,
    t_eq: u64,
    model: &str,
    pred: impl Fn(u64, usize) -> u8,
) {
    let extra = Extra { model, ..Extra::default() };
    fake_run_ext(dir, lambda_e, seed, Some(t_eq), &extra, pred)
}

/// What else a fake run may differ in.
#[derive(Default)]
struct Extra<'a> {
    /// Extra `[model]` keys.
    model: &'a str,
    momentum: f64,
    /// The run diverged at this step.
    diverged_at: Option<u64>,
    /// The commit its provenance names (default "c0ffee").
    commit: Option<&'a str>,
}

/// A finished run: completed with T_eq `t_eq` (None: no equilibrium by the end), or diverged.
fn fake_run_ext(
    dir: &Path,
    lambda_e: f64,
    seed: u64,
    t_eq: Option<u64>,
    extra: &Extra,
    pred: impl Fn(u64, usize) -> u8,
) {
    let (model, momentum) = (extra.model, extra.momentum);
    let cfg = TrainConfig::from_toml_str(&format!(
        "seed = {seed}\n[model]\n{model}\n[optim]\nlr = 0.1\nlambda_e = {lambda_e}\nmomentum = {momentum:?}\n[train]\nsteps = {STEPS}\neval_every = 50\n"
    ))
    .unwrap();
    let mut d = RunDir::create(&dir.join("runs"), &cfg).unwrap();
    for step in (10..=STEPS).step_by(10) {
        let eval = step % 50 == 0;
        let acc = 0.5 + 0.3 * (1.0 - (-(step as f64) / 300.0).exp());
        let s = stats("stream", step, lambda_e);
        d.append_metrics(&MetricsRecord {
            step,
            epoch: step as f64 / 100.0,
            lr: 0.1,
            wd: lambda_e / 0.1,
            momentum,
            optimizer: None,
            lambda_e,
            train_loss: 1.0,
            train_acc: acc,
            test_loss: eval.then_some(1.0 - acc / 2.0),
            test_acc: eval.then_some(acc + if step < 500 { 0.05 * seed as f64 } else { 0.0 }),
            groups: vec![GroupRecord {
                stats: s.clone(),
                members: vec!["conv1.weight".into()],
                smoothed_ratio: s.angular_ratio,
            }],
            layers: vec![stats("conv1.weight", step, lambda_e)],
        })
        .unwrap();
        if eval {
            let p: Vec<u8> = (0..TEST).map(|i| pred(step, i)).collect();
            d.append_predictions(step, 10, &p).unwrap();
        }
    }
    // ‖w₀‖ as the trainer records it for a group: the config's init of the group of that name
    // (the report reads only the groups'; the fake tensor gets an arbitrary finite value).
    let initial = ilr::report::norms::config_initial_norms(&cfg).unwrap();
    let initial_norm = |name: &str| initial.iter().find(|(g, _)| g == name).map_or(2.0, |(_, n)| *n);
    let angular = |name: &str| AngularSummary {
        name: name.into(),
        members: vec![],
        angular_update: 0.1,
        angular_theory: Some(0.1),
        angular_ratio: Some(1.0),
        norm: 1.0,
        effective_lr: 0.1,
        initial_norm: initial_norm(name),
    };
    d.write_summary(&Summary {
        run_id: cfg.run_id(),
        status: if extra.diverged_at.is_some() { RunStatus::Diverged } else { RunStatus::Completed },
        divergence: extra.diverged_at.map(|step| Divergence { step, reason: "loss is NaN".into() }),
        backend: "fake".into(),
        steps: STEPS,
        lambda_e,
        t_eq_steps: t_eq,
        t_eq_lambda_e: t_eq.map(|t| t as f64 * lambda_e),
        t_eq_units: t_eq.map(|t| t as f64 * ilr::stats::relaxation_rate(lambda_e, momentum)),
        time_unit: ilr::stats::unit_label(momentum).into(),
        in_equilibrium_at_end: t_eq.is_some(),
        plateau: None,
        averaging_window: [800, 1000],
        final_metrics: FinalMetrics {
            train_loss: 1.0,
            train_acc: 0.8,
            test_loss: Some(0.6),
            test_acc: Some(0.8),
            last_eval_step: Some(STEPS),
            test_window_mean: None,
        },
        wall_time_s: 1.0,
        steps_per_s: 1000.0,
        groups: vec![angular("stream")],
        layers: vec![angular("conv1.weight")],
        normalization: None,
        provenance: Some(Provenance {
            commit: extra.commit.unwrap_or("c0ffee").into(),
            ..Provenance::current(None)
        }),
    })
    .unwrap();
}

fn sweep_dir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for le in [8e-3, 4e-3, 2e-3, 1e-3] {
        fake_run(t.path(), le, 0, (4.0 / le).round() as u64, |_, i| (i % 10) as u8);
    }
    // Seed 1 at λ_e = 8e-3 disagrees on 90% of the samples before step 500 and on 10% after.
    fake_run(t.path(), 8e-3, 1, 500, |step, i| {
        let differ = if step < 500 { i % 10 != 0 } else { i % 10 == 3 };
        ((i + differ as usize) % 10) as u8
    });
    t
}

fn report(dir: &Path, font: Option<&str>) -> (String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ilr"));
    c.arg("report").arg(dir);
    if let Some(f) = font {
        c.env("ILR_FONT", f);
    }
    let o = c.output().unwrap();
    let (out, err) =
        (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "ilr report failed:\n{out}\n{err}");
    (out, err)
}

#[test]
fn report_writes_tables_fit_function_space_and_plots() {
    let t = sweep_dir();
    let (out, _) = report(t.path(), None);
    let fit = out.lines().find(|l| l.starts_with("Fast Equilibrium")).unwrap_or_else(|| panic!("{out}"));
    assert!(
        fit.contains("slope of log T_eq on log(1/λ_e) 1.000, 95% CI [")
            && fit.contains("from 4 λ_e clusters")
            && fit.contains("seeds as points: 1.000")
            && fit.contains("n = 5"),
        "{fit}"
    );
    let r = t.path().join("report");
    let csv = std::fs::read_to_string(r.join("runs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    for col in ["run_id", "lambda_e", "seed", "status", "final_test_acc", "t_eq_steps", "t_eq_lambda_e"] {
        assert!(header.contains(&col), "{col} missing: {header:?}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("runs.json")).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 5);
    assert!(json.as_array().unwrap().iter().all(|row| row["status"] == "completed"));
    let fe: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("fast_equilibrium.json")).unwrap()).unwrap();
    let slope = fe["groups"][0]["fit"]["slope"].as_f64().unwrap();
    assert!((slope - 1.0).abs() < 0.01, "{slope}");
    assert_eq!(fe["groups"][0]["fit"]["points"], "lambda_e_means", "{fe}");
    assert_eq!(fe["groups"][0]["fit"]["n_lambda"], 4, "{fe}");
    assert_eq!(fe["groups"][0]["fit_seeds_as_points"]["n"], 5, "{fe}");
    assert_eq!(fe["groups"][0]["unit"], "1/λ_e", "{fe}");

    // Function space: one group (the two seeds at λ_e = 8e-3), within noise from step 500.
    let fs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("function_space.json")).unwrap()).unwrap();
    assert_eq!(fs.as_array().unwrap().len(), 1, "{fs}");
    assert_eq!(fs[0]["t_fs"], 500, "{fs}");
    assert!((fs[0]["floor"]["disagreement"].as_f64().unwrap() - 0.1).abs() < 1e-9);
    assert_eq!(fs[0]["informative"], true, "{fs}");
    assert!(out.contains("function space 1") && !out.contains("Uninformative"), "{out}");

    for stem in ["fast_equilibrium", "overview_steps", "overview_steps_x_lambda_e", "function_space_1"] {
        let png = std::fs::read(r.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png");
        let svg = std::fs::read_to_string(r.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{stem}.svg");
    }
    let runs: Vec<_> = std::fs::read_dir(r.join("runs")).unwrap().collect();
    assert_eq!(runs.len(), 5);
}

/// Seeds that disagree on 60% of the test images at equilibrium share no function: the group is
/// reported, and flagged as uninformative.
#[test]
fn function_space_with_seeds_disagreeing_on_most_images_is_uninformative() {
    let t = tempfile::tempdir().unwrap();
    fake_run(t.path(), 4e-3, 0, 1000, |_, i| (i % 10) as u8);
    fake_run(t.path(), 4e-3, 1, 1000, |_, i| ((i + (i % 10 < 6) as usize) % 10) as u8);
    let (out, _) = report(t.path(), None);
    let fs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("report/function_space.json")).unwrap())
            .unwrap();
    assert!((fs[0]["floor"]["disagreement"].as_f64().unwrap() - 0.6).abs() < 1e-9, "{fs}");
    assert_eq!(fs[0]["informative"], false, "{fs}");
    let line = out.lines().find(|l| l.starts_with("function space 1")).unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("Uninformative: at equilibrium the runs disagree on 60% of the test images"),
        "{line}"
    );
}

#[test]
fn plots_without_a_font_have_no_text_but_are_written() {
    let t = sweep_dir();
    let (_, err) = report(t.path(), Some("none"));
    assert!(err.contains("without text"), "{err}");
    let png = std::fs::read(t.path().join("report/fast_equilibrium.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

/// The mean of the fake runs' stream norm 1 + 4·e^{−step·λ_e} over the averaging window [800, 1000].
fn fake_equilibrium_norm(lambda_e: f64) -> f64 {
    let steps: Vec<u64> = (800..=STEPS).step_by(10).collect();
    steps.iter().map(|&s| 1.0 + 4.0 * (-(s as f64) * lambda_e).exp()).sum::<f64>() / steps.len() as f64
}

#[test]
fn norm_term_fit_recovers_a_and_b_and_arms_are_grouped() {
    // Default-arm runs (Kaiming init) and "matched"-style runs whose init_norm varies: within the
    // latter, T_eq·λ_e = 0.8 + 1.0·max(0, ln(‖w₀‖²/‖w*‖²))/2 exactly (up to rounding T_eq).
    let t = tempfile::tempdir().unwrap();
    for le in [8e-3, 4e-3, 2e-3] {
        fake_run(t.path(), le, 0, (2.0 / le).round() as u64, |_, i| (i % 10) as u8);
    }
    let (a, b) = (0.8, 1.0);
    for (le, w0) in [(8e-3, 2.0), (4e-3, 5.0), (2e-3, 20.0), (1e-3, 60.0)] {
        let term = ((w0 * w0) / fake_equilibrium_norm(le).powi(2)).ln().max(0.0) / 2.0;
        let t_eq = ((a + b * term) / le).round() as u64;
        fake_run_with(t.path(), le, 0, t_eq, &format!("init_norm = {w0}"), |_, i| (i % 10) as u8);
    }
    let (out, _) = report(t.path(), None);
    assert!(
        out.contains("Fast Equilibrium (default)") && out.contains("Fast Equilibrium (matched)"),
        "{out}"
    );
    assert!(out.contains("norm term: T_eq·λ_e = a + b·max(0, ln(‖w₀‖²/‖w*‖²))/2"), "{out}");
    let fe: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.path().join("report/fast_equilibrium.json")).unwrap(),
    )
    .unwrap();
    let groups = fe["groups"].as_array().unwrap();
    let matched = groups.iter().find(|g| g["group"] == "matched").unwrap_or_else(|| panic!("{fe}"));
    let f = &matched["norm_fit"];
    assert!((f["slope"].as_f64().unwrap() - b).abs() < 0.01, "{f}");
    assert!((f["intercept"].as_f64().unwrap() - a).abs() < 0.01, "{f}");
    let points = matched["points"].as_array().unwrap();
    let p = points.iter().find(|p| p["lambda_e"] == 1e-3).unwrap_or_else(|| panic!("{matched}"));
    let g = &p["groups"][0];
    assert_eq!(g["group"], "stream");
    assert!((g["initial"].as_f64().unwrap() - 60.0).abs() < 1e-9, "{g}");
    assert!((g["equilibrium"].as_f64().unwrap() - fake_equilibrium_norm(1e-3)).abs() < 1e-9, "{g}");
    // τ = ln(‖w₀‖²/‖w*‖²)/(2λ_e), in steps; the default arm's own ‖w₀‖ is the Kaiming init's.
    let tau = g["tau_steps"].as_f64().unwrap();
    assert!((tau - (3600.0 / fake_equilibrium_norm(1e-3).powi(2)).ln() / 2e-3).abs() < 1e-6, "{g}");
    let default = groups.iter().find(|g| g["group"] == "default").unwrap();
    let w0 = default["points"][0]["groups"][0]["initial"].as_f64().unwrap();
    assert!(w0 > 1.0 && w0 != 60.0, "{w0}");
    assert!(fe["pooled_norm_fit"]["slope"].is_number(), "{fe}");
    // Both arms at 8e-3, 4e-3 and 2e-3: b from within those λ_e (1e-3 has one run: no contrast).
    let w = &fe["within_norm_fit"];
    assert_eq!(
        (w["n"].as_u64(), w["n_lambda"].as_u64(), w["dof"].as_u64()),
        (Some(6), Some(3), Some(2)),
        "{w}"
    );
    assert!(out.contains("Norm term, all groups, within λ_e: T_eq·λ_e = a_λ + b·"), "{out}");
    assert!(out.contains("pooled with one intercept for all λ_e (secondary"), "{out}");
    for stem in ["fast_equilibrium", "overview_default_steps", "overview_matched_steps_x_lambda_e"] {
        assert!(t.path().join(format!("report/{stem}.png")).is_file(), "{stem}");
    }
}

/// Runs at γ = 0 and γ = 0.9 are fitted apart, the latter in units of (1−γ)/λ_e; a run censored
/// at the highest λ_e and a diverged run are named, with what they do to the fit.
#[test]
fn momenta_are_fitted_apart_and_left_out_runs_are_named() {
    let t = tempfile::tempdir().unwrap();
    let same = |_: u64, i: usize| (i % 10) as u8;
    let plain = Extra::default();
    for (le, k) in [(8e-3, 1.05), (4e-3, 0.97), (2e-3, 1.02), (1e-3, 0.99)] {
        fake_run_ext(t.path(), le, 0, Some((4.0 * k / le) as u64), &plain, same);
        fake_run_ext(t.path(), le, 1, Some((4.0 / k / le) as u64), &plain, same);
    }
    fake_run_ext(t.path(), 8e-3, 2, None, &plain, same);
    fake_run_ext(t.path(), 1.6e-2, 0, None, &Extra { diverged_at: Some(120), ..Extra::default() }, same);
    let heavy = Extra { momentum: 0.9, ..Extra::default() };
    for le in [4e-3, 2e-3, 1e-3] {
        // T_eq·λ_e/(1 − γ) = 4: T_eq = 0.4/λ_e.
        fake_run_ext(t.path(), le, 0, Some((0.4 / le).round() as u64), &heavy, same);
    }
    let (out, _) = report(t.path(), None);
    let fe: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.path().join("report/fast_equilibrium.json")).unwrap(),
    )
    .unwrap();
    let groups = fe["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{fe}");
    let g9 = groups.iter().find(|g| g["momentum"] == 0.9).unwrap_or_else(|| panic!("{fe}"));
    assert_eq!(g9["unit"], "(1−γ)/λ_e");
    for p in g9["points"].as_array().unwrap() {
        assert!((p["t_eq_units"].as_f64().unwrap() - 4.0).abs() < 1e-9, "{p}");
    }
    let g0 = groups.iter().find(|g| g["momentum"] == 0.0).unwrap();
    assert_eq!(g0["fit"]["n_lambda"], 4);
    assert_eq!(g0["censored_by_lambda_e"][0]["slope_bias"], "up", "{g0}");
    assert_eq!(g0["diverged"][0]["steps"], 120, "{g0}");
    assert!(out.contains("T_eq·λ_e/(1−γ) (T_eq in units of (1−γ)/λ_e): mean 4.00"), "{out}");
    assert!(
        out.contains("1 completed run(s) reached no equilibrium by their end and are dropped: ")
            && out.contains("(λ_e 8.00e-3, T_eq > 1000 steps = 8.00 × 1/λ_e)")
            && out.contains("at λ_e 8.00e-3 the mean log T_eq is biased low, above the centre of the fitted λ_e range, so the slope is biased up"),
        "{out}"
    );
    assert!(
        out.contains("1 diverged run(s) are excluded: ")
            && out.contains("the fit says nothing about λ_e 1.60e-2"),
        "{out}"
    );
    let csv = std::fs::read_to_string(t.path().join("report/runs.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("t_eq_units,time_unit"), "{csv}");
}

#[test]
fn runs_from_different_builds_are_named_as_such() {
    let t = tempfile::tempdir().unwrap();
    let same = |_: u64, i: usize| (i % 10) as u8;
    fake_run_ext(t.path(), 4e-3, 0, Some(1000), &Extra::default(), same);
    fake_run_ext(t.path(), 4e-3, 1, Some(1000), &Extra::default(), same);
    let (out, _) = report(t.path(), None);
    assert!(!out.contains("differ in provenance"), "{out}");
    fake_run_ext(t.path(), 2e-3, 0, Some(2000), &Extra { commit: Some("beef"), ..Extra::default() }, same);
    let (out, _) = report(t.path(), None);
    assert!(out.contains("note: the runs differ in provenance"), "{out}");
    assert!(out.contains("2 run(s): ilr") && out.contains("commit c0ffee"), "{out}");
    assert!(out.contains("1 run(s): ilr") && out.contains("commit beef"), "{out}");
    let html = std::fs::read_to_string(t.path().join("report/index.html")).unwrap();
    assert!(html.contains("note: the runs differ in provenance"), "the note is on the page too");
}

/// The values of every `attr="..."` in `html`.
fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let pat = format!(" {attr}=\"");
    html.match_indices(&pat)
        .map(|(i, _)| {
            let rest = &html[i + pat.len()..];
            &rest[..rest.find('"').expect("closed attribute")]
        })
        .collect()
}

/// index.html names only files that exist in the report folder, shows every PNG, and carries the
/// printed fit and function-space lines and the table, escaped.
#[test]
fn index_html_references_every_plot_and_only_existing_files() {
    let t = sweep_dir();
    let (out, _) = report(t.path(), None);
    let r = t.path().join("report");
    let html = std::fs::read_to_string(r.join("index.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    let srcs = attr_values(&html, "src");
    let refs: Vec<&str> = srcs.iter().chain(&attr_values(&html, "href")).copied().collect();
    assert!(!refs.is_empty());
    for f in &refs {
        assert!(!f.contains("://") && !f.starts_with('/'), "not a relative link: {f}");
        assert!(r.join(f).is_file(), "index.html names {f}, which is not in the report folder");
    }
    let pngs: Vec<String> = files_under(&r)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| p.strip_prefix(&r).unwrap().to_string_lossy().replace('\\', "/"))
        .collect();
    assert_eq!(pngs.len(), 4 + 2 * 5, "{pngs:?}");
    for p in &pngs {
        assert!(srcs.contains(&p.as_str()), "{p} is not shown on the page");
    }
    // The printed lines, escaped as HTML text.
    let escape =
        |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&#39;");
    for prefix in ["Fast Equilibrium (", "function space 1"] {
        let line = out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{out}"));
        assert!(html.contains(&escape(line)), "{line} not on the page");
    }
    let csv = std::fs::read_to_string(r.join("runs.csv")).unwrap();
    let id = csv.lines().nth(1).unwrap().split(',').next().unwrap();
    assert!(html.contains(&format!("<td>{id}</td>")), "run {id} not in the table");
    assert_eq!(html.matches("<tr>").count(), 6, "header and five runs");
}

/// The contents and modification time of every file under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let modified = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p.clone(), (std::fs::read(&p).unwrap(), modified))
        })
        .collect()
}

/// `analyse` only computes: twice on the same runs it gives the same data, and it leaves the sweep
/// directory as it was. `write` then writes what `ilr report` writes, byte for byte, and `lines`
/// are what it prints.
#[test]
fn analyse_is_pure_and_write_and_lines_are_what_ilr_report_writes_and_prints() {
    let t = sweep_dir();
    let before = snapshot(t.path());
    let runs = collect::load(t.path()).unwrap();
    let opts = ReportOptions::default();
    let a = analyse(&runs, &opts).unwrap();
    let b = analyse(&runs, &opts).unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert_eq!(snapshot(t.path()), before, "analyse changed the sweep directory");
    assert!(!t.path().join("report").exists());

    let written = a.write(t.path()).unwrap();
    assert_eq!(written.dir, t.path().join("report"));
    let contents = |dir: &Path| -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot(dir).into_iter().map(|(p, (bytes, _))| (p, bytes)).collect()
    };
    let ours = contents(&written.dir);
    let mut listed = written.files.clone();
    listed.sort();
    assert_eq!(listed, ours.keys().cloned().collect::<Vec<_>>(), "files lists every file written");
    let (out, _) = report(t.path(), None);
    assert_eq!(contents(&written.dir), ours, "ilr report writes other bytes");
    assert_eq!(out, a.lines(&written, Show::ALL).join("\n") + "\n");
}
