"""Shared pieces of the Python package's tests: the golden fixtures, the tolerance they state,
and the `lidscope` binary for comparisons with the CLI."""

import os
import pathlib
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def fixtures_dir() -> pathlib.Path:
    d = pathlib.Path(os.environ.get("LIDSCOPE_FIXTURES", ROOT.parent / "shared" / "fixtures"))
    if not (d / "README.md").is_file():
        raise RuntimeError(f"golden fixtures not found at {d} (set LIDSCOPE_FIXTURES)")
    return d


@pytest.fixture(scope="session")
def fixtures() -> pathlib.Path:
    return fixtures_dir()


@pytest.fixture(scope="session")
def lidscope_bin() -> str:
    """The CLI binary: $LIDSCOPE_BIN, else the release build of the target directory."""
    candidates = [os.environ.get("LIDSCOPE_BIN"), os.path.join(os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")), "release", "lidscope"), shutil.which("lidscope")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise RuntimeError("the lidscope binary was not found: build it (cargo build --release) or set LIDSCOPE_BIN")


def matrix(table, column: str) -> np.ndarray:
    """A fixed-size-list column as a float32 (rows x dim) array."""
    col = table.column(column).combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), col.type.list_size)


def read(path) -> "pyarrow.Table":
    return pq.read_table(path)


def assert_golden(got: np.ndarray, want: np.ndarray, what: str, exact_fraction: float = 0.999, atol: float = 1e-3) -> None:
    """The fixtures' tolerance: per-point absolute error <= 1e-3 on at least 99.9% of rows, the
    mean within 1e-4 relative."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    both = np.isfinite(got) & np.isfinite(want)
    assert np.array_equal(np.isfinite(got), np.isfinite(want)), f"{what}: finite at different rows"
    close = np.abs(got[both] - want[both]) <= atol
    frac = (close.sum() + (~np.isfinite(want)).sum()) / len(want)
    assert frac >= exact_fraction, f"{what}: {frac:.5f} of rows within {atol} (need {exact_fraction})"
    mg, mw = got[both].mean(), want[both].mean()
    assert abs(mg - mw) <= 1e-4 * abs(mw), f"{what}: mean {mg} vs {mw}"
