//! Local and global intrinsic-dimension estimators.

mod eigen;
mod gram;
mod local;
mod neighbourhood;
mod pointwise;
mod twonn;

pub use eigen::symmetric_eigenvalues;
pub use local::{lid_from_neighbours, pointwise_lid, LidConfig, LidStats, PointLid};
pub use neighbourhood::{
    fit_ratios_v05, lpca_from_spectrum, lpca_spectrum, mle_from_distances, mom_from_distances, tle_from_distances, LpcaVersion, SpectrumScratch, TLE_EPSILON,
};
pub use pointwise::{
    check_estimates, estimates_from_neighbours, mackay_ghahramani_mean, parse_estimators, pointwise_estimates, LocalEstimator, PointEstimates,
    LOCAL_ESTIMATOR_NAMES,
};
pub use twonn::{check_discard, fit_ratios, kept_ratios, twonn_from_distances, Estimator};
