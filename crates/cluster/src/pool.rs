//! The reference sample's first pass, shard by shard on the workers.
//!
//! The paper's sample is the pool of rows with the smallest seeded priority of their identity,
//! deduplicated. Finding the pool means reading every row's identity, which is the part of
//! sampling that grows with the corpus; [`PoolExec`] does it where the shards are read, each
//! partition returning its shard's best `pool` candidates. The coordinator merges them
//! ([`lidscope_data::merge_pools`]) and reads the vectors of the pool rows only
//! ([`lidscope_data::sample_from_pool`]), so the sample is the local one, byte for byte.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use lidscope_data::{pool_candidates, PoolCandidate, SampleConfig};
use lidscope_engine::CorpusScan;

/// Each partition: the `pool` best sample candidates of its slices, as rows of
/// ([`priority`](PoolCandidate::priority), key, file, row).
#[derive(Debug)]
pub struct PoolExec {
    scan: Arc<CorpusScan>,
    cfg: SampleConfig,
    properties: Arc<PlanProperties>,
}

impl PoolExec {
    /// Candidates of each of `scan`'s partitions (which must be given) under `cfg`.
    pub fn new(scan: Arc<CorpusScan>, cfg: SampleConfig) -> Self {
        let partitions = scan.partitions.as_ref().map_or(1, Vec::len);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(pool_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self { scan, cfg, properties: Arc::new(properties) }
    }

    /// The corpus and its partitions.
    pub fn scan(&self) -> &CorpusScan {
        &self.scan
    }

    /// The sample's settings.
    pub fn config(&self) -> &SampleConfig {
        &self.cfg
    }
}

/// The candidates' columns.
pub fn pool_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("priority", DataType::UInt64, false),
        Field::new("key", DataType::Binary, false),
        Field::new("file", DataType::UInt32, false),
        Field::new("row", DataType::UInt64, false),
    ]))
}

/// Candidates as a batch.
fn to_batch(cands: &[PoolCandidate]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        pool_schema(),
        vec![
            Arc::new(UInt64Array::from_iter_values(cands.iter().map(|c| c.priority))),
            Arc::new(BinaryArray::from_iter_values(cands.iter().map(|c| &c.key[..]))),
            Arc::new(UInt32Array::from_iter_values(cands.iter().map(|c| c.file))),
            Arc::new(UInt64Array::from_iter_values(cands.iter().map(|c| c.row))),
        ],
    )?)
}

/// Candidates back from batches of [`pool_schema`].
pub fn from_batches(batches: &[RecordBatch]) -> Vec<PoolCandidate> {
    let mut out = Vec::new();
    for b in batches {
        let (p, k, f, r) = (
            b.column(0).as_primitive::<UInt64Type>(),
            b.column(1).as_binary::<i32>(),
            b.column(2).as_primitive::<UInt32Type>(),
            b.column(3).as_primitive::<UInt64Type>(),
        );
        for i in 0..b.num_rows() {
            out.push(PoolCandidate { priority: p.value(i), key: k.value(i).into(), file: f.value(i), row: r.value(i) });
        }
        debug_assert!(p.null_count() == 0);
    }
    out
}

impl DisplayAs for PoolExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PoolExec: pool={}, seed={}", self.cfg.pool, self.cfg.seed)
    }
}

impl ExecutionPlan for PoolExec {
    fn name(&self) -> &'static str {
        "PoolExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(&self, _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>, _options: ReplaceChildrenOptions) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, _ctx: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let slices = match &self.scan.partitions {
            Some(p) if partition < p.len() => Some(p[partition].clone()),
            None if partition == 0 => None,
            _ => return Err(DataFusionError::Internal(format!("PoolExec: no partition {partition}"))),
        };
        let (scan, cfg) = (self.scan.clone(), self.cfg.clone());
        let work = async move {
            tokio::task::spawn_blocking(move || {
                let cands = pool_candidates(&scan.spec, &scan.info, &cfg, slices).map_err(|e| DataFusionError::from(lidscope_engine::EngineError::from(e)))?;
                to_batch(&cands)
            })
            .await
            .map_err(|e| DataFusionError::Execution(format!("sample candidates: {e}")))?
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(pool_schema(), futures::stream::once(work))))
    }
}

/// A table whose scan is a given [`PoolExec`], so that it can be planned as a job.
#[derive(Debug)]
pub struct PoolTable {
    exec: Arc<PoolExec>,
}

impl PoolTable {
    /// The table of `exec`.
    pub fn new(exec: Arc<PoolExec>) -> Self {
        PoolTable { exec }
    }
}

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for PoolTable {
    fn schema(&self) -> SchemaRef {
        pool_schema()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        _filters: &[datafusion::logical_expr::Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match projection {
            Some(p) if *p != (0..4).collect::<Vec<_>>() => Err(DataFusionError::Internal("PoolTable is read whole".into())),
            _ => Ok(self.exec.clone()),
        }
    }
}
