//! The float32 cross-term product, the only place the kernel calls into a GEMM.
//!
//! `gemm` (the crate under faer) won the benchmark against `matrixmultiply` on these machines
//! (see `lidscope bench`): it dispatches to AVX-512 or AVX2 micro-kernels at run time.

/// `dst[i * n + j] = scale * sum_p a[i * dim + p] * b[j * dim + p]` for `i < m`, `j < n`.
///
/// `a` holds `m` rows and `b` holds `n` rows, both row-major with `dim` values per row; the result
/// is row-major `m x n`. Single-threaded: callers parallelise over blocks so each thread keeps its
/// tile in its own cache.
///
/// # Panics
/// When a buffer is shorter than its shape says.
#[track_caller]
pub(crate) fn cross_product(dst: &mut [f32], a: &[f32], m: usize, b: &[f32], n: usize, dim: usize, scale: f32) {
    assert!(a.len() >= m * dim && b.len() >= n * dim && dst.len() >= m * n, "cross_product: buffer shorter than its shape");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the assert above proves that `a` holds m*dim, `b` holds n*dim and `dst` holds m*n
    // values; the strides below address exactly a[i*dim + p], b[j*dim + p] (read as the transpose)
    // and dst[i*n + j] for i < m, j < n, p < dim. `dst` is a unique borrow, so nothing aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            dim,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            dim as isize,
            b.as_ptr(),
            dim as isize,
            1,
            0.0f32,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product() {
        let (m, n, dim) = (5, 7, 13);
        let a: Vec<f32> = (0..m * dim).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n * dim).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut dst = vec![0.0f32; m * n];
        cross_product(&mut dst, &a, m, &b, n, dim, -2.0);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..dim).map(|p| a[i * dim + p] as f64 * b[j * dim + p] as f64).sum::<f64>() * -2.0;
                assert!((dst[i * n + j] as f64 - want).abs() < 1e-4, "{i},{j}");
            }
        }
    }
}
