//! Pointwise LID: the estimator applied to each query's neighbourhood.
//!
//! For each query, TwoNN needs every neighbour's first and second nearest-neighbour distance
//! *inside the neighbourhood*. In low dimensions these come straight from exact float64 pairwise
//! distances. Above [`DIRECT_MAX_DIM`] the `k x k` distances come from a float32 Gram matrix
//! ([`gram`]) of the neighbourhood centred on the query (so the expansion keeps its digits), the
//! two nearest are accepted only when the third is farther by more than the error bound, and the two chosen
//! distances are recomputed in float64. Where the gap is too small, every point within the error
//! window is re-ranked exactly.
//!
//! With the reference rows' own neighbour lists (from [`KnnIndex::self_knn`]) most of that work
//! becomes look-ups: a member's two nearest fellow members are the first two members that appear
//! in its own list, nearest first, whenever the list holds two; every member outside the list is
//! at least as far as the list's last entry. The list's distances are the same exact float64
//! distances the direct path computes, so the result is the same to the bit, ties included. A
//! member whose list holds fewer than two fellow members gets its distances directly; a
//! neighbourhood with many such members takes the direct path whole.

use std::time::Instant;

use rayon::prelude::*;

use super::twonn::{check_discard, fit_ratios, Estimator};
use crate::error::{KernelError, Result};
use super::gram;
use crate::knn::{push_two, KnnIndex, KnnStats, NearestTwo, Neighbours};
use crate::rows::{sq_dist_f64, Rows};

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
    /// Neighbourhood members whose two nearest fellow members were looked up in their lists.
    pub looked_up: u64,
    /// Members computed directly although lists were given (fewer than two fellow members in
    /// their list), including whole neighbourhoods sent to the direct path.
    pub direct_members: u64,
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
    let (nb, knn) = index.knn_for_estimates(queries, cfg.k, exclude)?;
    let (out, mut stats) = lid_from_neighbours(index, queries, &nb, cfg, None)?;
    stats.knn = knn;
    Ok((out, stats))
}

/// LID of every query from neighbourhoods already found (e.g. by [`KnnIndex::self_knn`]).
///
/// Of each neighbourhood's distances only the nearest two and the k-th are read (`r1`, `r2`,
/// `rk`): neighbourhoods from [`KnnIndex::knn_for_estimates`] carry no others.
///
/// `nb` holds `queries.len()` rows of `cfg.k` reference rows, nearest first. `lists`, when given,
/// holds every reference row's nearest other reference rows, nearest first (any length of at
/// least 2, e.g. [`KnnIndex::self_knn`]): the estimates then come mostly from look-ups (module
/// docs), with the same result.
///
/// # Errors
/// Those of [`LidConfig::validate`]; [`KernelError::Shape`] when `nb` does not match the queries,
/// `cfg.k` or the reference, or `lists` does not cover the reference.
pub fn lid_from_neighbours(
    index: &KnnIndex,
    queries: Rows<'_>,
    nb: &Neighbours,
    cfg: &LidConfig,
    lists: Option<&Neighbours>,
) -> Result<(Vec<PointLid>, LidStats)> {
    cfg.validate()?;
    let k = cfg.k;
    if nb.k != k || nb.len() != queries.len() || queries.dim() != index.dim() || nb.indices.iter().any(|r| *r as usize >= index.len()) {
        return Err(KernelError::Shape {
            expected: format!("{} neighbourhoods of {k} rows below {} in dimension {}", queries.len(), index.len(), index.dim()),
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
    let mut out = vec![PointLid::default(); queries.len()];
    let counts: (u64, u64, u64) = out
        .par_chunks_mut(ESTIMATE_CHUNK)
        .enumerate()
        // One scratch per rayon job, not per chunk: its membership table is as long as the
        // reference.
        .map_init(Scratch::default, |s, (c, chunk)| {
            let (mut fallbacks, mut looked_up, mut direct) = (0, 0, 0);
            for (o, p) in chunk.iter_mut().enumerate() {
                let i = c * ESTIMATE_CHUNK + o;
                let (f, l, d) = neighbourhood_mu(index, queries.row(i), nb.indices_of(i), lists, s);
                fallbacks += f;
                looked_up += l;
                direct += d;
                let d = nb.distances_of(i);
                *p = PointLid {
                    lid: fit_ratios(&mut s.mu, cfg.discard_fraction, cfg.estimator),
                    r1: d[0],
                    r2: d[1],
                    rk: d[k - 1],
                };
            }
            (fallbacks, looked_up, direct)
        })
        .reduce(|| (0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    Ok((
        out,
        LidStats {
            knn: KnnStats::default(),
            estimate_seconds: start.elapsed().as_secs_f64(),
            exact_rows: counts.0,
            looked_up: counts.1,
            direct_members: counts.2,
        },
    ))
}

/// Fills `s.mu` with the ratio r2/r1 of every member of one neighbourhood (`members`, of the
/// reference), from the lists when given (module docs), else directly. Returns the counts of
/// [`LidStats`]: (rows recomputed exactly, members looked up, members computed directly although
/// lists were given).
pub(super) fn neighbourhood_mu(index: &KnnIndex, query: &[f32], members: &[u32], lists: Option<&Neighbours>, s: &mut Scratch) -> (u64, u64, u64) {
    let k = members.len() as u64;
    match lists.map(|l| from_lists(index, l, members, s)) {
        Some(Looked::All) => (0, k, 0),
        Some(Looked::Some(missed)) => (0, k - missed as u64, missed as u64),
        Some(Looked::TooFew) => (neighbourhood_ratios(index, query, members, s), 0, k),
        None => (neighbourhood_ratios(index, query, members, s), 0, 0),
    }
}

/// What [`from_lists`] managed.
enum Looked {
    /// Every member's ratio came from its list.
    All,
    /// All but this many members, whose ratios were computed directly.
    Some(usize),
    /// Too many members lack two fellow members in their lists: `s.mu` is not filled, and the
    /// neighbourhood takes the direct path whole.
    TooFew,
}

/// Fills `s.mu` from the members' neighbour lists (module docs).
fn from_lists(index: &KnnIndex, lists: &Neighbours, members: &[u32], s: &mut Scratch) -> Looked {
    let k = members.len();
    if s.member.len() != index.len() {
        s.member = vec![false; index.len()];
    }
    // The members' lists lie scattered over the reference's: their heads are asked for all at
    // once, so the reads below overlap instead of waiting one after another.
    for m in members {
        s.member[*m as usize] = true;
        crate::rows::prefetch_line(&lists.indices_of(*m as usize)[0]);
        crate::rows::prefetch_line(&lists.distances_of(*m as usize)[0]);
    }
    s.mu.clear();
    s.missed.clear();
    for (i, m) in members.iter().enumerate() {
        let (list, dist) = (lists.indices_of(*m as usize), lists.distances_of(*m as usize));
        let mut found = list.iter().zip(dist).filter(|(r, _)| s.member[**r as usize]).map(|(_, d)| *d);
        match (found.next(), found.next()) {
            (Some(r1), Some(r2)) => s.mu.push(r2 / r1),
            _ => {
                s.mu.push(f64::NAN);
                s.missed.push(i);
            }
        }
    }
    for m in members {
        s.member[*m as usize] = false;
    }
    // Each missed member costs k distances; past k / 8 of them (k / 4 when sixteen-bit products
    // bound them first, measured on real hidden states: docs/performance.md) the Gram path is
    // cheaper.
    let most = if index.has_sixteen_bit_rows() { k / 4 } else { k / 8 };
    if s.missed.len() > most {
        return Looked::TooFew;
    }
    if s.missed.is_empty() {
        return Looked::All;
    }
    let missed = std::mem::take(&mut s.missed);
    for &i in &missed {
        let best = index.nearest_two_sq(members[i], members, i, &mut s.nearest);
        s.mu[i] = best.1.sqrt() / best.0.sqrt();
    }
    let n = missed.len();
    s.missed = missed;
    Looked::Some(n)
}

/// Per-worker buffers of the TwoNN ratios.
#[derive(Default)]
pub(super) struct Scratch {
    y: Vec<f32>,
    norms: Vec<f64>,
    gram: Vec<f32>,
    row: Vec<f32>,
    best: Vec<(f64, f64)>,
    /// The ratios of the last neighbourhood filled.
    pub(super) mu: Vec<f64>,
    /// Exact squared distances already computed in this neighbourhood, by pair (k x k, NaN =
    /// not yet); mutual nearest neighbours would otherwise be computed twice.
    exact: Vec<f64>,
    touched: Vec<usize>,
    /// Membership of the current neighbourhood, by reference row (all false between uses).
    member: Vec<bool>,
    /// Members whose lists held fewer than two fellow members.
    missed: Vec<usize>,
    nearest: NearestTwo,
}

impl Scratch {
    /// The exact squared distance of neighbourhood points `i` and `j`, computed once per pair.
    #[inline(always)]
    fn exact(&mut self, k: usize, i: usize, j: usize, a: &[f32], b: &[f32]) -> f64 {
        let at = i.min(j) * k + i.max(j);
        let v = self.exact[at];
        if !v.is_nan() {
            return v;
        }
        let v = sq_dist_f64(a, b);
        self.exact[at] = v;
        self.touched.push(at);
        v
    }
}

crate::multiversion! {
    /// Fills `s.mu` with the ratio r2/r1 of every point of the neighbourhood; returns the number
    /// of rows recomputed exactly.
    fn neighbourhood_ratios(index: &KnnIndex, query: &[f32], nbrs: &[u32], s: &mut Scratch) -> u64 => ratios_body
}

#[inline(always)]
fn ratios_body(index: &KnnIndex, query: &[f32], nbrs: &[u32], s: &mut Scratch) -> u64 {
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
                push_two(&mut s.best[i], v);
                push_two(&mut s.best[j], v);
            }
        }
    } else {
        // Centre the rows on the query while transposing them to the Gram kernel's
        // coordinate-major layout (d x kp; padding columns stay zero). Every neighbour lies within
        // r_k of the query, so the centred norms are as small as around the neighbourhood's mean,
        // and the subtraction is one correctly rounded float32 operation.
        let rows: Vec<&[f32]> = (0..k).map(row).collect();
        let centre = query;
        let kp = gram::padded(k);
        if s.exact.len() != k * k {
            s.exact.clear();
            s.exact.resize(k * k, f64::NAN);
        }
        s.y.clear();
        s.y.resize(d * kp, 0.0);
        transpose_centred(&rows, centre, d, &mut s.y, kp);
        // k independent float64 accumulators, one coordinate at a time.
        s.norms.clear();
        s.norms.resize(k, 0.0);
        for line in s.y.chunks_exact(kp) {
            for (n, v) in s.norms.iter_mut().zip(line) {
                *n += *v as f64 * *v as f64;
            }
        }
        let max_norm = s.norms.iter().fold(0.0f64, |a, b| a.max(*b)).sqrt();
        gram::gram(&mut s.gram, &s.y, k, d);
        let gamma = (d as f64 + 6.0) * (f32::EPSILON as f64 / 2.0);
        // Squared distances from the Gram matrix, in float32 (the error bound below covers the
        // roundings), one row at a time so the row arithmetic vectorises.
        let nf: Vec<f32> = s.norms.iter().map(|n| *n as f32).collect();
        s.row.resize(k, 0.0);
        for i in 0..k {
            let g = &s.gram[i * k..(i + 1) * k];
            for ((v, n), g) in s.row.iter_mut().zip(&nf).zip(g) {
                *v = nf[i] + n - 2.0 * g;
            }
            s.row[i] = f32::INFINITY;
            // The three smallest approximate squared distances from point i.
            let mut top = [(f32::INFINITY, usize::MAX); 3];
            for (j, v) in s.row.iter().enumerate() {
                if *v < top[2].0 {
                    top[2] = (*v, j);
                    if top[2].0 < top[1].0 {
                        top.swap(1, 2);
                        if top[1].0 < top[0].0 {
                            top.swap(0, 1);
                        }
                    }
                }
            }
            let bound = 2.0 * gamma * (s.norms[i].sqrt() + max_norm).powi(2) * 1.0001;
            if k == 3 || (top[2].0 as f64 - top[1].0 as f64) > 2.0 * bound {
                let a = s.exact(k, i, top[0].1, row(i), row(top[0].1));
                let b = s.exact(k, i, top[1].1, row(i), row(top[1].1));
                push_two(&mut s.best[i], a);
                push_two(&mut s.best[i], b);
            } else {
                // Too close to call: re-rank exactly every point that can be among the two nearest.
                fallbacks += 1;
                let edge = top[1].0 as f64 + 2.0 * bound;
                for j in 0..k {
                    if j != i && s.row[j] as f64 <= edge {
                        let v = s.exact(k, i, j, row(i), row(j));
                        push_two(&mut s.best[i], v);
                    }
                }
            }
        }
    }
    for at in s.touched.drain(..) {
        s.exact[at] = f64::NAN;
    }
    s.mu.clear();
    s.mu.extend(s.best.iter().map(|(a, b)| b.sqrt() / a.sqrt()));
    fallbacks
}

/// `y[p * kp + j] = x[j][p] - centre[p]`: 16 x 16 tiles through a local buffer, so that
/// every store writes 16 contiguous values.
#[inline(always)]
fn transpose_centred(x: &[&[f32]], centre: &[f32], d: usize, y: &mut [f32], kp: usize) {
    let k = x.len();
    const T: usize = 16;
    let mut tile = [[0.0f32; T]; T];
    let (kf, df) = (k - k % T, d - d % T);
    for j0 in (0..kf).step_by(T) {
        for p0 in (0..df).step_by(T) {
            let c: &[f32; T] = centre[p0..p0 + T].try_into().expect("T values");
            for (jj, t) in tile.iter_mut().enumerate() {
                let xr: &[f32; T] = x[j0 + jj][p0..p0 + T].try_into().expect("T values");
                for pp in 0..T {
                    t[pp] = xr[pp] - c[pp];
                }
            }
            for pp in 0..T {
                let out: &mut [f32; T] = (&mut y[(p0 + pp) * kp + j0..(p0 + pp) * kp + j0 + T]).try_into().expect("T values");
                for jj in 0..T {
                    out[jj] = tile[jj][pp];
                }
            }
        }
    }
    // Ragged edges: the last k % T rows and d % T coordinates.
    for j in 0..k {
        let p_from = if j < kf { df } else { 0 };
        for p in p_from..d {
            y[p * kp + j] = x[j][p] - centre[p];
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::SearchStrategy;

    /// Points near a 3-d subspace with noise, a few repeated exactly.
    fn cloud(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f32> {
        let basis: Vec<f32> = (0..3 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut x: Vec<f32> = (0..n)
            .flat_map(|_| {
                let c: [f32; 3] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
                let noise: Vec<f32> = (0..d).map(|_| rng.random_range(-0.05..0.05)).collect();
                let basis = &basis;
                (0..d).map(move |p| 2.0 + c[0] * basis[p] + c[1] * basis[d + p] + c[2] * basis[2 * d + p] + noise[p]).collect::<Vec<_>>()
            })
            .collect();
        for (to, from) in [(5, 6), (50, 51), (52, 51)] {
            x.copy_within(from * d..(from + 1) * d, to * d);
        }
        x
    }

    /// Look-ups in lists of any length give the direct path's result to the bit: for reference
    /// rows (self excluded) and for other queries, in the float64 (d <= 64) and Gram paths.
    #[test]
    fn lists_give_the_direct_result_to_the_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for &(n, d, k) in &[(900usize, 40usize, 32usize), (700, 97, 64)] {
            let refs = cloud(&mut rng, n, d);
            let others = cloud(&mut rng, 200, d);
            let rows = Rows::try_new(&refs, n, d).unwrap();
            let index = KnnIndex::new(rows, SearchStrategy::Gemm).unwrap();
            // Indexes with sixteen-bit rows bound the missed members' distances with them first.
            let mut searches = vec![(SearchStrategy::Gemm, None)];
            if crate::int8_search_available(d) {
                searches.push((SearchStrategy::Int8Fine, Some(KnnIndex::new(rows, SearchStrategy::Int8Fine).unwrap())));
                searches.push((SearchStrategy::Int16, Some(KnnIndex::new(rows, SearchStrategy::Int16).unwrap())));
            }
            let cfg = LidConfig { k, ..LidConfig::default() };
            let me: Vec<Option<u32>> = (0..n as u32).map(Some).collect();
            for (queries, exclude) in [(index.rows(), Some(me.as_slice())), (Rows::try_new(&others, 200, d).unwrap(), None)] {
                let (nb, _) = index.knn(queries, k, exclude).unwrap();
                let (want, _) = lid_from_neighbours(&index, queries, &nb, &cfg, None).unwrap();
                for ((strategy, other), m) in searches.iter().flat_map(|s| [2, 3, 8, k].map(|m| (s, m))) {
                    let index = other.as_ref().unwrap_or(&index);
                    let (lists, _) = index.self_knn(m).unwrap();
                    let (got, stats) = lid_from_neighbours(index, queries, &nb, &cfg, Some(&lists)).unwrap();
                    let bits = |p: &PointLid| [p.lid.to_bits(), p.r1.to_bits(), p.r2.to_bits(), p.rk.to_bits()];
                    if let Some(i) = (0..want.len()).find(|i| bits(&got[*i]) != bits(&want[*i])) {
                        panic!("{strategy:?} n={n} d={d} k={k} m={m}: query {i}: {:?} with lists, {:?} without", got[i], want[i]);
                    }
                    assert_eq!(stats.looked_up + stats.direct_members, (queries.len() * k) as u64);
                    if m == k {
                        assert!(stats.looked_up as f64 > 0.9 * (queries.len() * k) as f64, "m = k: {stats:?}");
                    }
                    if m == 2 {
                        assert!(stats.direct_members > 0, "m = 2 leaves members without two fellows: {stats:?}");
                    }
                }
            }
        }
    }
}
