"""Result tables opened by the Parquet readers our users reach for first.

Writes a result directory holding several partitioned runs with the built `lidscope` binary, then
opens `<DIR>/data` with pandas, pyarrow.dataset (hive partitioning), polars and DuckDB, and checks
that each sees every row exactly once, the partition keys as columns, and per run the row count and
mean LID of that run's manifest. Also checks that a part file copied out of its directory still
names its run's parameters in its key-value metadata, and that runs of corpora written with
differently typed carried columns (integer widths, string kinds, dictionaries, nullability; made
here with pyarrow) read as one table with every value.

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
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
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


MIXED_ROWS = 300

# The same tokens and vectors, typed as three writers would: pyarrow's defaults; Int32 ids, large
# strings and a dictionary; unsigned and narrow ids, string views, no nulls.
MIXED = {
    "py": {"seq_id": pa.int64(), "position": pa.int64(), "token": pa.string(), "label": pa.string()},
    "embed": {"seq_id": pa.int32(), "position": pa.int32(), "token": pa.large_string(), "label": pa.dictionary(pa.int16(), pa.string())},
    "narrow": {"seq_id": pa.uint32(), "position": pa.int16(), "token": pa.string_view(), "label": pa.dictionary(pa.int8(), pa.large_string())},
}


def write_mixed_results(lidscope: str, tmp: Path, out: Path) -> None:
    """Writes one corpus per typing with pyarrow and runs lidscope on each into one directory."""
    n = MIXED_ROWS
    rng = np.random.default_rng(5)
    emb = rng.random((n, 8), dtype=np.float32)
    for name, types in MIXED.items():
        labels = [None if i % 5 == 0 and name != "narrow" else f"l{i % 3}" for i in range(n)]
        columns = {
            "seq_id": pa.array([i // 20 for i in range(n)], type=types["seq_id"]),
            "position": pa.array([i % 20 for i in range(n)], type=types["position"]),
            "token": pa.array([f"t{i % 7}" for i in range(n)], type=types["token"]),
            "label": pa.array(labels).cast(types["label"]),
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 8),
        }
        table = pa.table(columns)
        if name == "narrow":
            table = table.cast(pa.schema([f.with_nullable(f.name == "emb") for f in table.schema]))
        corpus = tmp / f"corpus-{name}.parquet"
        pq.write_table(table, corpus)
        cmd = [lidscope, "-q", "run", "--corpus", str(corpus), "--embedding-column", "emb", "--id-columns",
               "seq_id,position", "--k", "10", "--reference-size", "150", "--pool", "300", "--out", str(out),
               "--partition", f"writer={name}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")


def check_mixed(name: str, df: pd.DataFrame) -> None:
    """Every run's rows, ids and strings as written; nulls where the corpus had them."""
    n = MIXED_ROWS
    assert len(df) == n * len(MIXED), f"{name}: {len(df)} rows"
    df = df.assign(writer=df["writer"].astype(str))
    for writer in MIXED:
        run = df[df["writer"] == writer]
        assert len(run) == n, f"{name}: writer={writer}: {len(run)} rows"
        assert int(run["seq_id"].sum()) == sum(i // 20 for i in range(n)), f"{name}: writer={writer}: seq_id"
        assert int(run["position"].sum()) == sum(i % 20 for i in range(n)), f"{name}: writer={writer}: position"
        assert sorted(set(run["token"].astype(str))) == [f"t{i}" for i in range(7)], f"{name}: writer={writer}: token"
        nulls = 0 if writer == "narrow" else len(range(0, n, 5))
        assert int(run["label"].isna().sum()) == nulls, f"{name}: writer={writer}: {run['label'].isna().sum()} null labels"
    lids = {w: df[df["writer"] == w].sort_values(["seq_id", "position"])["lid"].to_numpy() for w in MIXED}
    for w in MIXED:
        assert np.array_equal(lids[w], lids["py"]), f"{name}: writer={w}: LIDs differ from writer=py"


def mixed_types(out: Path) -> None:
    data = out / "data"
    check_mixed("pandas.read_parquet", pd.read_parquet(data))
    check_mixed("pyarrow.dataset", ds.dataset(data, partitioning="hive").to_table().to_pandas())
    check_mixed("polars.scan_parquet", pl.scan_parquet(f"{data}/**/*.parquet", hive_partitioning=True).collect().to_pandas())
    con = duckdb.connect()
    check_mixed("duckdb read_parquet", con.execute(f"SELECT * FROM read_parquet('{data}/**/*.parquet', hive_partitioning = true)").df())


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
        try:
            mixed = Path(tmp) / "mixed"
            write_mixed_results(args.lidscope, Path(tmp), mixed)
            mixed_types(mixed)
            print("ok   mixed_types")
            passed += 1
        except Exception:
            print("FAIL mixed_types")
            traceback.print_exc()
            failed += 1
    print(f"readers: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
