//! Candidate selection with a proven error margin.
//!
//! The float32 scores `s_j = |r_j|^2 - 2 q.r_j` rank reference rows by distance to `q` (the constant
//! `|q|^2` is left out), but each score carries an absolute error of at most `margin`. So a row is
//! kept as a candidate while its score is within `2 * margin` of the k-th smallest score seen so
//! far: no row that is truly among the k nearest can fall outside that window. The caller then
//! re-ranks the survivors with exact float64 distances.

/// Candidates of one query: (approximate score, reference row).
pub(crate) struct Candidates {
    k: usize,
    window: f32,
    threshold: f32,
    items: Vec<(f32, u32)>,
}

impl Candidates {
    /// `window` is twice the per-score error bound.
    pub(crate) fn new(k: usize, window: f32) -> Self {
        Self { k, window, threshold: f32::INFINITY, items: Vec::with_capacity(4 * k.max(64)) }
    }

    /// Offers the scores `s[j] = cross[j] + norms[j]` for rows `first + j`, skipping `skip`.
    #[inline(always)]
    pub(crate) fn offer(&mut self, cross: &[f32], norms: &[f32], first: u32, skip: Option<u32>) {
        const LANES: usize = 16;
        let n = cross.len();
        let mut j = 0;
        while j + LANES <= n {
            let c = &cross[j..j + LANES];
            let r = &norms[j..j + LANES];
            let mut lo = f32::INFINITY;
            for l in 0..LANES {
                let s = c[l] + r[l];
                lo = if s < lo { s } else { lo };
            }
            if lo <= self.threshold {
                for l in 0..LANES {
                    self.push(c[l] + r[l], first + (j + l) as u32, skip);
                }
            }
            j += LANES;
        }
        for l in j..n {
            self.push(cross[l] + norms[l], first + l as u32, skip);
        }
        self.settle();
    }

    /// Offers `scores[j]` for row `first + j` for every bit `j` set in `mask` (the scores a tile
    /// kernel found within the threshold it was given), skipping `skip`.
    #[inline]
    pub(crate) fn offer_masked(&mut self, scores: &[f32], mask: u64, first: u32, skip: Option<u32>) {
        for j in super::fused::set_bits(mask) {
            self.push(scores[j], first + j as u32, skip);
        }
        self.settle();
    }

    /// Offers one score.
    #[inline]
    pub(crate) fn offer_one(&mut self, score: f32, row: u32, skip: Option<u32>) {
        self.push(score, row, skip);
        self.settle();
    }

    /// Scores above this cannot be among the k nearest (infinite until k candidates are known).
    pub(crate) fn threshold(&self) -> f32 {
        self.threshold
    }

    #[inline(always)]
    fn push(&mut self, s: f32, row: u32, skip: Option<u32>) {
        if s <= self.threshold && Some(row) != skip {
            self.items.push((s, row));
        }
    }

    /// Prunes once the list has grown well past `k`, so pruning costs O(1) per offer.
    #[inline(always)]
    fn settle(&mut self) {
        if self.items.len() > 4 * self.k.max(64) {
            self.prune();
        }
    }

    /// Drops every candidate outside the window above the current k-th smallest score.
    fn prune(&mut self) {
        if self.items.len() < self.k {
            return;
        }
        let kth = {
            let (_, v, _) = self.items.select_nth_unstable_by(self.k - 1, |a, b| a.0.total_cmp(&b.0));
            v.0
        };
        // Round the window's edge up so float32 rounding of the sum cannot shrink it.
        self.threshold = (kth + self.window).next_up();
        let t = self.threshold;
        self.items.retain(|c| c.0 <= t);
    }

    /// The surviving reference rows (every row that can be among the k nearest).
    pub(crate) fn finish(mut self) -> Vec<(f32, u32)> {
        self.prune();
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_window_and_skips() {
        let mut c = Candidates::new(2, 0.5);
        let cross: Vec<f32> = (0..40).map(|j| j as f32).collect();
        let norms = vec![0.0f32; 40];
        c.offer(&cross, &norms, 100, Some(100));
        let mut rows: Vec<u32> = c.finish().into_iter().map(|x| x.1).collect();
        rows.sort();
        // Row 100 is skipped; k-th smallest of the rest is 2.0, window 0.5: rows 101 and 102.
        assert_eq!(rows, vec![101, 102]);
    }
}
