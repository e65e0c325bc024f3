//! Driving the run's plan: every result batch is tallied and written to its part file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Field, Float64Type, Schema, SchemaRef, UInt32Type, UInt64Type};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use lidscope_data::{result_schema, to_result_column, AtomicParquetWriter, CorpusInfo, IdentityEncoder, Layout};

use super::config::RunConfig;
use super::finish::Accumulator;
use super::plan::LID_STRUCT;
use crate::error::{EngineError, Result};
use crate::progress::Progress;
use crate::scan::{FILE_COLUMN, FILE_INDEX_COLUMN, ROW_COLUMN};
use crate::udf::LoadedReference;

/// Where result rows go: one Parquet part per corpus file, `part-<file index><suffix>.parquet`
/// (a shard of a file adds its own suffix), each carrying the run's parameters in its key-value
/// metadata.
///
/// The parts are written on a helper thread, so that encoding and writing one batch overlaps the
/// computation of the next (the plan computes a batch only when it is asked for the next one);
/// [`Self::close`] waits for the last part to be finished and synced.
pub(crate) struct PartSink<'a> {
    dir: PathBuf,
    layout: &'a Layout,
    suffix: String,
    schema: SchemaRef,
    metadata: Vec<(String, String)>,
    /// The file index of the part being written.
    open: Option<u32>,
    writer: Option<PartWriter>,
    /// The parts written, relative to the output directory.
    pub files: Vec<String>,
    /// Seconds the helper thread spent writing (overlapping the computation).
    pub seconds: f64,
}

/// What the helper thread is asked to do, in order.
enum Job {
    /// Finish the part being written, if any, and start this one.
    Open(PathBuf),
    Write(RecordBatch),
    /// Finish the part being written; the last job.
    Close,
}

/// The helper thread and its queue (two batches deep: memory stays bounded when writing is the
/// slower side).
struct PartWriter {
    jobs: std::sync::mpsc::SyncSender<Job>,
    thread: std::thread::JoinHandle<lidscope_data::Result<f64>>,
}

impl PartWriter {
    fn start(schema: SchemaRef, metadata: Vec<(String, String)>) -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(2);
        let thread = std::thread::spawn(move || {
            let mut part: Option<AtomicParquetWriter> = None;
            let mut seconds = 0.0;
            for job in queue {
                let t = Instant::now();
                match job {
                    Job::Open(path) => {
                        if let Some(w) = part.take() {
                            w.finish()?;
                        }
                        part = Some(AtomicParquetWriter::with_metadata(&path, schema.clone(), metadata.clone())?);
                    }
                    Job::Write(batch) => part.as_mut().expect("a part is opened before its batches").write(&batch)?,
                    Job::Close => {
                        if let Some(w) = part.take() {
                            w.finish()?;
                        }
                        return Ok(seconds + t.elapsed().as_secs_f64());
                    }
                }
                seconds += t.elapsed().as_secs_f64();
            }
            // The queue closed without `Close` (the run failed): the unfinished part drops here,
            // which removes its temporary file.
            Ok(seconds)
        });
        Self { jobs, thread }
    }

    /// Queues a job; when the thread has stopped on an error, that error.
    fn send(self, job: Job) -> std::result::Result<Self, EngineError> {
        match self.jobs.send(job) {
            Ok(()) => Ok(self),
            Err(_) => Err(self.join().err().unwrap_or_else(|| EngineError::Invalid("the result writer stopped".into()))),
        }
    }

    /// Closes the queue and waits for the thread: the seconds it spent writing, or its error.
    /// Without a [`Job::Close`] first, the part being written is abandoned.
    fn join(self) -> Result<f64> {
        drop(self.jobs);
        match self.thread.join() {
            Ok(r) => Ok(r?),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<'a> PartSink<'a> {
    /// Writes parts into `dir` (the staging directory's `data/`), listed as `layout` places them.
    pub fn new(dir: PathBuf, layout: &'a Layout, info: &CorpusInfo, outputs: &[String], metadata: Vec<(String, String)>, suffix: String) -> Self {
        Self { dir, layout, suffix, schema: output_schema(info, outputs), metadata, open: None, writer: None, files: Vec::new(), seconds: 0.0 }
    }

    fn write(&mut self, file_index: u32, batch: &RecordBatch) -> Result<()> {
        let mut writer = match self.writer.take() {
            Some(w) => w,
            None => PartWriter::start(self.schema.clone(), self.metadata.clone()),
        };
        if self.open != Some(file_index) {
            let name = format!("part-{file_index:05}{}.parquet", self.suffix);
            self.files.push(self.layout.relative_data(&name));
            self.open = Some(file_index);
            writer = writer.send(Job::Open(self.dir.join(name)))?;
        }
        self.writer = Some(writer.send(Job::Write(batch.clone()))?);
        Ok(())
    }

    /// Finishes the part being written and waits until it is synced.
    pub fn close(&mut self) -> Result<()> {
        self.open = None;
        if let Some(w) = self.writer.take() {
            self.seconds += w.send(Job::Close)?.join()?;
        }
        Ok(())
    }
}

impl Drop for PartSink<'_> {
    /// A sink dropped unclosed (the run failed): the part being written is abandoned, its
    /// temporary file removed before the staging directory is.
    fn drop(&mut self) {
        if let Some(PartWriter { jobs, thread }) = self.writer.take() {
            drop(jobs);
            // Its error or panic is the failed run's consequence, not news.
            let _ = thread.join();
        }
    }
}

/// Consumes the run's plan: tallies each batch in `acc` (reference rows seen as queries give the
/// global estimate its distances; none when `loaded` is `None`) and writes its carried columns
/// with `lid`, `r1`, `r2`, `rk` to `sink`. Batches come in corpus order and never mix files.
pub(crate) async fn drive(
    mut batches: SendableRecordBatchStream,
    cfg: &RunConfig,
    info: &CorpusInfo,
    tally: Option<(&LoadedReference, &mut Accumulator)>,
    sink: &mut PartSink<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    let (loaded, mut acc) = match tally {
        Some((l, a)) => (Some(l), Some(a)),
        None => (None, None),
    };
    let identity = cfg.identity();
    let mut encoder: Option<IdentityEncoder> = None;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let n = batch.num_rows();
        if n == 0 {
            continue;
        }
        let file_index = batch.column_by_name(FILE_INDEX_COLUMN).expect("selected").as_primitive::<UInt32Type>().value(0);
        let path = &source_file(&batch);
        let lids = batch.column_by_name(LID_STRUCT).expect("selected").as_struct().clone();
        // A `lid_<name>` column is its own struct field with several estimators; with one, `lid`.
        let column = |name: &str| lids.column_by_name(name).or_else(|| lids.column_by_name("lid")).expect("lid() result field").clone();
        if let (Some(loaded), Some(acc)) = (loaded, acc.as_deref_mut()) {
            let exclude = match identity.is_empty() {
                true => vec![None; n],
                false => {
                    let ids = identity_batch(cfg, &identity, &batch, path)?;
                    let e = match &encoder {
                        Some(e) => e,
                        None => encoder.insert(IdentityEncoder::new(&ids.schema(), &identity, Path::new(path))?),
                    };
                    let row0 = batch.column_by_name(ROW_COLUMN).expect("selected").as_primitive::<UInt64Type>().value(0);
                    e.encode(&ids, Path::new(path), row0)?.iter().map(|k| loaded.rows.get(&**k).copied()).collect()
                }
            };
            acc.record(column("lid").as_primitive::<Float64Type>(), column("r1").as_primitive::<Float64Type>(), column("r2").as_primitive::<Float64Type>(), &exclude);
            let estimates: Vec<ArrayRef> = acc.estimate_columns().map(column).collect();
            acc.record_estimates(&estimates.iter().map(|c| c.as_primitive::<Float64Type>()).collect::<Vec<_>>());
        }

        let mut columns: Vec<ArrayRef> = batch.columns()[..info.carried.len()]
            .iter()
            .zip(sink.schema.fields())
            .map(|(c, f)| to_result_column(c, f, Path::new(path)))
            .collect::<std::result::Result<_, _>>()?;
        columns.extend(sink.schema.fields().iter().skip(info.carried.len()).map(|f| column(f.name())));
        let out = RecordBatch::try_new(sink.schema.clone(), columns).map_err(|e| EngineError::Invalid(format!("{path}: building the result batch: {e}")))?;
        sink.write(file_index, &out)?;
        progress.advance(n as u64);
    }
    sink.close()
}

/// The corpus file of a result batch, for messages.
fn source_file(batch: &RecordBatch) -> String {
    batch.column_by_name(FILE_COLUMN).expect("selected").as_string::<i32>().value(0).to_string()
}

/// The identity columns of a result batch, named as the reference names them.
fn identity_batch(cfg: &RunConfig, identity: &[String], batch: &RecordBatch, path: &str) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = identity.iter().map(|c| batch.column_by_name(cfg.identity_source(c)).expect("selected").clone()).collect();
    let fields: Vec<Field> = identity.iter().zip(&columns).map(|(c, a)| Field::new(c, a.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| EngineError::Invalid(format!("{path}: identity columns: {e}")))
}

/// Carried columns in their result types ([`lidscope_data::result_type`]: one schema for runs of
/// differently typed corpora), then the run's `outputs` (Float64: `lid`, `r1`, `r2`, `rk`, and a
/// `lid_<name>` per estimator named, [`RunConfig::output_columns`]).
pub(crate) fn output_schema(info: &CorpusInfo, outputs: &[String]) -> SchemaRef {
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    result_schema(info.carried.iter().map(|c| info.schema.field_with_name(c).expect("carried column")), &outputs)
}
