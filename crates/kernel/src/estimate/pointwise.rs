//! Several local estimators from one neighbour search.
//!
//! The search is the expensive part of a pointwise estimate; every estimator reads only the
//! neighbourhood it found. [`pointwise_estimates`] therefore searches once and computes every
//! requested [`LocalEstimator`] per query, sharing what they share: the TwoNN ratios (all three
//! TwoNN conventions), the local spectrum (all six lPCA versions), the members' pairwise distances
//! (TLE). Each value is the same as that estimator computed alone, to the bit.
//!
//! What each estimator reads: TwoNN and lPCA only the members (their rows), so
//! [`KnnIndex::knn_for_estimates`] suffices and the search stays today's; MLE, MOM and TLE the
//! query's `k` exact distances, so the search is [`KnnIndex::knn`] when any of them is asked for.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use rayon::prelude::*;

use super::local::{neighbourhood_mu, LidStats, Scratch};
use super::neighbourhood::{
    fit_ratios_v05, lpca_from_spectrum, lpca_spectrum, mle_from_distances, mom_from_distances, tle_from_distances, LpcaVersion, SpectrumScratch, TLE_EPSILON,
};
use super::twonn::{check_discard, fit_ratios, Estimator};
use crate::error::{KernelError, Result};
use crate::knn::{KnnIndex, KnnStats, Neighbours};
use crate::rows::{sq_dist_f64, Rows};

/// Queries per parallel work item.
const ESTIMATE_CHUNK: usize = 16;

/// A local intrinsic-dimension estimator of one neighbourhood, by its command-line name.
///
/// | name | what | reference |
/// |---|---|---|
/// | `twonn` | TwoNN, least squares, CDF `i / N` | skdim 0.3.4 `TwoNN` (the paper's) |
/// | `twonn-v05` | TwoNN, zero-`r1` ratios dropped, CDF `(i + 1) / N` | skdim 0.5.0 `TwoNN` |
/// | `twonn-mle` | TwoNN maximum likelihood, censored | skdim 0.5.0 `TwoNN(method="mle")` |
/// | `mle` | Levina-Bickel, `(k - 1) / sum ln(T_k / T_j)` | skdim 0.3.4 `MLE()` |
/// | `mle-unbiased` | the same with `k - 2` | skdim 0.3.4 `MLE(unbiased=True)` |
/// | `mom` | method of moments | skdim 0.3.4 `MOM()` |
/// | `tle` | tight local estimator | skdim 0.5.0 `TLE()` |
/// | `lpca-fo`, `lpca-fan`, `lpca-ratio`, `lpca-pr`, `lpca-kaiser`, `lpca-broken-stick` | local PCA | skdim 0.3.4 `lPCA(ver=...)` |
///
/// The lPCA thresholds have skdim's defaults and can be set in the name:
/// `lpca-fo:alpha=0.1`, `lpca-ratio:alpha=0.9`, `lpca-fan:alpha=10:beta=0.8:p=0.95` (colons, so
/// that a comma-separated list of estimators stays unambiguous).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LocalEstimator {
    /// TwoNN as the paper computes it (skdim 0.3.4).
    TwoNN,
    /// TwoNN in skdim 0.5.0's convention.
    TwoNNV05,
    /// TwoNN maximum likelihood.
    TwoNNMle,
    /// Levina-Bickel maximum likelihood.
    Mle,
    /// Levina-Bickel with the unbiased `k - 2` numerator.
    MleUnbiased,
    /// Method of moments.
    Mom,
    /// Tight local estimator.
    Tle,
    /// Local PCA (any version).
    Lpca(LpcaVersion),
}

/// The valid names, in the order of the table above.
pub const LOCAL_ESTIMATOR_NAMES: [&str; 13] = [
    "twonn",
    "twonn-v05",
    "twonn-mle",
    "mle",
    "mle-unbiased",
    "mom",
    "tle",
    "lpca-fo",
    "lpca-fan",
    "lpca-ratio",
    "lpca-pr",
    "lpca-kaiser",
    "lpca-broken-stick",
];

/// skdim's default thresholds.
const FO_ALPHA: f64 = 0.05;
const RATIO_ALPHA: f64 = 0.05;
const FAN_ALPHA: f64 = 10.0;
const FAN_BETA: f64 = 0.8;
const FAN_P: f64 = 0.95;

impl LocalEstimator {
    /// Local PCA, Fukunaga-Olsen, skdim's `alphaFO` = 0.05 (the paper's configuration).
    pub const LPCA_FO: Self = Self::Lpca(LpcaVersion::Fo { alpha: FO_ALPHA });
    /// Local PCA, Fan et al., skdim's defaults (alpha 10, beta 0.8, P 0.95).
    pub const LPCA_FAN: Self = Self::Lpca(LpcaVersion::Fan { alpha: FAN_ALPHA, beta: FAN_BETA, p: FAN_P });
    /// Local PCA, variance ratio, skdim's `alphaRatio` = 0.05.
    pub const LPCA_RATIO: Self = Self::Lpca(LpcaVersion::Ratio { alpha: RATIO_ALPHA });

    /// Every estimator with its default parameters, in the order of [`LOCAL_ESTIMATOR_NAMES`].
    pub fn all() -> Vec<Self> {
        LOCAL_ESTIMATOR_NAMES.iter().map(|n| n.parse().expect("valid names")).collect()
    }

    /// The name used on the command line and in manifests (without parameters; see
    /// [`fmt::Display`] for the full specification).
    pub fn name(&self) -> &'static str {
        match self {
            Self::TwoNN => "twonn",
            Self::TwoNNV05 => "twonn-v05",
            Self::TwoNNMle => "twonn-mle",
            Self::Mle => "mle",
            Self::MleUnbiased => "mle-unbiased",
            Self::Mom => "mom",
            Self::Tle => "tle",
            Self::Lpca(LpcaVersion::Fo { .. }) => "lpca-fo",
            Self::Lpca(LpcaVersion::Fan { .. }) => "lpca-fan",
            Self::Lpca(LpcaVersion::Ratio { .. }) => "lpca-ratio",
            Self::Lpca(LpcaVersion::ParticipationRatio) => "lpca-pr",
            Self::Lpca(LpcaVersion::Kaiser) => "lpca-kaiser",
            Self::Lpca(LpcaVersion::BrokenStick) => "lpca-broken-stick",
        }
    }

    /// The name as a column-name suffix, `-` replaced by `_` (`lid_<suffix>`: `lid_twonn_v05`,
    /// `lid_lpca_fo`, ...).
    pub fn column_suffix(&self) -> &'static str {
        match self {
            Self::TwoNN => "twonn",
            Self::TwoNNV05 => "twonn_v05",
            Self::TwoNNMle => "twonn_mle",
            Self::Mle => "mle",
            Self::MleUnbiased => "mle_unbiased",
            Self::Mom => "mom",
            Self::Tle => "tle",
            Self::Lpca(LpcaVersion::Fo { .. }) => "lpca_fo",
            Self::Lpca(LpcaVersion::Fan { .. }) => "lpca_fan",
            Self::Lpca(LpcaVersion::Ratio { .. }) => "lpca_ratio",
            Self::Lpca(LpcaVersion::ParticipationRatio) => "lpca_pr",
            Self::Lpca(LpcaVersion::Kaiser) => "lpca_kaiser",
            Self::Lpca(LpcaVersion::BrokenStick) => "lpca_broken_stick",
        }
    }

    /// The smallest neighbourhood the estimator is defined on: TwoNN needs two ratios of three
    /// points (and its discard fraction must keep two, [`check_discard`]); MLE a log sum over at
    /// least one distance below `T_k` (`k - 2 > 0` for the unbiased one); MOM a mean that can
    /// differ from `T_k`; TLE pairs of members besides the farthest; lPCA a covariance (`ddof`
    /// 1) with more than one non-zero eigenvalue possible.
    pub fn min_k(&self) -> usize {
        match self {
            Self::TwoNN | Self::TwoNNV05 | Self::TwoNNMle => 3,
            Self::Mle | Self::Mom => 2,
            Self::MleUnbiased | Self::Tle | Self::Lpca(_) => 3,
        }
    }

    /// The TwoNN estimator of [`Estimator`] this is, if any (the global estimate of a reference
    /// set uses it).
    pub fn as_twonn(&self) -> Option<Estimator> {
        match self {
            Self::TwoNN => Some(Estimator::TwoNN),
            Self::TwoNNMle => Some(Estimator::TwoNNMle),
            _ => None,
        }
    }

    /// Whether the estimator reads the query's `k` exact distances (not only the nearest two
    /// and the k-th that [`KnnIndex::knn_for_estimates`] gives).
    pub fn needs_distances(&self) -> bool {
        matches!(self, Self::Mle | Self::MleUnbiased | Self::Mom | Self::Tle)
    }

    /// Whether the estimator reads the TwoNN ratios of the members.
    fn needs_ratios(&self) -> bool {
        matches!(self, Self::TwoNN | Self::TwoNNV05 | Self::TwoNNMle)
    }

    /// Checks the parameters: lPCA's `alpha` of FO and ratio, and Fan's `beta` and `P`, are
    /// fractions in (0, 1); Fan's gap threshold `alpha` is positive and finite.
    ///
    /// # Errors
    /// [`KernelError::Parameter`] naming the estimator, the parameter and its range.
    pub fn validate(&self) -> Result<()> {
        let fraction = |what: &str, v: f64| {
            if v > 0.0 && v < 1.0 {
                Ok(())
            } else {
                Err(KernelError::Parameter(format!("{}: {what} = {v} is outside (0, 1)", self.name())))
            }
        };
        match *self {
            Self::Lpca(LpcaVersion::Fo { alpha }) | Self::Lpca(LpcaVersion::Ratio { alpha }) => fraction("alpha", alpha),
            Self::Lpca(LpcaVersion::Fan { alpha, beta, p }) => {
                if !(alpha > 0.0 && alpha.is_finite()) {
                    return Err(KernelError::Parameter(format!("lpca-fan: alpha = {alpha} must be a positive number (a ratio of eigenvalues)")));
                }
                fraction("beta", beta)?;
                fraction("p", p)
            }
            _ => Ok(()),
        }
    }

    /// The parameters the name may carry, with their current values.
    fn params(&self) -> Vec<(&'static str, f64)> {
        match *self {
            Self::Lpca(LpcaVersion::Fo { alpha }) | Self::Lpca(LpcaVersion::Ratio { alpha }) => vec![("alpha", alpha)],
            Self::Lpca(LpcaVersion::Fan { alpha, beta, p }) => vec![("alpha", alpha), ("beta", beta), ("p", p)],
            _ => Vec::new(),
        }
    }
}

impl From<Estimator> for LocalEstimator {
    fn from(e: Estimator) -> Self {
        match e {
            Estimator::TwoNN => Self::TwoNN,
            Estimator::TwoNNMle => Self::TwoNNMle,
        }
    }
}

/// The name, then every parameter that differs from skdim's default (`lpca-fo:alpha=0.1`):
/// parses back to the same estimator.
impl fmt::Display for LocalEstimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        let defaults = self.name().parse::<LocalEstimator>().map(|d| d.params()).unwrap_or_default();
        for ((key, v), (_, d)) in self.params().into_iter().zip(defaults) {
            if v.to_bits() != d.to_bits() {
                write!(f, ":{key}={v}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for LocalEstimator {
    type Err = KernelError;

    /// `name[:key=value]...` (see the type's docs). Names and keys are case-sensitive.
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.split(':');
        let name = parts.next().unwrap_or_default().trim();
        let mut e = match name {
            "twonn" => Self::TwoNN,
            "twonn-v05" => Self::TwoNNV05,
            "twonn-mle" => Self::TwoNNMle,
            "mle" => Self::Mle,
            "mle-unbiased" => Self::MleUnbiased,
            "mom" => Self::Mom,
            "tle" => Self::Tle,
            "lpca-fo" => Self::LPCA_FO,
            "lpca-fan" => Self::LPCA_FAN,
            "lpca-ratio" => Self::LPCA_RATIO,
            "lpca-pr" => Self::Lpca(LpcaVersion::ParticipationRatio),
            "lpca-kaiser" => Self::Lpca(LpcaVersion::Kaiser),
            "lpca-broken-stick" => Self::Lpca(LpcaVersion::BrokenStick),
            other => {
                return Err(KernelError::Parameter(format!("unknown estimator {other:?} (expected one of: {})", LOCAL_ESTIMATOR_NAMES.join(", "))));
            }
        };
        for part in parts {
            let keys: Vec<&str> = e.params().iter().map(|(k, _)| *k).collect();
            let (key, value) = part.split_once('=').ok_or_else(|| KernelError::Parameter(format!("{name}: parameter {part:?} is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            if !keys.contains(&key) {
                return Err(KernelError::Parameter(if keys.is_empty() {
                    format!("{name} takes no parameters (got {part:?})")
                } else {
                    format!("{name}: unknown parameter {key:?} (expected {})", keys.join(", "))
                }));
            }
            let v: f64 = value.parse().map_err(|_| KernelError::Parameter(format!("{name}: {key} = {value:?} is not a number")))?;
            e = match (e, key) {
                (Self::Lpca(LpcaVersion::Fo { .. }), _) => Self::Lpca(LpcaVersion::Fo { alpha: v }),
                (Self::Lpca(LpcaVersion::Ratio { .. }), _) => Self::Lpca(LpcaVersion::Ratio { alpha: v }),
                (Self::Lpca(LpcaVersion::Fan { beta, p, .. }), "alpha") => Self::Lpca(LpcaVersion::Fan { alpha: v, beta, p }),
                (Self::Lpca(LpcaVersion::Fan { alpha, p, .. }), "beta") => Self::Lpca(LpcaVersion::Fan { alpha, beta: v, p }),
                (Self::Lpca(LpcaVersion::Fan { alpha, beta, .. }), _) => Self::Lpca(LpcaVersion::Fan { alpha, beta, p: v }),
                (other, _) => other,
            };
        }
        e.validate()?;
        Ok(e)
    }
}

/// Parses a comma-separated list of estimators (`twonn,mle,lpca-fo`).
///
/// # Errors
/// Those of [`LocalEstimator::from_str`]; [`KernelError::Parameter`] for an empty list or a name
/// given twice (its column would be ambiguous).
pub fn parse_estimators(list: &str) -> Result<Vec<LocalEstimator>> {
    let v: Vec<LocalEstimator> = list.split(',').map(str::parse).collect::<Result<_>>()?;
    check_estimators(&v)?;
    Ok(v)
}

/// Checks a list of estimators for one run: not empty, each valid, no name twice.
fn check_estimators(estimators: &[LocalEstimator]) -> Result<()> {
    if estimators.is_empty() {
        return Err(KernelError::Parameter(format!("no estimator given (expected one or more of: {})", LOCAL_ESTIMATOR_NAMES.join(", "))));
    }
    for (i, e) in estimators.iter().enumerate() {
        e.validate()?;
        if estimators[..i].iter().any(|o| o.name() == e.name()) {
            return Err(KernelError::Parameter(format!("estimator {} given twice", e.name())));
        }
    }
    Ok(())
}

/// Checks `(k, discard fraction, estimators)` before any work: the list as [`parse_estimators`]
/// does, `k` at least every estimator's [`LocalEstimator::min_k`] (the error names the estimator
/// and its minimum), and, when a TwoNN estimator is asked for, the discard fraction
/// ([`check_discard`]).
///
/// # Errors
/// [`KernelError::Parameter`].
pub fn check_estimates(k: usize, discard_fraction: f64, estimators: &[LocalEstimator]) -> Result<()> {
    check_estimators(estimators)?;
    if let Some(e) = estimators.iter().find(|e| k < e.min_k()) {
        return Err(KernelError::Parameter(format!("k = {k} is too small: {} needs k >= {}", e.name(), e.min_k())));
    }
    if estimators.iter().any(LocalEstimator::needs_ratios) {
        check_discard(k, discard_fraction)?;
    }
    Ok(())
}

/// Every query's estimates, one column per estimator.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PointEstimates {
    /// The estimators, in the order asked for.
    pub estimators: Vec<LocalEstimator>,
    /// `columns[e][i]`: estimator `e` of query `i`.
    pub columns: Vec<Vec<f64>>,
    /// Distance to the nearest reference row (self excluded), per query.
    pub r1: Vec<f64>,
    /// Distance to the second nearest reference row.
    pub r2: Vec<f64>,
    /// Distance to the k-th nearest reference row.
    pub rk: Vec<f64>,
}

impl PointEstimates {
    /// Number of queries.
    pub fn len(&self) -> usize {
        self.r1.len()
    }

    /// True when there are no queries.
    pub fn is_empty(&self) -> bool {
        self.r1.is_empty()
    }

    /// The column of the estimator with this name (`"mle"`, `"lpca-fo"`, ...), if it was asked for.
    pub fn column(&self, name: &str) -> Option<&[f64]> {
        self.estimators.iter().position(|e| e.name() == name).map(|i| self.columns[i].as_slice())
    }
}

/// Every requested estimator for every query against `index`, from one neighbour search.
///
/// `exclude[i] = Some(r)`: query `i` is reference row `r` and does not count itself. When only
/// estimators of the members are asked for (TwoNN, lPCA), the search is
/// [`KnnIndex::knn_for_estimates`], as in [`super::pointwise_lid`], and `twonn` is bitwise
/// [`super::pointwise_lid`]'s `lid`; with MLE, MOM or TLE it is [`KnnIndex::knn`] (same members,
/// same TwoNN values).
///
/// # Errors
/// Those of [`check_estimates`] and [`KnnIndex::knn`].
///
/// # Example
/// ```
/// use lidscope_kernel::{pointwise_estimates, KnnIndex, LocalEstimator, Rows, SearchStrategy};
/// // 1,000 random points on a circle in 3-d: every estimator should say about 1.
/// let mut s = 0x9E37_79B9_7F4A_7C15u64;
/// let pts: Vec<f32> = (0..1000)
///     .flat_map(|_| {
///         s ^= s << 13; s ^= s >> 7; s ^= s << 17;
///         let t = (s >> 40) as f32 / (1u64 << 24) as f32 * std::f32::consts::TAU;
///         [t.cos(), t.sin(), 0.5]
///     })
///     .collect();
/// let rows = Rows::from_flat(&pts, 3).unwrap();
/// let index = KnnIndex::new(rows, SearchStrategy::Gemm).unwrap();
/// let me: Vec<Option<u32>> = (0..1000).map(Some).collect();
/// let est: Vec<LocalEstimator> = ["twonn", "mle", "lpca-fo"].iter().map(|n| n.parse().unwrap()).collect();
/// let (out, _) = pointwise_estimates(&index, rows, 20, 0.1, &est, Some(&me)).unwrap();
/// for e in &est {
///     let col = out.column(e.name()).unwrap();
///     let mean = col.iter().sum::<f64>() / col.len() as f64;
///     assert!((mean - 1.0).abs() < 0.25, "{e}: {mean}");
/// }
/// ```
pub fn pointwise_estimates(
    index: &KnnIndex,
    queries: Rows<'_>,
    k: usize,
    discard_fraction: f64,
    estimators: &[LocalEstimator],
    exclude: Option<&[Option<u32>]>,
) -> Result<(PointEstimates, LidStats)> {
    check_estimates(k, discard_fraction, estimators)?;
    let (nb, knn) = if estimators.iter().any(LocalEstimator::needs_distances) {
        index.knn(queries, k, exclude)?
    } else {
        index.knn_for_estimates(queries, k, exclude)?
    };
    let (out, mut stats) = estimates_from_neighbours(index, queries, &nb, discard_fraction, estimators, None)?;
    stats.knn = knn;
    Ok((out, stats))
}

/// [`pointwise_estimates`] from neighbourhoods already found (`nb.k` neighbours per query,
/// nearest first), optionally with every reference row's own neighbour lists for the TwoNN
/// ratios, as [`super::lid_from_neighbours`].
///
/// Neighbourhoods from [`KnnIndex::knn_for_estimates`] lack the middle distances: when an
/// estimator needs them (MLE, MOM, TLE), they are computed here, exactly as the search would
/// (float64 from the float32 rows), and the members sorted by distance, then row: the values are
/// then those of neighbourhoods from [`KnnIndex::knn`].
///
/// # Errors
/// Those of [`check_estimates`]; [`KernelError::Shape`] when `nb` does not match the queries or
/// the reference, or `lists` does not cover the reference.
pub fn estimates_from_neighbours(
    index: &KnnIndex,
    queries: Rows<'_>,
    nb: &Neighbours,
    discard_fraction: f64,
    estimators: &[LocalEstimator],
    lists: Option<&Neighbours>,
) -> Result<(PointEstimates, LidStats)> {
    let k = nb.k;
    check_estimates(k, discard_fraction, estimators)?;
    if nb.len() != queries.len() || queries.dim() != index.dim() || nb.indices.len() != nb.distances.len() || nb.indices.iter().any(|r| *r as usize >= index.len()) {
        return Err(KernelError::Shape {
            expected: format!("{} neighbourhoods of rows below {} in dimension {}", queries.len(), index.len(), index.dim()),
            got: format!("{} neighbourhoods of {} rows, queries of dimension {}", nb.len(), nb.k, queries.dim()),
        });
    }
    if let Some(l) = lists.filter(|l| l.len() != index.len() || l.k < 2) {
        return Err(KernelError::Shape {
            expected: format!("neighbour lists of at least 2 for each of the {} reference rows", index.len()),
            got: format!("{} lists of {}", l.len(), l.k),
        });
    }
    let start = Instant::now();
    let need = Needs::of(estimators);
    let ne = estimators.len();
    let nq = queries.len();
    // Row-major (query, estimator) while computing, so each work item writes one slice.
    let mut values = vec![f64::NAN; nq * ne];
    let mut ends = vec![[f64::NAN; 3]; nq];
    let counts: (u64, u64, u64) = values
        .par_chunks_mut(ESTIMATE_CHUNK * ne)
        .zip(ends.par_chunks_mut(ESTIMATE_CHUNK))
        .enumerate()
        .map_init(Work::default, |w, (c, (vals, ends))| {
            let mut counts = (0u64, 0u64, 0u64);
            for (o, (out, end)) in vals.chunks_exact_mut(ne).zip(ends.iter_mut()).enumerate() {
                let i = c * ESTIMATE_CHUNK + o;
                let query = queries.row(i);
                let (members, dists) = w.completed.neighbourhood(index, query, nb.indices_of(i), nb.distances_of(i), need.distances);
                *end = [dists[0], dists[1], dists[k - 1]];
                if need.ratios {
                    let (f, l, d) = neighbourhood_mu(index, query, members, lists, &mut w.ratios);
                    counts = (counts.0 + f, counts.1 + l, counts.2 + d);
                }
                if need.spectrum {
                    // In row order, so the spectrum's roundings do not depend on the order the
                    // search returned the members in.
                    w.order.clear();
                    w.order.extend_from_slice(members);
                    w.order.sort_unstable();
                    let rows: Vec<&[f32]> = w.order.iter().map(|m| index.row(*m as usize)).collect();
                    lpca_spectrum(&rows, &mut w.spectrum_scratch, &mut w.spectrum);
                }
                if need.pairwise {
                    w.pairwise.clear();
                    w.pairwise.resize(k * k, 0.0);
                    for a in 0..k {
                        for b in a + 1..k {
                            let v = sq_dist_f64(index.row(members[a] as usize), index.row(members[b] as usize)).sqrt();
                            w.pairwise[a * k + b] = v;
                            w.pairwise[b * k + a] = v;
                        }
                    }
                }
                for (v, e) in out.iter_mut().zip(estimators) {
                    *v = match e {
                        LocalEstimator::TwoNN => fit_ratios(&mut w.ratios.mu, discard_fraction, Estimator::TwoNN),
                        LocalEstimator::TwoNNMle => fit_ratios(&mut w.ratios.mu, discard_fraction, Estimator::TwoNNMle),
                        LocalEstimator::TwoNNV05 => {
                            w.mu.clone_from(&w.ratios.mu);
                            fit_ratios_v05(&mut w.mu, discard_fraction)
                        }
                        LocalEstimator::Mle => mle_from_distances(dists, false),
                        LocalEstimator::MleUnbiased => mle_from_distances(dists, true),
                        LocalEstimator::Mom => mom_from_distances(dists),
                        LocalEstimator::Tle => tle_from_distances(dists, &w.pairwise, TLE_EPSILON),
                        LocalEstimator::Lpca(version) => lpca_from_spectrum(*version, &w.spectrum),
                    };
                }
            }
            counts
        })
        .reduce(|| (0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    let columns = (0..ne).map(|e| (0..nq).map(|i| values[i * ne + e]).collect()).collect();
    let out = PointEstimates {
        estimators: estimators.to_vec(),
        columns,
        r1: ends.iter().map(|e| e[0]).collect(),
        r2: ends.iter().map(|e| e[1]).collect(),
        rk: ends.iter().map(|e| e[2]).collect(),
    };
    let stats = LidStats {
        knn: KnnStats::default(),
        estimate_seconds: start.elapsed().as_secs_f64(),
        exact_rows: counts.0,
        looked_up: counts.1,
        direct_members: counts.2,
    };
    Ok((out, stats))
}

/// What the requested estimators share.
#[derive(Clone, Copy)]
struct Needs {
    ratios: bool,
    distances: bool,
    spectrum: bool,
    pairwise: bool,
}

impl Needs {
    fn of(estimators: &[LocalEstimator]) -> Self {
        Needs {
            ratios: estimators.iter().any(LocalEstimator::needs_ratios),
            distances: estimators.iter().any(LocalEstimator::needs_distances),
            spectrum: estimators.iter().any(|e| matches!(e, LocalEstimator::Lpca(_))),
            pairwise: estimators.contains(&LocalEstimator::Tle),
        }
    }
}

/// One rayon job's buffers.
#[derive(Default)]
struct Work {
    ratios: Scratch,
    mu: Vec<f64>,
    spectrum_scratch: SpectrumScratch,
    spectrum: Vec<f64>,
    pairwise: Vec<f64>,
    /// The members in row order, for the spectrum.
    order: Vec<u32>,
    completed: Completed,
}

/// A neighbourhood completed with its middle distances.
#[derive(Default)]
struct Completed {
    /// (distance, row), sorted.
    sorted: Vec<(f64, u32)>,
    members: Vec<u32>,
    dists: Vec<f64>,
}

impl Completed {
    /// The neighbourhood as given, or, when the distances are needed and some are missing (NaN,
    /// from [`KnnIndex::knn_for_estimates`]), completed with exact distances and sorted by
    /// distance, then row.
    fn neighbourhood<'a>(&'a mut self, index: &KnnIndex, query: &[f32], members: &'a [u32], dists: &'a [f64], need: bool) -> (&'a [u32], &'a [f64]) {
        if !need || !dists.iter().any(|d| d.is_nan()) {
            return (members, dists);
        }
        self.sorted.clear();
        self.sorted.extend(members.iter().zip(dists).map(|(m, d)| {
            let d = if d.is_nan() { sq_dist_f64(query, index.row(*m as usize)).sqrt() } else { *d };
            (d, *m)
        }));
        self.sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        self.members.clear();
        self.members.extend(self.sorted.iter().map(|p| p.1));
        self.dists.clear();
        self.dists.extend(self.sorted.iter().map(|p| p.0));
        (&self.members, &self.dists)
    }
}

/// The MacKay-Ghahramani average of pointwise MLE estimates, `1 / mean(1 / m_i)`, over the finite
/// values.
///
/// Levina and Bickel average their pointwise estimates arithmetically; MacKay and Ghahramani
/// (comment on Levina-Bickel, 2005) showed that the pointwise MLE of the *inverse* dimension is
/// what is unbiased and should be averaged, which is what skdim's `MLE(comb="mle")` and most of
/// the LLM literature report. A zero estimate (a query with a duplicate among its neighbours)
/// makes the average 0, as in skdim; NaN and infinite values are left out. NaN when no value is
/// finite. Summed in order, so the result does not depend on threads.
pub fn mackay_ghahramani_mean(values: &[f64]) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for v in values.iter().filter(|v| v.is_finite()) {
        sum += 1.0 / v;
        n += 1;
    }
    if n == 0 {
        return f64::NAN;
    }
    1.0 / (sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pointwise_lid, LidConfig, SearchStrategy};

    #[test]
    fn names_round_trip() {
        for (e, n) in LocalEstimator::all().iter().zip(LOCAL_ESTIMATOR_NAMES) {
            assert_eq!(e.name(), n);
            assert_eq!(e.to_string(), n);
            assert_eq!(e.column_suffix(), n.replace('-', "_"));
            assert_eq!(n.parse::<LocalEstimator>().unwrap(), *e);
        }
        let e: LocalEstimator = "lpca-fan:beta=0.7:alpha=5".parse().unwrap();
        assert_eq!(e, LocalEstimator::Lpca(LpcaVersion::Fan { alpha: 5.0, beta: 0.7, p: 0.95 }));
        assert_eq!(e.to_string(), "lpca-fan:alpha=5:beta=0.7");
        assert_eq!(e.to_string().parse::<LocalEstimator>().unwrap(), e);
        assert_eq!(LocalEstimator::from(Estimator::TwoNNMle).as_twonn(), Some(Estimator::TwoNNMle));
    }

    #[test]
    fn bad_names_and_thresholds() {
        let err = "lpca".parse::<LocalEstimator>().unwrap_err().to_string();
        assert!(LOCAL_ESTIMATOR_NAMES.iter().all(|n| err.contains(n)), "{err}");
        for bad in ["lpca-fo:alpha=0", "lpca-fo:alpha=1", "lpca-ratio:alpha=1.5", "lpca-fan:beta=-0.1", "lpca-fan:p=1", "lpca-fan:alpha=0", "lpca-fo:alpha=nan"] {
            let err = bad.parse::<LocalEstimator>().unwrap_err().to_string();
            assert!(err.contains("outside (0, 1)") || err.contains("positive"), "{bad}: {err}");
        }
        assert!("lpca-fo:beta=0.5".parse::<LocalEstimator>().unwrap_err().to_string().contains("expected alpha"));
        assert!("mle:alpha=0.5".parse::<LocalEstimator>().unwrap_err().to_string().contains("no parameters"));
        assert!("lpca-fo:alpha".parse::<LocalEstimator>().is_err());
        assert!("lpca-fo:alpha=x".parse::<LocalEstimator>().is_err());
        assert!(parse_estimators("twonn,mle,twonn").unwrap_err().to_string().contains("twice"));
        assert_eq!(parse_estimators("twonn,mle,lpca-fo").unwrap().len(), 3);
        let err = check_estimates(2, 0.1, &[LocalEstimator::Mle, LocalEstimator::Tle]).unwrap_err().to_string();
        assert!(err.contains("tle needs k >= 3"), "{err}");
        let err = check_estimates(2, 0.1, &[LocalEstimator::LPCA_FO]).unwrap_err().to_string();
        assert!(err.contains("lpca-fo needs k >= 3"), "{err}");
        assert!(check_estimates(2, 0.1, &[LocalEstimator::Mle, LocalEstimator::Mom]).is_ok());
        assert!(check_estimates(20, 1.0, &[LocalEstimator::TwoNNV05]).is_err());
        assert!(check_estimates(20, 0.1, &[]).is_err());
    }

    #[test]
    fn mackay_ghahramani() {
        assert_eq!(mackay_ghahramani_mean(&[2.0, 2.0]), 2.0);
        // 1 / ((1/1 + 1/3) / 2) = 1.5
        assert!((mackay_ghahramani_mean(&[1.0, 3.0, f64::NAN, f64::INFINITY]) - 1.5).abs() < 1e-15);
        assert_eq!(mackay_ghahramani_mean(&[0.0, 3.0]), 0.0);
        assert!(mackay_ghahramani_mean(&[f64::NAN]).is_nan());
    }

    /// Points near a 3-d subspace of a 40-d or 97-d space, far from the origin, a few repeated.
    fn cloud(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let basis: Vec<f32> = (0..3 * d).map(|_| rnd()).collect();
        let mut x = Vec::with_capacity(n * d);
        for _ in 0..n {
            let c = [rnd(), rnd(), rnd()];
            for p in 0..d {
                x.push(50.0 + c[0] * basis[p] + c[1] * basis[d + p] + c[2] * basis[2 * d + p] + 0.01 * rnd());
            }
        }
        for (to, from) in [(5, 6), (50, 51), (52, 51)] {
            x.copy_within(from * d..(from + 1) * d, to * d);
        }
        x
    }

    /// One pass gives each estimator's value alone, to the bit; `twonn` is `pointwise_lid`'s
    /// `lid`; the fast search and the full one agree; the lPCA spectrum through the Gram matrix
    /// (k < d) and through the covariance (k >= d) both see the 3-d subspace.
    #[test]
    fn one_pass_equals_separate_runs() {
        for &(n, d, k) in &[(400usize, 40usize, 20usize), (400, 40, 64), (300, 97, 32)] {
            let x = cloud(n, d, 7 + d as u64);
            let rows = Rows::try_new(&x, n, d).unwrap();
            let index = KnnIndex::new(rows, SearchStrategy::Gemm).unwrap();
            let me: Vec<Option<u32>> = (0..n as u32).map(Some).collect();
            let all = LocalEstimator::all();
            let (together, _) = pointwise_estimates(&index, rows, k, 0.1, &all, Some(&me)).unwrap();
            for (e, col) in all.iter().zip(&together.columns) {
                let (alone, _) = pointwise_estimates(&index, rows, k, 0.1, &[*e], Some(&me)).unwrap();
                if let Some(i) = (0..n).find(|i| col[*i].to_bits() != alone.columns[0][*i].to_bits()) {
                    panic!("{e} (n={n} d={d} k={k}): query {i}: {} together, {} alone", col[i], alone.columns[0][i]);
                }
            }
            let cfg = LidConfig { k, ..LidConfig::default() };
            let (lids, _) = pointwise_lid(&index, rows, &cfg, Some(&me)).unwrap();
            let twonn = together.column("twonn").unwrap();
            assert!(lids.iter().zip(twonn).all(|(p, t)| p.lid.to_bits() == t.to_bits()));
            assert!(lids.iter().zip(&together.rk).all(|(p, r)| p.rk.to_bits() == r.to_bits()));
            // Neighbourhoods without middle distances are completed to the full search's values.
            let (ends, _) = index.knn_for_estimates(rows, k, Some(&me)).unwrap();
            let (done, _) = estimates_from_neighbours(&index, rows, &ends, 0.1, &all, None).unwrap();
            for (e, (a, b)) in all.iter().zip(done.columns.iter().zip(&together.columns)) {
                let same = a.iter().zip(b).filter(|(x, y)| x.to_bits() == y.to_bits()).count();
                // Summation order of the completed members can differ only where distances tie.
                assert!(same as f64 >= 0.99 * n as f64, "{e}: {same} of {n}");
                assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-9 * y.abs().max(1.0) || (x.is_nan() && y.is_nan())), "{e}");
            }
            // The reference rows' own lists give the TwoNN ratios by look-up, with the same bits.
            let (lists, _) = index.self_knn(8).unwrap();
            let (looked, stats) = estimates_from_neighbours(&index, rows, &ends, 0.1, &all, Some(&lists)).unwrap();
            assert!(stats.looked_up > 0);
            for (e, (a, b)) in all.iter().zip(looked.columns.iter().zip(&done.columns)) {
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{e} with lists");
            }
            // The cloud is 3-d (plus noise 50x smaller): FO at alpha 0.05 finds 3 nearly everywhere.
            let fo = together.column("lpca-fo").unwrap();
            assert!(fo.iter().filter(|v| **v == 3.0).count() as f64 > 0.9 * n as f64, "{:?}", &fo[..20]);
            // Rows 50 and 52 are duplicates of 51: twonn-v05 drops their ratios, values stay finite.
            assert!(together.column("twonn-v05").unwrap().iter().all(|v| v.is_finite()));
        }
    }

    /// The same values for any number of threads.
    #[test]
    fn thread_count_does_not_matter() {
        let (n, d, k) = (300usize, 40usize, 24usize);
        let x = cloud(n, d, 3);
        let rows = Rows::try_new(&x, n, d).unwrap();
        let index = KnnIndex::new(rows, SearchStrategy::Gemm).unwrap();
        let all = LocalEstimator::all();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| pointwise_estimates(&index, rows, k, 0.1, &all, None).unwrap().0)
        };
        let one = run(1);
        let three = run(3);
        for (a, b) in one.columns.iter().zip(&three.columns) {
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}
