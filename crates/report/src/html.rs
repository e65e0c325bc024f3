//! `index.html`: the figures inline and the summary table, readable offline. No scripts, no web
//! fonts, no external style sheets: the page is one file that opens the same from a laptop, a
//! mail attachment or an air-gapped cluster.

use std::fmt::Write;

use arrow::array::{Array, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// A figure of the page.
pub(crate) struct Figure {
    pub title: String,
    /// What the figure shows, in a sentence.
    pub caption: String,
    /// SVG document text.
    pub svg: String,
    /// The SVG file beside the page, for reuse elsewhere.
    pub file: String,
}

/// The whole page.
pub(crate) struct Page<'a> {
    pub results: &'a str,
    pub runs: usize,
    pub keys: &'a [String],
    /// Figures, in order; an `Err` is a figure not drawn: its title and the reason.
    pub figures: Vec<Result<Figure, (String, String)>>,
    pub table: &'a RecordBatch,
    /// With `--metrics`: the correlations of mean LID with each metric, and the rows of the
    /// metrics file that matched no run.
    pub correlations: Option<(&'a RecordBatch, &'a [String])>,
    /// With `--metrics`: the falls of mean LID by more than the threshold (a fraction).
    pub falls: Option<(&'a RecordBatch, f64)>,
    /// With `--compare`: what was compared, and the paired figures.
    pub compare: Option<(&'a crate::Comparison, &'a RecordBatch)>,
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1040px;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}\
figure{margin:1em 0}figure svg{max-width:100%;height:auto;display:block}figcaption{color:#555;font-size:.9em}\
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}\
table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em}\
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}\
code{background:#f3f3f3;padding:0 .2em}";

/// The page's HTML text.
pub(crate) fn page(p: &Page<'_>) -> String {
    let mut h = String::new();
    let keys = if p.keys.is_empty() { "none (one unpartitioned run)".to_string() } else { p.keys.iter().map(|k| format!("<code>{}</code>", esc(k))).collect::<Vec<_>>().join(", ") };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>lidscope report: {results}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>lidscope report</h1>\n<p>Results: <code>{results}</code>. {runs} run{s}; partition keys: {keys}. Written by lidscope {version}.</p>\n",
        results = esc(p.results),
        runs = p.runs,
        s = if p.runs == 1 { "" } else { "s" },
        version = env!("CARGO_PKG_VERSION"),
    );
    for f in &p.figures {
        match f {
            Ok(f) => {
                let _ = write!(
                    h,
                    "<h2>{}</h2>\n<figure>\n{}\n<figcaption>{} (<a href=\"{}\">{}</a>)</figcaption>\n</figure>\n",
                    esc(&f.title),
                    inline(&f.svg),
                    esc(&f.caption),
                    esc(&f.file),
                    esc(&f.file)
                );
            }
            Err((title, why)) => {
                let _ = write!(h, "<h2>{}</h2>\n<p class=\"note\">Not drawn: {}.</p>\n", esc(title), esc(why));
            }
        }
    }
    if let Some((c, unmatched)) = p.correlations {
        let _ = write!(
            h,
            "<h2>Mean LID and the training metrics</h2>\n<p>Per trend line and metric, over the checkpoints with both: Spearman and Pearson correlation of \
             mean LID with the metric, and <code>lagged_spearman</code>, the change of mean LID over one interval against the change of the metric \
             over the next (does a fall in LID come before a gain?). Also as <a href=\"correlations.csv\">correlations.csv</a>.</p>\n{}",
            table(c)
        );
        if let Some((f, threshold)) = p.falls {
            let _ = write!(
                h,
                "<h2>Where mean LID fell</h2>\n<p>Intervals between consecutive checkpoints where mean LID fell by more than {:.0}% \
                 (<code>--fall-threshold {threshold}</code>), per metric: the metric over the fall and over the next interval. Also as \
                 <a href=\"falls.csv\">falls.csv</a>.</p>\n{}",
                threshold * 100.0,
                if f.num_rows() == 0 { "<p>None.</p>\n".to_string() } else { table(f) }
            );
        }
        if !unmatched.is_empty() {
            let shown: Vec<&str> = unmatched.iter().take(12).map(String::as_str).collect();
            let more = if unmatched.len() > shown.len() { format!(" and {} more", unmatched.len() - shown.len()) } else { String::new() };
            let _ = writeln!(h, "<p class=\"note\">{} rows of the metrics file are no run's checkpoint: {}{more}.</p>", unmatched.len(), esc(&shown.join("; ")));
        }
    }
    if let Some((c, t)) = p.compare {
        let _ = write!(
            h,
            "<h2>{key}={a} against {key}={b}, token by token</h2>\n<p>The runs are paired on their identity columns; per combination of the other \
             partition keys: <code>n</code> tokens with a finite LID in both, <code>mean_diff</code> of LID({key}={a}) minus LID({key}={b}), its sample \
             standard deviation, Cohen's <code>d_z</code> (their ratio), the paired <code>t</code> = d_z &middot; &radic;n with n &minus; 1 degrees of \
             freedom and its two-sided <code>p</code>; <code>paper_score</code> is the paper's number, the mean over the population deviation (d_z up to \
             &radic;((n&minus;1)/n), not a t statistic). Also as <a href=\"compare.csv\">compare.csv</a>.</p>\n{}",
            table(t),
            key = esc(&c.key),
            a = esc(&c.a),
            b = esc(&c.b),
        );
    }
    let _ = write!(
        h,
        "<h2>Summary</h2>\n<p>One row per run; also as <a href=\"summary.csv\">summary.csv</a> and <a href=\"summary.parquet\">summary.parquet</a>. \
         Statistics are over rows with a finite LID; <code>mean_lid</code> is the run's manifest value.</p>\n{}</body>\n</html>\n",
        table(p.table)
    );
    h
}

/// An SVG document as an element of the page: HTML parsers put `<svg>` in the SVG namespace
/// themselves, so the `xmlns` URL goes (the page then names no web address at all).
fn inline(svg: &str) -> String {
    let svg = svg.trim_start();
    let svg = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    };
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

/// `table` as an HTML table, numbers right-aligned with four decimals.
fn table(t: &RecordBatch) -> String {
    let mut h = String::from("<table>\n<thead><tr>");
    for f in t.schema().fields() {
        let _ = write!(h, "<th>{}</th>", esc(f.name()));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    let options = FormatOptions::default().with_null("");
    let formatters: Vec<Option<ArrayFormatter<'_>>> = t.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
    for row in 0..t.num_rows() {
        h.push_str("<tr>");
        for (c, f) in t.columns().iter().zip(&formatters) {
            let (class, text) = match c.data_type() {
                arrow::datatypes::DataType::Float64 => {
                    let c = c.as_any().downcast_ref::<arrow::array::Float64Array>().expect("Float64");
                    (" class=\"num\"", if c.is_null(row) { String::new() } else { format!("{:.4}", c.value(row)) })
                }
                t if t.is_integer() => (" class=\"num\"", f.as_ref().map(|f| f.value(row).to_string()).unwrap_or_default()),
                _ => ("", f.as_ref().map(|f| f.value(row).to_string()).unwrap_or_default()),
            };
            let _ = write!(h, "<td{class}>{}</td>", esc(&text));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
    h
}

/// `s` safe as HTML text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
