//! How lidscope's plan nodes travel between coordinator and workers.
//!
//! Ballista encodes each stage's physical plan with protobuf and hands nodes it does not know to
//! a [`PhysicalExtensionCodec`]. This codec knows lidscope's two leaves, [`CorpusExec`] (the
//! corpus scan under `lid()`) and [`PoolExec`] (a shard's sample candidates), and gives every other
//! node to Ballista's own codec, which encodes the shuffle nodes. Our payloads start with a tag
//! byte of 0, which no protobuf message starts with, so the two never mistake each other's bytes.
//!
//! The payload is JSON: the scan's files, columns and slices, and the corpus schema as an Arrow
//! IPC flatbuffer. Plans are small (no data travels this way), and JSON keeps them readable in a
//! debugger.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::ipc::convert::{fb_to_schema, IpcSchemaEncoder};
use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::common::{exec_err, DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use lidscope_data::{CorpusInfo, CorpusSlice, CorpusSpec, SampleConfig};
use lidscope_engine::{CorpusExec, CorpusScan};
use serde::{Deserialize, Serialize};

use crate::pool::PoolExec;

/// First byte of every payload this codec writes.
const TAG: u8 = 0;

/// lidscope's physical codec, over Ballista's.
#[derive(Debug, Default)]
pub struct LidscopeCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

/// A [`CorpusScan`] as plain data.
#[derive(Serialize, Deserialize)]
struct ScanWire {
    files: Vec<PathBuf>,
    embedding_column: String,
    id_columns: Vec<String>,
    /// The corpus schema, an Arrow IPC flatbuffer.
    schema: Vec<u8>,
    carried: Vec<String>,
    total_rows: u64,
    rows_per_file: Vec<u64>,
    info_dim: Option<usize>,
    batch_rows: usize,
    dim: usize,
    dim_source: String,
    partitions: Option<Vec<Vec<CorpusSlice>>>,
    /// `--where`, parsed again against the schema where the scan runs.
    filter: Option<String>,
}

impl ScanWire {
    fn from_scan(s: &CorpusScan) -> Self {
        let schema = IpcSchemaEncoder::new().schema_to_fb(&s.info.schema).finished_data().to_vec();
        ScanWire {
            files: s.spec.files.clone(),
            embedding_column: s.spec.embedding_column.clone(),
            id_columns: s.spec.id_columns.clone(),
            schema,
            carried: s.info.carried.clone(),
            total_rows: s.info.total_rows,
            rows_per_file: s.info.rows_per_file.clone(),
            info_dim: s.info.dim,
            batch_rows: s.batch_rows,
            dim: s.dim,
            dim_source: s.dim_source.clone(),
            partitions: s.partitions.clone(),
            filter: s.spec.filter.as_ref().map(|f| f.sql().to_string()),
        }
    }

    fn into_scan(self) -> Result<CorpusScan> {
        let fb = arrow::ipc::root_as_schema(&self.schema).map_err(|e| DataFusionError::Internal(format!("decoding a corpus schema: {e}")))?;
        let schema: Schema = fb_to_schema(fb);
        let info = CorpusInfo { schema: Arc::new(schema), carried: self.carried, total_rows: self.total_rows, rows_per_file: self.rows_per_file, dim: self.info_dim };
        let filter = match &self.filter {
            Some(sql) => Some(lidscope_engine::row_filter(sql, &info, &self.embedding_column, &self.files[0]).map_err(DataFusionError::from)?),
            None => None,
        };
        Ok(CorpusScan {
            spec: CorpusSpec { files: self.files, embedding_column: self.embedding_column, id_columns: self.id_columns, filter },
            info,
            batch_rows: self.batch_rows,
            dim: self.dim,
            dim_source: self.dim_source,
            partitions: self.partitions,
        })
    }
}

/// One of lidscope's nodes.
#[derive(Serialize, Deserialize)]
enum Wire {
    Corpus { scan: ScanWire, projection: Option<Vec<usize>> },
    Pool { scan: ScanWire, sample: SampleConfig },
}

impl PhysicalExtensionCodec for LidscopeCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some((&TAG, payload)) = buf.split_first() else {
            return self.ballista.try_decode(buf, inputs, ctx, proto_converter);
        };
        let wire: Wire = serde_json::from_slice(payload).map_err(|e| DataFusionError::Internal(format!("decoding a lidscope plan node: {e}")))?;
        Ok(match wire {
            Wire::Corpus { scan, projection } => Arc::new(CorpusExec::new(Arc::new(scan.into_scan()?), projection)?),
            Wire::Pool { scan, sample } => Arc::new(PoolExec::new(Arc::new(scan.into_scan()?), sample)),
        })
    }

    fn try_encode(&self, node: Arc<dyn ExecutionPlan>, buf: &mut Vec<u8>, proto_converter: &dyn PhysicalProtoConverterExtension) -> Result<()> {
        let wire = if let Some(c) = node.downcast_ref::<CorpusExec>() {
            Wire::Corpus { scan: ScanWire::from_scan(c.scan()), projection: c.projection().map(<[usize]>::to_vec) }
        } else if let Some(p) = node.downcast_ref::<PoolExec>() {
            Wire::Pool { scan: ScanWire::from_scan(p.scan()), sample: p.config().clone() }
        } else {
            return self.ballista.try_encode(node, buf, proto_converter);
        };
        buf.push(TAG);
        match serde_json::to_writer(buf, &wire) {
            Ok(()) => Ok(()),
            Err(e) => exec_err!("encoding a lidscope plan node: {e}"),
        }
    }
}
