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

/// One core's peak rate of the multiply-add instructions a candidate search could be built
/// on, in billions of scalar multiply-adds per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MacRates {
    /// `vfmadd231ps` (16 float32 multiply-adds), or the widest FMA the CPU has.
    pub fma_f32: f64,
    /// `vdpbf16ps` (32 bfloat16 products summed in pairs into float32), where the CPU has it.
    pub dot_bf16: Option<f64>,
    /// `vpdpbusd` (64 byte products summed in fours into `i32`), where the CPU has AVX512_VNNI:
    /// the int8 candidate search's instruction.
    pub dot_int8: Option<f64>,
    /// `vpdpwssd` (32 sixteen-bit products summed in pairs into `i32`), AVX512_VNNI: the int16
    /// candidate search's instruction.
    pub dot_int16: Option<f64>,
}

/// Measures [`MacRates`] on the calling thread: independent accumulator chains, at least as
/// many as each instruction's latency times its throughput, best of three.
///
/// This is the measurement behind the choice of candidate search: a bfloat16 one pays off only
/// where `dot_bf16` is well above `fma_f32` (it is not, here), the int8 one where `dot_int8` is.
pub fn mac_rates() -> MacRates {
    const STEPS: usize = 20_000_000;
    let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(0.0f64, f64::max);
    #[cfg(target_arch = "x86_64")]
    {
        if crate::isa::has_avx512() {
            let fma = best(&|| {
                let t = Instant::now();
                // SAFETY: AVX-512F checked above.
                std::hint::black_box(unsafe { chains_fma512(STEPS) });
                (8 * 16 * STEPS) as f64 / t.elapsed().as_secs_f64() / 1e9
            });
            let bf16 = std::arch::is_x86_feature_detected!("avx512bf16").then(|| {
                best(&|| {
                    let t = Instant::now();
                    // SAFETY: AVX-512F and AVX512_BF16 checked above.
                    std::hint::black_box(unsafe { chains_dpbf16(STEPS) });
                    (8 * 32 * STEPS) as f64 / t.elapsed().as_secs_f64() / 1e9
                })
            });
            let int8 = std::arch::is_x86_feature_detected!("avx512vnni").then(|| {
                best(&|| {
                    let t = Instant::now();
                    // SAFETY: AVX-512F and AVX512_VNNI checked above.
                    std::hint::black_box(unsafe { chains_vnni::<false>(STEPS) });
                    (10 * 64 * STEPS) as f64 / t.elapsed().as_secs_f64() / 1e9
                })
            });
            let int16 = std::arch::is_x86_feature_detected!("avx512vnni").then(|| {
                best(&|| {
                    let t = Instant::now();
                    // SAFETY: AVX-512F and AVX512_VNNI checked above.
                    std::hint::black_box(unsafe { chains_vnni::<true>(STEPS) });
                    (10 * 32 * STEPS) as f64 / t.elapsed().as_secs_f64() / 1e9
                })
            });
            return MacRates { fma_f32: fma, dot_bf16: bf16, dot_int8: int8, dot_int16: int16 };
        }
    }
    let fma = best(&|| {
        let t = Instant::now();
        let mut acc = [0.0f32; 8];
        let x = std::hint::black_box(1.0001f32);
        for _ in 0..STEPS {
            for a in &mut acc {
                *a = a.mul_add(x, 1e-7);
            }
        }
        std::hint::black_box(acc);
        (8 * STEPS) as f64 / t.elapsed().as_secs_f64() / 1e9
    });
    MacRates { fma_f32: fma, dot_bf16: None, dot_int8: None, dot_int16: None }
}

/// # Safety
/// AVX-512F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_fma512(steps: usize) -> f32 {
    use std::arch::x86_64::*;
    let x = _mm512_set1_ps(std::hint::black_box(1.0001));
    let y = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_setzero_ps(); 8];
    for _ in 0..steps {
        for a in &mut acc {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    acc.iter().fold(0.0, |s, a| s + _mm512_reduce_add_ps(*a))
}

/// `vpdpwssd` chains when `WIDE` (sixteen-bit ones: each step adds 2 to every lane), else
/// `vpdpbusd` (bytes of one: 4 per step); lanes wrap harmlessly.
///
/// # Safety
/// AVX-512F and AVX512_VNNI must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn chains_vnni<const WIDE: bool>(steps: usize) -> i32 {
    use std::arch::x86_64::*;
    let ones = _mm512_set1_epi32(std::hint::black_box(if WIDE { 0x0001_0001 } else { 0x0101_0101 }));
    // Ten chains: the instructions' latency (5 cycles) times their throughput (2 per cycle).
    let mut acc = [_mm512_setzero_si512(); 10];
    for _ in 0..steps {
        for a in &mut acc {
            *a = if WIDE { _mm512_dpwssd_epi32(*a, ones, ones) } else { _mm512_dpbusd_epi32(*a, ones, ones) };
        }
    }
    acc.iter().fold(0, |s, a| s.wrapping_add(_mm512_reduce_add_epi32(*a)))
}

/// # Safety
/// AVX-512F and AVX512_BF16 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn chains_dpbf16(steps: usize) -> f32 {
    use std::arch::x86_64::*;
    // Pairs of bfloat16 ones and zeros: the sums stay small and normal.
    let ones = _mm512_set1_epi32(std::hint::black_box(0x3f80_3f80_u32 as i32));
    let zeros = _mm512_setzero_si512();
    // SAFETY: __m512i and __m512bh are both 512-bit vectors; every bit pattern is valid for both.
    let (x, y): (__m512bh, __m512bh) = unsafe { (std::mem::transmute::<__m512i, __m512bh>(ones), std::mem::transmute::<__m512i, __m512bh>(zeros)) };
    let mut acc = [_mm512_setzero_ps(); 8];
    for _ in 0..steps {
        for a in &mut acc {
            *a = _mm512_dpbf16_ps(*a, x, y);
        }
    }
    acc.iter().fold(0.0, |s, a| s + _mm512_reduce_add_ps(*a))
}
