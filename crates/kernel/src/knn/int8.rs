//! The integer candidate search: exact integer products of quantized rows, with a proven bound.
//!
//! On CPUs with AVX512_VNNI, `vpdpbusd` does 64 multiply-adds of bytes per instruction at two
//! per cycle: 3.8 times the float32 FMA rate here (`lidscope bench` prints both). This module
//! finds candidates with it; the float64 re-rank then picks the neighbours exactly, as on every
//! other path. The same instructions' 16-bit sibling, `vpdpwssd` (32 products per instruction,
//! twice the float32 rate), searches rows quantized to 16 bits ([`Width::I16`]) through the same
//! kernel, bounds and window: their residuals are about a fiftieth of the bytes', which is what
//! real hidden states need (see "Two widths" below). Both together make the two-level search
//! ([`dot16`]): byte products for every pair, a sixteen-bit product for each pair they pass.
//!
//! **Why the candidates are right.** Each centred row `c = x - mean` is stored as `s * q + e`:
//! one float64 scale `s` per row (its largest value maps to 127), bytes `q` in `[-127, 127]`, and
//! a residual `e` whose norm `rho` is computed in float64 and rounded up. The integer product
//! `q_x . q_y` is exact (at most `d * 255 * 127` in magnitude, inside `i32` for `d <= 66,000`),
//! so `D = |s_x q_x - s_y q_y|` is known to float64 precision, and by the triangle inequality the
//! true distance lies in `[D - rho_x - rho_y, D + rho_x + rho_y]`. A reference row is offered
//! with the bounds `D -+ rho_y`; the query's `rho_x` (twice) and float64 rounding go into the
//! window of [`super::topk::Candidates`]. In the kernel's epilogue a float32 prefilter passes
//! every row the float64 test would keep: it compares `D^2` with `(T + rho_y)^2` plus a margin
//! for its own rounding (`T` being the query's threshold).
//!
//! How wide the window gets depends on the data: the residuals are about 0.8% of a row's norm
//! (one scale per row lets rows of any norm use all 8 bits), so a query re-ranks the rows within
//! about 3% of its k-th distance. Data with a few huge coordinates per row quantize more coarsely
//! and re-rank more rows; the neighbours are the same either way.
//!
//! **Two widths.** On language-model hidden states the k-th neighbour distance has many rows just
//! beyond it (the next `k` rows within 2% of it on MiniLM's states, against 9% on the bench's
//! synthetic rows), so the bytes' window of about 3% lets through several times `k` candidates, and
//! their float64 re-rank costs more than the bytes save. Sixteen-bit values shrink the window to
//! well under a tenth of a percent at half the bytes' product rate. Their products are exact too:
//! a row's scale keeps its quantized norm below `2^15.5`, so by Cauchy-Schwarz every product lies
//! in `i32` (lanes wrap in between, which two's complement undoes), whatever the dimension.
//!
//! Layout: the reference is packed into panels of [`NR`] rows as unsigned bytes (`q + 128`),
//! four consecutive dimensions of a row together (one `i32` lane); queries into micro-panels of
//! [`MR`] rows as signed bytes (one 4-byte broadcast each). `vpdpbusd` multiplies unsigned by
//! signed bytes, so each query's product comes out `128 * sum(q_x)` high, which the epilogue
//! subtracts. Sixteen-bit rows are packed the same way, two dimensions per lane, signed on both
//! sides (`vpdpwssd` multiplies signed by signed): no offset.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

use crate::rows::Rows;

/// Query rows per micro-panel.
pub(crate) const MR: usize = 8;
/// Reference rows per panel: three 16-lane vectors.
pub(crate) const NR: usize = 48;
/// Groups of four dimensions per depth slice: a panel's slice (`GC x NR x 4` bytes, 24 KiB)
/// stays in L1 while the micro-panels stream past.
const GC: usize = 128;
/// Unit roundoff of float32.
const U: f32 = f32::EPSILON / 2.0;
/// Largest dimension whose products fit in `i32`: `d * 255 * 127 < 2^31` (bytes); sixteen-bit
/// rows fit in any dimension, but their norm bound leaves them few bits per value beyond it.
pub(crate) const MAX_DIM: usize = 66_000;
/// The largest quantized norm of a sixteen-bit row: `(NORM16 + sqrt(MAX_DIM) / 2)^2 < 2^31`
/// (rounding moves each value by at most a half), so `|q_x . q_y| <= |q_x| |q_y| < 2^31`.
const NORM16: f64 = 46_000.0;

/// How many bits a quantized value has: the product rate against the width of the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    /// Bytes in `[-127, 127]` (`vpdpbusd`): four times the float32 rate, a window of about 1% of
    /// a row's norm.
    I8,
    /// Sixteen-bit values (`vpdpwssd`): twice the float32 rate, a window about 50 times narrower.
    I16,
}

impl Width {
    /// Bytes per value.
    pub(crate) fn bytes(self) -> usize {
        match self {
            Width::I8 => 1,
            Width::I16 => 2,
        }
    }
}

/// Whether this CPU runs the int8 search.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::isa::has_avx512() && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows quantized with one scale each, with what the bounds need.
pub(crate) struct Quantized {
    /// Bits per value.
    pub(crate) width: Width,
    /// Four-byte lanes per row: four dimensions of bytes or two of sixteen-bit values.
    pub(crate) groups: usize,
    /// The values, row-major, `4 * groups` bytes per row (little-endian, zero-padded).
    pub(crate) bytes: Vec<u8>,
    /// Per row: the scale `s`.
    pub(crate) scale: Vec<f64>,
    /// Per row: `|s q|^2`.
    pub(crate) sq_norm: Vec<f64>,
    /// Per row: an upper bound on the residual's norm, as float32 rounded up.
    pub(crate) rho: Vec<f32>,
    /// Per row: `128 * sum(q)`, what `vpdpbusd` adds to each of the row's products (zero for
    /// sixteen-bit rows).
    pub(crate) offset: Vec<i32>,
}

impl Quantized {
    /// Quantizes `rows - mean` (the mean in float64, as the float32 paths centre).
    pub(crate) fn new(rows: Rows<'_>, mean: &[f64], width: Width) -> Self {
        let (n, d) = (rows.len(), rows.dim());
        let groups = (d * width.bytes()).div_ceil(4);
        let mut bytes = vec![0u8; n * 4 * groups];
        let stats: Vec<(f64, f64, f32, i32)> = bytes.par_chunks_mut(4 * groups).enumerate().map(|(i, out)| quantize(rows.row(i), mean, width, out)).collect();
        let mut q = Quantized {
            width,
            groups,
            bytes,
            scale: Vec::with_capacity(n),
            sq_norm: Vec::with_capacity(n),
            rho: Vec::with_capacity(n),
            offset: Vec::with_capacity(n),
        };
        for (s, norm, rho, offset) in stats {
            q.scale.push(s);
            q.sq_norm.push(norm);
            q.rho.push(rho);
            q.offset.push(offset);
        }
        q
    }

    /// The bytes of row `i`.
    pub(crate) fn row(&self, i: usize) -> &[u8] {
        &self.bytes[i * 4 * self.groups..(i + 1) * 4 * self.groups]
    }

    /// The largest `|s q|` over the rows.
    pub(crate) fn max_norm(&self) -> f64 {
        self.sq_norm.iter().fold(0.0f64, |a, b| a.max(*b)).sqrt()
    }

    /// The distance `D` between the dequantized rows `i` (here) and `j` (of `other`), from their
    /// exact integer product `dot`: `D^2` in float64, its root in float32 (the faster square
    /// root: offers are a tenth of the search), within `3u` of `D` relative, which [`bounds`]
    /// widens by.
    #[inline]
    pub(crate) fn distance(&self, i: usize, other: &Quantized, j: usize, dot: i32) -> f32 {
        let d2 = self.sq_norm[i] + other.sq_norm[j] - 2.0 * self.scale[i] * other.scale[j] * dot as f64;
        (d2.max(0.0) as f32).sqrt()
    }

    /// Twice the part of a query's error bound that the offered bounds leave out: its own
    /// residual (the bounds carry the reference row's) and the float64 rounding of `D^2` (whose
    /// root can move by up to the root of that rounding), with `max_norm` the reference's
    /// largest dequantized norm.
    pub(crate) fn slack(&self, i: usize, max_norm: f64) -> f32 {
        let rounding = 1e-7 * (self.sq_norm[i].sqrt() + max_norm);
        (2.0 * (self.rho[i] as f64 + rounding)) as f32 * (1.0 + 4.0 * U)
    }

    /// Per-row values of the epilogue for rows `lo..hi`, padded to `width` with NaN (no
    /// comparison with a NaN passes).
    pub(crate) fn lanes(&self, lo: usize, hi: usize, width: usize, max_norm: f64, out: &mut Lanes) {
        let len = (hi - lo).div_ceil(width) * width;
        let pad = |v: &mut Vec<f32>, f: &dyn Fn(usize) -> f32| {
            v.clear();
            v.extend((lo..hi).map(f));
            v.resize(len, f32::NAN);
        };
        pad(&mut out.sq_norm, &|i| self.sq_norm[i] as f32);
        pad(&mut out.scale, &|i| self.scale[i] as f32);
        pad(&mut out.rho, &|i| self.rho[i]);
        // The prefilter's margin for its float32 rounding (see `block_vnni`): 16 u (|x| + M)^2.
        pad(&mut out.margin, &|i| (16.0 * U as f64 * (self.sq_norm[i].sqrt() + max_norm).powi(2) * 1.0001) as f32);
        out.offset.clear();
        out.offset.extend((lo..hi).map(|i| self.offset[i]));
        out.offset.resize(len, 0);
    }
}

/// The bounds `D -+ rho` of a reference row at dequantized distance `D` (from
/// [`Quantized::distance`]) from a query, rounded outward (`rho` being the reference row's
/// residual bound): `D` is first widened by its own error, `3u` relative, then each sum's
/// rounding is undone by one step.
#[inline]
pub(crate) fn bounds(distance: f32, rho: f32) -> (f32, f32) {
    ((distance * (1.0 - 4.0 * U) - rho).next_down(), (distance * (1.0 + 4.0 * U) + rho).next_up())
}

/// Quantizes one row into `out`; returns (scale, `|s q|^2`, residual bound, `128 * sum(q)` for
/// bytes, else 0).
fn quantize(row: &[f32], mean: &[f64], width: Width, out: &mut [u8]) -> (f64, f64, f32, i32) {
    let (max, sq) = row.iter().zip(mean).fold((0.0f64, 0.0f64), |(a, n), (v, m)| {
        let c = *v as f64 - m;
        (a.max(c.abs()), n + c * c)
    });
    // Bytes use their whole range; sixteen-bit values as much of theirs as the norm bound allows.
    let (s, top) = match width {
        Width::I8 => (max / 127.0, 127.0),
        Width::I16 => ((max / 32767.0).max(sq.sqrt() / NORM16), 32767.0),
    };
    let s = if s > 0.0 { s } else { 1.0 };
    let (mut norm, mut resid, mut centred, mut sum) = (0.0f64, 0.0f64, 0.0f64, 0i32);
    for (t, (v, m)) in row.iter().zip(mean).enumerate() {
        let c = *v as f64 - m;
        let q = (c / s).round().clamp(-top, top);
        match width {
            Width::I8 => out[t] = q as i8 as u8,
            Width::I16 => out[2 * t..2 * t + 2].copy_from_slice(&(q as i16).to_le_bytes()),
        }
        sum += q as i32;
        norm += q * q;
        let e = c - s * q;
        resid += e * e;
        centred += c * c;
    }
    debug_assert!(width == Width::I8 || norm < 2f64.powi(31), "sixteen-bit norm bound");
    // Float64 rounding of the centring and of these sums is far below 1e-12 of the row's norm.
    let rho = resid.sqrt() + 1e-12 * centred.sqrt();
    let rho32 = (rho as f32).next_up();
    let offset = if width == Width::I8 { 128 * sum } else { 0 };
    (s, s * s * norm, rho32, offset)
}

/// Float32 values per row (or per column) for the epilogue.
#[derive(Default)]
pub(crate) struct Lanes {
    sq_norm: Vec<f32>,
    scale: Vec<f32>,
    rho: Vec<f32>,
    margin: Vec<f32>,
    offset: Vec<i32>,
}

/// Packs rows `lo..hi` of `q` into panels of `width` rows: group `g` of row `lo + p * width + r`
/// goes to bytes `((p * groups + g) * width + r) * 4..+4`, bytes as unsigned (`+ 128`) on the
/// `reference` side (sixteen-bit values stay signed on both). Missing rows are zero.
pub(crate) fn pack(q: &Quantized, lo: usize, hi: usize, width: usize, reference: bool, out: &mut Vec<u8>) {
    let g = q.groups;
    let panels = (hi - lo).div_ceil(width);
    out.clear();
    out.resize(panels * g * width * 4, 0);
    let flip = if reference && q.width == Width::I8 { 0x80u8 } else { 0 };
    for (p, panel) in out.chunks_exact_mut(g * width * 4).enumerate() {
        for r in 0..width.min(hi - lo - p * width) {
            for (t, chunk) in q.row(lo + p * width + r).chunks_exact(4).enumerate() {
                for (b, v) in chunk.iter().enumerate() {
                    panel[(t * width + r) * 4 + b] = *v ^ flip;
                }
            }
        }
    }
}

/// What one block's epilogue found: the exact products `q_x . q_y` (row-major `MR x NR`), the
/// mask of columns that passed each row's threshold and, in a self-join, the mask of rows that
/// passed each column's (bit `c` of `other[r]`: column `c` takes row `r`).
pub(crate) struct Passed {
    pub(crate) dots: [i32; MR * NR],
    pub(crate) mask: [u64; MR],
    pub(crate) other: [u64; MR],
}

impl Default for Passed {
    fn default() -> Self {
        Self { dots: [0; MR * NR], mask: [0; MR], other: [0; MR] }
    }
}

/// A block's epilogue: the columns' and rows' [`Lanes`] (from the column's first and the row's
/// first entry), the rows' thresholds and, in a self-join, the columns'.
pub(crate) struct Epilogue<'a> {
    pub(crate) cols: LaneSlice<'a>,
    pub(crate) rows: LaneSlice<'a>,
    pub(crate) row_thresholds: &'a [f32],
    pub(crate) col_thresholds: Option<&'a [f32]>,
    pub(crate) out: &'a mut Passed,
}

/// [`Lanes`] from an offset on.
#[derive(Clone, Copy)]
pub(crate) struct LaneSlice<'a> {
    sq_norm: &'a [f32],
    scale: &'a [f32],
    rho: &'a [f32],
    margin: &'a [f32],
    offset: &'a [i32],
}

impl Lanes {
    /// The lanes from `at` on.
    pub(crate) fn at(&self, at: usize) -> LaneSlice<'_> {
        LaneSlice { sq_norm: &self.sq_norm[at..], scale: &self.scale[at..], rho: &self.rho[at..], margin: &self.margin[at..], offset: &self.offset[at..] }
    }
}

/// One depth slice (`groups` four-byte lanes) of an `MR x NR` block of integer products of
/// `width`: `a` from a micro-panel of [`MR`] query rows, `b` from a panel of [`NR`] reference
/// rows, both as packed by [`pack`]. Sums start from zero when `first`, else from `partial`;
/// without an epilogue they are stored back to `partial`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn block(a: &[u8], b: &[u8], groups: usize, width: Width, partial: &mut [i32], first: bool, epilogue: Option<Epilogue<'_>>) {
    assert!(a.len() >= groups * MR * 4 && b.len() >= groups * NR * 4 && partial.len() >= MR * NR, "int8::block: short operand");
    if let Some(e) = &epilogue {
        let long = |l: &LaneSlice<'_>, w: usize| l.sq_norm.len() >= w && l.scale.len() >= w && l.rho.len() >= w && l.margin.len() >= w && l.offset.len() >= w;
        assert!(long(&e.cols, NR) && long(&e.rows, MR) && e.row_thresholds.len() >= MR, "int8::block: short operand");
        assert!(e.col_thresholds.is_none_or(|t| t.len() >= NR), "int8::block: short operand");
    }
    assert!(available(), "int8::block needs AVX512_VNNI");
    // SAFETY: AVX-512F and AVX512_VNNI are available (asserted); every offset below stays within
    // the lengths asserted above.
    unsafe {
        match width {
            Width::I8 => block_vnni::<false>(a, b, groups, partial, first, epilogue),
            Width::I16 => block_vnni::<true>(a, b, groups, partial, first, epilogue),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn block(_: &[u8], _: &[u8], _: usize, _: Width, _: &mut [i32], _: bool, _: Option<Epilogue<'_>>) {
    unreachable!("int8::available() is false off x86-64")
}

/// # Safety
/// AVX-512F and AVX512_VNNI must be available, and the slices as long as [`block`] asserts.
///
/// `WIDE` selects sixteen-bit values (`vpdpwssd`, signed by signed) over bytes (`vpdpbusd`,
/// unsigned reference by signed query).
///
/// The prefilter passes column `c` for row `r` when `D^2 <= (T_r + rho_c)^2 + margin_r`,
/// computed in float32, so that it passes every pair whose offered lower bound ([`bounds`]) is
/// within `T_r`. `D^2 = |x|^2 + |y|^2 - 2 s_x s_y dot` is evaluated here with an error of at
/// most `6 u (|x| + |y|)^2`, which `margin = 16 u (|x| + M)^2` covers together with the float64
/// rounding of the offered `D^2`. The offered `D` may be `3u` low and its lower bound is widened
/// by `4u` (together `14u` of `(T + rho)^2`), and the threshold's square loses at most `3u` of
/// itself: the factor `1 + 16u` on `T + rho` restores all of it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn block_vnni<const WIDE: bool>(a: &[u8], b: &[u8], groups: usize, partial: &mut [i32], first: bool, epilogue: Option<Epilogue<'_>>) {
    // A macro, not a closure: the intrinsics must be inlined under this function's features.
    macro_rules! dot {
        ($acc:expr, $b:expr, $x:expr) => {
            if WIDE {
                _mm512_dpwssd_epi32($acc, $b, $x)
            } else {
                _mm512_dpbusd_epi32($acc, $b, $x)
            }
        };
    }
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [[_mm512_setzero_si512(); 3]; MR];
    if !first {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (v, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r * NR + 16 * v + 16 <= MR * NR <= partial.len().
                *acc = unsafe { _mm512_loadu_si512(partial.as_ptr().add(r * NR + 16 * v).cast()) };
            }
        }
    }
    for g in 0..groups {
        // SAFETY: (g + 1) * NR * 4 <= b.len(); (g * MR + r + 1) * 4 <= a.len().
        unsafe {
            let b0 = _mm512_loadu_si512(pb.add(g * NR * 4).cast());
            let b1 = _mm512_loadu_si512(pb.add(g * NR * 4 + 64).cast());
            let b2 = _mm512_loadu_si512(pb.add(g * NR * 4 + 128).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(pa.add((g * MR + r) * 4).cast::<i32>().read_unaligned());
                acc[0] = dot!(acc[0], b0, x);
                acc[1] = dot!(acc[1], b1, x);
                acc[2] = dot!(acc[2], b2, x);
            }
        }
    }
    let Some(e) = epilogue else {
        for (r, acc) in acc.iter().enumerate() {
            for (v, acc) in acc.iter().enumerate() {
                // SAFETY: r * NR + 16 * v + 16 <= MR * NR <= partial.len().
                unsafe { _mm512_storeu_si512(partial.as_mut_ptr().add(r * NR + 16 * v).cast(), *acc) };
            }
        }
        return;
    };
    let grow = _mm512_set1_ps(1.0 + 16.0 * U);
    // SAFETY: every load addresses lanes < NR of the column slices or < MR of the row slices
    // (as `block` asserts), and every store r * NR + lanes < MR * NR of `dots`.
    unsafe {
        let load = |s: &[f32], v: usize| _mm512_loadu_ps(s.as_ptr().add(16 * v));
        let col_norm = [0, 1, 2].map(|v| load(e.cols.sq_norm, v));
        let col_scale = [0, 1, 2].map(|v| load(e.cols.scale, v));
        let col_rho = [0, 1, 2].map(|v| load(e.cols.rho, v));
        let col_side = e.col_thresholds.map(|t| ([0, 1, 2].map(|v| load(t, v)), [0, 1, 2].map(|v| load(e.cols.margin, v))));
        for (r, acc) in acc.iter().enumerate() {
            let offset = _mm512_set1_epi32(e.rows.offset[r]);
            let row_norm = _mm512_set1_ps(e.rows.sq_norm[r]);
            let two_s = _mm512_set1_ps(2.0 * e.rows.scale[r]);
            let thr = _mm512_set1_ps(e.row_thresholds[r]);
            let margin = _mm512_set1_ps(e.rows.margin[r]);
            let row_rho = _mm512_set1_ps(e.rows.rho[r]);
            let (mut mask, mut other) = (0u64, 0u64);
            for v in 0..3 {
                let dot = _mm512_sub_epi32(acc[v], offset);
                _mm512_storeu_si512(e.out.dots.as_mut_ptr().add(r * NR + 16 * v).cast(), dot);
                let w = _mm512_mul_ps(two_s, col_scale[v]);
                let d2 = _mm512_fnmadd_ps(w, _mm512_cvtepi32_ps(dot), _mm512_add_ps(row_norm, col_norm[v]));
                let t = _mm512_mul_ps(_mm512_add_ps(thr, col_rho[v]), grow);
                mask |= (_mm512_cmp_ps_mask::<_CMP_LE_OQ>(d2, _mm512_fmadd_ps(t, t, margin)) as u64) << (16 * v);
                if let Some((col_thr, col_margin)) = &col_side {
                    let t = _mm512_mul_ps(_mm512_add_ps(col_thr[v], row_rho), grow);
                    other |= (_mm512_cmp_ps_mask::<_CMP_LE_OQ>(d2, _mm512_fmadd_ps(t, t, col_margin[v])) as u64) << (16 * v);
                }
            }
            e.out.mask[r] = mask;
            e.out.other[r] = other;
        }
    }
}

/// The exact products of sixteen-bit row pairs: `out[p] = x_i . y_j` for `(i, j) = pairs[p]`,
/// rows of `x` and `y` (both [`Width::I16`], of one dimension), for the pairs whose byte products
/// could not settle them (the two-level search). Four pairs run side by side, so the products
/// overlap instead of each waiting on its own chain of additions. Lanes may wrap on the way;
/// each total lies in `i32` (the norm bound of [`Width::I16`]), so two's complement gives it
/// exactly.
///
/// The products wait on loads, not on the multipliers: consecutive pairs that share a row (of
/// either side) form a group of their own, which loads that row once. Callers list pairs with a
/// shared row together where they can (the self-join by column, a query block by row).
#[cfg(target_arch = "x86_64")]
pub(crate) fn dot16(x: &Quantized, y: &Quantized, pairs: &[(u32, u32)], out: &mut Vec<i32>) {
    assert!(x.width == Width::I16 && y.width == Width::I16 && x.groups == y.groups, "int8::dot16: sixteen-bit rows of one dimension");
    assert!(available(), "int8::dot16 needs AVX512_VNNI");
    out.clear();
    let mut rest = pairs;
    while !rest.is_empty() {
        let head = &rest[..rest.len().min(4)];
        let same_x = head.iter().take_while(|p| p.0 == head[0].0).count();
        let same_y = head.iter().take_while(|p| p.1 == head[0].1).count();
        let take = match same_x.max(same_y) {
            1 => head.len(),
            shared => shared,
        };
        let (four, tail) = rest.split_at(take);
        rest = tail;
        // A short group repeats its first pair.
        let at = |p: usize| four.get(p).unwrap_or(&four[0]);
        let (a, b) = ([0, 1, 2, 3].map(|p| x.row(at(p).0 as usize)), [0, 1, 2, 3].map(|p| y.row(at(p).1 as usize)));
        // SAFETY: AVX-512F and AVX512_VNNI are available (asserted); all rows have 4 * groups bytes.
        let dots = unsafe { dot16_four(a, b, 4 * x.groups) };
        out.extend_from_slice(&dots[..four.len()]);
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn dot16(_: &Quantized, _: &Quantized, _: &[(u32, u32)], _: &mut Vec<i32>) {
    unreachable!("int8::available() is false off x86-64")
}

/// # Safety
/// AVX-512F and AVX512_VNNI must be available; every row `len` bytes, a multiple of four.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dot16_four(a: [&[u8]; 4], b: [&[u8]; 4], len: usize) -> [i32; 4] {
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut at = 0;
    // A row all four pairs share is loaded once (the product is symmetric in its operands).
    let same = |rows: &[&[u8]; 4]| rows.iter().all(|x| x.as_ptr() == rows[0].as_ptr());
    let (a, b) = if !same(&a) && same(&b) { (b, a) } else { (a, b) };
    let shared = same(&a);
    // SAFETY: every load reads bytes at..at + 64 <= len of a row, or is masked to whole
    // four-byte lanes below len.
    unsafe {
        while at < len {
            let lanes = ((len - at) / 4).min(16);
            let m: __mmask16 = if lanes == 16 { !0 } else { (1u16 << lanes) - 1 };
            if shared {
                let x = _mm512_maskz_loadu_epi32(m, a[0].as_ptr().add(at).cast());
                for p in 0..4 {
                    acc[p] = _mm512_dpwssd_epi32(acc[p], x, _mm512_maskz_loadu_epi32(m, b[p].as_ptr().add(at).cast()));
                }
            } else {
                for p in 0..4 {
                    let x = _mm512_maskz_loadu_epi32(m, a[p].as_ptr().add(at).cast());
                    acc[p] = _mm512_dpwssd_epi32(acc[p], x, _mm512_maskz_loadu_epi32(m, b[p].as_ptr().add(at).cast()));
                }
            }
            at += 64;
        }
    }
    acc.map(|v| _mm512_reduce_add_epi32(v))
}

/// The depth slices of a product over `groups` groups: `(first group, groups, is last)`.
fn slices(groups: usize) -> impl Iterator<Item = (usize, usize, bool)> {
    (0..groups).step_by(GC).map(move |g0| (g0, GC.min(groups - g0), g0 + GC >= groups))
}

/// The last depth slice of one block, to be run with the caller's epilogue.
pub(crate) struct LastSlice<'a> {
    a: &'a [u8],
    b: &'a [u8],
    groups: usize,
    width: Width,
    partial: &'a mut [i32],
    first: bool,
}

impl LastSlice<'_> {
    /// Runs the slice and `e`.
    pub(crate) fn finish(self, e: Epilogue<'_>) {
        block(self.a, self.b, self.groups, self.width, self.partial, self.first, Some(e));
    }
}

/// Every micro-panel of the packed query block `packed` against the reference panel `b` (both
/// of `groups` lanes of `width`), one depth slice at a time, as [`super::fused::against_panel`]
/// does for float32; each block's last slice goes to `last(micro_panel, slice)`.
pub(crate) fn against_panel(packed: &[u8], b: &[u8], groups: usize, width: Width, partial: &mut [i32], mut last: impl FnMut(usize, LastSlice<'_>)) {
    for (g0, len, is_last) in slices(groups) {
        let bs = &b[g0 * NR * 4..(g0 + len) * NR * 4];
        for (ap, c) in partial.chunks_exact_mut(MR * NR).enumerate() {
            let a = &packed[(ap * groups + g0) * MR * 4..(ap * groups + g0 + len) * MR * 4];
            if is_last {
                last(ap, LastSlice { a, b: bs, groups: len, width, partial: c, first: g0 == 0 });
            } else {
                block(a, bs, len, width, c, g0 == 0, None);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::rows::Rows;

    /// The block's products equal the integer sums, its masks the float64 test they prefilter,
    /// over several depth slices and with padding past the last rows.
    #[test]
    fn products_and_masks_match_the_definition() {
        if !available() {
            return;
        }
        for width in [Width::I8, Width::I16] {
            products_and_masks(width);
        }
    }

    /// The quantized values of row `i`.
    fn values(q: &Quantized, i: usize) -> Vec<i32> {
        match q.width {
            Width::I8 => q.row(i).iter().map(|v| *v as i8 as i32).collect(),
            Width::I16 => q.row(i).chunks_exact(2).map(|v| i16::from_le_bytes([v[0], v[1]]) as i32).collect(),
        }
    }

    /// The exact product of two quantized rows, which must fit in `i32`.
    fn dot(qx: &Quantized, i: usize, qy: &Quantized, j: usize) -> i32 {
        let sum: i64 = values(qx, i).iter().zip(values(qy, j)).map(|(x, y)| *x as i64 * y as i64).sum();
        i32::try_from(sum).expect("products fit in i32")
    }

    #[allow(clippy::needless_range_loop)] // (r, c) index the block, the thresholds and the rows alike
    fn products_and_masks(width: Width) {
        let d = 4 * GC * 2 + 7; // three slices of bytes (five of sixteen-bit values), the last short and padded
        let (m, n) = (MR - 3, NR - 5);
        let gen = |seed: usize, len: usize| -> Vec<f32> {
            (0..len * d).map(|i| (((i * 7919 + seed) % 1013) as f32 / 500.0 - 1.0) * (1.0 + (i / d) as f32)).collect()
        };
        let (xs, ys) = (gen(1, m), gen(5, n));
        let mean = vec![0.25f64; d];
        let qx = Quantized::new(Rows::try_new(&xs, m, d).unwrap(), &mean, width);
        let qy = Quantized::new(Rows::try_new(&ys, n, d).unwrap(), &mean, width);
        let max_norm = qy.max_norm();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        pack(&qx, 0, m, MR, false, &mut a);
        pack(&qy, 0, n, NR, true, &mut b);
        let (mut rows, mut cols) = (Lanes::default(), Lanes::default());
        qx.lanes(0, m, MR, max_norm, &mut rows);
        qy.lanes(0, n, NR, max_norm, &mut cols);
        // Thresholds that cut through the distances, so both outcomes occur.
        let dist = |i: usize, j: usize| {
            let dot = dot(&qx, i, &qy, j);
            (dot, qx.distance(i, &qy, j, dot) as f64)
        };
        let row_thr: Vec<f32> = (0..MR).map(|i| if i < m { dist(i, i).1 as f32 } else { f32::NAN }).collect();
        let col_thr: Vec<f32> = (0..NR).map(|j| if j < n { dist(j % m, j).1 as f32 * 0.999 } else { f32::NAN }).collect();
        let mut partial = vec![0i32; MR * NR];
        let mut out = Passed::default();
        let mut calls = 0;
        against_panel(&a, &b, qx.groups, width, &mut partial, |ap, slice| {
            calls += 1;
            slice.finish(Epilogue { cols: cols.at(0), rows: rows.at(ap * MR), row_thresholds: &row_thr, col_thresholds: Some(&col_thr), out: &mut out });
        });
        assert_eq!(calls, 1, "{width:?}");
        let (mut passed, mut failed) = (0, 0);
        for r in 0..MR {
            for c in 0..NR {
                let (row_bit, col_bit) = (out.mask[r] >> c & 1 == 1, out.other[r] >> c & 1 == 1);
                if r >= m || c >= n {
                    assert!(!row_bit && !col_bit, "{width:?}: padding passed at ({r}, {c})");
                    continue;
                }
                let (dot, dd) = dist(r, c);
                assert_eq!(out.dots[r * NR + c], dot, "{width:?}: product ({r}, {c})");
                // Every pair whose offered lower bound is within the threshold passes.
                if bounds(dd as f32, qy.rho[c]).0 <= row_thr[r] {
                    assert!(row_bit, "{width:?}: row {r} lost column {c}");
                }
                if bounds(dd as f32, qx.rho[r]).0 <= col_thr[c] {
                    assert!(col_bit, "{width:?}: column {c} lost row {r}");
                }
                if row_bit {
                    passed += 1;
                } else {
                    failed += 1;
                }
            }
        }
        assert!(passed > 0 && failed > 0, "{width:?}: thresholds should cut: {passed} passed, {failed} failed");
    }

    /// The residual bound holds: the true distance lies within `D -+ (rho_x + rho_y)`; sixteen-bit
    /// residuals are far smaller than the bytes', and their products stay in `i32` at a large
    /// dimension, row by row ([`dot16`], with a ragged tail) as in the block kernel.
    #[test]
    fn distances_lie_within_the_residual_bounds() {
        let n = 40;
        for (d, width) in [(97, Width::I8), (97, Width::I16), (4099, Width::I16)] {
            let xs: Vec<f32> = (0..n * d).map(|i| ((i * 2654435761usize) % 10007) as f32 / 977.0 * if i % 13 == 0 { 40.0 } else { 1.0 }).collect();
            let mean: Vec<f64> = (0..d).map(|t| t as f64 * 0.01).collect();
            let q = Quantized::new(Rows::try_new(&xs, n, d).unwrap(), &mean, width);
            for i in 0..n {
                for j in 0..n {
                    let dot = dot(&q, i, &q, j);
                    if width == Width::I16 {
                        // One to five pairs at a time (whole and short groups of four) sharing
                        // the first row, the second, or runs of either and neither in turn.
                        let m = (j % 5) as u32;
                        let (i32_, j32, n32) = (i as u32, j as u32, n as u32);
                        let shared_x: Vec<(u32, u32)> = (0..=m).map(|p| (i32_, (j32 + 7 * p) % n32)).collect();
                        let shared_y: Vec<(u32, u32)> = (0..=m).map(|p| ((i32_ + 7 * p) % n32, j32)).collect();
                        let mixed: Vec<(u32, u32)> = (0..3 * (m + 1)).map(|p| if (p / (m + 1)).is_multiple_of(2) { (i32_, (j32 + p) % n32) } else { ((i32_ + p) % n32, j32) }).chain([((i32_ + 1) % n32, 0)]).collect();
                        for pairs in [shared_x, shared_y, mixed] {
                            let mut out = Vec::new();
                            dot16(&q, &q, &pairs, &mut out);
                            let want: Vec<i32> = pairs.iter().map(|&(a, b)| self::dot(&q, a as usize, &q, b as usize)).collect();
                            assert_eq!(out, want, "d={d} row {i}: the two-level search's products of {pairs:?}");
                            assert_eq!(out[0], dot);
                        }
                    }
                    let (lower, upper) = bounds(q.distance(i, &q, j, dot), q.rho[j]);
                    let truth = xs[i * d..(i + 1) * d].iter().zip(&xs[j * d..(j + 1) * d]).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>().sqrt();
                    let r = q.rho[i] as f64;
                    assert!(truth >= lower as f64 - r && truth <= upper as f64 + r, "{width:?} d={d} ({i}, {j}): {truth} outside [{lower}, {upper}] -+ {r}");
                }
            }
            if d == 97 {
                let bytes = Quantized::new(Rows::try_new(&xs, n, d).unwrap(), &mean, Width::I8);
                let ratio = q.rho.iter().zip(&bytes.rho).map(|(a, b)| *a / *b).fold(0.0f32, f32::max);
                assert!(width == Width::I8 || ratio < 0.05, "sixteen-bit residuals up to {ratio} of the bytes'");
            }
        }
    }
}
