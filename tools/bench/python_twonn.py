"""Pointwise TwoNN from Python, three ways on the same arrays, in one process:

- lidscope:        lidscope.TwoNN().fit_pw(X, n_neighbors=k)            (every core)
- scikit-dimension 0.3.4: skdim.id.TwoNN().fit_pw(X, n_neighbors=k, n_jobs=2)
- faiss + numpy:   faiss.IndexFlatL2 for the neighbours (every core), then TwoNN of each
                   neighbourhood with numpy (pairwise distances, r2/r1, the fit)

with numpy's sgemm rate measured beside them, and the float32 floor of the search (the
symmetric self-join: N^2 d + N k^2 d flops at that rate), as `lidscope bench` states it.

Usage (a venv with lidscope, scikit-dimension==0.3.4 and faiss-cpu):
    python tools/bench/python_twonn.py --fixtures ../shared/fixtures [--synthetic 60000x768] [--k 100]
        [--skip skdim] [--json out.json]
Data: the MiniLM fixture rows (13,192 x 384, real hidden states) and a synthetic set (a noisy
12-dimensional subspace, float32). scikit-dimension fails on duplicate rows (zero distances), so
it gets the distinct rows; lidscope and faiss get the same distinct rows.
"""

import argparse
import json
import os
import time

import numpy as np


def sgemm_gflops(n=4096, reps=3):
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def faiss_numpy_twonn(X, k, discard_fraction=0.1):
    import faiss

    index = faiss.IndexFlatL2(X.shape[1])
    index.add(X)
    _, idx = index.search(X, k + 1)
    out = np.empty(len(X))
    n_keep = int(k * (1 - discard_fraction))
    y = -np.log(1 - np.arange(n_keep) / k)
    for i in range(len(X)):
        nb = idx[i][idx[i] != i][:k]
        P = X[nb].astype(np.float64)
        sq = (P * P).sum(1)
        D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * P @ P.T, 0))
        np.fill_diagonal(D, np.inf)
        D.sort(axis=1)
        mu = np.sort(D[:, 1] / D[:, 0])[:n_keep]
        x = np.log(mu)
        out[i] = (x @ y) / (x @ x)
    return out


def synthetic(n, d, seed=7):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((12, d)).astype(np.float32)
    return (rng.standard_normal((n, 12), dtype=np.float32) @ basis + 0.01 * rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)


def minilm(fixtures):
    import pyarrow.parquet as pq

    col = pq.read_table(os.path.join(fixtures, "minilm_fortunes.parquet"), columns=["hidden_L6"]).column(0).combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), col.type.list_size)


def bench(name, X, k, skip, rate):
    import lidscope

    X = np.unique(X, axis=0)  # skdim 0.3.4 fails on duplicate rows
    X = np.ascontiguousarray(X[np.random.default_rng(3).permutation(len(X))])
    n, d = X.shape
    row = {"data": name, "rows": n, "dim": d, "k": k, "sgemm_gflops": rate}
    floor = (n * n * d + n * k * k * d) / (rate * 1e9)
    row["symmetric_floor_seconds"] = floor
    t = time.perf_counter()
    ours = lidscope.TwoNN().fit_pw(X, n_neighbors=k).dimension_pw_
    row["lidscope_seconds"] = time.perf_counter() - t
    print(f"{name} {n} x {d}, k = {k}: lidscope {row['lidscope_seconds']:.2f} s (floor {floor:.2f} s at {rate:.0f} GFLOP/s: {row['lidscope_seconds'] / floor:.2f}x)", flush=True)
    if "faiss" not in skip:
        t = time.perf_counter()
        theirs = faiss_numpy_twonn(X, k)
        row["faiss_numpy_seconds"] = time.perf_counter() - t
        row["faiss_numpy_max_abs_diff"] = float(np.nanmax(np.abs(theirs - ours)))
        print(f"  faiss + numpy {row['faiss_numpy_seconds']:.2f} s: lidscope takes {row['lidscope_seconds'] / row['faiss_numpy_seconds']:.3f} of it", flush=True)
    if "skdim" not in skip:
        import skdim

        t = time.perf_counter()
        ref = skdim.id.TwoNN().fit_pw(X, n_neighbors=k, n_jobs=2).dimension_pw_
        row["skdim_seconds"] = time.perf_counter() - t
        close = np.abs(ref - ours) <= 1e-3
        row["skdim_within_1e-3"] = float(close.mean())
        print(f"  skdim 0.3.4 (n_jobs=2) {row['skdim_seconds']:.2f} s: lidscope takes {row['lidscope_seconds'] / row['skdim_seconds']:.4f} of it; "
              f"{100 * close.mean():.2f}% of rows within 1e-3", flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixtures", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures"))
    p.add_argument("--synthetic", default="60000x768", help="ROWSxDIM of the synthetic set ('' to skip)")
    p.add_argument("--k", type=int, default=100, help="n_neighbors (skdim's default)")
    p.add_argument("--skip", action="append", default=[], choices=["skdim", "faiss"])
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    rate = sgemm_gflops()
    rows = [bench("minilm", minilm(a.fixtures), a.k, a.skip, rate)]
    if a.synthetic:
        n, d = (int(v) for v in a.synthetic.split("x"))
        rate = sgemm_gflops()
        rows.append(bench("synthetic", synthetic(n, d), a.k, a.skip, rate))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
