"""Estimators with scikit-dimension's names, arguments and attributes.

`TwoNN` and `lPCA` are global estimators (`fit` on a whole set, `fit_pw` on each point's
neighbourhood); `MLE`, `MOM` and `TLE` are local ones (`fit` gives `dimension_pw_` and their
mean or median as `dimension_`), as in scikit-dimension 0.3.4. Neighbourhoods leave the point
itself out, as scikit-dimension's do; the search is exact and uses every core by default.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from . import _native
from ._convert import rows


def _smooth(pw: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """scikit-dimension's smoothing: each point's estimate averaged with its neighbours'."""
    return (pw + pw[neighbours].sum(axis=1)) / (neighbours.shape[1] + 1)


def _precomputed(knn: Any) -> np.ndarray:
    idx = np.asarray(knn)
    if idx.ndim != 2 or idx.dtype.kind not in "iu":
        raise TypeError(f"precomputed_knn: expected a 2-D array of row indices, got dtype {idx.dtype} and shape {idx.shape}")
    return np.ascontiguousarray(idx, dtype=np.int64)


class _Estimator:
    _name = ""

    def _estimator(self) -> str:
        return self._name

    def _pointwise(self, X: Any, precomputed_knn: Any, smooth: bool, n_neighbors: int, n_jobs: Optional[int]) -> None:
        x = rows(X, "X")
        if precomputed_knn is not None:
            idx = _precomputed(precomputed_knn)
            (pw,) = _native.lid_given_neighbours(x, idx, [self._estimator()], self._discard(), n_jobs=n_jobs)
        else:
            (pw,), idx = _native.lid(x, int(n_neighbors), [self._estimator()], self._discard(), n_jobs=n_jobs, neighbours=smooth)
        self.dimension_pw_ = pw
        if smooth:
            self.dimension_pw_smooth_ = _smooth(pw, idx)
        self.is_fitted_pw_ = True

    def _discard(self) -> float:
        return 0.1

    def transform_pw(self, X: Any = None) -> np.ndarray:
        """The pointwise estimates of the last `fit_pw` (or `fit` for local estimators)."""
        if not getattr(self, "is_fitted_pw_", False):
            raise AttributeError(f"{type(self).__name__}: no pointwise estimates yet (call fit_pw first)")
        if hasattr(self, "dimension_pw_smooth_"):
            return self.dimension_pw_, self.dimension_pw_smooth_
        return self.dimension_pw_

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict:
        return {}

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments (scikit-learn's protocol)."""
        return self._params()


class TwoNN(_Estimator):
    """TwoNN (Facco et al. 2017), least squares through the origin after discarding the largest
    `discard_fraction` of the ratios.

    `convention="0.3.4"` (the default) gives scikit-dimension 0.3.4's numbers, the paper's; `"0.5.0"`
    gives 0.5.0's (empirical CDF `(i + 1) / N`, ratios of duplicate points dropped).

    >>> import lidscope
    >>> est = lidscope.TwoNN(discard_fraction=0.1).fit_pw(X, n_neighbors=100)   # doctest: +SKIP
    >>> est.dimension_pw_                                                        # doctest: +SKIP
    """

    def __init__(self, discard_fraction: float = 0.1, convention: str = "0.3.4"):
        if convention not in ("0.3.4", "0.5.0"):
            raise ValueError(f'convention: {convention!r}: expected "0.3.4" (the paper\'s) or "0.5.0"')
        self.discard_fraction = discard_fraction
        self.convention = convention

    def _estimator(self) -> str:
        return "twonn" if self.convention == "0.3.4" else "twonn-v05"

    def _discard(self) -> float:
        return float(self.discard_fraction)

    def _params(self) -> dict:
        return {"discard_fraction": self.discard_fraction, "convention": self.convention}

    def fit(self, X: Any, y: Any = None, n_jobs: Optional[int] = None) -> "TwoNN":
        """The TwoNN of the whole set: `dimension_`."""
        self.dimension_ = _native.global_twonn(rows(X, "X"), float(self.discard_fraction), self.convention, n_jobs=n_jobs)
        self.is_fitted_ = True
        return self

    def fit_transform(self, X: Any, y: Any = None, n_jobs: Optional[int] = None) -> float:
        """`fit(X).dimension_`."""
        return self.fit(X, n_jobs=n_jobs).dimension_

    def transform(self, X: Any = None) -> float:
        """`dimension_` of the last `fit`."""
        if not getattr(self, "is_fitted_", False):
            raise AttributeError("TwoNN: not fitted yet (call fit first)")
        return self.dimension_

    def fit_pw(self, X: Any, precomputed_knn: Any = None, smooth: bool = False, n_neighbors: int = 100, n_jobs: Optional[int] = None) -> "TwoNN":
        """TwoNN of each point's `n_neighbors` nearest other points: `dimension_pw_` (and, with
        `smooth`, `dimension_pw_smooth_`: each estimate averaged with its neighbours'). With
        `precomputed_knn` (row indices, one row per point), those neighbourhoods instead.
        `n_jobs=None` uses every core; the result does not depend on it."""
        self._pointwise(X, precomputed_knn, smooth, n_neighbors, n_jobs)
        return self

    def fit_transform_pw(self, X: Any, precomputed_knn: Any = None, smooth: bool = False, n_neighbors: int = 100, n_jobs: Optional[int] = None):
        """`fit_pw(...)` then `transform_pw()`."""
        return self.fit_pw(X, precomputed_knn, smooth, n_neighbors, n_jobs).transform_pw()


class lPCA(_Estimator):
    """Local PCA on each point's neighbourhood (`fit_pw`), in scikit-dimension 0.3.4's versions:
    `ver` = "FO" (Fukunaga-Olsen, `alphaFO`), "Fan" (`alphaFan`, `betaFan`, `PFan`), "ratio"
    (`alphaRatio`), "participation_ratio", "Kaiser" or "broken_stick"; the explained variances of
    the neighbours (the point not among them), as `lPCA(fit_explained_variance=True)` of
    scikit-dimension on `sklearn.decomposition.PCA().fit(neighbours).explained_variance_`."""

    _VERSIONS = {"FO": "lpca-fo", "Fan": "lpca-fan", "ratio": "lpca-ratio", "participation_ratio": "lpca-pr", "Kaiser": "lpca-kaiser", "broken_stick": "lpca-broken-stick"}

    def __init__(self, ver: str = "FO", alphaRatio: float = 0.05, alphaFO: float = 0.05, alphaFan: float = 10, betaFan: float = 0.8, PFan: float = 0.95):
        if ver not in self._VERSIONS:
            raise ValueError(f"ver: {ver!r}: expected one of {', '.join(self._VERSIONS)}")
        self.ver, self.alphaRatio, self.alphaFO, self.alphaFan, self.betaFan, self.PFan = ver, alphaRatio, alphaFO, alphaFan, betaFan, PFan

    def _estimator(self) -> str:
        name = self._VERSIONS[self.ver]
        if self.ver == "FO":
            return f"{name}:alpha={self.alphaFO!r}"
        if self.ver == "ratio":
            return f"{name}:alpha={self.alphaRatio!r}"
        if self.ver == "Fan":
            return f"{name}:alpha={self.alphaFan!r}:beta={self.betaFan!r}:p={self.PFan!r}"
        return name

    def _params(self) -> dict:
        return {"ver": self.ver, "alphaRatio": self.alphaRatio, "alphaFO": self.alphaFO, "alphaFan": self.alphaFan, "betaFan": self.betaFan, "PFan": self.PFan}

    def fit_pw(self, X: Any, precomputed_knn: Any = None, smooth: bool = False, n_neighbors: int = 100, n_jobs: Optional[int] = None) -> "lPCA":
        """Local PCA of each point's `n_neighbors` nearest other points: `dimension_pw_`."""
        self._pointwise(X, precomputed_knn, smooth, n_neighbors, n_jobs)
        return self

    def fit_transform_pw(self, X: Any, precomputed_knn: Any = None, smooth: bool = False, n_neighbors: int = 100, n_jobs: Optional[int] = None):
        """`fit_pw(...)` then `transform_pw()`."""
        return self.fit_pw(X, precomputed_knn, smooth, n_neighbors, n_jobs).transform_pw()


class _Local(_Estimator):
    _N_NEIGHBORS = 20

    def fit(self, X: Any, y: Any = None, precomputed_knn_arrays: Any = None, smooth: bool = False, n_neighbors: Optional[int] = None, comb: str = "mean", n_jobs: Optional[int] = None):
        """Each point's estimate from its `n_neighbors` nearest other points (`dimension_pw_`), and
        their `comb` ("mean" or "median") as `dimension_`. `precomputed_knn_arrays` =
        `(distances, indices)` gives the neighbourhoods instead (their indices are used; the
        distances are recomputed exactly)."""
        if comb not in ("mean", "median"):
            raise ValueError("Invalid comb parameter. It has to be 'mean' or 'median'")
        knn = None
        if precomputed_knn_arrays is not None:
            _, knn = precomputed_knn_arrays
        k = self._N_NEIGHBORS if n_neighbors is None else int(n_neighbors)
        if knn is None and k >= len(X):
            warnings.warn("n_neighbors >= len(X), setting n_neighbors = len(X)-1")
            k = len(X) - 1
        self._pointwise(X, knn, smooth, k, n_jobs)
        self.n_neighbors = k if knn is None else np.asarray(knn).shape[1]
        self.comb = comb
        self.dimension_ = float(np.mean(self.dimension_pw_) if comb == "mean" else np.median(self.dimension_pw_))
        self.is_fitted_ = True
        return self

    def fit_transform(self, X: Any, y: Any = None, **kwargs) -> float:
        """`fit(X, ...).dimension_`."""
        return self.fit(X, **kwargs).dimension_

    def transform(self, X: Any = None) -> float:
        """`dimension_` of the last `fit`."""
        if not getattr(self, "is_fitted_", False):
            raise AttributeError(f"{type(self).__name__}: not fitted yet (call fit first)")
        return self.dimension_

    def fit_transform_pw(self, X: Any, **kwargs):
        """`fit(X, ...)` then `transform_pw()`."""
        return self.fit(X, **kwargs).transform_pw()


class MLE(_Local):
    """Levina-Bickel maximum likelihood, scikit-dimension 0.3.4's `MLE()` (Haro's form without
    noise): `(k - 1) / sum_j ln(T_k / T_j)`; `unbiased=True` puts `k - 2` in the numerator."""

    def __init__(self, unbiased: bool = False):
        self.unbiased = unbiased

    def _estimator(self) -> str:
        return "mle-unbiased" if self.unbiased else "mle"

    def _params(self) -> dict:
        return {"unbiased": self.unbiased}


class MOM(_Local):
    """Method of moments, scikit-dimension 0.3.4's `MOM()`: `-m1 / (m1 - T_k)`."""

    _name = "mom"


class TLE(_Local):
    """Tight local estimator, scikit-dimension 0.5.0's `TLE()` (epsilon 1e-4; 0.3.4's has an
    indexing bug)."""

    _name = "tle"
