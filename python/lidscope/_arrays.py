"""`lid` and `knn` on arrays."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._convert import identities, rows


def _names(estimator: Union[str, Sequence[str]]) -> list:
    if isinstance(estimator, str):
        return [estimator]
    names = list(estimator)
    if not all(isinstance(n, str) for n in names):
        raise TypeError("estimator: expected a name or a list of names")
    return names


def lid(
    X: Any,
    k: int = 128,
    *,
    reference: Any = None,
    ids: Any = None,
    reference_ids: Any = None,
    estimator: Union[str, Sequence[str]] = "twonn",
    discard_fraction: float = 0.1,
    n_jobs: Optional[int] = None,
) -> Union[np.ndarray, Dict[str, np.ndarray]]:
    """Local intrinsic dimension of every row of `X`, from its `k` nearest reference rows.

    Without `reference`, `X` is its own reference and every row is left out of its own
    neighbourhood (scikit-dimension's `fit_pw`). With `reference`, a row of `X` whose `ids` value
    equals a `reference_ids` value (integers) is left out of its own neighbourhood, as the CLI's
    `--id-columns` do; rows without a match use all `k` nearest reference rows.

    `estimator` names one of `lidscope.ESTIMATORS` (`"twonn"`: the paper's, scikit-dimension
    0.3.4's TwoNN; `"twonn-v05"`, `"mle"`, `"mom"`, `"tle"`, `"lpca-fo"`, ...): the result is a
    float64 array of `len(X)` values. A list of names gives a dict of such arrays, all from one
    neighbour search.

    The search is exact (the neighbours of a float64 brute force, ties to the lower row) and the
    result the same bits for every `n_jobs` (None or -1: every core). float32 C-contiguous input
    is read in place; other input is converted to float32 once. The GIL is released meanwhile.

    Raises ValueError for NaN or infinite values (naming row and element), mismatched dimensions,
    `k` too large for the reference, and bad parameters; TypeError for input that is not numeric.

    >>> import numpy as np, lidscope
    >>> t = np.random.default_rng(0).uniform(0, 2 * np.pi, 2000)
    >>> circle = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], axis=1)
    >>> lids = lidscope.lid(circle, k=20)      # a one-dimensional set
    >>> bool(abs(lids.mean() - 1.0) < 0.15)
    True
    """
    names = _names(estimator)
    x = rows(X, "X")
    ref = None if reference is None else rows(reference, "reference")
    columns, _ = _native.lid(
        x, int(k), names, float(discard_fraction),
        reference=ref, ids=identities(ids, "ids"), reference_ids=identities(reference_ids, "reference_ids"),
        n_jobs=n_jobs,
    )
    if isinstance(estimator, str):
        return columns[0]
    return dict(zip(names, columns))


def knn(
    X: Any,
    k: int,
    reference: Any = None,
    *,
    ids: Any = None,
    reference_ids: Any = None,
    n_jobs: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """The `k` nearest reference rows of every row of `X`: `(distances, indices)`, both of shape
    `(len(X), k)`, nearest first, ties to the lower row; distances exact in float64 (Euclidean).

    Without `reference`, `X` is its own reference and each row is left out of its own list
    (scikit-learn's `NearestNeighbors().kneighbors()` without arguments); `ids`/`reference_ids`
    as in `lid`.
    """
    x = rows(X, "X")
    ref = None if reference is None else rows(reference, "reference")
    return _native.knn(x, int(k), reference=ref, ids=identities(ids, "ids"), reference_ids=identities(reference_ids, "reference_ids"), n_jobs=n_jobs)
