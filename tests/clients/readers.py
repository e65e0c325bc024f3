"""Result tables opened by the Parquet readers our users reach for first.

Writes a result directory holding several partitioned runs with the built `lidscope` binary, then
opens `<DIR>/data` with pandas, pyarrow.dataset (hive partitioning), polars and DuckDB, and checks
that each sees every row exactly once, the partition keys as columns, and per run the row count and
mean LID of that run's manifest. Also checks that a part file copied out of its directory still
names its run's parameters in its key-value metadata.

    python tests/clients/readers.py --lidscope target/release/lidscope --fixtures ../shared/fixtures

Ends with a line `N passed, M failed`; exits 1 if anything failed.
"""

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq

RUNS = [("mix", "16"), ("mix", "64"), ("other", "16")]


def write_results(lidscope: str, fixtures: Path, out: Path) -> dict:
    """Runs lidscope once per (model, k) into one directory; returns the manifests by run."""
    manifests = {}
    for model, k in RUNS:
        cmd = [lidscope, "-q", "run", "--corpus", str(fixtures / "mixture_small.parquet"),
               "--embedding-column", "embedding", "--id-columns", "row_id", "--k", k,
               "--reference-size", "800", "--pool", "1200", "--out", str(out),
               "--partition", f"model={model},k={k}", "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
        manifests[(model, k)] = json.loads(done.stdout)
        on_disk = json.loads((out / "data" / f"model={model}" / f"k={k}" / "_manifest.json").read_text())
        assert on_disk["rows"] == manifests[(model, k)]["rows"]
    return manifests


def check_frame(name: str, df: pd.DataFrame, manifests: dict) -> None:
    """Every row once, the partition keys as columns, each run's count and mean as its manifest."""
    total = sum(m["rows"] for m in manifests.values())
    assert len(df) == total, f"{name}: {len(df)} rows, the manifests say {total}"
    for col in ("model", "k", "row_id", "lid"):
        assert col in df.columns, f"{name}: no column {col!r} in {list(df.columns)}"
    df = df.assign(model=df["model"].astype(str), k=df["k"].astype(str))
    dupes = df.duplicated(["model", "k", "row_id"]).sum()
    assert dupes == 0, f"{name}: {dupes} rows seen more than once"
    for (model, k), m in manifests.items():
        run = df[(df["model"] == model) & (df["k"] == k)]
        assert len(run) == m["rows"], f"{name}: run model={model},k={k} has {len(run)} rows, manifest {m['rows']}"
        lid = run["lid"][run["lid"].map(math.isfinite)]
        mean = float(lid.mean())
        assert math.isclose(mean, m["mean_lid"], rel_tol=1e-9), f"{name}: run model={model},k={k} mean {mean} vs manifest {m['mean_lid']}"


def pandas_reader(data: Path, manifests: dict) -> None:
    check_frame("pandas.read_parquet", pd.read_parquet(data), manifests)


def pyarrow_reader(data: Path, manifests: dict) -> None:
    table = ds.dataset(data, partitioning="hive").to_table()
    check_frame("pyarrow.dataset", table.to_pandas(), manifests)


def polars_reader(data: Path, manifests: dict) -> None:
    frame = pl.scan_parquet(f"{data}/**/*.parquet", hive_partitioning=True).collect()
    check_frame("polars.scan_parquet", frame.to_pandas(), manifests)


def duckdb_reader(data: Path, manifests: dict) -> None:
    con = duckdb.connect()
    frame = con.execute(f"SELECT * FROM read_parquet('{data}/**/*.parquet', hive_partitioning = true)").df()
    check_frame("duckdb read_parquet", frame, manifests)


def self_describing_parts(data: Path, manifests: dict) -> None:
    (model, k), m = next(iter(manifests.items()))
    part = next((data / f"model={model}" / f"k={k}").glob("part-*.parquet"))
    with tempfile.TemporaryDirectory() as elsewhere:
        copy = Path(elsewhere) / "copied.parquet"
        shutil.copy(part, copy)
        kv = {key.decode(): v.decode() for key, v in pq.read_metadata(copy).metadata.items() if key.startswith(b"lidscope.")}
    assert int(kv["lidscope.k"]) == m["k"], kv
    assert kv["lidscope.estimator"] == m["estimator"], kv
    assert float(kv["lidscope.discard_fraction"]) == m["discard_fraction"], kv
    assert kv["lidscope.reference_sha256"] == m["reference_sha256"], kv
    assert int(kv["lidscope.reference_rows"]) == m["reference_rows"], kv
    assert kv["lidscope.version"] == m["version"], kv
    assert json.loads(kv["lidscope.partition"]) == {"model": model, "k": k}, kv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lidscope", required=True, help="the built lidscope binary")
    ap.add_argument("--fixtures", required=True, help="the shared fixtures directory")
    args = ap.parse_args()
    checks = [pandas_reader, pyarrow_reader, polars_reader, duckdb_reader, self_describing_parts]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results"
        manifests = write_results(args.lidscope, Path(args.fixtures), out)
        for check in checks:
            try:
                check(out / "data", manifests)
                print(f"ok   {check.__name__}")
                passed += 1
            except Exception:
                print(f"FAIL {check.__name__}")
                traceback.print_exc()
                failed += 1
    print(f"readers: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
