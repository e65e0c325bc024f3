//! Arrow tables across the boundary through the Arrow C stream interface (the PyCapsule
//! protocol): any Python object with `__arrow_c_stream__` (pyarrow, polars, DuckDB relations)
//! comes in without a copy of its buffers, and results go out as a capsule pyarrow imports.

use arrow::array::{RecordBatch, RecordBatchIterator};
use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::arrays::value_error;

const STREAM: &std::ffi::CStr = c"arrow_array_stream";

/// The batches of an object that exports an Arrow C stream; `name` names it in errors.
pub fn import(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    if !obj.hasattr("__arrow_c_stream__")? {
        return Err(PyTypeError::new_err(format!(
            "table {name}: a {} is neither a path nor an Arrow table (an object with __arrow_c_stream__: pyarrow, polars, ...)",
            obj.get_type().name()?
        )));
    }
    let capsule = obj.call_method0("__arrow_c_stream__")?;
    let capsule = capsule.cast::<PyCapsule>().map_err(|_| PyTypeError::new_err(format!("table {name}: __arrow_c_stream__ did not return a capsule")))?;
    let ptr = capsule.pointer_checked(Some(STREAM))?;
    // SAFETY: the capsule is named "arrow_array_stream", so by the protocol it holds a valid
    // FFI_ArrowArrayStream; `from_raw` moves the stream out and leaves a released one behind,
    // which the capsule's destructor then skips.
    let reader = unsafe { ArrowArrayStreamReader::from_raw(ptr.as_ptr().cast::<FFI_ArrowArrayStream>()) }.map_err(|e| value_error(&format!("table {name}"), e))?;
    let schema = arrow::array::RecordBatchReader::schema(&reader);
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| value_error(&format!("table {name}"), e))?;
    Ok((schema, batches))
}

/// A capsule holding a stream over `batches`, for `pyarrow.RecordBatchReader.from_stream`.
pub fn export<'py>(py: Python<'py>, schema: SchemaRef, batches: Vec<RecordBatch>) -> PyResult<Bound<'py, PyCapsule>> {
    let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
    PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(Box::new(reader)), STREAM)
}
