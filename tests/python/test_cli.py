"""The Python API and the `lidscope` binary give the same numbers, to the bit."""

import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

import lidscope
from conftest import matrix, read


def _results(out, ids):
    t = ds.dataset(out / "data", format="parquet").to_table(columns=ids + ["lid"])
    return t


def test_own_reference_equals_cli(fixtures, lidscope_bin, tmp_path):
    """X as its own reference = `lidscope run` with the whole corpus as the sample, each row
    left out by identity."""
    src = fixtures / "mixture_small.parquet"
    out = tmp_path / "res"
    subprocess.run([lidscope_bin, "-q", "run", "--corpus", str(src), "--embedding-column", "embedding", "--out", str(out),
                    "--k", "64", "--id-columns", "row_id", "--reference-size", "100000"], check=True)
    t = read(src)
    got = lidscope.lid(matrix(t, "embedding"), 64)
    res = _results(out, ["row_id"])
    by_id = dict(zip(res.column("row_id").to_pylist(), res.column("lid").to_pylist()))
    cli = np.array([by_id[r] for r in t.column("row_id").to_pylist()])
    assert np.array_equal(got.view(np.uint64), cli.view(np.uint64)), "lid differs from the CLI's in the last bits"


def test_reference_by_identity_equals_cli(fixtures, lidscope_bin, tmp_path):
    corpus = read(fixtures / "minilm_fortunes.parquet")
    golden = read(fixtures / "minilm_fortunes.golden.parquet")
    in_ref = golden.column("in_reference").to_numpy(zero_copy_only=False)
    ref_file = tmp_path / "reference.parquet"
    pq.write_table(corpus.select(["seq_id", "position", "hidden_L6"]).filter(pa.array(in_ref)), ref_file)
    out = tmp_path / "res"
    subprocess.run([lidscope_bin, "-q", "run", "--corpus", str(fixtures / "minilm_fortunes.parquet"), "--embedding-column", "hidden_L6",
                    "--out", str(out), "--reference", str(ref_file), "--id-columns", "seq_id,position", "--k", "128",
                    "--estimator", "twonn,mle"], check=True)
    X = matrix(corpus, "hidden_L6")
    ids = corpus.column("seq_id").to_numpy() * 1_000_000 + corpus.column("position").to_numpy()
    got = lidscope.lid(X, 128, reference=X[in_ref], ids=ids, reference_ids=ids[in_ref], estimator=["twonn", "mle"])
    t = ds.dataset(out / "data", format="parquet").to_table(columns=["seq_id", "position", "lid", "lid_mle"])
    key = t.column("seq_id").to_numpy() * 1_000_000 + t.column("position").to_numpy()
    pos = {k: i for i, k in enumerate(key)}
    at = np.array([pos[i] for i in ids])
    for est, col in (("twonn", "lid"), ("mle", "lid_mle")):
        cli = t.column(col).to_numpy()[at]
        assert np.array_equal(got[est].view(np.uint64), cli.view(np.uint64)), f"{est} differs from the CLI's"


def test_run_from_python_equals_cli(fixtures, lidscope_bin, tmp_path):
    """lidscope.run is the CLI's run: the same files' numbers and the same manifest figures."""
    src = str(fixtures / "mixture_small.parquet")
    common = ["--corpus", src, "--embedding-column", "embedding", "--k", "16", "--reference-size", "500", "--seed", "7"]
    subprocess.run([lidscope_bin, "-q", "run", *common, "--out", str(tmp_path / "cli")], check=True)
    m = lidscope.run(src, tmp_path / "py", embedding_column="embedding", k=16, reference_size=500, seed=7, quiet=True)
    assert m["rows"] == 1200 and m["k"] == 16 and m["reference_rows"] == 500
    a = ds.dataset(tmp_path / "cli" / "data", format="parquet").to_table().sort_by("row_id")
    b = ds.dataset(tmp_path / "py" / "data", format="parquet").to_table().sort_by("row_id")
    assert a.column("lid").equals(b.column("lid"))
    import json
    cli_manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    for key in ("mean_lid", "global_twonn", "reference_rows", "rows"):
        assert cli_manifest[key] == m[key], key
