//! Training metrics beside LID: a training team's own log (loss, accuracy, F1 per checkpoint)
//! matched to the runs, and how mean LID moves with each metric.
//!
//! The paper's claim is about training dynamics (a fall in mean LID tends to come before a gain
//! in performance), so besides the plain correlations over the checkpoints the report gives the
//! *lagged* one: the change of mean LID over one interval between checkpoints against the
//! change of the metric over the next.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use lidscope_engine::sql;

use crate::error::{ReportError, Result};
use crate::figures::{Axis, Line};
use crate::load::Results;

/// A metrics file matched to the runs of a result directory.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The file.
    pub path: PathBuf,
    /// The metric columns, in the file's order.
    pub names: Vec<String>,
    /// Per run of [`Results::runs`], its metric values (None: no row of the file is the run's).
    pub values: Vec<Option<Vec<f64>>>,
    /// Rows of the file that are no run's checkpoint, as `step=50` (with the other keys the file
    /// has): reported, not silently dropped.
    pub unmatched: Vec<String>,
}

/// Reads `path` (CSV with a header line, or Parquet: one row per checkpoint) and matches its
/// rows to the runs of `results`: by the x key `axis` (numbers compared by value) and by every
/// other partition key the file also has (compared as text). Every other column is a metric and
/// must be numeric.
///
/// # Errors
/// [`ReportError::Input`] naming the file: no column for the x key, a metric column that is not
/// numeric, no metric column, or no row that matches a run.
pub(crate) async fn read_metrics(path: &Path, results: &Results, axis: &Axis) -> Result<Metrics> {
    let bad = |reason: String| ReportError::Input { path: path.to_path_buf(), reason };
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    let ctx = sql::session();
    let p = path.to_str().ok_or_else(|| bad("not a UTF-8 path".into()))?;
    sql::register(&ctx, "metrics", p).await.map_err(|e| bad(e.to_string()))?;
    let df = ctx.sql("SELECT * FROM metrics").await.map_err(|e| bad(e.to_string()))?;
    let schema = df.schema().inner().clone();
    let batches: Vec<RecordBatch> = df.collect().await.map_err(|e| bad(e.to_string()))?;
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if !columns.contains(&axis.key) {
        return Err(bad(format!("no column \"{}\", the trend's x key, to match checkpoints by (columns: {})", axis.key, columns.join(", "))));
    }
    let keys: Vec<(usize, String)> = results.keys.iter().enumerate().filter(|(_, k)| **k != axis.key && columns.contains(k)).map(|(i, k)| (i, k.clone())).collect();
    let mut names = Vec::new();
    for f in schema.fields() {
        if *f.name() == axis.key || keys.iter().any(|(_, k)| k == f.name()) {
            continue;
        }
        if !f.data_type().is_numeric() {
            return Err(bad(format!("column \"{}\" is {}: metrics must be numbers (integers or floats)", f.name(), f.data_type())));
        }
        names.push(f.name().clone());
    }
    if names.is_empty() {
        return Err(bad(format!("no metric column beside \"{}\" (columns: {})", axis.key, columns.join(", "))));
    }
    let mut values: Vec<Option<Vec<f64>>> = vec![None; results.runs.len()];
    let mut unmatched = Vec::new();
    for b in &batches {
        let x = floats(b, &axis.key).map_err(&bad)?;
        let key_values: Vec<Vec<String>> = keys.iter().map(|(_, k)| texts(b, k)).collect::<std::result::Result<_, _>>().map_err(&bad)?;
        let metric_values: Vec<Vec<f64>> = names.iter().map(|n| floats(b, n)).collect::<std::result::Result<_, _>>().map_err(&bad)?;
        for row in 0..b.num_rows() {
            let matches = |run: usize| {
                axis.x[run] == x[row] && keys.iter().zip(&key_values).all(|((i, _), v)| results.runs[run].values[*i] == v[row])
            };
            let found: Vec<usize> = (0..results.runs.len()).filter(|r| matches(*r)).collect();
            if found.is_empty() {
                let mut label = vec![format!("{}={}", axis.key, crate::figures::number(x[row]))];
                label.extend(keys.iter().zip(&key_values).map(|((_, k), v)| format!("{k}={}", v[row])));
                unmatched.push(label.join(","));
            }
            for r in found {
                values[r] = Some(metric_values.iter().map(|m| m[row]).collect());
            }
        }
    }
    if values.iter().all(Option::is_none) {
        return Err(bad(format!("no row matches a run by {} (the runs' values: {})", axis.key, axis.x.iter().map(|x| crate::figures::number(*x)).collect::<Vec<_>>().join(", "))));
    }
    Ok(Metrics { path: path.to_path_buf(), names, values, unmatched })
}

/// One row of `correlations.csv`: a trend line and a metric.
#[derive(Debug, Clone)]
pub struct Correlation {
    /// The trend line (`model=a` or `all runs`) and its partition values (the keys but the x
    /// key).
    pub line: String,
    /// The line's values of the other partition keys.
    pub values: Vec<String>,
    /// The metric.
    pub metric: String,
    /// Checkpoints with a finite mean LID and a finite metric.
    pub n: usize,
    /// Spearman's rank correlation of mean LID with the metric (ties at their mean rank).
    pub spearman: f64,
    /// Pearson's correlation.
    pub pearson: f64,
    /// Spearman of the change of mean LID over one interval with the change of the metric over
    /// the next (the paper's heuristic: does a fall in LID come before a gain?), over `n - 2`
    /// pairs.
    pub lagged_spearman: f64,
}

/// The correlations of mean LID with every metric, per trend line.
pub(crate) fn correlations(results: &Results, lines: &[Line], metrics: &Metrics) -> Vec<Correlation> {
    let mut out = Vec::new();
    for line in lines {
        for (m, name) in metrics.names.iter().enumerate() {
            let pts: Vec<(f64, f64)> = line
                .runs
                .iter()
                .filter_map(|r| Some((results.runs[*r].mean_lid(), metrics.values[*r].as_ref()?[m])))
                .filter(|(l, v)| l.is_finite() && v.is_finite())
                .collect();
            let (lid, metric): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
            let d_lid: Vec<f64> = lid.windows(2).map(|w| w[1] - w[0]).collect();
            let d_metric: Vec<f64> = metric.windows(2).map(|w| w[1] - w[0]).collect();
            let (now, next) = (d_lid.get(..d_lid.len().saturating_sub(1)).unwrap_or(&[]), d_metric.get(1..).unwrap_or(&[]));
            out.push(Correlation {
                line: line.label.clone(),
                values: line.values.clone(),
                metric: name.clone(),
                n: pts.len(),
                spearman: spearman(&lid, &metric),
                pearson: pearson(&lid, &metric),
                lagged_spearman: spearman(now, next),
            });
        }
    }
    out
}

/// An interval between consecutive checkpoints of a trend line where mean LID fell by more than
/// the threshold, with what one metric did over it and over the next interval.
#[derive(Debug, Clone)]
pub struct Fall {
    /// The trend line's values of the partition keys other than the x key.
    pub values: Vec<String>,
    /// The interval's checkpoints, as their partition values (`3600`).
    pub from: String,
    /// Its end.
    pub to: String,
    /// Mean LID at `from` and at `to`.
    pub lid: (f64, f64),
    /// The metric.
    pub metric: String,
    /// The metric at `from`, at `to` and at the next checkpoint (NaN when there is none).
    pub values_at: (f64, f64, f64),
}

/// Every interval between consecutive checkpoints of a line where mean LID fell by more than
/// `threshold` of its value at the start (0.2: by more than 20%), once per metric: the paper's
/// heuristic (a fall in LID comes before a gain) made checkable interval by interval.
pub(crate) fn falls(results: &Results, axis: &Axis, lines: &[Line], metrics: &Metrics, threshold: f64) -> Vec<Fall> {
    let mut out = Vec::new();
    for line in lines {
        let runs: Vec<usize> = line.runs.iter().copied().filter(|r| results.runs[*r].mean_lid().is_finite()).collect();
        for (i, w) in runs.windows(2).enumerate() {
            let (a, b) = (results.runs[w[0]].mean_lid(), results.runs[w[1]].mean_lid());
            if !(a > 0.0 && (a - b) > threshold * a) {
                continue;
            }
            let next = runs.get(i + 2).copied();
            for (m, name) in metrics.names.iter().enumerate() {
                let at = |r: Option<usize>| r.and_then(|r| metrics.values[r].as_ref().map(|v| v[m])).unwrap_or(f64::NAN);
                out.push(Fall {
                    values: line.values.clone(),
                    from: axis.value_of(&results.runs[w[0]]).to_string(),
                    to: axis.value_of(&results.runs[w[1]]).to_string(),
                    lid: (a, b),
                    metric: name.clone(),
                    values_at: (at(Some(w[0])), at(Some(w[1])), at(next)),
                });
            }
        }
    }
    out
}

/// Pearson's correlation; NaN with fewer than 3 points or no spread.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 3 {
        return f64::NAN;
    }
    let (mx, my) = (x[..n].iter().sum::<f64>() / n as f64, y[..n].iter().sum::<f64>() / n as f64);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (a, b) = (x[i] - mx, y[i] - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman's rank correlation (Pearson's of the ranks, ties at their mean rank, as scipy's
/// `spearmanr`); NaN with fewer than 3 points.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|a, b| v[*a].total_cmp(&v[*b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for o in &order[i..=j] {
            r[*o] = mean_rank;
        }
        i = j + 1;
    }
    r
}

fn floats(b: &RecordBatch, name: &str) -> std::result::Result<Vec<f64>, String> {
    let c = b.column_by_name(name).ok_or_else(|| format!("no column \"{name}\""))?;
    let c = cast(c, &DataType::Float64).map_err(|e| format!("column \"{name}\": {e}"))?;
    let c = c.as_primitive::<Float64Type>();
    Ok((0..c.len()).map(|i| if c.is_null(i) { f64::NAN } else { c.value(i) }).collect())
}

fn texts(b: &RecordBatch, name: &str) -> std::result::Result<Vec<String>, String> {
    let c = b.column_by_name(name).ok_or_else(|| format!("no column \"{name}\""))?;
    let c = cast(c, &DataType::Utf8).map_err(|e| format!("column \"{name}\": {e}"))?;
    Ok(c.as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_as_scipy_computes_them() {
        // scipy.stats.pearsonr / spearmanr of these: 0.8 exactly for the ranks below.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 1.0, 4.0, 3.0, 5.0];
        assert!((spearman(&x, &y) - 0.8).abs() < 1e-12);
        assert!((pearson(&x, &y) - 0.8).abs() < 1e-12);
        // Ties take their mean rank: ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4].
        assert_eq!(ranks(&[1.0, 2.0, 2.0, 3.0]), vec![1.0, 2.5, 2.5, 4.0]);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(pearson(&[1.0, 2.0], &[1.0, 2.0]).is_nan());
        assert!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_nan());
    }
}
