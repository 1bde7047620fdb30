//! `ilr report`: the runs of a sweep directory as one table, the Fast Equilibrium fit of T_eq
//! against 1/λ_e, function-space equilibrium across runs, and plots.
//!
//! Four steps, each its own module: [`collect::load`] reads the runs and their records;
//! [`analyse()`] computes everything the report says ([`ReportData`]: no printing, no files);
//! [`ReportData::write`] writes the files; [`ReportData::lines`] / [`ReportData::print`] say it.
//! `ilr reproduce` runs the same steps and shows the blocks of the text its recipe concerns.
//!
//! Writes under DIR/report/ (every file atomically):
//! ```text
//! runs.csv, runs.json                       one row per run (see [`table`])
//! fast_equilibrium.json, .png, .svg         per group of runs: the log-log fit on λ_e clusters and
//!                                           seeds as points (see [`fit`]), its judgement and the runs
//!                                           left out (see [`verdict`]), the norm-term fit of T_eq in
//!                                           units of (1 − γ)/λ_e (see [`norms`]); over all groups the
//!                                           within-λ_e and pooled norm-term fits (see
//!                                           [`fast_equilibrium`])
//! function_space.json, function_space_<k>.csv, .png, .svg   (see [`funcspace`])
//! overview_steps.png/.svg, overview_steps_x_lambda_e.png/.svg   all selected runs overlaid
//! runs/<run-id>/steps.png/.svg, steps_x_lambda_e.png/.svg       one run's dynamics
//! index.html                                the printed verdicts, runs.csv and every PNG on one page
//!                                           (see [`html`])
//! ```

pub mod analyse;
pub mod collect;
pub mod fast_equilibrium;
pub mod figures;
pub mod fit;
pub mod font;
pub mod funcspace;
pub mod html;
pub mod norms;
pub mod plot;
pub mod table;
pub mod text;
pub mod verdict;
pub mod write;

pub use analyse::{analyse, provenance_note, Plots, ReportData};
#[cfg(test)]
pub(crate) use fast_equilibrium::test_group;
pub use fast_equilibrium::{
    init_arm, norm_term_fit, pooled_norm_fit, within_norm_fit, Excluded, FastEquilibrium, FitGroup,
    MIN_NORM_TERM_SPREAD,
};
pub use figures::labels;
pub use text::{
    all_groups_norm_lines, fit_lines, funcspace_line, norm_fit_text, t_eq_units_name, t_eq_units_name_of,
    within_fit_text, Show,
};
pub use write::Written;

#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Only these runs (ids or unique id prefixes) in the per-run and overview plots; empty: all.
    pub runs: Vec<String>,
    pub plots: bool,
    /// Per-run figures only when at most this many runs are selected.
    pub max_run_plots: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self { runs: Vec::new(), plots: true, max_run_plots: 64 }
    }
}

/// [min, max] of `values`, skipping NaN (as f64::min/max do); [∞, −∞] when there are none.
pub(crate) fn extent(values: impl Iterator<Item = f64>) -> [f64; 2] {
    values.fold([f64::INFINITY, f64::NEG_INFINITY], |[lo, hi], v| [lo.min(v), hi.max(v)])
}
