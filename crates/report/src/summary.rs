//! The summary table: one row per run, for spreadsheets (CSV) and for dataframes (Parquet).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::{write_error, Result};
use crate::load::Results;

/// The statistics columns, after the partition keys.
pub const SUMMARY_COLUMNS: [&str; 9] = ["rows", "mean_lid", "std", "median", "p10", "p90", "global_twonn", "k", "reference_rows"];

/// One row per run: a Utf8 column per partition key (named after it), then [`SUMMARY_COLUMNS`].
///
/// `rows` counts the rows in the run's data; `mean_lid` is its manifest's value (the mean of
/// the finite LIDs, as `lidscope run` reported it), or the mean over its data for a run without
/// manifest. `std`, `median`, `p10` and `p90` are over finite LIDs, as in the `lid_summary` view.
/// `global_twonn`, `k` and `reference_rows` come from the manifest (null without one). A
/// partition key may reuse a statistic's name (`--partition k=16`): the key keeps it, so that the
/// table joins with the result table, and the statistic becomes `run_<name>`, as in `lid_runs`.
pub fn summary_table(results: &Results) -> RecordBatch {
    let runs = &results.runs;
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (i, key) in results.keys.iter().enumerate() {
        fields.push(Field::new(key, DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from_iter_values(runs.iter().map(|r| r.values[i].as_str()))));
    }
    let float = |f: &dyn Fn(&crate::Run) -> Option<f64>| Arc::new(Float64Array::from(runs.iter().map(f).collect::<Vec<_>>())) as ArrayRef;
    let uint = |f: &dyn Fn(&crate::Run) -> Option<u64>| Arc::new(UInt64Array::from(runs.iter().map(f).collect::<Vec<_>>())) as ArrayRef;
    let stats: [ArrayRef; 9] = [
        uint(&|r| Some(r.n)),
        float(&|r| Some(r.mean_lid())),
        float(&|r| Some(r.std)),
        float(&|r| Some(r.median)),
        float(&|r| Some(r.p10)),
        float(&|r| Some(r.p90)),
        float(&|r| r.manifest.map(|m| m.global_twonn)),
        uint(&|r| r.manifest.map(|m| m.k)),
        uint(&|r| r.manifest.map(|m| m.reference_rows)),
    ];
    for (i, (name, col)) in SUMMARY_COLUMNS.iter().zip(stats).enumerate() {
        let name = if results.keys.iter().any(|k| k == name) { format!("run_{name}") } else { name.to_string() };
        // The manifest's columns are nullable whether or not this table has a run without one,
        // so that summaries of different result directories share a schema.
        fields.push(Field::new(name, col.data_type().clone(), i >= 6));
        cols.push(col);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("columns of one length and their own types")
}

/// Writes `table` as `summary.csv` (a header line, then one line per run) and `summary.parquet`
/// into `dir`; returns the two paths.
///
/// # Errors
/// [`crate::ReportError::Write`] naming the file.
pub fn write_summary(table: &RecordBatch, dir: &Path) -> Result<[PathBuf; 2]> {
    let csv = dir.join("summary.csv");
    write_csv(table, &csv)?;

    let parquet = dir.join("summary.parquet");
    let file = std::fs::File::create(&parquet).map_err(|e| write_error(&parquet, e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, table.schema(), None).map_err(|e| write_error(&parquet, e))?;
    w.write(table).map_err(|e| write_error(&parquet, e))?;
    w.close().map_err(|e| write_error(&parquet, e))?;
    Ok([csv, parquet])
}

/// `table` with a Float64 column per metric of `metrics` (null for a run no row of the file is
/// the checkpoint of); a metric named like a column already there becomes `metric_<name>`.
pub fn with_metrics(table: &RecordBatch, metrics: &crate::metrics::Metrics) -> RecordBatch {
    let mut fields: Vec<Field> = table.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut cols: Vec<ArrayRef> = table.columns().to_vec();
    for (m, name) in metrics.names.iter().enumerate() {
        let name = if fields.iter().any(|f| f.name() == name) { format!("metric_{name}") } else { name.clone() };
        fields.push(Field::new(name, DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from(metrics.values.iter().map(|v| v.as_ref().map(|v| v[m])).collect::<Vec<_>>())));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("columns of one length")
}

/// `correlations.csv`'s table: per trend line (its partition values but the x key's) and
/// metric, `metric`, `n`, `spearman`, `pearson`, `lagged_spearman`.
pub fn correlation_table(keys: &[String], correlations: &[crate::metrics::Correlation]) -> RecordBatch {
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        fields.push(Field::new(key, DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from_iter_values(correlations.iter().map(|c| c.values[i].as_str()))));
    }
    fields.push(Field::new("metric", DataType::Utf8, false));
    cols.push(Arc::new(StringArray::from_iter_values(correlations.iter().map(|c| c.metric.as_str()))));
    fields.push(Field::new("n", DataType::UInt64, false));
    cols.push(Arc::new(UInt64Array::from_iter_values(correlations.iter().map(|c| c.n as u64))));
    for (name, f) in [("spearman", (|c: &crate::metrics::Correlation| c.spearman) as fn(&_) -> f64), ("pearson", |c| c.pearson), ("lagged_spearman", |c| c.lagged_spearman)] {
        fields.push(Field::new(name, DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from(correlations.iter().map(|c| Some(f(c)).filter(|v| v.is_finite())).collect::<Vec<_>>())));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("columns of one length")
}

/// `falls.csv`: per fall of mean LID ([`crate::metrics::falls`]) and metric, the trend line's
/// keys, `from`, `to`, `mean_lid_from`, `mean_lid_to`, `lid_change` (relative), `metric`, and the
/// metric at `from`, at `to` and at the next checkpoint (`metric_next`, null at the last one),
/// with `metric_change` (over the fall) and `metric_next_change` (over the next interval).
pub fn falls_table(keys: &[String], x: &str, falls: &[crate::metrics::Fall]) -> RecordBatch {
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        fields.push(Field::new(key, DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from_iter_values(falls.iter().map(|f| f.values[i].as_str()))));
    }
    let num = |v: f64| Some(v).filter(|v| v.is_finite());
    type Get = fn(&crate::metrics::Fall) -> f64;
    for (name, side) in [(format!("{x}_from"), 0), (format!("{x}_to"), 1)] {
        fields.push(Field::new(name, DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from_iter_values(falls.iter().map(|f| if side == 0 { f.from.as_str() } else { f.to.as_str() }))));
    }
    let before: [(String, Get); 3] = [
        ("mean_lid_from".into(), |f| f.lid.0),
        ("mean_lid_to".into(), |f| f.lid.1),
        ("lid_change".into(), |f| (f.lid.1 - f.lid.0) / f.lid.0),
    ];
    for (name, g) in before {
        fields.push(Field::new(name, DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from(falls.iter().map(|f| num(g(f))).collect::<Vec<_>>())));
    }
    fields.push(Field::new("metric", DataType::Utf8, false));
    cols.push(Arc::new(StringArray::from_iter_values(falls.iter().map(|f| f.metric.as_str()))));
    let after: [(&str, Get); 5] = [
        ("metric_from", |f| f.values_at.0),
        ("metric_to", |f| f.values_at.1),
        ("metric_next", |f| f.values_at.2),
        ("metric_change", |f| f.values_at.1 - f.values_at.0),
        ("metric_next_change", |f| f.values_at.2 - f.values_at.1),
    ];
    for (name, g) in after {
        fields.push(Field::new(name, DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from(falls.iter().map(|f| num(g(f))).collect::<Vec<_>>())));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("columns of one length")
}

/// Writes `table` as CSV (a header line, then one line per row) to `path`.
///
/// # Errors
/// [`crate::ReportError::Write`] naming the file.
pub fn write_csv(table: &RecordBatch, path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| write_error(path, e))?;
    let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(std::io::BufWriter::new(file));
    w.write(table).map_err(|e| write_error(path, e))?;
    let mut inner = w.into_inner();
    std::io::Write::flush(&mut inner).map_err(|e| write_error(path, e))
}
