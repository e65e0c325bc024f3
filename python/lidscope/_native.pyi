"""Type stubs of the native module (the Python layer's functions are the public API)."""

from typing import Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

__version__: str
ESTIMATORS: List[str]

def lid(
    x: npt.NDArray[np.float32],
    k: int,
    estimators: List[str],
    discard_fraction: float,
    reference: Optional[npt.NDArray[np.float32]] = None,
    ids: Optional[npt.NDArray[np.int64]] = None,
    reference_ids: Optional[npt.NDArray[np.int64]] = None,
    n_jobs: Optional[int] = None,
    neighbours: bool = False,
) -> Tuple[List[npt.NDArray[np.float64]], Optional[npt.NDArray[np.int64]]]: ...
def lid_given_neighbours(
    x: npt.NDArray[np.float32],
    indices: npt.NDArray[np.int64],
    estimators: List[str],
    discard_fraction: float,
    n_jobs: Optional[int] = None,
) -> List[npt.NDArray[np.float64]]: ...
def knn(
    x: npt.NDArray[np.float32],
    k: int,
    reference: Optional[npt.NDArray[np.float32]] = None,
    ids: Optional[npt.NDArray[np.int64]] = None,
    reference_ids: Optional[npt.NDArray[np.int64]] = None,
    n_jobs: Optional[int] = None,
) -> Tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]: ...
def global_twonn(x: npt.NDArray[np.float32], discard_fraction: float, convention: str, n_jobs: Optional[int] = None) -> float: ...
def run(argv: List[str]) -> Tuple[str, List[str]]: ...
def embed(argv: List[str]) -> str: ...
def main(argv: List[str]) -> None: ...
def sql(query: str, tables: Dict[str, object]) -> object: ...
def command_help(name: str) -> str: ...
