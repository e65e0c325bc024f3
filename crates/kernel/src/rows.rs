//! A checked, borrowed row-major matrix of float32 vectors.

use crate::error::{KernelError, Result};

/// `n` vectors of `dim` float32 values, row-major, borrowed.
///
/// Storage is float32 because that is how embeddings are kept; every reduction that decides a
/// result is done in float64 (see the crate docs).
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    data: &'a [f32],
    n: usize,
    dim: usize,
}

impl<'a> Rows<'a> {
    /// Wraps `data` as `n` rows of `dim` values.
    ///
    /// # Errors
    /// [`KernelError::Shape`] when `dim == 0` or `data.len() != n * dim`.
    pub fn try_new(data: &'a [f32], n: usize, dim: usize) -> Result<Self> {
        if dim == 0 || n.checked_mul(dim) != Some(data.len()) {
            return Err(KernelError::Shape {
                expected: format!("{n} rows x {dim} dims = {} values", n.saturating_mul(dim)),
                got: format!("{} values", data.len()),
            });
        }
        Ok(Self { data, n, dim })
    }

    /// Wraps `data` as rows of `dim` values, deriving the row count.
    ///
    /// # Errors
    /// [`KernelError::Shape`] when `dim == 0` or `data.len()` is not a multiple of `dim`.
    pub fn from_flat(data: &'a [f32], dim: usize) -> Result<Self> {
        let n = data.len().checked_div(dim).unwrap_or(0);
        Self::try_new(data, n, dim)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    #[inline]
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The whole row-major buffer.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Checks that every value is finite.
    ///
    /// # Errors
    /// [`KernelError::NonFinite`] naming the first offending row and element.
    pub fn check_finite(&self) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(p) => Err(KernelError::NonFinite { row: p / self.dim, element: p % self.dim }),
        }
    }
}

/// Squared Euclidean distance of two float32 vectors, accumulated in float64.
///
/// Differences of two float32 values are exact in float64, so the only rounding is in the
/// squares and the sum: about 1e-16 relative, whatever the vectors' distance from the origin.
/// Sixteen accumulators in a fixed order keep it vectorisable and bitwise deterministic.
#[inline(always)]
pub(crate) fn sq_dist_f64(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "sq_dist_f64: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if crate::isa::has_avx512() {
        // SAFETY: AVX-512F is available (checked); the slices have equal length (asserted).
        return unsafe { sq_dist_f64_avx512(a, b) };
    }
    sq_dist_f64_portable(a, b)
}

#[inline(always)]
fn sq_dist_f64_portable(a: &[f32], b: &[f32]) -> f64 {
    const L: usize = 16;
    let mut acc = [0.0f64; L];
    let ca = a.chunks_exact(L);
    let cb = b.chunks_exact(L);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            let d = x[l] as f64 - y[l] as f64;
            acc[l] += d * d;
        }
    }
    let mut tail = 0.0f64;
    for (x, y) in ra.iter().zip(rb) {
        let d = *x as f64 - *y as f64;
        tail += d * d;
    }
    let mut sum = 0.0f64;
    for l in 0..L / 2 {
        sum += acc[l] + acc[l + L / 2];
    }
    sum + tail
}

/// The same sums as [`sq_dist_f64_portable`], lane for lane, with AVX-512 intrinsics (LLVM
/// vectorises the portable loop only 128 bits wide).
///
/// # Safety
/// The CPU must support AVX-512F and `a.len() == b.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sq_dist_f64_avx512(a: &[f32], b: &[f32]) -> f64 {
    use std::arch::x86_64::*;
    let n = a.len() / 16 * 16;
    let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    let mut i = 0;
    while i < n {
        // SAFETY: i + 16 <= n <= a.len() == b.len().
        unsafe {
            let x0 = _mm512_cvtps_pd(_mm256_loadu_ps(a.as_ptr().add(i)));
            let y0 = _mm512_cvtps_pd(_mm256_loadu_ps(b.as_ptr().add(i)));
            let x1 = _mm512_cvtps_pd(_mm256_loadu_ps(a.as_ptr().add(i + 8)));
            let y1 = _mm512_cvtps_pd(_mm256_loadu_ps(b.as_ptr().add(i + 8)));
            let d0 = _mm512_sub_pd(x0, y0);
            let d1 = _mm512_sub_pd(x1, y1);
            lo = _mm512_fmadd_pd(d0, d0, lo);
            hi = _mm512_fmadd_pd(d1, d1, hi);
        }
        i += 16;
    }
    let mut acc = [0.0f64; 16];
    // SAFETY: acc holds 16 values.
    unsafe {
        _mm512_storeu_pd(acc.as_mut_ptr(), lo);
        _mm512_storeu_pd(acc.as_mut_ptr().add(8), hi);
    }
    let mut tail = 0.0f64;
    for (x, y) in a[n..].iter().zip(&b[n..]) {
        let d = *x as f64 - *y as f64;
        tail += d * d;
    }
    let mut sum = 0.0f64;
    for l in 0..8 {
        sum += acc[l] + acc[l + 8];
    }
    sum + tail
}

/// Squared norm of a float32 vector, accumulated in float64.
#[inline(always)]
pub(crate) fn sq_norm_f64(a: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let c = a.chunks_exact(8);
    let r = c.remainder();
    for x in c {
        for l in 0..8 {
            acc[l] += x[l] as f64 * x[l] as f64;
        }
    }
    let tail: f64 = r.iter().map(|v| *v as f64 * *v as f64).sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_checked() {
        let v = vec![0.0f32; 6];
        assert!(Rows::try_new(&v, 2, 3).is_ok());
        assert!(matches!(Rows::try_new(&v, 3, 3), Err(KernelError::Shape { .. })));
        assert!(matches!(Rows::try_new(&v, 6, 0), Err(KernelError::Shape { .. })));
        assert_eq!(Rows::from_flat(&v, 2).unwrap().len(), 3);
    }

    #[test]
    fn non_finite_is_located() {
        let v = vec![0.0, 1.0, 2.0, f32::NAN];
        assert_eq!(
            Rows::try_new(&v, 2, 2).unwrap().check_finite(),
            Err(KernelError::NonFinite { row: 1, element: 1 })
        );
    }

    #[test]
    fn distance_keeps_digits_far_from_origin() {
        // 1e4 from the origin, 1e-3 apart: float32 expansion would return noise here.
        let a: Vec<f32> = (0..37).map(|i| 1.0e4 + i as f32).collect();
        let mut b = a.clone();
        b[5] += 0.0009765625; // exactly representable step at this magnitude
        let d = sq_dist_f64(&a, &b);
        assert_eq!(d, 0.0009765625f64 * 0.0009765625);
    }
}
