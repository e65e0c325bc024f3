//! The re-rank for the estimates: the exact neighbourhood, but exact distances only at its ends.
//!
//! A query's estimate needs the set of its `k` nearest rows (the members, whose own lists or
//! rows give the ratios), its nearest two distances and its k-th (`r1`, `r2`, `rk`); the
//! distances in between enter nothing. The candidate bounds already settle most of the set: a
//! candidate that at most `k - 1` others could precede is a member, one that `k` others surely
//! precede is not, and only the rest (near the k-th distance) are measured. So are the few that
//! could be first or second, and the members that could be last. At `k = 128` that is a fraction
//! of the candidates, and the exact re-rank, which waits on memory for each candidate's row, is a
//! quarter of the search.
//!
//! With `h = slack / 2` the per-query error the bounds leave out, a candidate's true key lies in
//! `[lower - h, upper + h]`; `i` can precede `j` only if `lower_i <= upper_j + slack`, and surely
//! precedes it if `upper_i + slack < lower_j` (ties between equal distances go to the lower row,
//! and "can precede" counts them). Rows that were pruned cannot precede a member: at least `k`
//! candidates surely precede each of them.

use super::topk::Candidates;
use super::{exact_distances, nearer as by, KnnIndex};
use crate::rows::sq_dist_f64;

/// Writes query `q`'s neighbourhood from its candidates: `idx[0]` and `idx[1]` its nearest two
/// rows and `idx[k - 1]` its k-th, with exact distances in `dist`; the other members in between,
/// by row, with NaN distances. Needs `k >= 3`. Returns the number of exact distances computed.
///
/// Each test is one comparison with an order statistic: `j` is a sure member when its reach is
/// below the `(k + 1)`-th smallest lower bound (at most `k - 1` others can precede it), surely
/// out when the k-th smallest reach is below its lower bound, and can be first or second when
/// the second smallest reach is not below its lower bound.
pub(crate) fn rerank_ends(index: &KnnIndex, c: Candidates, q: &[f32], k: usize, idx: &mut [u32], dist: &mut [f64]) -> u64 {
    debug_assert!(k >= 3 && idx.len() == k && dist.len() == k);
    let (items, slack) = c.finish_with_bounds();
    debug_assert!(items.len() >= k, "the candidates hold the k nearest");
    // `reach[j]`: the largest key candidate j can have, plus the slack, rounded up.
    let reach: Vec<f32> = items.iter().map(|(_, upper, _)| (upper + slack).next_up()).collect();
    let mut order: Vec<f32> = items.iter().map(|c| c.0).collect();
    let sure_below = if k < order.len() { *order.select_nth_unstable_by(k, f32::total_cmp).1 } else { f32::INFINITY };
    order.clear();
    order.extend_from_slice(&reach);
    let out_above = *order.select_nth_unstable_by(k - 1, f32::total_cmp).1;
    let front_above = second_smallest(&reach);
    let (mut members, mut undecided, mut wanted) = (Vec::with_capacity(k), Vec::new(), Vec::new());
    for (j, &(lower, _, row)) in items.iter().enumerate() {
        if reach[j] < sure_below {
            members.push(j);
        } else if out_above >= lower {
            undecided.push(j);
            wanted.push(row);
        }
        if front_above >= lower {
            wanted.push(row);
        }
    }
    // One pass of exact distances for the undecided and the possible first two, in row order.
    wanted.sort_unstable();
    wanted.dedup();
    let mut exact = Vec::with_capacity(wanted.len() + 8);
    exact_distances(index, q, &wanted, &mut exact);
    let find = |row: u32, exact: &[(f64, u32)]| exact.binary_search_by_key(&row, |e| e.1).ok().map(|at| exact[at]);
    // The undecided fill the members' remaining places, nearest first.
    let mut ranked: Vec<((f64, u32), usize)> = undecided.iter().map(|&j| (find(items[j].2, &exact).expect("measured"), j)).collect();
    let open = k - members.len();
    if open < ranked.len() {
        ranked.select_nth_unstable_by(open, |a, b| by(&a.0, &b.0));
    }
    members.extend(ranked.iter().take(open).map(|r| r.1));
    debug_assert_eq!(members.len(), k);
    // The first two: among the candidates fewer than two others surely precede.
    let (mut first, mut second) = ((f64::INFINITY, u32::MAX), (f64::INFINITY, u32::MAX));
    for &(lower, _, row) in &items {
        if front_above >= lower {
            let e = find(row, &exact).expect("measured");
            if by(&e, &first).is_lt() {
                second = first;
                first = e;
            } else if by(&e, &second).is_lt() {
                second = e;
            }
        }
    }
    // The last: among the members that no other member surely follows.
    let deepest = members.iter().map(|&j| items[j].0).fold(f32::NEG_INFINITY, f32::max);
    let mut last = (f64::NEG_INFINITY, 0u32);
    let mut measured = exact.len();
    for &j in &members {
        if reach[j] >= deepest {
            let row = items[j].2;
            let e = match find(row, &exact) {
                Some(e) => e,
                None => {
                    measured += 1;
                    (sq_dist_f64(q, index.row(row as usize)), row)
                }
            };
            if by(&e, &last).is_gt() {
                last = e;
            }
        }
    }
    idx[0] = first.1;
    dist[0] = first.0.sqrt();
    idx[1] = second.1;
    dist[1] = second.0.sqrt();
    idx[k - 1] = last.1;
    dist[k - 1] = last.0.sqrt();
    let mut at = 2;
    for &j in &members {
        let row = items[j].2;
        if row != first.1 && row != second.1 && row != last.1 {
            idx[at] = row;
            at += 1;
        }
    }
    debug_assert_eq!(at, k - 1);
    idx[2..k - 1].sort_unstable();
    dist[2..k - 1].fill(f64::NAN);
    measured as u64
}

/// The second smallest value (infinite for fewer than two).
fn second_smallest(v: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::INFINITY, f32::INFINITY);
    for &x in v {
        if x < a {
            b = a;
            a = x;
        } else if x < b {
            b = x;
        }
    }
    b
}
