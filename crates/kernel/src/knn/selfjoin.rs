//! The reference against itself, using the symmetry of distances.
//!
//! When the corpus is its own reference (the paper's setting), every reference row needs its k
//! nearest *other* rows. `|a - b| = |b - a|`, so each tile of cross products between blocks I and
//! J (J <= I) serves the rows of I (read by rows) and the rows of J (read by columns): half the
//! flops of treating the rows as ordinary queries. Candidate lists of all rows live until the end
//! (about `n * 1.5k` entries); each block's lists sit behind their own lock, taken one at a time.
//! The window logic of [`super::topk`] does not depend on the order offers arrive in, and the
//! final exact re-rank does not depend on which extra candidates survived, so the result is the
//! same as [`KnnIndex::knn`] with every row excluding itself.

use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;

use super::fused::{self, Epilogue, Passed, Transposed, MR, NR};
use super::int8;
use super::topk::Candidates;
use super::{candidates, cross_product, exact_distances, take_k_nearest, Centred, QuantizedReference, KnnIndex, KnnStats, Neighbours};
use crate::error::{KernelError, Result};

/// Rows per block on the `gemm` path: a `BLOCK x BLOCK` tile and its transpose stay in a core's
/// L2 cache.
const BLOCK: usize = 512;
/// Rows per block for the tile kernel: whole panels of [`NR`] rows and micro-panels of [`MR`];
/// one block of the reference (1.4 MiB at d = 768) stays in L2.
const FUSED_BLOCK: usize = 10 * NR;

impl KnnIndex {
    /// The `k` nearest other reference rows of every reference row (each row excludes itself).
    ///
    /// Equal to `self.knn(self.rows(), k, Some(&[Some(0), Some(1), ...]))`, at about half the cost
    /// on the GEMM path.
    ///
    /// # Errors
    /// [`KernelError::TooFewPoints`] when the reference has `k` rows or fewer;
    /// [`KernelError::Parameter`] for `k == 0`.
    pub fn self_knn(&self, k: usize) -> Result<(Neighbours, KnnStats)> {
        if k == 0 {
            return Err(KernelError::Parameter("k must be at least 1".into()));
        }
        if self.n <= k {
            return Err(KernelError::TooFewPoints { n: self.n, k, needed: k + 1 });
        }
        if self.kdtree.is_some() {
            let me: Vec<Option<u32>> = (0..self.n as u32).map(Some).collect();
            return self.knn(self.rows(), k, Some(&me));
        }
        let start = Instant::now();
        let n = self.n;
        let block = match &self.centred {
            Centred::Rows(_) => BLOCK,
            Centred::Panels { .. } | Centred::Quantized(_) => FUSED_BLOCK,
        };
        let new = |i: usize| match &self.centred {
            Centred::Quantized(r) => r.candidates(&r.q, r.fine.as_ref().map(|f| &f.q), i, k),
            _ => candidates(self, (self.norms[i] as f64).sqrt(), k),
        };
        let blocks: Vec<Mutex<Vec<Candidates>>> = (0..n).step_by(block).map(|lo| Mutex::new((lo..(lo + block).min(n)).map(new).collect())).collect();
        let nb = blocks.len();
        // The blocks with themselves first: then no row meets a block pair before it has a
        // threshold (a row without one takes every row of the pair as a candidate).
        let diagonal: Vec<(usize, usize)> = (0..nb).map(|i| (i, i)).collect();
        let others: Vec<(usize, usize)> = (0..nb).flat_map(|i| (0..i).map(move |j| (i, j))).collect();
        for pairs in [diagonal, others] {
            match &self.centred {
                Centred::Rows(centred) => pairs.par_iter().for_each_init(
                    || (vec![0.0f32; BLOCK * BLOCK], vec![0.0f32; BLOCK * BLOCK]),
                    |(tile, transposed), &(bi, bj)| pair(self, centred, &blocks, bi, bj, tile, transposed),
                ),
                Centred::Panels { data, norms } => {
                    pairs.par_iter().for_each_init(FusedScratch::default, |s, &(bi, bj)| pair_fused(self, data, norms, &blocks, bi, bj, s))
                }
                Centred::Quantized(r) => {
                    pairs.par_iter().for_each_init(QuantizedScratch::default, |s, &(bi, bj)| pair_quantized(self.n, r, &blocks, bi, bj, s))
                }
            }
        }
        let mut out = Neighbours { k, indices: vec![0; n * k], distances: vec![0.0; n * k] };
        let cands: Vec<Candidates> = blocks.into_iter().flat_map(|b| b.into_inner().expect("no panics while locked")).collect();
        let refined: u64 = out
            .indices
            .par_chunks_mut(k)
            .zip(out.distances.par_chunks_mut(k))
            .zip(cands.into_par_iter())
            .enumerate()
            .map(|(i, ((idx, dist), c))| {
                let mut exact: Vec<(f64, u32)> = Vec::new();
                exact_distances(self, self.row(i), &c.finish(), &mut exact);
                take_k_nearest(&mut exact, k, idx, dist);
                exact.len() as u64
            })
            .sum();
        Ok((out, KnnStats { queries: n as u64, refined, kdtree: false, seconds: start.elapsed().as_secs_f64() }))
    }
}

crate::multiversion! {
    /// Blocks `bi >= bj`: rows of `bi` get the tile's rows, rows of `bj` its columns.
    fn pair(index: &KnnIndex, centred: &[f32], blocks: &[Mutex<Vec<Candidates>>], bi: usize, bj: usize, tile: &mut [f32], transposed: &mut [f32]) -> () => pair_body
}

#[inline(always)]
fn pair_body(index: &KnnIndex, centred: &[f32], blocks: &[Mutex<Vec<Candidates>>], bi: usize, bj: usize, tile: &mut [f32], transposed: &mut [f32]) {
    let d = index.dim;
    let (ilo, ihi) = (bi * BLOCK, ((bi + 1) * BLOCK).min(index.n));
    let (jlo, jhi) = (bj * BLOCK, ((bj + 1) * BLOCK).min(index.n));
    let (mi, mj) = (ihi - ilo, jhi - jlo);
    cross_product(tile, &centred[ilo * d..ihi * d], mi, &centred[jlo * d..jhi * d], mj, d, -2.0);
    {
        let mut rows = blocks[bi].lock().expect("no panics while locked");
        for (r, c) in rows.iter_mut().enumerate() {
            c.offer(&tile[r * mj..(r + 1) * mj], &index.norms[jlo..jhi], jlo as u32, Some((ilo + r) as u32));
        }
    }
    if bi == bj {
        return;
    }
    transpose(tile, mi, mj, transposed);
    let mut cols = blocks[bj].lock().expect("no panics while locked");
    for (c, cand) in cols.iter_mut().enumerate() {
        cand.offer(&transposed[c * mi..(c + 1) * mi], &index.norms[ilo..ihi], ilo as u32, None);
    }
}

/// One thread's buffers for [`pair_fused`]; the packed rows of the last block `bi` are kept, as
/// consecutive pairs mostly share it.
#[derive(Default)]
struct FusedScratch {
    packed_block: Option<usize>,
    rows: Vec<f32>,
    packed: Vec<f32>,
    row_norms: Vec<f32>,
    row_thresholds: Vec<f32>,
    col_thresholds: Vec<f32>,
    partial: Vec<f32>,
    row_side: Passed,
    col_side: Passed,
    /// (row within `bi`, reference row, score) and (row within `bj`, reference row, score).
    row_offers: Vec<(u32, u32, f32)>,
    col_offers: Vec<(u32, u32, f32)>,
}

/// Blocks `bi >= bj` through the tile kernel. The kernel compares against the thresholds both
/// blocks had when the pair began (a stale threshold only lets more candidates through); what
/// passes is offered under each block's lock in turn, so no thread waits while another computes.
fn pair_fused(index: &KnnIndex, panels: &[f32], panel_norms: &[f32], blocks: &[Mutex<Vec<Candidates>>], bi: usize, bj: usize, s: &mut FusedScratch) {
    let d = index.dim;
    let (ilo, ihi) = (bi * FUSED_BLOCK, ((bi + 1) * FUSED_BLOCK).min(index.n));
    let (jlo, jhi) = (bj * FUSED_BLOCK, ((bj + 1) * FUSED_BLOCK).min(index.n));
    let FusedScratch { packed_block, rows, packed, row_norms, row_thresholds, col_thresholds, partial, row_side, col_side, row_offers, col_offers } = s;
    if *packed_block != Some(bi) {
        rows.resize((ihi - ilo) * d, 0.0);
        for (i, row) in (ilo..ihi).zip(rows.chunks_exact_mut(d)) {
            fused::unpack_row(panels, d, i, row);
        }
        fused::pack(|i| &rows[(i - ilo) * d..(i - ilo + 1) * d], ilo, ihi, d, MR, packed);
        row_norms.clear();
        row_norms.extend_from_slice(&index.norms[ilo..ihi]);
        row_norms.resize((ihi - ilo).div_ceil(MR) * MR, f32::NAN);
        *packed_block = Some(bi);
    }
    let symmetric = thresholds_at_start(blocks, bi, bj, (MR, NR), row_thresholds, col_thresholds);
    row_offers.clear();
    col_offers.clear();
    let first_panel = jlo / NR;
    let micro = packed.len() / (d * MR);
    partial.resize(micro * MR * NR, 0.0);
    for q in 0..(jhi - jlo).div_ceil(NR) {
        let bp = first_panel + q;
        fused::against_panel(packed, &panels[bp * d * NR..(bp + 1) * d * NR], d, partial, |ap, slice| {
            let other = symmetric.then(|| Transposed { row_norms: &row_norms[ap * MR..], col_thresholds: &col_thresholds[q * NR..], out: &mut *col_side });
            slice.finish(Epilogue { col_norms: &panel_norms[bp * NR..], row_thresholds: &row_thresholds[ap * MR..], out: &mut *row_side, other });
            for (r, &mask) in row_side.mask.iter().enumerate() {
                row_offers.extend(fused::set_bits(mask).map(|c| ((ap * MR + r) as u32, (bp * NR + c) as u32, row_side.scores[r * NR + c])));
            }
            if symmetric {
                for (r, &mask) in col_side.mask.iter().enumerate() {
                    col_offers.extend(fused::set_bits(mask).map(|c| ((q * NR + c) as u32, (ilo + ap * MR + r) as u32, col_side.scores[r * NR + c])));
                }
            }
        });
    }
    {
        let mut cands = blocks[bi].lock().expect("no panics while locked");
        for &(i, r, score) in row_offers.iter() {
            cands[i as usize].offer_one(score, r, Some(ilo as u32 + i));
        }
    }
    if symmetric {
        let mut cands = blocks[bj].lock().expect("no panics while locked");
        for &(j, r, score) in col_offers.iter() {
            cands[j as usize].offer_one(score, r, None);
        }
    }
}

/// The thresholds of blocks `bi` (into `rows`, padded to whole micro-panels of `widths.0`) and,
/// when `bi != bj`, `bj` (into `cols`, padded to whole panels of `widths.1`) as the pair begins;
/// NaN pads pass nothing. Returns whether the pair is symmetric (`bi != bj`).
fn thresholds_at_start(blocks: &[Mutex<Vec<Candidates>>], bi: usize, bj: usize, widths: (usize, usize), rows: &mut Vec<f32>, cols: &mut Vec<f32>) -> bool {
    let take = |b: usize, out: &mut Vec<f32>, width: usize| {
        out.clear();
        out.extend(blocks[b].lock().expect("no panics while locked").iter().map(Candidates::threshold));
        out.resize(out.len().div_ceil(width) * width, f32::NAN);
    };
    take(bi, rows, widths.0);
    if bi != bj {
        take(bj, cols, widths.1);
    }
    bi != bj
}

/// One thread's buffers for [`pair_quantized`], as [`FusedScratch`] for the float32 kernel.
#[derive(Default)]
struct QuantizedScratch {
    packed_block: Option<usize>,
    packed: Vec<u8>,
    rows: int8::Lanes,
    row_thresholds: Vec<f32>,
    col_thresholds: Vec<f32>,
    partial: Vec<i32>,
    passed: int8::Passed,
    /// The thresholds the bytes' prefilter compares with (see [`QuantizedReference::coarse_threshold`]).
    row_coarse: Vec<f32>,
    col_coarse: Vec<f32>,
    /// One panel's passing pairs by column: (row, column, product, sides: 1 the row's, 2 the
    /// column's).
    by_column: Vec<Vec<(u32, u32, i32, u8)>>,
    /// The same pairs column after column: which sides take each, the pairs, their products,
    /// and their distances and bounds.
    sides: Vec<u8>,
    hits: Vec<(u32, u32)>,
    dots: Vec<i32>,
    measured: Vec<(f32, f32, f32)>,
    /// (row within the block, reference row, lower bound, upper bound) for each side.
    row_offers: Vec<(u32, u32, f32, f32)>,
    col_offers: Vec<(u32, u32, f32, f32)>,
}

/// Blocks `bi >= bj` through the integer kernel, as [`pair_fused`]: each pair's product `D` serves
/// both sides, each with the other row's residual in its bounds.
fn pair_quantized(n: usize, r: &QuantizedReference, blocks: &[Mutex<Vec<Candidates>>], bi: usize, bj: usize, s: &mut QuantizedScratch) {
    use int8::{MR, NR};
    let (ilo, ihi) = (bi * FUSED_BLOCK, ((bi + 1) * FUSED_BLOCK).min(n));
    let (jlo, jhi) = (bj * FUSED_BLOCK, ((bj + 1) * FUSED_BLOCK).min(n));
    let QuantizedScratch { packed_block, packed, rows, row_thresholds, col_thresholds, partial, passed, row_coarse, col_coarse, by_column, sides, hits, dots, measured, row_offers, col_offers } = s;
    by_column.resize_with(NR, Vec::new);
    if *packed_block != Some(bi) {
        int8::pack(&r.q, ilo, ihi, MR, false, packed);
        r.q.lanes(ilo, ihi, MR, r.max_norm, rows);
        *packed_block = Some(bi);
    }
    let symmetric = thresholds_at_start(blocks, bi, bj, (MR, NR), row_thresholds, col_thresholds);
    // With a second level the bytes' prefilter takes the row's own byte residual on top.
    let coarse = |t: &[f32], lo: usize, out: &mut Vec<f32>| {
        out.clear();
        out.extend(t.iter().enumerate().map(|(at, t)| if lo + at < n { r.coarse_threshold(&r.q, lo + at, *t) } else { *t }));
    };
    coarse(row_thresholds, ilo, row_coarse);
    if symmetric {
        coarse(col_thresholds, jlo, col_coarse);
    }
    let fine = r.fine.as_ref().map(|f| &f.q);
    row_offers.clear();
    col_offers.clear();
    let groups = r.q.groups;
    let micro = (ihi - ilo).div_ceil(MR);
    partial.resize(micro * MR * NR, 0);
    for p in 0..(jhi - jlo).div_ceil(NR) {
        let bp = jlo / NR + p;
        int8::against_panel(packed, &r.panels[bp * groups * NR * 4..(bp + 1) * groups * NR * 4], groups, r.q.width, partial, |ap, slice| {
            slice.finish(int8::Epilogue {
                cols: r.lanes.at(bp * NR),
                rows: rows.at(ap * MR),
                row_thresholds: &row_coarse[ap * MR..],
                col_thresholds: symmetric.then(|| &col_coarse[p * NR..]),
                out: &mut *passed,
            });
            for row in 0..MR {
                let (mine, theirs) = (passed.mask[row], if symmetric { passed.other[row] } else { 0 });
                for c in fused::set_bits(mine | theirs) {
                    let sides = (mine >> c & 1) as u8 | ((theirs >> c & 1) as u8) << 1;
                    by_column[c].push(((ilo + ap * MR + row) as u32, (bp * NR + c) as u32, passed.dots[row * NR + c], sides));
                }
            }
        });
        // Thresholds stay as they were for the whole panel, so its pairs are measured together,
        // column after column: the sixteen-bit products then load each column's row once for
        // its group ([`int8::dot16`]). Each list still takes its offers in column order.
        hits.clear();
        dots.clear();
        sides.clear();
        for column in by_column.iter_mut() {
            for &(i, j, dot, side) in column.iter() {
                hits.push((i, j));
                dots.push(dot);
                sides.push(side);
            }
            column.clear();
        }
        if !hits.is_empty() {
            r.measure(&r.q, fine, hits, dots, measured);
            // Each side's offers, those already beyond its list's threshold left out.
            for ((&(i, j), &(dd, rho_j, rho_i)), &side) in hits.iter().zip(measured.iter()).zip(sides.iter()) {
                let (i, j) = (i as usize, j as usize);
                if side & 1 == 1 {
                    let (lower, upper) = int8::bounds(dd, rho_j);
                    if lower <= row_thresholds[i - ilo] {
                        row_offers.push(((i - ilo) as u32, j as u32, lower, upper));
                    }
                }
                if side & 2 == 2 {
                    let (lower, upper) = int8::bounds(dd, rho_i);
                    if lower <= col_thresholds[j - jlo] {
                        col_offers.push(((j - jlo) as u32, i as u32, lower, upper));
                    }
                }
            }
        }
        // The rows' lists take their offers after each panel, and the next panel meets their
        // new thresholds (a column meets the block's rows within one panel: its offers wait).
        if !row_offers.is_empty() {
            let mut cands = blocks[bi].lock().expect("no panics while locked");
            for &(i, j, lower, upper) in row_offers.iter() {
                cands[i as usize].offer_bounds(lower, upper, j, Some(ilo as u32 + i));
            }
            for (at, c) in cands.iter().enumerate() {
                row_thresholds[at] = c.threshold();
                row_coarse[at] = r.coarse_threshold(&r.q, ilo + at, row_thresholds[at]);
            }
            row_offers.clear();
        }
    }
    if symmetric {
        let mut cands = blocks[bj].lock().expect("no panics while locked");
        for &(j, i, lower, upper) in col_offers.iter() {
            cands[j as usize].offer_bounds(lower, upper, i, None);
        }
    }
}

/// `out[c * m + r] = tile[r * n + c]` in 16 x 16 tiles, so that loads and stores both run along
/// rows of 16 values.
#[inline(always)]
fn transpose(tile: &[f32], m: usize, n: usize, out: &mut [f32]) {
    const T: usize = 16;
    let (mf, nf) = (m - m % T, n - n % T);
    let mut buf = [[0.0f32; T]; T];
    for r0 in (0..mf).step_by(T) {
        for c0 in (0..nf).step_by(T) {
            for (rr, b) in buf.iter_mut().enumerate() {
                b.copy_from_slice(&tile[(r0 + rr) * n + c0..(r0 + rr) * n + c0 + T]);
            }
            for cc in 0..T {
                let o: &mut [f32; T] = (&mut out[(c0 + cc) * m + r0..(c0 + cc) * m + r0 + T]).try_into().expect("T values");
                for rr in 0..T {
                    o[rr] = buf[rr][cc];
                }
            }
        }
    }
    for r in 0..m {
        let c_from = if r < mf { nf } else { 0 };
        for c in c_from..n {
            out[c * m + r] = tile[r * n + c];
        }
    }
}
