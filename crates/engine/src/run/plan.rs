//! The run as a DataFusion plan: the corpus scan projected through `lid()`.

use std::path::Path;
use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::functions::core::expr_fn::named_struct;
use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::prelude::{ident, lit, SessionContext};

use super::config::RunConfig;
use crate::error::Result;
use crate::scan::{CorpusScan, CorpusTable, FILE_COLUMN, FILE_INDEX_COLUMN, ROW_COLUMN};
use crate::udf::LidUdf;

/// The struct column `lid()` fills in the run's plan.
pub(crate) const LID_STRUCT: &str = "__lidscope_lid";

/// `SELECT <carried>, <file index>, <file>, <row>, lid(...) AS __lidscope_lid FROM <scan>
/// [WHERE <--where>]`: the
/// carried corpus columns first (in the corpus's order), then the row's provenance, then the
/// struct of `lid`, `r1`, `r2`, `rk`. The same plan runs in a local session or on a cluster.
///
/// # Errors
/// A plan DataFusion refuses (which would be a bug in lidscope).
pub(crate) fn lid_plan(ctx: &SessionContext, scan: CorpusScan, cfg: &RunConfig, reference: &Path) -> Result<DataFrame> {
    let mut exprs: Vec<Expr> = scan.info.carried.iter().map(ident).collect();
    exprs.extend([FILE_INDEX_COLUMN, FILE_COLUMN, ROW_COLUMN].map(ident));
    exprs.push(lid_expr(cfg, reference).alias(LID_STRUCT));
    let filter = scan.spec.filter.as_ref().map(|f| f.sql().to_string());
    let mut rows = ctx.read_table(Arc::new(CorpusTable::new(scan)))?;
    if let Some(sql) = filter {
        // Checked against the corpus's columns in `RunConfig::validate`.
        let predicate = rows.parse_sql_expr(&sql)?;
        rows = rows.filter(predicate)?;
    }
    let plan = rows.select(exprs)?;
    tracing::debug!("run plan:\n{}", plan.logical_plan().display_indent());
    Ok(plan)
}

/// `lid(embedding, reference, k, estimator, discard_fraction [, identity])` as the run calls it.
fn lid_expr(cfg: &RunConfig, reference: &Path) -> Expr {
    let mut args = vec![
        ident(&cfg.embedding_column),
        lit(reference.to_string_lossy().into_owned()),
        lit(cfg.lid.k as i64),
        lit(cfg.estimator_arg()),
        lit(cfg.lid.discard_fraction),
    ];
    let identity = cfg.identity();
    if !identity.is_empty() {
        args.push(named_struct(identity.iter().flat_map(|c| [lit(c.as_str()), ident(cfg.identity_source(c))]).collect()));
    }
    ScalarUDF::from(LidUdf::default()).call(args)
}
