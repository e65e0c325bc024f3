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
/// fused multiply-adds of the sum: about 1e-16 relative, whatever the vectors' distance from the
/// origin. Element `i` goes to accumulator `i % 32` and the accumulators are summed in a fixed
/// tree, so the AVX-512 path (four vectors of eight, enough to hide the FMA latency) and the
/// portable one give the same bits, on any CPU and for any number of threads.
#[inline(always)]
pub(crate) fn sq_dist_f64(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "sq_dist_f64: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if crate::isa::has_avx512() {
        // SAFETY: AVX-512F is available (checked); the slices have equal length (asserted).
        return unsafe { sq_dist_f64_avx512(a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::isa::has_avx2() {
        // SAFETY: AVX2 and FMA are available (checked).
        return unsafe { sq_dist_f64_fma(a, b) };
    }
    // Without hardware FMA, `mul_add` is a library call: correct, slow, and only on CPUs older
    // than 2013.
    sq_dist_f64_portable(a, b)
}

/// [`sq_dist_f64_portable`] compiled with hardware FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sq_dist_f64_fma(a: &[f32], b: &[f32]) -> f64 {
    sq_dist_f64_portable(a, b)
}

/// Accumulators of [`sq_dist_f64`].
const ACC: usize = 32;

/// `((acc[l] + acc[l+8]) + (acc[l+16] + acc[l+24]))` per lane `l < 8`, then the eight lanes as
/// `((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))`: the reduction both paths share.
#[inline(always)]
fn reduce(acc: &[f64; ACC]) -> f64 {
    let lane: [f64; 8] = std::array::from_fn(|l| (acc[l] + acc[l + 8]) + (acc[l + 16] + acc[l + 24]));
    ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]))
}

#[inline(always)]
fn sq_dist_f64_portable(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; ACC];
    let ca = a.chunks_exact(ACC);
    let cb = b.chunks_exact(ACC);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..ACC {
            let d = x[l] as f64 - y[l] as f64;
            acc[l] = d.mul_add(d, acc[l]);
        }
    }
    for (l, (x, y)) in ra.iter().zip(rb).enumerate() {
        let d = *x as f64 - *y as f64;
        acc[l] = d.mul_add(d, acc[l]);
    }
    reduce(&acc)
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
    let n = a.len() / ACC * ACC;
    let mut acc = [_mm512_setzero_pd(); 4];
    let mut i = 0;
    while i < n {
        for (v, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8 * v + 8 <= n <= a.len() == b.len().
            unsafe {
                let x = _mm512_cvtps_pd(_mm256_loadu_ps(a.as_ptr().add(i + 8 * v)));
                let y = _mm512_cvtps_pd(_mm256_loadu_ps(b.as_ptr().add(i + 8 * v)));
                let d = _mm512_sub_pd(x, y);
                *acc = _mm512_fmadd_pd(d, d, *acc);
            }
        }
        i += ACC;
    }
    let mut lanes = [0.0f64; ACC];
    for (v, acc) in acc.iter().enumerate() {
        // SAFETY: lanes holds 32 values.
        unsafe { _mm512_storeu_pd(lanes.as_mut_ptr().add(8 * v), *acc) };
    }
    for (l, (x, y)) in a[n..].iter().zip(&b[n..]).enumerate() {
        let d = *x as f64 - *y as f64;
        lanes[l] = d.mul_add(d, lanes[l]);
    }
    reduce(&lanes)
}

/// Asks the CPU to bring `row` into L1: for rows read in an order no hardware prefetcher can
/// guess (the candidates of an exact re-rank), issued a few rows ahead.
#[inline(always)]
pub(crate) fn prefetch(row: &[f32]) {
    // One address per 64-byte line, and the last value (the row need not start on a line).
    for p in row.iter().step_by(16).chain(row.last()) {
        prefetch_line(p);
    }
}

/// Asks the CPU to bring the cache line holding `value` into L1: for scattered reads whose
/// addresses are known before they are needed.
#[inline(always)]
pub(crate) fn prefetch_line<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((value as *const T).cast::<i8>())
    };
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

    #[test]
    fn distance_paths_agree_to_the_bit() {
        for len in [1usize, 7, 31, 32, 33, 64, 100, 385, 768] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.731).sin() * 3.0 + 7.0).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.377).cos() * 2.0 + 7.0).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
            let got = sq_dist_f64_portable(&a, &b);
            assert!((got - want).abs() <= 1e-14 * want, "len {len}");
            #[cfg(target_arch = "x86_64")]
            if crate::isa::has_avx2() {
                // SAFETY: AVX2 and FMA checked.
                assert_eq!(unsafe { sq_dist_f64_fma(&a, &b) }.to_bits(), got.to_bits(), "len {len}");
            }
            #[cfg(target_arch = "x86_64")]
            if crate::isa::has_avx512() {
                // SAFETY: AVX-512F checked; equal lengths.
                assert_eq!(unsafe { sq_dist_f64_avx512(&a, &b) }.to_bits(), got.to_bits(), "len {len}");
            }
        }
    }
}
