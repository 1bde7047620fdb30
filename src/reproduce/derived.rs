//! Arms whose initial norms come from measurements: a recipe's `[reproduce]` table.
//!
//! ```toml
//! [reproduce]
//! derived_arms = [
//!   { name = "matched", init_scale = 1.0, steps_factor = 1.0 },   # ‖w₀‖ = ‖w*‖ of the λ_e
//!   { name = "large", init_scale = 10.0, steps_factor = 1.5, lambda_e_min = 1e-3 },
//! ]
//! ```
//! The spec without this table is phase 1 (the `default` arm). From its finished runs, each λ_e's
//! equilibrium norm per scale-invariant group (the mean over seeds of ‖w‖ over the averaging
//! window) becomes `model.init_norm` of phase 2's runs: one copy per derived arm of every `[[runs]]`
//! entry whose λ_e is at least the arm's `lambda_e_min` (all of them without it), with
//! `model.init_scale` and `train.steps` × `steps_factor`. The combined spec is
//! then trained like any sweep: phase 1's runs are reused, not retrained.

use crate::report::collect::{self, Status};
use crate::report::fit::same_lambda_e;
use crate::report::norms::{equilibrium_norms_by_lambda_e, run_norms};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::path::Path;
use toml::{Table, Value};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedArm {
    /// A name for the docs and the recipe file (the report names arms by their config: see
    /// `report::init_arm`).
    pub name: String,
    /// ‖w₀‖ = init_scale·‖w*‖ in every scale-invariant group.
    pub init_scale: f64,
    /// The arm trains for steps_factor times the steps of the `[[runs]]` entry it copies.
    #[serde(default = "one")]
    pub steps_factor: f64,
    /// Copy only the `[[runs]]` entries with λ_e ≥ this (all of them when absent): the default arm
    /// may reach lower λ_e, whose runs are long, than the derived arms need.
    #[serde(default)]
    pub lambda_e_min: Option<f64>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReproduceTable {
    #[serde(default)]
    derived_arms: Vec<DerivedArm>,
}

/// Split a recipe into its sweep spec (phase 1) and its derived arms.
pub fn split(text: &str) -> Result<(Table, Vec<DerivedArm>)> {
    let mut doc: Table = text.parse().context("parsing the recipe")?;
    let arms = match doc.remove("reproduce") {
        Some(v) => v.try_into::<ReproduceTable>().context("in the recipe's [reproduce] table")?.derived_arms,
        None => Vec::new(),
    };
    for a in &arms {
        if !(a.init_scale.is_finite()
            && a.init_scale > 0.0
            && a.steps_factor.is_finite()
            && a.steps_factor > 0.0
            && a.lambda_e_min.is_none_or(|l| l.is_finite() && l > 0.0))
        {
            bail!(
                "derived arm {:?}: init_scale, steps_factor and lambda_e_min must be positive numbers",
                a.name
            );
        }
    }
    Ok((doc, arms))
}

fn lambda_e_of(run: &Table) -> Option<f64> {
    let v = run.get("optim")?.as_table()?.get("lambda_e")?;
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

/// Phase 2: `doc` with one copy of each `[[runs]]` entry per derived arm, its initial norms set from
/// the finished runs in `out`. Fails if some λ_e has no finished run to measure.
pub fn add_derived_runs(doc: Table, arms: &[DerivedArm], out: &Path) -> Result<Table> {
    let infos = collect::collect(out)?;
    let mut measured = Vec::new();
    for r in infos.iter().filter(|r| r.status == Status::Completed) {
        if r.config.model.init_norm.is_none() && r.config.model.init_scale == 1.0 {
            measured.extend(run_norms(r, &r.metrics()?)?);
        }
    }
    with_derived_runs(doc, arms, &equilibrium_norms_by_lambda_e(&measured))
}

/// `doc` with the derived arms' copies of its `[[runs]]` entries, given each λ_e's equilibrium norms
/// per scale-invariant group (`by_le`: (λ_e, ‖w*‖ per group)).
fn with_derived_runs(mut doc: Table, arms: &[DerivedArm], by_le: &[(f64, Vec<f64>)]) -> Result<Table> {
    let runs = match doc.get("runs") {
        Some(Value::Array(a)) => a.clone(),
        _ => bail!("a recipe with derived arms needs [[runs]] entries that set optim.lambda_e"),
    };
    let mut extra = Vec::new();
    for arm in arms {
        for entry in &runs {
            let t = entry.as_table().ok_or_else(|| anyhow!("[[runs]] entries must be tables"))?;
            let le = lambda_e_of(t)
                .ok_or_else(|| anyhow!("derived arms: a [[runs]] entry sets no optim.lambda_e"))?;
            if arm.lambda_e_min.is_some_and(|min| le < min) {
                continue;
            }
            let norms = by_le.iter().find(|(l, _)| same_lambda_e(*l, le)).map(|p| &p.1).ok_or_else(|| {
                anyhow!(
                    "derived arm {:?}: no finished default run at λ_e = {le:e} to measure ‖w*‖ from",
                    arm.name
                )
            })?;
            let mut t = t.clone();
            let model = t.entry("model").or_insert_with(|| Value::Table(Table::new()));
            let Value::Table(model) = model else { bail!("[[runs]] model is not a table") };
            model.insert("init_norm".into(), Value::Array(norms.iter().map(|&n| Value::Float(n)).collect()));
            if arm.init_scale != 1.0 {
                model.insert("init_scale".into(), Value::Float(arm.init_scale));
            }
            if arm.steps_factor != 1.0 {
                let train = t.get_mut("train").and_then(Value::as_table_mut);
                let steps = train.and_then(|tr| tr.get_mut("steps"));
                let Some(Value::Integer(s)) = steps else {
                    bail!(
                        "derived arm {:?}: steps_factor needs train.steps in every [[runs]] entry",
                        arm.name
                    )
                };
                *s = (*s as f64 * arm.steps_factor).round() as i64;
            }
            extra.push(Value::Table(t));
        }
    }
    let mut all = runs;
    all.extend(extra);
    doc.insert("runs".into(), Value::Array(all));
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_reproduce_table_and_rejects_bad_arms() {
        let text = "[base.optim]\nlr = 0.2\n[[runs]]\noptim.lambda_e = 1e-2\ntrain.steps = 100\n\
                    [reproduce]\nderived_arms = [{ name = \"large\", init_scale = 10.0, steps_factor = 1.5 }]\n";
        let (doc, arms) = split(text).unwrap();
        assert!(!doc.contains_key("reproduce"));
        assert_eq!(
            arms,
            vec![DerivedArm {
                name: "large".into(),
                init_scale: 10.0,
                steps_factor: 1.5,
                lambda_e_min: None
            }]
        );
        let bad = text.replace("10.0", "-1.0");
        assert!(split(&bad).unwrap_err().to_string().contains("positive"));
        let bad = text.replace("1.5 }", "1.5, lambda_e_min = 0.0 }");
        assert!(split(&bad).unwrap_err().to_string().contains("lambda_e_min"));
        let (_, none) = split("[base]\n").unwrap();
        assert!(none.is_empty());
    }
    #[test]
    fn derived_runs_copy_the_entries_at_or_above_lambda_e_min() {
        let text = "[[runs]]\noptim.lambda_e = 4e-3\ntrain.steps = 100\n\
                    [[runs]]\noptim.lambda_e = 1e-3\ntrain.steps = 400\n\
                    [[runs]]\noptim.lambda_e = 5e-4\ntrain.steps = 800\n\
                    [reproduce]\nderived_arms = [{ name = \"matched\", lambda_e_min = 1e-3, init_scale = 1.0 },\
                    { name = \"large\", init_scale = 10.0, steps_factor = 1.5 }]\n";
        let (doc, arms) = split(text).unwrap();
        let by_le = vec![(4e-3, vec![2.0, 3.0]), (1e-3, vec![5.0, 6.0]), (5e-4, vec![7.0, 8.0])];
        let doc = with_derived_runs(doc, &arms, &by_le).unwrap();
        let runs: Vec<&Table> =
            doc["runs"].as_array().unwrap().iter().map(|v| v.as_table().unwrap()).collect();
        // 3 phase-1 entries, 2 matched (λ_e ≥ 1e-3), 3 large.
        assert_eq!(runs.len(), 8);
        let summary: Vec<(f64, i64, Option<f64>, Vec<f64>)> = runs[3..]
            .iter()
            .map(|t| {
                let model = t["model"].as_table().unwrap();
                (
                    lambda_e_of(t).unwrap(),
                    t["train"]["steps"].as_integer().unwrap(),
                    model.get("init_scale").and_then(Value::as_float),
                    model["init_norm"].as_array().unwrap().iter().map(|v| v.as_float().unwrap()).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (4e-3, 100, None, vec![2.0, 3.0]),
                (1e-3, 400, None, vec![5.0, 6.0]),
                (4e-3, 150, Some(10.0), vec![2.0, 3.0]),
                (1e-3, 600, Some(10.0), vec![5.0, 6.0]),
                (5e-4, 1200, Some(10.0), vec![7.0, 8.0]),
            ]
        );
        // A λ_e without a measured ‖w*‖ is an error that names it.
        let err = with_derived_runs(split(text).unwrap().0, &arms, &by_le[..2]).unwrap_err();
        assert!(err.to_string().contains("5e-4"), "{err}");
    }
}
