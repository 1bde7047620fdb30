//! Each recipe's analysis of its runs: a table, numbers for the JSON, and a verdict computed from
//! them (not written by hand).

use super::compare::{compare, MetricComparison};
use super::recipes::Recipe;
use super::state::EqState;
use crate::report::collect::RunInfo;
use crate::report::fit::{fit_loglog, LinearFit, LogLogFit};
use crate::report::funcspace::MAX_INFORMATIVE_DISAGREEMENT;
use crate::report::{norm_fit_text, pooled_norm_fit, FitGroup, ReportOutput};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub holds: bool,
    pub text: String,
}

pub struct Analysis {
    pub json: Value,
    /// Markdown.
    pub table: String,
    pub verdict: Verdict,
}

fn md_row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = md_row(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    s += &md_row(&header.iter().map(|_| "---".to_string()).collect::<Vec<_>>());
    for r in rows {
        s += &md_row(r);
    }
    s
}

fn comparison_table(cs: &[MetricComparison]) -> String {
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|c| {
            vec![
                c.metric.clone(),
                c.arms
                    .iter()
                    .map(|a| format!("{}: {:.4} (n={})", a.arm, a.mean, a.seeds))
                    .collect::<Vec<_>>()
                    .join("; "),
                format!("{:.4}", c.noise),
                format!("{:.4}", c.max_gap),
                format!("{:.4}", c.tolerance),
                if c.agree { "same".into() } else { "differ".into() },
            ]
        })
        .collect();
    md_table(&["metric", "arm means", "noise (sd)", "largest gap", "tolerance", "verdict"], &rows)
}

fn compare_all(states: &[&EqState], metrics: &[&str]) -> Vec<MetricComparison> {
    metrics.iter().filter_map(|m| compare(states, m)).collect()
}

pub fn analyse(recipe: Recipe, runs: &[&RunInfo], states: &[EqState], report: &ReportOutput) -> Analysis {
    match recipe {
        Recipe::AngularUpdate => angular_update(runs, states),
        Recipe::FastEquilibrium => fast_equilibrium(report),
        Recipe::IntrinsicLr => intrinsic_lr(states),
        Recipe::ScheduleIndependence => schedule_independence(runs, states, report),
        Recipe::SmallLr => small_lr(states),
    }
}

/// Measured against theory for every scale-invariant group and tensor of every run.
fn angular_update(runs: &[&RunInfo], states: &[EqState]) -> Analysis {
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    let mut worst: f64 = 0.0;
    let mut missing = Vec::new();
    for r in runs {
        let Some(s) = &r.summary else {
            missing.push(r.id.clone());
            continue;
        };
        let arm = states.iter().find(|e| e.run_id == r.id).map_or(r.id.clone(), |e| e.arm.clone());
        let groups = s.groups.iter().map(|g| ("group", g));
        let layers = s.layers.iter().filter(|l| l.angular_ratio.is_some()).map(|l| ("tensor", l));
        for (kind, v) in groups.chain(layers) {
            let ratio = v.angular_ratio.unwrap_or(f64::NAN);
            worst = worst.max((ratio - 1.0).abs());
            rows.push(vec![
                arm.clone(),
                kind.to_string(),
                v.name.clone(),
                format!("{:.4e}", v.angular_update),
                v.angular_theory.map_or("—".into(), |t| format!("{t:.4e}")),
                format!("{ratio:.3}"),
            ]);
            json_rows.push(json!({"run_id": r.id, "arm": arm, "kind": kind, "name": v.name,
                "angular_update": v.angular_update, "angular_theory": v.angular_theory, "angular_ratio": v.angular_ratio}));
        }
    }
    let holds = missing.is_empty() && !rows.is_empty() && worst <= 0.1;
    let text = if !missing.is_empty() {
        format!("incomplete: {} run(s) have no summary", missing.len())
    } else {
        format!(
            "{} {} group/tensor rows; the largest |Δ/Δ* − 1| is {:.1}% (criterion: within 10%)",
            if holds { "holds:" } else { "does not hold:" },
            rows.len(),
            100.0 * worst
        )
    };
    Analysis {
        json: json!({ "rows": json_rows, "max_abs_ratio_error": worst }),
        table: md_table(&["run", "kind", "name", "Δ measured", "Δ* theory", "angular_ratio"], &rows),
        verdict: Verdict { holds, text },
    }
}

fn fit_text(f: &Option<LogLogFit>) -> String {
    match f {
        Some(f) => match f.slope_ci95 {
            Some([lo, hi]) => format!("{:.3} (95% CI [{lo:.3}, {hi:.3}], n = {})", f.slope, f.n),
            None => format!("{:.3} (n = {}, no CI)", f.slope, f.n),
        },
        None => "no fit".into(),
    }
}

/// The slope CI contains 1 (without a CI: the slope lies within [0.7, 1.3]).
fn ci_contains_one(f: &LogLogFit) -> bool {
    match f.slope_ci95 {
        Some([lo, hi]) => lo <= 1.0 && 1.0 <= hi,
        None => (0.7..=1.3).contains(&f.slope),
    }
}

/// The slope that a log factor alone would give over [λ_min, λ_max]: T_eq = C·ln(1/λ_e)/λ_e has
/// log-log slope 1 + ln(ln(1/λ_min)/ln(1/λ_max))/ln(λ_max/λ_min).
fn log_factor_slope(le_min: f64, le_max: f64) -> f64 {
    if !(le_min > 0.0 && le_max < 1.0 && le_max > le_min) {
        return 1.0;
    }
    1.0 + ((1.0 / le_min).ln() / (1.0 / le_max).ln()).ln() / (le_max / le_min).ln()
}

/// One arm's verdict: T_eq·λ_e bounded (growth faster than a log factor is not established: the
/// slope CI's lower end is at most the log-factor slope), and whether the slope CI contains 1.
struct ArmVerdict {
    arm: String,
    fit: Option<LogLogFit>,
    range: Option<[f64; 2]>,
    span: f64,
    bounded: Option<bool>,
    contains_one: Option<bool>,
    norm_fit: Option<LinearFit>,
}

fn arm_verdict(g: &FitGroup) -> ArmVerdict {
    let les: Vec<f64> = g.points.iter().map(|p| p.1).collect();
    let (lo, hi) = les.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let allowed = log_factor_slope(lo, hi);
    let bounded = g.fit.as_ref().map(|f| f.slope_ci95.map_or(f.slope, |[l, _]| l) <= allowed);
    ArmVerdict {
        arm: g.label.clone(),
        fit: g.fit.clone(),
        range: g.t_eq_lambda_e_range(),
        span: if lo > 0.0 { hi / lo } else { f64::NAN },
        bounded,
        contains_one: g.fit.as_ref().map(ci_contains_one),
        norm_fit: g.norm_fit.clone(),
    }
}

fn arm_sentence(v: &ArmVerdict) -> String {
    let range = v.range.map_or("—".into(), |[a, b]| format!("[{a:.2}, {b:.2}]"));
    let bounded = match v.bounded {
        Some(true) => "stays bounded (no growth beyond a log factor)",
        Some(false) => "grows faster than a log factor",
        None => "has no fit",
    };
    let one = match v.contains_one {
        Some(true) => "contains 1",
        Some(false) => "does not contain 1",
        None => "—",
    };
    let norm = v.norm_fit.as_ref().map_or(String::new(), |f| {
        format!(
            "; norm term b = {:.2}{}",
            f.slope,
            f.slope_ci95.map_or(String::new(), |[l, h]| format!(" [{l:.2}, {h:.2}]"))
        )
    });
    format!(
        "{}: T_eq·λ_e in {range} over {:.0}× of λ_e {bounded}; slope {} whose CI {one}{norm}",
        v.arm,
        v.span,
        fit_text(&v.fit)
    )
}

/// The function-space part of the verdict: one T_fs fit per arm, over its informative groups.
fn function_space_fits_text(fs_by_arm: &[(String, Option<LogLogFit>, usize)]) -> String {
    if fs_by_arm.iter().all(|(_, _, n)| *n == 0) {
        return "no group is informative, so nothing is fitted".into();
    }
    fs_by_arm
        .iter()
        .map(|(arm, f, n)| match n {
            0 => format!("{arm}: no informative group"),
            n => format!("{arm}: slope {} over {n} λ_e values", fit_text(f)),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// T_eq against 1/λ_e per arm (parameter space, the detector), the norm-term fit, and the
/// function-space times (seeds agree).
fn fast_equilibrium(report: &ReportOutput) -> Analysis {
    let verdicts: Vec<ArmVerdict> = report.fits.iter().map(arm_verdict).collect();
    let pooled = pooled_norm_fit(&report.fits);
    let arm_of = |id: &str| {
        report
            .fits
            .iter()
            .find(|g| g.points.iter().any(|p| p.0 == id) || g.censored.iter().any(|c| c == id))
            .map_or("?".to_string(), |g| g.label.clone())
    };
    let fs_points: Vec<(String, f64, f64)> = report
        .function_space
        .iter()
        .filter(|g| g.reached_before_reference && g.informative)
        .filter_map(|g| {
            let arm = arm_of(g.runs.first()?);
            g.t_fs_since_common.map(|t| (arm, g.lambda_e, t as f64))
        })
        .collect();
    let mut fits: Vec<Value> = verdicts
        .iter()
        .map(|v| {
            json!({ "arm": v.arm, "slope": v.fit.as_ref().map(|f| f.slope), "ci95": v.fit.as_ref().and_then(|f| f.slope_ci95),
                    "n": v.fit.as_ref().map_or(0, |f| f.n), "t_eq_lambda_e": v.range, "lambda_e_span": v.span,
                    "bounded": v.bounded, "ci95_contains_1": v.contains_one })
        })
        .collect();
    let norm_obj = |arm: &str, f: &LinearFit| json!({ "arm": arm, "a": f.intercept, "a_ci95": f.intercept_ci95, "b": f.slope, "b_ci95": f.slope_ci95, "n": f.n });
    fits.extend(verdicts.iter().filter_map(|v| Some(norm_obj(&v.arm, v.norm_fit.as_ref()?))));
    fits.extend(pooled.as_ref().map(|f| norm_obj("all arms", f)));

    let mut rows: Vec<Vec<String>> = Vec::new();
    for g in &report.fits {
        for ((id, le, t), n) in g.points.iter().zip(&g.norms) {
            let d = n.as_ref().and_then(|n| n.deciding_group());
            rows.push(vec![
                g.label.clone(),
                "parameter".into(),
                format!("{le:.2e}"),
                id.clone(),
                t.to_string(),
                format!("{:.2}", le * *t as f64),
                d.map_or("—".into(), |d| format!("{} {:.2}", d.group, d.initial / d.equilibrium)),
                n.as_ref().map_or("—".into(), |n| format!("{:.2}", n.norm_term())),
            ]);
        }
    }
    for g in &report.function_space {
        let t = g.t_fs_since_common.filter(|_| g.reached_before_reference);
        rows.push(vec![
            g.runs.first().map_or("?".into(), |id| arm_of(id)),
            "function".into(),
            format!("{:.2e}", g.lambda_e),
            format!(
                "{} runs (disagreement floor {:.2}{})",
                g.runs.len(),
                g.floor.disagreement,
                if g.informative { "" } else { ": uninformative, not fitted" }
            ),
            t.map_or("not reached".into(), |t| t.to_string()),
            t.map_or("—".into(), |t| format!("{:.2}", g.lambda_e * t as f64)),
            "".into(),
            "".into(),
        ]);
    }
    let mut fs_by_arm: Vec<(String, Option<LogLogFit>, usize)> = Vec::new();
    for v in &verdicts {
        let pts: Vec<(f64, f64)> = fs_points.iter().filter(|p| p.0 == v.arm).map(|p| (p.1, p.2)).collect();
        fs_by_arm.push((v.arm.clone(), fit_loglog(&pts), pts.len()));
    }
    let censored: usize = report.fits.iter().map(|g| g.censored.len()).sum();
    let holds = !verdicts.is_empty() && verdicts.iter().all(|v| v.bounded == Some(true));
    let text = format!(
        "The conjecture (Li, Lyu, Arora 2020) is an upper bound: equilibrium within O(1/λ_e) steps up to log factors, \
         so T_eq·λ_e stays bounded (up to a log factor) and curves collapse when plotted against steps·λ_e; a slope \
         below 1 does not refute it. {}: {}.{} Norm term (the time for ‖w‖ to decay from ‖w₀‖ to ‖w*‖, \
         ln(‖w₀‖²/‖w*‖²)/(2λ_e) steps): {}. Function space (seeds agree within noise; fitted only where two \
         seeds at equilibrium disagree on less than {:.0}% of the test images{}): {}.",
        if holds { "Consistent with it" } else { "Not consistent with it" },
        verdicts.iter().map(arm_sentence).collect::<Vec<_>>().join("; "),
        if censored > 0 { format!(" {censored} run(s) without T_eq are left out (the fits are biased low).") } else { String::new() },
        pooled.as_ref().map_or_else(
            || report.fits.first().and_then(|g| g.norm_fit.as_ref()).map_or("no fit".into(), norm_fit_text),
            |f| format!("{} over all arms", norm_fit_text(f))
        ),
        100.0 * MAX_INFORMATIVE_DISAGREEMENT,
        match report.function_space.iter().filter(|g| !g.informative).count() {
            0 => String::new(),
            k => format!(", which leaves out {k} of the {} (arm, λ_e) groups", report.function_space.len()),
        },
        function_space_fits_text(&fs_by_arm)
    );
    Analysis {
        json: json!({ "fits": fits,
                      "parameter_space": report.fits.iter().map(|g| json!({"arm": g.label, "fit": g.fit, "norm_fit": g.norm_fit, "points": g.points, "norms": g.norms})).collect::<Vec<_>>(),
                      "function_space": fs_by_arm.iter().map(|(arm, f, _)| json!({"arm": arm, "fit": f,
                          "points": fs_points.iter().filter(|p| &p.0 == arm).map(|p| json!({"lambda_e": p.1, "t_fs_steps": p.2})).collect::<Vec<_>>()})).collect::<Vec<_>>() }),
        table: md_table(
            &[
                "arm",
                "space",
                "λ_e",
                "run(s)",
                "T_eq (steps)",
                "T_eq·λ_e",
                "‖w₀‖/‖w*‖ (group)",
                "max(0, ln(‖w₀‖²/‖w*‖²))/2",
            ],
            &rows,
        ),
        verdict: Verdict { holds, text },
    }
}

const EQUILIBRIUM_METRICS: [&str; 5] =
    ["train_acc", "test_acc", "train_loss", "effective_lr", "angular_update"];

/// Same λ_e arms agree; other λ_e arms differ in effective LR and angular update.
fn intrinsic_lr(states: &[EqState]) -> Analysis {
    // The reference λ_e: the one most arms share.
    let mut by_le: Vec<(f64, usize)> = Vec::new();
    for s in states {
        match by_le.iter_mut().find(|(le, _)| (le / s.lambda_e - 1.0).abs() < 1e-9) {
            Some(e) => e.1 += 1,
            None => by_le.push((s.lambda_e, 1)),
        }
    }
    let Some(&(ref_le, _)) = by_le.iter().max_by_key(|e| e.1) else {
        return empty("no runs");
    };
    let same_le = |s: &&EqState| (s.lambda_e / ref_le - 1.0).abs() < 1e-9;
    let same: Vec<&EqState> = states.iter().filter(same_le).collect();
    let same_cmp = compare_all(&same, &EQUILIBRIUM_METRICS);
    let mut differ_cmp = Vec::new();
    for (le, _) in by_le.iter().filter(|(le, _)| (le / ref_le - 1.0).abs() >= 1e-9) {
        let mut pair: Vec<&EqState> = same.clone();
        pair.extend(states.iter().filter(|s| (s.lambda_e / le - 1.0).abs() < 1e-9));
        // Relabel: reference λ_e runs as one arm, the other λ_e as another.
        let relabelled: Vec<EqState> = pair
            .iter()
            .map(|s| {
                let mut c = (*s).clone();
                c.arm = format!("λ_e={:.1e}", s.lambda_e);
                c
            })
            .collect();
        differ_cmp
            .extend(compare_all(&relabelled.iter().collect::<Vec<_>>(), &["effective_lr", "angular_update"]));
    }
    let same_ok = !same_cmp.is_empty() && same_cmp.iter().all(|c| c.agree);
    let differ_ok = !differ_cmp.is_empty() && differ_cmp.iter().all(|c| !c.agree);
    let disagreeing: Vec<&str> = same_cmp.iter().filter(|c| !c.agree).map(|c| c.metric.as_str()).collect();
    let text = format!(
        "{}: the arms at λ_e = {ref_le:.1e} {}; the other λ_e {} in effective LR and angular update.",
        if same_ok && differ_ok { "holds" } else { "does not fully hold" },
        if same_ok {
            "agree on every metric".to_string()
        } else {
            format!("differ in {}", disagreeing.join(", "))
        },
        if differ_ok { "differs" } else { "does not clearly differ" }
    );
    Analysis {
        json: json!({ "reference_lambda_e": ref_le, "same_lambda_e": same_cmp, "other_lambda_e": differ_cmp }),
        table: format!(
            "Same λ_e = {ref_le:.1e}:\n\n{}\nAgainst the other λ_e:\n\n{}",
            comparison_table(&same_cmp),
            comparison_table(&differ_cmp)
        ),
        verdict: Verdict { holds: same_ok && differ_ok, text },
    }
}

/// One arm per random schedule (its seeds are the noise); the arms must agree at the end.
fn schedule_independence(runs: &[&RunInfo], states: &[EqState], report: &ReportOutput) -> Analysis {
    use crate::optim::ScheduleConfig;
    let schedule_of = |id: &str| {
        runs.iter().find(|r| r.id == id).map(|r| match &r.config.optim.schedule {
            ScheduleConfig::RandomThenCommon { seed, .. } => format!("schedule {seed}"),
            other => format!("{other:?}"),
        })
    };
    let relabelled: Vec<EqState> = states
        .iter()
        .map(|s| {
            let mut c = s.clone();
            c.arm = schedule_of(&s.run_id).unwrap_or_else(|| s.run_id.clone());
            c
        })
        .collect();
    let refs: Vec<&EqState> = relabelled.iter().collect();
    let cmp = compare_all(&refs, &["train_acc", "test_acc", "norm", "effective_lr", "angular_update"]);
    let fs = report.function_space.first();
    let fs_text = match fs {
        Some(g) => {
            let agree = match (g.t_fs_since_common, g.reached_before_reference) {
                (Some(t), true) => format!(
                    "in function space they agree within noise {t} steps after the switch (·λ_e = {:.2})",
                    t as f64 * g.lambda_e
                ),
                _ => "in function space they do not clearly agree within noise before the end".into(),
            };
            if g.informative {
                agree
            } else {
                format!(
                    "{agree} (uninformative: at equilibrium they disagree on {:.0}% of the test images)",
                    100.0 * g.floor.disagreement
                )
            }
        }
        None => "no function-space comparison (runs lack predictions)".into(),
    };
    let holds = !cmp.is_empty() && cmp.iter().all(|c| c.agree);
    Analysis {
        json: json!({ "comparisons": cmp, "function_space": fs }),
        table: comparison_table(&cmp),
        verdict: Verdict {
            holds,
            text: format!(
                "{}: after the common phase the runs {}; {fs_text}.",
                if holds { "holds" } else { "does not fully hold" },
                if holds {
                    "agree on accuracy, norm, effective LR and angular update".to_string()
                } else {
                    format!(
                        "differ in {}",
                        cmp.iter()
                            .filter(|c| !c.agree)
                            .map(|c| c.metric.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        },
    }
}

/// The large-LR, small-first and small-always arms end at the same λ_e and must agree; the norm is
/// compared only between arms that end at the same (η, λ).
fn small_lr(states: &[EqState]) -> Analysis {
    let refs: Vec<&EqState> = states.iter().collect();
    let mut cmp =
        compare_all(&refs, &["train_acc", "test_acc", "train_loss", "effective_lr", "angular_update"]);
    // The final (η, λ) most runs share.
    let count = |lr: f64, wd: f64| states.iter().filter(|s| (s.lr, s.wd) == (lr, wd)).count();
    let common = states.iter().map(|s| (s.lr, s.wd)).max_by_key(|&(lr, wd)| count(lr, wd));
    let same_end: Vec<&EqState> = states.iter().filter(|s| Some((s.lr, s.wd)) == common).collect();
    cmp.extend(compare(&same_end, "norm"));
    let holds = !cmp.is_empty() && cmp.iter().all(|c| c.agree);
    let differ: Vec<&str> = cmp.iter().filter(|c| !c.agree).map(|c| c.metric.as_str()).collect();
    Analysis {
        json: json!({ "comparisons": cmp }),
        table: comparison_table(&cmp),
        verdict: Verdict {
            holds,
            text: if holds {
                "holds: all arms reach the same equilibrium (accuracy, loss, effective LR, angular update; norm where (η, λ) match)".into()
            } else {
                format!("does not fully hold: the arms differ in {}", differ.join(", "))
            },
        },
    }
}

fn empty(why: &str) -> Analysis {
    Analysis { json: json!({}), table: String::new(), verdict: Verdict { holds: false, text: why.into() } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_space_verdict_names_arms_without_an_informative_group() {
        // T_fs = 2/λ_e exactly at three λ_e: slope 1.
        let pts: Vec<(f64, f64)> = [4e-3, 2e-3, 1e-3].iter().map(|&le| (le, 2.0 / le)).collect();
        let fitted = ("default".to_string(), fit_loglog(&pts), pts.len());
        let empty = ("large".to_string(), None, 0);

        let none = function_space_fits_text(&[empty.clone(), ("matched".into(), None, 0)]);
        assert_eq!(none, "no group is informative, so nothing is fitted");

        let mixed = function_space_fits_text(&[fitted, empty]);
        assert!(mixed.starts_with("default: slope 1.000"), "{mixed}");
        assert!(mixed.ends_with("over 3 λ_e values; large: no informative group"), "{mixed}");
    }
}
