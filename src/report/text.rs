//! The report's text: the lines `ilr report` prints and index.html shows (the runs table, run
//! counts, provenance note, Fast Equilibrium and norm-term fits, function space, the files written),
//! and the phrases the reproduce recipes quote.

use super::analyse::ReportData;
use super::collect::{RunInfo, Status};
use super::fast_equilibrium::{FitGroup, MIN_NORM_TERM_SPREAD};
use super::fit::{LinearFit, WithinFit};
use super::write::Written;
use super::{funcspace, table, verdict};

/// The blocks of [`ReportData::lines`] that a reader may not want: `ilr report` shows both, `ilr
/// reproduce` those its recipe concerns. The runs table, counts, provenance note and the files
/// written are always shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Show {
    /// The Fast Equilibrium fits of every group and the norm-term fits over all groups.
    pub fits: bool,
    pub function_space: bool,
}

impl Show {
    pub const ALL: Show = Show { fits: true, function_space: true };
}

impl ReportData<'_> {
    /// What `ilr report` prints, line by line (a provenance note spans several lines).
    pub fn lines(&self, written: &Written, show: Show) -> Vec<String> {
        let infos: Vec<&RunInfo> = self.runs.iter().map(|r| &r.info).collect();
        let mut lines = table_lines(&infos);
        lines.push(status_line(&infos));
        lines.extend(self.provenance_note.clone());
        if show.fits {
            lines.push(String::new());
            lines.extend(self.fit_lines().into_iter().flatten());
            lines.extend(self.norm_lines());
        }
        if show.function_space && !self.function_space.is_empty() {
            lines.push(String::new());
            lines.extend(self.function_space_lines());
        }
        if let Some(p) = self.plots.as_ref().filter(|p| !p.per_run) {
            lines.push(format!(
                "per-run plots skipped for {} runs (more than {}); pick runs with --run ID",
                p.runs.len(),
                p.max_run_plots
            ));
        }
        lines.push(String::new());
        lines.push(format!("wrote {} files to {}", written.files.len(), written.dir.display()));
        lines
    }

    /// Print [`Self::lines`] with every block.
    pub fn print(&self, written: &Written) {
        for line in self.lines(written, Show::ALL) {
            println!("{line}");
        }
    }

    /// Per fit group, its lines ([`fit_lines`]).
    pub fn fit_lines(&self) -> Vec<Vec<String>> {
        self.fast_equilibrium.groups.iter().map(fit_lines).collect()
    }

    /// The norm-term fits over all groups ([`all_groups_norm_lines`]).
    pub fn norm_lines(&self) -> Vec<String> {
        let fe = &self.fast_equilibrium;
        all_groups_norm_lines(&fe.groups, fe.within.as_ref(), fe.pooled.as_ref())
    }

    /// One line per function-space group ([`funcspace_line`]).
    pub fn function_space_lines(&self) -> Vec<String> {
        self.function_space.iter().enumerate().map(|(k, g)| funcspace_line(k, g)).collect()
    }
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

/// The runs as a fixed-width table: id, λ_e, seed, status, test accuracy, T_eq and T_eq in units.
pub fn table_lines(runs: &[&RunInfo]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<48} {:>9} {:>5} {:>10} {:>8} {:>7} {:>14}",
        "run", "λ_e", "seed", "status", "test acc", "T_eq", "T_eq·λ_e/(1−γ)"
    )];
    for r in runs {
        let s = r.summary.as_ref();
        let acc =
            s.and_then(|s| s.final_metrics.test_acc).map_or("—".into(), |a| format!("{:.2}%", 100.0 * a));
        let teq = s.and_then(|s| s.t_eq_steps).map_or("—".into(), |t| t.to_string());
        let tl = s.and_then(|s| Some(table::t_eq_units(s.t_eq_steps?, s.lambda_e, r.config.optim.momentum)));
        lines.push(format!(
            "{:<48} {:>9.2e} {:>5} {:>10} {:>8} {:>7} {:>14}",
            r.id,
            r.lambda_e(),
            r.config.seed,
            r.status.as_str(),
            acc,
            teq,
            tl.map_or("—".into(), |t| format!("{t:.2}"))
        ));
    }
    lines
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
pub fn status_line(runs: &[&RunInfo]) -> String {
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
