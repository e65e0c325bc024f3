//! Reference files loaded once per process, keyed by the SHA-256 of their bytes.
//!
//! A query calls `lid()` once per batch; the reference behind it (often 60,000 x 768 floats)
//! must be read and indexed once, not once per batch, and two paths holding the same bytes share
//! one index. A file's hash is remembered by (path, size, modification time), so an unchanged
//! file is not hashed again, and a rewritten one is.

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

struct Cache {
    hashes: HashMap<FileStamp, String>,
    loaded: HashMap<String, Arc<LoadedReference>>,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Cache { hashes: HashMap::new(), loaded: HashMap::new() }))
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
    if let Some(r) = c.loaded.get(&hash) {
        return Ok(r.clone());
    }
    let r = Arc::new(read(path)?);
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
