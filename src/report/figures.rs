//! The report's figures: one run's dynamics, a group of runs overlaid (with their legend labels,
//! colours and line styles), T_eq against 1/λ_e, and one function-space group.
//!
//! Each dynamics figure has four panels (per-layer weight norm ‖w‖; per-group angular update Δ,
//! solid, against its theory value Δ* = sqrt(2ηλ/(1+γ)), dashed; per-group effective LR η/‖w‖²;
//! train and test accuracy), drawn against steps and against intrinsic time Σ λ_e (= steps·λ_e at
//! constant λ_e).

use super::collect::{LoadedRun, RunInfo};
use super::funcspace::{Gaps, GroupResult, INFORMATIVE_FRACTION_OF_CHANCE};
use super::plot::{Figure, Panel, Series, Style};
use super::{extent, table, FitGroup};
use crate::train::MetricsRecord;
use std::collections::BTreeMap;

/// The x axis of a dynamics figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    Steps,
    /// Σ over steps of λ_e: steps·λ_e when λ_e is constant.
    Intrinsic,
}

impl Axis {
    pub const BOTH: [Axis; 2] = [Axis::Steps, Axis::Intrinsic];

    pub fn file_stem(self) -> &'static str {
        match self {
            Axis::Steps => "steps",
            Axis::Intrinsic => "steps_x_lambda_e",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Axis::Steps => "steps",
            Axis::Intrinsic => "steps·λ_e",
        }
    }

    /// The x coordinate of every record.
    pub fn xs(self, recs: &[MetricsRecord]) -> Vec<f64> {
        match self {
            Axis::Steps => recs.iter().map(|r| r.step as f64).collect(),
            Axis::Intrinsic => {
                let (mut prev, mut t) = (0u64, 0.0);
                recs.iter()
                    .map(|r| {
                        t += r.lambda_e * (r.step - prev) as f64;
                        prev = r.step;
                        t
                    })
                    .collect()
            }
        }
    }
}

fn series(
    label: &str,
    color: usize,
    style: Style,
    xs: &[f64],
    ys: impl Iterator<Item = Option<f64>>,
) -> Series {
    Series {
        label: label.into(),
        points: xs.iter().zip(ys).filter_map(|(&x, y)| Some((x, y?))).collect(),
        color,
        style,
    }
}

/// Two columns of panels, each wide enough for its legend strip.
fn grid(title: String, panels: Vec<Panel>) -> Figure {
    Figure { title, panels, cols: 2, panel_size: (830, 420) }
}

/// One run's dynamics.
pub fn run_figure(title: &str, recs: &[MetricsRecord], axis: Axis) -> Figure {
    let xs = axis.xs(recs);
    let x_label = axis.label().to_string();
    let first = recs.first();
    let layer_names: Vec<String> =
        first.map(|r| r.layers.iter().map(|l| l.name.clone()).collect()).unwrap_or_default();
    let group_names: Vec<String> =
        first.map(|r| r.groups.iter().map(|g| g.stats.name.clone()).collect()).unwrap_or_default();
    let norms = Panel {
        title: "weight norm per layer".into(),
        x_label: x_label.clone(),
        y_label: "‖w‖".into(),
        log_y: true,
        legend: layer_names.len() <= 10,
        series: layer_names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                series(
                    n.trim_end_matches(".weight"),
                    i,
                    Style::Line,
                    &xs,
                    recs.iter().map(|r| r.layers.get(i).map(|l| l.norm)),
                )
            })
            .collect(),
        ..Panel::default()
    };
    let mut angles = Panel {
        title: "angular update Δ (solid) vs Δ* (dashed)".into(),
        x_label: x_label.clone(),
        y_label: "radians per step".into(),
        log_y: true,
        legend: group_names.len() <= 6,
        ..Panel::default()
    };
    let mut eff = Panel {
        title: "effective LR η/‖w‖² per group".into(),
        x_label: x_label.clone(),
        y_label: "η/‖w‖²".into(),
        log_y: true,
        legend: group_names.len() <= 10,
        ..Panel::default()
    };
    for (i, g) in group_names.iter().enumerate() {
        let get = |f: fn(&crate::stats::VectorStats) -> Option<f64>| {
            recs.iter().map(move |r| r.groups.get(i).and_then(|gr| f(&gr.stats)))
        };
        angles.series.push(series(&format!("Δ {g}"), i, Style::Line, &xs, get(|s| Some(s.angular_update))));
        let theory = if i == 0 { "Δ* = sqrt(2ηλ/(1+γ))" } else { "" };
        angles.series.push(series(theory, i, Style::Dashed, &xs, get(|s| s.angular_theory)));
        eff.series.push(series(g, i, Style::Line, &xs, get(|s| Some(s.effective_lr))));
    }
    let acc = Panel {
        title: "accuracy".into(),
        x_label,
        y_label: "accuracy".into(),
        legend: true,
        series: vec![
            series("train (running mean)", 0, Style::Line, &xs, recs.iter().map(|r| Some(r.train_acc))),
            series("test", 3, Style::Line, &xs, recs.iter().map(|r| r.test_acc)),
        ],
        ..Panel::default()
    };
    grid(title.into(), vec![norms, angles, eff, acc])
}

/// The group with the most members (the residual stream for option-A nets), by index.
pub fn main_group(recs: &[MetricsRecord]) -> Option<usize> {
    recs.first()?.groups.iter().enumerate().max_by_key(|(_, g)| g.members.len()).map(|(i, _)| i)
}

/// One run of an overlay figure: its legend label, records, colour and line style.
pub struct Overlay {
    pub label: String,
    pub recs: Vec<MetricsRecord>,
    pub color: usize,
    pub style: Style,
}

/// Several runs overlaid: their main group's ‖w‖, smoothed Δ/Δ* (with Δ*, the ratio 1), η/‖w‖²,
/// and test accuracy.
pub fn group_figure(title: &str, runs: &[Overlay], axis: Axis) -> Figure {
    let x_label = axis.label().to_string();
    let name = runs
        .iter()
        .find_map(|o| main_group(&o.recs).map(|g| o.recs[0].groups[g].stats.name.clone()))
        .unwrap_or_default();
    let legend = runs.len() <= 24;
    let mk = |t: String, y: &str, log_y: bool| Panel {
        title: t,
        x_label: x_label.clone(),
        y_label: y.into(),
        log_y,
        legend,
        ..Panel::default()
    };
    let mut panels = [
        mk(format!("‖w‖ of group {name}"), "‖w‖", true),
        mk(format!("smoothed Δ/Δ* of group {name}"), "Δ/Δ*", false),
        mk(format!("η/‖w‖² of group {name}"), "η/‖w‖²", true),
        mk("test accuracy".into(), "accuracy", false),
    ];
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    for o in runs {
        let Some(g) = main_group(&o.recs) else { continue };
        let xs = axis.xs(&o.recs);
        x0 = x0.min(xs.first().copied().unwrap_or(x0));
        x1 = x1.max(xs.last().copied().unwrap_or(x1));
        let stat = |f: fn(&crate::train::record::GroupRecord) -> Option<f64>| {
            o.recs.iter().map(move |r| r.groups.get(g).and_then(f))
        };
        let (l, c, st) = (o.label.as_str(), o.color, o.style);
        panels[0].series.push(series(l, c, st, &xs, stat(|g| Some(g.stats.norm))));
        panels[1].series.push(series(l, c, st, &xs, stat(|g| g.smoothed_ratio)));
        panels[2].series.push(series(l, c, st, &xs, stat(|g| Some(g.stats.effective_lr))));
        panels[3].series.push(series(l, c, st, &xs, o.recs.iter().map(|r| r.test_acc)));
    }
    if x0 < x1 {
        panels[1].series.push(Series {
            label: "Δ* (Δ/Δ* = 1)".into(),
            points: vec![(x0, 1.0), (x1, 1.0)],
            color: 7,
            style: Style::Dashed,
        });
    }
    grid(title.into(), panels.into())
}

/// Two panels. Left: T_eq against 1/λ_e on log-log axes, one colour per group of runs (arm), each
/// with its fitted line (dashed), and a line of slope 1 through the centroid of all points
/// (dotted; the conjecture's T_eq ∝ 1/λ_e). Right: T_eq·λ_e against the norm term
/// max(0, ln(‖w₀‖²/‖w*‖²))/2, with the norm-term fit of every group and of all groups together.
pub fn fast_equilibrium_figure(groups: &[FitGroup], pooled: Option<&super::fit::LinearFit>) -> Figure {
    let mut p = Panel {
        title: "time to equilibrium (slope 95% CIs from λ_e clusters)".into(),
        x_label: "1/λ_e".into(),
        y_label: "T_eq (steps)".into(),
        log_x: true,
        log_y: true,
        legend: true,
        ..Panel::default()
    };
    let all: Vec<(f64, f64)> =
        groups.iter().flat_map(|g| g.points.iter().map(|p| ((1.0 / p.1).ln(), (p.2 as f64).ln()))).collect();
    for (c, g) in groups.iter().enumerate() {
        let pts: Vec<(f64, f64)> = g.points.iter().map(|p| (1.0 / p.1, p.2 as f64)).collect();
        p.series.push(Series { label: g.label.clone(), points: pts.clone(), color: c, style: Style::Points });
        if let Some(f) = &g.fit {
            let [lo, hi] = extent(pts.iter().map(|q| q.0));
            let line = |x: f64| (f.intercept + f.slope * x.ln()).exp();
            let ci =
                f.slope_ci95.map_or(String::new(), |[a, b]| format!(", λ_e-cluster CI [{a:.2}, {b:.2}]"));
            p.series.push(Series {
                label: format!("slope {:.2}{ci}", f.slope),
                points: vec![(lo, line(lo)), (hi, line(hi))],
                color: c,
                style: Style::Dashed,
            });
        }
    }
    if !all.is_empty() {
        let n = all.len() as f64;
        let (mx, my) = (all.iter().map(|q| q.0).sum::<f64>() / n, all.iter().map(|q| q.1).sum::<f64>() / n);
        let [lo, hi] = extent(all.iter().map(|q| q.0));
        let line = |x: f64| (my + x - mx).exp();
        p.series.push(Series {
            label: "slope 1 (T_eq ∝ 1/λ_e)".into(),
            points: vec![(lo.exp(), line(lo)), (hi.exp(), line(hi))],
            color: 7,
            style: Style::Dotted,
        });
    }
    let mut q = Panel {
        title: format!("{} against the norm term", super::t_eq_units_name_of(groups)),
        x_label: "max(0, ln(‖w₀‖²/‖w*‖²))/2".into(),
        y_label: super::t_eq_units_name_of(groups).into(),
        legend: true,
        ..Panel::default()
    };
    let line_of = |f: &super::fit::LinearFit, lo: f64, hi: f64| {
        vec![(lo, f.intercept + f.slope * lo), (hi, f.intercept + f.slope * hi)]
    };
    let norm_all: Vec<(f64, f64)> = groups.iter().flat_map(|g| g.norm_points()).collect();
    let [nlo, nhi] = extent(norm_all.iter().map(|q| q.0));
    for (c, g) in groups.iter().enumerate() {
        let pts = g.norm_points();
        q.series.push(Series { label: g.label.clone(), points: pts.clone(), color: c, style: Style::Points });
        if let Some(f) = &g.norm_fit {
            let [lo, hi] = extent(pts.iter().map(|q| q.0));
            q.series.push(Series {
                label: format!("b = {:.2}", f.slope),
                points: line_of(f, lo, hi),
                color: c,
                style: Style::Dashed,
            });
        }
    }
    if let Some(f) = pooled.filter(|_| nlo < nhi) {
        q.series.push(Series {
            label: format!("all: a = {:.2}, b = {:.2}", f.intercept, f.slope),
            points: line_of(f, nlo, nhi),
            color: 7,
            style: Style::Dotted,
        });
    }
    Figure {
        title: "Fast Equilibrium: T_eq vs 1/λ_e, and the initial-norm term".into(),
        panels: vec![p, q],
        cols: 2,
        panel_size: (830, 560),
    }
}

/// Short legend labels: the config keys that vary across `runs` (seed, λ_e, ...).
pub fn labels(runs: &[&RunInfo]) -> Vec<String> {
    let flat: Vec<BTreeMap<String, String>> = runs.iter().map(|r| table::flatten(&r.config)).collect();
    let mut keys = table::differing_keys(&flat);
    // model.init_norm follows λ_e in the init-norm arms (a long list); λ_e names the run better.
    keys.retain(|k| !k.starts_with("train.") && k != "model.init_norm");
    runs.iter()
        .zip(&flat)
        .map(|(r, f)| {
            let parts: Vec<String> = keys
                .iter()
                .filter_map(|k| {
                    let short =
                        if k == "optim.lambda_e" { "λ_e" } else { k.rsplit('.').next().unwrap_or(k) };
                    f.get(k).map(|v| format!("{short}={}", v.trim_matches('"')))
                })
                .collect();
            if parts.is_empty() {
                r.id.clone()
            } else {
                parts.join(" ")
            }
        })
        .collect()
}

/// The overlay of `runs`: one colour per λ_e (in decreasing order), seeds as line styles (solid,
/// dashed, dotted, then again), labelled by the keys that vary between them.
pub fn overlays(runs: &[&LoadedRun]) -> Vec<Overlay> {
    let mut les: Vec<f64> = runs.iter().map(|r| r.info.lambda_e()).collect();
    les.sort_by(|a, b| b.total_cmp(a));
    les.dedup();
    let mut seeds: Vec<u64> = runs.iter().map(|r| r.info.config.seed).collect();
    seeds.sort();
    seeds.dedup();
    const STYLES: [Style; 3] = [Style::Line, Style::Dashed, Style::Dotted];
    let names = labels(&runs.iter().map(|r| &r.info).collect::<Vec<_>>());
    runs.iter()
        .zip(names)
        .map(|(r, label)| Overlay {
            label,
            recs: r.metrics.clone(),
            color: les.iter().position(|&l| l == r.info.lambda_e()).unwrap_or(0),
            style: STYLES[seeds.iter().position(|&s| s == r.info.config.seed).unwrap_or(0) % STYLES.len()],
        })
        .collect()
}

/// The function-space figure of one group: the three gaps between its runs against steps, with
/// their noise thresholds and T_fs.
pub fn funcspace_figure(g: &GroupResult) -> Figure {
    let xs: Vec<f64> = g.points.iter().map(|p| p.step as f64).collect();
    let panel = |title: &str, y: &str, f: fn(&Gaps) -> f64| {
        let level = f(&g.threshold);
        let (x0, x1) = (xs.first().copied().unwrap_or(0.0), xs.last().copied().unwrap_or(1.0));
        Panel {
            title: title.into(),
            x_label: "step".into(),
            y_label: y.into(),
            legend: true,
            series: vec![
                Series {
                    label: "between runs".into(),
                    points: xs.iter().zip(&g.points).map(|(&x, p)| (x, f(&p.gaps))).collect(),
                    color: 0,
                    style: Style::Line,
                },
                Series {
                    label: "noise threshold".into(),
                    points: vec![(x0, level), (x1, level)],
                    color: 3,
                    style: Style::Dashed,
                },
            ],
            markers: g.t_fs.map(|t| (t as f64, "T_fs".to_string())).into_iter().collect(),
            ..Panel::default()
        }
    };
    Figure {
        title: format!(
            "function-space equilibrium: {}{}",
            g.label,
            if g.informative {
                String::new()
            } else {
                format!(
                    " (uninformative: disagreement {:.2} × chance, above {})",
                    g.disagreement_to_chance, INFORMATIVE_FRACTION_OF_CHANCE
                )
            }
        ),
        panels: vec![
            panel("|Δ test accuracy|", "mean over pairs", |x| x.acc_gap),
            panel("|Δ test loss|", "mean over pairs", |x| x.loss_gap),
            panel("prediction disagreement", "fraction of test samples", |x| x.disagreement),
        ],
        cols: 3,
        panel_size: (720, 420),
    }
}
