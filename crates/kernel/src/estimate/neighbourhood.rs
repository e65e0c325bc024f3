//! The estimators beside TwoNN, each a pure function of one neighbourhood, written to give
//! scikit-dimension's numbers (the version each follows is named on it; the fixtures README
//! lists the golden files that pin them down).
//!
//! - From the query's own `k` distances `T_1 <= ... <= T_k`: Levina-Bickel maximum likelihood
//!   ([`mle_from_distances`]) and the method of moments ([`mom_from_distances`]).
//! - From those and the members' pairwise distances: the tight local estimator
//!   ([`tle_from_distances`]).
//! - From the members' ratios `r2/r1` inside the neighbourhood: TwoNN in scikit-dimension 0.5.0's
//!   convention ([`fit_ratios_v05`]).
//! - From the spectrum of the members' covariance ([`lpca_spectrum`]): local PCA in six versions
//!   ([`lpca_from_spectrum`]).
//!
//! Everything is float64 and sequential, so a result does not depend on the thread it ran on.

use super::eigen::eigenvalues_body;
use super::twonn::kept_ratios;

/// scikit-dimension's default `epsilon` of `TLE`: measurements and distances below it are dropped.
pub const TLE_EPSILON: f64 = 1e-4;

/// Levina-Bickel maximum likelihood from the query's `k` neighbour distances (ascending or not):
/// `(k - 1) / sum_j ln(T_k / T_j)`, or `(k - 2) / ...` when `unbiased` (scikit-dimension 0.3.4
/// `MLE()._maxLikPointwiseDimEst`, `dnoise=None`, the Haro approximation; `T_k` is the largest).
///
/// A zero distance (a duplicate of the query among its neighbours) makes the sum infinite and the
/// estimate 0, as in numpy; all distances zero give NaN.
pub fn mle_from_distances(dists: &[f64], unbiased: bool) -> f64 {
    let k = dists.len();
    let kfac = if unbiased { k as f64 - 2.0 } else { k as f64 - 1.0 };
    let rk = dists.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
    let sum: f64 = dists.iter().map(|t| (rk / t).ln()).sum();
    kfac / sum
}

/// Method of moments from the query's `k` neighbour distances, ascending: `-m1 / (m1 - T_k)` with
/// `m1` their mean (scikit-dimension 0.3.4 `MOM()._mom`). All distances equal give NaN or infinity
/// (0 / 0, x / 0), as in numpy.
pub fn mom_from_distances(dists: &[f64]) -> f64 {
    let k = dists.len();
    let w = dists[k - 1];
    let m1 = dists.iter().sum::<f64>() / k as f64;
    -m1 / (m1 - w)
}

/// The tight local estimator with central measurements and reflections, exactly as
/// scikit-dimension 0.5.0's `TLE()._idtle(nn, dists)` (0.3.4 indexes the neighbour matrix wrongly).
///
/// `dists` are the query's `k` neighbour distances, ascending; `pairwise` the members' `k x k`
/// distance matrix (row-major, in the same order). For each ordered pair `(i, j)`, `i != j`, two
/// measurements `s_ij`, `t_ij` of the neighbourhood radius are formed; the special cases are
/// skdim's, in its order: `T_i = T_k` (repeated k-th distance), `T_i = 0`, `T_j = 0`, `v_ij = 0`
/// (duplicate members: dropped), measurements below `epsilon` or NaN (dropped). Distances below
/// `epsilon` are dropped from the query's own sum, and when (almost) all distances are equal the
/// estimate is 0. `T_k = 0` (skdim raises) gives NaN.
///
/// # Panics
/// When `pairwise` is not `k x k`.
#[track_caller]
pub fn tle_from_distances(dists: &[f64], pairwise: &[f64], epsilon: f64) -> f64 {
    let k = dists.len();
    assert_eq!(pairwise.len(), k * k, "tle_from_distances: pairwise must be k x k");
    let r = dists[k - 1];
    if r == 0.0 {
        return f64::NAN;
    }
    let r2 = r * r;
    let (mut s1t, mut s1s) = (0.0f64, 0.0f64);
    let (mut n_ts_eps, mut n_v0) = (0usize, 0usize);
    let (mut pt, mut ps) = (LnProduct::default(), LnProduct::default());
    for i in 0..k {
        let di = dists[i];
        let di2 = di * di;
        let rd = r2 - di2;
        for j in 0..k {
            if j == i {
                continue;
            }
            let dj = dists[j];
            let dj2 = dj * dj;
            let v = pairwise[i * k + j];
            let v2 = v * v;
            let z2 = 2.0 * di2 + 2.0 * dj2 - v2;
            let (mut s, mut t);
            if di == r {
                // Repeating k-NN distances.
                s = r * v2 / (r2 + v2 - dj2);
                t = r * z2 / (r2 + z2 - dj2);
            } else {
                let b = di2 + v2 - dj2;
                s = r * ((b * b + 4.0 * v2 * rd).sqrt() - b) / (2.0 * rd);
                let b = di2 + z2 - dj2;
                t = r * ((b * b + 4.0 * z2 * rd).sqrt() - b) / (2.0 * rd);
            }
            if di == 0.0 {
                s = dj;
                t = dj;
            }
            if dj == 0.0 {
                s = r * v / (r + v);
                t = s;
            }
            if v == 0.0 {
                s = r;
                t = r;
                n_v0 += 1;
            }
            if t < epsilon || s < epsilon || t.is_nan() || s.is_nan() {
                s = r;
                t = r;
                n_ts_eps += 1;
            }
            pt.push(t / r);
            ps.push(s / r);
        }
        // One logarithm per row instead of one per measurement (the logs were two thirds of
        // the arithmetic); the row sums are added in order as skdim's matrix sum would.
        s1t += pt.take_ln();
        s1s += ps.take_ln();
    }
    // dists is ascending: those below epsilon are a prefix.
    let n_deps = dists.iter().filter(|d| **d < epsilon).count();
    let s2: f64 = dists[n_deps..].iter().map(|d| (d / r).ln()).sum();
    if s1t + s1s > -epsilon {
        return 0.0;
    }
    let count = (k * k) as f64 - n_ts_eps as f64 - n_deps as f64 - n_v0 as f64;
    -2.0 * count / (s1t + s1s + 2.0 * s2)
}

/// `ln` of a product of positive factors, accumulated as a mantissa in [1, 2) and a binary
/// exponent so that it neither overflows nor underflows: one logarithm for many. A factor that is
/// not a positive normal number (infinite, NaN, zero, subnormal) is added as its own logarithm,
/// so the result equals the sum of the factors' logarithms to rounding.
#[derive(Clone, Copy)]
struct LnProduct {
    mantissa: f64,
    exponent: i64,
    /// Logarithms of the factors that could not be multiplied in.
    rest: f64,
}

impl Default for LnProduct {
    fn default() -> Self {
        LnProduct { mantissa: 1.0, exponent: 0, rest: 0.0 }
    }
}

impl LnProduct {
    const EXPONENT_MASK: u64 = 0x7ff << 52;

    #[inline(always)]
    fn push(&mut self, v: f64) {
        if !(v.is_normal() && v > 0.0) {
            self.rest += v.ln();
            return;
        }
        // mantissa in [1, 2) times v in the normal range stays normal and finite.
        let m = self.mantissa * v;
        let bits = m.to_bits();
        self.exponent += ((bits & Self::EXPONENT_MASK) >> 52) as i64 - 1023;
        self.mantissa = f64::from_bits((bits & !Self::EXPONENT_MASK) | (1023 << 52));
    }

    /// The logarithm of the product so far; resets to the empty product.
    #[inline(always)]
    fn take_ln(&mut self) -> f64 {
        let v = self.mantissa.ln() + self.exponent as f64 * std::f64::consts::LN_2 + self.rest;
        *self = Self::default();
        v
    }
}

/// TwoNN (least squares through the origin) in scikit-dimension 0.5.0's convention, on a
/// neighbourhood's ratios `mu = r2/r1` (reordered in place): ratios that are not finite
/// (`r1 = 0`: a member with a duplicate) are dropped first; of the `N` left, the smallest
/// `n = floor(N (1 - f))` are kept, with the empirical CDF `(i + 1) / N` (0.3.4 and
/// [`super::fit_ratios`]: `i / N` over all ratios). NaN when fewer than two are kept (skdim raises).
pub fn fit_ratios_v05(mu: &mut [f64], discard_fraction: f64) -> f64 {
    let mut finite = 0;
    for at in 0..mu.len() {
        if mu[at].is_finite() {
            mu.swap(finite, at);
            finite += 1;
        }
    }
    let mu = &mut mu[..finite];
    let total = mu.len();
    let n = kept_ratios(total, discard_fraction).min(total);
    if n < 2 {
        return f64::NAN;
    }
    mu.sort_unstable_by(f64::total_cmp);
    let (mut sxy, mut sxx) = (0.0f64, 0.0f64);
    for (i, m) in mu[..n].iter().enumerate() {
        let x = m.ln();
        let y = -(1.0 - (i + 1) as f64 / total as f64).ln();
        sxy += x * y;
        sxx += x * x;
    }
    sxy / sxx
}

/// Reusable buffers for [`lpca_spectrum`].
#[derive(Default, Debug)]
pub struct SpectrumScratch {
    centred: Vec<f64>,
    transposed: Vec<f64>,
    matrix: Vec<f64>,
}

/// The lower triangle (by blocks; at least every `j <= i`) of `Y^T Y` into `out` (`m x m`,
/// row-major), for `Y` stored coordinate-major: `yt` holds `len` lines of `mp` values (`mp` =
/// `m` rounded up to [`GRAM_COLS`], padding zero), line `p` = coordinate `p` of every row.
///
/// The shape of the float32 neighbourhood kernel ([`super::gram`]): each step broadcasts
/// [`GRAM_ROWS`] values of one coordinate and multiplies them into [`GRAM_COLS`] contiguous
/// ones, all accumulators in registers. Every entry is the sum over `p` in order, wherever its
/// block lies, so the result is deterministic (and, without fused multiply-adds, the same on
/// every CPU).
#[inline(always)]
fn gram_lower(yt: &[f64], m: usize, mp: usize, len: usize, out: &mut [f64]) {
    const R: usize = GRAM_ROWS;
    const C: usize = GRAM_COLS;
    debug_assert!(mp.is_multiple_of(C) && mp >= m && yt.len() >= len * mp);
    for ib in (0..m).step_by(R) {
        let mut jb = 0;
        while jb < (ib + R).min(m) {
            let mut acc = [[0.0f64; C]; R];
            for line in yt.chunks_exact(mp).take(len) {
                let b: &[f64; C] = line[jb..jb + C].try_into().expect("C values");
                let a: [f64; R] = std::array::from_fn(|r| if ib + r < mp { line[ib + r] } else { 0.0 });
                for r in 0..R {
                    for c in 0..C {
                        acc[r][c] += a[r] * b[c];
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let i = ib + r;
                if i >= m {
                    break;
                }
                let hi = (jb + C).min(i + 1);
                if hi > jb {
                    out[i * m + jb..i * m + hi].copy_from_slice(&row[..hi - jb]);
                }
            }
            jb += C;
        }
    }
}

/// Rows per register block of [`gram_lower`].
const GRAM_ROWS: usize = 4;
/// Columns per register block of [`gram_lower`] (two AVX-512 or four AVX2 vectors of float64).
const GRAM_COLS: usize = 16;

/// The spectrum scikit-learn's `PCA().fit(rows).explained_variance_` gives: the eigenvalues of
/// the rows' covariance (centred on their mean, divided by `k - 1`), descending, `min(k, d)` of
/// them (with `k <= d`, the last is the zero that centring leaves), negative roundoff clamped to 0
/// (squared singular values are never negative).
///
/// Of the `d x d` covariance and the `k x k` Gram matrix of the centred rows, which share their
/// non-zero spectrum, the smaller is decomposed: the Gram matrix when `k < d`. The rows are first
/// shifted by the first row (exact: a difference of two float32 values is a float64), so the
/// centring keeps its digits however far the neighbourhood sits from the origin.
///
/// # Panics
/// When fewer than two rows are given or the rows differ in length.
#[track_caller]
pub fn lpca_spectrum(rows: &[&[f32]], scratch: &mut SpectrumScratch, out: &mut Vec<f64>) {
    assert!(rows.len() >= 2, "lpca_spectrum: at least two rows");
    let d = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == d), "lpca_spectrum: rows differ in length");
    spectrum_isa(rows, scratch, out)
}

crate::multiversion! {
    /// [`lpca_spectrum`] compiled for the CPU's widest vectors (same bits on every version: no
    /// fused multiply-adds, fixed reduction orders).
    fn spectrum_isa(rows: &[&[f32]], scratch: &mut SpectrumScratch, out: &mut Vec<f64>) -> () => spectrum_body
}

#[inline(always)]
fn spectrum_body(rows: &[&[f32]], scratch: &mut SpectrumScratch, out: &mut Vec<f64>) {
    let k = rows.len();
    let d = rows[0].len();
    let c = &mut scratch.centred;
    c.clear();
    c.resize(k * d, 0.0);
    let origin = rows[0];
    let mut mean = vec![0.0f64; d];
    for (j, row) in rows.iter().enumerate() {
        let cj = &mut c[j * d..(j + 1) * d];
        for ((o, x), x0) in cj.iter_mut().zip(*row).zip(origin) {
            *o = *x as f64 - *x0 as f64;
        }
        for (m, v) in mean.iter_mut().zip(cj.iter()) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= k as f64);
    for cj in c.chunks_exact_mut(d) {
        for (v, m) in cj.iter_mut().zip(&mean) {
            *v -= m;
        }
    }
    let n = k.min(d);
    let a = &mut scratch.matrix;
    a.clear();
    a.resize(n * n, 0.0);
    // Coordinate-major copies, padded: for the Gram matrix (k < d) the k rows' coordinates, for
    // the covariance (k >= d) the d coordinates' values over the rows.
    let (m, len) = if k < d { (k, d) } else { (d, k) };
    let mp = m.div_ceil(GRAM_COLS) * GRAM_COLS;
    let t = &mut scratch.transposed;
    t.clear();
    t.resize(len * mp, 0.0);
    for j in 0..k {
        for p in 0..d {
            let (line, col) = if k < d { (p, j) } else { (j, p) };
            t[line * mp + col] = c[j * d + p];
        }
    }
    gram_lower(t, m, mp, len, a);
    eigenvalues_body(a, n, out);
    let ddof = (k - 1) as f64;
    for v in out.iter_mut() {
        *v = v.max(0.0) / ddof;
    }
}

/// Which local PCA rule turns a spectrum into a dimension, with its thresholds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LpcaVersion {
    /// Fukunaga-Olsen: eigenvalues larger than `alpha` times the largest.
    Fo {
        /// skdim `alphaFO`, default 0.05.
        alpha: f64,
    },
    /// Fan et al.: the first large gap or the point where `beta` of the (noise-corrected)
    /// variance is reached, the noise being the mean eigenvalue past the fraction `p` of variance.
    Fan {
        /// skdim `alphaFan` (gap threshold), default 10.
        alpha: f64,
        /// skdim `betaFan` (variance threshold), default 0.8.
        beta: f64,
        /// skdim `PFan` (variance in non-noise), default 0.95.
        p: f64,
    },
    /// Components needed before the cumulative variance reaches `alpha` of the total, plus one.
    Ratio {
        /// skdim `alphaRatio`, default 0.05.
        alpha: f64,
    },
    /// Participation ratio `(sum l)^2 / sum l^2` (not an integer).
    ParticipationRatio,
    /// Eigenvalues above their mean.
    Kaiser,
    /// The first component whose share of variance falls below the broken-stick distribution.
    BrokenStick,
}

/// Local PCA dimension from a spectrum sorted descending (as from [`lpca_spectrum`]), exactly as
/// scikit-dimension 0.3.4's `lPCA(ver=...)._pcaLocalDimEst` on `explained_variance_`, sums in
/// the same order. Where skdim raises (Fan finding no index), NaN.
pub fn lpca_from_spectrum(version: LpcaVersion, ev: &[f64]) -> f64 {
    let n = ev.len();
    if n == 0 {
        return f64::NAN;
    }
    match version {
        LpcaVersion::Fo { alpha } => ev.iter().filter(|v| **v > alpha * ev[0]).count() as f64,
        LpcaVersion::Ratio { alpha } => {
            let mut cum = Vec::with_capacity(n);
            let mut acc = 0.0;
            for v in ev {
                acc += v;
                cum.push(acc);
            }
            let max = cum.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
            cum.iter().filter(|c| **c / max < alpha).count() as f64 + 1.0
        }
        LpcaVersion::ParticipationRatio => {
            let (mut s, mut s2) = (0.0f64, 0.0f64);
            for v in ev {
                s += v;
            }
            for v in ev {
                s2 += v * v;
            }
            s * s / s2
        }
        LpcaVersion::Kaiser => {
            let mean = ev.iter().sum::<f64>() / n as f64;
            ev.iter().filter(|v| **v > mean).count() as f64
        }
        LpcaVersion::BrokenStick => {
            let total: f64 = ev.iter().sum();
            for (i, v) in ev.iter().enumerate() {
                // distr[i] = (sum_{j >= i} 1 / (j + 1)) / n, summed upwards as skdim does.
                let mut bs = 0.0f64;
                for j in i..n {
                    bs += 1.0 / (j + 1) as f64;
                }
                if bs / n as f64 > v / total {
                    return (i + 1) as f64;
                }
            }
            0.0
        }
        LpcaVersion::Fan { alpha, beta, p } => {
            let total: f64 = ev.iter().sum();
            let mut acc = 0.0;
            let mut r = None;
            for (i, v) in ev.iter().enumerate() {
                acc += v;
                if acc / total > p {
                    r = Some(i);
                    break;
                }
            }
            let Some(r) = r else { return f64::NAN };
            let sigma = ev[r..].iter().sum::<f64>() / (n - r) as f64;
            let shifted: Vec<f64> = ev.iter().map(|v| v - sigma).collect();
            let first_gap = (0..n - 1).find(|&i| shifted[i] / shifted[i + 1] > alpha);
            let total: f64 = shifted.iter().sum();
            let mut acc = 0.0;
            let mut first_beta = None;
            for (i, v) in shifted.iter().enumerate() {
                acc += v;
                if acc / total > beta {
                    first_beta = Some(i);
                    break;
                }
            }
            match (first_gap, first_beta) {
                (Some(a), Some(b)) => 1.0 + a.min(b) as f64,
                (Some(a), None) | (None, Some(a)) => 1.0 + a as f64,
                (None, None) => f64::NAN,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn mle_and_mom_by_hand() {
        let t = [1.0, 2.0, 4.0];
        // (3 - 1) / (ln 4 + ln 2 + ln 1)
        assert!(close(mle_from_distances(&t, false), 2.0 / (4f64.ln() + 2f64.ln())));
        assert!(close(mle_from_distances(&t, true), 1.0 / (4f64.ln() + 2f64.ln())));
        // m1 = 7/3: -(7/3) / (7/3 - 4) = 1.4
        assert!(close(mom_from_distances(&t), 1.4));
        // A duplicate of the query: the log sum is infinite, the estimate 0 (numpy's answer).
        assert_eq!(mle_from_distances(&[0.0, 1.0, 2.0], false), 0.0);
        assert!(mle_from_distances(&[0.0, 0.0, 0.0], false).is_nan());
        assert_eq!(mom_from_distances(&[1.0, 1.0, 1.0]), f64::NEG_INFINITY);
    }

    fn pairwise(points: &[[f64; 2]]) -> Vec<f64> {
        let k = points.len();
        let mut v = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                v[i * k + j] = ((points[i][0] - points[j][0]).powi(2) + (points[i][1] - points[j][1]).powi(2)).sqrt();
            }
        }
        v
    }

    /// The formula evaluated independently (no special case applies): every measurement is
    /// finite and above epsilon.
    #[test]
    fn tle_general_case_by_formula() {
        let q = [0.0f64, 0.0];
        let pts: [[f64; 2]; 4] = [[1.0, 0.0], [0.0, 1.5], [-2.0, 0.3], [0.5, -2.5]];
        let dists: Vec<f64> = pts.iter().map(|p| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt()).collect();
        let v = pairwise(&pts);
        let (k, r) = (4usize, dists[3]);
        let mut sum = 0.0;
        for i in 0..k {
            for j in 0..k {
                if i == j {
                    continue;
                }
                let (di, dj, vij) = (dists[i], dists[j], v[i * k + j]);
                let m = |x2: f64| {
                    if di == r {
                        r * x2 / (r * r + x2 - dj * dj)
                    } else {
                        let b = di * di + x2 - dj * dj;
                        r * ((b * b + 4.0 * x2 * (r * r - di * di)).sqrt() - b) / (2.0 * (r * r - di * di))
                    }
                };
                let z2 = 2.0 * di * di + 2.0 * dj * dj - vij * vij;
                sum += (m(vij * vij) / r).ln() + (m(z2) / r).ln();
            }
        }
        let s2: f64 = dists.iter().map(|d| (d / r).ln()).sum();
        let want = -2.0 * 16.0 / (sum + 2.0 * s2);
        let got = tle_from_distances(&dists, &v, TLE_EPSILON);
        assert!(close(got, want), "{got} vs {want}");
        assert!(got > 0.0 && got.is_finite());
    }

    #[test]
    fn tle_special_cases() {
        // All distances zero: skdim raises; NaN here.
        assert!(tle_from_distances(&[0.0, 0.0], &[0.0; 4], TLE_EPSILON).is_nan());
        // A duplicate member and a member at the query: finite, the dropped pairs counted.
        let pts: [[f64; 2]; 5] = [[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-1.5, -1.5]];
        let dists: Vec<f64> = pts.iter().map(|p| (p[0] * p[0] + p[1] * p[1]).sqrt()).collect();
        let mut order: Vec<usize> = (0..5).collect();
        order.sort_by(|a, b| dists[*a].total_cmp(&dists[*b]));
        let pts: Vec<[f64; 2]> = order.iter().map(|i| pts[*i]).collect();
        let dists: Vec<f64> = order.iter().map(|i| dists[*i]).collect();
        let est = tle_from_distances(&dists, &pairwise(&pts), TLE_EPSILON);
        assert!(est.is_finite() && est > 0.0, "{est}");
        // Every member at the same distance on a circle: finite too (the repeated-r case).
        let circle: Vec<[f64; 2]> = (0..6).map(|i| [(i as f64).cos(), (i as f64).sin()]).collect();
        let est = tle_from_distances(&[1.0; 6], &pairwise(&circle), TLE_EPSILON);
        assert!(est.is_finite(), "{est}");
    }

    #[test]
    fn log_of_products() {
        let mut p = LnProduct::default();
        let mut want = 0.0f64;
        for i in 0..1000 {
            let v = if i % 3 == 0 { 1e-5 * (1 + i) as f64 } else { 1.7 + i as f64 };
            p.push(v);
            want += v.ln();
        }
        let got = p.take_ln();
        assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} vs {want}");
        p.push(f64::INFINITY);
        p.push(2.0);
        assert_eq!(p.take_ln(), f64::INFINITY);
        p.push(0.0);
        assert_eq!(p.take_ln(), f64::NEG_INFINITY);
        assert_eq!(p.take_ln(), 0.0);
    }

    #[test]
    fn twonn_v05_drops_duplicates_and_shifts_the_cdf() {
        // Six ratios, one infinite (r1 = 0) and one NaN (r1 = r2 = 0): N = 4 left, f = 0.25 keeps 3.
        let mut mu = vec![1.5, f64::INFINITY, 1.1, f64::NAN, 2.0, 1.3];
        let got = fit_ratios_v05(&mut mu, 0.25);
        let xs = [1.1f64.ln(), 1.3f64.ln(), 1.5f64.ln()];
        let ys: Vec<f64> = (1..=3).map(|i| -(1.0 - i as f64 / 4.0).ln()).collect();
        let want = xs.iter().zip(&ys).map(|(x, y)| x * y).sum::<f64>() / xs.iter().map(|x| x * x).sum::<f64>();
        assert!(close(got, want), "{got} vs {want}");
        assert!(fit_ratios_v05(&mut [f64::INFINITY, f64::INFINITY, 1.2], 0.1).is_nan());
    }

    fn rows_of(v: &[Vec<f32>]) -> Vec<&[f32]> {
        v.iter().map(|r| r.as_slice()).collect()
    }

    /// Points on a 2-plane in 5-d far from the origin: two non-zero eigenvalues whichever matrix
    /// is decomposed, `min(k, d)` values in all.
    #[test]
    fn spectrum_by_gram_and_by_covariance() {
        let make = |k: usize| -> Vec<Vec<f32>> {
            (0..k)
                .map(|i| {
                    let (a, b) = ((i as f32 * 0.37).sin(), (i as f32 * 0.91).cos() * 0.5);
                    vec![1000.0 + a, 1000.0 + b, 1000.0 + a + b, 1000.0, 1000.0 - a]
                })
                .collect()
        };
        let mut scratch = SpectrumScratch::default();
        for k in [3usize, 4, 5, 9, 40] {
            let rows = make(k);
            let mut ev = Vec::new();
            lpca_spectrum(&rows_of(&rows), &mut scratch, &mut ev);
            assert_eq!(ev.len(), k.min(5));
            assert!(ev[0] > 0.0 && ev[1] > 0.0, "{ev:?}");
            assert!(ev[2..].iter().all(|v| *v <= 1e-9 * ev[0]), "k = {k}: {ev:?}");
            assert_eq!(lpca_from_spectrum(LpcaVersion::Fo { alpha: 1e-6 }, &ev), 2.0, "k = {k}");
            // The trace is the total variance: compare with the per-coordinate variances.
            let total: f64 = (0..5)
                .map(|p| {
                    let m = rows.iter().map(|r| r[p] as f64).sum::<f64>() / k as f64;
                    rows.iter().map(|r| (r[p] as f64 - m).powi(2)).sum::<f64>() / (k - 1) as f64
                })
                .sum();
            assert!((ev.iter().sum::<f64>() - total).abs() <= 1e-9 * total, "k = {k}");
        }
    }

    #[test]
    fn lpca_versions_by_hand() {
        let ev = [4.0, 2.0, 1.0, 0.5, 0.5];
        assert_eq!(lpca_from_spectrum(LpcaVersion::Fo { alpha: 0.05 }, &ev), 5.0);
        assert_eq!(lpca_from_spectrum(LpcaVersion::Fo { alpha: 0.3 }, &ev), 2.0);
        // cumsum / 8 = 0.5, 0.75, 0.875, 0.9375, 1: three below 0.9.
        assert_eq!(lpca_from_spectrum(LpcaVersion::Ratio { alpha: 0.9 }, &ev), 4.0);
        assert_eq!(lpca_from_spectrum(LpcaVersion::Ratio { alpha: 0.05 }, &ev), 1.0);
        assert!(close(lpca_from_spectrum(LpcaVersion::ParticipationRatio, &ev), 64.0 / 21.5));
        // mean 1.6: two above.
        assert_eq!(lpca_from_spectrum(LpcaVersion::Kaiser, &ev), 2.0);
        // broken stick for 5: 0.4567, 0.2567, 0.1567, 0.09, 0.04; shares 0.5, 0.25, ...: the
        // second share is below 0.2567.
        assert_eq!(lpca_from_spectrum(LpcaVersion::BrokenStick, &ev), 2.0);
        // Fan: cumulative shares exceed 0.95 first at index 4 (0.9375 at 3): sigma = 0.5, shifted
        // 3.5, 1.5, 0.5, 0, 0; gaps 2.33, 3, inf: the first above 2.5 is at 1; cumulative shifted
        // shares 0.636, 0.909: beta 0.8 at 1 too.
        assert_eq!(lpca_from_spectrum(LpcaVersion::Fan { alpha: 2.5, beta: 0.8, p: 0.95 }, &ev), 2.0);
        assert_eq!(lpca_from_spectrum(LpcaVersion::Fan { alpha: 10.0, beta: 0.5, p: 0.95 }, &ev), 1.0);
        assert_eq!(lpca_from_spectrum(LpcaVersion::Fan { alpha: 10.0, beta: 0.95, p: 0.95 }, &ev), 3.0);
    }
}
