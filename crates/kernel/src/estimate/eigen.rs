//! Eigenvalues of a small dense symmetric matrix, in float64.
//!
//! Local PCA needs the spectrum (no vectors) of a `k x k` Gram or `d x d` covariance matrix per
//! query, `k` and `d` up to a few hundred. Cyclic Jacobi would cost about ten sweeps of `4 n^3`
//! flops; Householder reduction to tridiagonal form (`4/3 n^3`) followed by implicit QL with
//! Wilkinson shifts (`O(n^2)` without vectors) costs a tenth of that and is just as backward
//! stable: every computed eigenvalue is within a small multiple of `n * eps * ||A||` of an exact
//! one, the accuracy of the LAPACK SVD behind scikit-learn's `PCA().explained_variance_`.
//!
//! The work is sequential with a fixed operation order, so the result does not depend on threads.

/// Sweeps of implicit QL allowed per eigenvalue before giving up (LAPACK allows 30; the shifted
/// iteration converges cubically, in two or three steps, for any symmetric tridiagonal matrix).
const MAX_QL_ITERATIONS: usize = 60;

/// Eigenvalues of the symmetric `n x n` matrix `a` (row-major; only the lower triangle is read,
/// and `a` is overwritten), sorted descending, into `out`.
///
/// Returns `false` (with `out` filled by NaN) in the practically impossible case that the QL
/// iteration does not converge.
///
/// # Panics
/// When `a.len() != n * n`.
#[track_caller]
pub fn symmetric_eigenvalues(a: &mut [f64], n: usize, out: &mut Vec<f64>) -> bool {
    assert_eq!(a.len(), n * n, "symmetric_eigenvalues: a must hold n x n values");
    eigenvalues_isa(a, n, out)
}

crate::multiversion! {
    /// [`symmetric_eigenvalues`] compiled for the CPU's widest vectors. The code has no fused
    /// multiply-adds and fixed reduction orders, so every version gives the same bits.
    fn eigenvalues_isa(a: &mut [f64], n: usize, out: &mut Vec<f64>) -> bool => eigenvalues_body
}

#[inline(always)]
pub(super) fn eigenvalues_body(a: &mut [f64], n: usize, out: &mut Vec<f64>) -> bool {
    out.clear();
    if n == 0 {
        return true;
    }
    // Scale by a power of two (exact) so that the largest entry lies in [1, 2): then no square
    // in the QL rotations can overflow or lose the spectrum to underflow, and a plain square
    // root replaces libm's slow `hypot`.
    let max = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        out.resize(n, if max == 0.0 { 0.0 } else { f64::NAN });
        return max == 0.0;
    }
    let scale = 2f64.powi(-(max.log2().floor() as i32));
    a.iter_mut().for_each(|v| *v *= scale);
    let mut e = vec![0.0f64; n];
    tridiagonalise(a, n, out, &mut e);
    if !tridiagonal_ql(out, &mut e) {
        out.iter_mut().for_each(|v| *v = f64::NAN);
        return false;
    }
    out.iter_mut().for_each(|v| *v /= scale);
    out.sort_unstable_by(|x, y| y.total_cmp(x));
    true
}

/// Householder reduction of the lower triangle of `a` to tridiagonal form: diagonal into `d`,
/// sub-diagonal into `e[0..n-1]` (`e[n-1] = 0`). Each step reflects the column below the
/// diagonal onto its first entry, `A <- H A H` with `H = I - 2 v v^T`, applied as the rank-2
/// update `A - 2 v w^T - 2 w v^T`, `w = p - (v^T p) v`, `p = A v` (Golub and Van Loan 8.3.1).
#[inline(always)]
fn tridiagonalise(a: &mut [f64], n: usize, d: &mut Vec<f64>, e: &mut [f64]) {
    // Mirror the lower triangle so that rows can be read contiguously.
    for i in 0..n {
        for j in 0..i {
            a[j * n + i] = a[i * n + j];
        }
    }
    let mut v = vec![0.0f64; n];
    let mut p = vec![0.0f64; n];
    for c in 0..n.saturating_sub(2) {
        let lo = c + 1;
        // x = A[lo.., c], scaled to avoid overflow and underflow in the norm.
        let scale = (lo..n).fold(0.0f64, |m, i| m.max(a[i * n + c].abs()));
        if scale == 0.0 {
            e[c] = 0.0;
            continue;
        }
        let mut norm2 = 0.0;
        for i in lo..n {
            v[i] = a[i * n + c] / scale;
            norm2 += v[i] * v[i];
        }
        let norm = norm2.sqrt();
        // alpha = -sign(x0) |x|, so that v0 = x0 - alpha does not cancel.
        let alpha = if v[lo] >= 0.0 { -norm } else { norm };
        v[lo] -= alpha;
        // |v|^2 = |x|^2 - 2 alpha x0 + alpha^2 = 2 (|x|^2 - alpha x0).
        let vnorm2 = 2.0 * (norm2 - alpha * (v[lo] + alpha));
        e[c] = alpha * scale;
        if vnorm2 == 0.0 {
            continue;
        }
        let inv = 1.0 / vnorm2.sqrt();
        for vi in &mut v[lo..n] {
            *vi *= inv;
        }
        // p = A[lo.., lo..] v
        for i in lo..n {
            let row = &a[i * n + lo..i * n + n];
            p[i] = dot(row, &v[lo..n]);
        }
        let kappa = dot(&v[lo..n], &p[lo..n]);
        for i in lo..n {
            p[i] -= kappa * v[i];
        }
        // A <- A - 2 v w^T - 2 w v^T on the trailing block (both triangles, to keep rows whole).
        for i in lo..n {
            let (vi, wi) = (2.0 * v[i], 2.0 * p[i]);
            let row = &mut a[i * n + lo..i * n + n];
            for ((x, vj), wj) in row.iter_mut().zip(&v[lo..n]).zip(&p[lo..n]) {
                *x -= vi * wj + wi * vj;
            }
        }
    }
    d.clear();
    d.extend((0..n).map(|i| a[i * n + i]));
    if n >= 2 {
        e[n - 2] = a[(n - 1) * n + n - 2];
    }
    e[n - 1] = 0.0;
}

/// Implicit QL with Wilkinson shifts on the symmetric tridiagonal matrix (`d` diagonal, `e`
/// sub-diagonal with `e[n-1] = 0`); the eigenvalues replace `d` (unsorted). The algorithm of
/// `tqli` (Numerical Recipes 11.4) without eigenvectors. The matrix is scaled to entries of
/// order 1 (the caller), so `sqrt(f^2 + g^2)` neither overflows nor underflows where it matters.
#[inline(always)]
fn tridiagonal_ql(d: &mut [f64], e: &mut [f64]) -> bool {
    let n = d.len();
    for l in 0..n {
        let mut iterations = 0;
        loop {
            // Find a negligible sub-diagonal element to split the matrix at.
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iterations += 1;
            if iterations > MAX_QL_ITERATIONS {
                return false;
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = (g * g + 1.0).sqrt();
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut underflow = false;
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = (f * f + g * g).sqrt();
                e[i + 1] = r;
                if r == 0.0 {
                    // Recover from underflow: deflate and restart this eigenvalue.
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    true
}

/// Dot product in float64 with 32 accumulators (four AVX-512 or eight AVX2 vectors: enough
/// independent sums to hide the add latency), summed in a fixed tree.
#[inline(always)]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    const L: usize = 32;
    let mut acc = [0.0f64; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[l] += x * y;
    }
    let mut w = L;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Q diag(w) Q^T` for an orthogonal `Q` from Gram-Schmidt on pseudo-random vectors.
    fn with_spectrum(w: &[f64], seed: u64) -> Vec<f64> {
        let n = w.len();
        let mut s = seed | 1;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let mut q: Vec<Vec<f64>> = Vec::new();
        while q.len() < n {
            let mut v: Vec<f64> = (0..n).map(|_| rnd()).collect();
            for _ in 0..2 {
                for u in &q {
                    let c = dot(&v, u);
                    v.iter_mut().zip(u).for_each(|(x, y)| *x -= c * y);
                }
            }
            let norm = dot(&v, &v).sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            q.push(v);
        }
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|t| q[t][i] * w[t] * q[t][j]).sum();
            }
        }
        a
    }

    fn check(w: &[f64], seed: u64) {
        let mut a = with_spectrum(w, seed);
        let mut got = Vec::new();
        assert!(symmetric_eigenvalues(&mut a, w.len(), &mut got));
        let mut want = w.to_vec();
        want.sort_unstable_by(|x, y| y.total_cmp(x));
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-12 * scale, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn known_spectra() {
        check(&[3.0], 1);
        check(&[2.0, -1.0], 2);
        check(&[5.0, 4.0, 3.0, 2.0, 1.0], 3);
        // Repeated and zero eigenvalues, and a wide range of magnitudes.
        check(&[1.0, 1.0, 1.0, 0.0, 0.0, 1e-9, 2.0, 2.0], 4);
        let w: Vec<f64> = (0..130).map(|i| (-(i as f64) / 10.0).exp()).collect();
        check(&w, 5);
        let w: Vec<f64> = (0..40).map(|i| if i < 7 { 1e-7 * (i + 1) as f64 } else { 0.0 }).collect();
        check(&w, 6);
    }

    #[test]
    fn diagonal_and_empty() {
        let mut a = vec![1.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 2.0];
        let mut out = Vec::new();
        assert!(symmetric_eigenvalues(&mut a, 3, &mut out));
        assert_eq!(out, vec![3.0, 2.0, 1.0]);
        assert!(symmetric_eigenvalues(&mut [], 0, &mut out));
        assert!(out.is_empty());
    }
}
