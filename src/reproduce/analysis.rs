//! Each recipe's analysis of its runs: a table, numbers for the JSON, and a verdict computed from
//! them (not written by hand).

use super::compare::{compare, MetricComparison};
use super::recipes::Recipe;
use super::state::EqState;
use crate::report::collect::RunInfo;
use crate::report::extent;
use crate::report::fit::{
    fit_loglog_clusters, group_by_lambda_e, same_lambda_e, LinearFit, LogLogFit, WithinFit,
};
use crate::report::funcspace::{GroupResult, INFORMATIVE_FRACTION_OF_CHANCE};
use crate::report::verdict::{self, SlopeJudgement};
use crate::report::{
    norm_fit_text, t_eq_units_name, t_eq_units_name_of, within_fit_text, FastEquilibrium, FitGroup,
    ReportData, MIN_NORM_TERM_SPREAD,
};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

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

pub fn analyse(recipe: Recipe, runs: &[&RunInfo], states: &[EqState], report: &ReportData) -> Analysis {
    match recipe {
        Recipe::AngularUpdate => angular_update(runs, states),
        Recipe::FastEquilibrium | Recipe::FastEquilibriumAdamw => {
            fast_equilibrium(&report.fast_equilibrium, &report.function_space)
        }
        Recipe::IntrinsicLr => intrinsic_lr(states),
        Recipe::ScheduleIndependence => schedule_independence(runs, states, report.function_space.first()),
        Recipe::SmallLr => small_lr(states),
    }
}

/// Within this of Δ* every group and tensor of a run must lie (the claim's "within 10%").
const ANGULAR_TOLERANCE: f64 = 0.1;

/// Measured against theory for every scale-invariant group and tensor of every run, judged per
/// optimizer kind (each against its own Δ*, docs/OPTIMIZERS.md). Adam with coupled L2 has no
/// prediction: its rows show the measured Δ only, and the spread of Δ across its groups
/// (largest/smallest) is set beside AdamW's, the decoupled twin at the same η and λ.
fn angular_update(runs: &[&RunInfo], states: &[EqState]) -> Analysis {
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    // Per kind: the largest |Δ/Δ* − 1| and the spread max/min of the group Δ.
    let mut worst: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut spread: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut missing = Vec::new();
    for r in runs {
        let Some(s) = &r.summary else {
            missing.push(r.id.clone());
            continue;
        };
        let kind = r.config.optim.kind.name();
        let arm = states.iter().find(|e| e.run_id == r.id).map_or(r.id.clone(), |e| e.arm.clone());
        let [lo, hi] = crate::report::extent(s.groups.iter().map(|g| g.angular_update));
        spread.insert(kind, spread.get(kind).copied().unwrap_or(1.0).max(hi / lo));
        let groups = s.groups.iter().map(|g| ("group", g));
        // Tensors of scale-invariant groups (those with a Δ*; a run without a prediction shows its
        // groups only).
        let layers = s.layers.iter().filter(|l| l.angular_ratio.is_some()).map(|l| ("tensor", l));
        for (what, v) in groups.chain(layers) {
            if let Some(ratio) = v.angular_ratio {
                let w = worst.entry(kind).or_insert(0.0);
                *w = w.max((ratio - 1.0).abs());
            }
            rows.push(vec![
                arm.clone(),
                kind.to_string(),
                what.to_string(),
                v.name.clone(),
                format!("{:.4e}", v.angular_update),
                v.angular_theory.map_or("no prediction".into(), |t| format!("{t:.4e}")),
                v.angular_ratio.map_or("—".into(), |x| format!("{x:.3}")),
            ]);
            json_rows.push(json!({"run_id": r.id, "arm": arm, "optimizer": kind, "kind": what, "name": v.name,
                "angular_update": v.angular_update, "angular_theory": v.angular_theory, "angular_ratio": v.angular_ratio}));
        }
    }
    let judged: Vec<(&str, f64)> = worst.iter().map(|(k, w)| (*k, *w)).collect();
    let holds =
        missing.is_empty() && !judged.is_empty() && judged.iter().all(|(_, w)| *w <= ANGULAR_TOLERANCE);
    let text = if !missing.is_empty() {
        format!("incomplete: {} run(s) have no summary", missing.len())
    } else {
        let per_kind: Vec<String> = judged
            .iter()
            .map(|(k, w)| {
                let v = if *w <= ANGULAR_TOLERANCE { "holds" } else { "does not hold" };
                format!("{k} {v} (largest |Δ/Δ* − 1| {:.1}%)", 100.0 * w)
            })
            .collect();
        let control = match (spread.get("adam"), spread.get("adamw")) {
            (Some(a), Some(w)) => format!(
                "; adam (coupled L2, the control): no prediction, its groups' Δ spread {a:.2}× (largest/smallest) \
                 against adamw's {w:.2}×"
            ),
            (Some(a), None) => format!("; adam (coupled L2, the control): no prediction, groups' Δ spread {a:.2}×"),
            _ => String::new(),
        };
        let missed = |k: &str| worst.get(k).is_some_and(|w| *w > ANGULAR_TOLERANCE);
        let why = if missed("adamw") || missed("lion") {
            "; why adamw and lion miss in this net (Lion's noise autocorrelation, the radial gradient inside \
             jointly invariant groups) is measured by `cargo run --release --example equilibrium_probes -- \
             lion|adamw` (docs/REPRODUCTION.md §1)"
        } else {
            ""
        };
        format!(
            "{} {} (criterion: every group and tensor within {:.0}% of its optimizer's Δ*){control}{why}",
            if holds { "holds:" } else { "does not hold:" },
            per_kind.join("; "),
            100.0 * ANGULAR_TOLERANCE
        )
    };
    Analysis {
        json: json!({ "rows": json_rows, "max_abs_ratio_error": worst, "group_delta_spread": spread,
            "tolerance": ANGULAR_TOLERANCE }),
        table: md_table(
            &["run", "optimizer", "kind", "name", "Δ measured", "Δ* theory", "angular_ratio"],
            &rows,
        ),
        verdict: Verdict { holds, text },
    }
}

/// A function-space T_fs fit (one point per (arm, λ_e) group, so its CI is over λ_e values).
fn fs_fit_text(f: &Option<LogLogFit>) -> String {
    match f {
        Some(f) => match f.slope_ci95 {
            Some(ci) => format!(
                "{:.3} (95% CI {} over {} λ_e values, t with {} dof)",
                f.slope,
                verdict::ci_text(ci),
                f.n_lambda,
                f.n_lambda - 2
            ),
            None => format!("{:.3} ({} λ_e values, no CI)", f.slope, f.n_lambda),
        },
        None => "no fit".into(),
    }
}

/// max/min of the λ_e of a group's fitted points (NaN without points).
fn lambda_e_span(g: &FitGroup) -> f64 {
    let [lo, hi] = extent(g.points.iter().map(|p| p.1));
    if lo > 0.0 && lo.is_finite() {
        hi / lo
    } else {
        f64::NAN
    }
}

/// One arm's sentences: its time range in its unit, the slope judgement ([`verdict::slope_text`]),
/// its own norm-term fit, and the runs left out ([`verdict::excluded_text`]).
fn arm_sentence(g: &FitGroup) -> String {
    let y = t_eq_units_name(g.momentum);
    let range = g.t_eq_units_range().map_or(String::new(), |[a, b]| {
        format!("{y} in [{a:.2}, {b:.2}] over {:.0}× of λ_e; ", lambda_e_span(g))
    });
    let norm = g.norm_fit.as_ref().map_or(String::new(), |f| {
        format!(
            "; its own norm-term fit (one intercept for all its λ_e) b = {:.2}{}",
            f.slope,
            f.slope_ci95.map_or(String::new(), |[l, h]| format!(" [{l:.2}, {h:.2}]"))
        )
    });
    let excluded = verdict::excluded_text(g).map_or(String::new(), |t| format!(". {t}"));
    format!("{} (T_eq in units of {}): {range}{}{norm}{excluded}", g.label, g.unit(), verdict::slope_text(g))
}

/// The parameter-space summary over arms: rejected, not rejected, or undetermined, with the arms.
fn overall_text(fits: &[FitGroup], judgements: &[SlopeJudgement]) -> String {
    let arms = |b: Option<bool>| -> Vec<&str> {
        fits.iter().zip(judgements).filter(|(_, j)| j.bounded == b).map(|(g, _)| g.label.as_str()).collect()
    };
    let (ok, rejected, undetermined) = (arms(Some(true)), arms(Some(false)), arms(None));
    if fits.is_empty() {
        return "no runs to fit: undetermined".into();
    }
    let mut parts = Vec::new();
    if !rejected.is_empty() {
        parts.push(format!("the data reject O(1/λ_e) up to a log factor in {}", rejected.join(", ")));
    }
    if !undetermined.is_empty() {
        parts.push(format!("undetermined in {}", undetermined.join(", ")));
    }
    if !ok.is_empty() {
        let every = if ok.len() == fits.len() { "every arm: " } else { "" };
        parts.push(format!("the data do not reject O(1/λ_e) up to a log factor in {every}{}", ok.join(", ")));
    }
    parts.join("; ")
}

/// Why there is no norm-term fit at all.
fn no_norm_fit() -> String {
    format!(
        "not determined (no λ_e has runs whose norm terms differ by {MIN_NORM_TERM_SPREAD} or more, and no arm's \
         norm terms spread that much)"
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
            n => format!("{arm}: slope {} over {n} λ_e values", fs_fit_text(f)),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn opt_ci(ci: Option<[f64; 2]>) -> String {
    ci.map_or("—".into(), verdict::ci_text)
}

/// The fits as a markdown table: per arm the slope with both CIs (the verdict's from λ_e clusters),
/// then the norm-term fits, the within-λ_e one first.
fn fits_table(fits: &[FitGroup], within: Option<&WithinFit>, pooled: Option<&LinearFit>) -> String {
    let y = t_eq_units_name_of(fits);
    let rows: Vec<Vec<String>> = fits
        .iter()
        .map(|g| {
            let j = verdict::judge(g);
            let yes_no = |b: Option<bool>| {
                b.map_or("undetermined".to_string(), |b| (if b { "yes" } else { "no" }).into())
            };
            vec![
                g.label.clone(),
                g.unit().into(),
                g.fit.as_ref().map_or("—".into(), |f| format!("{:.3}", f.slope)),
                g.fit
                    .as_ref()
                    .map_or("—".into(), |f| format!("{} (n_λ = {})", opt_ci(f.slope_ci95), f.n_lambda)),
                g.fit_seeds.as_ref().map_or("—".into(), |f| {
                    format!("{:.3} {} (n = {})", f.slope, opt_ci(f.slope_ci95), f.n)
                }),
                g.t_eq_units_range().map_or("—".into(), |[a, b]| format!("[{a:.2}, {b:.2}]")),
                format!("{:.0}×", lambda_e_span(g)),
                yes_no(j.bounded.map(|b| !b)),
                yes_no(j.contains_one),
                format!("{} censored, {} diverged", g.censored.len(), g.diverged.len()),
            ]
        })
        .collect();
    let mut s = md_table(
        &[
            "arm",
            "unit",
            "slope (λ_e means)",
            "95% CI, λ_e clusters (verdict)",
            "seeds as points: slope, 95% CI",
            &format!("{y} [min, max]"),
            "λ_e span",
            "O(1/λ_e)·log rejected",
            "cluster CI ∋ 1",
            "left out",
        ],
        &rows,
    );
    let mut norm_rows = Vec::new();
    if let Some(w) = within {
        norm_rows.push(vec![
            "all arms, one intercept per λ_e (b from within-λ_e contrasts)".into(),
            w.intercepts
                .iter()
                .map(|c| format!("{:.2e}: {:.2}", c.lambda_e, c.a))
                .collect::<Vec<_>>()
                .join("; "),
            format!("{:.3} {}", w.slope, opt_ci(w.slope_ci95)),
            format!("{} ({} λ_e, {} dof)", w.n, w.n_lambda, w.dof),
        ]);
    }
    let one_a = |label: String, f: &LinearFit| {
        vec![
            label,
            format!("{:.3} {}", f.intercept, opt_ci(f.intercept_ci95)),
            format!("{:.3} {}", f.slope, opt_ci(f.slope_ci95)),
            f.n.to_string(),
        ]
    };
    norm_rows
        .extend(pooled.map(|f| one_a("all arms pooled, one intercept for all λ_e (secondary)".into(), f)));
    norm_rows.extend(fits.iter().filter_map(|g| {
        Some(one_a(format!("{}, one intercept for all its λ_e", g.label), g.norm_fit.as_ref()?))
    }));
    if !norm_rows.is_empty() {
        s += &format!("\nNorm term: {y} = a + b·max(0, ln(‖w₀‖²/‖w*‖²))/2 (95% CIs)\n\n");
        s += &md_table(&["fit", "a", "b", "n"], &norm_rows);
    }
    s
}

/// T_eq against 1/λ_e per arm (parameter space, the detector), the norm-term fits, and the
/// function-space times (seeds agree). The verdict (`holds`) is about parameter space only.
fn fast_equilibrium(fe: &FastEquilibrium, function_space: &[GroupResult]) -> Analysis {
    let FastEquilibrium { groups: fits, judgements, within, pooled } = fe;
    let y = t_eq_units_name_of(fits);
    let arm_of = |id: &str| {
        fits.iter()
            .find(|g| {
                g.points.iter().any(|p| p.0 == id)
                    || g.censored.iter().chain(&g.diverged).any(|c| c.run_id == id)
            })
            .map_or("?".to_string(), |g| g.label.clone())
    };
    let fs_points: Vec<(String, f64, f64)> = function_space
        .iter()
        .filter(|g| g.reached_before_reference && g.informative)
        .filter_map(|g| {
            let arm = arm_of(g.runs.first()?);
            g.t_fs_since_common.map(|t| (arm, g.lambda_e, t as f64))
        })
        .collect();
    let fits_json: Vec<Value> = fits
        .iter()
        .zip(judgements)
        .map(|(g, j)| {
            let (c, s) = (g.fit.as_ref(), g.fit_seeds.as_ref());
            json!({ "arm": g.label, "momentum": g.momentum, "unit": g.unit(),
                    "slope": s.map(|f| f.slope), "ci95": s.and_then(|f| f.slope_ci95), "n": s.map_or(0, |f| f.n),
                    "ci95_kind": "seeds as points (secondary; the verdict uses ci95_cluster)",
                    "slope_cluster": c.map(|f| f.slope), "ci95_cluster": c.and_then(|f| f.slope_ci95),
                    "n_lambda": c.map_or(0, |f| f.n_lambda),
                    "t_eq_lambda_e": g.t_eq_units_range().map(|_| extent(g.points.iter().map(|p| p.1 * p.2 as f64))),
                    "t_eq_units": g.t_eq_units_range(), "lambda_e_span": lambda_e_span(g),
                    "log_factor_slope": j.log_factor_slope, "bounded": j.bounded, "ci95_contains_1": j.contains_one,
                    "censored": g.censored, "censored_by_lambda_e": verdict::censored_by_lambda_e(g),
                    "diverged": g.diverged })
        })
        .collect();
    let one_a = |f: &LinearFit| json!({ "a": f.intercept, "a_ci95": f.intercept_ci95, "b": f.slope, "b_ci95": f.slope_ci95, "n": f.n });
    let norm_term = json!({
        "y": y,
        "b_within": within.as_ref().map(|w| json!({ "b": w.slope, "ci95": w.slope_ci95, "se": w.slope_se, "n": w.n,
            "n_lambda": w.n_lambda, "dof": w.dof, "intercepts": w.intercepts })),
        "pooled": pooled.as_ref().map(|f| {
            let mut v = one_a(f);
            v["note"] = json!("one intercept for all λ_e (secondary: biased where the intercept depends on λ_e)");
            v
        }),
        "per_arm": fits.iter().filter_map(|g| {
            let mut v = one_a(g.norm_fit.as_ref()?);
            v["arm"] = json!(g.label);
            Some(v)
        }).collect::<Vec<_>>(),
    });

    let mut rows: Vec<Vec<String>> = Vec::new();
    for g in fits {
        for ((id, le, t), n) in g.points.iter().zip(&g.norms) {
            let d = n.as_ref().and_then(|n| n.deciding_group());
            rows.push(vec![
                g.label.clone(),
                "parameter".into(),
                format!("{le:.2e}"),
                id.clone(),
                t.to_string(),
                format!("{:.2}", *t as f64 * g.rate(*le)),
                g.unit().into(),
                d.map_or("—".into(), |d| format!("{} {:.2}", d.group, d.initial / d.equilibrium)),
                n.as_ref().map_or("—".into(), |n| format!("{:.2}", n.norm_term())),
            ]);
        }
    }
    for g in function_space {
        let t = g.t_fs_since_common.filter(|_| g.reached_before_reference);
        let rate = crate::stats::relaxation_rate(g.lambda_e, g.momentum);
        rows.push(vec![
            g.runs.first().map_or("?".into(), |id| arm_of(id)),
            "function".into(),
            format!("{:.2e}", g.lambda_e),
            format!(
                "{} runs (disagreement floor {:.2} = {:.2} × chance{})",
                g.runs.len(),
                g.floor.disagreement,
                g.disagreement_to_chance,
                if g.informative { "" } else { ": uninformative, not fitted" }
            ),
            t.map_or("not reached".into(), |t| t.to_string()),
            t.map_or("—".into(), |t| format!("{:.2}", rate * t as f64)),
            crate::stats::unit_label(g.momentum).into(),
            "".into(),
            "".into(),
        ]);
    }
    let mut fs_by_arm: Vec<(String, Option<LogLogFit>, usize)> = Vec::new();
    for g in fits {
        let pts: Vec<(f64, f64)> = fs_points.iter().filter(|p| p.0 == g.label).map(|p| (p.1, p.2)).collect();
        fs_by_arm.push((g.label.clone(), fit_loglog_clusters(&pts), pts.len()));
    }
    let holds = !fits.is_empty() && judgements.iter().all(|j| j.bounded == Some(true));
    let norm_text = match (within, pooled) {
        (Some(w), p) => format!(
            "{}{}",
            within_fit_text(w, y),
            p.as_ref().map_or(String::new(), |f| format!(
                "; pooled with one intercept for all λ_e (secondary: biased where the intercept depends on λ_e): {}",
                norm_fit_text(f, y)
            ))
        ),
        (None, Some(f)) => format!(
            "no λ_e has runs whose norm terms differ, so b within λ_e is not determined; pooled with one \
             intercept for all λ_e (biased where the intercept depends on λ_e): {}",
            norm_fit_text(f, y)
        ),
        (None, None) => fits.first().and_then(|g| g.norm_fit.as_ref()).map_or(no_norm_fit(), |f| {
            format!("one arm, one intercept for all its λ_e: {}", norm_fit_text(f, y))
        }),
    };
    let text = format!(
        "The conjecture (Li, Lyu, Arora 2020) is an upper bound: equilibrium within O(1/λ_e) steps up to log factors, \
         so T_eq·λ_e stays bounded (up to a log factor) and curves collapse when plotted against steps·λ_e; a slope \
         below 1 does not refute it. Parameter space (T_eq from the angular-update detector, in units of (1−γ)/λ_e; \
         each slope judged on its 95% CI from λ_e clusters: OLS of the per-λ_e mean of log T_eq on log(1/λ_e), t with \
         n_λ − 2 dof): {}. {}. Norm term (the time for ‖w‖ to decay from ‖w₀‖ to ‖w*‖, \
         ln(‖w₀‖²/‖w*‖²)/(2λ_e/(1−γ)) steps): {norm_text}. Function space (seeds agree within noise; fitted only where \
         two seeds at equilibrium disagree on at most {} × the images that two independent classifiers at their test \
         accuracy would{}): {}. This verdict is about parameter space only: function space is reported here but does not \
         enter it.",
        overall_text(fits, judgements),
        fits.iter().map(arm_sentence).collect::<Vec<_>>().join(". "),
        INFORMATIVE_FRACTION_OF_CHANCE,
        match function_space.iter().filter(|g| !g.informative).count() {
            0 => String::new(),
            k => format!(", which leaves out {k} of the {} (arm, λ_e) groups", function_space.len()),
        },
        function_space_fits_text(&fs_by_arm)
    );
    Analysis {
        json: json!({ "fits": fits_json,
                      "norm_term": norm_term,
                      "parameter_space": fits.iter().map(|g| json!({"arm": g.label, "momentum": g.momentum, "unit": g.unit(),
                          "fit": g.fit, "fit_seeds_as_points": g.fit_seeds, "norm_fit": g.norm_fit, "points": g.points, "norms": g.norms})).collect::<Vec<_>>(),
                      "function_space": fs_by_arm.iter().map(|(arm, f, _)| json!({"arm": arm, "fit": f,
                          "points": fs_points.iter().filter(|p| &p.0 == arm).map(|p| json!({"lambda_e": p.1, "t_fs_steps": p.2})).collect::<Vec<_>>()})).collect::<Vec<_>>() }),
        table: format!(
            "{}\nFits:\n\n{}",
            md_table(
                &[
                    "arm",
                    "space",
                    "λ_e",
                    "run(s)",
                    "T_eq (steps)",
                    "T_eq·λ_e/(1−γ)",
                    "unit",
                    "‖w₀‖/‖w*‖ (group)",
                    "max(0, ln(‖w₀‖²/‖w*‖²))/2",
                ],
                &rows,
            ),
            fits_table(fits, within.as_ref(), pooled.as_ref())
        ),
        verdict: Verdict { holds, text },
    }
}

const EQUILIBRIUM_METRICS: [&str; 5] =
    ["train_acc", "test_acc", "train_loss", "effective_lr", "angular_update"];

/// Same λ_e arms agree; other λ_e arms differ in effective LR and angular update.
fn intrinsic_lr(states: &[EqState]) -> Analysis {
    // The reference λ_e: the one most arms share.
    let by_le = group_by_lambda_e(states.iter().map(|s| (s.lambda_e, s)));
    let Some((ref_le, same)) = by_le.iter().max_by_key(|g| g.1.len()) else {
        return empty("no runs");
    };
    let ref_le = *ref_le;
    let same_cmp = compare_all(same, &EQUILIBRIUM_METRICS);
    let mut differ_cmp = Vec::new();
    for (_, other) in by_le.iter().filter(|(le, _)| !same_lambda_e(*le, ref_le)) {
        let mut pair: Vec<&EqState> = same.clone();
        pair.extend(other);
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
fn schedule_independence(runs: &[&RunInfo], states: &[EqState], fs: Option<&GroupResult>) -> Analysis {
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
    let fs_text = match fs {
        Some(g) => {
            let agree = match (g.t_fs_since_common, g.t_fs_units, g.reached_before_reference) {
                (Some(t), Some(u), true) => format!(
                    "in function space they agree within noise {t} steps after the switch ({u:.2} × {})",
                    crate::stats::unit_label(g.momentum)
                ),
                _ => "in function space they do not clearly agree within noise before the end".into(),
            };
            if g.informative {
                agree
            } else {
                format!(
                    "{agree} (uninformative: at equilibrium they disagree on {}, more than {} × chance)",
                    g.chance_text(),
                    INFORMATIVE_FRACTION_OF_CHANCE
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
    use crate::report::test_group;

    #[test]
    fn function_space_verdict_names_arms_without_an_informative_group() {
        // T_fs = 2/λ_e exactly at three λ_e: slope 1.
        let pts: Vec<(f64, f64)> = [4e-3, 2e-3, 1e-3].iter().map(|&le| (le, 2.0 / le)).collect();
        let fitted = ("default".to_string(), fit_loglog_clusters(&pts), pts.len());
        let empty = ("large".to_string(), None, 0);

        let none = function_space_fits_text(&[empty.clone(), ("matched".into(), None, 0)]);
        assert_eq!(none, "no group is informative, so nothing is fitted");

        let mixed = function_space_fits_text(&[fitted, empty]);
        assert!(mixed.starts_with("default: slope 1.000"), "{mixed}");
        assert!(mixed.ends_with("over 3 λ_e values; large: no informative group"), "{mixed}");
    }

    fn named(label: &str, mut g: FitGroup) -> FitGroup {
        g.label = label.into();
        g
    }

    /// T_eq·λ_e = 2·(1/λ_e)^(−0.3) over 8e-3 … 1e-3 (slope 0.7), two seeds 2% apart at each λ_e.
    fn slope_07() -> Vec<(f64, u64)> {
        [8e-3, 4e-3, 2e-3, 1e-3]
            .iter()
            .flat_map(|&le: &f64| {
                let t = 2.0 * (1.0 / le).powf(0.7);
                [(le, (t * 1.02) as u64), (le, (t / 1.02) as u64)]
            })
            .collect()
    }

    #[test]
    fn the_verdict_says_undetermined_names_left_out_runs_and_is_about_parameter_space_only() {
        let default = named("default", test_group(&slope_07(), &[(8e-3, 750)], &[]));
        let large = named("large", test_group(&[(4e-3, 900)], &[], &[]));
        let matched = named("matched", test_group(&slope_07(), &[], &[(1.6e-2, 120)]));
        let a = fast_equilibrium(&FastEquilibrium::new(vec![default, large, matched]), &[]);
        let t = &a.verdict.text;
        assert!(!a.verdict.holds, "{t}");
        assert!(!t.contains("Not consistent") && !t.contains("Consistent with it"), "{t}");
        assert!(
            t.contains(
                "): undetermined in large; the data do not reject O(1/λ_e) up to a log factor in default, matched."
            ),
            "{t}"
        );
        assert!(t.contains("large (T_eq in units of 1/λ_e): T_eq·λ_e in [3.60, 3.60] over 1× of λ_e; undetermined: no fit (1 run(s) reached equilibrium, at 1 λ_e value(s); a slope needs two λ_e)"), "{t}");
        // Slope 0.7: the cluster CI excludes 1 from below; never "consistent with slope 1".
        assert!(!t.contains("consistent with slope 1"), "{t}");
        assert!(
            t.contains("the cluster CI excludes 1: T_eq grows more slowly than 1/λ_e over this range"),
            "{t}"
        );
        assert!(
            t.contains("c0 (λ_e 8.00e-3, T_eq > 750 steps = 6.00 × 1/λ_e)")
                && t.contains("so the slope is biased up"),
            "{t}"
        );
        assert!(
            t.contains("d0 (λ_e 1.60e-2, diverged at step 120); the fit says nothing about λ_e 1.60e-2"),
            "{t}"
        );
        assert!(t.ends_with("This verdict is about parameter space only: function space is reported here but does not enter it."), "{t}");

        let f = &a.json["fits"][0];
        assert_eq!(
            (f["arm"].as_str(), f["n_lambda"].as_u64(), f["n"].as_u64()),
            (Some("default"), Some(4), Some(8)),
            "{f}"
        );
        let [lo, hi] = [0, 1].map(|k| f["ci95_cluster"][k].as_f64().unwrap());
        assert!(lo < 0.7 && 0.7 < hi && hi < 1.0, "{f}");
        assert_eq!(f["ci95_contains_1"], false);
        assert_eq!(a.json["fits"][1]["bounded"], Value::Null, "no fit: undetermined");
        assert_eq!(a.json["norm_term"]["b_within"], Value::Null);
        assert!(
            a.table.contains("95% CI, λ_e clusters (verdict)") && a.table.contains("seeds as points"),
            "{}",
            a.table
        );
    }

    #[test]
    fn every_arm_bounded_holds_in_parameter_space() {
        let a = fast_equilibrium(
            &FastEquilibrium::new(vec![named("default", test_group(&slope_07(), &[], &[]))]),
            &[],
        );
        assert!(a.verdict.holds, "{}", a.verdict.text);
        assert!(a
            .verdict
            .text
            .contains("): the data do not reject O(1/λ_e) up to a log factor in every arm: default."));
    }
}
