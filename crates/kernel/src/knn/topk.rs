//! Candidate selection with a proven error margin.
//!
//! Each offered reference row comes with a lower and an upper bound on a key that ranks rows by
//! distance to the query, up to a per-query error of at most `slack / 2`. A row stays a candidate
//! while its lower bound is within `slack` of the k-th smallest upper bound seen so far: no row
//! that is truly among the k nearest can fall outside that window. The caller then re-ranks the
//! survivors with exact float64 distances.
//!
//! - float32 scores `s_j = |r_j|^2 - 2 q.r_j` (the constant `|q|^2` left out) are their own
//!   bounds, and `slack` is twice their error bound;
//! - int8 distances ([`super::int8`]) bound the true distance within the two rows' quantization
//!   residuals: the reference row's goes into the bounds, the query's into `slack`.

/// Candidates of one query: (lower bound, upper bound, reference row).
pub(crate) struct Candidates {
    k: usize,
    slack: f32,
    threshold: f32,
    items: Vec<(f32, f32, u32)>,
    /// Prune when the list grows past this: first at `2 k` (until then every offer passes, so
    /// an early first threshold saves more offers than its pruning costs), then at `4 k`, or
    /// twice what the last pruning kept when the window holds more than that (so pruning stays
    /// O(1) per offer); for an [`Self::eager`] list after [`Self::between`] more items than the
    /// last pruning kept.
    limit: usize,
    eager: bool,
}

/// Offers a tile kernel's epilogue makes between two prunings at most (one panel's row), which
/// the list's first allocation leaves room for, so that it is never moved in a narrow window.
const BETWEEN_SETTLES: usize = 64;

impl Candidates {
    /// `slack` is twice the part of the error bound that the offered bounds leave out.
    pub(crate) fn new(k: usize, slack: f32) -> Self {
        let k = k.max(1);
        Self { k, slack, threshold: f32::INFINITY, items: Vec::with_capacity(Self::usual_limit(k) + BETWEEN_SETTLES), limit: 2 * k.max(32), eager: false }
    }

    /// A list that prunes more often, for offers that are dear to make (each pair the two-level
    /// search offers costs a sixteen-bit product first): every pruning lowers the threshold,
    /// and every offer it then turns away is saved. On real hidden states the two-level
    /// self-join measured 1,526 offered pairs per row against 2,330 (docs/performance.md); for
    /// cheap offers the prunings cost about what they save.
    pub(crate) fn eager(k: usize, slack: f32) -> Self {
        Self { eager: true, ..Self::new(k, slack) }
    }

    /// The list's usual length at most: what [`Self::new`] allocates room for.
    fn usual_limit(k: usize) -> usize {
        4 * k.max(64)
    }

    /// New items between an eager list's prunings, when the last one kept `kept`: `k / 2`, or a
    /// quarter of what it kept when that is more (so pruning stays O(1) per offer).
    fn between(k: usize, kept: usize) -> usize {
        (k / 2).max(kept / 4).max(16)
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
                    let s = c[l] + r[l];
                    self.push(s, s, first + (j + l) as u32, skip);
                }
            }
            j += LANES;
        }
        for l in j..n {
            let s = cross[l] + norms[l];
            self.push(s, s, first + l as u32, skip);
        }
        self.settle();
    }

    /// Offers `scores[j]` for row `first + j` for every bit `j` set in `mask` (the scores a tile
    /// kernel found within the threshold it was given), skipping `skip`.
    #[inline]
    pub(crate) fn offer_masked(&mut self, scores: &[f32], mask: u64, first: u32, skip: Option<u32>) {
        for j in super::fused::set_bits(mask) {
            self.push(scores[j], scores[j], first + j as u32, skip);
        }
        self.settle();
    }

    /// Offers one score.
    #[inline]
    pub(crate) fn offer_one(&mut self, score: f32, row: u32, skip: Option<u32>) {
        self.push(score, score, row, skip);
        self.settle();
    }

    /// Offers one row with bounds `lower <= key <= upper`.
    #[inline]
    pub(crate) fn offer_bounds(&mut self, lower: f32, upper: f32, row: u32, skip: Option<u32>) {
        self.push(lower, upper, row, skip);
        self.settle();
    }

    /// Rows whose lower bound is above this cannot be among the k nearest (infinite until k
    /// candidates are known).
    pub(crate) fn threshold(&self) -> f32 {
        self.threshold
    }

    #[inline(always)]
    fn push(&mut self, lower: f32, upper: f32, row: u32, skip: Option<u32>) {
        if lower <= self.threshold && Some(row) != skip {
            self.items.push((lower, upper, row));
        }
    }

    /// Prunes once the list has grown well past `k`, so pruning costs O(1) per offer.
    #[inline(always)]
    fn settle(&mut self) {
        if self.items.len() > self.limit {
            self.prune();
            self.limit = if self.eager {
                self.items.len() + Self::between(self.k, self.items.len())
            } else {
                Self::usual_limit(self.k).max(self.limit).max(2 * self.items.len())
            };
        }
    }

    /// Drops every candidate outside the window above the current k-th smallest upper bound.
    fn prune(&mut self) {
        if self.items.len() < self.k {
            return;
        }
        let kth = {
            let (_, v, _) = self.items.select_nth_unstable_by(self.k - 1, |a, b| a.1.total_cmp(&b.1));
            v.1
        };
        // Round the window's edge up so float32 rounding of the sum cannot shrink it.
        self.threshold = (kth + self.slack).next_up();
        let t = self.threshold;
        self.items.retain(|c| c.0 <= t);
    }

    /// The surviving candidates with their bounds (every row that can be among the k nearest),
    /// and the slack their bounds leave out.
    pub(crate) fn finish_with_bounds(mut self) -> (Vec<(f32, f32, u32)>, f32) {
        self.prune();
        (self.items, self.slack)
    }

    /// The surviving reference rows (every row that can be among the k nearest), in row order,
    /// so that the exact re-rank reads the reference front to back.
    pub(crate) fn finish(mut self) -> Vec<u32> {
        self.prune();
        let mut rows: Vec<u32> = self.items.into_iter().map(|c| c.2).collect();
        rows.sort_unstable();
        rows
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
        let rows = c.finish();
        // Row 100 is skipped; k-th smallest of the rest is 2.0, window 0.5: rows 101 and 102.
        assert_eq!(rows, vec![101, 102]);
    }
}
