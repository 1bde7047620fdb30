//! The report's figures: one run's dynamics, a group of runs overlaid, and T_eq against 1/λ_e.
//!
//! Each dynamics figure has four panels (per-layer weight norm ‖w‖; per-group angular update Δ,
//! solid, against its theory value Δ* = sqrt(2ηλ/(1+γ)), dashed; per-group effective LR η/‖w‖²;
//! train and test accuracy), drawn against steps and against intrinsic time Σ λ_e (= steps·λ_e at
//! constant λ_e).

use super::fit::LogLogFit;
use super::plot::{Figure, Panel, Series, Style};
use crate::train::MetricsRecord;

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

fn grid(title: String, panels: Vec<Panel>) -> Figure {
    Figure { title, panels, cols: 2, panel_size: (640, 420) }
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
        angles.series.push(series("", i, Style::Dashed, &xs, get(|s| s.angular_theory)));
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

/// Several runs overlaid: their main group's ‖w‖, smoothed Δ/Δ*, η/‖w‖², and test accuracy.
pub fn group_figure(title: &str, runs: &[(String, Vec<MetricsRecord>)], axis: Axis) -> Figure {
    let x_label = axis.label().to_string();
    let name = runs
        .iter()
        .find_map(|(_, r)| main_group(r).map(|g| r[0].groups[g].stats.name.clone()))
        .unwrap_or_default();
    let legend = runs.len() <= 12;
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
    for (c, (label, recs)) in runs.iter().enumerate() {
        let Some(g) = main_group(recs) else { continue };
        let xs = axis.xs(recs);
        let stat = |f: fn(&crate::train::record::GroupRecord) -> Option<f64>| {
            recs.iter().map(move |r| r.groups.get(g).and_then(f))
        };
        panels[0].series.push(series(label, c, Style::Line, &xs, stat(|g| Some(g.stats.norm))));
        panels[1].series.push(series(label, c, Style::Line, &xs, stat(|g| g.smoothed_ratio)));
        panels[2].series.push(series(label, c, Style::Line, &xs, stat(|g| Some(g.stats.effective_lr))));
        panels[3].series.push(series(label, c, Style::Line, &xs, recs.iter().map(|r| r.test_acc)));
    }
    grid(title.into(), panels.into())
}

/// A group's label, its (λ_e, T_eq) points and their fit.
pub type FitPoints = (String, Vec<(f64, f64)>, Option<LogLogFit>);

/// T_eq against 1/λ_e on log-log axes, one colour per group of runs, with the fitted line.
pub fn fast_equilibrium_figure(groups: &[FitPoints]) -> Figure {
    let mut p = Panel {
        title: "time to equilibrium".into(),
        x_label: "1/λ_e".into(),
        y_label: "T_eq (steps)".into(),
        log_x: true,
        log_y: true,
        legend: true,
        ..Panel::default()
    };
    for (c, (label, pts, fit)) in groups.iter().enumerate() {
        p.series.push(Series {
            label: label.clone(),
            points: pts.iter().map(|&(le, t)| (1.0 / le, t)).collect(),
            color: c,
            style: Style::Points,
        });
        if let Some(f) = fit {
            let xs: Vec<f64> = pts.iter().map(|&(le, _)| 1.0 / le).collect();
            let (lo, hi) = xs.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
            let line = |x: f64| (f.intercept + f.slope * x.ln()).exp();
            let ci = f.slope_ci95.map_or(String::new(), |[a, b]| format!(", 95% CI [{a:.2}, {b:.2}]"));
            p.series.push(Series {
                label: format!("fit: slope {:.2}{ci}", f.slope),
                points: vec![(lo, line(lo)), (hi, line(hi))],
                color: c,
                style: Style::Dashed,
            });
        }
    }
    Figure {
        title: "Fast Equilibrium: T_eq vs 1/λ_e".into(),
        panels: vec![p],
        cols: 1,
        panel_size: (800, 560),
    }
}
