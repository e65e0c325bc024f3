//! The paper's reference sample, chosen by token identity.
//!
//! The pool is the `pool` rows with the smallest seeded [`priority`] of their identity key, among
//! the rows that [`SampleConfig::exclude`] does not leave out and the corpus's filter
//! ([`CorpusSpec::filter`], `--where`) keeps; walking
//! it in ascending priority, rows whose vector is bit-identical to an earlier kept one are dropped
//! and the first `size` survivors form the reference. Because the choice depends only on the seed
//! and the identities, every checkpoint of a model is measured against the same tokens.
//!
//! Memory stays at about `pool` keys plus `size` vectors: pass 1 reads only the id columns and keeps
//! a bounded max-heap; pass 2 reads (with a Parquet row selection) the pool rows' embeddings only to
//! hash them; pass 3 reads the vectors to keep; a fourth pass runs only when hashes say a row
//! repeats an earlier vector, to confirm it byte for byte.

use std::collections::{BinaryHeap, HashMap};
use std::hash::Hasher;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::RowSelection;
use serde::{Deserialize, Serialize};

use crate::embedding::decode_embeddings;
use crate::error::{DataError, Result};
use crate::identity::{describe_positional, positional_key, priority, IdentityEncoder};
use crate::reader::{open_parquet, projection, CorpusInfo, CorpusReader, CorpusSlice, CorpusSpec};
use crate::reference::Reference;

/// How to draw the reference sample (paper: pool 150,000, size 60,000).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SampleConfig {
    /// Rows in the seeded random pool.
    pub pool: usize,
    /// Rows to keep after dropping duplicate vectors.
    pub size: usize,
    /// Seed of the identity priority order.
    pub seed: u64,
    /// A boolean column whose `true` rows never enter the pool: the paper's sample leaves out
    /// end-of-sequence and padding tokens, which sit in a few odd places of the space and would
    /// otherwise stand in for ordinary text (`lidscope embed` flags them in `special`).
    /// Excluded rows are still measured; they are only not reference rows.
    #[serde(default)]
    pub exclude: Option<String>,
}

impl SampleConfig {
    /// The paper's sample of `size` rows from a pool of `pool`, nothing excluded.
    pub fn new(pool: usize, size: usize, seed: u64) -> Self {
        SampleConfig { pool, size, seed, exclude: None }
    }
}

/// What sampling produced, for the manifest: fewer rows than asked is not an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleStats {
    /// The pool size asked for.
    pub pool_requested: usize,
    /// Rows actually in the pool (less when the corpus is smaller).
    pub pool_rows: usize,
    /// Pool rows dropped because their vector repeats an earlier kept one.
    pub duplicates_dropped: usize,
    /// The reference size asked for.
    pub requested: usize,
    /// Rows in the reference.
    pub rows: usize,
}

/// A pool candidate: a row and the seeded priority of its identity key. Ordered by (priority,
/// key), which is the pool's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolCandidate {
    /// [`priority`] of the key under the sample's seed.
    pub priority: u64,
    /// The row's identity key.
    pub key: Box<[u8]>,
    /// Index of its file in the corpus.
    pub file: u32,
    /// Its row within that file.
    pub row: u64,
}

impl Ord for PoolCandidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.priority, &self.key).cmp(&(other.priority, &other.key))
    }
}

impl PartialOrd for PoolCandidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Draws the reference sample of a corpus (see the module docs for the exact semantics).
///
/// A repeated identity is an error whenever it reaches the pool (rows outside the pool are not
/// compared, which would take memory proportional to the corpus).
///
/// # Errors
/// [`DataError::InvalidArgument`] when `size == 0` or `pool < size`; [`DataError::DuplicateIdentity`]
/// naming both rows; any read or decode error of the pool rows (null or non-finite embedding,
/// dimension mismatch, unreadable file).
pub fn sample_reference(spec: &CorpusSpec, info: &CorpusInfo, cfg: &SampleConfig) -> Result<Reference> {
    check_config(cfg)?;
    let pool = pool_candidates(spec, info, cfg, None)?;
    let pool = merge_pools(spec, info, vec![pool], cfg)?;
    sample_from_pool(spec, info, cfg, pool)
}

fn check_config(cfg: &SampleConfig) -> Result<()> {
    if cfg.size == 0 {
        return Err(DataError::InvalidArgument("the reference size must be at least 1".into()));
    }
    if cfg.pool < cfg.size {
        return Err(DataError::InvalidArgument(format!(
            "the pool ({}) must be at least the reference size ({})",
            cfg.pool, cfg.size
        )));
    }
    Ok(())
}

fn encoder(spec: &CorpusSpec, info: &CorpusInfo) -> Result<Option<IdentityEncoder>> {
    match spec.id_columns.is_empty() {
        true => Ok(None),
        false => Ok(Some(IdentityEncoder::new(&info.schema, &spec.id_columns, &spec.files[0])?)),
    }
}

/// Passes 2 to 4 of [`sample_reference`] on a pool already drawn ([`merge_pools`]): reads the
/// pool rows' vectors only (a Parquet row selection per file), drops duplicate vectors and keeps
/// the first `cfg.size`. The result is the same whichever way the pool was drawn, so a cluster
/// that computes the pool's candidates shard by shard gets the local sample byte for byte.
///
/// # Errors
/// As [`sample_reference`], for reading the pool rows.
pub fn sample_from_pool(spec: &CorpusSpec, info: &CorpusInfo, cfg: &SampleConfig, pool: Vec<PoolCandidate>) -> Result<Reference> {
    check_config(cfg)?;
    let encoder = encoder(spec, info)?;
    let mut vectors = VectorSource { spec, info, dim: info.dim, dim_file: info.dim.map(|_| 0) };

    // Pass 2: a 128-bit hash of each pool row's vector. The vectors of the first `size + slack`
    // pool rows are kept on the way: unless more than `slack` of them are duplicates, they are all
    // the sample needs and pass 3 reads nothing. Memory stays within (size + slack) vectors.
    let slack = cfg.size / 16 + 64;
    let mut store: HashMap<usize, Vec<f32>> = HashMap::with_capacity((cfg.size + slack).min(pool.len()));
    let mut hashes = vec![0u128; pool.len()];
    let mut buf = Vec::new();
    vectors.read(&pool, (0..pool.len()).collect(), |i, v| {
        hashes[i] = hash_vector(v, &mut buf);
        if i < cfg.size + slack {
            store.insert(i, v.to_vec());
        }
    })?;
    let dim = vectors.dim.unwrap_or(0);

    // Walk the pool: rows with a new hash are kept (they surely differ from all kept rows); rows
    // with a seen hash are suspects, confirmed byte for byte below.
    let mut first_with_hash: HashMap<u128, usize> = HashMap::new();
    let mut prefix = Vec::new();
    let mut kept = 0;
    for (i, h) in hashes.iter().enumerate() {
        if kept == cfg.size {
            break;
        }
        prefix.push(i);
        if let std::collections::hash_map::Entry::Vacant(e) = first_with_hash.entry(*h) {
            e.insert(i);
            kept += 1;
        }
    }
    let (hash_kept, suspects): (Vec<usize>, Vec<usize>) = prefix.iter().partition(|&&i| first_with_hash[&hashes[i]] == i);

    // Pass 3: vectors of the hash-distinct rows not kept in pass 2.
    store.retain(|i, _| prefix.binary_search(i).is_ok());
    let missing: Vec<usize> = hash_kept.iter().copied().filter(|i| !store.contains_key(i)).collect();
    if !missing.is_empty() {
        vectors.read(&pool, missing, |i, v| {
            store.insert(i, v.to_vec());
        })?;
    }
    // Pass 4: suspects equal to the first row of their hash are duplicates; others (a hash
    // collision) keep their own vector for the exact walk below.
    let mut duplicate = vec![false; pool.len()];
    if !suspects.is_empty() {
        let mut collided = HashMap::new();
        vectors.read(&pool, suspects, |i, v| {
            let first = &store[&first_with_hash[&hashes[i]]];
            if same_bits(first, v) {
                duplicate[i] = true;
            } else {
                collided.insert(i, v.to_vec());
            }
        })?;
        store.extend(collided);
    }

    // Exact walk over the prefix.
    let mut chosen: Vec<usize> = Vec::with_capacity(cfg.size);
    let mut chosen_by_hash: HashMap<u128, Vec<usize>> = HashMap::new();
    let mut duplicates_dropped = 0;
    for &i in &prefix {
        if chosen.len() == cfg.size {
            break;
        }
        let same_hash = chosen_by_hash.entry(hashes[i]).or_default();
        if duplicate[i] || same_hash.iter().any(|&j| same_bits(&store[&j], &store[&i])) {
            duplicates_dropped += 1;
            continue;
        }
        same_hash.push(i);
        chosen.push(i);
    }

    let mut embeddings = Vec::with_capacity(chosen.len() * dim);
    for i in &chosen {
        embeddings.extend_from_slice(&store[i]);
    }
    let keys: Vec<Box<[u8]>> = chosen.iter().map(|&i| pool[i].key.clone()).collect();
    let ids = match &encoder {
        Some(enc) => enc.decode(&keys)?,
        None => positional_ids(spec, chosen.iter().map(|&i| &pool[i])),
    };
    let stats = SampleStats {
        pool_requested: cfg.pool,
        pool_rows: pool.len(),
        duplicates_dropped,
        requested: cfg.size,
        rows: chosen.len(),
    };
    tracing::info!(pool = stats.pool_rows, duplicates = duplicates_dropped, rows = stats.rows, "reference sample drawn");
    Ok(Reference { ids, keys, embeddings, dim, stats })
}

/// Pass 1 of [`sample_reference`]: the `cfg.pool` candidates of smallest (priority, key) among
/// the rows of `slices` (the whole corpus when `None`), in ascending order. Reads the id columns
/// only. The pool of a corpus is the [`merge_pools`] of the pools of any slices that cover it.
///
/// # Errors
/// [`DataError::DuplicateIdentity`] naming both rows when two rows with the same identity reach
/// the pool; read and decode errors of the id columns.
pub fn pool_candidates(spec: &CorpusSpec, info: &CorpusInfo, cfg: &SampleConfig, slices: Option<Vec<CorpusSlice>>) -> Result<Vec<PoolCandidate>> {
    let encoder = encoder(spec, info)?;
    let encoder = encoder.as_ref();
    let mut heap: BinaryHeap<PoolCandidate> = BinaryHeap::with_capacity(cfg.pool.min(info.total_rows as usize) + 1);
    let mut columns = spec.id_columns.clone();
    if let Some(c) = &cfg.exclude {
        check_exclude_column(spec, info, c)?;
        if !columns.contains(c) {
            columns.push(c.clone());
        }
    }
    for c in spec.filter.iter().flat_map(|f| f.0.columns()) {
        if !columns.contains(c) {
            columns.push(c.clone());
        }
    }
    let mut reader = CorpusReader::new(spec, info, 64 * 1024, false, Some(columns))?;
    if let Some(slices) = slices {
        reader = reader.with_slices(slices)?;
    }
    for batch in reader {
        let batch = batch?;
        let file = u32::try_from(batch.file_index).map_err(|_| DataError::InvalidArgument("more than 2^32 input files".into()))?;
        let path = &spec.files[batch.file_index];
        let excluded = match &cfg.exclude {
            Some(c) => Some(exclusion_flags(&batch.columns, c, path, batch.first_row)?),
            None => None,
        };
        let kept = match &spec.filter {
            Some(f) => Some(f.0.keep(&batch.columns).map_err(|e| DataError::invalid(path, "--where", Some(batch.first_row), format!("{}: {e}", f.sql())))?),
            None => None,
        };
        let keys = match encoder {
            Some(e) => e.encode(&batch.columns, path, batch.first_row)?,
            None => (0..batch.columns.num_rows() as u64).map(|r| positional_key(file, batch.first_row + r)).collect(),
        };
        for (r, key) in keys.into_iter().enumerate() {
            if excluded.as_ref().is_some_and(|x| x.value(r)) || kept.as_ref().is_some_and(|k| !k.is_valid(r) || !k.value(r)) {
                continue;
            }
            let priority = priority(cfg.seed, &key);
            let cand = PoolCandidate { priority, key, file, row: batch.first_row + r as u64 };
            if heap.len() == cfg.pool {
                let top = heap.peek().expect("pool is not empty");
                match cand.cmp(top) {
                    std::cmp::Ordering::Greater => continue,
                    std::cmp::Ordering::Equal => return Err(duplicate(spec, encoder, top, &cand)),
                    std::cmp::Ordering::Less => {
                        let evicted = heap.pop().expect("pool is not empty");
                        heap.push(cand);
                        // Two equal candidates are adjacent maxima: one leaving exposes the other.
                        if let Some(top) = heap.peek().filter(|t| **t == evicted) {
                            return Err(duplicate(spec, encoder, top, &evicted));
                        }
                    }
                }
            } else {
                heap.push(cand);
            }
        }
    }
    Ok(heap.into_sorted_vec())
}

/// Refuses an exclusion column that the corpus lacks or that is not boolean, before any row is
/// read.
fn check_exclude_column(spec: &CorpusSpec, info: &CorpusInfo, name: &str) -> Result<()> {
    let file = &spec.files[0];
    if name == spec.embedding_column {
        return Err(DataError::invalid(file, name, None, "the embedding column cannot say which rows to exclude from the sample"));
    }
    let Ok(field) = info.schema.field_with_name(name) else {
        return Err(DataError::column_not_found(file, name, &info.schema));
    };
    if field.data_type() != &DataType::Boolean {
        return Err(DataError::invalid(
            file,
            name,
            None,
            format!("rows to exclude from the sample are named by a boolean column; this one is {}", field.data_type()),
        ));
    }
    Ok(())
}

/// The exclusion column of one batch; a null is an error (it says neither yes nor no).
fn exclusion_flags(batch: &RecordBatch, name: &str, path: &std::path::Path, first_row: u64) -> Result<arrow::array::BooleanArray> {
    let col = batch.column_by_name(name).ok_or_else(|| DataError::column_not_found(path, name, &batch.schema()))?;
    let Some(flags) = col.as_any().downcast_ref::<arrow::array::BooleanArray>() else {
        return Err(DataError::invalid(path, name, None, format!("expected a boolean column, found {}", col.data_type())));
    };
    if let Some(i) = arrow::array::Array::nulls(flags).and_then(|n| n.iter().position(|valid| !valid)) {
        return Err(DataError::invalid(path, name, Some(first_row + i as u64), "null where the sample exclusion needs true or false"));
    }
    Ok(flags.clone())
}

/// The pool of the union of disjoint slices, from each slice's [`pool_candidates`]: the first
/// `cfg.pool` in (priority, key) order.
///
/// # Errors
/// [`DataError::DuplicateIdentity`] when two rows with the same identity reach the pool.
pub fn merge_pools(spec: &CorpusSpec, info: &CorpusInfo, pools: Vec<Vec<PoolCandidate>>, cfg: &SampleConfig) -> Result<Vec<PoolCandidate>> {
    let mut all: Vec<PoolCandidate> = pools.into_iter().flatten().collect();
    all.sort();
    // An equal pair straddling the cut is a repeated identity that reached the pool too.
    let end = (cfg.pool + 1).min(all.len());
    if let Some(w) = all[..end].windows(2).find(|w| w[0].cmp(&w[1]).is_eq()) {
        let (a, b) = if (w[0].file, w[0].row) <= (w[1].file, w[1].row) { (&w[0], &w[1]) } else { (&w[1], &w[0]) };
        return Err(duplicate(spec, encoder(spec, info)?.as_ref(), a, b));
    }
    all.truncate(cfg.pool);
    Ok(all)
}

/// Calls `f(key, file, row)` for every corpus row, reading the id columns only.
fn scan_identities(spec: &CorpusSpec, info: &CorpusInfo, encoder: &IdentityEncoder, mut f: impl FnMut(Box<[u8]>, u32, u64) -> Result<()>) -> Result<()> {
    for batch in CorpusReader::new(spec, info, 64 * 1024, false, Some(spec.id_columns.clone()))? {
        let batch = batch?;
        let file = u32::try_from(batch.file_index).map_err(|_| DataError::InvalidArgument("more than 2^32 input files".into()))?;
        let path = &spec.files[batch.file_index];
        for (r, key) in encoder.encode(&batch.columns, path, batch.first_row)?.into_iter().enumerate() {
            f(key, file, batch.first_row + r as u64)?;
        }
    }
    Ok(())
}

/// How many of `keys` (identity keys as the corpus's id columns encode them) name a corpus row.
/// A run uses it to see that a reference file holds rows of the corpus it measures (the same rows
/// given as a file, or a reference an earlier run wrote), which makes the symmetric self-join
/// worth its cost. Reads the id columns only.
///
/// # Errors
/// As reading the corpus's id columns; [`DataError::InvalidArgument`] without id columns.
pub fn count_corpus_identities(spec: &CorpusSpec, info: &CorpusInfo, keys: &[Box<[u8]>]) -> Result<usize> {
    let Some(encoder) = encoder(spec, info)? else {
        return Err(DataError::InvalidArgument("matching identities needs the corpus's id columns".into()));
    };
    let mut wanted: std::collections::HashSet<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let mut n = 0;
    scan_identities(spec, info, &encoder, |key, _, _| {
        n += usize::from(wanted.remove(&key[..]));
        Ok(())
    })?;
    Ok(n)
}

/// The error for two rows with one identity.
fn duplicate(spec: &CorpusSpec, encoder: Option<&IdentityEncoder>, a: &PoolCandidate, b: &PoolCandidate) -> DataError {
    let identity = encoder.map_or_else(|| describe_positional(&a.key), |e| e.describe(&a.key));
    DataError::DuplicateIdentity {
        identity,
        first_path: spec.files[a.file as usize].clone(),
        first_row: a.row,
        second_path: spec.files[b.file as usize].clone(),
        second_row: b.row,
    }
}

/// Identity columns for a corpus without id columns: the file path and the row within it.
fn positional_ids<'a>(spec: &CorpusSpec, cands: impl Iterator<Item = &'a PoolCandidate>) -> RecordBatch {
    let (files, rows): (Vec<String>, Vec<u64>) =
        cands.map(|c| (spec.files[c.file as usize].display().to_string(), c.row)).unzip();
    positional_batch(files, rows)
}

pub(crate) fn positional_batch(files: Vec<String>, rows: Vec<u64>) -> RecordBatch {
    let schema = Schema::new(vec![Field::new("file", DataType::Utf8, false), Field::new("row", DataType::UInt64, false)]);
    RecordBatch::try_new(Arc::new(schema), vec![Arc::new(StringArray::from(files)), Arc::new(UInt64Array::from(rows))])
        .expect("columns match the schema")
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Two SipHash passes (one salted) over the vector's little-endian bytes.
fn hash_vector(v: &[f32], buf: &mut Vec<u8>) -> u128 {
    buf.clear();
    buf.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    let mut a = std::hash::DefaultHasher::new();
    a.write(buf);
    let mut b = std::hash::DefaultHasher::new();
    b.write_u64(0x9e37_79b9_7f4a_7c15);
    b.write(buf);
    ((a.finish() as u128) << 64) | b.finish() as u128
}

/// Reads the embeddings of chosen pool rows with a Parquet row selection, file by file.
struct VectorSource<'a> {
    spec: &'a CorpusSpec,
    info: &'a CorpusInfo,
    dim: Option<usize>,
    dim_file: Option<usize>,
}

impl VectorSource<'_> {
    /// Calls `f(pool index, vector)` for every pool index in `which`, in file order.
    fn read(&mut self, pool: &[PoolCandidate], mut which: Vec<usize>, mut f: impl FnMut(usize, &[f32])) -> Result<()> {
        which.sort_by_key(|&i| (pool[i].file, pool[i].row));
        let column = &self.spec.embedding_column;
        for group in which.chunk_by(|&a, &b| pool[a].file == pool[b].file) {
            let file = pool[group[0]].file as usize;
            let path = &self.spec.files[file];
            let rows: Vec<u64> = group.iter().map(|&i| pool[i].row).collect();
            let builder = open_parquet(path)?;
            let mask = projection(&builder, path, &[column.as_str()])?;
            let selection = RowSelection::from_consecutive_ranges(ranges(&rows).into_iter(), self.info.rows_per_file[file] as usize);
            let reader = builder
                .with_projection(mask)
                .with_row_selection(selection)
                .with_batch_size(8192)
                .build()
                .map_err(|source| DataError::Parquet { path: path.clone(), source })?;
            let mut done = 0;
            // Parquet decodes the next batches on a helper thread while this one checks, hashes
            // and keeps the last (a sample of a whole corpus reads every vector).
            std::thread::scope(|scope| -> Result<()> {
                let (tx, rx) = std::sync::mpsc::sync_channel(2);
                scope.spawn(move || {
                    for batch in reader {
                        if tx.send(batch).is_err() {
                            break;
                        }
                    }
                });
                for batch in rx {
                    let batch = batch.map_err(|e| DataError::arrow(path, e))?;
                    let n = batch.num_rows();
                    let at = |r: u64| rows[done + r as usize];
                    let (values, dim) = decode_embeddings(batch.column(0).as_ref(), path, column, 0, self.dim)
                        .map_err(|e| self.remap(e, file, at))?;
                    if self.dim.is_none() && n > 0 {
                        self.dim = Some(dim);
                        self.dim_file = Some(file);
                    }
                    for r in 0..n {
                        f(group[done + r], &values[r * dim..(r + 1) * dim]);
                    }
                    done += n;
                }
                Ok(())
            })?;
            if done != rows.len() {
                return Err(DataError::invalid(path, column, None, format!("expected {} selected rows, read {done}", rows.len())));
            }
        }
        Ok(())
    }

    /// Turns batch-relative rows of a decode error into rows of the file.
    fn remap(&self, e: DataError, file: usize, at: impl Fn(u64) -> u64) -> DataError {
        match e {
            DataError::InvalidValue { path, column, row, message } => DataError::InvalidValue { path, column, row: row.map(at), message },
            DataError::NonFinite { path, column, row, element, value } => DataError::NonFinite { path, column, row: at(row), element, value },
            DataError::DimensionMismatch { path, column, row, found, expected, .. } => {
                let origin = match self.dim_file {
                    Some(f) if f != file => format!(" in {}", self.spec.files[f].display()),
                    _ => " (other rows of this file)".to_string(),
                };
                DataError::DimensionMismatch { path, column, row: at(row), found, expected, origin }
            }
            other => other,
        }
    }
}

/// Sorted rows as maximal runs of consecutive rows.
fn ranges(rows: &[u64]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for &r in rows {
        let r = r as usize;
        match out.last_mut() {
            Some(last) if last.end == r => last.end = r + 1,
            _ => out.push(r..r + 1),
        }
    }
    out
}

#[cfg(test)]
#[path = "sample_tests.rs"]
mod tests;

/// The rows of a corpus whose identities are `keys` (as [`crate::read_reference`] gives them for
/// a reference file with the same id columns), in the order of `keys`, exact duplicate vectors
/// dropped as in the sample: the reference that measures another checkpoint of the same tokens
/// on the same token identities as the sample `keys` came from. `source` names the file the keys
/// came from in errors.
///
/// # Errors
/// [`DataError::InvalidArgument`] when the corpus has no id columns, or when some of `keys` are
/// not in the corpus (the count and the first missing identity are named);
/// [`DataError::DuplicateIdentity`] when two corpus rows hold one of `keys`; read and decode
/// errors of those rows.
pub fn sample_identities(spec: &CorpusSpec, info: &CorpusInfo, keys: &[Box<[u8]>], source: &std::path::Path) -> Result<Reference> {
    let Some(encoder) = encoder(spec, info)? else {
        return Err(DataError::InvalidArgument(format!(
            "{}: a reference by identities needs the corpus's id columns (--id-columns)",
            source.display()
        )));
    };
    if keys.is_empty() {
        return Err(DataError::InvalidArgument(format!("{}: no identities", source.display())));
    }
    let wanted: HashMap<&[u8], usize> = keys.iter().enumerate().map(|(i, k)| (&k[..], i)).collect();
    let mut found: Vec<Option<PoolCandidate>> = vec![None; keys.len()];
    scan_identities(spec, info, &encoder, |key, file, row| {
        let Some(&i) = wanted.get(&key[..]) else { return Ok(()) };
        let cand = PoolCandidate { priority: i as u64, key, file, row };
        if let Some(first) = &found[i] {
            return Err(duplicate(spec, Some(&encoder), first, &cand));
        }
        found[i] = Some(cand);
        Ok(())
    })?;
    let missing: Vec<usize> = (0..keys.len()).filter(|i| found[*i].is_none()).collect();
    if let Some(&first) = missing.first() {
        return Err(DataError::InvalidArgument(format!(
            "{} of the {} identities in {} are not in the corpus (the first: {}); a reference by identities \
             needs every one of them",
            missing.len(),
            keys.len(),
            source.display(),
            encoder.describe(&keys[first])
        )));
    }
    let pool: Vec<PoolCandidate> = found.into_iter().flatten().collect();
    let n = pool.len();
    sample_from_pool(spec, info, &SampleConfig::new(n, n, 0), pool)
}
