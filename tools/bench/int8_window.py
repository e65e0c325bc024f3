"""Why real hidden states need more int8 candidates than synthetic rows (issue 22, direction 1).

For a sample of queries against a reference (the query left out), this reproduces the int8
candidate test of `kernel::knn::int8` in float64 numpy: rows centred on the reference mean, one
scale per row (max |x| / 127), bytes in [-127, 127], the residual's norm rho; the distance D of the
dequantized rows bounds the true one within D -+ (rho_q + rho_r). A row is a candidate while its
lower bound is within the k-th smallest upper bound. It reports, per data set:

- extra: candidates beyond k, as a fraction of k (the probe's figure; the search re-ranks them all);
- rho / d_k: the residual norm against the k-th distance (how wide the window is);
- (d_2k - d_k) / d_k: how close together the distances beyond the k-th lie;
- the same extra with a second int8 level on the residual (the residual quantized again, its own
  scale, so the bound is the second residual's norm): what a two-level test would leave.

Usage: python tools/bench/int8_window.py --fixtures ../shared/fixtures [--queries 256] [--k 128]
"""

import argparse
import os

import numpy as np


def quantize(x):
    """Per-row int8 quantization: (dequantized rows, residual norms)."""
    scale = np.abs(x).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(x / scale), -127, 127) * scale
    return q, np.linalg.norm(x - q, axis=1)


def distances(A, B):
    """Euclidean distances of the rows of A to the rows of B, float64 (centred data: no digits lost
    that a candidate count could see)."""
    sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.sqrt(np.maximum(sq, 0.0))


def candidates(dq, rho_q, rho_r, k):
    """Candidates per query: rows whose lower bound is within the k-th smallest upper bound."""
    lower = dq - (rho_q[:, None] + rho_r[None, :])
    upper = dq + (rho_q[:, None] + rho_r[None, :])
    kth = np.partition(upper, k - 1, axis=1)[:, k - 1]
    return (lower <= kth[:, None]).sum(axis=1)


def analyse(name, X, queries, k, rng):
    X = X.astype(np.float64)
    X = X - X.mean(axis=0)
    qi = rng.choice(len(X), size=min(queries, len(X)), replace=False)
    Q = X[qi]
    exact = distances(Q, X)
    exact[np.arange(len(qi)), qi] = np.inf  # the query is left out
    order = np.sort(exact, axis=1)
    dk, d2k = order[:, k - 1], order[:, 2 * k - 1]
    # level 1
    xq, rho = quantize(X)
    D1 = distances(xq[qi], xq)
    D1[np.arange(len(qi)), qi] = np.inf
    c1 = candidates(D1, rho[qi], rho, k)
    # level 2: the residual quantized again
    r = X - xq
    rq, rho2 = quantize(r)
    x2 = xq + rq
    D2 = distances(x2[qi], x2)
    D2[np.arange(len(qi)), qi] = np.inf
    c2 = candidates(D2, rho2[qi], rho2, k)
    med = lambda v: float(np.median(v))
    print(f"{name}: {X.shape[0]} x {X.shape[1]}, k = {k}, {len(qi)} queries")
    print(f"  rho / |x| median {med(rho / np.linalg.norm(X, axis=1)):.4f}; rho / d_k median {med(rho[qi] / dk):.4f}; (d_2k - d_k) / d_k median {med((d2k - dk) / dk):.4f}")
    print(f"  int8, one level: extra candidates {np.mean(c1 - k) / k:.2f} k (median {med(c1 - k) / k:.2f} k)")
    print(f"  int8, two levels: extra candidates {np.mean(c2 - k) / k:.3f} k (median {med(c2 - k) / k:.3f} k); rho2 / rho median {med(rho2 / rho):.4f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixtures", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures"))
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--k", type=int, default=128)
    a = p.parse_args()
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    col = pq.read_table(os.path.join(a.fixtures, "minilm_fortunes.parquet"), columns=["hidden_L6"]).column(0).combine_chunks()
    minilm = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
    analyse("MiniLM last layer (real)", minilm, a.queries, a.k, rng)
    # A synthetic set of the same size: a curved 10-dimensional manifold far from the origin.
    n, d = minilm.shape
    t = rng.uniform(-1, 1, (n, 10))
    basis = rng.standard_normal((20, d))
    synth = np.concatenate([t, np.sin(3 * t)], axis=1) @ basis + 5.0 + 0.01 * rng.standard_normal((n, d))
    analyse("synthetic, curved 10-d manifold", synth.astype(np.float32), a.queries, a.k, rng)


if __name__ == "__main__":
    main()
