//! lidscope's DataFusion functions.

mod lid;
mod reference_cache;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use lid::{lid_fields, LidUdf};

/// Registers every lidscope function with `ctx`.
pub fn register_all(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(LidUdf::default()));
}
