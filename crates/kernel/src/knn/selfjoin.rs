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

use super::topk::Candidates;
use super::{cross_product, take_k_nearest, KnnIndex, KnnStats, Neighbours, U32};
use crate::error::{KernelError, Result};
use crate::rows::sq_dist_f64;

/// Rows per block: a `BLOCK x BLOCK` tile and its transpose stay in a core's L2 cache.
const BLOCK: usize = 512;

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
        let (n, d) = (self.n, self.dim);
        let gamma = (d as f64 + 6.0) * U32 / (1.0 - (d as f64 + 6.0) * U32);
        let blocks: Vec<Mutex<Vec<Candidates>>> = (0..n)
            .step_by(BLOCK)
            .map(|lo| {
                let hi = (lo + BLOCK).min(n);
                Mutex::new(
                    (lo..hi)
                        .map(|i| {
                            let qn = (self.norms[i] as f64).sqrt();
                            let bound = gamma * (2.0 * qn * self.max_norm + self.max_norm * self.max_norm);
                            Candidates::new(k, (2.0 * bound * 1.0001) as f32)
                        })
                        .collect(),
                )
            })
            .collect();
        let nb = blocks.len();
        let pairs: Vec<(usize, usize)> = (0..nb).flat_map(|i| (0..=i).map(move |j| (i, j))).collect();
        pairs.par_iter().for_each_init(
            || (vec![0.0f32; BLOCK * BLOCK], vec![0.0f32; BLOCK * BLOCK]),
            |(tile, transposed), &(bi, bj)| pair(self, &blocks, bi, bj, tile, transposed),
        );
        let mut out = Neighbours { k, indices: vec![0; n * k], distances: vec![0.0; n * k] };
        let cands: Vec<Candidates> = blocks.into_iter().flat_map(|b| b.into_inner().expect("no panics while locked")).collect();
        let refined: u64 = out
            .indices
            .par_chunks_mut(k)
            .zip(out.distances.par_chunks_mut(k))
            .zip(cands.into_par_iter())
            .enumerate()
            .map(|(i, ((idx, dist), c))| {
                let q = self.row(i);
                let mut exact: Vec<(f64, u32)> = Vec::new();
                for (_, r) in c.finish() {
                    exact.push((sq_dist_f64(q, self.row(r as usize)), r));
                }
                take_k_nearest(&mut exact, k, idx, dist);
                exact.len() as u64
            })
            .sum();
        Ok((out, KnnStats { queries: n as u64, refined, kdtree: false, seconds: start.elapsed().as_secs_f64() }))
    }
}

crate::multiversion! {
    /// Blocks `bi >= bj`: rows of `bi` get the tile's rows, rows of `bj` its columns.
    fn pair(index: &KnnIndex, blocks: &[Mutex<Vec<Candidates>>], bi: usize, bj: usize, tile: &mut [f32], transposed: &mut [f32]) -> () => pair_body
}

#[inline(always)]
fn pair_body(index: &KnnIndex, blocks: &[Mutex<Vec<Candidates>>], bi: usize, bj: usize, tile: &mut [f32], transposed: &mut [f32]) {
    let d = index.dim;
    let (ilo, ihi) = (bi * BLOCK, ((bi + 1) * BLOCK).min(index.n));
    let (jlo, jhi) = (bj * BLOCK, ((bj + 1) * BLOCK).min(index.n));
    let (mi, mj) = (ihi - ilo, jhi - jlo);
    cross_product(tile, &index.centred[ilo * d..ihi * d], mi, &index.centred[jlo * d..jhi * d], mj, d, -2.0);
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
