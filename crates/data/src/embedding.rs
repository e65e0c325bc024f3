//! Decoding an Arrow embedding column into a row-major `Vec<f32>`.
//!
//! The kernel works on one contiguous f32 matrix, so every accepted layout (fixed-size or variable
//! lists, half/single/double precision) ends up as `n * dim` f32 values. Bad vectors are rejected
//! here, at read time, with file, column, row and element: a NaN that reaches the kernel would
//! silently poison every distance it touches.

use std::path::Path;

use arrow::array::{Array, AsArray, FixedSizeListArray, GenericListArray, OffsetSizeTrait};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Float16Type, Float32Type, Float64Type};

/// Arrow's half-precision float (the `half` crate's `f16`), named without depending on `half`.
type F16 = <Float16Type as ArrowPrimitiveType>::Native;

use crate::error::{DataError, Result};

/// The embedding types lidscope accepts, for error messages.
pub(crate) const EXPECTED_EMBEDDING: &str = "a list of Float16/Float32/Float64";

/// Checks that `data_type` is an accepted embedding type without reading any data.
///
/// Returns `Ok(Some(dim))` for `FixedSizeList<float, dim>`, `Ok(None)` for `List`/`LargeList` of a
/// float type (dimension known only from data).
///
/// # Errors
/// `Err(found)` with a readable name of the unsupported type, ready for
/// [`DataError::ColumnType`].
pub fn embedding_field_dim(data_type: &DataType) -> std::result::Result<Option<usize>, String> {
    let (item, dim) = match data_type {
        DataType::FixedSizeList(f, n) => (f.data_type(), Some(*n as usize)),
        DataType::List(f) | DataType::LargeList(f) => (f.data_type(), None),
        other => return Err(other.to_string()),
    };
    match item {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Ok(dim),
        _ => Err(data_type.to_string()),
    }
}

/// The float values under a list array, whatever their width.
enum Floats<'a> {
    F16(&'a [F16]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Floats<'_> {
    #[inline]
    fn get(&self, i: usize) -> f32 {
        match self {
            Floats::F16(v) => v[i].to_f32(),
            Floats::F32(v) => v[i],
            Floats::F64(v) => v[i] as f32,
        }
    }
}

/// Decodes an embedding column to row-major f32 values and their dimension.
///
/// Accepts `FixedSizeList`, `List` and `LargeList` of `Float16`, `Float32` or `Float64`; half and
/// double precision are converted to f32 (a finite f64 beyond the f32 range becomes infinite and is
/// rejected). `first_row` is the row index within the file of `array`'s first row, used in errors.
/// `expected_dim` is the dimension already established by earlier batches, if any. An empty array
/// returns `(vec![], expected_dim or the fixed size or 0)`.
///
/// # Errors
/// [`DataError::InvalidValue`] for a null row, a null element, an empty list;
/// [`DataError::DimensionMismatch`] for a row whose length differs from `expected_dim` or from the
/// array's first row; [`DataError::NonFinite`] for NaN or ±inf; [`DataError::ColumnType`] for an
/// unsupported type.
pub fn decode_embeddings(
    array: &dyn Array,
    path: &Path,
    column: &str,
    first_row: u64,
    expected_dim: Option<usize>,
) -> Result<(Vec<f32>, usize)> {
    let type_error = || DataError::ColumnType {
        path: path.to_path_buf(),
        column: column.to_string(),
        expected: EXPECTED_EMBEDDING.to_string(),
        found: array.data_type().to_string(),
    };
    embedding_field_dim(array.data_type()).map_err(|_| type_error())?;
    let ctx = Ctx { path, column, first_row, expected_dim };
    match array.data_type() {
        DataType::FixedSizeList(_, _) => decode_fixed(array.as_fixed_size_list(), &ctx),
        DataType::List(_) => decode_list(array.as_list::<i32>(), &ctx),
        DataType::LargeList(_) => decode_list(array.as_list::<i64>(), &ctx),
        _ => Err(type_error()),
    }
}

struct Ctx<'a> {
    path: &'a Path,
    column: &'a str,
    first_row: u64,
    expected_dim: Option<usize>,
}

fn floats<'a>(values: &'a dyn Array, ctx: &Ctx<'_>) -> Result<Floats<'a>> {
    Ok(match values.data_type() {
        DataType::Float16 => Floats::F16(values.as_primitive::<Float16Type>().values()),
        DataType::Float32 => Floats::F32(values.as_primitive::<Float32Type>().values()),
        DataType::Float64 => Floats::F64(values.as_primitive::<Float64Type>().values()),
        other => {
            return Err(DataError::ColumnType {
                path: ctx.path.to_path_buf(),
                column: ctx.column.to_string(),
                expected: EXPECTED_EMBEDDING.to_string(),
                found: other.to_string(),
            })
        }
    })
}

fn decode_fixed(array: &FixedSizeListArray, ctx: &Ctx<'_>) -> Result<(Vec<f32>, usize)> {
    let n = array.len();
    let size = array.value_length() as usize;
    let values = array.values();
    // Fast path: f32, no nulls anywhere, dimension as expected: one finiteness pass and a memcpy.
    if n > 0
        && size > 0
        && array.null_count() == 0
        && values.null_count() == 0
        && ctx.expected_dim.is_none_or(|d| d == size)
    {
        if let Some(v) = values.as_primitive_opt::<Float32Type>() {
            let start = array.value_offset(0) as usize;
            let slice = &v.values()[start..start + n * size];
            if let Some(bad) = slice.iter().position(|x| !x.is_finite()) {
                return Err(non_finite(ctx, (bad / size) as u64, bad % size, slice[bad]));
            }
            return Ok((slice.to_vec(), size));
        }
    }
    let f = floats(values.as_ref(), ctx)?;
    decode_rows(n, |i| array.is_null(i), |i| {
        let s = array.value_offset(i) as usize;
        (s, s + size)
    }, values.as_ref(), &f, ctx, Some(size))
}

fn decode_list<O: OffsetSizeTrait>(array: &GenericListArray<O>, ctx: &Ctx<'_>) -> Result<(Vec<f32>, usize)> {
    let offsets = array.value_offsets();
    let values = array.values();
    let f = floats(values.as_ref(), ctx)?;
    decode_rows(
        array.len(),
        |i| array.is_null(i),
        |i| (offsets[i].as_usize(), offsets[i + 1].as_usize()),
        values.as_ref(),
        &f,
        ctx,
        None,
    )
}

fn decode_rows(
    n: usize,
    is_null: impl Fn(usize) -> bool,
    range: impl Fn(usize) -> (usize, usize),
    values: &dyn Array,
    f: &Floats<'_>,
    ctx: &Ctx<'_>,
    fixed: Option<usize>,
) -> Result<(Vec<f32>, usize)> {
    let mut dim = ctx.expected_dim;
    // Where `dim` came from, for the error message.
    let mut dim_row: Option<u64> = None;
    let mut out = Vec::with_capacity(n * dim.or(fixed).unwrap_or(0));
    let value_nulls = values.logical_nulls().filter(|nb| nb.null_count() > 0);
    for i in 0..n {
        let row = ctx.first_row + i as u64;
        if is_null(i) {
            return Err(DataError::invalid(ctx.path, ctx.column, Some(row), "null embedding"));
        }
        let (start, end) = range(i);
        let len = end - start;
        if len == 0 {
            return Err(DataError::invalid(ctx.path, ctx.column, Some(row), "empty list"));
        }
        match dim {
            None => {
                dim = Some(len);
                dim_row = Some(row);
                out.reserve(n * len);
            }
            Some(d) if d != len => {
                let origin = match dim_row {
                    Some(r) => format!(" (row {r})"),
                    None => " (expected)".to_string(),
                };
                return Err(DataError::DimensionMismatch {
                    path: ctx.path.to_path_buf(),
                    column: ctx.column.to_string(),
                    row,
                    found: len,
                    expected: d,
                    origin,
                });
            }
            Some(_) => {}
        }
        if let Some(nb) = &value_nulls {
            if let Some(e) = (start..end).position(|j| nb.is_null(j)) {
                return Err(DataError::invalid(ctx.path, ctx.column, Some(row), format!("null at element {e}")));
            }
        }
        for (e, j) in (start..end).enumerate() {
            let x = f.get(j);
            if !x.is_finite() {
                return Err(non_finite(ctx, row - ctx.first_row, e, x));
            }
            out.push(x);
        }
    }
    Ok((out, dim.or(fixed).unwrap_or(0)))
}

fn non_finite(ctx: &Ctx<'_>, i: u64, element: usize, x: f32) -> DataError {
    let value = if x.is_nan() { "NaN" } else if x > 0.0 { "inf" } else { "-inf" };
    DataError::NonFinite {
        path: ctx.path.to_path_buf(),
        column: ctx.column.to_string(),
        row: ctx.first_row + i,
        element,
        value: value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{FixedSizeListArray, Float16Array, Float32Array, Float64Array, LargeListArray, ListArray, StringArray};
    use arrow::buffer::{NullBuffer, OffsetBuffer};
    use arrow::datatypes::Field;

    use super::*;

    fn fsl(values: Vec<Option<f32>>, dim: i32, nulls: Option<Vec<bool>>) -> FixedSizeListArray {
        let field = Arc::new(Field::new("item", DataType::Float32, true));
        FixedSizeListArray::new(field, dim, Arc::new(Float32Array::from(values)), nulls.map(NullBuffer::from))
    }

    fn dec(a: &dyn Array, expected: Option<usize>) -> Result<(Vec<f32>, usize)> {
        decode_embeddings(a, Path::new("a.parquet"), "emb", 10, expected)
    }

    #[test]
    fn fixed_size_f32_fast_and_slow_paths() {
        let a = fsl(vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0)], 2, None);
        assert_eq!(dec(&a, None).unwrap(), (vec![1.0, 2.0, 3.0, 4.0], 2));
        assert_eq!(dec(&a.slice(1, 1), Some(2)).unwrap(), (vec![3.0, 4.0], 2));
        let e = dec(&a, Some(3)).unwrap_err();
        assert_eq!(e.to_string(), r#"reading a.parquet: column "emb": row 10: dimension 2 differs from 3 (expected)"#);
        let a = fsl(vec![Some(1.0), Some(2.0), Some(3.0), Some(f32::NAN)], 2, None);
        assert_eq!(dec(&a, None).unwrap_err().to_string(), r#"reading a.parquet: column "emb": row 11: NaN at element 1"#);
        let a = fsl(vec![Some(1.0), None, Some(3.0), Some(4.0)], 2, None);
        assert_eq!(dec(&a, None).unwrap_err().to_string(), r#"reading a.parquet: column "emb": row 10: null at element 1"#);
        let a = fsl(vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0)], 2, Some(vec![true, false]));
        assert_eq!(dec(&a, None).unwrap_err().to_string(), r#"reading a.parquet: column "emb": row 11: null embedding"#);
    }

    #[test]
    fn lists_of_every_float_width() {
        let offsets = OffsetBuffer::from_lengths([3, 3]);
        let f64s = Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let a = ListArray::new(Arc::new(Field::new("item", DataType::Float64, true)), offsets.clone(), Arc::new(f64s), None);
        assert_eq!(dec(&a, None).unwrap(), (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3));
        let f16s = Float16Array::from(vec![F16::from_f32(0.5); 6]);
        let a = ListArray::new(Arc::new(Field::new("item", DataType::Float16, true)), offsets, Arc::new(f16s), None);
        assert_eq!(dec(&a, None).unwrap(), (vec![0.5; 6], 3));
        let a = LargeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            OffsetBuffer::from_lengths([2, 1]),
            Arc::new(Float32Array::from(vec![1.0, 2.0, f32::NEG_INFINITY])),
            None,
        );
        assert_eq!(dec(&a, None).unwrap_err().to_string(), r#"reading a.parquet: column "emb": row 11: dimension 1 differs from 2 (row 10)"#);
        let a = LargeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            OffsetBuffer::from_lengths([1, 0]),
            Arc::new(Float32Array::from(vec![1.0])),
            None,
        );
        assert_eq!(dec(&a, None).unwrap_err().to_string(), r#"reading a.parquet: column "emb": row 11: empty list"#);
        let a = ListArray::new(
            Arc::new(Field::new("item", DataType::Float64, true)),
            OffsetBuffer::from_lengths([1]),
            Arc::new(Float64Array::from(vec![1e300])),
            None,
        );
        assert_eq!(dec(&a, None).unwrap_err().to_string(), r#"reading a.parquet: column "emb": row 10: inf at element 0"#);
    }

    #[test]
    fn unsupported_types() {
        let a = StringArray::from(vec!["x"]);
        assert_eq!(
            dec(&a, None).unwrap_err().to_string(),
            r#"reading a.parquet: column "emb": expected a list of Float16/Float32/Float64, found Utf8"#
        );
        assert_eq!(embedding_field_dim(&DataType::new_fixed_size_list(DataType::Float16, 8, true)), Ok(Some(8)));
        assert_eq!(embedding_field_dim(&DataType::new_list(DataType::Float64, true)), Ok(None));
        assert!(embedding_field_dim(&DataType::new_list(DataType::Int32, true)).is_err());
    }
}
