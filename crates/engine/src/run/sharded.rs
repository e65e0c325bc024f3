//! A run cut into shards, for a coordinator that has each shard computed elsewhere (a cluster's
//! workers) and keeps what is done across its own restarts.
//!
//! The pieces are the local run's: the same checks, the same plan for a shard's slices, the same
//! part files. What differs is the order of work. Shards finish in any order and may be retried,
//! so nothing is tallied while they run; [`ShardedRun::finish`] reads the committed parts back in
//! corpus order (their small columns only) and computes the totals exactly as a local run does,
//! sum for sum, so that every manifest figure equals the local run's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use lidscope_data::{CorpusSlice, DataError, IdentityEncoder, Layout, Manifest, Reference};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::config::{ReferenceSource, RunConfig, ValidRun};
use super::drive::{drive, PartSink};
use super::finish::{self, Accumulator, Timings};
use super::plan::lid_plan;
use super::reference::{check, short_sample, Drawn};
use crate::error::{EngineError, Result};
use crate::progress::NoProgress;
use crate::scan::CorpusScan;
use crate::udf::LoadedReference;

/// A run whose reference is known, ready to be computed shard by shard.
pub struct ShardedRun {
    cfg: RunConfig,
    valid: ValidRun,
    drawn: Drawn,
    params: Manifest,
    loaded: LoadedReference,
}

/// A committed part file of a shard, as [`ShardedRun::finish`] reads it back.
#[derive(Clone, Debug)]
pub struct CommittedPart {
    /// Where the file is now.
    pub path: PathBuf,
    /// How the manifest lists it (relative to the output directory).
    pub relative: String,
    /// The corpus file its rows come from.
    pub file_index: usize,
    /// The file row of its first row (its rows are consecutive).
    pub first_row: u64,
}

impl ShardedRun {
    /// Checks `reference` (read from the run's file, or drawn by the caller as the run's sample)
    /// against the corpus and `k`, and indexes it for the totals. Returns the warnings a local
    /// run would print (a sample smaller than asked).
    ///
    /// # Errors
    /// A reference of another dimension than the corpus, too few rows for `k`.
    pub fn new(cfg: RunConfig, valid: ValidRun, reference: Reference, source: String) -> Result<(Self, Vec<String>)> {
        // The cluster's workers search every shard's rows; the self-join is not used there.
        let drawn = Drawn { reference, source, self_join: false };
        check(&cfg, &valid, &drawn)?;
        let mut warnings = Vec::new();
        if let ReferenceSource::Sample(sample) = &cfg.reference {
            warnings.extend(short_sample(sample.size, &drawn.reference));
        }
        let params = finish::parameters(&cfg, &valid, &drawn);
        let loaded = LoadedReference::new(&drawn.reference, &drawn.source, &cfg.identity(), cfg.strategy)?;
        Ok((Self { cfg, valid, drawn, params, loaded }, warnings))
    }

    /// The run's reference.
    pub fn reference(&self) -> &Reference {
        &self.drawn.reference
    }

    /// The manifest's parameters (everything but the results).
    pub fn parameters(&self) -> &Manifest {
        &self.params
    }

    /// The scan of `slices`, as one partition.
    pub fn scan(&self, slices: Vec<CorpusSlice>) -> CorpusScan {
        CorpusScan {
            spec: self.valid.spec.clone(),
            info: self.valid.info.clone(),
            batch_rows: self.cfg.batch_rows,
            dim: self.drawn.reference.dim,
            dim_source: self.drawn.source.clone(),
            partitions: Some(vec![slices]),
        }
    }

    /// The plan of one shard in `ctx` (a cluster's session): its slices through `lid()` against
    /// the reference file at `reference_path` (which every worker must see at that path).
    ///
    /// # Errors
    /// A plan DataFusion refuses.
    pub fn plan(&self, ctx: &SessionContext, slices: Vec<CorpusSlice>, reference_path: &Path) -> Result<DataFrame> {
        lid_plan(ctx, self.scan(slices), &self.cfg, reference_path)
    }

    /// Writes a shard's results (the stream of its plan) as part files `part-<file><suffix>.parquet`
    /// in `dir`; returns their names as the manifest lists them under `layout`.
    ///
    /// # Errors
    /// The plan's errors (bad input met by a worker) or a failed write.
    pub async fn write_shard(&self, stream: SendableRecordBatchStream, dir: &Path, layout: &Layout, suffix: &str) -> Result<Vec<String>> {
        let mut sink = PartSink::new(dir.to_path_buf(), layout, &self.valid.info, &self.cfg.output_columns(), self.params.part_metadata(), suffix.to_string());
        drive(stream, &self.cfg, &self.valid.info, None, &mut sink, &NoProgress).await?;
        Ok(std::mem::take(&mut sink.files))
    }

    /// The manifest of the whole run from its committed parts, given in corpus order, with the
    /// warnings a local run would print. Reads only the parts' identity and `lid`, `r1`, `r2`
    /// columns.
    ///
    /// # Errors
    /// A part that cannot be read back.
    pub fn finish(&self, parts: &[CommittedPart], timings: BTreeMap<String, f64>, elapsed: f64) -> Result<(Manifest, Vec<String>)> {
        let mut acc = Accumulator::new(self.drawn.reference.len()).with_estimates(&self.cfg);
        let estimates: Vec<String> = acc.estimate_columns().map(String::from).collect();
        let identity = self.cfg.identity();
        let positional = !identity.is_empty() && self.cfg.id_columns.is_empty();
        let mut encoder: Option<IdentityEncoder> = None;
        for part in parts {
            let file = std::fs::File::open(&part.path).map_err(|e| EngineError::io(&part.path, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| DataError::NotParquet { path: part.path.clone(), source })?;
            let mut wanted = vec!["lid", "r1", "r2"];
            wanted.extend(estimates.iter().map(String::as_str));
            if !positional {
                wanted.extend(identity.iter().map(String::as_str));
            }
            let schema = builder.schema().clone();
            let indices: Vec<usize> = wanted
                .iter()
                .map(|c| schema.index_of(c).map_err(|_| EngineError::Invalid(format!("{}: no column {c:?} in a committed part", part.path.display()))))
                .collect::<Result<_>>()?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
            let reader = builder.with_projection(mask).build().map_err(|source| DataError::Parquet { path: part.path.clone(), source })?;
            let mut row = part.first_row;
            for batch in reader {
                let batch = batch.map_err(|e| EngineError::Invalid(format!("{}: {e}", part.path.display())))?;
                let n = batch.num_rows();
                let exclude: Vec<Option<u32>> = if identity.is_empty() {
                    vec![None; n]
                } else {
                    let ids = match positional {
                        true => positional_ids(&self.valid.spec.files[part.file_index], row, n),
                        false => {
                            let at: Vec<usize> = identity.iter().map(|c| batch.schema().index_of(c).expect("projected above")).collect();
                            batch.project(&at).map_err(|e| EngineError::Invalid(format!("{}: {e}", part.path.display())))?
                        }
                    };
                    let e = match &encoder {
                        Some(e) => e,
                        None => encoder.insert(IdentityEncoder::new(&ids.schema(), &identity, &part.path)?),
                    };
                    e.encode(&ids, &part.path, row)?.iter().map(|k| self.loaded.rows.get(&**k).copied()).collect()
                };
                let col = |c: &str| batch.column_by_name(c).expect("projected above").as_primitive::<Float64Type>().clone();
                acc.record(&col("lid"), &col("r1"), &col("r2"), &exclude);
                let named: Vec<Float64Array> = estimates.iter().map(|c| col(c)).collect();
                acc.record_estimates(&named.iter().collect::<Vec<_>>());
                row += n as u64;
            }
        }
        let t = std::time::Instant::now();
        let global_twonn = acc.global_twonn(&self.loaded.index, self.loaded.lists(), self.cfg.lid.discard_fraction)?;
        let mut timings = Timings::from(timings);
        timings.record("global", t.elapsed().as_secs_f64());
        timings.record("total", elapsed);
        let files = parts.iter().map(|p| p.relative.clone()).collect();
        let warnings = acc.warnings(&self.cfg);
        Ok((finish::manifest(self.params.clone(), &acc, global_twonn, timings, files, elapsed), warnings))
    }
}

/// The positional identity (`file`, `row`) of `n` consecutive rows of `file` from `first_row`.
fn positional_ids(file: &Path, first_row: u64, n: usize) -> RecordBatch {
    let schema = Schema::new(vec![Field::new("file", DataType::Utf8, false), Field::new("row", DataType::UInt64, false)]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(file.display().to_string(), n))),
        Arc::new(UInt64Array::from_iter_values(first_row..first_row + n as u64)),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns match the schema")
}
