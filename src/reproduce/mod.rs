//! `ilr reproduce`: the paper's claims as named recipes. Each recipe is a sweep spec
//! (experiments/<name>.<scale>.toml) trained like `ilr sweep` (resumable, locked runs), analysed and
//! written like `ilr report` (DIR/report/), and then analysed for its claim: DIR/reproduce.json and
//! DIR/reproduce.md. Nothing here prints to stdout: [`Reproduction`] holds what to show.

pub mod analysis;
pub mod compare;
pub mod derived;
pub mod recipes;
pub mod state;

pub use recipes::{Recipe, Scale};

use crate::report::{self, collect, ReportOptions, Show};
use crate::sweep::{self, ExecOptions, Spec, Tally};
use crate::util::atomic::{write_atomic, write_json_atomic};
use analysis::Verdict;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use toml::Value;

pub struct Reproduction {
    pub verdict: Verdict,
    /// The report's lines the recipe concerns ([`report_blocks`]): the runs, their counts, the
    /// files written, and the fits or function-space results where the claim is about them.
    pub report: Vec<String>,
    /// The recipe's own table (markdown).
    pub table: String,
    pub files: Vec<PathBuf>,
    /// Runs that failed or did not finish.
    pub incomplete: usize,
}

/// The recipe's sweep spec (phase 1) with `data.dir` set, and its derived arms (see [`derived`]).
/// Paper and small scale train on CIFAR-10 and need `data`.
fn spec_doc(
    recipe: Recipe,
    scale: Scale,
    data: Option<&Path>,
) -> Result<(toml::Table, Vec<derived::DerivedArm>)> {
    let Some(text) = recipe.spec(scale) else {
        bail!(
            "{} has no {} scale recipe yet (scales with one: {}); run --scale tiny",
            recipe.name(),
            scale.name(),
            Scale::ALL
                .iter()
                .filter(|s| recipe.spec(**s).is_some())
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let (mut doc, arms) = derived::split(text)?;
    match (scale, data) {
        (Scale::Paper | Scale::Small, None) => bail!(
            "--scale {} trains on CIFAR-10: pass --data DIR (a directory with data_batch_*.bin and test_batch.bin)",
            scale.name()
        ),
        (_, Some(dir)) => {
            let base = doc.entry("base").or_insert_with(|| Value::Table(Default::default()));
            let Value::Table(base) = base else { bail!("[base] in the embedded spec is not a table") };
            let data = base.entry("data").or_insert_with(|| Value::Table(Default::default()));
            let Value::Table(data) = data else { bail!("[base.data] in the embedded spec is not a table") };
            data.insert("dir".into(), Value::String(dir.to_string_lossy().into_owned()));
        }
        (Scale::Tiny, None) => {}
    }
    Ok((doc, arms))
}

/// Write `doc` as DIR/spec.toml, then train its runs (finished ones are reused).
fn train_spec(
    recipe: Recipe,
    scale: Scale,
    doc: &toml::Table,
    out: &Path,
    exec: &ExecOptions,
) -> Result<Tally> {
    let spec_path = out.join(sweep::SPEC_FILE);
    let text = format!(
        "# {} at {} scale (from ilr reproduce)\n{}",
        recipe.name(),
        scale.name(),
        toml::to_string(doc)?
    );
    Spec::parse(&text, recipe.name())?;
    write_atomic(&spec_path, text.as_bytes())?;
    let (_, runs) = sweep::prepare(&spec_path, out)?;
    Ok(sweep::execute(&runs, out, exec)?.1)
}

/// Train (or resume) the recipe's runs in `out`, report, analyse, and write the results.
pub fn reproduce(
    recipe: Recipe,
    scale: Scale,
    out: &Path,
    data: Option<&Path>,
    exec: &ExecOptions,
) -> Result<Reproduction> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (doc, arms) = spec_doc(recipe, scale, data)?;
    let exec =
        ExecOptions { name: format!("reproduce {} ({})", recipe.name(), scale.name()), ..exec.clone() };
    let mut tally = train_spec(recipe, scale, &doc, out, &exec)?;
    if !arms.is_empty() {
        let names: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
        eprintln!("phase 2: the {} arm(s), initial norms from the finished runs' ‖w*‖", names.join(", "));
        let doc = derived::add_derived_runs(doc, &arms, out)?;
        // Phase 1's runs are in this spec too (reused), so this tally counts every run.
        tally = train_spec(recipe, scale, &doc, out, &exec)?;
    }

    let runs = collect::load(out)?;
    let rep = report::analyse(&runs, &ReportOptions::default())?;
    let written = rep.write(out)?;
    let finished: Vec<&collect::LoadedRun> = runs.iter().filter(|r| r.info.summary.is_some()).collect();
    let infos: Vec<&collect::RunInfo> = finished.iter().map(|r| &r.info).collect();
    let arms = state::arms(&infos);
    let mut states = Vec::new();
    for (r, arm) in finished.iter().zip(&arms) {
        if let Some(s) = state::eq_state(&r.info, arm, &r.metrics) {
            states.push(s);
        }
    }
    let a = analysis::analyse(recipe, &infos, &states, &rep);
    let incomplete = tally.failed + tally.busy + (runs.len() - finished.len());
    let command = format!(
        "ilr reproduce {} --scale {} --out {}{}",
        recipe.name(),
        scale.name(),
        out.display(),
        data.map_or(String::new(), |d| format!(" --data {}", d.display()))
    );
    let verdict = if incomplete > 0 {
        Verdict {
            holds: false,
            text: format!("incomplete ({incomplete} runs not finished): {}", a.verdict.text),
        }
    } else {
        a.verdict
    };
    let json_path = out.join("reproduce.json");
    write_json_atomic(
        &json_path,
        &json!({
            "recipe": recipe.name(), "scale": scale.name(), "claim": recipe.claim(), "command": command,
            "verdict": verdict, "equilibrium_states": states, "analysis": a.json,
            "report_dir": written.dir,
        }),
    )?;
    let md = format!(
        "# {} ({} scale)\n\nClaim: {}\n\nCommand: `{command}`\n\n{}\n\nVerdict: {}\n\nEquilibrium states (means over the last quarter of each run's final phase, main group `{}`):\n\n{}",
        recipe.name(),
        scale.name(),
        recipe.claim(),
        a.table,
        verdict.text,
        states.first().map_or("—", |s| s.group.as_str()),
        states_table(&states)
    );
    let md_path = out.join("reproduce.md");
    write_atomic(&md_path, md.as_bytes())?;
    let report = rep.lines(&written, report_blocks(recipe));
    let mut files = written.files;
    files.extend([json_path, md_path]);
    Ok(Reproduction { verdict, report, table: a.table, files, incomplete })
}

/// The blocks of the report's text a recipe shows: the Fast Equilibrium fits for fast-equilibrium,
/// function space for fast-equilibrium and schedule-independence (its verdict quotes them).
pub fn report_blocks(recipe: Recipe) -> Show {
    Show {
        fits: matches!(recipe, Recipe::FastEquilibrium | Recipe::FastEquilibriumAdamw),
        function_space: matches!(recipe, Recipe::FastEquilibrium | Recipe::ScheduleIndependence),
    }
}

fn states_table(states: &[state::EqState]) -> String {
    let mut s = String::from(
        "| arm | seed | λ_e | train acc | test acc | train loss | ‖w‖ | η/‖w‖² | Δ | Δ/Δ* | T_eq |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for e in states {
        s += &format!(
            "| {} | {} | {:.1e} | {:.3} | {} | {:.3} | {:.3} | {:.3e} | {:.3e} | {} | {} |\n",
            e.arm,
            e.seed,
            e.lambda_e,
            e.train_acc,
            e.test_acc.map_or("—".into(), |v| format!("{v:.3}")),
            e.train_loss,
            e.norm,
            e.effective_lr,
            e.angular_update,
            e.angular_ratio.map_or("—".into(), |v| format!("{v:.3}")),
            e.t_eq_steps.map_or("—".into(), |v| v.to_string()),
        );
    }
    s
}
