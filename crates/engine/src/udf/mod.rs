//! lidscope's DataFusion functions.

mod lid;
mod paired;
mod reference;
mod reference_cache;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use lid::{estimate_column, lid_fields, LidUdf};
pub use paired::{paired_test_udaf, PAIRED_FIELDS};
pub(crate) use reference::{lists_pay, member_list_len, LoadedReference};
pub(crate) use reference_cache::{adopt, file_sha256, Adopted};

/// Registers every lidscope function with `ctx`.
pub fn register_all(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(LidUdf::default()));
    ctx.register_udaf(paired_test_udaf());
}

/// Registers every lidscope function with a session state (a cluster's scheduler and workers
/// build their sessions this way).
///
/// # Errors
/// DataFusion's, if registration fails.
pub fn register_state(state: &mut datafusion::execution::SessionState) -> datafusion::error::Result<()> {
    datafusion::execution::FunctionRegistry::register_udf(state, std::sync::Arc::new(ScalarUDF::from(LidUdf::default())))?;
    datafusion::execution::FunctionRegistry::register_udaf(state, std::sync::Arc::new(paired_test_udaf()))?;
    Ok(())
}
