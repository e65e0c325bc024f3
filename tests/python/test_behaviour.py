"""Bad input, threads, the GIL and copies."""

import threading
import time
import tracemalloc

import numpy as np
import pytest

import lidscope
from lidscope._convert import rows


def cloud(n=3000, d=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 6)) @ rng.standard_normal((6, d))).astype(np.float32) + 50.0


# --- bad input: ValueError / TypeError with the CLI's message, never a crash -----------------

def test_nan_names_row_and_element():
    X = cloud(200)
    X[17, 5] = np.nan
    with pytest.raises(ValueError, match=r"X: row 17: non-finite value at element 5"):
        lidscope.lid(X, 10)
    R = cloud(300, seed=1)
    R[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"reference: row 3: non-finite value at element 2"):
        lidscope.lid(cloud(50), 10, reference=R)


def test_shapes_and_types():
    with pytest.raises(ValueError, match=r"X: expected a 2-D array"):
        lidscope.lid(np.zeros(10, dtype=np.float32), 3)
    with pytest.raises(ValueError, match=r"reference: rows of 8 values, X has 24"):
        lidscope.lid(cloud(50), 5, reference=cloud(100, d=8))
    with pytest.raises(TypeError, match=r"X: expected numbers"):
        lidscope.lid(np.array([["a", "b"], ["c", "d"]]), 3)
    with pytest.raises(ValueError, match=r"X: no rows"):
        lidscope.lid(np.zeros((0, 4), dtype=np.float32), 3)


def test_k_too_large_for_the_reference():
    with pytest.raises(ValueError, match=r"too few reference rows: 40 rows cannot give 40 neighbours .*need at least 41"):
        lidscope.lid(cloud(40), 40)
    with pytest.raises(ValueError, match=r"reference: too few reference rows: 30 rows cannot give 50"):
        lidscope.lid(cloud(10), 50, reference=cloud(30))
    with pytest.raises(ValueError, match=r"k = 2 is too small"):
        lidscope.lid(cloud(40), 2)


def test_identities():
    X, R = cloud(100), cloud(200, seed=3)
    with pytest.raises(ValueError, match=r"reference_ids: identity 7 is given to rows 0 and 1"):
        lidscope.lid(X, 10, reference=R, ids=np.arange(100), reference_ids=np.r_[7, 7, np.arange(198)])
    with pytest.raises(ValueError, match=r"go together"):
        lidscope.lid(X, 10, reference=R, ids=np.arange(100))
    with pytest.raises(ValueError, match=r"ids: 3 values for 100 rows"):
        lidscope.lid(X, 10, reference=R, ids=np.arange(3), reference_ids=np.arange(200))
    with pytest.raises(TypeError, match=r"ids: expected a 1-D array of integers"):
        lidscope.lid(X, 10, reference=R, ids=np.arange(100) + 0.5, reference_ids=np.arange(200))


def test_identity_leaves_a_row_out_of_its_own_neighbourhood():
    """X inside its reference: by identity, the same as X as its own reference."""
    X = cloud(800)
    own = lidscope.lid(X, 20)
    ids = np.arange(800) * 3
    by_id = lidscope.lid(X, 20, reference=X.copy(), ids=ids, reference_ids=ids)
    assert np.array_equal(own, by_id)
    # Without identities each row finds itself at distance 0.
    d, i = lidscope.knn(X[:5], 1, reference=X)
    assert np.array_equal(i[:, 0], np.arange(5)) and np.all(d == 0)


def test_unknown_estimator_and_parameters():
    with pytest.raises(ValueError, match=r"estimator: .*unknown"):
        lidscope.lid(cloud(100), 10, estimator="nope")
    with pytest.raises(ValueError, match=r"discard"):
        lidscope.lid(cloud(100), 10, discard_fraction=1.5)
    with pytest.raises(ValueError, match=r"n_jobs"):
        lidscope.lid(cloud(100), 10, n_jobs=0)


# --- threads, determinism, the GIL ---------------------------------------------------------

def test_same_bits_for_every_thread_count():
    X = cloud(4000, d=32)
    runs = [lidscope.lid(X, 50, estimator=["twonn", "mle", "lpca-fo"], n_jobs=n) for n in (1, 2, 3, None)]
    for r in runs[1:]:
        for name in r:
            assert np.array_equal(r[name].view(np.uint64), runs[0][name].view(np.uint64)), name
    a = lidscope.TwoNN().fit_pw(X, n_neighbors=30, n_jobs=1).dimension_pw_
    b = lidscope.TwoNN().fit_pw(X, n_neighbors=30, n_jobs=2).dimension_pw_
    assert np.array_equal(a, b)


def test_gil_is_released_during_a_call():
    X = cloud(20000, d=64)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    time.sleep(0.05)
    start = time.perf_counter()
    lidscope.lid(X, 64)
    end = time.perf_counter()
    stop.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    assert end - start > 0.2, "the call was too short to tell"
    # A thread that cannot get the GIL makes no progress; this one ticked throughout.
    assert len(during) >= 20, f"{len(during)} ticks in {end - start:.2f} s"


# --- copies --------------------------------------------------------------------------------

def test_float32_c_order_is_borrowed():
    X = cloud(5000, d=64)
    assert rows(X) is X
    tracemalloc.start()
    lidscope.lid(X, 16)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # numpy reports its allocations to tracemalloc: no copy of X (1.3 MB) was made on this side;
    # what is traced is the result (40 kB) and Python's small objects.
    assert peak < X.nbytes / 4, f"{peak} bytes traced during the call, X is {X.nbytes}"


def test_other_layouts_are_converted_once():
    X = cloud(600, d=16)
    want = lidscope.lid(X, 12)
    for variant in (X.astype(np.float64), X.astype(np.float16).astype(np.float64), np.asfortranarray(X), X[:, ::1].T.copy().T):
        r = rows(variant)
        assert r.dtype == np.float32 and r.flags.c_contiguous
    assert np.array_equal(lidscope.lid(X.astype(np.float64), 12), want)
    assert np.array_equal(lidscope.lid(np.asfortranarray(X), 12), want)
    wide = np.zeros((600, 32), dtype=np.float32)
    wide[:, ::2] = X
    assert np.array_equal(lidscope.lid(wide[:, ::2], 12), want)


def test_arrow_columns():
    import pyarrow as pa
    import polars as pl

    X = cloud(500, d=8)
    col = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), 8)
    want = lidscope.lid(X, 10)
    assert np.array_equal(lidscope.lid(col, 10), want)
    assert np.array_equal(lidscope.lid(pa.chunked_array([col[:200], col[200:]]), 10), want)
    assert np.array_equal(lidscope.lid(pl.Series("e", X, dtype=pl.Array(pl.Float32, 8)), 10), want)
    with pytest.raises(ValueError, match=r"X: row 1 is null"):
        lidscope.lid(pa.array([list(X[0]), None, list(X[2])], type=pa.list_(pa.float32(), 8)), 1)


def test_smooth_and_precomputed_knn():
    X = cloud(1500)
    est = lidscope.TwoNN().fit_pw(X, n_neighbors=25, smooth=True)
    d, idx = lidscope.knn(X, 25)
    pw = est.dimension_pw_
    want = np.array([np.mean(np.append(pw[i], pw[idx[i]])) for i in range(len(X))])
    assert np.allclose(est.dimension_pw_smooth_, want, rtol=1e-12)
    # Neighbourhoods given by index, in any order, give the same estimates.
    shuffled = np.random.default_rng(1).permuted(idx, axis=1)
    again = lidscope.TwoNN().fit_pw(X, precomputed_knn=shuffled).dimension_pw_
    assert np.array_equal(again, pw)
    mle = lidscope.MLE().fit(X, precomputed_knn_arrays=(d, idx)).dimension_pw_
    assert np.allclose(mle, lidscope.MLE().fit(X, n_neighbors=25).dimension_pw_, rtol=1e-12)


def test_docstring_examples_run():
    import doctest

    import lidscope._arrays
    import lidscope.estimators

    for module in (lidscope._arrays, lidscope.estimators):
        failed, tried = doctest.testmod(module)
        assert failed == 0, f"{module.__name__}: {failed} of {tried} examples failed"
