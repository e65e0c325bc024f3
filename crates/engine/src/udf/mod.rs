//! lidscope's DataFusion functions.

mod lid;
mod reference;
mod reference_cache;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use lid::{lid_fields, LidUdf};
pub(crate) use reference::LoadedReference;
pub(crate) use reference_cache::{adopt, file_sha256};

/// Registers every lidscope function with `ctx`.
pub fn register_all(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(LidUdf::default()));
}
