//! Sweep specs: a TOML file expanded into a list of fully resolved training runs.
//!
//! ```toml
//! [sweep]                      # optional
//! name = "tiny"                # label (SLURM job name); default: the spec's file stem
//! checkpoint_every = 100       # steps between checkpoints; default: steps/10 (at least 1)
//!
//! [base]                       # a TrainConfig fragment, as for `ilr train --config`
//! model = { depth = 8, width = 0.5 }
//! optim = { lr = 0.2 }
//!
//! [grid]                       # dotted config keys → arrays: the cartesian product
//! "optim.lambda_e" = [8e-3, 4e-3, 2e-3, 1e-3]
//! seed = [0, 1]
//!
//! [[runs]]                     # optional explicit overrides; each one is combined with every grid point
//! train.steps = 500
//! ```
//! A spec with neither [grid] nor [[runs]] is one run: the [base] config itself.
//! Run = defaults ⊕ base ⊕ run overrides ⊕ grid point, key by key (TrainConfig::from_table). As in
//! from_table, an override that sets one of optim.wd / optim.lambda_e drops the other one set
//! earlier. Grid keys iterate in sorted order, the last key fastest; runs come in [[runs]] order.
//! Runs that resolve to the same config (same run id) are kept once.

use crate::train::config::KEYS_OMITTED_AT_DEFAULT;
use crate::train::TrainConfig;
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use toml::{Table, Value};

/// A parsed spec, before expansion.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    pub checkpoint_every: Option<u64>,
    pub base: Table,
    /// (dotted key, values), keys sorted.
    pub grid: Vec<(String, Vec<Value>)>,
    /// Explicit override tables (empty: one run of base ⊕ grid point; with no grid either, one run
    /// of base alone).
    pub runs: Vec<Table>,
}

/// One run of the expanded sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRun {
    pub id: String,
    pub config: TrainConfig,
    /// The overrides that made it, as `key = value` (TOML), in application order.
    pub overrides: Vec<(String, String)>,
}

impl PlannedRun {
    /// The overrides as `key=value ...`, or "[base]" for the base config alone.
    pub fn label(&self) -> String {
        if self.overrides.is_empty() {
            return "[base]".into();
        }
        self.overrides.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

/// Leaves of `t` as (dotted path, value); a non-table value is a leaf.
fn leaves(t: &Table, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (k, v) in t {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Table(sub) => leaves(sub, &path, out),
            _ => out.push((path, v.clone())),
        }
    }
}

/// Set dotted `path` to `value` in `root`, creating tables on the way.
fn set_path(root: &mut Table, path: &str, value: Value) -> Result<()> {
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        bail!("key `{path}` has an empty part");
    }
    let mut t = root;
    for k in &keys[..keys.len() - 1] {
        let e = t.entry(k.to_string()).or_insert_with(|| Value::Table(Table::new()));
        t = match e {
            Value::Table(t) => t,
            _ => bail!("key `{path}`: `{k}` is a value, not a table"),
        };
    }
    t.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

/// Apply one override; setting optim.wd drops an earlier optim.lambda_e, and vice versa.
fn apply(table: &mut Table, path: &str, value: Value) -> Result<()> {
    let other = match path {
        "optim.wd" => Some("lambda_e"),
        "optim.lambda_e" => Some("wd"),
        _ => None,
    };
    if let (Some(other), Some(Value::Table(optim))) = (other, table.get_mut("optim")) {
        optim.remove(other);
    }
    set_path(table, path, value)
}

/// A value as written in TOML, on one line.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn as_table<'a>(v: &'a Value, what: &str) -> Result<&'a Table> {
    v.as_table().ok_or_else(|| anyhow!("{what} must be a table"))
}

impl Spec {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading sweep spec {}", path.display()))?;
        let default_name = path.file_stem().map_or("sweep".into(), |s| s.to_string_lossy().into_owned());
        Self::parse(&text, &default_name).with_context(|| format!("in sweep spec {}", path.display()))
    }

    pub fn parse(text: &str, default_name: &str) -> Result<Self> {
        let doc: Table = text.parse().map_err(|e| anyhow!("invalid TOML: {e}"))?;
        let mut spec = Spec {
            name: default_name.into(),
            checkpoint_every: None,
            base: Table::new(),
            grid: Vec::new(),
            runs: Vec::new(),
        };
        for (k, v) in &doc {
            match k.as_str() {
                "sweep" => {
                    for (sk, sv) in as_table(v, "[sweep]")? {
                        match sk.as_str() {
                            "name" => {
                                spec.name =
                                    sv.as_str().ok_or_else(|| anyhow!("sweep.name must be a string"))?.into()
                            }
                            "checkpoint_every" => {
                                let n = sv.as_integer().filter(|n| *n >= 1);
                                spec.checkpoint_every = Some(n.ok_or_else(|| {
                                    anyhow!("sweep.checkpoint_every must be an integer ≥ 1, got {sv}")
                                })? as u64);
                            }
                            _ => {
                                bail!("unknown key `sweep.{sk}` (known: sweep.name, sweep.checkpoint_every)")
                            }
                        }
                    }
                }
                "base" => spec.base = as_table(v, "[base]")?.clone(),
                "grid" => {
                    let mut flat = Vec::new();
                    leaves(as_table(v, "[grid]")?, "", &mut flat);
                    for (key, vals) in flat {
                        let vals = match vals {
                            Value::Array(a) => a,
                            other => bail!("grid key `{key}` must be an array of values, got {other}"),
                        };
                        if vals.is_empty() {
                            bail!("grid key `{key}` has no values (empty grid)");
                        }
                        // Keys may be given both dotted and nested: one path, one list of values.
                        let key = key.split('.').map(|p| p.trim()).collect::<Vec<_>>().join(".");
                        if spec.grid.iter().any(|(k, _)| *k == key) {
                            bail!("grid key `{key}` is given twice");
                        }
                        spec.grid.push((key, vals));
                    }
                }
                "runs" => {
                    let list =
                        v.as_array().ok_or_else(|| anyhow!("runs must be an array of tables ([[runs]])"))?;
                    for (i, r) in list.iter().enumerate() {
                        spec.runs.push(as_table(r, &format!("[[runs]] entry {}", i + 1))?.clone());
                    }
                }
                _ => bail!("unknown key `{k}` in the sweep spec (known: sweep, base, grid, runs)"),
            }
        }
        spec.grid.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(spec)
    }

    /// Number of grid points (1 with no grid).
    pub fn grid_points(&self) -> usize {
        self.grid.iter().map(|(_, v)| v.len()).product()
    }

    /// The grid point with index `i`, the last key fastest.
    fn point(&self, mut i: usize) -> Vec<(String, Value)> {
        let mut out = vec![(String::new(), Value::Boolean(false)); self.grid.len()];
        for (slot, (k, vals)) in out.iter_mut().zip(&self.grid).rev() {
            *slot = (k.clone(), vals[i % vals.len()].clone());
            i /= vals.len();
        }
        out
    }

    /// Every run, resolved and validated; errors name the run and the offending key.
    pub fn expand(&self) -> Result<Vec<PlannedRun>> {
        let explicit: Vec<Table> = if self.runs.is_empty() { vec![Table::new()] } else { self.runs.clone() };
        let mut base_leaves = Vec::new();
        leaves(&self.base, "", &mut base_leaves);
        let mut out: Vec<PlannedRun> = Vec::new();
        for (r, run) in explicit.iter().enumerate() {
            let mut run_leaves = Vec::new();
            leaves(run, "", &mut run_leaves);
            for g in 0..self.grid_points() {
                let point = self.point(g);
                let overrides: Vec<(String, Value)> = run_leaves.iter().cloned().chain(point).collect();
                let shown: Vec<(String, String)> =
                    overrides.iter().map(|(k, v)| (k.clone(), show(v))).collect();
                let what = || {
                    let label = shown.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
                    if overrides.is_empty() {
                        "the [base] config".to_string()
                    } else if self.runs.is_empty() {
                        format!("grid point {} ({label})", g + 1)
                    } else {
                        format!("[[runs]] entry {} ({label})", r + 1)
                    }
                };
                let mut table = self.base.clone();
                for (k, v) in &overrides {
                    apply(&mut table, k, v.clone()).with_context(what)?;
                }
                let config = resolve(table, &base_leaves, &overrides).with_context(what)?;
                let id = config.run_id();
                if !out.iter().any(|p| p.id == id) {
                    out.push(PlannedRun { id, config, overrides: shown });
                }
            }
        }
        Ok(out)
    }
}

/// Resolve a run's table, then check that every key it sets exists in the resolved config (this
/// also catches keys that a lenient section would silently ignore). optim.wd and optim.lambda_e
/// are exempt: one may have been dropped for the other, and serde checks both names; so are the
/// keys that the resolved config omits at their default ([`KEYS_OMITTED_AT_DEFAULT`]).
fn resolve(table: Table, base: &[(String, Value)], overrides: &[(String, Value)]) -> Result<TrainConfig> {
    let config = TrainConfig::from_table(table)?;
    let resolved = Table::try_from(&config).context("serializing the resolved config")?;
    let mut keys: Vec<(String, &str)> = base.iter().map(|(k, _)| (k.clone(), "[base]")).collect();
    for (k, v) in overrides {
        match v {
            Value::Table(t) => {
                let mut sub = Vec::new();
                leaves(t, k, &mut sub);
                keys.extend(sub.into_iter().map(|(k, _)| (k, "the overrides")));
            }
            _ => keys.push((k.clone(), "the overrides")),
        }
    }
    let exempt = |k: &str| k == "optim.wd" || k == "optim.lambda_e" || KEYS_OMITTED_AT_DEFAULT.contains(&k);
    for (key, from) in keys.iter().filter(|(k, _)| !exempt(k)) {
        let parts: Vec<&str> = key.split('.').collect();
        let mut node = &resolved;
        for (i, p) in parts.iter().enumerate() {
            match node.get(*p) {
                None => bail!("unknown key `{key}` in {from}: the config has no `{}`", parts[..=i].join(".")),
                Some(Value::Table(t)) => node = t,
                Some(_) => break,
            }
        }
    }
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
[base]
model = { depth = 8, width = 0.25 }
[base.optim]
lr = 0.2
wd = 1e-3
[grid]
"optim.lambda_e" = [4e-3, 2e-3]
seed = [0, 1, 2]
"#;

    #[test]
    fn grid_expands_in_order_with_stable_ids() {
        let spec = Spec::parse(SPEC, "t").unwrap();
        let runs = spec.expand().unwrap();
        assert_eq!(runs.len(), 6);
        assert_eq!(runs[0].label(), "optim.lambda_e=0.004 seed=0");
        assert_eq!(runs[1].label(), "optim.lambda_e=0.004 seed=1");
        assert_eq!(runs[3].label(), "optim.lambda_e=0.002 seed=0");
        // lambda_e in the grid replaces the base's wd.
        assert_eq!(runs[3].config.optim.wd, None);
        assert!((runs[3].config.optim.lambda_e().unwrap() - 2e-3).abs() < 1e-15);
        assert_eq!(runs[0].config.model.width, 0.25);
        let again = Spec::parse(SPEC, "t").unwrap().expand().unwrap();
        assert_eq!(
            runs.iter().map(|r| &r.id).collect::<Vec<_>>(),
            again.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
        // Nested grid tables mean the same as dotted keys.
        let nested = SPEC.replace("\"optim.lambda_e\" = [4e-3, 2e-3]", "optim.lambda_e = [4e-3, 2e-3]");
        let n = Spec::parse(&nested, "t").unwrap().expand().unwrap();
        assert_eq!(
            n.iter().map(|r| &r.id).collect::<Vec<_>>(),
            runs.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn runs_combine_with_the_grid_and_duplicates_are_dropped() {
        let text = format!(
            "{SPEC}\n[[runs]]\ntrain.steps = 50\n[[runs]]\ntrain.steps = 60\n[[runs]]\ntrain.steps = 60\n"
        );
        let runs = Spec::parse(&text, "t").unwrap().expand().unwrap();
        assert_eq!(runs.len(), 12);
        assert_eq!(runs[6].config.train.steps, 60);
        assert_eq!(runs[6].label(), "train.steps=60 optim.lambda_e=0.004 seed=0");
    }

    #[test]
    fn a_base_alone_or_an_empty_grid_is_one_run_of_the_base() {
        let base = "[base]\nseed = 7\n[base.optim]\nlr = 0.3\n";
        let one = Spec::parse(base, "t").unwrap().expand().unwrap();
        assert_eq!(one.len(), 1);
        let mut expected = TrainConfig { seed: 7, ..TrainConfig::default() };
        expected.optim.lr = 0.3;
        assert_eq!(one[0].config, expected);
        assert_eq!(one[0].id, expected.run_id());
        assert_eq!(one[0].label(), "[base]");
        let with_empty_grid = Spec::parse(&format!("{base}[grid]\n"), "t").unwrap().expand().unwrap();
        assert_eq!(with_empty_grid, one);
        // No [base] at all: the defaults, one run.
        let defaults = Spec::parse("[sweep]\nname = \"d\"\n", "t").unwrap().expand().unwrap();
        assert_eq!(defaults.len(), 1);
        assert_eq!(defaults[0].config, TrainConfig::default());
    }

    #[test]
    fn bad_specs_name_the_key() {
        let err = |text: &str| format!("{:#}", Spec::parse(text, "t").and_then(|s| s.expand()).unwrap_err());
        assert!(err("[grid]\n\"optim.learning_rate\" = [0.1]\n").contains("learning_rate"));
        assert!(err("[grid]\n\"data.synthetic.colour\" = [1]\n").contains("data.synthetic.colour"));
        assert!(err("[grid]\n\"optim.lr\" = []\n").contains("`optim.lr` has no values"));
        assert!(err("[grid]\n\"optim.lr\" = 0.1\n").contains("must be an array"));
        assert!(err("[base.optim]\nlr = -1.0\n").contains("the [base] config"));
        assert!(err("[grid]\n\"optim.lr\" = [0.1, -0.1]\n").contains("optim.lr = -0.1"));
        assert!(err("[grid]\n\"optim.lr\" = [0.0]\n").contains("optim.lr = 0"));
        assert!(err("[base]\n[grid]\nseed=[1]\n[extra]\n").contains("unknown key `extra`"));
        assert!(err("[sweep]\nworkers = 2\n[grid]\nseed=[1]\n").contains("sweep.workers"));
        assert!(err("[base.model]\ndepth = 9\n[grid]\nseed=[1]\n").contains("model.depth"));
    }

    #[test]
    fn keys_omitted_at_their_default_may_be_set_to_it() {
        // model.init_scale = 1 and train.cuda_graphs = true are the defaults, which config files
        // (and so the resolved table) omit: setting them is not an unknown key, and changes no id.
        let plain = Spec::parse("[grid]\nseed = [0]\n", "t").unwrap().expand().unwrap();
        let text = "[[runs]]\n\"model.init_scale\" = 1.0\n\"train.cuda_graphs\" = true\n\
                    [[runs]]\n\"model.init_scale\" = 3.0\n";
        let runs = Spec::parse(text, "t").unwrap().expand().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].id, plain[0].id);
        assert_eq!(runs[1].config.model.init_scale, 3.0);
        // Each listed key is really omitted at its default (else it needs no exemption).
        let defaults = Table::try_from(TrainConfig::default()).unwrap();
        for key in KEYS_OMITTED_AT_DEFAULT {
            let (section, field) = key.split_once('.').unwrap();
            let table = defaults[section].as_table().unwrap();
            assert!(!table.contains_key(field), "{key} is written at its default: drop it from the list");
        }
    }
}
