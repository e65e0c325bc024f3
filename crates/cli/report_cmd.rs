//! `lidscope report`: a result directory as a summary table, figures and an offline HTML page
//! (all of it in `lidscope-report`; this is the command line around it).

use anyhow::Result;

use lidscope_report::XScale;

use crate::args::{ReportArgs, XScaleArg};

pub fn main(a: &ReportArgs, quiet: bool) -> Result<()> {
    let results = lidscope_report::load_estimator(&a.results, a.bins as usize, a.estimator.as_deref())?;
    let options = lidscope_report::ReportOptions {
        x: a.x.as_deref(),
        metrics: a.metrics.as_deref(),
        x_scale: match a.x_scale {
            XScaleArg::Auto => XScale::Auto,
            XScaleArg::Linear => XScale::Linear,
            XScaleArg::Log => XScale::Log,
        },
        fall_threshold: a.fall_threshold,
        compare: a.compare.as_ref(),
        estimator: a.estimator.as_deref(),
    };
    let report = lidscope_report::write_report(&results, &a.out, &options)?;
    if !report.unmatched.is_empty() {
        let shown: Vec<&str> = report.unmatched.iter().take(8).map(String::as_str).collect();
        let more = if report.unmatched.len() > shown.len() { format!(" and {} more", report.unmatched.len() - shown.len()) } else { String::new() };
        eprintln!("lidscope report: {} rows of the metrics file are no run's checkpoint: {}{more}", report.unmatched.len(), shown.join("; "));
    }
    if !quiet {
        let x = match &report.x {
            Ok(key) => format!("mean LID against {key}"),
            Err(why) => format!("no trend chart: {why}"),
        };
        eprintln!("lidscope report: {} run(s), {x} -> {}", results.runs.len(), report.index.display());
    }
    Ok(())
}
