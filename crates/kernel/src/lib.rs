//! The numeric kernel of lidscope: exact k-nearest-neighbour search and the local intrinsic
//! dimension estimators (TwoNN in both scikit-dimension conventions, Levina-Bickel MLE, method of
//! moments, TLE, local PCA; [`pointwise_estimates`] computes several from one search). No I/O, no logging: callers pass `&[f32]` rows and get numbers
//! and [`KnnStats`]/[`LidStats`] back.
//!
//! # Numerics
//! Embeddings are stored as float32. The neighbour search spends its flops in a float32 GEMM on
//! data centred on the reference mean, keeps every candidate within a proven rounding window of
//! the k-th score, and re-ranks candidates with exact float64 distances, so the neighbour sets
//! equal those of a float64 brute force (ties by reference row order). All sums that decide a
//! result (distances, log-ratio sums) accumulate in float64, in a fixed order, so results are
//! bitwise identical for any number of threads.
//!
//! # Parallelism
//! Work runs on the current rayon pool; the kernel never configures the global pool.
//!
//! # Example
//! ```
//! use lidscope_kernel::{KnnIndex, Rows, SearchStrategy};
//! let refs = [0.0f32, 0.0, 1.0, 0.0, 0.0, 2.0, 5.0, 5.0];
//! let index = KnnIndex::new(Rows::from_flat(&refs, 2).unwrap(), SearchStrategy::Gemm).unwrap();
//! let q = [0.9f32, 0.1];
//! let (nb, _) = index.knn(Rows::from_flat(&q, 2).unwrap(), 2, None).unwrap();
//! assert_eq!(nb.indices_of(0), &[1, 0]);
//! ```
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(rustdoc::broken_intra_doc_links)]

mod error;
mod estimate;
mod knn;
mod paired;
#[doc(hidden)]
pub mod isa;
mod rate;
mod rows;

pub use error::{KernelError, Result};
pub use estimate::{
    check_discard, check_estimates, estimates_from_neighbours, fit_ratios, fit_ratios_v05, kept_ratios, lid_from_neighbours, lpca_from_spectrum, lpca_spectrum,
    mackay_ghahramani_mean, mle_from_distances, mom_from_distances, parse_estimators, pointwise_estimates, pointwise_lid, symmetric_eigenvalues,
    tle_from_distances, twonn_from_distances, Estimator, LidConfig, LidStats, LocalEstimator, LpcaVersion, PointEstimates, PointLid, SpectrumScratch,
    LOCAL_ESTIMATOR_NAMES, TLE_EPSILON,
};
pub use knn::{int8_search_available, kdtree_supports, KnnIndex, KnnStats, Neighbours, SearchStrategy, KDTREE_AUTO_MAX_DIM, KDTREE_DIMS};
pub use paired::{students_t_two_sided, PairedMoments, PairedTest};
pub use rate::{mac_rates, sgemm_gflops, MacRates};
pub use rows::Rows;

/// Global TwoNN of a reference set: each row's two nearest other rows, then the TwoNN fit.
///
/// # Errors
/// [`KernelError::TooFewPoints`] with fewer than 3 rows; [`KernelError::Parameter`] for a bad
/// discard fraction.
pub fn global_twonn(index: &KnnIndex, discard_fraction: f64, estimator: Estimator) -> Result<f64> {
    let mut mu = nearest_ratios(index, discard_fraction)?;
    Ok(fit_ratios(&mut mu, discard_fraction, estimator))
}

/// Global TwoNN of a reference set in scikit-dimension 0.5.0's convention (`TwoNN().fit(X)` of
/// 0.5.0): the ratios of rows at zero distance from another row are dropped, the empirical CDF is
/// `(i + 1) / N` ([`fit_ratios_v05`]). NaN when fewer than two ratios are kept.
///
/// # Errors
/// As [`global_twonn`].
pub fn global_twonn_v05(index: &KnnIndex, discard_fraction: f64) -> Result<f64> {
    let mut mu = nearest_ratios(index, discard_fraction)?;
    Ok(fit_ratios_v05(&mut mu, discard_fraction))
}

/// Every reference row's `r2 / r1` over its two nearest other rows.
fn nearest_ratios(index: &KnnIndex, discard_fraction: f64) -> Result<Vec<f64>> {
    check_discard(index.len(), discard_fraction)?;
    let me: Vec<Option<u32>> = (0..index.len() as u32).map(Some).collect();
    let (nb, _) = index.knn(index.rows(), 2, Some(&me))?;
    Ok(nb.distances.chunks_exact(2).map(|d| d[1] / d[0]).collect())
}
