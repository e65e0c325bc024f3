//! A corpus as a DataFusion table, read by lidscope's own reader.
//!
//! DataFusion's Parquet scan would read the files too, but lidscope's reader is what checks them:
//! nulls, NaN/inf and mixed dimensions come back with file, column and row. It also puts each
//! row's provenance (file and row number) beside it, which is the identity of a corpus without id
//! columns and tells the writer which part file a row belongs to. Batches are read and decoded on a
//! blocking thread a little ahead of the consumer, so the cores stay on the kernel.
//!
//! The scan is a plan node of its own ([`CorpusExec`]) whose partitions are lists of
//! [`CorpusSlice`]s: one partition over the whole corpus in order for a local run, or one shard
//! (whole row groups of a file) per job when a run is spread over machines. Everything it needs
//! is in [`CorpusScan`], plain data that a codec can send to another process.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{project_schema, DataFusionError};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use lidscope_data::{CorpusBatch, CorpusInfo, CorpusReader, CorpusSlice, CorpusSpec};

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

/// What a corpus scan reads and how: the corpus (files, columns, schema from [`lidscope_data::inspect`]),
/// the batch size, the dimension every vector must have, and the partitions.
#[derive(Clone, Debug)]
pub struct CorpusScan {
    /// The corpus's files and columns.
    pub spec: CorpusSpec,
    /// What inspecting it found (schema, carried columns, rows per file).
    pub info: CorpusInfo,
    /// Corpus rows per batch.
    pub batch_rows: usize,
    /// The reference's dimension: every vector must have it.
    pub dim: usize,
    /// Where `dim` comes from, for the error message.
    pub dim_source: String,
    /// Each partition's slices, in order; `None`: one partition, the whole corpus in order.
    pub partitions: Option<Vec<Vec<CorpusSlice>>>,
}

impl CorpusScan {
    /// The carried columns, the embedding as `FixedSizeList<Float32, dim>`, then
    /// [`FILE_COLUMN`], [`FILE_INDEX_COLUMN`], [`ROW_COLUMN`].
    pub fn schema(&self) -> SchemaRef {
        let info = &self.info;
        let mut fields: Vec<Field> = info.carried.iter().map(|c| info.schema.field_with_name(c).expect("carried column").clone()).collect();
        fields.push(Field::new(&self.spec.embedding_column, embedding_type(self.dim), false));
        fields.push(Field::new(FILE_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(FILE_INDEX_COLUMN, DataType::UInt32, false));
        fields.push(Field::new(ROW_COLUMN, DataType::UInt64, false));
        Arc::new(Schema::new(fields))
    }

    fn partition_count(&self) -> usize {
        self.partitions.as_ref().map_or(1, Vec::len)
    }

    fn to_record_batch(&self, schema: &SchemaRef, b: CorpusBatch) -> Result<RecordBatch, EngineError> {
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
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| EngineError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Reads partition `partition`, sending each batch (projected to `projection`) to `tx`.
    fn read(&self, partition: usize, projection: Option<&[usize]>, tx: &tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>) {
        let schema = self.schema();
        let reader = CorpusReader::new(&self.spec, &self.info, self.batch_rows, true, None)
            .and_then(|r| match &self.partitions {
                Some(p) => r.with_slices(p[partition].clone()),
                None => Ok(r),
            })
            .map_err(EngineError::from);
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        for batch in reader {
            let out = batch.map_err(EngineError::from).and_then(|b| self.to_record_batch(&schema, b)).and_then(|b| match projection {
                Some(p) => b.project(p).map_err(|e| EngineError::Invalid(format!("projecting the corpus scan: {e}"))),
                None => Ok(b),
            });
            let failed = out.is_err();
            // A closed channel means the query was dropped: stop reading.
            if tx.blocking_send(out.map_err(DataFusionError::from)).is_err() || failed {
                break;
            }
        }
    }
}

/// The embedding column's type as the scan produces it.
fn embedding_type(dim: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Float32, false)), dim as i32)
}

/// A corpus as a table: `SELECT ... FROM` it plans a [`CorpusExec`].
#[derive(Debug)]
pub struct CorpusTable {
    scan: Arc<CorpusScan>,
    schema: SchemaRef,
}

impl CorpusTable {
    /// The table that `scan` reads.
    pub fn new(scan: CorpusScan) -> Self {
        let schema = scan.schema();
        Self { scan: Arc::new(scan), schema }
    }
}

#[async_trait::async_trait]
impl TableProvider for CorpusTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(CorpusExec::new(self.scan.clone(), projection.cloned())?))
    }
}

/// The physical scan of a corpus: one partition per list of slices.
#[derive(Debug)]
pub struct CorpusExec {
    scan: Arc<CorpusScan>,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl CorpusExec {
    /// A scan of `scan`, producing the columns `projection` selects (all when `None`).
    ///
    /// # Errors
    /// A projection that names a column the scan does not have.
    pub fn new(scan: Arc<CorpusScan>, projection: Option<Vec<usize>>) -> datafusion::error::Result<Self> {
        let schema = project_schema(&scan.schema(), projection.as_ref())?;
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(scan.partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self { scan, projection, properties: Arc::new(properties) })
    }

    /// What the scan reads.
    pub fn scan(&self) -> &CorpusScan {
        &self.scan
    }

    /// The projected columns, if any.
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }
}

impl DisplayAs for CorpusExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let files = &self.scan.spec.files;
        write!(f, "CorpusExec: {} file(s), {} partition(s), embedding={}", files.len(), self.scan.partition_count(), self.scan.spec.embedding_column)
    }
}

impl ExecutionPlan for CorpusExec {
    fn name(&self) -> &'static str {
        "CorpusExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, _ctx: Arc<TaskContext>) -> datafusion::error::Result<SendableRecordBatchStream> {
        if partition >= self.scan.partition_count() {
            return Err(DataFusionError::Internal(format!("CorpusExec: no partition {partition} of {}", self.scan.partition_count())));
        }
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema(), READ_AHEAD);
        let tx = builder.tx();
        let (scan, projection) = (self.scan.clone(), self.projection.clone());
        builder.spawn_blocking(move || {
            scan.read(partition, projection.as_deref(), &tx);
            Ok(())
        });
        Ok(builder.build())
    }
}
