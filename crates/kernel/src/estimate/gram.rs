//! The neighbourhood Gram matrix `Y Y^T` (`k x k`, `k` around 128, `d` up to thousands).
//!
//! General GEMM libraries lose most of their speed at this size to packing and dispatch (the
//! `gemm` crate reaches about 60% of its large-matrix rate here). This kernel is written for the
//! shape: `Y` is stored transposed (`d x kp`, `kp` = `k` rounded up to [`COLS`]), each step
//! broadcasts [`ROWS`] values of one coordinate and multiplies them into [`COLS`] contiguous
//! values, with every accumulator held in registers; only blocks on or below the diagonal are
//! computed, then mirrored. AVX-512 has a hand-written micro-kernel; elsewhere the compiler
//! vectorises fixed-size loops (AVX2+FMA build or baseline), selected at run time.

/// Rows per register block.
pub(crate) const ROWS: usize = 4;
/// Columns per register block (two AVX-512 or four AVX2 vectors).
pub(crate) const COLS: usize = 32;

/// `k` rounded up to a whole number of column blocks.
pub(crate) fn padded(k: usize) -> usize {
    k.div_ceil(COLS) * COLS
}

/// Fills `gram` (`k x k`, row-major) with the dot products of the columns of `yt` (`d x kp`,
/// row-major, columns `k..kp` zero).
///
/// # Panics
/// When the buffers are shorter than the shapes say.
#[track_caller]
pub(crate) fn gram(gram: &mut Vec<f32>, yt: &[f32], k: usize, d: usize) {
    let kp = padded(k);
    assert!(yt.len() >= d * kp, "gram: yt shorter than d x kp");
    let mut full = vec![0.0f32; kp * kp];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for (checked above).
            unsafe { lower_avx512(&mut full, yt, kp, d) };
            return finish(gram, &full, k, kp);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above, for AVX2 and FMA.
            unsafe { lower_avx2(&mut full, yt, kp, d) };
            return finish(gram, &full, k, kp);
        }
    }
    lower::<false>(&mut full, yt, kp, d);
    finish(gram, &full, k, kp)
}

/// The AVX-512 micro-kernel, written with intrinsics: 8 rows x 32 columns, sixteen accumulator
/// registers (enough to cover the FMA latency), two loads and eight broadcasts per sixteen FMAs.
/// The fixed-array loop of [`lower`] does not get there: at 8 rows LLVM stops unrolling it.
///
/// # Safety
/// The CPU must support AVX-512F; `yt` must hold `d * kp` values and `full` `kp * kp`, with `kp`
/// a multiple of [`COLS`] (asserted on entry).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn lower_avx512(full: &mut [f32], yt: &[f32], kp: usize, d: usize) {
    use std::arch::x86_64::*;
    const R: usize = 8;
    assert!(kp.is_multiple_of(COLS) && yt.len() >= d * kp && full.len() >= kp * kp);
    for ib in (0..kp).step_by(R) {
        let mut jb = 0;
        while jb <= ib {
            let mut acc = [_mm512_setzero_ps(); 2 * R];
            let mut line = yt.as_ptr();
            for _ in 0..d {
                // SAFETY: line points at row p < d of yt (d * kp values, asserted above), and
                // ib + R <= kp, jb + 32 <= kp because kp is a multiple of 32 and of R.
                unsafe {
                    let b0 = _mm512_loadu_ps(line.add(jb));
                    let b1 = _mm512_loadu_ps(line.add(jb + 16));
                    for r in 0..R {
                        let a = _mm512_set1_ps(*line.add(ib + r));
                        acc[2 * r] = _mm512_fmadd_ps(a, b0, acc[2 * r]);
                        acc[2 * r + 1] = _mm512_fmadd_ps(a, b1, acc[2 * r + 1]);
                    }
                    line = line.add(kp);
                }
            }
            for r in 0..R {
                // SAFETY: (ib + r) * kp + jb + 32 <= kp * kp = full.len() (asserted above).
                unsafe {
                    let out = full.as_mut_ptr().add((ib + r) * kp + jb);
                    _mm512_storeu_ps(out, acc[2 * r]);
                    _mm512_storeu_ps(out.add(16), acc[2 * r + 1]);
                }
            }
            jb += COLS;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn lower_avx2(full: &mut [f32], yt: &[f32], kp: usize, d: usize) {
    lower::<true>(full, yt, kp, d)
}

/// Register-blocked lower triangle (by blocks) of `yt^T yt` into `full` (`kp x kp`).
#[inline(always)]
fn lower<const FMA: bool>(full: &mut [f32], yt: &[f32], kp: usize, d: usize) {
    for ib in (0..kp).step_by(ROWS) {
        let mut jb = 0;
        while jb <= ib {
            let mut acc = [[0.0f32; COLS]; ROWS];
            // chunks_exact gives every line the length kp, so the block bounds are checked once.
            for line in yt.chunks_exact(kp).take(d) {
                let b: &[f32; COLS] = line[jb..jb + COLS].try_into().expect("COLS values");
                let a: &[f32; ROWS] = line[ib..ib + ROWS].try_into().expect("ROWS values");
                for r in 0..ROWS {
                    for c in 0..COLS {
                        acc[r][c] = if FMA { a[r].mul_add(b[c], acc[r][c]) } else { acc[r][c] + a[r] * b[c] };
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                full[(ib + r) * kp + jb..(ib + r) * kp + jb + COLS].copy_from_slice(row);
            }
            jb += COLS;
        }
    }
}

/// Mirrors the computed blocks into the upper triangle and crops to `k x k`.
fn finish(gram: &mut Vec<f32>, full: &[f32], k: usize, kp: usize) {
    gram.clear();
    gram.resize(k * k, 0.0);
    for i in 0..k {
        // Row i holds columns 0..(i / COLS + 1) * COLS; the rest come from the transposed entry.
        let filled = ((i / COLS + 1) * COLS).min(k);
        gram[i * k..i * k + filled].copy_from_slice(&full[i * kp..i * kp + filled]);
        for j in filled..k {
            gram[i * k + j] = full[j * kp + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_dot_products() {
        for &(k, d) in &[(3usize, 5usize), (33, 17), (128, 96), (130, 385)] {
            let kp = padded(k);
            let y: Vec<f32> = (0..k * d).map(|i| ((i * 7919 % 1009) as f32) * 1e-3 - 0.5).collect();
            let mut yt = vec![0.0f32; d * kp];
            for j in 0..k {
                for p in 0..d {
                    yt[p * kp + j] = y[j * d + p];
                }
            }
            let mut g = Vec::new();
            gram(&mut g, &yt, k, d);
            for i in 0..k {
                for j in 0..k {
                    let want: f64 = (0..d).map(|p| y[i * d + p] as f64 * y[j * d + p] as f64).sum();
                    assert!((g[i * k + j] as f64 - want).abs() < 1e-3 * (1.0 + want.abs()), "k={k} d={d} ({i},{j})");
                }
            }
        }
    }
}
