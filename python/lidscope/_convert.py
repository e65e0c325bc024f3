"""Inputs to the native module: float32 rows in C order, borrowed when they already are."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def rows(X: Any, name: str = "X") -> np.ndarray:
    """`X` as a 2-D float32 C-contiguous array: the array itself when it already is one (no copy),
    else converted once. Takes numpy arrays and anything `numpy.asarray` takes, and Arrow columns of
    fixed-size lists (pyarrow arrays and chunked arrays, polars Array series)."""
    if not isinstance(X, np.ndarray):
        X = _from_arrow(X, name)
    try:
        a = np.asarray(X)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}: cannot be read as a matrix of numbers ({e})") from None
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected numbers, got an array of dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows x dimensions), got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def identities(ids: Any, name: str) -> Optional[np.ndarray]:
    """Row identities as a contiguous int64 array (None stays None)."""
    if ids is None:
        return None
    a = np.asarray(ids)
    if a.dtype.kind not in "iu" or a.ndim != 1:
        raise TypeError(f"{name}: expected a 1-D array of integers, got dtype {a.dtype} and shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _from_arrow(X: Any, name: str) -> Any:
    """A fixed-size-list Arrow column as a 2-D numpy view of its values (no copy for one chunk
    without nulls); anything else unchanged."""
    if not (hasattr(X, "__arrow_c_array__") or hasattr(X, "__arrow_c_stream__")):
        return X
    import pyarrow as pa

    if isinstance(X, (pa.Table, pa.RecordBatch)):
        raise TypeError(f"{name}: a table; pass its embedding column (e.g. table['hidden_L6'])")
    try:
        col = pa.chunked_array(X) if hasattr(X, "__arrow_c_stream__") else pa.array(X)
    except (TypeError, ValueError, pa.ArrowException):
        return X
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not pa.types.is_fixed_size_list(col.type):
        raise TypeError(f"{name}: an Arrow column of {col.type}; expected fixed-size lists of numbers (one embedding per row)")
    if col.null_count:
        first = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
        raise ValueError(f"{name}: row {first} is null ({col.null_count} null rows in all)")
    values = col.flatten()
    if values.null_count:
        raise ValueError(f"{name}: {values.null_count} null values inside the embeddings")
    return values.to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
