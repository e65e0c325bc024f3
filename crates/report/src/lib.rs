//! A lidscope result directory as a report a person reads: a per-run summary table (CSV and
//! Parquet), SVG figures, and an `index.html` showing both that opens offline.
//!
//! The data comes through the engine's SQL views (`lid_summary`, `lid_runs`), the same numbers
//! `lidscope sql` shows; this crate only arranges them. It serves `lidscope report` and
//! `lidscope plot`, and any program that wants the figures without the command line:
//!
//! ```no_run
//! let results = lidscope_report::load(std::path::Path::new("results"), 60)?;
//! let report = lidscope_report::write_report(&results, std::path::Path::new("report"), &Default::default())?;
//! println!("{}", report.index.display());
//! # Ok::<(), lidscope_report::ReportError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rustdoc::broken_intra_doc_links)]

mod compare;
mod error;
mod figures;
mod html;
mod load;
mod metrics;
mod summary;

use std::path::{Path, PathBuf};

pub use compare::Comparison;
pub use error::{ReportError, Result};
pub use figures::{plot_svg, XScale, X_KEYS};
pub use metrics::{pearson, spearman, Correlation, Fall, Metrics};
pub use load::{load, load_async, load_estimator, Bins, Results, Run, RunManifest};
pub use summary::{summary_table, write_summary, SUMMARY_COLUMNS};

use error::write_error;

/// The figure files a report may write; those not drawn this time are removed, so that a
/// directory never shows a figure of an earlier report beside this one's table.
const FIGURE_FILES: [&str; 7] = ["trend.svg", "metrics.svg", "distributions.svg", "means.svg", "correlations.csv", "falls.csv", "compare.csv"];

/// How [`write_report`] draws and what it adds.
#[derive(Debug, Clone, Copy)]
pub struct ReportOptions<'a> {
    /// The trend's x key (`None`: `step`, `checkpoint`, `epoch`, else the first numeric key).
    pub x: Option<&'a str>,
    /// A training log to set beside mean LID (`--metrics`).
    pub metrics: Option<&'a Path>,
    /// How the x axis places the checkpoints.
    pub x_scale: XScale,
    /// With metrics: list the intervals where mean LID fell by more than this fraction.
    pub fall_threshold: f64,
    /// Compare two runs on the same tokens per combination of the other keys (`--compare`).
    pub compare: Option<&'a Comparison>,
    /// The estimator the report draws (`--estimator`), for the comparison's values.
    pub estimator: Option<&'a str>,
}

impl Default for ReportOptions<'_> {
    fn default() -> Self {
        ReportOptions { x: None, metrics: None, x_scale: XScale::Auto, fall_threshold: 0.2, compare: None, estimator: None }
    }
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct Report {
    /// The page.
    pub index: PathBuf,
    /// Every file written, the page last.
    pub files: Vec<PathBuf>,
    /// The partition key of the trend chart's x axis, or why there is no trend chart.
    pub x: std::result::Result<String, String>,
    /// With metrics: the rows of the metrics file that are no run's checkpoint (`step=50`).
    pub unmatched: Vec<String>,
}

/// Writes the report on `results` into directory `out` (created if missing): `summary.csv`,
/// `summary.parquet`, the figures as SVG files and `index.html` showing them inline with the
/// summary table.
///
/// The trend chart plots mean LID against partition key `x`, or, without one, the first of
/// [`X_KEYS`] present, else the first key whose values are all numbers; one line per
/// combination of the other keys. Numbers are placed by value (step 100 and step 5000 are far
/// apart). Without a numeric key the chart is left out and the page says why.
///
/// With `metrics` (a CSV or Parquet file of one row per checkpoint, see
/// `--metrics`: matched by the x key and the other partition keys it has), the summary gets a column per metric, the page a panel per metric
/// on the trend's x axis (`metrics.svg`), and `correlations.csv` the correlations of mean LID with
/// each metric per trend line.
///
/// # Errors
/// [`ReportError::Axis`] when `x` is not a numeric partition key (before anything is written),
/// [`ReportError::Input`] for a metrics file that cannot be matched to the runs (naming it),
/// [`ReportError::Write`] naming the file that could not be written (or an `out` inside the
/// result's `data/`), [`ReportError::Draw`] if plotters fails.
pub fn write_report(results: &Results, out: &Path, options: &ReportOptions<'_>) -> Result<Report> {
    let x = options.x;
    let axis = figures::choose_axis(results, x, options.x_scale)?;
    let metrics = match options.metrics {
        None => None,
        Some(path) => {
            let bad = |reason: String| ReportError::Input { path: path.to_path_buf(), reason };
            let a = axis.as_ref().map_err(|why| bad(format!("metrics are matched to runs by a numeric partition key, and {why}")))?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| bad(format!("starting the query runtime: {e}")))?;
            Some(rt.block_on(metrics::read_metrics(path, results, a))?)
        }
    };
    let compared = match options.compare {
        None => None,
        Some(c) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| write_error(out, e))?;
            Some((c, rt.block_on(compare::compare(results, c, options.estimator))?))
        }
    };
    // Files under data/ are read as results: a summary.parquet there would become a "run".
    if let (Some(o), Ok(d)) = (resolve(out), results.dir.join("data").canonicalize()) {
        if o.starts_with(&d) {
            return Err(write_error(out, format!("inside {}, where its files would be read as results; choose another directory", d.display())));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| write_error(out, e))?;
    let mut table = summary_table(results);
    if let Some(m) = &metrics {
        table = summary::with_metrics(&table, m);
    }
    let mut files: Vec<PathBuf> = write_summary(&table, out)?.into();

    let mut page_figures = Vec::new();
    let trend_title = |key: &str| format!("Mean LID against {key}");
    let lines = axis.as_ref().ok().map(|a| figures::lines(results, a));
    match (&axis, &lines) {
        (Ok(a), Some(lines)) => page_figures.push(Ok(html::Figure {
            title: trend_title(&a.key),
            caption: format!(
                "One point per run at its {key} value, one line per {what}; the band spans the 10th to 90th percentile of the run's pointwise LIDs.",
                key = a.key,
                what = if results.keys.len() > 1 { "combination of the other partition keys" } else { "series" },
            ),
            svg: figures::trend_svg(results, a, lines)?,
            file: "trend.svg".into(),
        })),
        (Err(why), _) => page_figures.push(Err((trend_title(x.unwrap_or("step")), why.clone()))),
        _ => unreachable!("lines exist exactly when the axis does"),
    }
    let mut correlations = None;
    let mut falls = None;
    if let (Ok(a), Some(lines), Some(m)) = (&axis, &lines, &metrics) {
        page_figures.push(Ok(html::Figure {
            title: format!("Training metrics against {}", a.key),
            caption: format!("Each metric of {} at the runs' {key} values, one line per line of the trend chart, in its colour.", m.path.display(), key = a.key),
            svg: figures::metrics_svg(a, lines, m)?,
            file: "metrics.svg".into(),
        }));
        let keys: Vec<String> = results.keys.iter().filter(|k| **k != a.key).cloned().collect();
        let c = summary::correlation_table(&keys, &metrics::correlations(results, lines, m));
        let path = out.join("correlations.csv");
        summary::write_csv(&c, &path)?;
        files.push(path);
        correlations = Some(c);
        let f = summary::falls_table(&keys, &a.key, &metrics::falls(results, a, lines, m, options.fall_threshold));
        let path = out.join("falls.csv");
        summary::write_csv(&f, &path)?;
        files.push(path);
        falls = Some(f);
    }
    let grouped = axis.as_ref().ok().zip(lines.as_deref());
    page_figures.push(Ok(html::Figure {
        title: "LID distributions per run".into(),
        caption: match grouped {
            Some((a, _)) => format!("Density of each run's pointwise LIDs over bins shared by all runs, one panel per line of the trend chart, lighter for smaller {}; thin lines mark the means.", a.key),
            None => "Density of each run's pointwise LIDs over bins shared by all runs; thin lines mark the means.".into(),
        },
        svg: figures::distributions_svg(results, grouped)?,
        file: "distributions.svg".into(),
    }));
    // Without a trend chart, the per-run means are the comparison between runs; with one, they
    // would repeat it.
    if axis.is_err() && results.runs.iter().filter(|r| r.n_finite > 0).count() > 1 {
        page_figures.push(Ok(html::Figure {
            title: "Mean LID per run".into(),
            caption: "Each run's mean LID (over its data) with a bar from its 10th to 90th percentile, in run order.".into(),
            svg: figures::means_svg(results)?,
            file: "means.svg".into(),
        }));
    }

    let mut written: Vec<&str> = page_figures.iter().filter_map(|f| f.as_ref().ok()).map(|f| f.file.as_str()).collect();
    if correlations.is_some() {
        written.extend(["correlations.csv", "falls.csv"]);
    }
    if let Some((_, table)) = &compared {
        let path = out.join("compare.csv");
        summary::write_csv(table, &path)?;
        files.push(path);
        written.push("compare.csv");
    }
    for f in page_figures.iter().filter_map(|f| f.as_ref().ok()) {
        let path = out.join(&f.file);
        std::fs::write(&path, &f.svg).map_err(|e| write_error(&path, e))?;
        files.push(path);
    }
    for stale in FIGURE_FILES.iter().filter(|f| !written.contains(f)) {
        let path = out.join(stale);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| write_error(&path, e))?;
        }
    }
    let index = out.join("index.html");
    let page = html::page(&html::Page {
        results: &results.dir.canonicalize().unwrap_or_else(|_| results.dir.clone()).display().to_string(),
        runs: results.runs.len(),
        keys: &results.keys,
        figures: page_figures,
        table: &table,
        correlations: correlations.as_ref().zip(metrics.as_ref().map(|m| m.unmatched.as_slice())),
        falls: falls.as_ref().map(|f| (f, options.fall_threshold)),
        compare: compared.as_ref().map(|(c, t)| (*c, t)),
    });
    std::fs::write(&index, page).map_err(|e| write_error(&index, e))?;
    files.push(index.clone());
    Ok(Report { index, files, x: axis.map(|a| a.key), unmatched: metrics.map(|m| m.unmatched).unwrap_or_default() })
}

/// `path` with symbolic links and `..` resolved, whether or not it exists yet: its deepest
/// existing ancestor, canonicalized, joined with the rest.
fn resolve(path: &Path) -> Option<PathBuf> {
    let path = std::path::absolute(path).ok()?;
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            return Some(rest.iter().rev().fold(c, |p, part| p.join(part)));
        }
        rest.push(existing.file_name()?.to_os_string());
        existing = existing.parent()?;
    }
}
