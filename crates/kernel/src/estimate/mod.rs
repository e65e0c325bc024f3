//! Local and global intrinsic-dimension estimators.

mod gram;
mod local;
mod twonn;

pub use local::{lid_from_neighbours, pointwise_lid, LidConfig, LidStats, PointLid};
pub use twonn::{check_discard, fit_ratios, kept_ratios, twonn_from_distances, Estimator};
