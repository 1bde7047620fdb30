//! Figures of line and scatter panels, written as PNG and SVG with plotters.
//!
//! Non-finite points (and non-positive ones on log axes) are dropped. A panel's legend is drawn in
//! a strip to the right of its plotting area, so that it never covers the data: the strip is as wide
//! as the longest label measured in the font (up to 2/5 of the panel), longer labels are wrapped onto
//! more lines and never cut, and panels grow taller to hold a long legend.

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
    /// Show a legend right of the plotting area (when text can be drawn; at most 24 entries, each
    /// label whole, wrapped onto more lines where it is wider than the legend strip).
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

/// The least width in pixels of the legend strip right of a panel's plotting area.
const LEGEND_WIDTH: u32 = 190;
/// The legend's font size, the x of its text, its first line's y, line height and gap between
/// entries, and the free space right of the text, in pixels.
const LEGEND_FONT: u32 = 12;
const LEGEND_TEXT_X: u32 = 32;
const LEGEND_TOP: u32 = 40;
const LEGEND_LINE: u32 = 15;
const LEGEND_GAP: u32 = 3;
const LEGEND_PAD: u32 = 10;
/// At most this many legend entries per panel.
const LEGEND_ENTRIES: usize = 24;

fn labelled(p: &Panel) -> Vec<&Series> {
    p.series.iter().filter(|s| !s.label.is_empty()).collect()
}

/// Width in pixels of `text` in the legend's font (with no font, a generous estimate).
fn legend_text_width(text: &str) -> u32 {
    ("sans-serif", LEGEND_FONT)
        .into_font()
        .box_size(text)
        .map_or(LEGEND_FONT * text.chars().count() as u32, |(w, _)| w)
}

/// `label` broken into lines at most `max` pixels wide by `width`: at spaces, and within a word
/// only where the word alone is wider. Nothing is dropped: the lines concatenated are `label`.
pub fn wrap(label: &str, max: u32, width: impl Fn(&str) -> u32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in label.split_inclusive(' ') {
        let joined = format!("{cur}{word}");
        if cur.is_empty() || width(joined.trim_end()) <= max {
            cur = joined;
        } else {
            lines.push(std::mem::replace(&mut cur, word.to_string()));
        }
        // A word wider than a line: break it before the first character that does not fit.
        while width(cur.trim_end()) > max && cur.chars().count() > 1 {
            // The longest prefix that fits, at least one character (shorter than `cur`, which does not).
            let ends: Vec<usize> = cur.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
            let cut = ends.iter().copied().take_while(|&e| width(&cur[..e]) <= max).last().unwrap_or(ends[0]);
            let rest = cur.split_off(cut);
            lines.push(std::mem::replace(&mut cur, rest));
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// A panel's legend laid out: its strip's width, its height from the strip's top, and each entry
/// with its label's lines.
struct Legend<'a> {
    width: u32,
    height: u32,
    entries: Vec<(&'a Series, Vec<String>)>,
}

/// The legend of `p` in a panel `panel_w` pixels wide: a strip wide enough for the widest label,
/// up to 2/5 of the panel, with longer labels wrapped onto more lines; None without a legend.
fn legend_layout(p: &Panel, panel_w: u32, width: impl Fn(&str) -> u32) -> Option<Legend<'_>> {
    let series = labelled(p);
    if !p.legend || series.is_empty() || panel_w <= 2 * LEGEND_WIDTH {
        return None;
    }
    let series = &series[..series.len().min(LEGEND_ENTRIES)];
    let widest = series.iter().map(|s| width(&s.label)).max().unwrap_or(0);
    let strip = (LEGEND_TEXT_X + widest + LEGEND_PAD).clamp(LEGEND_WIDTH, panel_w * 2 / 5);
    let text_w = strip - LEGEND_TEXT_X - LEGEND_PAD;
    let entries: Vec<(&Series, Vec<String>)> =
        series.iter().map(|s| (*s, wrap(&s.label, text_w, &width))).collect();
    let lines: u32 = entries.iter().map(|e| e.1.len() as u32).sum();
    let height = LEGEND_TOP + lines * LEGEND_LINE + entries.len() as u32 * LEGEND_GAP;
    Some(Legend { width: strip, height, entries })
}

/// The legend in its own strip: a line (or dot) sample and the label's lines per entry.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel, legend: &Legend) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let font = ("sans-serif", LEGEND_FONT).into_font().color(&BLACK);
    let mut y = LEGEND_TOP as i32;
    for (s, lines) in &legend.entries {
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
        for line in lines {
            area.draw(&Text::new(line.trim_end().to_string(), (LEGEND_TEXT_X as i32, y - 7), font.clone()))
                .map_err(|e| anyhow!("plot {} legend: {e}", p.title))?;
            y += LEGEND_LINE as i32;
        }
        y += LEGEND_GAP as i32;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel, text: bool) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (w, _) = area.dim_in_pixel();
    let legend = legend_layout(p, w, legend_text_width).filter(|_| text);
    let (area, legend_area) = match &legend {
        Some(l) => {
            let (a, s) = area.split_horizontally(w - l.width);
            (a, Some(s))
        }
        None => (area.clone(), None),
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
    if let (Some(a), Some(l)) = (legend_area, &legend) {
        draw_legend(&a, p, l)?;
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
    /// Pixel size of the image: panels tall enough for their legends (when text is drawn).
    fn size(&self, text: bool) -> (u32, u32) {
        let cols = self.cols.max(1) as u32;
        let rows = self.panels.len().div_ceil(self.cols.max(1)).max(1) as u32;
        let (w, h) = if self.panel_size == (0, 0) { (640, 420) } else { self.panel_size };
        let legend_h = self
            .panels
            .iter()
            .filter_map(|p| legend_layout(p, w, legend_text_width).filter(|_| text))
            .map(|l| l.height + LEGEND_PAD)
            .max()
            .unwrap_or(0);
        (w * cols, h.max(legend_h) * rows + 40)
    }

    /// Write `<stem>.png` and `<stem>.svg` (each atomically).
    pub fn save(&self, stem: &Path) -> Result<()> {
        let with = |suffix: &str| {
            let mut s = stem.as_os_str().to_owned();
            s.push(suffix);
            std::path::PathBuf::from(s)
        };
        let text = text_available();
        let (w, h) = self.size(text);
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

    /// A long label is wrapped whole (its lines concatenated give it back), every line fits the
    /// legend's text width, and the legend strip fits inside the panel — with the real font where
    /// one is installed, and with a fixed-width stand-in otherwise.
    #[test]
    fn long_legend_labels_wrap_without_truncation() {
        let label = "lr=0.5 momentum=0.0 wd=0.0005 seed=3 λ_e=2.5e-3 \
                     slope 0.90, λ_e-cluster CI [0.81, 0.99] averyveryveryveryverylongwordwithoutspaces";
        fn fixed(t: &str) -> u32 {
            7 * t.chars().count() as u32
        }
        let lines = wrap(label, 120, fixed);
        assert!(lines.len() > 3, "{lines:?}");
        assert_eq!(lines.concat(), label);
        assert!(lines.iter().all(|l| fixed(l.trim_end()) <= 120), "{lines:?}");
        assert_eq!(wrap("short", 120, fixed), ["short"]);
        assert_eq!(wrap("", 120, fixed), [""]);

        let measure: fn(&str) -> u32 = if text_available() { legend_text_width } else { fixed };
        let panel = Panel {
            legend: true,
            series: (0..3)
                .map(|i| Series { label: format!("{label} {i}"), color: i, ..Series::default() })
                .collect(),
            ..Panel::default()
        };
        for panel_w in [640, 830] {
            let l = legend_layout(&panel, panel_w, measure).expect("a legend");
            assert!(l.width <= panel_w * 2 / 5 && l.width >= LEGEND_WIDTH, "{}", l.width);
            for (s, lines) in &l.entries {
                assert_eq!(lines.concat(), s.label);
                for line in lines {
                    let right = LEGEND_TEXT_X + measure(line.trim_end());
                    assert!(right + LEGEND_PAD <= l.width, "{line:?} ends at {right} of {}", l.width);
                }
            }
        }
        // The image grows to hold a tall legend: 24 such entries do not fit in 420 pixels.
        let many = Panel {
            series: (0..24).map(|i| Series { color: i, ..panel.series[0].clone() }).collect(),
            ..panel
        };
        let fig = Figure { panels: vec![many], cols: 1, panel_size: (640, 420), ..Figure::default() };
        let tall = legend_layout(&fig.panels[0], 640, legend_text_width).unwrap().height;
        assert!(fig.size(true).1 >= tall + 40, "{:?} for a legend {tall} tall", fig.size(true));
    }

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
