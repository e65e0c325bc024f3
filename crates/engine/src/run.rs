//! `lidscope run`: a corpus in, per-token LID tables and a manifest out.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lidscope_data::{
    inspect, positional_key, read_reference, resolve_inputs, sample_reference, vectors_sha256, write_reference, AtomicParquetWriter,
    CorpusInfo, CorpusReader, CorpusSpec, IdentityEncoder, Manifest, Reference, SampleConfig,
};
use lidscope_kernel::{lid_from_neighbours, twonn_from_distances, Estimator, KnnIndex, LidConfig, Neighbours, Rows, SearchStrategy};

use crate::commit::{Layout, Staging};
use crate::error::{EngineError, Result};
use crate::progress::Progress;

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
    let index = KnnIndex::new(Rows::try_new(&reference.embeddings, reference.len(), dim).map_err(|e| EngineError::kernel(&source_name, e))?, cfg.strategy)
        .map_err(|e| EngineError::kernel(format!("reference {source_name}: column {:?}", cfg.embedding_column), e))?;
    let ref_rows: HashMap<&[u8], u32> = reference.keys.iter().enumerate().map(|(i, k)| (&**k, i as u32)).collect();
    let encoder = match cfg.id_columns.is_empty() {
        true => None,
        false => Some(IdentityEncoder::new(&info.schema, &cfg.id_columns, &spec.files[0])?),
    };

    let out_schema = output_schema(&info);
    let mut acc = Accumulator::new(reference.len());
    // A sample is drawn from the corpus, so each of its rows comes back as a query with the same
    // vector: their neighbourhoods come from one symmetric self-join at half the cost. (A
    // reference file may hold other vectors under the same identities, so it never takes this.)
    let self_nb = match cfg.reference {
        ReferenceSource::Sample { .. } => {
            progress.phase("self-join", 0);
            let (nb, stats) = index.self_knn(cfg.lid.k).map_err(|e| EngineError::kernel(format!("reference {source_name}"), e))?;
            acc.timings.insert("knn".into(), stats.seconds);
            Some(nb)
        }
        ReferenceSource::File(_) => None,
    };
    progress.phase("lid", info.total_rows);
    let reader = CorpusReader::new(&spec, &info, cfg.batch_rows, true, None)?;
    let mut files = Vec::new();
    // Two helpers keep the cores on the kernel: one writes the reference file (known from here
    // on), one reads and decodes the next corpus batch while the current one is computed.
    let reference_write = std::thread::scope(|scope| -> Result<f64> {
        let writer_thread = scope.spawn(|| {
            let t = Instant::now();
            write_reference(&staging.reference_path(), &reference, &cfg.embedding_column).map(|_| t.elapsed().as_secs_f64())
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        scope.spawn(move || {
            for batch in reader {
                let stop = batch.is_err();
                if tx.send(batch).is_err() || stop {
                    break;
                }
            }
        });
        let mut writer: Option<(usize, AtomicParquetWriter)> = None;
        loop {
            let t = Instant::now();
            let Ok(batch) = rx.recv() else { break };
            let batch = batch?;
            acc.add_time("read", t);
            let path = &spec.files[batch.file_index];
            let n = batch.columns.num_rows();
            let emb = batch.embeddings.as_deref().expect("embeddings requested");
            if batch.dim != dim {
                return Err(EngineError::Invalid(format!(
                    "{}: column {:?}: dimension {} differs from the reference's {dim} ({source_name})",
                    path.display(),
                    cfg.embedding_column,
                    batch.dim
                )));
            }
            let keys = match &encoder {
                Some(e) => e.encode(&batch.columns, path, batch.first_row)?,
                None => (0..n as u64).map(|i| positional_key(batch.file_index as u32, batch.first_row + i)).collect(),
            };
            let exclude: Vec<Option<u32>> = keys.iter().map(|k| ref_rows.get(&**k).copied()).collect();
            let context =
                || format!("{}: column {:?}: rows {}..{}", path.display(), cfg.embedding_column, batch.first_row, batch.first_row + n as u64);
            let rows = Rows::try_new(emb, n, dim).map_err(|e| EngineError::kernel(context(), e))?;
            let (nb, knn_seconds) = neighbours(&index, rows, &exclude, cfg.lid.k, self_nb.as_ref()).map_err(|e| EngineError::kernel(context(), e))?;
            let (lids, stats) = lid_from_neighbours(&index, rows, &nb, &cfg.lid).map_err(|e| EngineError::kernel(context(), e))?;
            *acc.timings.entry("knn".into()).or_insert(0.0) += knn_seconds;
            *acc.timings.entry("estimate".into()).or_insert(0.0) += stats.estimate_seconds;
            acc.record(&lids, &exclude);

            let t = Instant::now();
            if writer.as_ref().is_none_or(|(f, _)| *f != batch.file_index) {
                if let Some((_, w)) = writer.take() {
                    w.finish()?;
                }
                let name = format!("part-{:05}.parquet", batch.file_index);
                files.push(staging.relative_data(&name));
                writer = Some((batch.file_index, AtomicParquetWriter::new(&staging.data_dir().join(name), out_schema.clone())?));
            }
            let columns = with_outputs(&batch.columns, &lids);
            let out = RecordBatch::try_new(out_schema.clone(), columns)
                .map_err(|e| EngineError::Invalid(format!("{}: building the result batch: {e}", path.display())))?;
            writer.as_mut().expect("opened above").1.write(&out)?;
            acc.add_time("write", t);
            progress.advance(n as u64);
        }
        if let Some((_, w)) = writer.take() {
            w.finish()?;
        }
        let t = Instant::now();
        let seconds = writer_thread.join().expect("reference writer panicked")?;
        acc.add_time("write", t);
        Ok(seconds)
    })?;
    timings.insert("reference_write".into(), reference_write);

    let t = Instant::now();
    let global_twonn = acc.global_twonn(&index, cfg.lid.discard_fraction)?;
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
    for (k, v) in &acc.timings {
        timings.insert(k.clone(), *v);
    }

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

/// Neighbourhoods of a batch: rows that are reference rows take theirs from the self-join, the
/// others are searched. Returns the neighbourhoods and the search's wall seconds.
fn neighbours(
    index: &KnnIndex,
    rows: Rows<'_>,
    exclude: &[Option<u32>],
    k: usize,
    self_nb: Option<&Neighbours>,
) -> std::result::Result<(Neighbours, f64), lidscope_kernel::KernelError> {
    let Some(known) = self_nb else {
        let (nb, stats) = index.knn(rows, k, Some(exclude))?;
        return Ok((nb, stats.seconds));
    };
    let search: Vec<usize> = (0..rows.len()).filter(|i| exclude[*i].is_none()).collect();
    let mut nb = Neighbours { k, indices: vec![0; rows.len() * k], distances: vec![0.0; rows.len() * k] };
    for (i, r) in exclude.iter().enumerate() {
        if let Some(r) = r {
            nb.indices[i * k..(i + 1) * k].copy_from_slice(known.indices_of(*r as usize));
            nb.distances[i * k..(i + 1) * k].copy_from_slice(known.distances_of(*r as usize));
        }
    }
    if search.is_empty() {
        return Ok((nb, 0.0));
    }
    let data: Vec<f32> = search.iter().flat_map(|i| rows.row(*i).iter().copied()).collect();
    let (found, stats) = index.knn(Rows::try_new(&data, search.len(), rows.dim())?, k, None)?;
    for (j, i) in search.iter().enumerate() {
        nb.indices[i * k..(i + 1) * k].copy_from_slice(found.indices_of(j));
        nb.distances[i * k..(i + 1) * k].copy_from_slice(found.distances_of(j));
    }
    Ok((nb, stats.seconds))
}

/// Carried columns, then `lid`, `r1`, `r2`, `rk` (Float64).
fn output_schema(info: &CorpusInfo) -> SchemaRef {
    let mut fields: Vec<Field> = info.carried.iter().map(|c| info.schema.field_with_name(c).expect("carried column").clone()).collect();
    fields.extend(OUTPUT_COLUMNS.iter().map(|c| Field::new(*c, DataType::Float64, false)));
    Arc::new(Schema::new(fields))
}

fn with_outputs(carried: &RecordBatch, lids: &[lidscope_kernel::PointLid]) -> Vec<ArrayRef> {
    let mut cols: Vec<ArrayRef> = carried.columns().to_vec();
    let col = |f: fn(&lidscope_kernel::PointLid) -> f64| Arc::new(Float64Array::from_iter_values(lids.iter().map(f))) as ArrayRef;
    cols.push(col(|p| p.lid));
    cols.push(col(|p| p.r1));
    cols.push(col(|p| p.r2));
    cols.push(col(|p| p.rk));
    cols
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
    timings: BTreeMap<String, f64>,
}

impl Accumulator {
    fn new(reference_rows: usize) -> Self {
        Self { rows: 0, sum: 0.0, finite: 0, nonfinite: 0, zero_r1: 0, covered: vec![None; reference_rows], timings: BTreeMap::new() }
    }

    fn add_time(&mut self, key: &str, since: Instant) {
        *self.timings.entry(key.into()).or_insert(0.0) += since.elapsed().as_secs_f64();
    }

    fn record(&mut self, lids: &[lidscope_kernel::PointLid], exclude: &[Option<u32>]) {
        for (p, ex) in lids.iter().zip(exclude) {
            self.rows += 1;
            if p.lid.is_finite() {
                self.sum += p.lid;
                self.finite += 1;
            } else {
                self.nonfinite += 1;
            }
            if p.r1 == 0.0 {
                self.zero_r1 += 1;
            }
            // A query that is reference row r, with itself excluded, has r's two nearest
            // neighbours inside the reference: exactly what the global estimate needs.
            if let Some(r) = ex {
                self.covered[*r as usize] = Some((p.r1, p.r2));
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
