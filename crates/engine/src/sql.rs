//! SQL over lidscope's tables: result directories (hive-partitioned `data/`, plus their manifests
//! as a `<name>_runs` table), corpora and reference files.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTableUrl};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use datafusion::execution::object_store::ObjectStoreUrl;
use lidscope_data::store::{CommittedView, ObjectUrl};
use lidscope_data::{find_manifests, is_result_dir, read_manifest, table_schema, Manifest};

use crate::error::{EngineError, Result};

/// A session with lidscope's functions registered.
///
/// Identifiers are taken as written, not lowercased: embedding columns such as `hidden_L6` are
/// common and need no quotes. `SHOW TABLES` and `SHOW COLUMNS FROM t` work.
pub fn session() -> SessionContext {
    // information_schema: `SHOW TABLES` lists what --table registered, views included.
    let mut config = datafusion::prelude::SessionConfig::new().with_information_schema(true).with_extension(Arc::new(Buckets::default()));
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let ctx = SessionContext::new_with_config(config);
    crate::udf::register_all(&ctx);
    ctx
}

/// The buckets a session reads, each through one [`CommittedView`] of this host's store for it,
/// so that every result table registered on a bucket narrows the same view.
#[derive(Default)]
struct Buckets(Mutex<HashMap<String, Arc<CommittedView>>>);

/// The view through which `ctx` reads `bucket`, registered with the session on first use.
fn bucket_view(ctx: &SessionContext, bucket: &str) -> Result<Arc<CommittedView>> {
    // A session not made by [`session`] gets a registry of its own for this call.
    let buckets = ctx.state().config().get_extension::<Buckets>().unwrap_or_default();
    let mut map = buckets.0.lock().expect("bucket registry poisoned");
    if let Some(view) = map.get(bucket) {
        return Ok(view.clone());
    }
    let view = Arc::new(CommittedView::new(lidscope_data::store::bucket_store(bucket)?));
    let url = ObjectStoreUrl::parse(format!("s3://{bucket}")).map_err(df(format!("s3://{bucket}")))?;
    ctx.register_object_store(url.as_ref(), view.clone());
    map.insert(bucket.to_string(), view.clone());
    Ok(view)
}

fn df(context: impl Into<String>) -> impl FnOnce(datafusion::error::DataFusionError) -> EngineError {
    let context = context.into();
    move |e| EngineError::query(context, e)
}

/// Registers `path` as table `name`.
///
/// `path` may be an `s3://bucket/prefix` URL (the store configured by this host's `AWS_*`
/// environment); a result there is read as its manifests list it, never by a bare listing.
///
/// A result directory (holding `data/` or a `manifest.json`) becomes `name` over its `data/`
/// files, hive partitions (`key=value` directories) as Utf8 columns, and `<name>_runs` with one
/// row per run manifest. A `.csv` file (with a header line; e.g. a training log of loss and
/// accuracy per step) is read as CSV, its column types inferred. Anything else is read as
/// Parquet: a file, a directory or a glob.
///
/// # Errors
/// A path that does not exist, a table that cannot be read, or a name already taken.
pub async fn register(ctx: &SessionContext, name: &str, path: &str) -> Result<()> {
    register_measuring(ctx, name, path, None).await
}

/// Registers record batches held in memory (e.g. a pyarrow table handed over by the Python
/// package without a copy) as table `name`, beside the files [`register`] takes.
///
/// # Errors
/// Batches whose schema differs from `schema`, or a name already taken.
pub fn register_batches(ctx: &SessionContext, name: &str, schema: arrow::datatypes::SchemaRef, batches: Vec<RecordBatch>) -> Result<()> {
    let table = datafusion::datasource::MemTable::try_new(schema, vec![batches]).map_err(df(format!("table {name}")))?;
    ctx.register_table(name, Arc::new(table)).map_err(df(format!("table {name}")))?;
    Ok(())
}

/// As [`register`]; with `estimator` (a name of `lidscope run --estimator`, e.g. `mle`), the
/// result table's `lid` column, and so its `_summary` and `_tokens` views, is that estimator's
/// `lid_<name>` column: a report of a run with several estimators, drawn for one of them.
///
/// # Errors
/// Those of [`register`]; [`EngineError::Invalid`] when the results have no column of
/// `estimator` (naming those they have) or `path` is not a result directory.
pub async fn register_measuring(ctx: &SessionContext, name: &str, path: &str, estimator: Option<&str>) -> Result<()> {
    let p = Path::new(path);
    let object = ObjectUrl::parse(path)?;
    let view = match &object {
        Some(url) => Some(bucket_view(ctx, &url.bucket)?),
        None => None,
    };
    if !is_result_dir(p) {
        if estimator.is_some() {
            return Err(EngineError::Invalid(format!("{path}: not a result directory, so it has no estimator columns")));
        }
        let has_glob = path.contains(['*', '?', '[']);
        if !has_glob && object.is_none() && !p.exists() {
            return Err(EngineError::Invalid(format!("--table {name}={path}: no such file or directory")));
        }
        // Training logs beside the results: a CSV file with a header line, types inferred.
        if path.ends_with(".csv") {
            return ctx.register_csv(name, path, CsvReadOptions::new().has_header(true)).await.map_err(df(format!("--table {name}={path}")));
        }
        return ctx.register_parquet(name, path, ParquetReadOptions::default()).await.map_err(df(format!("--table {name}={path}")));
    }
    let data = p.join("data");
    let url = match (&object, &view) {
        (Some(out), Some(view)) => {
            // The store shows this table's committed parts only: those its manifests name.
            let mut keys = Vec::new();
            for manifest in find_manifests(p)? {
                keys.extend(read_manifest(&manifest)?.files.iter().map(|f| out.join(f).key));
            }
            view.show_only(&out.join("data").key, keys);
            ListingTableUrl::parse(format!("{}/", data.display()))
        }
        _ => ListingTableUrl::parse(format!("{}/", data.canonicalize().map_err(|e| EngineError::io(&data, e))?.display())),
    }
    .map_err(df(format!("--table {name}={path}")))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let parts = options.infer_partitions(&ctx.state(), &url).await.map_err(df(format!("--table {name}={path}: partitions")))?;
    let options = options.with_table_partition_cols(parts.iter().map(|c| (c.clone(), DataType::Utf8)).collect());
    // Runs whose corpora typed a carried column differently (lidscope 0.1 wrote them as the corpus
    // had them) read as one table at the lossless common type, where DataFusion's own inference
    // would refuse the table.
    let schema = table_schema(p)?.map(Arc::new);
    let table = match estimator {
        None => name.to_string(),
        Some(_) => format!("{name}_all_estimators"),
    };
    ctx.register_listing_table(&table, url.as_str(), options, schema, None).await.map_err(df(format!("--table {name}={path}")))?;
    let columns = |t: String| async move {
        Ok::<Vec<String>, EngineError>(ctx.table(&t).await.map_err(df(format!("--table {name}={path}")))?.schema().fields().iter().map(|f| f.name().clone()).collect())
    };
    if let Some(e) = estimator {
        let column = format!("lid_{}", e.replace('-', "_"));
        let all = columns(table.clone()).await?;
        if !all.contains(&column) {
            let have = estimator_columns(&all);
            let have = if have.is_empty() { "none: its runs computed one estimator each, as lid".to_string() } else { have.join(", ") };
            return Err(EngineError::Invalid(format!("no column {column:?} for estimator {e:?} (estimators in these results: {have})")));
        }
        ctx.sql(&format!("CREATE VIEW {} AS SELECT * REPLACE ({} AS lid) FROM {}", quote(name), quote(&column), quote(&table)))
            .await
            .map_err(df(format!("--table {name}={path}: estimator {e}")))?;
    }
    let runs = runs_table(p)?;
    ctx.register_batch(format!("{name}_runs"), runs).map_err(df(format!("--table {name}={path}: manifests")))?;
    let columns = columns(name.to_string()).await?;
    for (view, query) in views(name, &parts, &columns) {
        ctx.sql(&format!("CREATE VIEW {} AS {query}", quote(&view))).await.map_err(df(format!("--table {name}={path}: view {view}")))?;
    }
    Ok(())
}

/// Token columns, in order of preference, that `<name>_tokens` groups by.
pub const TOKEN_COLUMNS: [&str; 3] = ["token", "token_str", "token_id"];

/// The views over result table `name` (hive partition columns `parts`, all columns `columns`):
///
/// - `<name>_summary`: one row per run (per combination of partition values): `n` rows,
///   `n_finite` with a finite LID, and over those the `mean`, `std` (ddof = 1), `median`, `p10`
///   and `p90` (linear interpolation between order statistics, as numpy's default) of `lid`;
/// - `<name>_tokens`, when a token column exists (the first of [`TOKEN_COLUMNS`]): the same per
///   run and token string, so that the tokens with the highest or lowest LID are one `ORDER BY`
///   away.
///
/// Rows whose LID is not finite (duplicate vectors in a neighbourhood) count in `n` only, as in
/// the manifest's `mean_lid`. Results of runs with several estimators (`lid_<name>` columns) get
/// `mean_<name>` for each, and for the MLE ones `mg_mean_<name>`, the MacKay-Ghahramani mean
/// `1 / mean(1 / m)` (the manifest's `estimates`).
pub fn views(name: &str, parts: &[String], columns: &[String]) -> Vec<(String, String)> {
    let finite_of = |c: &str, alias: &str| format!("CASE WHEN isnan({c}) OR abs({c}) = 'Infinity'::double THEN NULL ELSE {c} END AS {alias}");
    // The estimators of a run with several (`lid_mle`, ...): a mean each, and for MLE the
    // MacKay-Ghahramani mean, 1 / mean(1 / m).
    let named = estimator_columns(columns);
    let mut finite_cols = vec![finite_of("lid", "__finite_lid")];
    finite_cols.extend(named.iter().map(|e| finite_of(&quote(&format!("lid_{e}")), &quote(&format!("__finite_lid_{e}")))));
    let finite = format!("SELECT *, {} FROM {}", finite_cols.join(", "), quote(name));
    let mut stats = "count(*) AS n, count(__finite_lid) AS n_finite, avg(__finite_lid) AS mean, stddev(__finite_lid) AS std, \
                 median(__finite_lid) AS median, percentile_cont(__finite_lid, 0.1) AS p10, percentile_cont(__finite_lid, 0.9) AS p90"
        .to_string();
    for e in &named {
        let f = quote(&format!("__finite_lid_{e}"));
        stats.push_str(&format!(", avg({f}) AS {}", quote(&format!("mean_{e}"))));
        if matches!(*e, "mle" | "mle_unbiased") {
            stats.push_str(&format!(", 1.0 / avg(1.0 / {f}) AS {}", quote(&format!("mg_mean_{e}"))));
        }
    }
    let keys: Vec<String> = parts.iter().map(|p| quote(p)).collect();
    let group = |extra: &[String]| {
        let all: Vec<String> = keys.iter().chain(extra).cloned().collect();
        match all.is_empty() {
            true => (String::new(), String::new()),
            false => (format!("{}, ", all.join(", ")), format!(" GROUP BY {}", all.join(", "))),
        }
    };
    let (select, group_by) = group(&[]);
    let mut out = vec![(format!("{name}_summary"), format!("SELECT {select}{stats} FROM ({finite}){group_by}"))];
    if let Some(token) = TOKEN_COLUMNS.iter().find(|t| columns.iter().any(|c| c == *t)) {
        let (select, group_by) = group(&[quote(token)]);
        out.push((format!("{name}_tokens"), format!("SELECT {select}{stats} FROM ({finite}){group_by}")));
    }
    out
}

/// The estimators whose `lid_<name>` columns are among `columns` (`<name>` with `_` for `-`),
/// leaving out carried columns that merely start with `lid_`.
fn estimator_columns(columns: &[String]) -> Vec<&str> {
    let known: Vec<&str> = lidscope_kernel::LocalEstimator::all().iter().map(|e| e.column_suffix()).collect();
    columns.iter().filter_map(|c| c.strip_prefix("lid_")).filter(|e| known.contains(e)).collect()
}

/// `s` as a SQL identifier, whatever its case or characters.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Every run manifest in result directory `dir`, as one row per run.
fn runs_table(dir: &Path) -> Result<RecordBatch> {
    let found = find_manifests(dir)?;
    let manifests: Vec<(String, Manifest)> = found
        .iter()
        .map(|f| {
            let rel = f.parent().and_then(|p| p.strip_prefix(dir).ok()).map(|p| p.display().to_string()).unwrap_or_default();
            read_manifest(f).map(|m| (rel, m))
        })
        .collect::<std::result::Result<_, _>>()?;
    let keys: std::collections::BTreeSet<String> = manifests.iter().flat_map(|(_, m)| m.partition.keys().cloned()).collect();
    let mut fields = vec![Field::new("run", DataType::Utf8, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(manifests.iter().map(|(r, _)| r.as_str())))];
    for key in &keys {
        fields.push(Field::new(key, DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from(manifests.iter().map(|(_, m)| m.partition.get(key).cloned()).collect::<Vec<_>>())));
    }
    let u = |f: fn(&Manifest) -> u64| Arc::new(UInt64Array::from_iter_values(manifests.iter().map(|(_, m)| f(m)))) as ArrayRef;
    let fl = |f: fn(&Manifest) -> f64| Arc::new(Float64Array::from_iter_values(manifests.iter().map(|(_, m)| f(m)))) as ArrayRef;
    let s = |f: fn(&Manifest) -> String| Arc::new(StringArray::from_iter_values(manifests.iter().map(|(_, m)| f(m)))) as ArrayRef;
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("rows", u(|m| m.rows)),
        ("mean_lid", fl(|m| m.mean_lid)),
        ("global_twonn", fl(|m| m.global_twonn)),
        ("k", u(|m| m.k as u64)),
        ("estimator", s(|m| m.estimator.clone())),
        ("discard_fraction", fl(|m| m.discard_fraction)),
        ("reference_rows", u(|m| m.reference_rows as u64)),
        ("reference_sha256", s(|m| m.reference_sha256.clone())),
        ("embedding_column", s(|m| m.embedding_column.clone())),
        ("dim", u(|m| m.dim as u64)),
        ("elapsed_seconds", fl(|m| m.elapsed_seconds)),
        ("created_unix", u(|m| m.created_unix)),
        ("version", s(|m| m.version.clone())),
    ];
    for (n, c) in columns {
        // A partition key may reuse a parameter's name (`--partition k=16`): the key keeps the
        // name, so that it joins with the data table, and the parameter becomes `run_<name>`.
        let n = if keys.contains(n) { format!("run_{n}") } else { n.to_string() };
        fields.push(Field::new(n, c.data_type().clone(), false));
        cols.push(c);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| EngineError::Invalid(format!("{}: manifests: {e}", dir.display())))
}
