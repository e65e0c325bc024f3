//! Exact k-nearest-neighbour search of query batches against a reference matrix.
//!
//! Two paths give the same answer (the k rows with the smallest exact distance, ties broken by
//! reference row order):
//! - **gemm** (any dimension): reference and queries are centred on the reference mean, the float32
//!   cross term of `|q - r|^2 = |q|^2 + |r|^2 - 2 q.r` comes from a blocked GEMM, candidates within
//!   a proven error window of the k-th score survive ([`topk`]), and the survivors are re-ranked by
//!   exact float64 distances ([`crate::rows`]). Centring removes the common offset that makes the
//!   expansion lose its digits; the window catches whatever rounding is left. On AVX-512 CPUs the
//!   products come from our tile kernel with the window test in its epilogue ([`fused`]);
//!   elsewhere from the `gemm` crate ([`gemm`]). Both give the same neighbours, to the bit.
//!   On CPUs with AVX512_VNNI the candidates come instead from exact integer products of rows
//!   quantized to bytes or to sixteen bits, or bytes first and sixteen bits for the pairs they
//!   pass, with a window from their proven residual bounds ([`int8`], [`FineRows`]); the float64
//!   re-rank makes the neighbours the same again.
//! - **kd-tree** (`kiddo`, low dimensions): exact float64 coordinates, used where the benchmark
//!   shows it is faster.

mod ends;
mod fused;
mod gemm;
mod int8;
mod kdtree;
mod selfjoin;
mod topk;

use std::time::Instant;

use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::rows::{prefetch, sq_dist_f64, sq_norm_f64, Rows};

pub(crate) use gemm::cross_product;
pub use kdtree::{kdtree_supports, KDTREE_DIMS};

/// Queries per parallel work item: one GEMM panel, kept in the worker's cache while all reference
/// tiles stream past it.
const QUERY_BLOCK: usize = 512;
/// Reference rows per GEMM tile.
const REF_TILE: usize = 1024;
/// Unit roundoff of float32.
pub(super) const U32: f64 = f32::EPSILON as f64 / 2.0;

/// How to search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SearchStrategy {
    /// The k-d tree where it is supported and measured faster; else, where the CPU has
    /// AVX512_VNNI, the int8 candidate search if a probe of the reference says its window pays,
    /// or else int8 with sixteen-bit products for the pairs it passes (a large reference) or the
    /// int16 search (a small one); else the GEMM path.
    #[default]
    Auto,
    /// Always the GEMM path (float32 products).
    Gemm,
    /// Candidates from int8 products (CPUs with AVX512_VNNI only), whatever the probe says.
    Int8,
    /// Candidates from sixteen-bit integer products (CPUs with AVX512_VNNI only).
    Int16,
    /// Candidates from int8 products, each pair they cannot settle re-measured with sixteen-bit
    /// products (CPUs with AVX512_VNNI only): the bytes' rate with the sixteen-bit window.
    Int8Fine,
    /// The k-d tree (only for dimensions in [`KDTREE_DIMS`]).
    KdTree,
}

/// Largest dimension at which [`SearchStrategy::Auto`] picks the k-d tree; measured by
/// `lidscope bench --kdtree` (20,000 points, k = 64: the tree took 0.13x the GEMM time at d = 2,
/// 0.86x at d = 10 and 1.39x at d = 12; see docs/performance.md).
pub const KDTREE_AUTO_MAX_DIM: usize = 10;
/// Below this many reference rows the GEMM path is always at least as fast.
const KDTREE_AUTO_MIN_ROWS: usize = 4096;
/// Reference rows the int8 probe searches for (spread evenly over the reference), and the `k`
/// it searches with.
const PROBE_ROWS: usize = 64;
const PROBE_K: usize = 128;
/// [`SearchStrategy::Auto`] takes the one-level int8 search over the two-level one
/// ([`SearchStrategy::Int8Fine`]) when the reference has at least this many rows per unit of
/// `extra`, the int8 probe's re-ranked candidates beyond `k` as a fraction of `k`. Both compute
/// the same byte products; the second level pays a sixteen-bit product for every pair that
/// passes the bytes' window, the first level alone an exact re-rank of its extra candidates,
/// which a large reference repays by passing fewer pairs per query. Measured (docs/performance.md,
/// "Two levels"): the two-level search faster at 16,000 rows per unit (a real self-join), one
/// level faster at 65,000 (synthetic rows against a sample), the two even at 146,000.
const INT8_ROWS_PER_EXTRA: f64 = 40_000.0;
/// Where int8 alone does not pay, [`SearchStrategy::Auto`] takes the two-level search from this
/// many reference rows on, else the int16 one. The second level's products cost about the
/// same per query at any size (they follow the pairs that pass, about `k ln(N / k)`), the
/// bytes' saving grows with the reference: measured on real hidden states (docs/performance.md,
/// "Two levels"), int16 a little faster in a self-join of 13,000 rows and against 4,000, the two
/// even against 16,000, the two levels 10 to 15% faster in a self-join of 57,000.
const TWO_LEVEL_MIN_ROWS: usize = 16_000;

/// Whether the integer searches ([`SearchStrategy::Int8`], [`SearchStrategy::Int16`],
/// [`SearchStrategy::Int8Fine`]) can run here, for rows of `dim` values.
pub fn int8_search_available(dim: usize) -> bool {
    int8::available() && dim <= int8::MAX_DIM
}

/// What computes the products that find candidates; every choice gives the same neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Products {
    /// The `gemm` crate, on any CPU.
    Gemm,
    /// The AVX-512 float32 tile kernel ([`fused`]).
    Float32Tile,
    /// Integer products of rows quantized to bytes (AVX512_VNNI, [`int8`]).
    Int8,
    /// Integer products of rows quantized to sixteen bits (AVX512_VNNI, [`int8::Width::I16`]).
    Int16,
    /// [`Products::Int8`] for every pair, [`Products::Int16`] for the pairs that pass the bytes'
    /// window ([`FineRows`]).
    Int8Fine,
    /// [`Products::Int8`] where the probe says its window pays, else [`Products::Int8Fine`] or,
    /// for a small reference, [`Products::Int16`].
    Int8IfItPays,
}

impl Products {
    /// The fastest float32 products this CPU has.
    fn float32() -> Self {
        if fused::available() {
            Products::Float32Tile
        } else {
            Products::Gemm
        }
    }
}

/// A reference matrix prepared for repeated exact searches.
pub struct KnnIndex {
    data: Vec<f32>,
    n: usize,
    dim: usize,
    mean: Vec<f64>,
    centred: Centred,
    /// The centred rows' squared norms, for the float32 paths (empty for the integer searches).
    norms: Vec<f32>,
    max_norm: f64,
    kdtree: Option<kdtree::KdIndex>,
    /// The int8 probe's re-ranked candidates beyond `k`, as a fraction of `k` (when it ran).
    probe: Option<f64>,
}

/// The reference rows centred on their mean, laid out for the product that searches them.
enum Centred {
    /// Row-major, for the `gemm` crate.
    Rows(Vec<f32>),
    /// Packed for the AVX-512 tile kernel ([`fused::pack`], [`fused::NR`] rows per panel), with
    /// each panel's squared norms (NaN past the last row).
    Panels { data: Vec<f32>, norms: Vec<f32> },
    /// Quantized for the integer searches.
    Quantized(Box<QuantizedReference>),
}

/// The reference quantized ([`int8::Quantized`]), packed into panels of [`int8::NR`] rows, with
/// the epilogue's per-row values and the largest dequantized norm.
struct QuantizedReference {
    q: int8::Quantized,
    panels: Vec<u8>,
    lanes: int8::Lanes,
    max_norm: f64,
    /// With bytes: the same rows in sixteen bits, for the pairs the bytes cannot settle.
    fine: Option<FineRows>,
}

/// The second level of the two-level search ([`Products::Int8Fine`]): rows quantized to sixteen
/// bits, row-major. A pair that passes the bytes' prefilter gets its sixteen-bit product
/// ([`int8::dot16`]) and is offered with those bounds; the lists' slack is the sixteen-bit one.
///
/// Why nothing is lost: with `T` a list's threshold (its k-th smallest sixteen-bit upper bound
/// plus twice the query's sixteen-bit residual, [`int8::Quantized::slack`]), the true k-th
/// distance is at most `T`, and a pair's true distance is at least `D8 - rho8_x - rho8_y`. The
/// bytes' prefilter is therefore run against `T + rho8_x` (the query's byte residual added to
/// its threshold): a pair it rejects is farther than the k-th neighbour.
struct FineRows {
    q: int8::Quantized,
    max_norm: f64,
}

impl QuantizedReference {
    /// Quantizes and packs `reference - mean`; with `fine`, also quantizes it to sixteen bits.
    fn new(reference: Rows<'_>, mean: &[f64], width: int8::Width, fine: bool) -> Self {
        let q = int8::Quantized::new(reference, mean, width);
        let max_norm = q.max_norm();
        let mut panels = Vec::new();
        int8::pack(&q, 0, reference.len(), int8::NR, true, &mut panels);
        let mut lanes = int8::Lanes::default();
        q.lanes(0, reference.len(), int8::NR, max_norm, &mut lanes);
        let mut r = QuantizedReference { q, panels, lanes, max_norm, fine: None };
        if fine {
            r.add_fine(reference, mean);
        }
        r
    }

    /// Adds the second level: the same rows quantized to sixteen bits.
    fn add_fine(&mut self, reference: Rows<'_>, mean: &[f64]) {
        let q = int8::Quantized::new(reference, mean, int8::Width::I16);
        self.fine = Some(FineRows { max_norm: q.max_norm(), q });
    }

    /// A new candidate list for row `i` of `rows` (quantized as this reference's bytes) and, with
    /// a second level, `fine` (the same rows in sixteen bits).
    fn candidates(&self, rows: &int8::Quantized, fine: Option<&int8::Quantized>, i: usize, k: usize) -> topk::Candidates {
        match (&self.fine, fine) {
            (Some(f), Some(q)) => topk::Candidates::eager(k, q.slack(i, f.max_norm)),
            _ => topk::Candidates::new(k, rows.slack(i, self.max_norm)),
        }
    }

    /// The threshold the bytes' prefilter compares row `i` of `rows` with, for a list whose
    /// threshold is `t`: `t` itself, or with a second level `t + rho8` rounded up ([`FineRows`]).
    #[inline]
    fn coarse_threshold(&self, rows: &int8::Quantized, i: usize, t: f32) -> f32 {
        if self.fine.is_some() {
            (t + rows.rho[i]).next_up()
        } else {
            t
        }
    }

    /// The dequantized distances of the pairs `hits` (row `i` of `rows`, reference row `j`),
    /// each with the residual bounds to offer it with (the reference row's, the query's), into
    /// `out`: from the byte products `dots` (one per hit) or, with a second level, from
    /// sixteen-bit products of `fine` (the same rows), which replace them in `dots`.
    fn measure(&self, rows: &int8::Quantized, fine: Option<&int8::Quantized>, hits: &[(u32, u32)], dots: &mut Vec<i32>, out: &mut Vec<(f32, f32, f32)>) {
        out.clear();
        let (x, y) = match (&self.fine, fine) {
            (Some(f), Some(q)) => {
                int8::dot16(q, &f.q, hits, dots);
                (q, &f.q)
            }
            _ => (rows, &self.q),
        };
        out.extend(hits.iter().zip(dots.iter()).map(|(&(i, j), &dot)| {
            let (i, j) = (i as usize, j as usize);
            (x.distance(i, y, j, dot), y.rho[j], x.rho[i])
        }));
    }
}

/// The k nearest reference rows of each query, nearest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Neighbours {
    /// Neighbours per query.
    pub k: usize,
    /// `queries x k` reference row indices, row-major.
    pub indices: Vec<u32>,
    /// `queries x k` exact Euclidean distances (float64), row-major, ascending.
    pub distances: Vec<f64>,
}

impl Neighbours {
    /// Number of queries.
    pub fn len(&self) -> usize {
        self.indices.len().checked_div(self.k).unwrap_or(0)
    }

    /// True when there are no queries.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Reference rows of query `i`, nearest first.
    pub fn indices_of(&self, i: usize) -> &[u32] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }

    /// Distances of query `i`, ascending.
    pub fn distances_of(&self, i: usize) -> &[f64] {
        &self.distances[i * self.k..(i + 1) * self.k]
    }
}

/// What a search did, for benchmarks and progress reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KnnStats {
    /// Queries answered.
    pub queries: u64,
    /// Candidates re-ranked in float64 (at least `queries * k` on the GEMM path).
    pub refined: u64,
    /// Whether the k-d tree answered.
    pub kdtree: bool,
    /// Wall seconds.
    pub seconds: f64,
}

impl KnnIndex {
    /// Prepares `reference` for searches.
    ///
    /// # Errors
    /// [`KernelError::NonFinite`] for NaN or infinite values; [`KernelError::Shape`] for more than
    /// `u32::MAX` rows; [`KernelError::Parameter`] when `strategy` asks for a k-d tree in an
    /// unsupported dimension, or for an integer search where it cannot run
    /// ([`int8_search_available`]).
    pub fn new(reference: Rows<'_>, strategy: SearchStrategy) -> Result<Self> {
        let int8 = int8_search_available(reference.dim());
        match strategy {
            SearchStrategy::Int8 | SearchStrategy::Int16 | SearchStrategy::Int8Fine if !int8 => Err(KernelError::Parameter(format!(
                "the {} search needs a CPU with AVX512_VNNI and at most {} dimensions (here: {}, dimension {}); search with gemm",
                match strategy {
                    SearchStrategy::Int8 => "int8",
                    SearchStrategy::Int16 => "int16",
                    _ => "int8-fine",
                },
                int8::MAX_DIM,
                if int8::available() { "AVX512_VNNI" } else { "no AVX512_VNNI" },
                reference.dim()
            ))),
            SearchStrategy::Int8 => Self::build(reference, strategy, Products::Int8),
            SearchStrategy::Int16 => Self::build(reference, strategy, Products::Int16),
            SearchStrategy::Int8Fine => Self::build(reference, strategy, Products::Int8Fine),
            SearchStrategy::Gemm | SearchStrategy::KdTree => Self::build(reference, strategy, Products::float32()),
            SearchStrategy::Auto => Self::build(reference, strategy, if int8 { Products::Int8IfItPays } else { Products::float32() }),
        }
    }

    /// Which search answers, and why: for logs and benchmarks.
    pub fn search_path(&self) -> String {
        let path = match &self.centred {
            _ if self.kdtree.is_some() => "k-d tree",
            Centred::Rows(_) => "float32 products (gemm crate)",
            Centred::Panels { .. } => "float32 products (AVX-512 tile kernel)",
            Centred::Quantized(r) if r.fine.is_some() => "int8 products, int16 for the pairs they pass (AVX512_VNNI)",
            Centred::Quantized(r) if r.q.width == int8::Width::I8 => "int8 products (AVX512_VNNI)",
            Centred::Quantized(_) => "int16 products (AVX512_VNNI)",
        };
        let why = match self.probe {
            Some(extra) => {
                let needs = INT8_ROWS_PER_EXTRA * extra;
                let verdict = match &self.centred {
                    Centred::Quantized(r) if r.fine.is_some() => format!("too few for int8 alone, enough for a second level (from {TWO_LEVEL_MIN_ROWS})"),
                    Centred::Quantized(r) if r.q.width == int8::Width::I8 => "it pays".to_string(),
                    _ => format!("too few for int8 alone or a second level (from {TWO_LEVEL_MIN_ROWS})"),
                };
                format!(
                    ": the int8 probe re-ranked {:.0}% more candidates than k, which int8 alone repays from {needs:.0} reference rows; here {}: {verdict}",
                    100.0 * extra,
                    self.n
                )
            }
            None if self.kdtree.is_none() && !int8::available() => ": no AVX512_VNNI on this CPU for the int8 search".to_string(),
            None if self.kdtree.is_none() && self.dim > int8::MAX_DIM => format!(": dimension {} is above the int8 search's {}", self.dim, int8::MAX_DIM),
            None => String::new(),
        };
        format!("{path}{why}")
    }

    /// [`KnnIndex::new`] with the given [`Products`] (tests compare them on one machine).
    pub(crate) fn build(reference: Rows<'_>, strategy: SearchStrategy, products: Products) -> Result<Self> {
        reference.check_finite()?;
        let (n, dim) = (reference.len(), reference.dim());
        if n > u32::MAX as usize {
            return Err(KernelError::Shape { expected: format!("at most {} reference rows", u32::MAX), got: n.to_string() });
        }
        let data = reference.as_slice().to_vec();
        let mut mean = vec![0.0f64; dim];
        for i in 0..n {
            for (m, v) in mean.iter_mut().zip(reference.row(i)) {
                *m += *v as f64;
            }
        }
        if n > 0 {
            mean.iter_mut().for_each(|m| *m /= n as f64);
        }
        let use_tree = match strategy {
            SearchStrategy::Gemm | SearchStrategy::Int8 | SearchStrategy::Int16 | SearchStrategy::Int8Fine => false,
            SearchStrategy::KdTree => {
                if !kdtree_supports(dim) {
                    return Err(KernelError::Parameter(format!("no k-d tree for dimension {dim} (supported: {KDTREE_DIMS:?})")));
                }
                true
            }
            SearchStrategy::Auto => kdtree_supports(dim) && dim <= KDTREE_AUTO_MAX_DIM && n >= KDTREE_AUTO_MIN_ROWS,
        };
        let kdtree = if use_tree { kdtree::KdIndex::build(&data, dim) } else { None };
        if kdtree.is_none() && matches!(products, Products::Int8 | Products::Int16 | Products::Int8Fine | Products::Int8IfItPays) {
            let (r, probed) = match products {
                Products::Int16 => (QuantizedReference::new(reference, &mean, int8::Width::I16, false), None),
                Products::Int8Fine => (QuantizedReference::new(reference, &mean, int8::Width::I8, true), None),
                _ => {
                    let mut r = QuantizedReference::new(reference, &mean, int8::Width::I8, false);
                    let extra = probe(&r, reference, &mean);
                    if products == Products::Int8IfItPays && (n as f64) < INT8_ROWS_PER_EXTRA * extra {
                        if n >= TWO_LEVEL_MIN_ROWS {
                            r.add_fine(reference, &mean);
                        } else {
                            r = QuantizedReference::new(reference, &mean, int8::Width::I16, false);
                        }
                    }
                    (r, Some(extra))
                }
            };
            // The quantized rows carry their own norms: no float32 centred copy.
            let centred = Centred::Quantized(Box::new(r));
            return Ok(Self { data, n, dim, mean, centred, norms: Vec::new(), max_norm: 0.0, kdtree, probe: probed });
        }
        let centred = centre(reference, &mean);
        let norms: Vec<f32> = centred.par_chunks(dim).map(|r| sq_norm_f64(r) as f32).collect();
        let max_norm = norms.iter().fold(0.0f64, |a, b| a.max(*b as f64)).sqrt();
        let float32 = match products {
            Products::Gemm | Products::Float32Tile => products,
            Products::Int8 | Products::Int16 | Products::Int8Fine | Products::Int8IfItPays => Products::float32(),
        };
        let centred = match float32 {
            _ if kdtree.is_some() => Centred::Rows(centred),
            Products::Float32Tile => {
                let mut packed = Vec::new();
                fused::pack(|i| &centred[i * dim..(i + 1) * dim], 0, n, dim, fused::NR, &mut packed);
                let mut panel_norms = norms.clone();
                panel_norms.resize(n.div_ceil(fused::NR) * fused::NR, f32::NAN);
                Centred::Panels { data: packed, norms: panel_norms }
            }
            _ => Centred::Rows(centred),
        };
        Ok(Self { data, n, dim, mean, centred, norms, max_norm, kdtree, probe: None })
    }

    /// Number of reference rows.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the reference is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The reference rows as given.
    pub fn rows(&self) -> Rows<'_> {
        Rows::try_new(&self.data, self.n, self.dim).expect("shape checked at construction")
    }

    /// Whether searches go through the k-d tree.
    pub fn uses_kdtree(&self) -> bool {
        self.kdtree.is_some()
    }

    /// The `k` nearest reference rows of every query.
    ///
    /// `exclude[i] = Some(r)` removes reference row `r` from query `i`'s candidates: a query that
    /// is itself a reference row does not count itself.
    ///
    /// # Errors
    /// [`KernelError::Shape`] when dimensions differ or `exclude` has the wrong length;
    /// [`KernelError::TooFewPoints`] when the reference cannot supply `k` neighbours;
    /// [`KernelError::NonFinite`] for NaN or infinite query values.
    pub fn knn(&self, queries: Rows<'_>, k: usize, exclude: Option<&[Option<u32>]>) -> Result<(Neighbours, KnnStats)> {
        self.search(queries, k, exclude, false)
    }

    /// Neighbourhoods given by reference row indices (e.g. another tool's search, scikit-dimension's
    /// `precomputed_knn`), `k` per query, row-major, in any order: each gets its exact float64
    /// distances, as [`Self::knn`] computes them, and is sorted nearest first (ties by row), so
    /// that the estimates can be computed from it.
    ///
    /// # Errors
    /// [`KernelError::Shape`] when `indices` is not `queries x k` or names a row beyond the
    /// reference, or the dimensions differ; [`KernelError::NonFinite`] for NaN or infinite queries.
    pub fn neighbours_from_indices(&self, queries: Rows<'_>, indices: &[u32], k: usize) -> Result<Neighbours> {
        if k == 0 || indices.len() != queries.len() * k || queries.dim() != self.dim {
            return Err(KernelError::Shape {
                expected: format!("{} x {k} row indices for queries of dimension {}", queries.len(), self.dim),
                got: format!("{} indices, queries of dimension {}", indices.len(), queries.dim()),
            });
        }
        if let Some(at) = indices.iter().position(|&r| r as usize >= self.n) {
            return Err(KernelError::Shape {
                expected: format!("row indices below {}", self.n),
                got: format!("{} for query {}", indices[at], at / k),
            });
        }
        queries.check_finite()?;
        let mut out = Neighbours { k, indices: indices.to_vec(), distances: vec![0.0; indices.len()] };
        out.indices.par_chunks_mut(k).zip(out.distances.par_chunks_mut(k)).enumerate().for_each(|(i, (idx, dist))| {
            let q = queries.row(i);
            let mut pairs: Vec<(f64, u32)> = idx.iter().map(|&r| (sq_dist_f64(q, self.row(r as usize)), r)).collect();
            take_k_nearest(&mut pairs, k, idx, dist);
        });
        Ok(out)
    }

    /// [`Self::knn`] for the local estimates, which need of each neighbourhood its members and
    /// only three distances: `indices_of(i)` holds query `i`'s `k` nearest rows, the nearest two
    /// first and the k-th last, with their exact distances; the members in between come by row,
    /// with NaN distances. The candidates' bounds settle most members without an exact distance
    /// (`ends` module): at k = 128 about half of the exact distances, and a quarter of the
    /// re-rank's time, are saved. With `k < 3`, or on the k-d tree path, this is [`Self::knn`].
    ///
    /// # Errors
    /// As [`Self::knn`].
    pub fn knn_for_estimates(&self, queries: Rows<'_>, k: usize, exclude: Option<&[Option<u32>]>) -> Result<(Neighbours, KnnStats)> {
        self.search(queries, k, exclude, k >= 3)
    }

    fn search(&self, queries: Rows<'_>, k: usize, exclude: Option<&[Option<u32>]>, ends_only: bool) -> Result<(Neighbours, KnnStats)> {
        let start = Instant::now();
        self.check_queries(queries, k, exclude)?;
        queries.check_finite()?;
        let nq = queries.len();
        let mut out = Neighbours { k, indices: vec![0; nq * k], distances: vec![0.0; nq * k] };
        let skip = |i: usize| exclude.and_then(|e| e[i]);
        let refined: u64 = if let Some(tree) = &self.kdtree {
            out.indices
                .par_chunks_mut(k)
                .zip(out.distances.par_chunks_mut(k))
                .enumerate()
                .map(|(i, (idx, dist))| tree.search(&self.data, self.dim, queries.row(i), k, skip(i), idx, dist))
                .sum()
        } else {
            // The integer searches quantize each block themselves; the float32 paths search centred rows.
            let qc = if matches!(self.centred, Centred::Quantized(_)) { Vec::new() } else { centre(queries, &self.mean) };
            let d = self.dim;
            out.indices
                .par_chunks_mut(QUERY_BLOCK * k)
                .zip(out.distances.par_chunks_mut(QUERY_BLOCK * k))
                .enumerate()
                .map(|(b, (idx, dist))| {
                    let lo = b * QUERY_BLOCK;
                    let hi = (lo + QUERY_BLOCK).min(nq);
                    let skips: Vec<Option<u32>> = (lo..hi).map(skip).collect();
                    let cands = match &self.centred {
                        Centred::Rows(centred) => search_block(self, centred, &qc[lo * d..hi * d], &skips, k),
                        Centred::Panels { data, norms } => search_block_fused(self, data, norms, &qc[lo * d..hi * d], &skips, k),
                        Centred::Quantized(r) => search_block_quantized(r, queries, lo, hi, &self.mean, &skips, k),
                    };
                    if ends_only {
                        let at = |i: usize| i * k..(i + 1) * k;
                        cands.into_iter().enumerate().map(|(i, c)| ends::rerank_ends(self, c, queries.row(lo + i), k, &mut idx[at(i)], &mut dist[at(i)])).sum()
                    } else {
                        rerank(self, cands, queries, lo, k, idx, dist)
                    }
                })
                .sum()
        };
        let stats = KnnStats { queries: nq as u64, refined, kdtree: self.kdtree.is_some(), seconds: start.elapsed().as_secs_f64() };
        Ok((out, stats))
    }

    fn check_queries(&self, queries: Rows<'_>, k: usize, exclude: Option<&[Option<u32>]>) -> Result<()> {
        if queries.dim() != self.dim {
            return Err(KernelError::Shape { expected: format!("queries of dimension {}", self.dim), got: format!("dimension {}", queries.dim()) });
        }
        if let Some(e) = exclude {
            if e.len() != queries.len() {
                return Err(KernelError::Shape { expected: format!("{} exclusions", queries.len()), got: e.len().to_string() });
            }
            if let Some(r) = e.iter().flatten().find(|r| **r as usize >= self.n) {
                return Err(KernelError::Shape { expected: format!("excluded rows below {}", self.n), got: r.to_string() });
            }
        }
        if k == 0 {
            return Err(KernelError::Parameter("k must be at least 1".into()));
        }
        let excludes_any = exclude.is_some_and(|e| e.iter().any(Option::is_some));
        let needed = k + usize::from(excludes_any);
        if self.n < needed {
            return Err(KernelError::TooFewPoints { n: self.n, k, needed });
        }
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Buffers of [`KnnIndex::nearest_two_sq`].
#[derive(Default)]
pub(crate) struct NearestTwo {
    pairs: Vec<(u32, u32)>,
    dots: Vec<i32>,
    bounds: Vec<(f32, f32)>,
}

impl KnnIndex {
    /// The two smallest exact squared distances (float64, as [`sq_dist_f64`] gives them) from
    /// reference row `a` to the reference rows `others` but `others[skip]`.
    ///
    /// With sixteen-bit rows at hand (the two-level or the int16 search), their exact integer
    /// products bound every distance first, and only the rows whose lower bound is within the
    /// second smallest upper bound get an exact distance (at least two rows are that near, so
    /// the nearest two are among them): half the bytes read per row, and a few float64 sums
    /// instead of one per row. Otherwise every distance is exact.
    pub(crate) fn nearest_two_sq(&self, a: u32, others: &[u32], skip: usize, s: &mut NearestTwo) -> (f64, f64) {
        let mut best = (f64::INFINITY, f64::INFINITY);
        let row = self.row(a as usize);
        let Some(q) = self.sixteen_bit_rows().filter(|_| others.len() > 3) else {
            for (j, o) in others.iter().enumerate() {
                if j != skip {
                    push_two(&mut best, sq_dist_f64(row, self.row(*o as usize)));
                }
            }
            return best;
        };
        s.pairs.clear();
        s.pairs.extend(others.iter().enumerate().filter(|(j, _)| *j != skip).map(|(_, o)| (a, *o)));
        int8::dot16(q, q, &s.pairs, &mut s.dots);
        let rho_a = q.rho[a as usize];
        s.bounds.clear();
        s.bounds.extend(s.pairs.iter().zip(&s.dots).map(|(&(_, o), &dot)| {
            let (lower, upper) = int8::bounds(q.distance(a as usize, q, o as usize, dot), q.rho[o as usize]);
            ((lower - rho_a).next_down(), (upper + rho_a).next_up())
        }));
        let mut two = (f32::INFINITY, f32::INFINITY);
        for &(_, upper) in &s.bounds {
            push_two(&mut two, upper);
        }
        for (&(_, o), &(lower, _)) in s.pairs.iter().zip(&s.bounds) {
            if lower <= two.1 {
                push_two(&mut best, sq_dist_f64(row, self.row(o as usize)));
            }
        }
        best
    }

    /// The reference rows quantized to sixteen bits, when the search made them.
    fn sixteen_bit_rows(&self) -> Option<&int8::Quantized> {
        match &self.centred {
            Centred::Quantized(r) => r.fine.as_ref().map(|f| &f.q).or((r.q.width == int8::Width::I16).then_some(&r.q)),
            _ => None,
        }
    }

    /// Whether [`Self::nearest_two_sq`] bounds distances with sixteen-bit products first.
    pub(crate) fn has_sixteen_bit_rows(&self) -> bool {
        self.sixteen_bit_rows().is_some()
    }
}

/// Keeps the two smallest values pushed, smallest first.
#[inline(always)]
pub(crate) fn push_two<T: PartialOrd + Copy>(best: &mut (T, T), v: T) {
    if v < best.0 {
        best.1 = best.0;
        best.0 = v;
    } else if v < best.1 {
        best.1 = v;
    }
}

crate::multiversion! {
    /// One block of queries against all reference tiles through the `gemm` crate.
    fn search_block(index: &KnnIndex, centred: &[f32], qc: &[f32], skips: &[Option<u32>], k: usize) -> Vec<topk::Candidates> => search_block_body
}

/// Each query's candidate window, with its error bound for scores from centred float32 data:
/// the dot product's worst-case accumulation error (d terms, plus the rounding of both centred
/// inputs) and the rounding of the norm and of the final sum; see Higham, Accuracy and
/// Stability, 3.1.
fn candidates(index: &KnnIndex, query_norm: f64, k: usize) -> topk::Candidates {
    let d = index.dim as f64;
    let gamma = (d + 6.0) * U32 / (1.0 - (d + 6.0) * U32);
    let bound = gamma * (2.0 * query_norm * index.max_norm + index.max_norm * index.max_norm);
    topk::Candidates::new(k, (2.0 * bound * 1.0001) as f32)
}

#[inline(always)]
fn search_block_body(index: &KnnIndex, centred: &[f32], qc: &[f32], skips: &[Option<u32>], k: usize) -> Vec<topk::Candidates> {
    let d = index.dim;
    let m = skips.len();
    let mut cands: Vec<topk::Candidates> = (0..m).map(|i| candidates(index, sq_norm_f64(&qc[i * d..(i + 1) * d]).sqrt(), k)).collect();
    let mut tile = vec![0.0f32; m * REF_TILE];
    for rs in (0..index.n).step_by(REF_TILE) {
        let rb = REF_TILE.min(index.n - rs);
        cross_product(&mut tile, qc, m, &centred[rs * d..(rs + rb) * d], rb, d, -2.0);
        for (i, c) in cands.iter_mut().enumerate() {
            c.offer(&tile[i * rb..(i + 1) * rb], &index.norms[rs..rs + rb], rs as u32, skips[i]);
        }
    }
    cands
}

/// One block of queries against the packed reference through the tile kernel: each panel of
/// the reference meets every micro-panel of the block (packed, in L2), one depth slice at a time
/// (the panel's slice stays in L1).
fn search_block_fused(index: &KnnIndex, panels: &[f32], panel_norms: &[f32], qc: &[f32], skips: &[Option<u32>], k: usize) -> Vec<topk::Candidates> {
    use fused::{Epilogue, MR, NR};
    let d = index.dim;
    let m = skips.len();
    let mut cands: Vec<topk::Candidates> = (0..m).map(|i| candidates(index, sq_norm_f64(&qc[i * d..(i + 1) * d]).sqrt(), k)).collect();
    let mut packed = Vec::new();
    fused::pack(|i| &qc[i * d..(i + 1) * d], 0, m, d, MR, &mut packed);
    let micro = m.div_ceil(MR);
    let mut thresholds: Vec<f32> = cands.iter().map(topk::Candidates::threshold).collect();
    thresholds.resize(micro * MR, f32::NAN);
    let mut partial = vec![0.0f32; micro * MR * NR];
    let mut passed = fused::Passed::default();
    for (bp, b) in panels.chunks_exact(d * NR).enumerate() {
        fused::against_panel(&packed, b, d, &mut partial, |ap, slice| {
            slice.finish(Epilogue { col_norms: &panel_norms[bp * NR..], row_thresholds: &thresholds[ap * MR..], out: &mut passed, other: None });
            for (r, &mask) in passed.mask.iter().enumerate() {
                if mask != 0 {
                    let i = ap * MR + r;
                    cands[i].offer_masked(&passed.scores[r * NR..(r + 1) * NR], mask, (bp * NR) as u32, skips[i]);
                    thresholds[i] = cands[i].threshold();
                }
            }
        });
    }
    cands
}

/// How many more candidates than `k` the int8 search re-ranks, as a fraction of `k`: measured by
/// searching for [`PROBE_ROWS`] reference rows spread evenly over it (each excluding itself),
/// with `k` = [`PROBE_K`] (less for a small reference).
fn probe(r: &QuantizedReference, reference: Rows<'_>, mean: &[f64]) -> f64 {
    let n = reference.len();
    let k = PROBE_K.min(n.saturating_sub(1));
    if k == 0 {
        return 0.0;
    }
    let picks: Vec<usize> = (0..PROBE_ROWS.min(n)).map(|i| i * n / PROBE_ROWS.min(n)).collect();
    let rows: Vec<f32> = picks.iter().flat_map(|&i| reference.row(i).iter().copied()).collect();
    let skips: Vec<Option<u32>> = picks.iter().map(|&i| Some(i as u32)).collect();
    let sample = Rows::try_new(&rows, picks.len(), reference.dim()).expect("rows of the reference");
    let found: usize = search_block_quantized(r, sample, 0, picks.len(), mean, &skips, k).into_iter().map(|c| c.finish().len()).sum();
    (found as f64 / (picks.len() * k) as f64 - 1.0).max(0.0)
}

/// One block of queries (rows `lo..hi`) against the quantized reference (quantized the same
/// way): each panel meets every micro-panel of the block, and what passes the epilogue's
/// prefilter is offered with its float64 bounds.
fn search_block_quantized(r: &QuantizedReference, queries: Rows<'_>, lo: usize, hi: usize, mean: &[f64], skips: &[Option<u32>], k: usize) -> Vec<topk::Candidates> {
    use int8::{Epilogue, MR, NR};
    let d = queries.dim();
    let m = hi - lo;
    let block = Rows::try_new(&queries.as_slice()[lo * d..hi * d], m, d).expect("a block of checked rows");
    let q = int8::Quantized::new(block, mean, r.q.width);
    let fine = r.fine.as_ref().map(|_| int8::Quantized::new(block, mean, int8::Width::I16));
    let mut cands: Vec<topk::Candidates> = (0..m).map(|i| r.candidates(&q, fine.as_ref(), i, k)).collect();
    let mut packed = Vec::new();
    int8::pack(&q, 0, m, MR, false, &mut packed);
    let mut rows = int8::Lanes::default();
    q.lanes(0, m, MR, r.max_norm, &mut rows);
    let micro = m.div_ceil(MR);
    let mut thresholds: Vec<f32> = cands.iter().enumerate().map(|(i, c)| r.coarse_threshold(&q, i, c.threshold())).collect();
    thresholds.resize(micro * MR, f32::NAN);
    let mut partial = vec![0i32; micro * MR * NR];
    let mut passed = int8::Passed::default();
    let (mut hits, mut dots, mut measured) = (Vec::new(), Vec::new(), Vec::new());
    let groups = r.q.groups;
    for (bp, b) in r.panels.chunks_exact(groups * NR * 4).enumerate() {
        int8::against_panel(&packed, b, groups, r.q.width, &mut partial, |ap, slice| {
            slice.finish(Epilogue {
                cols: r.lanes.at(bp * NR),
                rows: rows.at(ap * MR),
                row_thresholds: &thresholds[ap * MR..],
                col_thresholds: None,
                out: &mut passed,
            });
            hits.clear();
            dots.clear();
            for (row, &mask) in passed.mask.iter().enumerate() {
                for c in fused::set_bits(mask) {
                    hits.push(((ap * MR + row) as u32, (bp * NR + c) as u32));
                    dots.push(passed.dots[row * NR + c]);
                }
            }
            if hits.is_empty() {
                return;
            }
            r.measure(&q, fine.as_ref(), &hits, &mut dots, &mut measured);
            for (&(i, j), &(dd, rho, _)) in hits.iter().zip(&measured) {
                let (lower, upper) = int8::bounds(dd, rho);
                cands[i as usize].offer_bounds(lower, upper, j, skips[i as usize]);
            }
            for row in 0..MR {
                if passed.mask[row] != 0 {
                    let i = ap * MR + row;
                    thresholds[i] = r.coarse_threshold(&q, i, cands[i].threshold());
                }
            }
        });
    }
    cands
}

/// Re-ranks each query's candidates by exact float64 distance and writes its `k` nearest;
/// returns the number of candidates re-ranked.
fn rerank(index: &KnnIndex, cands: Vec<topk::Candidates>, queries: Rows<'_>, first: usize, k: usize, idx: &mut [u32], dist: &mut [f64]) -> u64 {
    let mut refined = 0u64;
    let mut exact: Vec<(f64, u32)> = Vec::new();
    for (i, c) in cands.into_iter().enumerate() {
        exact_distances(index, queries.row(first + i), &c.finish(), &mut exact);
        refined += exact.len() as u64;
        take_k_nearest(&mut exact, k, &mut idx[i * k..(i + 1) * k], &mut dist[i * k..(i + 1) * k]);
    }
    refined
}

/// Exact squared distances from `q` to the candidates' rows. The rows are scattered over the
/// reference, so each is prefetched two candidates ahead of its sum.
pub(crate) fn exact_distances(index: &KnnIndex, q: &[f32], cands: &[u32], out: &mut Vec<(f64, u32)>) {
    const AHEAD: usize = 2;
    out.clear();
    for &r in cands.iter().take(AHEAD) {
        prefetch(index.row(r as usize));
    }
    for (j, &r) in cands.iter().enumerate() {
        if let Some(&next) = cands.get(j + AHEAD) {
            prefetch(index.row(next as usize));
        }
        out.push((sq_dist_f64(q, index.row(r as usize)), r));
    }
}

/// The order of neighbours: `(squared distance, row)` by distance, ties to the lower row. Every
/// path ranks by it, so every path picks the same neighbours.
pub(crate) fn nearer(a: &(f64, u32), b: &(f64, u32)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// Sorts `(squared distance, row)` pairs by distance, then row, and writes the first `k`.
pub(crate) fn take_k_nearest(pairs: &mut [(f64, u32)], k: usize, idx: &mut [u32], dist: &mut [f64]) {
    debug_assert!(pairs.len() >= k);
    if pairs.len() > k {
        pairs.select_nth_unstable_by(k - 1, nearer);
    }
    let head = &mut pairs[..k];
    head.sort_unstable_by(nearer);
    for (j, (d2, r)) in head.iter().enumerate() {
        idx[j] = *r;
        dist[j] = d2.sqrt();
    }
}

/// `rows - mean`, computed in float64 and stored as float32.
fn centre(rows: Rows<'_>, mean: &[f64]) -> Vec<f32> {
    let d = rows.dim();
    let mut out = vec![0.0f32; rows.len() * d];
    out.par_chunks_mut(d).enumerate().for_each(|(i, o)| {
        for ((o, v), m) in o.iter_mut().zip(rows.row(i)).zip(mean) {
            *o = (*v as f64 - m) as f32;
        }
    });
    out
}

#[cfg(test)]
mod tests;
