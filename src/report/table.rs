//! The table of all runs: configuration, outcome and equilibrium, as CSV and JSON.
//!
//! Fixed columns first (run_id, model, data, lr η, wd λ, lambda_e λ_e, momentum, batch_size,
//! schedule, seed, steps), then every other config key whose value differs between runs (dotted,
//! e.g. `data.synthetic.size`), then the outcome: status, steps_done, final accuracies and test loss,
//! t_eq_steps, t_eq_lambda_e (T_eq·λ_e, as the run's summary records it), t_eq_units (T_eq·λ_e/(1 − γ):
//! T_eq in units of (1 − γ)/λ_e, comparable across momenta), time_unit ("1/λ_e" or "(1−γ)/λ_e"),
//! in_equilibrium_at_end, diverged_at_step, note (divergence reason or error), wall_time_s.

use super::collect::RunInfo;
use crate::optim::Schedule;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Str(String),
    Num(f64),
    Int(u64),
    Bool(bool),
    Null,
}

impl Cell {
    fn csv(&self) -> String {
        let s = match self {
            Cell::Str(s) => s.clone(),
            Cell::Num(v) => format!("{v}"),
            Cell::Int(v) => v.to_string(),
            Cell::Bool(b) => b.to_string(),
            Cell::Null => String::new(),
        };
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::Str(s) => Value::String(s.clone()),
            Cell::Num(v) => serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
            Cell::Int(v) => Value::from(*v),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Null => Value::Null,
        }
    }
}

fn opt_num(v: Option<f64>) -> Cell {
    v.map_or(Cell::Null, Cell::Num)
}

#[derive(Debug)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn to_csv(&self) -> String {
        let mut s = self.columns.iter().map(|c| Cell::Str(c.clone()).csv()).collect::<Vec<_>>().join(",");
        s.push('\n');
        for r in &self.rows {
            s += &r.iter().map(Cell::csv).collect::<Vec<_>>().join(",");
            s.push('\n');
        }
        s
    }

    /// An array with one object per run.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| Value::Object(self.columns.iter().cloned().zip(r.iter().map(Cell::json)).collect()))
                .collect(),
        )
    }
}

/// T_eq in units of (1 − γ)/λ_e: T_eq·λ_e/(1 − γ) ([`crate::stats::relaxation_rate`]).
pub fn t_eq_units(t_eq_steps: u64, lambda_e: f64, momentum: f64) -> f64 {
    t_eq_steps as f64 * crate::stats::relaxation_rate(lambda_e, momentum)
}

/// Dotted leaf keys of a config, values as TOML text.
pub fn flatten(cfg: &crate::train::TrainConfig) -> BTreeMap<String, String> {
    fn walk(t: &toml::Table, prefix: &str, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(sub) => walk(sub, &key, out),
                other => {
                    out.insert(key, crate::sweep::spec::show(other));
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(t) = toml::Table::try_from(cfg) {
        walk(&t, "", &mut out);
    }
    out
}

/// The keys of the hyperparameters that a sweep typically varies: the seed, η, λ, λ_e and the
/// schedule.
pub(crate) fn is_sweep_key(key: &str) -> bool {
    matches!(key, "seed" | "optim.lr" | "optim.wd" | "optim.lambda_e") || key.starts_with("optim.schedule")
}

/// Keys that the fixed columns already show.
fn covered(key: &str) -> bool {
    is_sweep_key(key)
        || matches!(
            key,
            "optim.momentum"
                | "train.batch_size"
                | "train.steps"
                | "train.device"
                | "model.depth"
                | "model.width"
                | "data.dir"
        )
}

/// The keys of flattened configs whose values differ between them (a key missing in some counts),
/// sorted.
pub fn differing_keys(flat: &[BTreeMap<String, String>]) -> Vec<String> {
    let mut keys: Vec<String> = flat.iter().flat_map(|f| f.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| {
        let first = flat.first().and_then(|f| f.get(k));
        flat.iter().any(|f| f.get(k) != first)
    });
    keys
}

/// Config keys whose values differ between the runs (a key missing in some runs counts).
pub fn varying_keys(runs: &[&RunInfo]) -> Vec<String> {
    let flat: Vec<BTreeMap<String, String>> = runs.iter().map(|r| flatten(&r.config)).collect();
    differing_keys(&flat).into_iter().filter(|k| !covered(k)).collect()
}

pub fn runs_table(runs: &[&RunInfo]) -> Table {
    let varying = varying_keys(runs);
    let mut columns: Vec<String> = [
        "run_id",
        "model",
        "data",
        "lr",
        "wd",
        "lambda_e",
        "momentum",
        "batch_size",
        "schedule",
        "seed",
        "steps",
    ]
    .map(String::from)
    .to_vec();
    columns.extend(varying.iter().cloned());
    columns.extend(
        [
            "status",
            "steps_done",
            "final_train_acc",
            "final_test_acc",
            "final_test_loss",
            "t_eq_steps",
            "t_eq_lambda_e",
            "t_eq_units",
            "time_unit",
            "in_equilibrium_at_end",
            "diverged_at_step",
            "note",
            "wall_time_s",
        ]
        .map(String::from),
    );
    let rows = runs
        .iter()
        .map(|r| {
            let c = &r.config;
            let wd = c.optim.base_wd().ok();
            let schedule = wd
                .and_then(|wd| Schedule::new(&c.optim.schedule, c.optim.lr, wd).ok())
                .map_or("?".into(), |s| s.describe());
            let data = match &c.data.dir {
                Some(d) => d.display().to_string(),
                None => format!("synthetic{}", c.data.synthetic.size),
            };
            let flat = flatten(c);
            let mut row = vec![
                Cell::Str(r.id.clone()),
                Cell::Str(c.model.label()),
                Cell::Str(data),
                Cell::Num(c.optim.lr),
                opt_num(wd),
                Cell::Num(r.lambda_e()),
                Cell::Num(c.optim.momentum),
                Cell::Int(c.train.batch_size as u64),
                Cell::Str(schedule),
                Cell::Int(c.seed),
                Cell::Int(c.train.steps),
            ];
            row.extend(
                varying
                    .iter()
                    .map(|k| flat.get(k).map_or(Cell::Null, |v| Cell::Str(v.trim_matches('"').to_string()))),
            );
            let s = r.summary.as_ref();
            let f = s.map(|s| &s.final_metrics);
            let note = match (s.and_then(|s| s.divergence.as_ref()), &r.error) {
                (Some(d), _) => d.reason.clone(),
                (None, Some(e)) => e.clone(),
                (None, None) => r
                    .checkpoint_step
                    .filter(|_| s.is_none())
                    .map_or(String::new(), |c| format!("checkpoint at step {c}")),
            };
            row.extend([
                Cell::Str(r.status.as_str().into()),
                s.map_or(Cell::Null, |s| Cell::Int(s.steps)),
                opt_num(f.map(|f| f.train_acc)),
                opt_num(f.and_then(|f| f.test_acc)),
                opt_num(f.and_then(|f| f.test_loss)),
                s.and_then(|s| s.t_eq_steps).map_or(Cell::Null, Cell::Int),
                opt_num(s.and_then(|s| s.t_eq_lambda_e)),
                opt_num(s.and_then(|s| Some(t_eq_units(s.t_eq_steps?, s.lambda_e, c.optim.momentum)))),
                Cell::Str(crate::stats::unit_label(c.optim.momentum).into()),
                s.map_or(Cell::Null, |s| Cell::Bool(s.in_equilibrium_at_end)),
                s.and_then(|s| s.divergence.as_ref()).map_or(Cell::Null, |d| Cell::Int(d.step)),
                Cell::Str(note),
                opt_num(s.map(|s| s.wall_time_s)),
            ]);
            row
        })
        .collect();
    Table { columns, rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let t = Table {
            columns: vec!["a".into(), "b".into()],
            rows: vec![
                vec![Cell::Str("x,y".into()), Cell::Num(0.5)],
                vec![Cell::Str("say \"hi\"".into()), Cell::Null],
            ],
        };
        assert_eq!(t.to_csv(), "a,b\n\"x,y\",0.5\n\"say \"\"hi\"\"\",\n");
        assert_eq!(t.to_json()[1]["b"], Value::Null);
    }

    #[test]
    fn t_eq_in_units_divides_by_one_minus_momentum() {
        assert!((t_eq_units(1000, 2e-3, 0.0) - 2.0).abs() < 1e-12);
        assert!((t_eq_units(1000, 2e-3, 0.9) - 20.0).abs() < 1e-9);
    }
}
