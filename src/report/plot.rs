//! Figures of line and scatter panels, written as PNG and SVG with plotters.
//!
//! Non-finite points (and non-positive ones on log axes) are dropped. A panel's legend is drawn in
//! a strip to the right of its plotting area, so that it never covers the data.

use super::font::text_available;
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Qualitative colours (Tableau 10).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Style {
    #[default]
    Line,
    Dashed,
    Dotted,
    Points,
}

#[derive(Clone, Debug, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: usize,
    pub style: Style,
}

#[derive(Clone, Debug, Default)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Vertical marker lines (x, label).
    pub markers: Vec<(f64, String)>,
    /// Show a legend right of the plotting area (when text can be drawn; at most 24 entries).
    pub legend: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Figure {
    pub title: String,
    pub panels: Vec<Panel>,
    pub cols: usize,
    /// Pixel size of one panel.
    pub panel_size: (u32, u32),
}

/// Whether `v` can be drawn on an axis (finite, and positive on a log axis).
fn ok(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

/// Data range padded by 5% (multiplicatively on log axes), or a unit range when empty or flat.
fn range(vals: impl Iterator<Item = f64>, log: bool) -> std::ops::Range<f64> {
    let [lo, hi] = super::extent(vals.filter(|&v| ok(v, log)));
    match (lo.is_finite(), log) {
        (false, false) => 0.0..1.0,
        (false, true) => 0.1..1.0,
        (true, true) if hi / lo < 1.0 + 1e-9 => lo / 2.0..hi * 2.0,
        (true, true) => {
            let f = (hi / lo).powf(0.05);
            lo / f..hi * f
        }
        (true, false) if hi - lo < 1e-12 * lo.abs().max(1e-300) => lo - 0.5..hi + 0.5,
        (true, false) => {
            let pad = 0.05 * (hi - lo);
            lo - pad..hi + pad
        }
    }
}

/// Whether every tick of an axis over `r` can be written plainly (else all are in e-notation).
fn plain_axis(r: &std::ops::Range<f64>) -> bool {
    let big = r.start.abs().max(r.end.abs());
    big < 1e5 && (big >= 1e-2 || big == 0.0) && (r.start <= 0.0 || r.start >= 1e-2 * 0.5)
}

/// A tick label in the axis's one format: plain with at most 3 significant digits, or e-notation.
fn axis_label(v: f64, plain: bool) -> String {
    if plain || v == 0.0 {
        label(v)
    } else {
        format!("{v:.1e}")
    }
}

/// A tick label with at most 3 significant digits.
fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (1e-2..1e5).contains(&v.abs()) {
        let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{v:.1e}")
    }
}

/// Ticks for a log axis over `r`: 1, 2, 5 × 10^k (1–9 × 10^k within one short range; powers of
/// ten over many decades).
fn log_ticks(r: &std::ops::Range<f64>) -> Vec<f64> {
    let (k0, k1) = (r.start.log10().floor() as i32, r.end.log10().ceil() as i32);
    let pick = |ms: &[f64]| -> Vec<f64> {
        (k0..=k1).flat_map(|k| ms.iter().map(move |m| m * 10f64.powi(k))).filter(|v| r.contains(v)).collect()
    };
    let t = pick(&[1.0, 2.0, 5.0]);
    if t.len() < 3 {
        return pick(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    }
    if t.len() > 12 {
        let p = pick(&[1.0]);
        let step = p.len().div_ceil(10).max(1);
        return p.into_iter().step_by(step).collect();
    }
    t
}

/// Build the chart with linear or log axes and run `$body` on it (plotters gives each combination
/// its own coordinate type).
macro_rules! with_chart {
    ($b:expr, $p:expr, $xr:expr, $yr:expr, |$chart:ident| $body:block) => {
        match ($p.log_x, $p.log_y) {
            (false, false) => {
                let mut $chart =
                    $b.build_cartesian_2d($xr, $yr).map_err(|e| anyhow!("plot {}: {e}", $p.title))?;
                $body
            }
            (true, false) => {
                let mut $chart = $b
                    .build_cartesian_2d($xr.clone().log_scale().with_key_points(log_ticks(&$xr)), $yr)
                    .map_err(|e| anyhow!("plot {}: {e}", $p.title))?;
                $body
            }
            (false, true) => {
                let mut $chart = $b
                    .build_cartesian_2d($xr, $yr.clone().log_scale().with_key_points(log_ticks(&$yr)))
                    .map_err(|e| anyhow!("plot {}: {e}", $p.title))?;
                $body
            }
            (true, true) => {
                let mut $chart = $b
                    .build_cartesian_2d(
                        $xr.clone().log_scale().with_key_points(log_ticks(&$xr)),
                        $yr.clone().log_scale().with_key_points(log_ticks(&$yr)),
                    )
                    .map_err(|e| anyhow!("plot {}: {e}", $p.title))?;
                $body
            }
        }
    };
}

/// Width in pixels of the legend strip right of a panel's plotting area.
const LEGEND_WIDTH: u32 = 190;

fn labelled(p: &Panel) -> Vec<&Series> {
    p.series.iter().filter(|s| !s.label.is_empty()).collect()
}

/// The legend of `p` in its own strip: a line (or dot) sample and the label per labelled series.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    for (i, s) in labelled(p).into_iter().take(24).enumerate() {
        let y = 40 + 16 * i as i32;
        let c = color(s.color);
        let sample: Vec<(i32, i32)> = vec![(6, y), (26, y)];
        match s.style {
            Style::Points => area.draw(&Circle::new((16, y), 4, c.filled())),
            Style::Line => area.draw(&PathElement::new(sample, c.stroke_width(2))),
            Style::Dashed => area
                .draw(&PathElement::new(vec![(6, y), (13, y)], c.stroke_width(2)))
                .and_then(|_| area.draw(&PathElement::new(vec![(19, y), (26, y)], c.stroke_width(2)))),
            Style::Dotted => (0..4).try_for_each(|k| area.draw(&Circle::new((7 + 6 * k, y), 1, c.filled()))),
        }
        .map_err(|e| anyhow!("plot {} legend: {e}", p.title))?;
        let mut name = s.label.clone();
        if name.chars().count() > 26 {
            name = name.chars().take(25).collect::<String>() + "…";
        }
        area.draw(&Text::new(name, (32, y - 7), font.clone()))
            .map_err(|e| anyhow!("plot {} legend: {e}", p.title))?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel, text: bool) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let with_legend = text && p.legend && !labelled(p).is_empty();
    let (w, _) = area.dim_in_pixel();
    let (area, legend_area) = if with_legend && w > 2 * LEGEND_WIDTH {
        let (a, l) = area.split_horizontally(w - LEGEND_WIDTH);
        (a, Some(l))
    } else {
        (area.clone(), None)
    };
    let area = &area;
    let pts: Vec<Vec<(f64, f64)>> = p
        .series
        .iter()
        .map(|s| s.points.iter().copied().filter(|&(x, y)| ok(x, p.log_x) && ok(y, p.log_y)).collect())
        .collect();
    let xr = range(pts.iter().flatten().map(|q| q.0).chain(p.markers.iter().map(|m| m.0)), p.log_x);
    let yr = range(pts.iter().flatten().map(|q| q.1), p.log_y);
    let (y0, y1) = (yr.start, yr.end);
    let (xr0, xr1) = (xr.start, xr.end);
    let mut b = ChartBuilder::on(area);
    b.margin(12);
    if text {
        b.caption(&p.title, ("sans-serif", 20)).x_label_area_size(38).y_label_area_size(64);
    } else {
        b.x_label_area_size(8).y_label_area_size(8);
    }
    let (plain_x, plain_y) = (plain_axis(&xr), plain_axis(&yr));
    let fmt_x = move |v: &f64| axis_label(*v, plain_x);
    let fmt_y = move |v: &f64| axis_label(*v, plain_y);
    with_chart!(b, p, xr, yr, |chart| {
        if text {
            chart
                .configure_mesh()
                .light_line_style(RGBColor(235, 235, 235))
                .x_desc(p.x_label.as_str())
                .y_desc(p.y_label.as_str())
                .x_label_formatter(&fmt_x)
                .y_label_formatter(&fmt_y)
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(|e| anyhow!("plot {}: {e}", p.title))?;
        } else {
            // The mesh lays out its labels even when there are none: draw just a frame.
            chart
                .draw_series([Rectangle::new([(xr0, y0), (xr1, y1)], BLACK.stroke_width(1))])
                .map_err(|e| anyhow!("plot {}: {e}", p.title))?;
        }
        for (s, pts) in p.series.iter().zip(&pts) {
            let c = color(s.color);
            match s.style {
                Style::Line => chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2))),
                Style::Dashed => {
                    chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 6, 4, c.stroke_width(2)))
                }
                Style::Dotted => {
                    chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 2, 3, c.stroke_width(2)))
                }
                Style::Points => chart.draw_series(pts.iter().map(|&q| Circle::new(q, 4, c.filled()))),
            }
            .map_err(|e| anyhow!("plot {}: {e}", p.title))?;
        }
        for &(x, _) in p.markers.iter().filter(|m| ok(m.0, p.log_x)) {
            chart
                .draw_series(DashedLineSeries::new([(x, y0), (x, y1)], 4, 4, BLACK.stroke_width(1)))
                .map_err(|e| anyhow!("plot {}: {e}", p.title))?;
        }
    });
    if let Some(l) = legend_area {
        draw_legend(&l, p)?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, f: &Figure, text: bool) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = if text && !f.title.is_empty() {
        root.titled(&f.title, ("sans-serif", 24)).map_err(|e| anyhow!("{e}"))?
    } else {
        root
    };
    let cols = f.cols.max(1);
    let rows = f.panels.len().div_ceil(cols).max(1);
    let areas = root.split_evenly((rows, cols));
    for (p, a) in f.panels.iter().zip(&areas) {
        draw_panel(a, p, text)?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

impl Figure {
    fn size(&self) -> (u32, u32) {
        let cols = self.cols.max(1) as u32;
        let rows = self.panels.len().div_ceil(self.cols.max(1)).max(1) as u32;
        let (w, h) = if self.panel_size == (0, 0) { (640, 420) } else { self.panel_size };
        (w * cols, h * rows + 40)
    }

    /// Write `<stem>.png` and `<stem>.svg` (each atomically).
    pub fn save(&self, stem: &Path) -> Result<()> {
        let with = |suffix: &str| {
            let mut s = stem.as_os_str().to_owned();
            s.push(suffix);
            std::path::PathBuf::from(s)
        };
        let text = text_available();
        let (w, h) = self.size();
        let mut svg = String::new();
        draw(SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area(), self, text)?;
        crate::util::atomic::write_atomic(&with(".svg"), svg.as_bytes())?;
        // plotters' bitmap backend encodes PNG only into a file: render to a scratch file, then
        // move its bytes into place atomically.
        let scratch = with(&format!(".tmp{}.png", std::process::id()));
        let drawn = draw(BitMapBackend::new(&scratch, (w, h)).into_drawing_area(), self, text);
        let png = drawn.and_then(|()| Ok(std::fs::read(&scratch)?));
        let _ = std::fs::remove_file(&scratch);
        crate::util::atomic::write_atomic(&with(".png"), &png?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short() {
        assert_eq!(label(891.251), "891");
        assert_eq!(label(0.125), "0.125");
        assert_eq!(label(2.0), "2");
        assert_eq!(label(0.0005), "5.0e-4");
        assert_eq!(label(12.5), "12.5");
        assert_eq!(log_ticks(&(90.0..1100.0)), vec![100.0, 200.0, 500.0, 1000.0]);
        assert_eq!(log_ticks(&(120.0..510.0)), vec![200.0, 300.0, 400.0, 500.0]);
        // One format per axis: a log axis from 5e-4 to 0.2 writes every tick in e-notation.
        let r = 5e-4..0.2;
        assert!(!plain_axis(&r));
        assert_eq!(
            log_ticks(&r).iter().map(|&v| axis_label(v, false)).collect::<Vec<_>>()[..2],
            ["5.0e-4", "1.0e-3"]
        );
        assert!(plain_axis(&(0.05..20.0)) && axis_label(0.1, true) == "0.1");
    }
}
