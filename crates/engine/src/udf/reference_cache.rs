//! Reference files loaded once per process, keyed by the SHA-256 of their bytes.
//!
//! A query calls `lid()` once per batch; the reference behind it (often 60,000 x 768 floats)
//! must be read and indexed once, not once per batch, and two paths holding the same bytes share
//! one index. A file's hash is remembered by (path, size, modification time), so an unchanged
//! file is not hashed again, and a rewritten one is.
//!
//! A long-lived process (a cluster worker serving run after run) keeps only the
//! [`KEEP`] references used last: the one of a finished run is dropped once newer runs need room.
//! References a local run adopted stay until the run drops its guard.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use lidscope_data::{embedding_field_dim, read_reference, DataError};
use lidscope_kernel::SearchStrategy;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

use super::reference::LoadedReference;
use crate::error::{EngineError, Result};

type FileStamp = (PathBuf, u64, Option<SystemTime>);

/// References loaded from files that stay in memory at most (the newest by use).
pub(crate) const KEEP: usize = 2;

#[derive(Default)]
struct Cache {
    hashes: HashMap<FileStamp, String>,
    loaded: HashMap<String, Arc<LoadedReference>>,
    /// When each loaded reference was last used (a counter), for eviction.
    used: HashMap<String, u64>,
    clock: u64,
    /// Adopted by a run in this process: never evicted.
    adopted: std::collections::HashSet<String>,
}

impl Cache {
    fn touch(&mut self, hash: &str) {
        self.clock += 1;
        self.used.insert(hash.to_string(), self.clock);
    }

    /// Makes room for one more reference.
    fn evict(&mut self) {
        while self.loaded.len() >= KEEP {
            let oldest = self.loaded.keys().filter(|h| !self.adopted.contains(*h)).min_by_key(|h| self.used.get(*h).copied().unwrap_or(0)).cloned();
            let Some(h) = oldest else { return };
            tracing::debug!("dropping reference {h} from the cache");
            self.loaded.remove(&h);
            self.used.remove(&h);
            self.hashes.retain(|_, v| *v != h);
        }
    }
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Cache::default()))
}

/// The reference in `path`, loading and indexing it on first use.
pub(crate) fn load(path: &Path) -> Result<Arc<LoadedReference>> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
    let stamp: FileStamp = (path.to_path_buf(), meta.len(), meta.modified().ok());
    // The lock is held while loading: concurrent partitions wait for one load instead of doing
    // it twice.
    let mut c = cache().lock().expect("reference cache poisoned");
    let hash = match c.hashes.get(&stamp) {
        Some(h) => h.clone(),
        None => {
            let h = file_sha256(path)?;
            c.hashes.insert(stamp, h.clone());
            h
        }
    };
    if let Some(r) = c.loaded.get(&hash).cloned() {
        c.touch(&hash);
        return Ok(r);
    }
    let r = Arc::new(read(path)?);
    c.evict();
    c.touch(&hash);
    c.loaded.insert(hash, r.clone());
    Ok(r)
}

/// Makes `reference`, already built in memory, what [`load`] returns for the file at `path`
/// (which must hold it, and whose [`file_sha256`] is `hash`), until the returned guard is dropped.
/// `lidscope run` writes its reference file and hands the index it built to its own query this way
/// instead of reading it back.
pub(crate) fn adopt(path: &Path, hash: String, reference: Arc<LoadedReference>) -> Result<Adopted> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
    let stamp: FileStamp = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let mut c = cache().lock().expect("reference cache poisoned");
    c.hashes.insert(stamp.clone(), hash.clone());
    c.adopted.insert(hash.clone());
    c.touch(&hash);
    c.loaded.insert(hash.clone(), reference);
    Ok(Adopted { stamp, hash })
}

/// Keeps an adopted reference in the cache; dropping it releases the memory.
pub(crate) struct Adopted {
    stamp: FileStamp,
    hash: String,
}

impl Drop for Adopted {
    fn drop(&mut self) {
        if let Ok(mut c) = cache().lock() {
            c.hashes.remove(&self.stamp);
            c.loaded.remove(&self.hash);
            c.used.remove(&self.hash);
            c.adopted.remove(&self.hash);
        }
    }
}

/// The SHA-256 of a file's bytes, in hex: the cache's key.
pub(crate) fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| EngineError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads a reference file: its one list-of-floats column is the embedding, the others identify.
fn read(path: &Path) -> Result<LoadedReference> {
    let file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|source| DataError::NotParquet { path: path.to_path_buf(), source })?;
    let schema = builder.schema();
    let embedding: Vec<&str> =
        schema.fields().iter().filter(|f| embedding_field_dim(f.data_type()).is_ok()).map(|f| f.name().as_str()).collect();
    let [embedding] = embedding.as_slice() else {
        return Err(EngineError::Invalid(format!(
            "{}: a reference file needs exactly one embedding column (a list of floats); found {}",
            path.display(),
            if embedding.is_empty() { "none".to_string() } else { embedding.join(", ") }
        )));
    };
    let id_columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).filter(|n| n != embedding).collect();
    let r = read_reference(path, embedding, &id_columns)?;
    LoadedReference::new(&r, &path.display().to_string(), &id_columns, SearchStrategy::Auto)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use lidscope_data::{write_reference, Reference, SampleStats};

    use super::*;

    fn reference_file(dir: &Path, name: &str, shift: f32) -> PathBuf {
        let n = 8;
        let ids = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from_iter_values(0..n as i64)) as _)]).unwrap();
        let embeddings: Vec<f32> = (0..n * 3).map(|i| i as f32 * 0.37 + shift).collect();
        let r = Reference { ids, keys: Vec::new(), embeddings, dim: 3, stats: SampleStats::default() };
        let path = dir.join(name);
        write_reference(&path, &r, "emb").unwrap();
        path
    }

    #[test]
    fn only_the_references_used_last_stay_loaded() {
        let d = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..KEEP + 1).map(|i| reference_file(d.path(), &format!("r{i}.parquet"), i as f32)).collect();
        let first = load(&files[0]).unwrap();
        for f in &files[1..] {
            load(f).unwrap();
        }
        let hash = |p: &Path| file_sha256(p).unwrap();
        {
            let c = cache().lock().unwrap();
            assert!(!c.loaded.contains_key(&hash(&files[0])), "the least recently used reference is dropped");
            assert!(files[1..].iter().all(|f| c.loaded.contains_key(&hash(f))));
        }
        // Whoever still holds it keeps a working index; loading it again reads it again.
        assert_eq!(first.index.dim(), 3);
        assert!(!Arc::ptr_eq(&first, &load(&files[0]).unwrap()));
    }
}
