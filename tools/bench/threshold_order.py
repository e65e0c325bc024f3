"""How much a better scan order or a seeded threshold could save the two-level self-join
(issue 22): a float64 numpy replay of the byte prefilter on real hidden states.

A pair passes the bytes' prefilter while its lower bound (the int8 distance less both rows'
residuals) is within the row's current threshold; every pass costs a sixteen-bit product, an
offer and its share of the list's selections. The threshold falls as the scan meets nearer rows,
so what passes depends on the order rows are met in. For a sample of rows this reports the
passes per row:

- at the final threshold (the exact k-th distance), and at 1% and 3% above it: how sensitive the
  count is to the threshold on real rows;
- in the self-join's order (blocks of 480 rows, the row's own block first, then by index), in a
  random order, and with the rows ordered by a k-means clustering and each row meeting the
  blocks nearest its own first (by centroid);
- with a seed threshold from the members of the P clusters nearest each row (an IVF-style first
  pass): the seed against the final threshold, the share of rows such a pass reads, and the
  passes at the seed.

Usage: python tools/bench/threshold_order.py ROWS.f32 [--dim 384] [--k 128] [--clusters 120,480]
(ROWS.f32: the rows as little-endian float32, row-major; e.g. `hidden_L6` of `lidscope embed`'s
output written out with pyarrow.)
"""

import argparse
import time

import numpy as np

BLOCK = 480  # rows per self-join block (10 panels of 48)


def distances(A, B):
    sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.sqrt(np.maximum(sq, 0.0))


def kmeans(X, clusters, rng, iterations=8, sample=20000):
    """Lloyd's iterations on a sample, then every row assigned: (labels, centroids)."""
    sub = X[rng.choice(len(X), min(len(X), sample), replace=False)]
    cent = sub[rng.choice(len(sub), clusters, replace=False)].copy()
    for _ in range(iterations):
        a = np.argmin((cent * cent).sum(1)[None, :] - 2.0 * sub @ cent.T, axis=1)
        for c in range(clusters):
            m = a == c
            if m.any():
                cent[c] = sub[m].mean(0)
    return np.argmin((cent * cent).sum(1)[None, :] - 2.0 * X @ cent.T, axis=1), cent


def replay_arguments():
    """The arguments of the replays here: the rows, their dimension, k and the rows sampled."""
    ap = argparse.ArgumentParser()
    ap.add_argument("rows")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--queries", type=int, default=300)
    return ap


def sampled(a):
    """The centred rows, the replay's random generator, the sampled rows, their exact distances
    to every row (their own left out), their k-th distances, and the bytes' lower bounds on the
    same distances (the int8 distance less both rows' residuals)."""
    X = np.fromfile(a.rows, dtype=np.float32).reshape(-1, a.dim).astype(np.float64)
    X -= X.mean(0)
    rng = np.random.default_rng(1)
    scale = np.abs(X).max(1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    xq = np.clip(np.rint(X / scale), -127, 127) * scale
    rho = np.linalg.norm(X - xq, axis=1)
    qs = rng.choice(len(X), a.queries, replace=False)
    exact = distances(X[qs], X)
    exact[np.arange(len(qs)), qs] = np.inf
    lower = distances(xq[qs], xq) - (rho[qs][:, None] + rho[None, :])
    lower[np.arange(len(qs)), qs] = np.inf
    kth = np.partition(exact, a.k - 1, axis=1)[:, a.k - 1]
    return X, rng, qs, exact, kth, lower


def main():
    ap = replay_arguments()
    ap.add_argument("--clusters", default="120,480")
    a = ap.parse_args()
    k = a.k
    X, rng, qs, exact, kth, lower = sampled(a)
    n = len(X)
    for f in (1.0, 1.01, 1.03):
        print(f"passes per row at {f:.2f} x the final threshold: {(lower <= (f * kth)[:, None]).sum(1).mean():.0f}")

    def scan(perm, nearest_first, label):
        nb = (n + BLOCK - 1) // BLOCK
        block_of = np.empty(n, int)
        block_of[perm] = np.arange(n) // BLOCK
        cent = np.array([X[perm[b * BLOCK:(b + 1) * BLOCK]].mean(0) for b in range(nb)])
        total = 0
        for r, q in enumerate(qs):
            b = block_of[q]
            if nearest_first:
                order = np.argsort(((cent - cent[b]) ** 2).sum(1), kind="stable")
            else:
                order = [b] + [x for x in range(nb) if x != b]
            best, t = np.full(k, np.inf), np.inf
            for s in order:
                idx = perm[s * BLOCK:(s + 1) * BLOCK]
                total += (lower[r, idx] <= t).sum()
                best = np.partition(np.concatenate([best, exact[r, idx]]), k - 1)[:k]
                t = best.max()
        print(f"{label}: {total / len(qs):.0f} passes per row")

    scan(np.arange(n), False, "self-join order (own block, then by index)")
    scan(rng.permutation(n), False, "random order")
    for clusters in (int(c) for c in a.clusters.split(",")):
        t0 = time.time()
        labels, cent = kmeans(X, clusters, rng)
        # Clusters in a greedy nearest-neighbour chain, so that neighbouring blocks are near.
        cd = ((cent[:, None, :] - cent[None, :, :]) ** 2).sum(2)
        chain, left = [0], set(range(1, clusters))
        while left:
            rest = np.array(sorted(left))
            nxt = rest[np.argmin(cd[chain[-1], rest])]
            chain.append(nxt)
            left.remove(nxt)
        rank = np.empty(clusters, int)
        rank[chain] = np.arange(clusters)
        scan(np.argsort(rank[labels], kind="stable"), True, f"k-means order ({clusters} clusters, {time.time() - t0:.0f} s), nearest blocks first")
        near = np.argsort((cent * cent).sum(1)[None, :] - 2.0 * X[qs] @ cent.T, axis=1)
        for probes in (4, 16):
            ratios, read = [], []
            for r, q in enumerate(qs):
                member = np.isin(labels, near[r, :probes])
                member[q] = False
                read.append(member.sum())
                d = exact[r][member]
                ratios.append(np.partition(d, k - 1)[k - 1] / kth[r] if len(d) >= k else np.inf)
            ratios = np.array(ratios)
            passes = (lower <= (kth * ratios)[:, None]).sum(1).mean()
            print(
                f"seed from the {probes} nearest of {clusters} clusters: reads {np.mean(read) / n:.1%} of the rows, "
                f"seed / final median {np.median(ratios):.4f}, 90th percentile {np.quantile(ratios, 0.9):.4f}, {passes:.0f} passes per row at the seed"
            )


if __name__ == "__main__":
    main()
