"""The golden fixtures through the Python API, at the fixtures' tolerances."""

import json

import numpy as np
import pytest

import lidscope
from conftest import assert_golden, matrix, read


@pytest.fixture(scope="module")
def mixture_small(fixtures):
    return read(fixtures / "mixture_small.parquet")


@pytest.mark.parametrize("k", [16, 64])
def test_twonn_fit_pw_mixture_small(mixture_small, k):
    X = matrix(mixture_small, "embedding")
    pw = lidscope.TwoNN(discard_fraction=0.1).fit_pw(X, n_neighbors=k).dimension_pw_
    assert pw.dtype == np.float64
    assert_golden(pw, mixture_small.column(f"lid_k{k}").to_numpy(), f"mixture_small lid_k{k}")


def test_twonn_mle_mixture_small(mixture_small):
    X = matrix(mixture_small, "embedding")
    assert_golden(lidscope.lid(X, 64, estimator="twonn-mle"), mixture_small.column("lid_mle_k64").to_numpy(), "mixture_small lid_mle_k64")


def test_global_twonn(fixtures, mixture_small):
    want = json.loads((fixtures / "mixture_small.json").read_text())["global_twonn"]
    got = lidscope.TwoNN().fit(matrix(mixture_small, "embedding")).dimension_
    assert abs(got - want) <= 1e-4 * abs(want), (got, want)


def test_mixture_wide(fixtures):
    t = read(fixtures / "mixture_wide.parquet")
    assert_golden(lidscope.TwoNN().fit_pw(matrix(t, "embedding"), n_neighbors=128).dimension_pw_, t.column("lid_k128").to_numpy(), "mixture_wide lid_k128")


@pytest.fixture(scope="module")
def minilm(fixtures):
    corpus = read(fixtures / "minilm_fortunes.parquet")
    golden = read(fixtures / "minilm_fortunes.golden.parquet")
    X = matrix(corpus, "hidden_L6")
    ids = corpus.column("seq_id").to_numpy() * 1_000_000 + corpus.column("position").to_numpy()
    in_ref = golden.column("in_reference").to_numpy(zero_copy_only=False)
    return X, ids, in_ref, golden


def test_minilm_against_its_reference(minilm, fixtures):
    """Every corpus row against the 4,000-row reference, each reference row left out of its own
    neighbourhood by identity."""
    X, ids, in_ref, golden = minilm
    got = lidscope.lid(X, 128, reference=X[in_ref], ids=ids, reference_ids=ids[in_ref])
    assert_golden(got, golden.column("lid_k128").to_numpy(), "minilm lid_k128")
    want = json.loads((fixtures / "minilm_fortunes.golden.json").read_text())["global_twonn_reference"]
    g = lidscope.TwoNN().fit(X[in_ref]).dimension_
    assert abs(g - want) <= 1e-4 * abs(want), (g, want)


LOCAL_034 = {
    "mle": lambda k, X: lidscope.MLE().fit(X, n_neighbors=k).dimension_pw_,
    "mle_unbiased": lambda k, X: lidscope.MLE(unbiased=True).fit(X, n_neighbors=k).dimension_pw_,
    "mom": lambda k, X: lidscope.MOM().fit(X, n_neighbors=k).dimension_pw_,
    "lpca_fo": lambda k, X: lidscope.lPCA(ver="FO").fit_pw(X, n_neighbors=k).dimension_pw_,
    "lpca_fan": lambda k, X: lidscope.lPCA(ver="Fan").fit_pw(X, n_neighbors=k).dimension_pw_,
    "lpca_ratio": lambda k, X: lidscope.lPCA(ver="ratio").fit_pw(X, n_neighbors=k).dimension_pw_,
    "lpca_participation_ratio": lambda k, X: lidscope.lPCA(ver="participation_ratio").fit_pw(X, n_neighbors=k).dimension_pw_,
    "lpca_kaiser": lambda k, X: lidscope.lPCA(ver="Kaiser").fit_pw(X, n_neighbors=k).dimension_pw_,
    "lpca_broken_stick": lambda k, X: lidscope.lPCA(ver="broken_stick").fit_pw(X, n_neighbors=k).dimension_pw_,
}
LOCAL_050 = {
    "twonn050": lambda k, X: lidscope.TwoNN(convention="0.5.0").fit_pw(X, n_neighbors=k).dimension_pw_,
    "tle": lambda k, X: lidscope.TLE().fit(X, n_neighbors=k).dimension_pw_,
}


def _tolerance(column):
    # The integer-valued lPCA versions agree exactly on at least 99.9% of rows.
    integer = column.startswith("lpca") and column != "lpca_participation_ratio"
    return 0.0 if integer else 1e-3


@pytest.mark.parametrize("version,table", [("034", LOCAL_034), ("050", LOCAL_050)])
def test_estimators_mixture_small(fixtures, mixture_small, version, table):
    golden = read(fixtures / "estimators" / f"mixture_small.estimators.{version}.parquet")
    # The golden rows are keyed by row_id; put them in the corpus's order.
    order = {r: i for i, r in enumerate(golden.column("row_id").to_pylist())}
    rows = np.array([order[r] for r in mixture_small.column("row_id").to_pylist()])
    X = matrix(mixture_small, "embedding")
    for k in (20, 64):
        for name, fit in table.items():
            assert_golden(fit(k, X), golden.column(f"{name}_k{k}").to_numpy()[rows], f"mixture_small {name}_k{k}", atol=_tolerance(name))


def test_estimators_minilm_one_search(minilm, fixtures):
    """lid() with a list of estimators: every column from one search against the reference."""
    X, ids, in_ref, _ = minilm
    golden = read(fixtures / "estimators" / "minilm_fortunes.estimators.034.parquet")
    gids = golden.column("seq_id").to_numpy() * 1_000_000 + golden.column("position").to_numpy()
    assert np.array_equal(gids, ids)
    names = {"mle": "mle", "mle-unbiased": "mle_unbiased", "mom": "mom", "lpca-fo": "lpca_fo", "lpca-pr": "lpca_participation_ratio"}
    got = lidscope.lid(X, 128, reference=X[in_ref], ids=ids, reference_ids=ids[in_ref], estimator=list(names))
    for est, col in names.items():
        assert_golden(got[est], golden.column(f"{col}_k128").to_numpy(), f"minilm {col}_k128", atol=_tolerance(col))
