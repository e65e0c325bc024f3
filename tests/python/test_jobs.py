"""run, sql, embed, sweep and report from Python: the CLI's jobs, options and errors."""

import numpy as np
import pyarrow as pa
import pytest

import lidscope
from conftest import matrix, read


@pytest.fixture(scope="module")
def result(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("res") / "mixture"
    m = lidscope.run(fixtures / "mixture_small.parquet", out, embedding_column="embedding", k=16, id_columns=["row_id"],
                     reference_size=600, estimator="twonn,mle", partition={"model": "mix", "step": 3}, quiet=True)
    return out, m


def test_run_returns_the_manifest(result):
    out, m = result
    assert m["rows"] == 1200 and m["k"] == 16 and m["reference_rows"] == 600
    assert (out / "data" / "model=mix" / "step=3" / "_manifest.json").is_file()


def test_sql_over_results_and_arrow_tables(result, fixtures):
    out, m = result
    t = lidscope.sql("SELECT n, mean FROM r_summary", {"r": out})
    assert isinstance(t, pa.Table) and t.num_rows == 1
    assert t.column("n")[0].as_py() == 1200
    assert abs(t.column("mean")[0].as_py() - m["mean_lid"]) < 1e-9
    # A pyarrow table and a polars frame, joined with the result on disk.
    import polars as pl

    groups = read(fixtures / "mixture_small.parquet").select(["row_id", "group"])
    ids = groups.column("row_id").to_numpy()
    frame = pl.DataFrame({"row_id": ids, "half": np.arange(len(ids)) % 2})
    q = """SELECT g."group", count(*) AS n, avg(r.lid) AS mean_lid
           FROM r JOIN g ON r.row_id = g.row_id JOIN f ON r.row_id = f.row_id
           WHERE f.half = 0 GROUP BY g."group" ORDER BY g."group" """
    joined = lidscope.sql(q, {"r": str(out), "g": groups, "f": frame})
    assert joined.column("group").to_pylist() == sorted(set(groups.column("group").to_pylist()))
    assert sum(joined.column("n").to_pylist()) == 600


def test_sql_lid_function(result, fixtures):
    """The SQL lid() against the run's reference equals the run's own lid for the same rows."""
    out, _ = result
    ref = out / "references" / "model=mix" / "step=3" / "reference.parquet"
    q = f"""SELECT c.row_id, lid(c.embedding, '{ref}', 16, 'twonn', 0.1, named_struct('row_id', c.row_id))['lid'] AS x, r.lid
            FROM c JOIN r ON c.row_id = r.row_id ORDER BY c.row_id LIMIT 50"""
    t = lidscope.sql(q, {"c": fixtures / "mixture_small.parquet", "r": out})
    assert t.num_rows == 50
    assert t.column("x").equals(t.column("lid"))


def test_job_errors(fixtures, tmp_path):
    with pytest.raises(TypeError, match=r"unexpected argument '--no-such-option'"):
        lidscope.run(fixtures / "mixture_small.parquet", tmp_path / "o", embedding_column="embedding", no_such_option=3)
    with pytest.raises(ValueError, match=r"invalid value 'many' for '--k"):
        lidscope.run(fixtures / "mixture_small.parquet", tmp_path / "o", embedding_column="embedding", k="many")
    with pytest.raises(ValueError, match=r"missing\.parquet"):
        lidscope.run(tmp_path / "missing.parquet", tmp_path / "o", embedding_column="embedding", quiet=True)
    with pytest.raises(ValueError, match=r"nope"):
        lidscope.run(fixtures / "mixture_small.parquet", tmp_path / "o", embedding_column="nope", quiet=True)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("manifest.json"))
    with pytest.raises(ValueError, match=r"in the query"):
        lidscope.sql("SELEC 1")
    with pytest.raises(TypeError, match=r"neither a path nor an Arrow table"):
        lidscope.sql("SELECT 1", {"t": 42})


def test_embed_then_lid(fixtures, tmp_path):
    texts = fixtures / "minilm_fortunes_texts.parquet"
    s = lidscope.embed(fixtures / "embed" / "models" / "tiny-gpt2", texts, tmp_path / "corpus", text_column="text", id_columns=["seq_id"], layers="1,-1", quiet=True)
    assert s["texts"] == 300 and s["tokens"] > 1000
    assert set(s["columns"]) == {"hidden_L1", "hidden_L3"}
    corpus = lidscope.sql("SELECT hidden_L3 FROM c", {"c": tmp_path / "corpus"})
    X = matrix(corpus, "hidden_L3")
    assert X.shape == (s["tokens"], 64)
    est = lidscope.TwoNN().fit_pw(X, n_neighbors=20).dimension_pw_
    # GPT-2's first positions repeat across texts: neighbourhoods with duplicate vectors give
    # NaN, as scikit-dimension's do.
    assert np.isfinite(est).mean() > 0.9


def test_help_shows_the_cli_options():
    assert "--exclude-special" in lidscope.run.__doc__
    assert "--table" in lidscope.sql.__doc__
    assert "Returns the run's manifest" in lidscope.run.__doc__
