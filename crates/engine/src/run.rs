//! `lidscope run`: a corpus in, per-token LID tables and a manifest out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type, UInt64Type};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::functions::core::expr_fn::named_struct;
use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{ident, lit, SessionConfig, SessionContext};
use futures::StreamExt;
use lidscope_data::{
    inspect, read_reference, resolve_inputs, sample_reference, vectors_sha256, write_reference, AtomicParquetWriter, CorpusInfo,
    CorpusSpec, IdentityEncoder, Manifest, Reference, SampleConfig,
};
use lidscope_kernel::{twonn_from_distances, Estimator, KnnIndex, LidConfig, Rows, SearchStrategy};

use crate::commit::{Layout, Staging};
use crate::error::{EngineError, Result};
use crate::progress::Progress;
use crate::scan::{engine_error, CorpusStream, FILE_COLUMN, FILE_INDEX_COLUMN, RESERVED_PREFIX, ROW_COLUMN};
use crate::udf::{adopt, file_sha256, LidUdf, LoadedReference};

/// Columns every result row gets, after the carried corpus columns.
pub const OUTPUT_COLUMNS: [&str; 4] = ["lid", "r1", "r2", "rk"];

/// Where the reference rows come from.
#[derive(Clone, Debug, PartialEq)]
pub enum ReferenceSource {
    /// A Parquet file of identity columns and the embedding column.
    File(PathBuf),
    /// The paper's sample from the corpus itself.
    Sample {
        /// Rows to keep (paper: 60,000).
        size: usize,
        /// Seeded pool drawn by identity (paper: 150,000).
        pool: usize,
        /// Seed of the pool's order.
        seed: u64,
    },
}

/// A validated `lidscope run` job.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Corpus files, directories or globs.
    pub corpus: Vec<String>,
    /// The embedding column.
    pub embedding_column: String,
    /// Identity columns (empty: identity is (file, row)).
    pub id_columns: Vec<String>,
    /// Output directory.
    pub out: PathBuf,
    /// Neighbourhood size, estimator, discard fraction.
    pub lid: LidConfig,
    /// Reference rows.
    pub reference: ReferenceSource,
    /// Replace an existing complete result.
    pub overwrite: bool,
    /// Corpus rows per batch: memory is the reference plus a few batches.
    pub batch_rows: usize,
    /// Neighbour search path.
    pub strategy: SearchStrategy,
    /// Run keys (`model=m`, `checkpoint=3`, ...): results go to `<out>/data/k=v/...` so that many
    /// runs form one table.
    pub partition: Vec<(String, String)>,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The manifest as written.
    pub manifest: Manifest,
    /// Warnings raised during the run.
    pub warnings: Vec<String>,
}

/// Runs the job end to end and commits `<out>/data/*.parquet`, `<out>/reference.parquet` and
/// `<out>/manifest.json` (written last).
///
/// The computation is a DataFusion plan: the corpus as a streaming table, projected through
/// `lid()` against the reference file just written. The call blocks on its own single-threaded
/// runtime (the kernel spreads each batch over rayon's pool), so it must not be made from inside a
/// tokio runtime.
///
/// # Errors
/// Bad input (naming file and column), too few reference rows for `k`, mismatched dimensions, an
/// existing result without `overwrite`, or a failed write. Nothing committed before is lost.
pub fn run(cfg: &RunConfig, progress: &dyn Progress) -> Result<RunSummary> {
    let start = Instant::now();
    let mut warnings = Vec::new();
    let mut warn = |m: String| {
        progress.warn(&m);
        warnings.push(m);
    };
    let mut timings: BTreeMap<String, f64> = BTreeMap::new();
    cfg.lid.validate().map_err(|e| EngineError::kernel("parameters", e))?;
    for (k, v) in &cfg.partition {
        let ok = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '=']);
        if !ok(k) || !ok(v) {
            return Err(EngineError::Invalid(format!("--partition {k}={v}: keys and values must be non-empty and hold no '/', '\\' or '='")));
        }
    }
    if cfg.batch_rows == 0 {
        return Err(EngineError::Invalid("batch size must be at least 1 row".into()));
    }
    let spec = CorpusSpec {
        files: resolve_inputs(&cfg.corpus)?,
        embedding_column: cfg.embedding_column.clone(),
        id_columns: cfg.id_columns.clone(),
    };
    let info = inspect(&spec)?;
    if let Some(c) = OUTPUT_COLUMNS.iter().find(|c| info.carried.iter().any(|x| x == *c)) {
        return Err(EngineError::Invalid(format!(
            "{}: column {c:?} would collide with the output column of the same name; rename it first",
            spec.files[0].display()
        )));
    }
    if let Some(c) = info.carried.iter().find(|c| c.starts_with(RESERVED_PREFIX)) {
        return Err(EngineError::Invalid(format!(
            "{}: column {c:?}: names starting with {RESERVED_PREFIX:?} are reserved for lidscope's plan; rename it first",
            spec.files[0].display()
        )));
    }
    let staging = Staging::begin(Layout::new(&cfg.out, &cfg.partition), cfg.overwrite)?;

    progress.phase("reference", 0);
    let t = Instant::now();
    let (reference, source_name) = match &cfg.reference {
        ReferenceSource::File(p) => (read_reference(p, &cfg.embedding_column, &cfg.id_columns)?, p.display().to_string()),
        ReferenceSource::Sample { size, pool, seed } => {
            let r = sample_reference(&spec, &info, &SampleConfig { pool: *pool, size: *size, seed: *seed })?;
            if r.len() < *size {
                warn(format!(
                    "asked for {size} reference rows; the corpus gave {} (pool of {} rows, {} duplicate vectors dropped)",
                    r.len(),
                    r.stats.pool_rows,
                    r.stats.duplicates_dropped
                ));
            }
            (r, "sample".to_string())
        }
    };
    timings.insert("reference".into(), t.elapsed().as_secs_f64());
    check_reference(cfg, &spec, &info, &reference, &source_name)?;
    let dim = reference.dim;

    // The reference goes to its file while it is indexed (and, for a sample, self-joined); the
    // query then finds the index under that file, as any `lid()` call would.
    let sampled = matches!(cfg.reference, ReferenceSource::Sample { .. });
    let identity = run_identity(cfg);
    let reference_path = staging.reference_path();
    let (loaded, hash) = std::thread::scope(|scope| -> Result<(LoadedReference, String)> {
        // The file's hash (the cache's key) is taken here too, off the kernel's path.
        let writer = scope.spawn(|| -> Result<(f64, String)> {
            let t = Instant::now();
            write_reference(&reference_path, &reference, &cfg.embedding_column)?;
            Ok((t.elapsed().as_secs_f64(), file_sha256(&reference_path)?))
        });
        let built = LoadedReference::new(&reference, &source_name, &identity, cfg.strategy).and_then(|r| match sampled {
            true => {
                progress.phase("self-join", 0);
                r.with_self_knn(cfg.lid.k).map_err(|e| EngineError::kernel(format!("reference {source_name}"), e))
            }
            false => Ok(r),
        });
        let (seconds, hash) = writer.join().expect("reference writer panicked")?;
        timings.insert("reference_write".into(), seconds);
        Ok((built?, hash))
    })?;
    let loaded = Arc::new(loaded);
    let _adopted = adopt(&reference_path, hash, loaded.clone())?;

    progress.phase("lid", info.total_rows);
    let t = Instant::now();
    let stream = CorpusStream::new(spec.clone(), info.clone(), cfg.batch_rows, dim, source_name.clone());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| EngineError::io(&cfg.out, e))?;
    let mut acc = Accumulator::new(reference.len());
    let files = runtime.block_on(execute(cfg, &info, stream, &reference_path, &identity, &loaded, &staging, &mut acc, progress))?;
    timings.insert("lid".into(), t.elapsed().as_secs_f64());
    let kernel = loaded.times();
    timings.insert("knn".into(), kernel.knn);
    timings.insert("estimate".into(), kernel.estimate);

    let t = Instant::now();
    let global_twonn = acc.global_twonn(&loaded.index, cfg.lid.discard_fraction)?;
    timings.insert("global".into(), t.elapsed().as_secs_f64());
    if acc.zero_r1 > 0 && matches!(cfg.reference, ReferenceSource::File(_)) && cfg.id_columns.is_empty() {
        warn(format!(
            "{} corpus rows have a zero-distance reference neighbour: without --id-columns a --reference file shares no identity \
             with the corpus, so rows that are in the reference count themselves",
            acc.zero_r1
        ));
    }
    if acc.nonfinite > 0 {
        warn(format!(
            "{} rows have a non-finite LID (duplicate vectors in their neighbourhood); mean_lid leaves them out",
            acc.nonfinite
        ));
    }
    timings.insert("write".into(), acc.write_seconds);

    let (seed, pool, size) = match cfg.reference {
        ReferenceSource::Sample { size, pool, seed } => (Some(seed), Some(pool), Some(size)),
        ReferenceSource::File(_) => (None, None, None),
    };
    let elapsed = start.elapsed().as_secs_f64();
    timings.insert("total".into(), elapsed);
    let manifest = Manifest {
        tool: "lidscope".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        created_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        corpus: spec.files.iter().map(|p| p.display().to_string()).collect(),
        embedding_column: cfg.embedding_column.clone(),
        id_columns: cfg.id_columns.clone(),
        dim,
        rows: acc.rows,
        mean_lid: acc.mean(),
        k: cfg.lid.k,
        estimator: cfg.lid.estimator.name().into(),
        discard_fraction: cfg.lid.discard_fraction,
        reference_rows: reference.len(),
        reference_source: source_name,
        reference_sha256: vectors_sha256(&reference.embeddings, dim),
        sample: size.map(|_| reference.stats),
        seed,
        pool,
        reference_size: size,
        global_twonn,
        partition: cfg.partition.iter().cloned().collect(),
        elapsed_seconds: elapsed,
        timings,
        files,
    };
    staging.commit(&manifest)?;
    Ok(RunSummary { manifest, warnings })
}

/// Checks the reference against the corpus and `k` before any heavy work.
fn check_reference(cfg: &RunConfig, spec: &CorpusSpec, info: &CorpusInfo, r: &Reference, source: &str) -> Result<()> {
    if let Some(d) = info.dim {
        if d != r.dim {
            return Err(EngineError::Invalid(format!(
                "column {:?}: the reference ({source}) has dimension {} but {} has dimension {d}",
                cfg.embedding_column,
                r.dim,
                spec.files[0].display()
            )));
        }
    }
    let needed = cfg.lid.k + 1;
    if r.len() < needed {
        return Err(EngineError::Invalid(format!(
            "too few reference rows for k = {}: the reference ({source}) has {} rows, at least k + 1 = {needed} are needed",
            cfg.lid.k,
            r.len()
        )));
    }
    Ok(())
}

/// The identity columns `lid()` gets (as the reference names them): the id columns; for a sample
/// from a corpus without them, the row's file and row number; none for a reference file without
/// them (it shares no identity with the corpus).
fn run_identity(cfg: &RunConfig) -> Vec<String> {
    match (&cfg.reference, cfg.id_columns.is_empty()) {
        (_, false) => cfg.id_columns.clone(),
        (ReferenceSource::Sample { .. }, true) => vec!["file".into(), "row".into()],
        (ReferenceSource::File(_), true) => Vec::new(),
    }
}

/// The corpus column behind identity column `name` of the reference.
fn identity_source<'a>(cfg: &RunConfig, name: &'a str) -> &'a str {
    match (cfg.id_columns.is_empty(), name) {
        (true, "file") => FILE_COLUMN,
        (true, "row") => ROW_COLUMN,
        _ => name,
    }
}

/// `lid(embedding, reference, k, estimator, discard_fraction [, identity])` as the run calls it.
fn lid_expr(cfg: &RunConfig, reference: &Path, identity: &[String]) -> Expr {
    let mut args = vec![
        ident(&cfg.embedding_column),
        lit(reference.to_string_lossy().into_owned()),
        lit(cfg.lid.k as i64),
        lit(cfg.lid.estimator.name()),
        lit(cfg.lid.discard_fraction),
    ];
    if !identity.is_empty() {
        args.push(named_struct(identity.iter().flat_map(|c| [lit(c.as_str()), ident(identity_source(cfg, c))]).collect()));
    }
    ScalarUDF::from(LidUdf::default()).call(args)
}

/// The struct column `lid()` fills in the run's plan.
const LID_STRUCT: &str = "__lidscope_lid";

/// Runs the corpus through `lid()` in a DataFusion plan, one partition in corpus order (the
/// kernel spreads each batch over the cores), and writes one part file per corpus file. Returns
/// the part files, relative to the output directory.
#[allow(clippy::too_many_arguments)]
async fn execute(
    cfg: &RunConfig,
    info: &CorpusInfo,
    stream: CorpusStream,
    reference: &Path,
    identity: &[String],
    loaded: &LoadedReference,
    staging: &Staging,
    acc: &mut Accumulator,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let table = StreamingTable::try_new(stream.schema().clone(), vec![Arc::new(stream)]).map_err(engine_error)?;
    let mut exprs: Vec<Expr> = info.carried.iter().map(ident).collect();
    exprs.extend([FILE_INDEX_COLUMN, FILE_COLUMN, ROW_COLUMN].map(ident));
    exprs.push(lid_expr(cfg, reference, identity).alias(LID_STRUCT));
    let plan = ctx.read_table(Arc::new(table)).and_then(|df| df.select(exprs)).map_err(engine_error)?;
    tracing::debug!("run plan:\n{}", plan.logical_plan().display_indent());
    let mut batches = plan.execute_stream().await.map_err(engine_error)?;

    let out_schema = output_schema(info);
    let mut encoder: Option<IdentityEncoder> = None;
    let mut writer: Option<(u32, AtomicParquetWriter)> = None;
    let mut files = Vec::new();
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(engine_error)?;
        let n = batch.num_rows();
        if n == 0 {
            continue;
        }
        let file_index = batch.column_by_name(FILE_INDEX_COLUMN).expect("selected").as_primitive::<UInt32Type>().value(0);
        let path = &source_file(&batch);
        let lids = batch.column_by_name(LID_STRUCT).expect("selected").as_struct().clone();
        let exclude = match identity.is_empty() {
            true => vec![None; n],
            false => {
                let ids = identity_batch(cfg, identity, &batch, path)?;
                let e = match &encoder {
                    Some(e) => e,
                    None => encoder.insert(IdentityEncoder::new(&ids.schema(), identity, Path::new(path))?),
                };
                let row0 = batch.column_by_name(ROW_COLUMN).expect("selected").as_primitive::<UInt64Type>().value(0);
                e.encode(&ids, Path::new(path), row0)?.iter().map(|k| loaded.rows.get(&**k).copied()).collect()
            }
        };
        let column = |name: &str| lids.column_by_name(name).expect("lid() result field").clone();
        acc.record(column("lid").as_primitive::<Float64Type>(), column("r1").as_primitive::<Float64Type>(), column("r2").as_primitive::<Float64Type>(), &exclude);

        let t = Instant::now();
        if writer.as_ref().is_none_or(|(f, _)| *f != file_index) {
            if let Some((_, w)) = writer.take() {
                w.finish()?;
            }
            let name = format!("part-{file_index:05}.parquet");
            files.push(staging.relative_data(&name));
            writer = Some((file_index, AtomicParquetWriter::new(&staging.data_dir().join(name), out_schema.clone())?));
        }
        let mut columns: Vec<ArrayRef> = batch.columns()[..info.carried.len()].to_vec();
        columns.extend(OUTPUT_COLUMNS.map(column));
        let out = RecordBatch::try_new(out_schema.clone(), columns).map_err(|e| EngineError::Invalid(format!("{path}: building the result batch: {e}")))?;
        writer.as_mut().expect("opened above").1.write(&out)?;
        acc.write_seconds += t.elapsed().as_secs_f64();
        progress.advance(n as u64);
    }
    if let Some((_, w)) = writer.take() {
        let t = Instant::now();
        w.finish()?;
        acc.write_seconds += t.elapsed().as_secs_f64();
    }
    Ok(files)
}

/// The corpus file of a result batch, for messages.
fn source_file(batch: &RecordBatch) -> String {
    batch.column_by_name(FILE_COLUMN).expect("selected").as_string::<i32>().value(0).to_string()
}

/// The identity columns of a result batch, named as the reference names them.
fn identity_batch(cfg: &RunConfig, identity: &[String], batch: &RecordBatch, path: &str) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = identity.iter().map(|c| batch.column_by_name(identity_source(cfg, c)).expect("selected").clone()).collect();
    let fields: Vec<Field> = identity.iter().zip(&columns).map(|(c, a)| Field::new(c, a.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| EngineError::Invalid(format!("{path}: identity columns: {e}")))
}

/// Carried columns, then `lid`, `r1`, `r2`, `rk` (Float64).
fn output_schema(info: &CorpusInfo) -> SchemaRef {
    let mut fields: Vec<Field> = info.carried.iter().map(|c| info.schema.field_with_name(c).expect("carried column").clone()).collect();
    fields.extend(OUTPUT_COLUMNS.iter().map(|c| Field::new(*c, DataType::Float64, false)));
    Arc::new(Schema::new(fields))
}

/// Running totals of a run.
struct Accumulator {
    rows: u64,
    sum: f64,
    finite: u64,
    nonfinite: u64,
    zero_r1: u64,
    /// Per reference row, its (r1, r2) inside the reference, when it was seen as a query.
    covered: Vec<Option<(f64, f64)>>,
    /// Seconds spent writing result parts.
    write_seconds: f64,
}

impl Accumulator {
    fn new(reference_rows: usize) -> Self {
        Self { rows: 0, sum: 0.0, finite: 0, nonfinite: 0, zero_r1: 0, covered: vec![None; reference_rows], write_seconds: 0.0 }
    }

    fn record(&mut self, lid: &Float64Array, r1: &Float64Array, r2: &Float64Array, exclude: &[Option<u32>]) {
        for (((lid, r1), r2), ex) in lid.values().iter().zip(r1.values()).zip(r2.values()).zip(exclude) {
            self.rows += 1;
            if lid.is_finite() {
                self.sum += lid;
                self.finite += 1;
            } else {
                self.nonfinite += 1;
            }
            if *r1 == 0.0 {
                self.zero_r1 += 1;
            }
            // A query that is reference row r, with itself excluded, has r's two nearest
            // neighbours inside the reference: exactly what the global estimate needs.
            if let Some(r) = ex {
                self.covered[*r as usize] = Some((*r1, *r2));
            }
        }
    }

    fn mean(&self) -> f64 {
        if self.finite == 0 {
            f64::NAN
        } else {
            self.sum / self.finite as f64
        }
    }

    /// TwoNN of the reference set, searching only the rows no query has covered.
    fn global_twonn(&self, index: &KnnIndex, discard_fraction: f64) -> Result<f64> {
        let missing: Vec<usize> = (0..self.covered.len()).filter(|r| self.covered[*r].is_none()).collect();
        let mut r1r2: Vec<(f64, f64)> = self.covered.iter().flatten().copied().collect();
        if !missing.is_empty() {
            let dim = index.dim();
            let all = index.rows();
            let data: Vec<f32> = missing.iter().flat_map(|r| all.row(*r).iter().copied()).collect();
            let me: Vec<Option<u32>> = missing.iter().map(|r| Some(*r as u32)).collect();
            let rows = Rows::try_new(&data, missing.len(), dim).map_err(|e| EngineError::kernel("global estimate", e))?;
            let (nb, _) = index.knn(rows, 2, Some(&me)).map_err(|e| EngineError::kernel("global estimate", e))?;
            r1r2.extend(nb.distances.chunks_exact(2).map(|d| (d[0], d[1])));
        }
        let (r1, r2): (Vec<f64>, Vec<f64>) = r1r2.into_iter().unzip();
        Ok(twonn_from_distances(&r1, &r2, discard_fraction, Estimator::TwoNN))
    }
}
