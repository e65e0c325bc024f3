"""lidscope: local intrinsic dimension (LID) of embeddings, exact and on every core.

Arrays (numpy in, numpy out):

- `TwoNN`, `lPCA` (`fit`, `fit_pw`) and `MLE`, `MOM`, `TLE` (`fit`): scikit-dimension's names,
  arguments and attributes (`dimension_`, `dimension_pw_`), scikit-dimension's numbers;
- `lid(X, k)`: pointwise LID of every row (any of `ESTIMATORS`), against `X` itself or a reference;
- `knn(X, k)`: exact neighbour lists.

The command line's jobs (the same options, defaults and errors as `lidscope <command>`):

- `run(corpus, out, embedding_column=...)`: Parquet corpora to result tables; returns the manifest;
- `sql(query, tables={...})`: SQL over results, corpora and Arrow tables; returns a `pyarrow.Table`;
- `embed(model, texts, out, text_column=...)`: a checkpoint's per-token hidden states;
- `sweep(spec)`, `report(results, out)`.
"""

from . import _native
from ._arrays import knn, lid
from .estimators import MLE, MOM, TLE, TwoNN, lPCA
from .jobs import LidscopeWarning, embed, report, run, sql, sweep

__version__: str = _native.__version__
#: The names `lid(estimator=...)` takes (lPCA thresholds after a colon: "lpca-fo:alpha=0.1").
ESTIMATORS: tuple = tuple(_native.ESTIMATORS)

__all__ = [
    "ESTIMATORS",
    "LidscopeWarning",
    "MLE",
    "MOM",
    "TLE",
    "TwoNN",
    "embed",
    "knn",
    "lPCA",
    "lid",
    "report",
    "run",
    "sql",
    "sweep",
]
