//! Pointwise LID: the estimator applied to each query's neighbourhood.
//!
//! For each query, TwoNN needs every neighbour's first and second nearest-neighbour distance
//! *inside the neighbourhood*. In low dimensions these come straight from exact float64 pairwise
//! distances. Above [`DIRECT_MAX_DIM`] the `k x k` distances come from a float32 Gram matrix of the
//! neighbourhood centred on its own mean (so the expansion keeps its digits), the two nearest are
//! accepted only when the third is farther by more than the error bound, and the two chosen
//! distances are recomputed in float64. Where the gap is too small, every point within the error
//! window is re-ranked exactly.

use std::time::Instant;

use rayon::prelude::*;

use super::twonn::{check_discard, fit_ratios, Estimator};
use crate::error::{KernelError, Result};
use crate::knn::{cross_product, KnnIndex, KnnStats};
use crate::rows::{sq_dist_f64, sq_norm_f64, Rows};

/// Up to this dimension the neighbourhood's pairwise distances are computed directly in float64.
const DIRECT_MAX_DIM: usize = 64;
/// Queries per parallel work item in the estimate stage.
const ESTIMATE_CHUNK: usize = 16;

/// Parameters of a pointwise LID computation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LidConfig {
    /// Neighbourhood size (the paper: 128).
    pub k: usize,
    /// Estimator applied to each neighbourhood.
    pub estimator: Estimator,
    /// Fraction of the largest ratios discarded (the paper: 0.1).
    pub discard_fraction: f64,
}

impl Default for LidConfig {
    fn default() -> Self {
        Self { k: 128, estimator: Estimator::TwoNN, discard_fraction: 0.1 }
    }
}

impl LidConfig {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`KernelError::Parameter`] when `k < 3` or the discard fraction keeps fewer than 2 ratios.
    pub fn validate(&self) -> Result<()> {
        if self.k < 3 {
            return Err(KernelError::Parameter(format!("k = {} is too small: TwoNN needs k >= 3", self.k)));
        }
        check_discard(self.k, self.discard_fraction)
    }
}

/// One query's result.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PointLid {
    /// The local intrinsic dimension estimate.
    pub lid: f64,
    /// Distance to the nearest reference row (self excluded).
    pub r1: f64,
    /// Distance to the second nearest reference row.
    pub r2: f64,
    /// Distance to the k-th nearest reference row.
    pub rk: f64,
}

/// Where the time went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LidStats {
    /// The neighbour search.
    pub knn: KnnStats,
    /// Wall seconds of the local estimates.
    pub estimate_seconds: f64,
    /// Neighbourhood rows whose distances had to be recomputed exactly (gap test failed).
    pub exact_rows: u64,
}

/// LID of every query against `index`.
///
/// `exclude[i] = Some(r)`: query `i` is reference row `r` and does not count itself.
///
/// # Errors
/// Those of [`LidConfig::validate`] and [`KnnIndex::knn`].
///
/// # Example
/// ```
/// use lidscope_kernel::{pointwise_lid, KnnIndex, LidConfig, Rows, SearchStrategy};
/// // 1,000 random points on a circle in 3-d: a one-dimensional set.
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
/// // Every query is a reference row: exclude itself.
/// let me: Vec<Option<u32>> = (0..1000).map(Some).collect();
/// let cfg = LidConfig { k: 20, ..LidConfig::default() };
/// let (lids, _) = pointwise_lid(&index, rows, &cfg, Some(&me)).unwrap();
/// let mean = lids.iter().map(|l| l.lid).sum::<f64>() / 1000.0;
/// assert!((mean - 1.0).abs() < 0.1);
/// ```
pub fn pointwise_lid(
    index: &KnnIndex,
    queries: Rows<'_>,
    cfg: &LidConfig,
    exclude: Option<&[Option<u32>]>,
) -> Result<(Vec<PointLid>, LidStats)> {
    cfg.validate()?;
    let (nb, knn) = index.knn(queries, cfg.k, exclude)?;
    let start = Instant::now();
    let k = cfg.k;
    let mut out = vec![PointLid::default(); queries.len()];
    let exact_rows: u64 = out
        .par_chunks_mut(ESTIMATE_CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut s = Scratch::default();
            let mut fallbacks = 0;
            for (o, p) in chunk.iter_mut().enumerate() {
                let i = c * ESTIMATE_CHUNK + o;
                fallbacks += neighbourhood_ratios(index, nb.indices_of(i), &mut s);
                let d = nb.distances_of(i);
                *p = PointLid {
                    lid: fit_ratios(&mut s.mu, cfg.discard_fraction, cfg.estimator),
                    r1: d[0],
                    r2: d[1],
                    rk: d[k - 1],
                };
            }
            fallbacks
        })
        .sum();
    Ok((out, LidStats { knn, estimate_seconds: start.elapsed().as_secs_f64(), exact_rows }))
}

#[derive(Default)]
struct Scratch {
    y: Vec<f32>,
    norms: Vec<f64>,
    gram: Vec<f32>,
    best: Vec<(f64, f64)>,
    mu: Vec<f64>,
}

/// Fills `s.mu` with the ratio r2/r1 of every point of the neighbourhood; returns the number of
/// rows recomputed exactly.
fn neighbourhood_ratios(index: &KnnIndex, nbrs: &[u32], s: &mut Scratch) -> u64 {
    let k = nbrs.len();
    let d = index.dim();
    let row = |j: usize| index.row(nbrs[j] as usize);
    s.best.clear();
    s.best.resize(k, (f64::INFINITY, f64::INFINITY));
    let mut fallbacks = 0;
    if d <= DIRECT_MAX_DIM {
        for i in 0..k {
            for j in i + 1..k {
                let v = sq_dist_f64(row(i), row(j));
                push_best(&mut s.best[i], v);
                push_best(&mut s.best[j], v);
            }
        }
    } else {
        // Centre on the neighbourhood mean, in float64, before rounding to float32.
        let mut mean = vec![0.0f64; d];
        for j in 0..k {
            for (m, v) in mean.iter_mut().zip(row(j)) {
                *m += *v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= k as f64);
        s.y.resize(k * d, 0.0);
        for j in 0..k {
            for ((y, v), m) in s.y[j * d..(j + 1) * d].iter_mut().zip(row(j)).zip(&mean) {
                *y = (*v as f64 - m) as f32;
            }
        }
        s.norms.clear();
        s.norms.extend(s.y.chunks_exact(d).map(sq_norm_f64));
        let max_norm = s.norms.iter().fold(0.0f64, |a, b| a.max(*b)).sqrt();
        s.gram.resize(k * k, 0.0);
        cross_product(&mut s.gram, &s.y, k, &s.y, k, d, 1.0);
        let gamma = (d as f64 + 6.0) * (f32::EPSILON as f64 / 2.0);
        for i in 0..k {
            // The three smallest approximate squared distances from point i.
            let mut top = [(f64::INFINITY, usize::MAX); 3];
            for j in (0..k).filter(|j| *j != i) {
                let v = s.norms[i] + s.norms[j] - 2.0 * s.gram[i * k + j] as f64;
                if v < top[2].0 {
                    top[2] = (v, j);
                    if top[2].0 < top[1].0 {
                        top.swap(1, 2);
                        if top[1].0 < top[0].0 {
                            top.swap(0, 1);
                        }
                    }
                }
            }
            let bound = 2.0 * gamma * (s.norms[i].sqrt() + max_norm).powi(2) * 1.0001;
            if k == 3 || top[2].0 - top[1].0 > 2.0 * bound {
                push_best(&mut s.best[i], sq_dist_f64(row(i), row(top[0].1)));
                push_best(&mut s.best[i], sq_dist_f64(row(i), row(top[1].1)));
            } else {
                // Too close to call: re-rank exactly every point that can be among the two nearest.
                fallbacks += 1;
                let edge = top[1].0 + 2.0 * bound;
                for j in (0..k).filter(|j| *j != i) {
                    if s.norms[i] + s.norms[j] - 2.0 * s.gram[i * k + j] as f64 <= edge {
                        push_best(&mut s.best[i], sq_dist_f64(row(i), row(j)));
                    }
                }
            }
        }
    }
    s.mu.clear();
    s.mu.extend(s.best.iter().map(|(a, b)| b.sqrt() / a.sqrt()));
    fallbacks
}

#[inline]
fn push_best(best: &mut (f64, f64), v: f64) {
    if v < best.0 {
        best.1 = best.0;
        best.0 = v;
    } else if v < best.1 {
        best.1 = v;
    }
}
