//! `report/index.html`: one static page to start from — the lines `ilr report` prints (run counts,
//! provenance note, Fast Equilibrium and norm-term fits, function space), the runs table, and every
//! PNG the report wrote, grouped under headings. No scripts, fonts or external styles: it reads from
//! the file system without a server or network.

use super::table::Table;
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// What the page shows; the text is what the printed report says.
pub struct Page<'a> {
    pub title: String,
    pub status: String,
    pub provenance_note: Option<String>,
    /// Per fit group, its printed lines.
    pub fits: Vec<Vec<String>>,
    pub norm_fits: Vec<String>,
    pub function_space: Vec<String>,
    pub table: &'a Table,
    /// Every file the report wrote (the PNGs among them are shown).
    pub files: &'a [PathBuf],
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em;border-radius:4px}\
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;white-space:nowrap}\
th{background:#eee;position:sticky;top:0}.scroll{overflow:auto;max-height:32em}\
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}figcaption{font-size:12px;color:#555}";

/// `s` with the five HTML-special characters escaped (for text and attribute values).
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A table cell's text as runs.json has it (empty for null).
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The heading a plot is shown under, from its path relative to the report folder.
fn section(rel: &str) -> String {
    if rel.starts_with("fast_equilibrium") {
        "Fast Equilibrium".into()
    } else if rel.starts_with("overview_") {
        "Overviews of the runs".into()
    } else if rel.starts_with("function_space") {
        "Function space".into()
    } else if let Some(id) = rel.strip_prefix("runs/").and_then(|r| r.split('/').next()) {
        format!("Run {id}")
    } else {
        "Other plots".into()
    }
}

/// `<pre>` of `lines`, or nothing when there are none.
fn pre(h: &mut String, heading: &str, lines: &[String]) {
    if !lines.is_empty() {
        let _ = write!(h, "<h2>{}</h2>\n<pre>{}</pre>\n", escape(heading), escape(&lines.join("\n")));
    }
}

impl Page<'_> {
    /// The page for a report folder `out` (links are relative to it).
    pub fn render(&self, out: &Path) -> String {
        let mut h = String::new();
        let title = escape(&self.title);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
             <style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n<p>{}</p>\n",
            escape(&self.status)
        );
        if let Some(n) = &self.provenance_note {
            let _ = writeln!(h, "<pre>{}</pre>", escape(n));
        }
        let fits: Vec<String> = self.fits.iter().flatten().chain(&self.norm_fits).cloned().collect();
        pre(&mut h, "Fast Equilibrium fits (fast_equilibrium.json)", &fits);
        pre(&mut h, "Function-space results (function_space.json)", &self.function_space);

        let rels: Vec<String> = self
            .files
            .iter()
            .filter_map(|f| f.strip_prefix(out).ok())
            .map(|r| r.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"))
            .collect();
        let _ = writeln!(
            h,
            "<h2>Runs (<a href=\"runs.csv\">runs.csv</a>, <a href=\"runs.json\">runs.json</a>)</h2>"
        );
        h.push_str("<div class=\"scroll\"><table>\n<tr>");
        for c in &self.table.columns {
            let _ = write!(h, "<th>{}</th>", escape(c));
        }
        h.push_str("</tr>\n");
        if let Value::Array(rows) = self.table.to_json() {
            for r in &rows {
                h.push_str("<tr>");
                for c in &self.table.columns {
                    let _ = write!(h, "<td>{}</td>", escape(&cell(&r[c])));
                }
                h.push_str("</tr>\n");
            }
        }
        h.push_str("</table></div>\n");

        let mut current = String::new();
        for rel in rels.iter().filter(|r| r.ends_with(".png")) {
            let s = section(rel);
            if s != current {
                let _ = writeln!(h, "<h2>{}</h2>", escape(&s));
                current = s;
            }
            let (png, svg) = (escape(rel), escape(&format!("{}.svg", rel.trim_end_matches(".png"))));
            let _ = writeln!(
                h,
                "<figure><img src=\"{png}\" alt=\"{png}\"><figcaption>{png} (<a href=\"{svg}\">SVG</a>)</figcaption></figure>"
            );
        }
        h.push_str("</body>\n</html>\n");
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_plots_are_grouped() {
        assert_eq!(escape("a<b & \"c\" 'd'>"), "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;");
        assert_eq!(section("runs/abc-123/steps.png"), "Run abc-123");
        assert_eq!(section("overview_matched_steps.png"), "Overviews of the runs");
        assert_eq!(cell(&Value::Null), "");
        assert_eq!(cell(&Value::from(0.5)), "0.5");
    }
}
