//! The report's files: [`ReportData::write`] writes DIR/report/ (the list is in the module doc of
//! [`super`]), every file atomically.

use super::analyse::{Plots, ReportData};
use super::collect::RunInfo;
use super::figures::{self, Axis};
use super::funcspace::GroupResult;
use super::plot::Figure;
use super::text::status_line;
use super::{html, verdict};
use crate::util::atomic::{write_atomic, write_json_atomic};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What [`ReportData::write`] wrote.
#[derive(Clone, Debug)]
pub struct Written {
    /// The report folder, DIR/report.
    pub dir: PathBuf,
    /// Every file, in the order written (index.html last).
    pub files: Vec<PathBuf>,
}

impl ReportData<'_> {
    /// Write the report of the runs in `dir` to DIR/report/.
    pub fn write(&self, dir: &Path) -> Result<Written> {
        let out = dir.join("report");
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let at = |name: &str| out.join(name);
        write_atomic(&at("runs.csv"), self.table.to_csv().as_bytes())?;
        write_json_atomic(&at("runs.json"), &self.table.to_json())?;
        write_json_atomic(&at("fast_equilibrium.json"), &self.fast_equilibrium_json())?;
        write_json_atomic(&at("function_space.json"), &self.function_space)?;
        let mut files: Vec<PathBuf> =
            ["runs.csv", "runs.json", "fast_equilibrium.json", "function_space.json"].map(at).into();
        for (k, g) in self.function_space.iter().enumerate() {
            let path = at(&format!("function_space_{}.csv", k + 1));
            write_atomic(&path, function_space_csv(g).as_bytes())?;
            files.push(path);
        }
        if let Some(p) = &self.plots {
            files.extend(self.write_plots(&out, p)?);
        }
        let infos: Vec<&RunInfo> = self.runs.iter().map(|r| &r.info).collect();
        let page = html::Page {
            title: format!("ilr report: {}", dir.display()),
            status: status_line(&infos),
            provenance_note: self.provenance_note.clone(),
            fits: self.fit_lines(),
            norm_fits: self.norm_lines(),
            function_space: self.function_space_lines(),
            table: &self.table,
            files: &files,
        };
        let index = out.join("index.html");
        write_atomic(&index, page.render(&out).as_bytes())?;
        files.push(index);
        Ok(Written { dir: out, files })
    }

    /// fast_equilibrium.json: per group its fits, judgement, points and the runs left out; over all
    /// groups the within-λ_e and pooled norm-term fits.
    pub fn fast_equilibrium_json(&self) -> Value {
        let fe = &self.fast_equilibrium;
        let groups: Vec<Value> = fe
            .groups
            .iter()
            .zip(&fe.judgements)
            .map(|(g, judgement)| {
                json!({
                    "group": g.label,
                    "momentum": g.momentum,
                    "unit": g.unit(),
                    "fit": g.fit,
                    "fit_seeds_as_points": g.fit_seeds,
                    "judgement": judgement,
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
        json!({ "groups": groups, "within_norm_fit": fe.within, "pooled_norm_fit": fe.pooled })
    }

    /// The figures (PNG and SVG each): the Fast Equilibrium fit, the overviews, each run's dynamics
    /// (unless too many runs are selected) and each function-space group.
    fn write_plots(&self, out: &Path, p: &Plots) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut save = |fig: &Figure, stem: PathBuf| -> Result<()> {
            fig.save(&stem)?;
            files.extend(["png", "svg"].map(|e| PathBuf::from(format!("{}.{e}", stem.display()))));
            Ok(())
        };
        let fe = &self.fast_equilibrium;
        if fe.groups.iter().any(|g| !g.points.is_empty()) {
            save(
                &figures::fast_equilibrium_figure(&fe.groups, fe.pooled.as_ref()),
                out.join("fast_equilibrium"),
            )?;
        }
        // One overview of all plotted runs; with several fit groups (arms), one per group as well.
        let mut overviews = vec![(String::new(), format!("{} runs", p.runs.len()), p.runs.clone())];
        if fe.groups.len() > 1 {
            for g in &fe.groups {
                let ids: Vec<&str> = g
                    .points
                    .iter()
                    .map(|p| p.0.as_str())
                    .chain(g.censored.iter().chain(&g.diverged).map(|c| c.run_id.as_str()))
                    .collect();
                let member: Vec<_> =
                    p.runs.iter().filter(|r| ids.contains(&r.info.id.as_str())).copied().collect();
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
            let overlay = figures::overlays(member);
            for axis in Axis::BOTH {
                save(
                    &figures::group_figure(title, &overlay, axis),
                    out.join(format!("overview_{prefix}{}", axis.file_stem())),
                )?;
            }
        }
        if p.per_run {
            let names = figures::labels(&p.runs.iter().map(|r| &r.info).collect::<Vec<_>>());
            for (r, label) in p.runs.iter().zip(&names) {
                let d = out.join("runs").join(&r.info.id);
                std::fs::create_dir_all(&d)?;
                for axis in Axis::BOTH {
                    save(
                        &figures::run_figure(&format!("{} ({label})", r.info.id), &r.metrics, axis),
                        d.join(axis.file_stem()),
                    )?;
                }
            }
        }
        for (k, g) in self.function_space.iter().enumerate() {
            save(&figures::funcspace_figure(g), out.join(format!("function_space_{}", k + 1)))?;
        }
        Ok(files)
    }
}

/// function_space_<k>.csv: the gaps between the group's runs at each evaluation;
/// steps_since_common_units is steps·λ_e/(1 − γ), in units of (1 − γ)/λ_e.
fn function_space_csv(g: &GroupResult) -> String {
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
    csv
}

/// A file-name-safe form of a group label.
fn slug(label: &str) -> String {
    let s: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    s.trim_matches('_').chars().take(60).collect()
}
