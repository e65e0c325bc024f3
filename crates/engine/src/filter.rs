//! `--where`: a SQL predicate over the corpus's columns, parsed and typed by DataFusion against the
//! corpus's schema before any work, and evaluated batch by batch wherever the data layer reads rows
//! (the sample's pool) and in the run's plan (the rows measured).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use lidscope_data::{CorpusInfo, RowFilter, SharedFilter};

use crate::error::{EngineError, Result};

/// A checked `--where` predicate.
struct SqlFilter {
    sql: String,
    columns: Vec<String>,
    /// The columns it reads, in `columns` order, with the types it was planned for.
    schema: SchemaRef,
    expr: Arc<dyn PhysicalExpr>,
}

impl RowFilter for SqlFilter {
    fn sql(&self) -> &str {
        &self.sql
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn keep(&self, batch: &RecordBatch) -> std::result::Result<BooleanArray, String> {
        let mut cols = Vec::with_capacity(self.columns.len());
        for f in self.schema.fields() {
            let c = batch.column_by_name(f.name()).ok_or_else(|| format!("column {:?} was not read", f.name()))?;
            // A later file may store the column in another (compatible) type.
            cols.push(if c.data_type() == f.data_type() { c.clone() } else { cast(c, f.data_type()).map_err(|e| format!("column {:?}: {e}", f.name()))? });
        }
        let b = RecordBatch::try_new_with_options(self.schema.clone(), cols, &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())))
            .map_err(|e| e.to_string())?;
        let v = self.expr.evaluate(&b).and_then(|v| v.into_array(b.num_rows())).map_err(|e| e.to_string())?;
        Ok(v.as_boolean().clone())
    }
}

/// Parses `sql` against the corpus's columns: it must name only columns of the corpus (not the
/// embedding) and be boolean.
///
/// # Errors
/// [`EngineError::Usage`] naming the predicate, the corpus's first file and what is wrong (an
/// unknown column with the columns there are, a non-boolean expression, SQL that does not parse).
pub fn row_filter(sql: &str, info: &CorpusInfo, embedding_column: &str, file: &Path) -> Result<SharedFilter> {
    let bad = |m: String| EngineError::Usage(format!("--where {sql:?}: {m} ({})", file.display()));
    let ctx = SessionContext::new();
    let full = DFSchema::try_from(info.schema.as_ref().clone()).map_err(|e| bad(e.to_string()))?;
    let expr: Expr = ctx.parse_sql_expr(sql, &full).map_err(|e| {
        let e = e.strip_backtrace();
        if e.contains("No field named") || e.contains("not found") {
            bad(format!("{e}; the corpus's columns are {}", info.carried.join(", ")))
        } else {
            bad(e)
        }
    })?;
    let mut columns: Vec<String> = expr.column_refs().into_iter().map(|c| c.name.clone()).collect();
    columns.sort();
    columns.dedup();
    if let Some(c) = columns.iter().find(|c| info.schema.field_with_name(c).is_err()) {
        return Err(bad(format!("no column {c:?}; the corpus's columns are {}", info.carried.join(", "))));
    }
    if columns.iter().any(|c| c == embedding_column) {
        return Err(bad(format!("the embedding column {embedding_column:?} cannot choose the rows")));
    }
    let fields: Vec<_> = columns.iter().map(|c| info.schema.field_with_name(c).expect("checked").clone()).collect();
    let schema = Arc::new(Schema::new(fields));
    let narrow = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| bad(e.to_string()))?;
    let ty = expr.to_field(&narrow).map_err(|e| bad(e.strip_backtrace()))?.1.data_type().clone();
    if ty != DataType::Boolean {
        return Err(bad(format!("a predicate must be true or false for each row; this is {ty}")));
    }
    let phys = ctx.create_physical_expr(expr, &narrow).map_err(|e| bad(e.strip_backtrace()))?;
    Ok(SharedFilter(Arc::new(SqlFilter { sql: sql.to_string(), columns, schema, expr: phys })))
}
