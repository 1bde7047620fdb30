//! What a report says, computed from the runs and nothing else: no printing, no files written
//! ([`ReportData::write`] writes, [`ReportData::lines`] and [`ReportData::print`] say it).

use super::collect::{LoadedRun, RunInfo, Status};
use super::fast_equilibrium::FastEquilibrium;
use super::funcspace::{self, GroupResult};
use super::table::{self, Table};
use super::ReportOptions;
use anyhow::{bail, Result};

/// Everything the report shows, computed from `runs` by [`analyse`].
#[derive(Debug)]
pub struct ReportData<'a> {
    /// The runs, in [`super::collect::collect`]'s order.
    pub runs: &'a [LoadedRun],
    /// One row per run: runs.csv, runs.json and the page's table.
    pub table: Table,
    /// A note when the runs differ in provenance ([`provenance_note`]).
    pub provenance_note: Option<String>,
    pub fast_equilibrium: FastEquilibrium,
    /// One result per group of runs that share (η, λ, γ) ([`funcspace::function_space`]).
    pub function_space: Vec<GroupResult>,
    /// What to plot; None when plots are off.
    pub plots: Option<Plots<'a>>,
}

/// The runs the overview and per-run plots show.
#[derive(Debug)]
pub struct Plots<'a> {
    /// The runs selected by `--run` (all when none) that have metrics.
    pub runs: Vec<&'a LoadedRun>,
    /// Whether each of them gets its own figures: at most `max_run_plots` of them.
    pub per_run: bool,
    pub max_run_plots: usize,
}

/// The report of `runs` (see [`super::collect::load`]): the runs table, the Fast Equilibrium fits,
/// function space, and the runs to plot. Reads nothing and writes nothing; an error for a `--run`
/// that names no run or several, or records it cannot use.
pub fn analyse<'a>(runs: &'a [LoadedRun], opts: &ReportOptions) -> Result<ReportData<'a>> {
    let infos: Vec<&RunInfo> = runs.iter().map(|r| &r.info).collect();
    let fast_equilibrium = FastEquilibrium::of(runs)?;
    // Function space: completed and unfinished runs with metrics and predictions.
    let compared: Vec<funcspace::RunData> = runs
        .iter()
        .filter(|r| matches!(r.info.status, Status::Completed | Status::Unfinished))
        .filter_map(|r| {
            Some(funcspace::RunData {
                info: &r.info,
                metrics: &r.metrics,
                predictions: r.predictions.as_ref()?,
            })
        })
        .filter(|d| !d.metrics.is_empty())
        .collect();
    let function_space = funcspace::function_space(&compared)?;
    let plots = match opts.plots {
        false => None,
        true => {
            let runs: Vec<&LoadedRun> =
                select(runs, &opts.runs)?.into_iter().filter(|r| !r.metrics.is_empty()).collect();
            Some(Plots { per_run: runs.len() <= opts.max_run_plots, max_run_plots: opts.max_run_plots, runs })
        }
    };
    Ok(ReportData {
        runs,
        table: table::runs_table(&infos),
        provenance_note: provenance_note(&infos),
        fast_equilibrium,
        function_space,
        plots,
    })
}

/// The runs that `wanted` (ids or unique id prefixes) names; all when it is empty.
fn select<'a>(runs: &'a [LoadedRun], wanted: &[String]) -> Result<Vec<&'a LoadedRun>> {
    if wanted.is_empty() {
        return Ok(runs.iter().collect());
    }
    wanted
        .iter()
        .map(|w| {
            let m: Vec<&LoadedRun> =
                runs.iter().filter(|r| r.info.id == *w || r.info.id.starts_with(w.as_str())).collect();
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
pub fn provenance_note(runs: &[&RunInfo]) -> Option<String> {
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
