//! `lidscope report`: a result directory as a summary table, figures and an offline HTML page
//! (all of it in `lidscope-report`; this is the command line around it).

use anyhow::Result;

use crate::args::ReportArgs;

pub fn main(a: &ReportArgs, quiet: bool) -> Result<()> {
    let results = lidscope_report::load_estimator(&a.results, a.bins as usize, a.estimator.as_deref())?;
    let report = lidscope_report::write_report(&results, &a.out, a.x.as_deref(), a.metrics.as_deref())?;
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
