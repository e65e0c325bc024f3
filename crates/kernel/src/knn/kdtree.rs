//! The `kiddo` k-d tree path for low dimensions.
//!
//! `kiddo` fixes the dimension at compile time, so the tree is instantiated for the dimensions in
//! [`KDTREE_DIMS`] only. Coordinates are widened to float64, which is exact, and every distance
//! that decides a result is recomputed with the same float64 routine as the GEMM path, so both
//! paths return identical neighbours.

use std::num::NonZero;

use kiddo::immutable::float::kdtree::ImmutableKdTree;
use kiddo::SquaredEuclidean;

use super::take_k_nearest;
use crate::rows::sq_dist_f64;

/// Leaf bucket size.
const BUCKET: usize = 32;

macro_rules! kd_dims {
    ($($variant:ident = $d:literal),* $(,)?) => {
        /// Dimensions for which a k-d tree is compiled.
        pub const KDTREE_DIMS: &[usize] = &[$($d),*];

        pub(crate) enum KdIndex {
            $($variant(Box<ImmutableKdTree<f64, u32, $d, BUCKET>>),)*
        }

        impl KdIndex {
            /// Builds a tree over row-major `data`, or `None` for an unsupported dimension.
            pub(crate) fn build(data: &[f32], dim: usize) -> Option<Self> {
                match dim {
                    $($d => {
                        let pts: Vec<[f64; $d]> = data
                            .chunks_exact($d)
                            .map(|r| std::array::from_fn(|j| r[j] as f64))
                            .collect();
                        Some(KdIndex::$variant(Box::new(ImmutableKdTree::new_from_slice(&pts))))
                    })*
                    _ => None,
                }
            }

            /// The `want` nearest rows by kiddo's own float64 distance, nearest first.
            fn nearest(&self, q: &[f32], want: usize) -> Vec<(f64, u32)> {
                let want = NonZero::new(want).expect("want >= 1");
                match self {
                    $(KdIndex::$variant(t) => {
                        let qa: [f64; $d] = std::array::from_fn(|j| q[j] as f64);
                        t.nearest_n::<SquaredEuclidean>(&qa, want).into_iter().map(|nn| (nn.distance, nn.item)).collect()
                    })*
                }
            }

            /// Every row within squared distance `r2`.
            fn within(&self, q: &[f32], r2: f64) -> Vec<(f64, u32)> {
                match self {
                    $(KdIndex::$variant(t) => {
                        let qa: [f64; $d] = std::array::from_fn(|j| q[j] as f64);
                        t.within_unsorted::<SquaredEuclidean>(&qa, r2).into_iter().map(|nn| (nn.distance, nn.item)).collect()
                    })*
                }
            }
        }
    };
}

kd_dims!(
    D2 = 2, D3 = 3, D4 = 4, D5 = 5, D6 = 6, D8 = 8, D10 = 10, D12 = 12, D16 = 16, D24 = 24, D32 = 32, D48 = 48, D64 = 64,
);

/// Whether [`KDTREE_DIMS`] holds `dim`.
pub fn kdtree_supports(dim: usize) -> bool {
    KDTREE_DIMS.contains(&dim)
}

impl KdIndex {
    /// The `k` nearest rows of `q`; returns the number of candidates re-ranked.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn search(&self, data: &[f32], dim: usize, q: &[f32], k: usize, skip: Option<u32>, idx: &mut [u32], dist: &mut [f64]) -> u64 {
        let want = k + 1 + usize::from(skip.is_some());
        let mut near: Vec<(f64, u32)> = self.nearest(q, want).into_iter().filter(|(_, r)| Some(*r) != skip).collect();
        // kiddo breaks ties in its own order; when the k-th and (k+1)-th distances are too close to
        // tell apart, gather everything up to that distance and let the row order decide.
        if near.len() > k && near[k].0 <= near[k - 1].0 * (1.0 + 1e-9) + f64::MIN_POSITIVE {
            let edge = near[k].0 * (1.0 + 1e-9) + f64::MIN_POSITIVE;
            near = self.within(q, edge).into_iter().filter(|(_, r)| Some(*r) != skip).collect();
        }
        let mut pairs: Vec<(f64, u32)> =
            near.into_iter().map(|(_, r)| (sq_dist_f64(q, &data[r as usize * dim..(r as usize + 1) * dim]), r)).collect();
        let n = pairs.len() as u64;
        take_k_nearest(&mut pairs, k, idx, dist);
        n
    }
}
