//! A reference set ready for `lid()`: the index, identity lookup, and (for a reference drawn from
//! the corpus being measured) its precomputed self-join.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use lidscope_data::{IdentityEncoder, Reference};
use lidscope_kernel::{
    check_estimates, estimates_from_neighbours, lid_from_neighbours, KernelError, KnnIndex, LidConfig, LocalEstimator, Neighbours, PointEstimates, PointLid, Rows,
    SearchStrategy,
};

use crate::error::{EngineError, Result};

/// Length of the reference rows' own neighbour lists when they serve the estimates only: with 64,
/// fewer than 0.2% of neighbourhood members lacked two fellow members in their list on MiniLM
/// and synthetic data (PERF_NOTES), and such a member is computed directly.
const MEMBER_LIST_LEN: usize = 64;

/// The length of the lists built for the estimates only, for neighbourhoods of `k` among `n`
/// reference rows.
pub(crate) fn member_list_len(k: usize, n: usize) -> usize {
    k.min(MEMBER_LIST_LEN).min(n.saturating_sub(1))
}

/// Whether the reference rows' neighbour lists pay for themselves over `queries` queries: they
/// cost about `n^2 d` once and save most of the `k^2 d` of every query's estimate.
pub(crate) fn lists_pay(queries: u64, k: usize, n: usize) -> bool {
    n > 2 && queries as f64 * (k * k) as f64 >= (n as f64) * (n as f64)
}

/// A reference ready for searches.
pub(crate) struct LoadedReference {
    /// The indexed vectors.
    pub index: KnnIndex,
    /// Identity key -> reference row (keys as [`IdentityEncoder`] encodes the identity columns).
    pub rows: HashMap<Box<[u8]>, u32>,
    /// The reference's identity columns.
    pub id_columns: Vec<String>,
    /// Every reference row's nearest other rows. When the reference was drawn from the corpus
    /// being measured (length `k`), those rows come back as queries and one symmetric self-join
    /// serves them all at half the cost of searching them one by one; of any length, the lists
    /// turn most of every query's estimate into look-ups.
    self_knn: Option<Neighbours>,
    /// Lists of [`MEMBER_LIST_LEN`] built once this reference has served enough queries to pay
    /// for them (`lid()` in SQL, a cluster worker's shards), when there is no `self_knn`.
    lazy_lists: OnceLock<Neighbours>,
    /// Queries served so far, and whether the lazy lists are being built.
    served: AtomicU64,
    building: AtomicBool,
    /// The self-join built once this reference has served half its own rows as queries (by
    /// identity: `lid()` in SQL over the table the reference was drawn from, a cluster worker's
    /// shards of that corpus), when there is no `self_knn`: the rest of its rows then cost a
    /// look-up, and the first half's search plus the join cost no more than searching them all.
    lazy_self_knn: OnceLock<Neighbours>,
    /// Reference rows served as queries so far, and whether the lazy self-join is being built.
    served_members: AtomicU64,
    joining: AtomicBool,
    /// Kernel seconds spent on this reference so far (neighbour search, local estimates).
    times: Mutex<KernelTimes>,
}

/// Where the kernel's time went, summed over every `lid()` call on one reference.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KernelTimes {
    /// Neighbour search (including a self-join), wall seconds.
    pub knn: f64,
    /// Local estimates, wall seconds.
    pub estimate: f64,
}

impl LoadedReference {
    /// Indexes `r`, keying its rows by `id_columns` of `r.ids` (none: no query is ever one of
    /// its rows), encoded as `lid()` encodes a query's identity struct.
    pub fn new(r: &Reference, source: &str, id_columns: &[String], strategy: SearchStrategy) -> Result<Self> {
        let rows_view = Rows::try_new(&r.embeddings, r.len(), r.dim).map_err(|e| EngineError::kernel(source, e))?;
        let index = KnnIndex::new(rows_view, strategy).map_err(|e| EngineError::kernel(source, e))?;
        tracing::debug!(rows = r.len(), dim = r.dim, "neighbour search of {source}: {}", index.search_path());
        let rows = match id_columns.is_empty() {
            true => HashMap::new(),
            false => {
                let path = std::path::Path::new(source);
                let keys = IdentityEncoder::new(&r.ids.schema(), id_columns, path)?.encode(&r.ids, path, 0)?;
                keys.into_iter().enumerate().map(|(i, k)| (k, i as u32)).collect()
            }
        };
        Ok(Self {
            index,
            rows,
            id_columns: id_columns.to_vec(),
            self_knn: None,
            lazy_lists: OnceLock::new(),
            served: AtomicU64::new(0),
            building: AtomicBool::new(false),
            lazy_self_knn: OnceLock::new(),
            served_members: AtomicU64::new(0),
            joining: AtomicBool::new(false),
            times: Mutex::new(KernelTimes::default()),
        })
    }

    /// Precomputes every reference row's `k` nearest other rows: [`Self::lid`] then takes a
    /// query's neighbourhood from here when it is a reference row with the same vector (and `k`
    /// is the query's), and looks up its estimate's distances here.
    pub fn with_self_knn(mut self, k: usize) -> std::result::Result<Self, KernelError> {
        let (nb, stats) = self.index.self_knn(k)?;
        tracing::debug!(rows = stats.queries, k, seconds = stats.seconds, "self-join: {:.1} candidates re-ranked per row", stats.refined as f64 / stats.queries.max(1) as f64);
        self.times.get_mut().expect("times poisoned").knn += stats.seconds;
        self.self_knn = Some(nb);
        Ok(self)
    }

    /// Every reference row's nearest other rows, when some were built (the self-join's, or
    /// the lists built for the estimates): exact, and ordered as a search orders them.
    pub fn lists(&self) -> Option<&Neighbours> {
        self.self_knn.as_ref().or_else(|| self.lazy_self_knn.get()).or_else(|| self.lazy_lists.get())
    }

    /// Kernel time spent so far.
    pub fn times(&self) -> KernelTimes {
        *self.times.lock().expect("times poisoned")
    }

    /// Pointwise LID of `queries`; `exclude[i]` is the reference row query `i` is (by identity),
    /// left out of its own neighbourhood.
    pub fn lid(&self, queries: Rows<'_>, exclude: Option<&[Option<u32>]>, cfg: &LidConfig) -> std::result::Result<Vec<PointLid>, KernelError> {
        cfg.validate()?;
        let (nb, knn_seconds) = self.neighbours(queries, exclude, cfg.k)?;
        let (lids, stats) = lid_from_neighbours(&self.index, queries, &nb, cfg, self.lists())?;
        self.served(queries.len(), exclude, cfg.k, knn_seconds, stats.estimate_seconds);
        Ok(lids)
    }

    /// Every estimator of `estimators` for `queries`, from one search (as [`Self::lid`]): the
    /// estimators that need all `k` distances (MLE, MOM, TLE) get them computed exactly for the
    /// members the search found.
    pub fn estimates(
        &self,
        queries: Rows<'_>,
        exclude: Option<&[Option<u32>]>,
        k: usize,
        discard_fraction: f64,
        estimators: &[LocalEstimator],
    ) -> std::result::Result<PointEstimates, KernelError> {
        check_estimates(k, discard_fraction, estimators)?;
        let (nb, knn_seconds) = self.neighbours(queries, exclude, k)?;
        let (out, stats) = estimates_from_neighbours(&self.index, queries, &nb, discard_fraction, estimators, self.lists())?;
        self.served(queries.len(), exclude, k, knn_seconds, stats.estimate_seconds);
        Ok(out)
    }

    /// Counts `queries` queries (of which those with an `exclude` entry are reference rows) as
    /// served, builds the lazy self-join or lists once they pay, and adds the kernel's seconds.
    fn served(&self, queries: usize, exclude: Option<&[Option<u32>]>, k: usize, knn_seconds: f64, estimate_seconds: f64) {
        let mut built_seconds = 0.0;
        let n = self.index.len();
        let lists = self.lists().is_some();
        let members = exclude.map_or(0, |e| e.iter().filter(|r| r.is_some()).count() as u64);
        let served_members = self.served_members.fetch_add(members, Ordering::Relaxed) + members;
        let served = self.served.fetch_add(queries as u64, Ordering::Relaxed) + queries as u64;
        // Optimisations only: if one fails, the search and the estimates keep their direct paths.
        if self.self_knn.is_none() && n > k && 2 * served_members >= n as u64 && !self.joining.swap(true, Ordering::AcqRel) {
            if let Ok((built, stats)) = self.index.self_knn(k) {
                tracing::debug!(rows = n, k, seconds = stats.seconds, "self-join of the reference, after {served_members} of its rows came as queries");
                built_seconds += stats.seconds;
                let _ = self.lazy_self_knn.set(built);
            }
        }
        if !lists && self.lazy_self_knn.get().is_none() && lists_pay(served, k, n) && !self.building.swap(true, Ordering::AcqRel) {
            if let Ok((built, stats)) = self.index.self_knn(member_list_len(k, n)) {
                tracing::debug!(rows = n, seconds = stats.seconds, "neighbour lists of the reference rows, after {served} queries");
                built_seconds += stats.seconds;
                let _ = self.lazy_lists.set(built);
            }
        }
        let mut t = self.times.lock().expect("times poisoned");
        t.knn += knn_seconds + built_seconds;
        t.estimate += estimate_seconds;
    }

    /// Neighbourhoods of `queries`: rows that are reference rows (same identity, same vector)
    /// take theirs from the self-join, the others are searched. Returns them with the search's
    /// wall seconds. A searched neighbourhood carries only the distances the estimates read
    /// (the nearest two and the k-th: [`KnnIndex::knn_for_estimates`]).
    fn neighbours(&self, queries: Rows<'_>, exclude: Option<&[Option<u32>]>, k: usize) -> std::result::Result<(Neighbours, f64), KernelError> {
        let known = self.self_knn.as_ref().or_else(|| self.lazy_self_knn.get()).filter(|nb| nb.k == k);
        let (Some(known), Some(exclude)) = (known, exclude) else {
            let (nb, stats) = self.index.knn_for_estimates(queries, k, exclude)?;
            tracing::trace!(queries = stats.queries, "search: {:.1} candidates re-ranked per query", stats.refined as f64 / stats.queries.max(1) as f64);
            return Ok((nb, stats.seconds));
        };
        let all = self.index.rows();
        let from_join = |i: usize| exclude[i].filter(|r| all.row(*r as usize) == queries.row(i));
        let mut nb = Neighbours { k, indices: vec![0; queries.len() * k], distances: vec![0.0; queries.len() * k] };
        let mut search = Vec::new();
        for i in 0..queries.len() {
            match from_join(i) {
                Some(r) => {
                    nb.indices[i * k..(i + 1) * k].copy_from_slice(known.indices_of(r as usize));
                    nb.distances[i * k..(i + 1) * k].copy_from_slice(known.distances_of(r as usize));
                }
                None => search.push(i),
            }
        }
        if search.is_empty() {
            return Ok((nb, 0.0));
        }
        let data: Vec<f32> = search.iter().flat_map(|i| queries.row(*i).iter().copied()).collect();
        let ex: Vec<Option<u32>> = search.iter().map(|i| exclude[*i]).collect();
        let (found, stats) = self.index.knn_for_estimates(Rows::try_new(&data, search.len(), queries.dim())?, k, Some(&ex))?;
        for (j, i) in search.iter().enumerate() {
            nb.indices[i * k..(i + 1) * k].copy_from_slice(found.indices_of(j));
            nb.distances[i * k..(i + 1) * k].copy_from_slice(found.distances_of(j));
        }
        Ok((nb, stats.seconds))
    }
}
