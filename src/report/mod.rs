//! `ilr report`: the runs of a sweep directory as one table, the Fast Equilibrium fit of T_eq
//! against 1/λ_e, function-space equilibrium across runs, and plots.
//!
//! Writes under DIR/report/ (every file atomically):
//! ```text
//! runs.csv, runs.json                       one row per run (see [`table`])
//! fast_equilibrium.json, .png, .svg         per group of runs: the log-log fit on λ_e clusters and
//!                                           seeds as points (see [`fit`]), its judgement and the runs
//!                                           left out (see [`verdict`]), the norm-term fit of T_eq in
//!                                           units of (1 − γ)/λ_e (see [`norms`]); over all groups the
//!                                           within-λ_e and pooled norm-term fits
//! function_space.json, function_space_<k>.csv, .png, .svg   (see [`funcspace`])
//! overview_steps.png/.svg, overview_steps_x_lambda_e.png/.svg   all selected runs overlaid
//! runs/<run-id>/steps.png/.svg, steps_x_lambda_e.png/.svg       one run's dynamics
//! index.html                                the printed verdicts, runs.csv and every PNG on one page
//!                                           (see [`html`])
//! ```

pub mod collect;
pub mod figures;
pub mod fit;
pub mod font;
pub mod funcspace;
pub mod html;
pub mod norms;
pub mod plot;
pub mod table;
pub mod verdict;

use crate::util::atomic::{write_atomic, write_json_atomic};
use anyhow::{bail, Context, Result};
use collect::{RunInfo, Status};
use figures::Axis;
use fit::{LinearFit, LogLogFit, WithinFit};
use norms::RunNorms;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Only these runs (ids or unique id prefixes) in the per-run and overview plots; empty: all.
    pub runs: Vec<String>,
    pub plots: bool,
    /// Per-run figures only when at most this many runs are selected.
    pub max_run_plots: usize,
    /// Print the Fast Equilibrium fits and the function-space results (their files are written
    /// either way); `ilr reproduce` prints only what its recipe concerns.
    pub print_fits: bool,
    pub print_function_space: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            runs: Vec::new(),
            plots: true,
            max_run_plots: 64,
            print_fits: true,
            print_function_space: true,
        }
    }
}

/// A run left out of a Fast Equilibrium fit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Excluded {
    pub run_id: String,
    pub lambda_e: f64,
    /// Censored runs: the steps trained (their T_eq is longer); diverged runs: the step of divergence.
    pub steps: u64,
}

/// One group of runs in the Fast Equilibrium analysis (an arm of the init-norm control when runs
/// differ in `model.init_norm` / `model.init_scale`). Its runs share every config key but the seed
/// and the λ_e-related ones, so one momentum γ (see [`fit_key`]).
#[derive(Clone, Debug)]
pub struct FitGroup {
    pub label: String,
    /// Heavy-ball momentum γ of the runs: times are in units of (1 − γ)/λ_e
    /// ([`crate::stats::relaxation_rate`]).
    pub momentum: f64,
    /// (run id, λ_e, T_eq) of the runs that reached equilibrium.
    pub points: Vec<(String, f64, u64)>,
    /// Completed runs without T_eq (censored: left out of the fit; see [`verdict::censored_by_lambda_e`]).
    pub censored: Vec<Excluded>,
    /// Diverged runs (left out of the fit).
    pub diverged: Vec<Excluded>,
    /// log T_eq on log(1/λ_e) over the per-λ_e means: the CI that verdicts use
    /// ([`fit::fit_loglog_clusters`]).
    pub fit: Option<LogLogFit>,
    /// The same with every run a point ([`fit::fit_loglog`]): secondary, labelled "seeds as points".
    pub fit_seeds: Option<LogLogFit>,
    /// The norm-decay numbers of each point's run (same order as `points`; None where the run has
    /// no logged group statistics).
    pub norms: Vec<Option<RunNorms>>,
    /// T_eq·λ_e/(1 − γ) = a + b·max(0, ln(‖w₀‖²/‖w*‖²))/2 over the points (see [`norm_term_fit`]).
    pub norm_fit: Option<LinearFit>,
}

impl FitGroup {
    /// The relaxation rate λ_e/(1 − γ) of this group's runs at λ_e: T_eq times it is T_eq in units
    /// of (1 − γ)/λ_e, comparable across γ (T_eq·λ_e when γ = 0).
    pub fn rate(&self, lambda_e: f64) -> f64 {
        crate::stats::relaxation_rate(lambda_e, self.momentum)
    }

    /// The unit of [`Self::rate`]-scaled times: "1/λ_e" or "(1−γ)/λ_e".
    pub fn unit(&self) -> &'static str {
        crate::stats::unit_label(self.momentum)
    }

    /// T_eq·λ_e/(1 − γ) of each point.
    pub fn t_eq_units(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().map(|p| p.2 as f64 * self.rate(p.1))
    }

    /// (λ_e, norm term, T_eq·λ_e/(1 − γ)) of the points with norm data.
    pub fn norm_points_by_lambda_e(&self) -> Vec<(f64, f64, f64)> {
        self.points
            .iter()
            .zip(&self.norms)
            .filter_map(|((_, le, t), n)| Some((*le, n.as_ref()?.norm_term(), *t as f64 * self.rate(*le))))
            .collect()
    }

    /// (norm term, T_eq·λ_e/(1 − γ)) of the points with norm data.
    pub fn norm_points(&self) -> Vec<(f64, f64)> {
        self.norm_points_by_lambda_e().into_iter().map(|(_, x, y)| (x, y)).collect()
    }

    /// [min, max] of T_eq·λ_e/(1 − γ) over the points.
    pub fn t_eq_units_range(&self) -> Option<[f64; 2]> {
        (!self.points.is_empty()).then(|| extent(self.t_eq_units()))
    }
}

/// [min, max] of `values`, skipping NaN (as f64::min/max do); [∞, −∞] when there are none.
pub(crate) fn extent(values: impl Iterator<Item = f64>) -> [f64; 2] {
    values.fold([f64::INFINITY, f64::NEG_INFINITY], |[lo, hi], v| [lo.min(v), hi.max(v)])
}

/// The least spread (max − min) of the norm term over a fit's points for b to be determined. Where
/// the recipe holds the norm term fixed (the `matched` arm at ≈ 0, `large` at ≈ ln 10), the
/// regressor is nearly constant and b's CI spans tens of units: no fit is reported there.
pub const MIN_NORM_TERM_SPREAD: f64 = 0.5;

/// T_eq·λ_e/(1 − γ) = a + b·max(0, ln(‖w₀‖²/‖w*‖²))/2 over (norm term, T_eq·λ_e/(1 − γ)) points,
/// or None when the norm term spreads over less than [`MIN_NORM_TERM_SPREAD`]. The norm decays from
/// ‖w₀‖ to ‖w*‖ in ≈ ln(‖w₀‖²/‖w*‖²)/(2λ_e/(1 − γ)) steps, so b ≈ 1 when that decay is what T_eq
/// waits for, and a is the time to equilibrium that is left, in units of (1 − γ)/λ_e.
pub fn norm_term_fit(points: &[(f64, f64)]) -> Option<LinearFit> {
    // No points give −∞ − ∞ = −∞: no fit.
    let [lo, hi] = extent(points.iter().map(|p| p.0));
    if hi - lo < MIN_NORM_TERM_SPREAD {
        return None;
    }
    fit::fit_linear(points)
}

pub struct ReportOutput {
    pub dir: PathBuf,
    pub runs: usize,
    pub fits: Vec<FitGroup>,
    pub function_space: Vec<funcspace::GroupResult>,
    pub files: Vec<PathBuf>,
}

/// Keys that vary between the λ_e points of one Fast Equilibrium group.
fn fit_free(key: &str) -> bool {
    table::is_sweep_key(key)
        || matches!(key, "train.steps" | "train.eval_every" | "train.stats_every" | "train.device")
}

/// Short legend labels: the config keys that vary across `runs` (seed, λ_e, ...).
pub fn labels(runs: &[&RunInfo]) -> Vec<String> {
    let flat: Vec<BTreeMap<String, String>> = runs.iter().map(|r| table::flatten(&r.config)).collect();
    let mut keys = table::differing_keys(&flat);
    // model.init_norm follows λ_e in the init-norm arms (a long list); λ_e names the run better.
    keys.retain(|k| !k.starts_with("train.") && k != "model.init_norm");
    runs.iter()
        .zip(&flat)
        .map(|(r, f)| {
            let parts: Vec<String> = keys
                .iter()
                .filter_map(|k| {
                    let short =
                        if k == "optim.lambda_e" { "λ_e" } else { k.rsplit('.').next().unwrap_or(k) };
                    f.get(k).map(|v| format!("{short}={}", v.trim_matches('"')))
                })
                .collect();
            if parts.is_empty() {
                r.id.clone()
            } else {
                parts.join(" ")
            }
        })
        .collect()
}

/// The init-norm arm of a config: `default` (the Kaiming init), `matched` (`model.init_norm` set,
/// as `ilr reproduce fast-equilibrium` sets it to the equilibrium norms of the λ_e), `large` or
/// `small` (init_norm set and then scaled by init_scale > 1 or < 1), `init_scale=s` (no init_norm).
pub fn init_arm(cfg: &crate::model::ModelConfig) -> String {
    let s = cfg.init_scale;
    match (&cfg.init_norm, s == 1.0) {
        (None, true) => "default".into(),
        (None, false) => format!("init_scale={s}"),
        (Some(_), true) => "matched".into(),
        (Some(_), false) if s > 1.0 => "large".into(),
        (Some(_), false) => "small".into(),
    }
}

/// The key that groups runs into one Fast Equilibrium fit: every flattened config key but the
/// λ_e-related ones and the seed; `model.init_norm` (set per λ_e) and `model.init_scale` are
/// replaced by the run's init arm.
fn fit_key(r: &RunInfo) -> BTreeMap<String, String> {
    let mut key: BTreeMap<String, String> = table::flatten(&r.config)
        .into_iter()
        .filter(|(k, _)| !fit_free(k) && !k.starts_with("model.init_"))
        .collect();
    key.insert("init".into(), init_arm(&r.config.model));
    key
}

/// Group completed and diverged runs by everything but the λ_e-related keys and the seed (so runs of
/// different γ fall in different groups), and fit each group.
fn fast_equilibrium(runs: &[RunInfo]) -> Result<Vec<FitGroup>> {
    let mut groups: Vec<(BTreeMap<String, String>, Vec<&RunInfo>)> = Vec::new();
    for r in runs.iter().filter(|r| matches!(r.status, Status::Completed | Status::Diverged)) {
        let key = fit_key(r);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let n_groups = groups.len();
    let keys: Vec<BTreeMap<String, String>> = groups.iter().map(|g| g.0.clone()).collect();
    groups
        .into_iter()
        .map(|(key, rs)| {
            let label = if n_groups == 1 {
                "all runs".to_string()
            } else {
                key.iter()
                    .filter(|(k, v)| keys.iter().any(|o| o.get(*k) != Some(v)))
                    .map(
                        |(k, v)| if k == "init" { v.clone() } else { format!("{k}={}", v.trim_matches('"')) },
                    )
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut points = Vec::new();
            let mut censored = Vec::new();
            let mut diverged = Vec::new();
            let mut norms = Vec::new();
            for r in &rs {
                let s = r.summary.as_ref().expect("completed and diverged runs have a summary");
                let excluded = |steps| Excluded { run_id: r.id.clone(), lambda_e: s.lambda_e, steps };
                match (r.status, s.t_eq_steps) {
                    (Status::Diverged, _) => {
                        diverged.push(excluded(s.divergence.as_ref().map_or(s.steps, |d| d.step)))
                    }
                    (_, Some(t)) => {
                        points.push((r.id.clone(), s.lambda_e, t));
                        norms.push(norms::run_norms(r, &r.metrics()?)?);
                    }
                    (_, None) => censored.push(excluded(s.steps)),
                }
            }
            let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.1, p.2 as f64)).collect();
            let mut g = FitGroup {
                label,
                momentum: rs[0].config.optim.momentum,
                points,
                censored,
                diverged,
                fit: fit::fit_loglog_clusters(&xy),
                fit_seeds: fit::fit_loglog(&xy),
                norms,
                norm_fit: None,
            };
            g.norm_fit = norm_term_fit(&g.norm_points());
            Ok(g)
        })
        .collect()
}

/// The norm-term fit over every group's points together with one intercept a for all λ_e (None
/// with a single group): secondary to [`within_norm_fit`], since a that moves with λ_e biases b.
pub fn pooled_norm_fit(fits: &[FitGroup]) -> Option<LinearFit> {
    (fits.len() > 1).then(|| norm_term_fit(&fits.iter().flat_map(|g| g.norm_points()).collect::<Vec<_>>()))?
}

/// b of T_eq·λ_e/(1 − γ) = a_λ + b·(norm term) with one intercept a_λ per λ_e (and γ), over every
/// group's points ([`fit::fit_within`]): only runs at the same λ_e are compared, which in the
/// init-norm control differ only in ‖w₀‖, so nothing that depends on λ_e biases b. None unless some
/// λ_e has norm terms spread over at least [`MIN_NORM_TERM_SPREAD`] (seeds of one arm alone do not
/// determine b).
pub fn within_norm_fit(fits: &[FitGroup]) -> Option<WithinFit> {
    let mut momenta: Vec<f64> = fits.iter().map(|g| g.momentum).collect();
    momenta.sort_by(f64::total_cmp);
    momenta.dedup();
    let clusters: Vec<(f64, Vec<(f64, f64)>)> = momenta
        .iter()
        .flat_map(|&m| {
            fit::group_by_lambda_e(
                fits.iter()
                    .filter(|g| g.momentum == m)
                    .flat_map(|g| g.norm_points_by_lambda_e())
                    .map(|(le, x, y)| (le, (x, y))),
            )
        })
        .collect();
    let spread = |pts: &[(f64, f64)]| {
        let [lo, hi] = extent(pts.iter().map(|p| p.0));
        hi - lo
    };
    if !clusters.iter().any(|(_, pts)| spread(pts) >= MIN_NORM_TERM_SPREAD) {
        return None;
    }
    fit::fit_within(&clusters)
}

/// " [lo, hi]" as [`verdict::ci_text`] writes it (never rounded onto 1), or " (no CI)".
fn ci_text(ci: Option<[f64; 2]>) -> String {
    ci.map_or(" (no CI)".into(), |ci| format!(" {}", verdict::ci_text(ci)))
}

/// The name of T_eq in units of (1 − γ)/λ_e: "T_eq·λ_e" when γ = 0, else "T_eq·λ_e/(1−γ)".
pub fn t_eq_units_name(momentum: f64) -> &'static str {
    if momentum == 0.0 {
        "T_eq·λ_e"
    } else {
        "T_eq·λ_e/(1−γ)"
    }
}

/// The name of T_eq in units for a set of groups: "T_eq·λ_e" when every γ is 0.
pub fn t_eq_units_name_of(fits: &[FitGroup]) -> &'static str {
    t_eq_units_name(fits.iter().map(|g| g.momentum).find(|&m| m != 0.0).unwrap_or(0.0))
}

/// "y = a + b·max(0, ln(‖w₀‖²/‖w*‖²))/2: a = …, b = … (95% CIs, n = …)" of a norm-term fit, with y
/// the name of the time in units ([`t_eq_units_name`]).
pub fn norm_fit_text(f: &LinearFit, y: &str) -> String {
    format!(
        "{y} = a + b·max(0, ln(‖w₀‖²/‖w*‖²))/2: a = {:.3}{}, b = {:.3}{} (95% CIs, n = {})",
        f.intercept,
        ci_text(f.intercept_ci95),
        f.slope,
        ci_text(f.slope_ci95),
        f.n
    )
}

/// "b = … [95% CI] from contrasts within each λ_e (…)" of the within-λ_e norm-term fit.
pub fn within_fit_text(f: &WithinFit, y: &str) -> String {
    format!(
        "{y} = a_λ + b·max(0, ln(‖w₀‖²/‖w*‖²))/2 with one intercept a_λ per λ_e (b from runs at the same λ_e, \
         which differ only in ‖w₀‖): b = {:.3}{} (95% CI, t with {} dof; n = {} runs at {} λ_e)",
        f.slope,
        ci_text(f.slope_ci95),
        f.dof,
        f.n,
        f.n_lambda
    )
}

fn print_table(runs: &[RunInfo]) {
    println!(
        "{:<48} {:>9} {:>5} {:>10} {:>8} {:>7} {:>14}",
        "run", "λ_e", "seed", "status", "test acc", "T_eq", "T_eq·λ_e/(1−γ)"
    );
    for r in runs {
        let s = r.summary.as_ref();
        let acc =
            s.and_then(|s| s.final_metrics.test_acc).map_or("—".into(), |a| format!("{:.2}%", 100.0 * a));
        let teq = s.and_then(|s| s.t_eq_steps).map_or("—".into(), |t| t.to_string());
        let tl = s.and_then(|s| Some(table::t_eq_units(s.t_eq_steps?, s.lambda_e, r.config.optim.momentum)));
        println!(
            "{:<48} {:>9.2e} {:>5} {:>10} {:>8} {:>7} {:>14}",
            r.id,
            r.lambda_e(),
            r.config.seed,
            r.status.as_str(),
            acc,
            teq,
            tl.map_or("—".into(), |t| format!("{t:.2}"))
        );
    }
}

/// The printed lines of one group's Fast Equilibrium fit (indented lines are details).
pub fn fit_lines(g: &FitGroup) -> Vec<String> {
    let n = g.points.len();
    let mut lines = vec![format!("Fast Equilibrium ({}): {}", g.label, verdict::slope_text(g))];
    let y = t_eq_units_name(g.momentum);
    if let Some([lo, hi]) = g.t_eq_units_range() {
        lines.push(format!(
            "  {y} (T_eq in units of {}): mean {:.2}, range [{lo:.2}, {hi:.2}] (the conjecture: bounded, up to a log factor)",
            g.unit(),
            g.t_eq_units().sum::<f64>() / n as f64
        ));
    }
    match &g.norm_fit {
        Some(f) => lines.push(format!("  norm term: {}", norm_fit_text(f, y))),
        None if n > 0 => lines.push(format!(
            "  norm term: no fit (the runs' ln(‖w₀‖²/‖w*‖²)/2 spread over less than {MIN_NORM_TERM_SPREAD}, so b is not determined)"
        )),
        None => {}
    }
    for ((id, le, t), rn) in g.points.iter().zip(&g.norms) {
        if let Some(d) = rn.as_ref().and_then(|r| r.deciding_group()) {
            lines.push(format!(
                "    {id}: λ_e {le:.2e}, {y} {:.2}; {}: ‖w₀‖ {:.3}, ‖w*‖ {:.3}{}, ln(‖w₀‖²/‖w*‖²)/2 = {:.2}",
                *t as f64 * g.rate(*le),
                d.group,
                d.initial,
                d.equilibrium,
                d.predicted.map_or(String::new(), |p| format!(" (theory {p:.3})")),
                d.log_ratio / 2.0
            ));
        }
    }
    if let Some(t) = verdict::excluded_text(g) {
        lines.push(format!("  {t}"));
    }
    lines
}

/// The printed lines of the norm-term fits over all groups (within λ_e, then pooled).
pub fn all_groups_norm_lines(
    fits: &[FitGroup],
    within: Option<&WithinFit>,
    pooled: Option<&LinearFit>,
) -> Vec<String> {
    let y = t_eq_units_name_of(fits);
    within
        .map(|f| format!("Norm term, all groups, within λ_e: {}", within_fit_text(f, y)))
        .into_iter()
        .chain(pooled.map(|f| {
            format!(
                "Norm term, all groups pooled with one intercept for all λ_e (secondary: biased where a depends on λ_e): {}",
                norm_fit_text(f, y)
            )
        }))
        .collect()
}

/// The printed line of function-space group `k` (0-based).
pub fn funcspace_line(k: usize, g: &funcspace::GroupResult) -> String {
    let unit = crate::stats::unit_label(g.momentum);
    let reached = match (g.t_fs_since_common, g.t_fs_units) {
        (Some(t), Some(tl)) if g.reached_before_reference => {
            format!("within noise {t} steps after it ({tl:.2} × {unit})")
        }
        (Some(t), Some(tl)) => format!(
            "within noise only from {t} steps after it ({tl:.2} × {unit}), inside the reference window: \
             not clearly at equilibrium; train longer"
        ),
        _ => "not within noise at the end: train longer".into(),
    };
    let informative = if g.informative {
        format!(
            " Informative: at equilibrium the runs disagree on {}, at most {} × chance.",
            g.chance_text(),
            funcspace::INFORMATIVE_FRACTION_OF_CHANCE
        )
    } else {
        format!(
            " Uninformative: at equilibrium the runs disagree on {}, more than {} × chance, so they share \
             little function beyond their accuracy; a lower λ_e or a net that learns the task brings it down.",
            g.chance_text(),
            funcspace::INFORMATIVE_FRACTION_OF_CHANCE
        )
    };
    format!(
        "function space {} ({}): common (η, λ, γ) from step {}; {reached}. Noise levels: |Δ test acc| {:.4}, |Δ test loss| {:.4}, disagreement {:.4} (two runs at equilibrium, steps {}–{}).{informative}",
        k + 1,
        g.label,
        g.common_from,
        g.floor.acc_gap,
        g.floor.loss_gap,
        g.floor.disagreement,
        g.reference_window[0],
        g.reference_window[1]
    )
}

/// "N runs: … completed, … diverged, …".
fn status_line(runs: &[RunInfo]) -> String {
    let by_status = |s: Status| runs.iter().filter(|r| r.status == s).count();
    format!(
        "{} runs: {} completed, {} diverged, {} failed, {} unfinished, {} pending",
        runs.len(),
        by_status(Status::Completed),
        by_status(Status::Diverged),
        by_status(Status::Failed),
        by_status(Status::Unfinished),
        by_status(Status::Pending)
    )
}

/// Runs selected by `opts.runs` (all when empty).
fn select<'a>(runs: &'a [RunInfo], wanted: &[String]) -> Result<Vec<&'a RunInfo>> {
    if wanted.is_empty() {
        return Ok(runs.iter().collect());
    }
    wanted
        .iter()
        .map(|w| {
            let m: Vec<&RunInfo> =
                runs.iter().filter(|r| r.id == *w || r.id.starts_with(w.as_str())).collect();
            match m.len() {
                1 => Ok(m[0]),
                0 => bail!("--run {w}: no such run"),
                k => bail!("--run {w}: matches {k} runs; give more of the id"),
            }
        })
        .collect()
}

/// A note when the finished runs do not all share one provenance (build, CPU and SIMD features,
/// GPU; the thread count leaves the bits unchanged): each distinct one with its number of runs.
/// Runs whose summary predates provenance count as "not recorded". None when they all agree.
pub fn provenance_note(runs: &[RunInfo]) -> Option<String> {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for s in runs.iter().filter_map(|r| r.summary.as_ref()) {
        let key = s.provenance.as_ref().map_or("not recorded".into(), |p| p.numeric_identity().join(", "));
        match kinds.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => kinds.push((key, 1)),
        }
    }
    (kinds.len() > 1).then(|| {
        let list: Vec<String> = kinds.iter().map(|(k, n)| format!("  {n} run(s): {k}")).collect();
        format!(
            "note: the runs differ in provenance (summary.json → provenance), so bitwise comparisons across \
             them do not hold:\n{}",
            list.join("\n")
        )
    })
}

pub fn report(dir: &Path, opts: &ReportOptions) -> Result<ReportOutput> {
    let runs = collect::collect(dir)?;
    if runs.is_empty() {
        bail!(
            "no runs in {} (expected run directories with a config.toml in DIR/runs/ or DIR/)",
            dir.display()
        );
    }
    let out = dir.join("report");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = Vec::new();

    let t = table::runs_table(&runs);
    write_atomic(&out.join("runs.csv"), t.to_csv().as_bytes())?;
    write_json_atomic(&out.join("runs.json"), &t.to_json())?;
    files.extend([out.join("runs.csv"), out.join("runs.json")]);
    print_table(&runs);
    let status = status_line(&runs);
    println!("{status}");

    let note = provenance_note(&runs);
    if let Some(note) = &note {
        println!("{note}");
    }

    let fits = fast_equilibrium(&runs)?;
    let pooled = pooled_norm_fit(&fits);
    let within = within_norm_fit(&fits);
    let fit_text: Vec<Vec<String>> = fits.iter().map(fit_lines).collect();
    let norm_text = all_groups_norm_lines(&fits, within.as_ref(), pooled.as_ref());
    if opts.print_fits {
        println!();
        for line in fit_text.iter().flatten().chain(&norm_text) {
            println!("{line}");
        }
    }
    let fit_json: Vec<_> = fits
        .iter()
        .map(|g| {
            json!({
                "group": g.label,
                "momentum": g.momentum,
                "unit": g.unit(),
                "fit": g.fit,
                "fit_seeds_as_points": g.fit_seeds,
                "judgement": verdict::judge(g),
                "norm_fit": g.norm_fit,
                "points": g.points.iter().zip(&g.norms).map(|((id, le, t), n)| json!({
                    "run_id": id, "lambda_e": le, "t_eq_steps": t, "t_eq_lambda_e": le * *t as f64,
                    "t_eq_units": *t as f64 * g.rate(*le),
                    "norm_term": n.as_ref().map(|n| n.norm_term()),
                    "groups": n.as_ref().map(|n| &n.groups),
                })).collect::<Vec<_>>(),
                "censored": g.censored,
                "censored_by_lambda_e": verdict::censored_by_lambda_e(g),
                "diverged": g.diverged,
            })
        })
        .collect();
    write_json_atomic(
        &out.join("fast_equilibrium.json"),
        &json!({ "groups": fit_json, "within_norm_fit": within, "pooled_norm_fit": pooled }),
    )?;
    files.push(out.join("fast_equilibrium.json"));

    // Function space: runs with metrics and predictions.
    let loaded: Vec<(&RunInfo, Vec<crate::train::MetricsRecord>, Option<crate::train::Predictions>)> = runs
        .iter()
        .filter(|r| matches!(r.status, Status::Completed | Status::Unfinished))
        .map(|r| Ok((r, r.metrics()?, r.predictions()?)))
        .collect::<Result<_>>()?;
    let data: Vec<funcspace::RunData> = loaded
        .iter()
        .filter_map(|(r, m, p)| Some(funcspace::RunData { info: r, metrics: m, predictions: p.as_ref()? }))
        .filter(|d| !d.metrics.is_empty())
        .collect();
    let fs = funcspace::function_space(&data)?;
    write_json_atomic(&out.join("function_space.json"), &fs)?;
    files.push(out.join("function_space.json"));
    if !fs.is_empty() && opts.print_function_space {
        println!();
    }
    let fs_text: Vec<String> = fs.iter().enumerate().map(|(k, g)| funcspace_line(k, g)).collect();
    for (k, g) in fs.iter().enumerate() {
        if opts.print_function_space {
            println!("{}", fs_text[k]);
        }
        // steps_since_common_units: steps·λ_e/(1 − γ), in units of (1 − γ)/λ_e.
        let mut csv = String::from("step,steps_since_common,steps_since_common_x_lambda_e,acc_gap,loss_gap,disagreement,within_noise,steps_since_common_units\n");
        let rate = crate::stats::relaxation_rate(g.lambda_e, g.momentum);
        for p in &g.points {
            csv += &format!(
                "{},{},{},{},{},{},{},{}\n",
                p.step,
                p.steps_since_common,
                p.steps_since_common as f64 * g.lambda_e,
                p.gaps.acc_gap,
                p.gaps.loss_gap,
                p.gaps.disagreement,
                p.within_noise,
                p.steps_since_common as f64 * rate
            );
        }
        let path = out.join(format!("function_space_{}.csv", k + 1));
        write_atomic(&path, csv.as_bytes())?;
        files.push(path);
    }

    if opts.plots {
        let sel = select(&runs, &opts.runs)?;
        files.extend(write_plots(&out, &sel, &fits, pooled.as_ref(), &fs, &loaded, opts)?);
    }
    let page = html::Page {
        title: format!("ilr report: {}", dir.display()),
        status,
        provenance_note: note,
        fits: fit_text,
        norm_fits: norm_text,
        function_space: fs_text,
        table: &t,
        files: &files,
    };
    let index = out.join("index.html");
    write_atomic(&index, page.render(&out).as_bytes())?;
    files.push(index);
    println!("\nwrote {} files to {}", files.len(), out.display());
    Ok(ReportOutput { dir: out, runs: runs.len(), fits, function_space: fs, files })
}

type Loaded<'a> = (&'a RunInfo, Vec<crate::train::MetricsRecord>, Option<crate::train::Predictions>);

/// The overlay of `runs`: one colour per λ_e (in decreasing order), seeds as line styles (solid,
/// dashed, dotted, then again), labelled by the keys that vary between them.
fn overlays(runs: &[(&RunInfo, Vec<crate::train::MetricsRecord>)]) -> Vec<figures::Overlay> {
    let mut les: Vec<f64> = runs.iter().map(|(r, _)| r.lambda_e()).collect();
    les.sort_by(|a, b| b.total_cmp(a));
    les.dedup();
    let mut seeds: Vec<u64> = runs.iter().map(|(r, _)| r.config.seed).collect();
    seeds.sort();
    seeds.dedup();
    const STYLES: [plot::Style; 3] = [plot::Style::Line, plot::Style::Dashed, plot::Style::Dotted];
    let names = labels(&runs.iter().map(|(r, _)| *r).collect::<Vec<_>>());
    runs.iter()
        .zip(names)
        .map(|((r, m), label)| figures::Overlay {
            label,
            recs: m.clone(),
            color: les.iter().position(|&l| l == r.lambda_e()).unwrap_or(0),
            style: STYLES[seeds.iter().position(|&s| s == r.config.seed).unwrap_or(0) % STYLES.len()],
        })
        .collect()
}

/// A file-name-safe form of a group label.
fn slug(label: &str) -> String {
    let s: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    s.trim_matches('_').chars().take(60).collect()
}

fn write_plots(
    out: &Path,
    sel: &[&RunInfo],
    fits: &[FitGroup],
    pooled: Option<&LinearFit>,
    fs: &[funcspace::GroupResult],
    loaded: &[Loaded],
    opts: &ReportOptions,
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut save = |fig: &plot::Figure, stem: PathBuf| -> Result<()> {
        fig.save(&stem)?;
        files.extend(["png", "svg"].map(|e| PathBuf::from(format!("{}.{e}", stem.display()))));
        Ok(())
    };
    if fits.iter().any(|g| !g.points.is_empty()) {
        save(&figures::fast_equilibrium_figure(fits, pooled), out.join("fast_equilibrium"))?;
    }
    let metrics = |r: &RunInfo| -> Result<Vec<crate::train::MetricsRecord>> {
        match loaded.iter().find(|l| std::ptr::eq(l.0, r)) {
            Some(l) => Ok(l.1.clone()),
            None => r.metrics(),
        }
    };
    let with_metrics: Vec<(&RunInfo, Vec<crate::train::MetricsRecord>)> = sel
        .iter()
        .map(|r| Ok((*r, metrics(r)?)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|(_, m)| !m.is_empty())
        .collect();
    let names = labels(&with_metrics.iter().map(|(r, _)| *r).collect::<Vec<_>>());
    // One overview of all selected runs; with several fit groups (arms), one per group as well.
    let mut overviews = vec![(String::new(), format!("{} runs", with_metrics.len()), with_metrics.clone())];
    if fits.len() > 1 {
        for g in fits {
            let ids: Vec<&str> = g
                .points
                .iter()
                .map(|p| p.0.as_str())
                .chain(g.censored.iter().chain(&g.diverged).map(|c| c.run_id.as_str()))
                .collect();
            let member: Vec<_> =
                with_metrics.iter().filter(|(r, _)| ids.contains(&r.id.as_str())).cloned().collect();
            if !member.is_empty() {
                overviews.push((
                    format!("{}_", slug(&g.label)),
                    format!("{}: {} runs", g.label, member.len()),
                    member,
                ));
            }
        }
    }
    for (prefix, title, member) in overviews.iter().filter(|o| !o.2.is_empty()) {
        let overlay = overlays(member);
        for axis in Axis::BOTH {
            save(
                &figures::group_figure(title, &overlay, axis),
                out.join(format!("overview_{prefix}{}", axis.file_stem())),
            )?;
        }
    }
    if with_metrics.len() <= opts.max_run_plots {
        for ((r, m), label) in with_metrics.iter().zip(&names) {
            let d = out.join("runs").join(&r.id);
            std::fs::create_dir_all(&d)?;
            for axis in Axis::BOTH {
                save(
                    &figures::run_figure(&format!("{} ({label})", r.id), m, axis),
                    d.join(axis.file_stem()),
                )?;
            }
        }
    } else {
        println!(
            "per-run plots skipped for {} runs (more than {}); pick runs with --run ID",
            with_metrics.len(),
            opts.max_run_plots
        );
    }
    for (k, g) in fs.iter().enumerate() {
        save(&funcspace_figure(g), out.join(format!("function_space_{}", k + 1)))?;
    }
    Ok(files)
}

fn funcspace_figure(g: &funcspace::GroupResult) -> plot::Figure {
    use plot::{Panel, Series, Style};
    let xs: Vec<f64> = g.points.iter().map(|p| p.step as f64).collect();
    let panel = |title: &str, y: &str, f: fn(&funcspace::Gaps) -> f64| {
        let level = f(&g.threshold);
        let (x0, x1) = (xs.first().copied().unwrap_or(0.0), xs.last().copied().unwrap_or(1.0));
        Panel {
            title: title.into(),
            x_label: "step".into(),
            y_label: y.into(),
            legend: true,
            series: vec![
                Series {
                    label: "between runs".into(),
                    points: xs.iter().zip(&g.points).map(|(&x, p)| (x, f(&p.gaps))).collect(),
                    color: 0,
                    style: Style::Line,
                },
                Series {
                    label: "noise threshold".into(),
                    points: vec![(x0, level), (x1, level)],
                    color: 3,
                    style: Style::Dashed,
                },
            ],
            markers: g.t_fs.map(|t| (t as f64, "T_fs".to_string())).into_iter().collect(),
            ..Panel::default()
        }
    };
    plot::Figure {
        title: format!(
            "function-space equilibrium: {}{}",
            g.label,
            if g.informative {
                String::new()
            } else {
                format!(
                    " (uninformative: disagreement {:.2} × chance, above {})",
                    g.disagreement_to_chance,
                    funcspace::INFORMATIVE_FRACTION_OF_CHANCE
                )
            }
        ),
        panels: vec![
            panel("|Δ test accuracy|", "mean over pairs", |x| x.acc_gap),
            panel("|Δ test loss|", "mean over pairs", |x| x.loss_gap),
            panel("prediction disagreement", "fraction of test samples", |x| x.disagreement),
        ],
        cols: 3,
        panel_size: (720, 420),
    }
}

/// A test group "arm" of γ = 0 runs at (λ_e, T_eq) named r0, r1, …, with censored runs c0, … and
/// diverged runs d0, … at (λ_e, steps), fitted as `fast_equilibrium` fits it.
#[cfg(test)]
pub(crate) fn test_group(
    points: &[(f64, u64)],
    censored: &[(f64, u64)],
    diverged: &[(f64, u64)],
) -> FitGroup {
    let pts: Vec<(String, f64, u64)> =
        points.iter().enumerate().map(|(i, &(le, t))| (format!("r{i}"), le, t)).collect();
    let ex = |v: &[(f64, u64)], p: &str| -> Vec<Excluded> {
        v.iter()
            .enumerate()
            .map(|(i, &(le, s))| Excluded { run_id: format!("{p}{i}"), lambda_e: le, steps: s })
            .collect()
    };
    let xy: Vec<(f64, f64)> = points.iter().map(|&(le, t)| (le, t as f64)).collect();
    FitGroup {
        label: "arm".into(),
        momentum: 0.0,
        norms: vec![None; pts.len()],
        points: pts,
        censored: ex(censored, "c"),
        diverged: ex(diverged, "d"),
        fit: fit::fit_loglog_clusters(&xy),
        fit_seeds: fit::fit_loglog(&xy),
        norm_fit: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{norm_term_fit, MIN_NORM_TERM_SPREAD};

    /// T_eq·λ_e = 1.3 + 1·(norm term) with a little scatter: b is found where the norm term spreads,
    /// and withheld where it is (nearly) constant, as in the recipe's `matched` and `large` arms.
    #[test]
    fn the_norm_term_fit_needs_a_spread_of_norm_terms() {
        let scatter = [0.05, -0.04, 0.02, -0.03, 0.01];
        let line = |xs: &[f64]| -> Vec<(f64, f64)> {
            xs.iter().zip(scatter).map(|(&x, e)| (x, 1.3 + x + e)).collect()
        };
        let f = norm_term_fit(&line(&[0.9, 1.2, 1.45, 1.75, 2.2])).expect("a spread of 1.3 is enough");
        assert!((f.slope - 1.0).abs() < 0.1 && (f.intercept - 1.3).abs() < 0.2, "{f:?}");
        assert!(
            norm_term_fit(&line(&[2.23, 2.3, 2.27, 2.35, 2.25])).is_none(),
            "a spread of 0.12 determines no b"
        );
        let edge = [0.0, MIN_NORM_TERM_SPREAD / 2.0, MIN_NORM_TERM_SPREAD];
        assert!(norm_term_fit(&line(&edge)).is_some(), "a spread of exactly the minimum is fitted");
    }
}
