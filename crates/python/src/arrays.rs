//! The kernel on numpy arrays: pointwise estimates, neighbour lists and the global TwoNN.
//!
//! Every function borrows its float32 C-order inputs (the Python layer converts anything else
//! once), checks them with the kernel's own messages prefixed by the argument's name, and runs
//! without the GIL on a pool of `n_jobs` threads. The kernel's sums run in a fixed order, so the
//! results are the same bits for every `n_jobs`.

use std::collections::HashMap;

use lidscope_kernel::{
    estimates_from_neighbours, global_twonn_v05, Estimator, KernelError, KnnIndex, LocalEstimator, Neighbours, Rows, SearchStrategy,
};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A kernel error about the argument `name`, as Python's `ValueError`.
pub(crate) fn value_error(name: &str, e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{name}: {e}"))
}

/// The rows of a borrowed 2-D float32 array.
fn rows<'a>(name: &str, a: &'a PyReadonlyArray2<'_, f32>) -> PyResult<Rows<'a>> {
    let (n, dim) = (a.shape()[0], a.shape()[1]);
    let data = a.as_slice().map_err(|_| value_error(name, "not a C-contiguous array (convert it with numpy.ascontiguousarray)"))?;
    if n == 0 {
        return Err(value_error(name, "no rows"));
    }
    if dim == 0 {
        return Err(value_error(name, "rows of no values"));
    }
    Rows::try_new(data, n, dim).map_err(|e| value_error(name, e))
}

/// Runs `f` on a rayon pool of `n_jobs` threads (`None` or -1: every core, the global pool).
fn on_pool<T: Send>(n_jobs: Option<i64>, f: impl FnOnce() -> T + Send) -> PyResult<T> {
    match n_jobs {
        None | Some(-1) => Ok(f()),
        Some(n) if n >= 1 => {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n as usize).build().map_err(|e| value_error("n_jobs", e))?;
            Ok(pool.install(f))
        }
        Some(n) => Err(value_error("n_jobs", format!("{n} threads: give a positive number, or None or -1 for every core"))),
    }
}

/// The reference index and which reference row each query must leave out.
struct Search<'a> {
    index: KnnIndex,
    queries: Rows<'a>,
    /// `None`: the queries are the reference itself (every row leaves itself out).
    exclude: Option<Vec<Option<u32>>>,
}

impl Search<'_> {
    fn is_self(&self) -> bool {
        self.exclude.is_none()
    }

    /// The `k` nearest reference rows of every query, with all `k` distances (the self-join
    /// when the queries are the reference).
    fn knn(&self, k: usize) -> Result<Neighbours, KernelError> {
        match &self.exclude {
            None => self.index.self_knn(k).map(|r| r.0),
            Some(ex) => self.index.knn(self.queries, k, Some(ex)).map(|r| r.0),
        }
    }
}

/// Pairs `ids` with `reference_ids`: query `i` leaves out the reference row whose identity
/// equals `ids[i]`.
fn exclusions(ids: &[i64], reference_ids: &[i64], queries: usize, references: usize) -> PyResult<Vec<Option<u32>>> {
    if ids.len() != queries {
        return Err(value_error("ids", format!("{} values for {queries} rows of X", ids.len())));
    }
    if reference_ids.len() != references {
        return Err(value_error("reference_ids", format!("{} values for {references} reference rows", reference_ids.len())));
    }
    let mut by_id: HashMap<i64, u32> = HashMap::with_capacity(references);
    for (row, id) in reference_ids.iter().enumerate() {
        if let Some(first) = by_id.insert(*id, row as u32) {
            return Err(value_error("reference_ids", format!("identity {id} is given to rows {first} and {row}: identities must be unique")));
        }
    }
    Ok(ids.iter().map(|id| by_id.get(id).copied()).collect())
}

fn search<'a>(
    x: &'a PyReadonlyArray2<'_, f32>,
    reference: Option<&'a PyReadonlyArray2<'_, f32>>,
    ids: Option<&PyReadonlyArray1<'_, i64>>,
    reference_ids: Option<&PyReadonlyArray1<'_, i64>>,
) -> PyResult<Search<'a>> {
    let queries = rows("X", x)?;
    let reference_rows = match reference {
        Some(r) => rows("reference", r)?,
        None => queries,
    };
    if reference_rows.dim() != queries.dim() {
        return Err(value_error("reference", format!("rows of {} values, X has {}: the dimensions must match", reference_rows.dim(), queries.dim())));
    }
    let exclude = match (reference.is_some(), ids, reference_ids) {
        (false, None, None) => None,
        (false, _, _) => return Err(value_error("ids", "ids and reference_ids name rows of a separate reference: give reference= too (X as its own reference leaves every row out of its own neighbourhood)")),
        (true, None, None) => Some(vec![None; queries.len()]),
        (true, Some(i), Some(r)) => {
            let (i, r) = (slice("ids", i)?, slice("reference_ids", r)?);
            Some(exclusions(i, r, queries.len(), reference_rows.len())?)
        }
        (true, _, _) => return Err(value_error("ids", "ids and reference_ids go together: give both or neither")),
    };
    let name = if reference.is_some() { "reference" } else { "X" };
    // The queries are checked by the search itself (its errors name X).
    reference_rows.check_finite().map_err(|e| value_error(name, e))?;
    let index = KnnIndex::new(reference_rows, SearchStrategy::Auto).map_err(|e| value_error(name, e))?;
    Ok(Search { index, queries, exclude })
}

fn slice<'a>(name: &str, a: &'a PyReadonlyArray1<'_, i64>) -> PyResult<&'a [i64]> {
    a.as_slice().map_err(|_| value_error(name, "not a contiguous array"))
}

fn parse_estimators(names: &[String]) -> PyResult<Vec<LocalEstimator>> {
    lidscope_kernel::parse_estimators(&names.join(",")).map_err(|e| value_error("estimator", e))
}

/// The `k` check the CLI makes, with the same message: too few reference rows for `k`.
fn check_k(s: &Search<'_>, k: usize) -> PyResult<()> {
    let needed = if s.is_self() { k + 1 } else { k };
    if s.index.len() < needed {
        let e = KernelError::TooFewPoints { n: s.index.len(), k, needed };
        return Err(value_error(if s.is_self() { "X" } else { "reference" }, e));
    }
    Ok(())
}

/// Pointwise estimates of every row of `X`: one float64 array per estimator, in the order asked
/// for, and, with `neighbours=True`, each row's `k` neighbours (reference rows, nearest first).
#[pyfunction]
#[pyo3(signature = (x, k, estimators, discard_fraction, reference=None, ids=None, reference_ids=None, n_jobs=None, neighbours=false))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn lid<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    k: usize,
    estimators: Vec<String>,
    discard_fraction: f64,
    reference: Option<PyReadonlyArray2<'py, f32>>,
    ids: Option<PyReadonlyArray1<'py, i64>>,
    reference_ids: Option<PyReadonlyArray1<'py, i64>>,
    n_jobs: Option<i64>,
    neighbours: bool,
) -> PyResult<(Vec<Bound<'py, PyArray1<f64>>>, Option<Bound<'py, PyArray2<i64>>>)> {
    let est = parse_estimators(&estimators)?;
    lidscope_kernel::check_estimates(k, discard_fraction, &est).map_err(|e| value_error("k", e))?;
    let s = search(&x, reference.as_ref(), ids.as_ref(), reference_ids.as_ref())?;
    check_k(&s, k)?;
    let (columns, nb) = py.detach(|| {
        on_pool(n_jobs, || -> Result<_, KernelError> {
            // The neighbourhoods as `lidscope run` finds them: the self-join when X is its own
            // reference (its lists then also serve the members' look-ups), else the search
            // that keeps only the distances the estimates read, unless an estimator reads them all.
            let (nb, lists) = if s.is_self() {
                let nb = s.knn(k)?;
                (nb, true)
            } else if est.iter().any(LocalEstimator::needs_distances) {
                (s.knn(k)?, false)
            } else {
                (s.index.knn_for_estimates(s.queries, k, s.exclude.as_deref())?.0, false)
            };
            let lists_of = if lists { Some(&nb) } else { None };
            let (out, _) = estimates_from_neighbours(&s.index, s.queries, &nb, discard_fraction, &est, lists_of)?;
            Ok((out.columns, nb))
        })
    })?
    .map_err(|e| value_error("X", e))?;
    let columns = columns.into_iter().map(|c| c.into_pyarray(py)).collect();
    let nb = neighbours.then(|| indices(py, &nb));
    Ok((columns, nb))
}

/// Estimates from neighbourhoods given by row indices (`precomputed_knn`): each row of
/// `indices` names `k` rows of `X` (in any order).
#[pyfunction]
#[pyo3(signature = (x, indices, estimators, discard_fraction, n_jobs=None))]
pub fn lid_given_neighbours<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    indices: PyReadonlyArray2<'py, i64>,
    estimators: Vec<String>,
    discard_fraction: f64,
    n_jobs: Option<i64>,
) -> PyResult<Vec<Bound<'py, PyArray1<f64>>>> {
    let est = parse_estimators(&estimators)?;
    let s = search(&x, None, None, None)?;
    let (n, k) = (indices.shape()[0], indices.shape()[1]);
    if n != s.queries.len() {
        return Err(value_error("precomputed_knn", format!("{n} rows of neighbours for {} rows of X", s.queries.len())));
    }
    lidscope_kernel::check_estimates(k, discard_fraction, &est).map_err(|e| value_error("precomputed_knn", e))?;
    let idx = indices.as_slice().map_err(|_| value_error("precomputed_knn", "not a C-contiguous array"))?;
    let idx: Vec<u32> = idx
        .iter()
        .map(|&r| u32::try_from(r).map_err(|_| value_error("precomputed_knn", format!("row index {r} is not a row of X"))))
        .collect::<PyResult<_>>()?;
    let columns = py
        .detach(|| {
            on_pool(n_jobs, || -> Result<_, KernelError> {
                let nb = s.index.neighbours_from_indices(s.queries, &idx, k)?;
                Ok(estimates_from_neighbours(&s.index, s.queries, &nb, discard_fraction, &est, None)?.0.columns)
            })
        })?
        .map_err(|e| value_error("precomputed_knn", e))?;
    Ok(columns.into_iter().map(|c| c.into_pyarray(py)).collect())
}

fn indices<'py>(py: Python<'py>, nb: &Neighbours) -> Bound<'py, PyArray2<i64>> {
    let v: Vec<i64> = nb.indices.iter().map(|&r| r as i64).collect();
    Array2::from_shape_vec((nb.len(), nb.k), v).expect("queries x k").into_pyarray(py)
}

/// The `k` nearest reference rows of every row of `X`: `(distances, indices)`, both `n x k`,
/// nearest first (ties to the lower row), distances exact in float64.
#[pyfunction]
#[pyo3(signature = (x, k, reference=None, ids=None, reference_ids=None, n_jobs=None))]
#[allow(clippy::type_complexity)]
pub fn knn<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    k: usize,
    reference: Option<PyReadonlyArray2<'py, f32>>,
    ids: Option<PyReadonlyArray1<'py, i64>>,
    reference_ids: Option<PyReadonlyArray1<'py, i64>>,
    n_jobs: Option<i64>,
) -> PyResult<(Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<i64>>)> {
    if k == 0 {
        return Err(value_error("k", "k must be at least 1"));
    }
    let s = search(&x, reference.as_ref(), ids.as_ref(), reference_ids.as_ref())?;
    check_k(&s, k)?;
    let nb = py.detach(|| on_pool(n_jobs, || s.knn(k)))?.map_err(|e| value_error("X", e))?;
    let d = Array2::from_shape_vec((nb.len(), k), nb.distances.clone()).expect("queries x k").into_pyarray(py);
    Ok((d, indices(py, &nb)))
}

/// The TwoNN of the whole set `X` (each row's two nearest other rows), in scikit-dimension
/// 0.3.4's convention or 0.5.0's.
#[pyfunction]
#[pyo3(signature = (x, discard_fraction, convention, n_jobs=None))]
pub fn global_twonn<'py>(py: Python<'py>, x: PyReadonlyArray2<'py, f32>, discard_fraction: f64, convention: &str, n_jobs: Option<i64>) -> PyResult<f64> {
    let v05 = match convention {
        "0.3.4" => false,
        "0.5.0" => true,
        other => return Err(value_error("convention", format!("{other:?}: expected \"0.3.4\" (the paper's) or \"0.5.0\""))),
    };
    let s = search(&x, None, None, None)?;
    check_k(&s, 2)?;
    py.detach(|| {
        on_pool(n_jobs, || match v05 {
            false => lidscope_kernel::global_twonn(&s.index, discard_fraction, Estimator::TwoNN),
            true => global_twonn_v05(&s.index, discard_fraction),
        })
    })?
    .map_err(|e| value_error("X", e))
}
