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
        let n = if dim == 0 { 0 } else { data.len() / dim };
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
/// Eight accumulators in a fixed order keep it vectorisable and bitwise deterministic.
#[inline]
pub(crate) fn sq_dist_f64(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] as f64 - y[l] as f64;
            acc[l] += d * d;
        }
    }
    let mut tail = 0.0f64;
    for (x, y) in ra.iter().zip(rb) {
        let d = *x as f64 - *y as f64;
        tail += d * d;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Squared norm of a float32 vector, accumulated in float64.
#[inline]
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
