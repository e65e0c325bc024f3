//! `lidscope._native`: the native half of the `lidscope` Python package.
//!
//! The Python layer (`python/lidscope/`) converts inputs once (float32, C order) and gives them a
//! scikit-dimension-like face; this module borrows those arrays without copying, releases the GIL
//! for the work, and runs it on a rayon pool of the caller's size. Two groups:
//!
//! - [`arrays`]: the kernel on numpy arrays (`lid`, `knn`, global TwoNN);
//! - [`jobs`]: the CLI's jobs (`run`, `sql`, `embed`), parsed by the CLI's own parser so that the
//!   package takes the same options, defaults and errors; Arrow tables in and out through the
//!   Arrow C stream interface ([`stream`]).
//!
//! Errors become `ValueError` (bad input, bad options: the CLI's messages) or `TypeError`
//! (unknown options), never a panic across the interpreter.

use pyo3::prelude::*;

mod arrays;
mod jobs;
mod stream;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("ESTIMATORS", lidscope_kernel::LOCAL_ESTIMATOR_NAMES.to_vec())?;
    m.add_function(wrap_pyfunction!(arrays::lid, m)?)?;
    m.add_function(wrap_pyfunction!(arrays::knn, m)?)?;
    m.add_function(wrap_pyfunction!(arrays::global_twonn, m)?)?;
    m.add_function(wrap_pyfunction!(arrays::lid_given_neighbours, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::run, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::embed, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::sql, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::main, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::command_help, m)?)?;
    Ok(())
}
