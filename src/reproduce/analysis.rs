//! Each recipe's analysis of its runs: a table, numbers for the JSON, and a verdict computed from
//! them (not written by hand).

use super::compare::{compare, MetricComparison};
use super::recipes::Recipe;
use super::state::EqState;
use crate::report::collect::RunInfo;
use crate::report::fit::{fit_loglog, LogLogFit};
use crate::report::ReportOutput;
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

/// About 1: the CI contains 1, or the slope lies within [0.7, 1.3].
fn about_one(f: &Option<LogLogFit>) -> bool {
    f.as_ref().is_some_and(|f| {
        f.slope_ci95.is_some_and(|[lo, hi]| lo <= 1.0 && 1.0 <= hi) || (0.7..=1.3).contains(&f.slope)
    })
}

/// T_eq against 1/λ_e, in parameter space (the detector) and in function space (seeds agree).
fn fast_equilibrium(report: &ReportOutput) -> Analysis {
    let param = report.fits.first();
    let param_fit = param.and_then(|g| g.fit.clone());
    let fs_points: Vec<(f64, f64)> = report
        .function_space
        .iter()
        .filter(|g| g.reached_before_reference)
        .filter_map(|g| g.t_fs_since_common.map(|t| (g.lambda_e, t as f64)))
        .collect();
    let fs_fit = fit_loglog(&fs_points);
    let mut rows: Vec<Vec<String>> = param
        .map(|g| {
            g.points
                .iter()
                .map(|(id, le, t)| {
                    vec![
                        "parameter".into(),
                        format!("{le:.2e}"),
                        id.clone(),
                        t.to_string(),
                        format!("{:.2}", le * *t as f64),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    for g in &report.function_space {
        let t = g.t_fs_since_common.filter(|_| g.reached_before_reference);
        rows.push(vec![
            "function".into(),
            format!("{:.2e}", g.lambda_e),
            format!("{} runs", g.runs.len()),
            t.map_or("not reached".into(), |t| t.to_string()),
            t.map_or("—".into(), |t| format!("{:.2}", g.lambda_e * t as f64)),
        ]);
    }
    let censored = param.map_or(0, |g| g.censored.len());
    let holds = about_one(&param_fit) && (fs_fit.is_none() || about_one(&fs_fit));
    let text = format!(
        "parameter-space slope {}{}; function-space slope {} over {} λ_e values that reached agreement. {}",
        fit_text(&param_fit),
        if censored > 0 { format!(" ({censored} runs without T_eq left out)") } else { String::new() },
        fit_text(&fs_fit),
        fs_points.len(),
        if holds {
            "Consistent with a slope of about 1."
        } else {
            "Not consistent with a slope of 1 at this scale: T_eq grows with 1/λ_e, but more slowly (see docs/REPRODUCTION.md)."
        }
    );
    Analysis {
        json: json!({ "parameter_space": { "fit": param_fit, "points": param.map(|g| &g.points) },
                      "function_space": { "fit": fs_fit, "points": fs_points } }),
        table: md_table(&["space", "λ_e", "run(s)", "T_eq (steps)", "T_eq·λ_e"], &rows),
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
        Some(g) => match (g.t_fs_since_common, g.reached_before_reference) {
            (Some(t), true) => format!(
                "in function space they agree within noise {t} steps after the switch (·λ_e = {:.2})",
                t as f64 * g.lambda_e
            ),
            _ => "in function space they do not clearly agree within noise before the end".into(),
        },
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
