//! The AVX-512 tile kernel: float32 cross products with the candidate filter in their epilogue.
//!
//! Through the `gemm` crate, a third of the search's time went outside the products: each tile
//! of scores was written to memory, read back to offer candidates and, in the self-join,
//! transposed for the other side. Here an `MR x NR` block of cross products stays in registers
//! for the whole dimension, and its epilogue forms the scores `|r|^2 - 2 q.r` (and, for the
//! self-join's other side, `|q|^2 - 2 q.r`), compares them with each query's current threshold and
//! hands back bit masks of the few that pass.
//!
//! The reference is packed once, when the index is built, into panels of [`NR`] rows stored
//! dimension by dimension (three vector loads per dimension); queries are packed per block into
//! micro-panels of [`MR`] rows (one broadcast each). Rows past the end are padded with zeros and
//! a NaN norm or threshold, which no comparison passes.
//!
//! Each score is a float32 dot product accumulated over `d` terms by fused multiply-adds, then
//! one rounding of `norm - 2 dot`: the error bound of the `gemm` path holds unchanged, so the same
//! window keeps every true neighbour and the float64 re-rank gives the same neighbours.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Query rows per micro-panel (broadcast operands).
pub(crate) const MR: usize = 8;
/// Reference rows per panel: three 16-lane vectors.
pub(crate) const NR: usize = 48;
/// Dimensions per slice: a slice of a reference panel (`KC x NR` values, 48 KiB) stays near L1.
/// Measured: from 64 to 768 the kernel runs within a few percent of the FMA peak.
pub(crate) const KC: usize = 256;

/// Whether this CPU runs the tile kernel.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::isa::has_avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Packs rows `lo..hi` of `row(i)` into panels of `width` rows, dimension by dimension: row
/// `lo + p * width + r`, dimension `t`, goes to `(p * d + t) * width + r`. Missing rows are zero.
pub(crate) fn pack<'a>(row: impl Fn(usize) -> &'a [f32], lo: usize, hi: usize, d: usize, width: usize, out: &mut Vec<f32>) {
    let panels = (hi - lo).div_ceil(width);
    out.clear();
    out.resize(panels * d * width, 0.0);
    for (p, panel) in out.chunks_exact_mut(d * width).enumerate() {
        for r in 0..width.min(hi - lo - p * width) {
            for (t, v) in row(lo + p * width + r).iter().enumerate() {
                panel[t * width + r] = *v;
            }
        }
    }
}

/// Row `i` of a matrix packed by [`pack`] with [`NR`] rows per panel, gathered into `out`.
pub(crate) fn unpack_row(panels: &[f32], d: usize, i: usize, out: &mut [f32]) {
    let (p, r) = (i / NR, i % NR);
    let panel = &panels[p * d * NR..(p + 1) * d * NR];
    for (t, o) in out.iter_mut().enumerate() {
        *o = panel[t * NR + r];
    }
}

/// What one block's epilogue found for one side: scores row-major `MR x NR`, and per micro-panel
/// row the mask of columns whose score passed the threshold.
pub(crate) struct Passed {
    pub(crate) scores: [f32; MR * NR],
    pub(crate) mask: [u64; MR],
}

impl Default for Passed {
    fn default() -> Self {
        Self { scores: [0.0; MR * NR], mask: [0; MR] }
    }
}

/// The other side of a self-join tile: the rows' squared norms (`MR`), the columns' thresholds
/// (`NR`), and where to put what passed (mask bit `c` of row `r`: column `c` gets row `r`).
pub(crate) struct Transposed<'a> {
    pub(crate) row_norms: &'a [f32],
    pub(crate) col_thresholds: &'a [f32],
    pub(crate) out: &'a mut Passed,
}

/// What a block's last depth slice does with its sums: forms the scores and their masks.
pub(crate) struct Epilogue<'a> {
    /// The reference rows' squared norms ([`NR`]).
    pub(crate) col_norms: &'a [f32],
    /// The query rows' thresholds ([`MR`]).
    pub(crate) row_thresholds: &'a [f32],
    pub(crate) out: &'a mut Passed,
    /// The self-join's other side.
    pub(crate) other: Option<Transposed<'a>>,
}

/// One depth slice of an `MR x NR` block of cross products: `a` holds `kc` dimensions of a
/// micro-panel of [`MR`] query rows and `b` the same dimensions of a panel of [`NR`] reference
/// rows, both as packed by [`pack`]. The sums start from zero when `first`, else from `partial`;
/// without an epilogue they are stored back to `partial` for the next slice.
///
/// Slicing the dimension keeps the reference panel's slice (`kc x NR` values) in L1 while every
/// micro-panel of the query block (in L2) streams past it: each reference value loaded serves
/// [`MR`] multiply-adds, each query value loaded serves [`NR`].
///
/// # Panics
/// When a slice is shorter than its shape says.
#[cfg(target_arch = "x86_64")]
pub(crate) fn block(a: &[f32], b: &[f32], kc: usize, partial: &mut [f32], first: bool, epilogue: Option<Epilogue<'_>>) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR && partial.len() >= MR * NR, "fused::block: short operand");
    if let Some(e) = &epilogue {
        assert!(e.col_norms.len() >= NR && e.row_thresholds.len() >= MR, "fused::block: short operand");
        if let Some(o) = &e.other {
            assert!(o.row_norms.len() >= MR && o.col_thresholds.len() >= NR, "fused::block: short operand");
        }
    }
    assert!(available(), "fused::block needs AVX-512");
    // SAFETY: AVX-512F is available (asserted); every pointer offset below stays within the
    // lengths asserted above (t < kc, r < MR, lanes < NR).
    unsafe { block_avx512(a, b, kc, partial, first, epilogue) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn block(_: &[f32], _: &[f32], _: usize, _: &mut [f32], _: bool, _: Option<Epilogue<'_>>) {
    unreachable!("fused::available() is false off x86-64")
}

/// # Safety
/// AVX-512F must be available, and the slices as long as [`block`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512(a: &[f32], b: &[f32], kc: usize, partial: &mut [f32], first: bool, epilogue: Option<Epilogue<'_>>) {
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 3]; MR];
    if !first {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (v, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r * NR + 16 * v + 16 <= MR * NR <= partial.len().
                *acc = unsafe { _mm512_loadu_ps(partial.as_ptr().add(r * NR + 16 * v)) };
            }
        }
    }
    for t in 0..kc {
        // SAFETY: t * NR + 48 <= kc * NR <= b.len(); t * MR + r < kc * MR <= a.len().
        unsafe {
            let b0 = _mm512_loadu_ps(pb.add(t * NR));
            let b1 = _mm512_loadu_ps(pb.add(t * NR + 16));
            let b2 = _mm512_loadu_ps(pb.add(t * NR + 32));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*pa.add(t * MR + r));
                acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
                acc[2] = _mm512_fmadd_ps(x, b2, acc[2]);
            }
        }
    }
    let Some(e) = epilogue else {
        for (r, acc) in acc.iter().enumerate() {
            for (v, acc) in acc.iter().enumerate() {
                // SAFETY: r * NR + 16 * v + 16 <= MR * NR <= partial.len().
                unsafe { _mm512_storeu_ps(partial.as_mut_ptr().add(r * NR + 16 * v), *acc) };
            }
        }
        return;
    };
    let two = _mm512_set1_ps(2.0);
    // SAFETY: every load and store below addresses lanes < NR of col_norms and col_thresholds
    // (which hold NR values, as `block` asserts) or r * NR + lanes < MR * NR of a score array.
    unsafe {
        let norms = [0, 16, 32].map(|o| _mm512_loadu_ps(e.col_norms.as_ptr().add(o)));
        for (r, acc) in acc.iter().enumerate() {
            let thr = _mm512_set1_ps(e.row_thresholds[r]);
            let mut mask = 0u64;
            for v in 0..3 {
                // norm - 2 q.r with one rounding (2 q.r is exact).
                let s = _mm512_fnmadd_ps(two, acc[v], norms[v]);
                _mm512_storeu_ps(e.out.scores.as_mut_ptr().add(r * NR + 16 * v), s);
                mask |= (_mm512_cmp_ps_mask::<_CMP_LE_OQ>(s, thr) as u64) << (16 * v);
            }
            e.out.mask[r] = mask;
        }
        if let Some(o) = e.other {
            let thr = [0, 16, 32].map(|x| _mm512_loadu_ps(o.col_thresholds.as_ptr().add(x)));
            for (r, acc) in acc.iter().enumerate() {
                let norm = _mm512_set1_ps(o.row_norms[r]);
                let mut mask = 0u64;
                for v in 0..3 {
                    let s = _mm512_fnmadd_ps(two, acc[v], norm);
                    _mm512_storeu_ps(o.out.scores.as_mut_ptr().add(r * NR + 16 * v), s);
                    mask |= (_mm512_cmp_ps_mask::<_CMP_LE_OQ>(s, thr[v]) as u64) << (16 * v);
                }
                o.out.mask[r] = mask;
            }
        }
    }
}

/// The indices of the set bits of an epilogue's mask, lowest first.
#[inline]
pub(crate) fn set_bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            j
        })
    })
}

/// The depth slices of a `d`-dimensional product: `(first dimension, length, is last)`.
fn slices(d: usize) -> impl Iterator<Item = (usize, usize, bool)> {
    (0..d).step_by(KC).map(move |k0| (k0, KC.min(d - k0), k0 + KC >= d))
}

/// The last depth slice of one block, to be run with the caller's epilogue.
pub(crate) struct LastSlice<'a> {
    a: &'a [f32],
    b: &'a [f32],
    len: usize,
    partial: &'a mut [f32],
    first: bool,
}

impl LastSlice<'_> {
    /// Runs the slice and `e`.
    pub(crate) fn finish(self, e: Epilogue<'_>) {
        block(self.a, self.b, self.len, self.partial, self.first, Some(e));
    }
}

/// Every micro-panel of the packed query block `packed` against the reference panel `b` (both
/// of `d` dimensions), one depth slice at a time, so that the panel's slice stays in L1 while
/// the micro-panels stream past; each block's last slice goes to `last(micro_panel, slice)`.
/// `partial` holds the running sums, [`MR`] x [`NR`] per micro-panel.
pub(crate) fn against_panel(packed: &[f32], b: &[f32], d: usize, partial: &mut [f32], mut last: impl FnMut(usize, LastSlice<'_>)) {
    for (k0, len, is_last) in slices(d) {
        let bs = &b[k0 * NR..(k0 + len) * NR];
        for (ap, c) in partial.chunks_exact_mut(MR * NR).enumerate() {
            let a = &packed[(ap * d + k0) * MR..(ap * d + k0 + len) * MR];
            if is_last {
                last(ap, LastSlice { a, b: bs, len, partial: c, first: k0 == 0 });
            } else {
                block(a, bs, len, c, k0 == 0, None);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn block_scores_and_masks_match_the_definition() {
        if !available() {
            return;
        }
        // Three depth slices, the last one short.
        let d = 2 * KC + 37;
        let (m, n) = (MR - 3, NR - 5);
        let q: Vec<f32> = (0..m * d).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.25).collect();
        let r: Vec<f32> = (0..n * d).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.5).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        pack(|i| &q[i * d..(i + 1) * d], 0, m, d, MR, &mut a);
        pack(|i| &r[i * d..(i + 1) * d], 0, n, d, NR, &mut b);
        let sq = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>();
        let mut col_norms: Vec<f32> = (0..n).map(|j| sq(&r[j * d..(j + 1) * d])).collect();
        col_norms.resize(NR, f32::NAN);
        let mut row_norms: Vec<f32> = (0..m).map(|i| sq(&q[i * d..(i + 1) * d])).collect();
        row_norms.resize(MR, f32::NAN);
        let mut thr: Vec<f32> = (0..m).map(|i| if i == 0 { f32::INFINITY } else { 10.0 * i as f32 }).collect();
        thr.resize(MR, f32::NAN);
        let mut col_thr: Vec<f32> = (0..n).map(|j| 5.0 * j as f32).collect();
        col_thr.resize(NR, f32::NAN);
        let (mut rows, mut cols) = (Passed::default(), Passed::default());
        let mut partial = vec![f32::NAN; MR * NR];
        for (k0, len, last) in slices(d) {
            let (a, b) = (&a[k0 * MR..(k0 + len) * MR], &b[k0 * NR..(k0 + len) * NR]);
            let e = last.then(|| Epilogue {
                col_norms: &col_norms,
                row_thresholds: &thr,
                out: &mut rows,
                other: Some(Transposed { row_norms: &row_norms, col_thresholds: &col_thr, out: &mut cols }),
            });
            block(a, b, len, &mut partial, k0 == 0, e);
        }
        for i in 0..MR {
            for j in 0..NR {
                let live = i < m && j < n;
                let dot: f32 = if live { (0..d).map(|t| q[i * d + t] * r[j * d + t]).sum() } else { 0.0 };
                if live {
                    let s = rows.scores[i * NR + j];
                    assert!((s - (col_norms[j] - 2.0 * dot)).abs() <= 1e-3 * (1.0 + s.abs()), "{i},{j}");
                    let s2 = cols.scores[i * NR + j];
                    assert!((s2 - (row_norms[i] - 2.0 * dot)).abs() <= 1e-3 * (1.0 + s2.abs()), "{i},{j}");
                }
                assert_eq!(rows.mask[i] >> j & 1 == 1, live && rows.scores[i * NR + j] <= thr[i], "row side {i},{j}");
                assert_eq!(cols.mask[i] >> j & 1 == 1, live && cols.scores[i * NR + j] <= col_thr[j], "column side {i},{j}");
            }
        }
        assert_eq!(rows.mask[0].count_ones() as usize, n, "an infinite threshold passes every real column");
    }
}
