//! Arms whose initial norms come from measurements: a recipe's `[reproduce]` table.
//!
//! ```toml
//! [reproduce]
//! derived_arms = [
//!   { name = "matched", init_scale = 1.0, steps_factor = 1.0 },   # ‖w₀‖ = ‖w*‖ of the λ_e
//!   { name = "large", init_scale = 10.0, steps_factor = 1.5 },    # ‖w₀‖ = 10·‖w*‖
//! ]
//! ```
//! The spec without this table is phase 1 (the `default` arm). From its finished runs, each λ_e's
//! equilibrium norm per scale-invariant group (the mean over seeds of ‖w‖ over the averaging
//! window) becomes `model.init_norm` of phase 2's runs: one copy of every `[[runs]]` entry per
//! derived arm, with `model.init_scale` and `train.steps` × `steps_factor`. The combined spec is
//! then trained like any sweep: phase 1's runs are reused, not retrained.

use crate::report::collect::{self, Status};
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
            && a.steps_factor > 0.0)
        {
            bail!("derived arm {:?}: init_scale and steps_factor must be positive numbers", a.name);
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
pub fn add_derived_runs(mut doc: Table, arms: &[DerivedArm], out: &Path) -> Result<Table> {
    let infos = collect::collect(out)?;
    let mut measured = Vec::new();
    for r in infos.iter().filter(|r| r.status == Status::Completed) {
        if r.config.model.init_norm.is_none() && r.config.model.init_scale == 1.0 {
            measured.extend(run_norms(r, &r.metrics()?)?);
        }
    }
    let by_le = equilibrium_norms_by_lambda_e(&measured);
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
            let norms =
                by_le.iter().find(|(l, _)| (l / le - 1.0).abs() < 1e-9).map(|p| &p.1).ok_or_else(|| {
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
        assert_eq!(arms, vec![DerivedArm { name: "large".into(), init_scale: 10.0, steps_factor: 1.5 }]);
        let bad = text.replace("10.0", "-1.0");
        assert!(split(&bad).unwrap_err().to_string().contains("positive"));
        let (_, none) = split("[base]\n").unwrap();
        assert!(none.is_empty());
    }
}
