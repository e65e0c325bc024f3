//! A result directory's per-run figures, read through the engine's SQL views (`lid_summary`,
//! `lid_runs`) so that the report and `lidscope sql` can never disagree on a statistic.
//!
//! The LID distributions are binned by the query engine: a report holds a few numbers per run and
//! bin, however many rows the runs measured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use lidscope_engine::sql;

use crate::error::{ReportError, Result};

/// The name the result directory is registered under; its views are `lid_summary` and `lid_runs`.
const TABLE: &str = "lid";

/// Only finite LIDs enter the statistics and the histograms (duplicate vectors give infinite or
/// NaN values), as in the `lid_summary` view and the manifest's `mean_lid`.
const FINITE: &str = "NOT isnan(lid) AND abs(lid) != 'Infinity'::double";

/// Every run of a result directory: its statistics, its manifest's figures and its LID histogram.
#[derive(Debug, Clone)]
pub struct Results {
    /// The result directory.
    pub dir: PathBuf,
    /// The partition keys (`key=value` directories under `data/`), outermost first; empty for an
    /// unpartitioned run.
    pub keys: Vec<String>,
    /// One per run (combination of partition values), in natural order of the values: numbers by
    /// value, so that `step=100` comes before `step=5000`.
    pub runs: Vec<Run>,
    /// The histogram bins every run shares, so that distributions can be compared by eye.
    pub bins: Bins,
}

/// One run: a combination of partition values.
#[derive(Debug, Clone)]
pub struct Run {
    /// The partition values, one per [`Results::keys`].
    pub values: Vec<String>,
    /// `key=value, key=value` (or `all rows` when unpartitioned): the run's name in figures.
    pub label: String,
    /// Rows measured.
    pub n: u64,
    /// Rows with a finite LID: the ones every statistic below is over.
    pub n_finite: u64,
    /// Mean LID.
    pub mean: f64,
    /// Standard deviation (ddof = 1).
    pub std: f64,
    /// Median LID.
    pub median: f64,
    /// 10th percentile (linear interpolation, as numpy's default).
    pub p10: f64,
    /// 90th percentile.
    pub p90: f64,
    /// The run's manifest, if it has one (a run interrupted before its commit has none).
    pub manifest: Option<RunManifest>,
    /// Finite LIDs per bin of [`Results::bins`]; values above [`Bins::hi`] are not counted.
    pub counts: Vec<u64>,
}

/// The figures of a run's manifest that a summary shows.
#[derive(Debug, Clone, Copy)]
pub struct RunManifest {
    /// Rows measured.
    pub rows: u64,
    /// Mean LID as `lidscope run` reported it.
    pub mean_lid: f64,
    /// The TwoNN estimate over the whole reference.
    pub global_twonn: f64,
    /// Neighbourhood size.
    pub k: u64,
    /// Reference rows.
    pub reference_rows: u64,
}

/// Histogram bins shared by all runs: `count` bins of `width` from `lo`.
#[derive(Debug, Clone, Copy)]
pub struct Bins {
    /// The smallest finite LID of all runs.
    pub lo: f64,
    /// Bin width.
    pub width: f64,
    /// Number of bins.
    pub count: usize,
    /// The upper end of the binned range: the 99.5th percentile of all runs' finite LIDs, so
    /// that a far tail does not squeeze the bulk of the distribution into a few bins.
    pub hi: f64,
}

impl Run {
    /// The run's mean LID: its manifest's when it has one, else the mean over its data.
    pub fn mean_lid(&self) -> f64 {
        self.manifest.map_or(self.mean, |m| m.mean_lid)
    }

    /// Finite LIDs above [`Bins::hi`], left out of the histogram.
    pub fn clipped(&self) -> u64 {
        self.n_finite - self.counts.iter().sum::<u64>()
    }
}

/// Reads result directory `dir` (as `lidscope run --out` writes it, partitioned or not), with
/// `bins` histogram bins. Starts its own query runtime: call it outside any async runtime.
///
/// # Errors
/// [`ReportError::Input`] when `dir` is not a result directory or holds no finite LID,
/// [`ReportError::Read`] when its tables cannot be read.
pub fn load(dir: &Path, bins: usize) -> Result<Results> {
    load_estimator(dir, bins, None)
}

/// [`load`], the LID of each row being estimator `estimator`'s (`lid_<name>`, a run with
/// several estimators) instead of its first estimator's.
///
/// # Errors
/// As [`load`], and [`ReportError::Read`] naming the estimators the results have when
/// `estimator` is not one of them.
pub fn load_estimator(dir: &Path, bins: usize, estimator: Option<&str>) -> Result<Results> {
    check_dir(dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ReportError::Read { path: dir.to_path_buf(), message: format!("starting the query runtime: {e}") })?;
    rt.block_on(load_async_estimator(dir, bins, estimator))
}

/// [`load`] for callers already inside a Tokio runtime.
///
/// # Errors
/// As [`load`].
pub async fn load_async(dir: &Path, bins: usize) -> Result<Results> {
    load_async_estimator(dir, bins, None).await
}

async fn load_async_estimator(dir: &Path, bins: usize, estimator: Option<&str>) -> Result<Results> {
    check_dir(dir)?;
    let bins = bins.max(1);
    let read = |message: String| ReportError::Read { path: dir.to_path_buf(), message };
    let ctx = sql::session();
    let path = dir.to_str().ok_or_else(|| ReportError::Input { path: dir.to_path_buf(), reason: "not a UTF-8 path".into() })?;
    sql::register_measuring(&ctx, TABLE, path, estimator).await.map_err(|e| read(e.to_string()))?;
    let q = |query: String| {
        let ctx = ctx.clone();
        async move {
            let df = ctx.sql(&query).await.map_err(|e| e.to_string())?;
            let schema = df.schema().inner().clone();
            let batches = df.collect().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((schema, batches))
        }
    };

    let (schema, summary) = q(format!("SELECT * FROM {TABLE}_summary")).await.map_err(|e| read(format!("{TABLE}_summary: {e}")))?;
    // The summary's leading columns, before `n`, are the partition keys that name a run.
    let keys: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).take_while(|n| n != "n").collect();
    let mut runs = Vec::new();
    for b in &summary {
        let values = strings(b, &keys).map_err(read)?;
        let col = |name: &str| floats(b, name).map_err(read);
        let (n, n_finite) = (col("n")?, col("n_finite")?);
        let (mean, std, median, p10, p90) = (col("mean")?, col("std")?, col("median")?, col("p10")?, col("p90")?);
        for (i, values) in values.into_iter().enumerate() {
            runs.push(Run {
                label: label(&keys, &values),
                values,
                n: n[i] as u64,
                n_finite: n_finite[i] as u64,
                mean: mean[i],
                std: std[i],
                median: median[i],
                p10: p10[i],
                p90: p90[i],
                manifest: None,
                counts: vec![0; bins],
            });
        }
    }
    if runs.iter().all(|r| r.n_finite == 0) {
        return Err(ReportError::Input { path: dir.to_path_buf(), reason: "no rows with a finite LID to report on".into() });
    }
    runs.sort_by(|a, b| natural(&a.values, &b.values));

    // The manifests, matched to the runs by partition values. A partition key may reuse a
    // parameter's name (`--partition k=16`); `lid_runs` then calls the parameter `run_k`.
    let (_, manifests) = q(format!("SELECT * FROM {TABLE}_runs")).await.map_err(|e| read(format!("{TABLE}_runs: {e}")))?;
    let param = |name: &str| if keys.iter().any(|k| k == name) { format!("run_{name}") } else { name.to_string() };
    let mut by_values: HashMap<Vec<String>, RunManifest> = HashMap::new();
    for b in &manifests {
        let present: Vec<String> = keys.iter().filter(|k| b.column_by_name(k).is_some()).cloned().collect();
        if present.len() != keys.len() {
            continue; // a manifest of another layout: no run of this table is its
        }
        let values = strings(b, &keys).map_err(read)?;
        let col = |name: &str| floats(b, &param(name)).map_err(read);
        let (rows, mean_lid, global, k, reference) = (col("rows")?, col("mean_lid")?, col("global_twonn")?, col("k")?, col("reference_rows")?);
        for (i, values) in values.into_iter().enumerate() {
            let m = RunManifest { rows: rows[i] as u64, mean_lid: mean_lid[i], global_twonn: global[i], k: k[i] as u64, reference_rows: reference[i] as u64 };
            by_values.insert(values, m);
        }
    }
    for r in &mut runs {
        r.manifest = by_values.get(&r.values).copied();
        // A manifest's mean is its first estimator's: the chosen one's comes from the data.
        if let (Some(m), Some(_)) = (r.manifest.as_mut(), estimator) {
            m.mean_lid = r.mean;
        }
    }

    // Shared bins: from the smallest finite LID to the 99.5th percentile of all of them.
    let (_, bounds) = q(format!("SELECT min(lid) AS lo, percentile_cont(lid, 0.995) AS hi FROM {TABLE} WHERE {FINITE}"))
        .await
        .map_err(|e| read(format!("LID range: {e}")))?;
    let b = bounds.iter().find(|b| b.num_rows() > 0).ok_or_else(|| read("LID range: no rows".into()))?;
    let (lo, hi) = (floats(b, "lo").map_err(read)?[0], floats(b, "hi").map_err(read)?[0]);
    let width = ((hi - lo) / bins as f64).max(f64::EPSILON);
    let bins = Bins { lo, width, count: bins, hi };

    let quoted: Vec<String> = keys.iter().map(|k| quote(k)).collect();
    let select: String = quoted.iter().map(|k| format!("{k}, ")).collect();
    let bin = format!("least(greatest(CAST(floor((lid - '{lo:?}'::double) / '{width:?}'::double) AS BIGINT), 0), {})", bins.count - 1);
    let (_, hist) = q(format!(
        "SELECT {select}__bin, count(*) AS __count FROM (SELECT {select}{bin} AS __bin FROM {TABLE} WHERE {FINITE} AND lid <= '{hi:?}'::double) \
         GROUP BY {select}__bin"
    ))
    .await
    .map_err(|e| read(format!("LID histogram: {e}")))?;
    let index: HashMap<Vec<String>, usize> = runs.iter().enumerate().map(|(i, r)| (r.values.clone(), i)).collect();
    for b in &hist {
        let values = strings(b, &keys).map_err(read)?;
        let (bin, count) = (floats(b, "__bin").map_err(read)?, floats(b, "__count").map_err(read)?);
        for (i, values) in values.iter().enumerate() {
            if let Some(r) = index.get(values) {
                runs[*r].counts[bin[i] as usize] += count[i] as u64;
            }
        }
    }
    Ok(Results { dir: dir.to_path_buf(), keys, runs, bins })
}

/// Refuses, with a message naming `dir`, what is not a result directory with data in it: without
/// this, the query engine's "cannot infer schema" would be the message.
fn check_dir(dir: &Path) -> Result<()> {
    let bad = |reason: &str| Err(ReportError::Input { path: dir.to_path_buf(), reason: reason.to_string() });
    if lidscope_data::store::is_object(dir) {
        // On a store what counts is what the manifests name (parts of a killed run do not).
        let manifests = lidscope_data::find_manifests(dir).map_err(|e| ReportError::Input { path: dir.to_path_buf(), reason: e.to_string() })?;
        if manifests.is_empty() {
            return bad("not a lidscope result (no run manifest under it)");
        }
        return Ok(());
    }
    if !dir.exists() {
        return bad("no such directory");
    }
    if !dir.is_dir() {
        return bad("not a directory (expected a result directory, as `lidscope run --out` writes it)");
    }
    if !dir.join("data").is_dir() || !lidscope_data::is_result_dir(dir) {
        return bad("not a lidscope result directory (it has no data/)");
    }
    if !has_parquet(&dir.join("data")) {
        return bad("empty: no result files under data/ (did the run finish?)");
    }
    Ok(())
}

/// Whether `dir` holds a `.parquet` file at any depth, staging entries (`.`/`_`) aside.
fn has_parquet(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        !name.starts_with(['.', '_']) && if path.is_dir() { has_parquet(&path) } else { name.ends_with(".parquet") }
    })
}

/// A run's name: `key=value, ...`, or `all rows` for an unpartitioned result.
pub(crate) fn label(keys: &[String], values: &[String]) -> String {
    if keys.is_empty() {
        return "all rows".to_string();
    }
    keys.iter().zip(values).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// Partition values in a person's order: numbers by value (`k=16` before `k=128`), text as text.
pub(crate) fn natural(a: &[String], b: &[String]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.total_cmp(&y),
            _ => x.cmp(y),
        })
        .find(|o| o.is_ne())
        .unwrap_or(a.len().cmp(&b.len()))
}

/// `s` as a SQL identifier, whatever its case or characters.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The `keys` columns of `b` as strings, one vector per row (nulls as empty strings).
fn strings(b: &RecordBatch, keys: &[String]) -> Result<Vec<Vec<String>>, String> {
    let cols = keys
        .iter()
        .map(|k| cast(b.column_by_name(k).ok_or_else(|| format!("no column {k}"))?, &DataType::Utf8).map_err(|e| format!("column {k}: {e}")))
        .collect::<Result<Vec<_>, String>>()?;
    Ok((0..b.num_rows()).map(|i| cols.iter().map(|c| c.as_string::<i32>().value(i).to_string()).collect()).collect())
}

/// Column `name` of `b` as f64 (nulls as NaN).
fn floats(b: &RecordBatch, name: &str) -> Result<Vec<f64>, String> {
    let c = b.column_by_name(name).ok_or_else(|| format!("no column {name}"))?;
    let c = cast(c, &DataType::Float64).map_err(|e| format!("column {name}: {e}"))?;
    let c = c.as_primitive::<Float64Type>();
    Ok((0..c.len()).map(|i| if c.is_null(i) { f64::NAN } else { c.value(i) }).collect())
}
