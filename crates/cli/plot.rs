//! `lidscope plot`: a result directory as a picture (SVG): the LID distribution of each run and,
//! for a sweep, each run's mean with its 10th-90th percentile band.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use plotters::prelude::*;

use crate::args::PlotArgs;
use crate::sql_cmd::query;

/// Colours of successive runs (more runs than colours reuse them).
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One run's figures, from the `_summary` view and the `lid` column.
struct Run {
    label: String,
    mean: f64,
    p10: f64,
    p90: f64,
    lids: Vec<f64>,
}

pub fn main(a: &PlotArgs) -> Result<()> {
    if !a.results.join("data").is_dir() {
        bail!("{}: not a lidscope result directory (it has no data/)", a.results.display());
    }
    let tables = vec![("lid".to_string(), a.results.display().to_string())];
    let runs = load(&tables).with_context(|| format!("reading the results in {}", a.results.display()))?;
    if runs.is_empty() || runs.iter().all(|r| r.lids.is_empty()) {
        bail!("{}: no rows with a finite LID to plot", a.results.display());
    }
    let panels = if runs.len() > 1 { 2 } else { 1 };
    let root = SVGBackend::new(&a.out, (900, 420 * panels)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels as usize, 1));
    histograms(&areas[0], &runs, a.bins as usize)?;
    if panels > 1 {
        means(&areas[1], &runs)?;
    }
    root.present().with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("lidscope plot: {} run(s) -> {}", runs.len(), a.out.display());
    Ok(())
}

/// Every run of the result table with its summary and its finite LIDs.
fn load(tables: &[(String, String)]) -> Result<Vec<Run>> {
    let (schema, summary) = query(tables, "SELECT * FROM lid_summary")?;
    // The summary's leading columns, before `n`, are the partition keys that name a run.
    let keys: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).take_while(|n| n != "n").collect();
    let mut runs: HashMap<Vec<String>, Run> = HashMap::new();
    for b in &summary {
        let labels = strings(b, &keys)?;
        let (mean, p10, p90) = (floats(b, "mean")?, floats(b, "p10")?, floats(b, "p90")?);
        for (i, key) in labels.into_iter().enumerate() {
            let label = if keys.is_empty() { "all rows".to_string() } else { keys.iter().zip(&key).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ") };
            runs.insert(key, Run { label, mean: mean[i], p10: p10[i], p90: p90[i], lids: Vec::new() });
        }
    }
    let select: Vec<String> = keys.iter().map(|k| format!("\"{}\"", k.replace('"', "\"\""))).chain(["lid".to_string()]).collect();
    let (_, rows) = query(tables, &format!("SELECT {} FROM lid WHERE NOT isnan(lid) AND abs(lid) != 'Infinity'::double", select.join(", ")))?;
    for b in &rows {
        let labels = strings(b, &keys)?;
        for (key, lid) in labels.into_iter().zip(floats(b, "lid")?) {
            if let Some(run) = runs.get_mut(&key) {
                run.lids.push(lid);
            }
        }
    }
    let mut runs: Vec<(Vec<String>, Run)> = runs.into_iter().collect();
    runs.sort_by(|(a, _), (b, _)| natural(a, b));
    Ok(runs.into_iter().map(|(_, r)| r).collect())
}

/// Partition values in a person's order: numbers by value (`k=16` before `k=128`), text as text.
fn natural(a: &[String], b: &[String]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.total_cmp(&y),
            _ => x.cmp(y),
        })
        .find(|o| o.is_ne())
        .unwrap_or(a.len().cmp(&b.len()))
}

/// The `keys` columns of `b` as strings, one vector per row.
fn strings(b: &RecordBatch, keys: &[String]) -> Result<Vec<Vec<String>>> {
    let cols = keys
        .iter()
        .map(|k| Ok(cast(b.column_by_name(k).with_context(|| format!("no column {k}"))?, &DataType::Utf8)?))
        .collect::<Result<Vec<_>>>()?;
    Ok((0..b.num_rows()).map(|i| cols.iter().map(|c| c.as_string::<i32>().value(i).to_string()).collect()).collect())
}

/// Column `name` of `b` as f64 (nulls as NaN).
fn floats(b: &RecordBatch, name: &str) -> Result<Vec<f64>> {
    let c = cast(b.column_by_name(name).with_context(|| format!("no column {name}"))?, &DataType::Float64)?;
    let c = c.as_primitive::<Float64Type>();
    Ok((0..c.len()).map(|i| if c.is_null(i) { f64::NAN } else { c.value(i) }).collect())
}

/// The LID distribution of each run as a density outline over shared bins.
fn histograms<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, runs: &[Run], bins: usize) -> Result<()>
where
    DB::ErrorType: 'static,
{
    // The range of all runs, its far tail cut at the 99.5th percentile so the bulk stays readable.
    let mut all: Vec<f64> = runs.iter().flat_map(|r| r.lids.iter().copied()).collect();
    all.sort_by(f64::total_cmp);
    let (lo, hi) = (all[0], all[((all.len() - 1) as f64 * 0.995) as usize]);
    let clipped = all.len() - all.partition_point(|x| *x <= hi);
    let width = ((hi - lo) / bins as f64).max(f64::EPSILON);
    let density: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            let mut counts = vec![0.0; bins];
            for x in r.lids.iter().filter(|x| **x <= hi) {
                counts[(((x - lo) / width) as usize).min(bins - 1)] += 1.0;
            }
            counts.iter().map(|c| c / (r.lids.len().max(1) as f64 * width)).collect()
        })
        .collect();
    let top = density.iter().flatten().copied().fold(0.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            match clipped {
                0 => "Pointwise LID: distribution per run".to_string(),
                n => format!("Pointwise LID: distribution per run ({n} values above {hi:.2} not shown)"),
            },
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..hi + width, 0.0..top.max(f64::EPSILON))?;
    chart.configure_mesh().x_desc("LID").y_desc("density").draw()?;
    for (i, (run, d)) in runs.iter().zip(&density).enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let steps = d.iter().enumerate().flat_map(|(b, y)| [(lo + b as f64 * width, *y), (lo + (b + 1) as f64 * width, *y)]);
        chart
            .draw_series(LineSeries::new(steps, colour.stroke_width(2)))?
            .label(format!("{} (n = {}, mean {:.3})", run.label, run.lids.len(), run.mean))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(std::iter::once(PathElement::new(vec![(run.mean, 0.0), (run.mean, top)], colour.mix(0.5))))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperRight).draw()?;
    Ok(())
}

/// Each run's mean LID with its 10th-90th percentile band, in run order.
fn means<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, runs: &[Run]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let lo = runs.iter().map(|r| r.p10).fold(f64::INFINITY, f64::min);
    let hi = runs.iter().map(|r| r.p90).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.1).max(1e-6);
    let n = runs.len();
    let mut chart = ChartBuilder::on(area)
        .caption("Mean LID per run (bars: 10th to 90th percentile)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, lo - pad..hi + pad)?;
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-9 && i >= 0.0 && (i as usize) < n { runs[i as usize].label.clone() } else { String::new() }
    };
    chart.configure_mesh().x_labels(n.min(12)).x_label_formatter(&label).y_desc("LID").disable_x_mesh().draw()?;
    chart.draw_series(runs.iter().enumerate().map(|(i, r)| {
        ErrorBar::new_vertical(i as f64, r.p10, r.mean, r.p90, PALETTE[i % PALETTE.len()].filled(), 12)
    }))?;
    chart.draw_series(LineSeries::new(runs.iter().enumerate().map(|(i, r)| (i as f64, r.mean)), BLACK.mix(0.4)))?;
    Ok(())
}
