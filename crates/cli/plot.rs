//! `lidscope plot`: a result directory as one SVG picture, the LID distribution of each run and,
//! for a sweep, each run's mean with its 10th-90th percentile band. The loading and drawing live
//! in `lidscope-report`, which `lidscope report` shares.

use anyhow::{Context, Result};

use crate::args::PlotArgs;

pub fn main(a: &PlotArgs) -> Result<()> {
    let results = lidscope_report::load_estimator(&a.results, a.bins as usize, a.estimator.as_deref())?;
    let svg = lidscope_report::plot_svg(&results)?;
    std::fs::write(&a.out, svg).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("lidscope plot: {} run(s) -> {}", results.runs.len(), a.out.display());
    Ok(())
}
