"""What the two-level self-join cannot skip on real hidden states (issue 22): a float64 numpy
replay of three ways to do less work, each measured before building it.

- Geometric pruning: rows grouped by a k-means clustering; a cluster whose ball (centroid,
  largest member distance) lies beyond a row's final k-th distance could be skipped whole, and a
  member whose distance to its centroid differs from the row's by more than that (the annulus
  bound) could be skipped alone. Reports the share of pairs each keeps.
- Scales per block of dimensions: the bytes' residual (what widens their window) with one scale
  per row, against one scale per row and block of dimensions, on the raw rows and on their
  principal components.
- The pass count of one scan: a row's threshold is its k-th upper bound so far, which changes
  about `k (1 + ln(N / k))` times in a scan whose order does not meet the neighbours first; with
  `F` the passes at the final threshold over `k` (the byte window's factor), the passes are about
  `k (1 + F ln(N / k))`, which `threshold_order.py` measures directly.

Usage: python tools/bench/pair_pruning.py ROWS.f32 [--dim 384] [--k 128] [--queries 300]
(ROWS.f32: the rows as little-endian float32, row-major, as for threshold_order.py.)
"""

import numpy as np

from threshold_order import distances, kmeans, replay_arguments, sampled


def residual_share(Y, cuts):
    """Median norm of the bytes' residual over the row's norm, one scale per row and block."""
    sq = np.zeros(len(Y))
    for a, b in zip(cuts[:-1], cuts[1:]):
        block = Y[:, a:b]
        s = np.abs(block).max(1, keepdims=True) / 127.0
        s[s == 0] = 1.0
        e = block - s * np.clip(np.rint(block / s), -127, 127)
        sq += (e * e).sum(1)
    return np.median(np.sqrt(sq) / np.linalg.norm(Y, axis=1))


def main():
    a = replay_arguments().parse_args()
    k = a.k
    X, rng, qs, exact, kth, lower = sampled(a)
    n = len(X)
    print(f"median k-th distance {np.median(kth):.4f}, median pair distance {np.median(exact[np.isfinite(exact)]):.4f}")

    for clusters in (120, 480, 2000):
        labels, cent = kmeans(X, clusters, rng)
        to_own = np.linalg.norm(X - cent[labels], axis=1)
        radius = np.zeros(clusters)
        np.maximum.at(radius, labels, to_own)
        size = np.bincount(labels, minlength=clusters)
        to_cent = distances(X[qs], cent)
        ball = ((to_cent - radius[None, :] <= kth[:, None]) * size[None, :]).sum(1) / n
        annulus = (np.abs(to_cent[:, labels] - to_own[None, :]) <= kth[:, None]).mean(1)
        print(f"{clusters} clusters at the final thresholds: the ball bound keeps {ball.mean():.1%} of pairs, the annulus bound {annulus.mean():.1%}")

    sample = X[rng.choice(n, min(n, 20000), replace=False)]
    w, V = np.linalg.eigh(sample.T @ sample)
    P = X @ V[:, ::-1]
    std = np.sqrt(np.maximum(w[::-1], 0.0))
    print(f"principal components' spread: the first {std[0] / np.median(std):.1f}x the median, the 64th {std[63] / np.median(std):.1f}x")
    print(f"bytes' residual / row norm, one scale per row: raw {residual_share(X, [0, a.dim]):.3%}, principal components {residual_share(P, [0, a.dim]):.3%}")
    for cuts in ([0, 96, 192, 288, a.dim], [0, 192, a.dim]):
        print(f"  per row and block {cuts}: raw {residual_share(X, cuts):.3%}")
    for cuts in ([0, 64, a.dim], [0, 32, 128, a.dim], [0, 16, 64, 192, a.dim]):
        print(f"  per row and block {cuts}: principal components {residual_share(P, cuts):.3%}")

    F = (lower <= kth[:, None]).sum(1).mean() / k
    print(f"passes at the final threshold: F = {F:.2f} k; one scan's passes by the record model, k (1 + F ln(N / k)): {k * (1 + F * np.log(n / k)):.0f} per row")


if __name__ == "__main__":
    main()
