//! The machine's float32 matrix-multiply rate: the baseline that benchmarks divide by.

use std::time::Instant;

/// Best of `repeats` timings of an `m x m x dim` float32 GEMM on all rayon threads, in GFLOP/s.
///
/// Benchmarks report their speed as a ratio to this rate, measured in the same process on the
/// same machine, because these machines are shared and absolute seconds are noisy.
pub fn sgemm_gflops(m: usize, dim: usize, repeats: usize) -> f64 {
    let a: Vec<f32> = (0..m * dim).map(|i| ((i * 7919 % 1000) as f32) * 1e-3).collect();
    let mut c = vec![0.0f32; m * m];
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        // SAFETY: `a` holds m*dim values read as an m x dim row-major matrix and as its transpose;
        // `c` holds m*m values written row-major; the strides stay inside both buffers.
        unsafe {
            gemm::gemm(
                m, m, dim, c.as_mut_ptr(), 1, m as isize, false, a.as_ptr(), 1, dim as isize, a.as_ptr(), dim as isize, 1, 0.0f32,
                1.0f32, false, false, false, gemm::Parallelism::Rayon(0),
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * m * dim) as f64 / best / 1e9
}
