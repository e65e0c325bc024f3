//! A corpus as a DataFusion table, read by lidscope's own reader.
//!
//! DataFusion's Parquet scan would read the files too, but lidscope's reader is what checks them:
//! nulls, NaN/inf and mixed dimensions come back with file, column and row. It also puts each
//! row's provenance (file and row number) beside it, which is the identity of a corpus without id
//! columns and tells the writer which part file a row belongs to. Batches are read and decoded on a
//! blocking thread a little ahead of the consumer, so the cores stay on the kernel.

use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use lidscope_data::{CorpusBatch, CorpusInfo, CorpusReader, CorpusSpec};

use crate::error::EngineError;

/// Column names lidscope's plans use for themselves; a corpus may not use them.
pub(crate) const RESERVED_PREFIX: &str = "__lidscope_";
/// The path of the file a row came from (Utf8).
pub(crate) const FILE_COLUMN: &str = "__lidscope_file";
/// The index of that file in the corpus's file list (UInt32).
pub(crate) const FILE_INDEX_COLUMN: &str = "__lidscope_file_index";
/// The row's position within its file (UInt64).
pub(crate) const ROW_COLUMN: &str = "__lidscope_row";

/// Batches read ahead of the consumer.
const READ_AHEAD: usize = 2;

/// One corpus, in file order, as a single DataFusion partition: the carried columns, the embedding
/// as `FixedSizeList<Float32, dim>`, then [`FILE_COLUMN`], [`FILE_INDEX_COLUMN`], [`ROW_COLUMN`].
#[derive(Debug)]
pub(crate) struct CorpusStream {
    spec: CorpusSpec,
    info: CorpusInfo,
    batch_rows: usize,
    dim: usize,
    /// Where the expected dimension comes from, for the error message.
    dim_source: String,
    schema: SchemaRef,
}

impl CorpusStream {
    /// The corpus `spec` (inspected as `info`) in batches of `batch_rows`; every vector must have
    /// dimension `dim`, the reference's (`dim_source` names it in errors).
    pub fn new(spec: CorpusSpec, info: CorpusInfo, batch_rows: usize, dim: usize, dim_source: String) -> Self {
        let mut fields: Vec<Field> = info.carried.iter().map(|c| info.schema.field_with_name(c).expect("carried column").clone()).collect();
        fields.push(Field::new(&spec.embedding_column, embedding_type(dim), false));
        fields.push(Field::new(FILE_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(FILE_INDEX_COLUMN, DataType::UInt32, false));
        fields.push(Field::new(ROW_COLUMN, DataType::UInt64, false));
        Self { spec, info, batch_rows, dim, dim_source, schema: Arc::new(Schema::new(fields)) }
    }

    fn to_record_batch(&self, b: CorpusBatch) -> Result<RecordBatch, EngineError> {
        let path = &self.spec.files[b.file_index];
        if b.dim != self.dim {
            return Err(EngineError::Invalid(format!(
                "{}: column {:?}: dimension {} differs from the reference's {} ({})",
                path.display(),
                self.spec.embedding_column,
                b.dim,
                self.dim,
                self.dim_source
            )));
        }
        let n = b.columns.num_rows();
        let values = Float32Array::from(b.embeddings.expect("embeddings requested"));
        let item = Arc::new(Field::new_list_field(DataType::Float32, false));
        let embedding = FixedSizeListArray::try_new(item, self.dim as i32, Arc::new(values), None)
            .map_err(|e| EngineError::Invalid(format!("{}: column {:?}: {e}", path.display(), self.spec.embedding_column)))?;
        let mut columns: Vec<ArrayRef> = b.columns.columns().to_vec();
        columns.push(Arc::new(embedding));
        columns.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(path.display().to_string(), n))));
        columns.push(Arc::new(UInt32Array::from_value(b.file_index as u32, n)));
        columns.push(Arc::new(UInt64Array::from_iter_values(b.first_row..b.first_row + n as u64)));
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| EngineError::Invalid(format!("{}: {e}", path.display())))
    }
}

/// The embedding column's type as the scan produces it.
fn embedding_type(dim: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Float32, false)), dim as i32)
}

impl PartitionStream for CorpusStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), READ_AHEAD);
        let tx = builder.tx();
        let me = Self { spec: self.spec.clone(), info: self.info.clone(), dim_source: self.dim_source.clone(), schema: self.schema.clone(), ..*self };
        builder.spawn_blocking(move || {
            let reader = match CorpusReader::new(&me.spec, &me.info, me.batch_rows, true, None) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(EngineError::from(e)))));
                    return Ok(());
                }
            };
            for batch in reader {
                let out = batch.map_err(EngineError::from).and_then(|b| me.to_record_batch(b));
                let failed = out.is_err();
                // A closed channel means the query was dropped: stop reading.
                if tx.blocking_send(out.map_err(|e| DataFusionError::External(Box::new(e)))).is_err() || failed {
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}

/// The engine error behind a DataFusion error, with its message intact (a DataFusion error
/// prefixes "External error: " and the like).
pub(crate) fn engine_error(e: DataFusionError) -> EngineError {
    match e {
        DataFusionError::External(inner) => match inner.downcast::<EngineError>() {
            Ok(e) => *e,
            Err(inner) => match inner.downcast::<lidscope_data::DataError>() {
                Ok(e) => EngineError::Data(*e),
                Err(inner) => EngineError::Invalid(inner.to_string()),
            },
        },
        DataFusionError::Context(_, inner) => engine_error(*inner),
        DataFusionError::Shared(inner) => match Arc::try_unwrap(inner) {
            Ok(e) => engine_error(e),
            Err(shared) => EngineError::Invalid(shared.find_root().to_string()),
        },
        DataFusionError::Execution(m) => EngineError::Invalid(m),
        other => EngineError::Invalid(other.to_string()),
    }
}
