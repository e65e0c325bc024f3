//! Objects in S3-compatible stores (`s3://bucket/key`), read where lidscope reads local files.
//!
//! An input is named by one string everywhere: in error messages, in manifests and in the
//! positional identity of its rows. So an object travels as a path whose text is its URL
//! (`Path::new("s3://bucket/corpus/part-0.parquet")`), and the few places that touch storage ask
//! [`ObjectUrl::of`] which kind they hold. Paths of the local file system never start with
//! `s3:/`, so the two cannot be confused.
//!
//! Credentials and the endpoint come from this host's environment only (the `AWS_*` variables
//! `object_store`'s `AmazonS3Builder::from_env` reads: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...), never from a
//! command line or another node. The store's client is async; this crate is not, so every call
//! runs on a small runtime of its own and the calling thread waits, which works from plain
//! threads and from inside another tokio runtime alike.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{GetOptions, ObjectMeta, ObjectStore, PutOptions, PutPayload};
/// How [`put`] treats an object already at the URL (create only, overwrite, or replace only the
/// version read before).
pub use object_store::PutMode;

mod committed;
pub use committed::CommittedView;

use crate::error::{DataError, Result};

/// The scheme of S3 URLs.
pub const S3_SCHEME: &str = "s3://";

/// An object (or a prefix of objects) in a bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectUrl {
    /// The bucket.
    pub bucket: String,
    /// The key (or prefix) inside it, without a leading `/`.
    pub key: String,
}

impl ObjectUrl {
    /// The object `path` names, if it is an `s3://` URL.
    ///
    /// # Errors
    /// An `s3://` URL without a bucket.
    pub fn of(path: &Path) -> Result<Option<Self>> {
        path.to_str().map_or(Ok(None), Self::parse)
    }

    /// As [`Self::of`], for a string.
    ///
    /// # Errors
    /// An `s3://` URL without a bucket.
    pub fn parse(text: &str) -> Result<Option<Self>> {
        let Some(rest) = text.strip_prefix(S3_SCHEME) else { return Ok(None) };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(DataError::Store { url: text.to_string(), message: "no bucket in the URL (s3://BUCKET/KEY)".into() });
        }
        Ok(Some(ObjectUrl { bucket: bucket.to_string(), key: key.trim_start_matches('/').to_string() }))
    }

    /// The URL, `s3://bucket/key`.
    pub fn url(&self) -> String {
        format!("{S3_SCHEME}{}/{}", self.bucket, self.key)
    }

    /// The object `name` under this prefix.
    pub fn join(&self, name: &str) -> ObjectUrl {
        let key = if self.key.is_empty() || self.key.ends_with('/') { format!("{}{name}", self.key) } else { format!("{}/{name}", self.key) };
        ObjectUrl { bucket: self.bucket.clone(), key }
    }

    fn location(&self) -> Key {
        Key::from(self.key.as_str())
    }
}

/// Whether `path` is an object URL rather than a local path.
pub fn is_object(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with(S3_SCHEME))
}

/// The store of `bucket`, built from this host's environment once per bucket (and shared with
/// the query engine, which reads result tables through [`CommittedView`]).
///
/// # Errors
/// [`DataError::Store`] when the environment does not configure a store.
pub fn bucket_store(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    store(bucket)
}

/// The store of `bucket`, built from this host's environment once per bucket.
fn store(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut stores = STORES.get_or_init(Default::default).lock().expect("store registry poisoned");
    if let Some(s) = stores.get(bucket) {
        return Ok(s.clone());
    }
    let s3 = AmazonS3Builder::from_env().with_bucket_name(bucket).build().map_err(|e| DataError::Store {
        url: format!("{S3_SCHEME}{bucket}"),
        message: format!("{e} (the store is configured by AWS_* environment variables)"),
    })?;
    let s: Arc<dyn ObjectStore> = Arc::new(s3);
    stores.insert(bucket.to_string(), s.clone());
    Ok(s)
}

/// Runs `f` on the stores' runtime and waits for it on this thread.
fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("lidscope-store").enable_all().build().expect("the object store runtime")
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("the object store runtime stopped")
}

/// A store error as one that names the URL and, where it helps, what to check.
fn store_error(url: &ObjectUrl, e: object_store::Error) -> DataError {
    use object_store::Error as E;
    let url_text = url.url();
    match e {
        E::NotFound { .. } => DataError::NotFound { path: url_text.into() },
        E::Unauthenticated { .. } | E::PermissionDenied { .. } => DataError::Store {
            url: url_text,
            message: format!("access refused ({}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", causes(&e)),
        },
        other => {
            let message = causes(&other);
            let hint = if message.contains("NoSuchBucket") {
                format!("no bucket \"{}\" at this endpoint ({message})", url.bucket)
            } else if message.contains("InvalidAccessKeyId") || message.contains("SignatureDoesNotMatch") || message.contains("AccessDenied") {
                format!("access refused ({message}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            } else {
                message
            };
            DataError::Store { url: url_text, message: hint }
        }
    }
}

/// An error and its causes, outermost first, as one line (the reason of a refused request, or
/// of a refused certificate, is often in a cause only).
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// Every object whose key starts with `prefix.key` (at any depth), sorted by key.
///
/// # Errors
/// [`DataError::Store`] naming the URL (credentials, a missing bucket, the network).
pub fn list(prefix: &ObjectUrl) -> Result<Vec<ObjectMeta>> {
    let s = store(&prefix.bucket)?;
    let p = prefix.clone();
    let listed = block_on(async move {
        // `list` takes whole path segments; the prefix's last segment may be partial (a glob's
        // literal start), so list its parent and keep the keys that start with it.
        let parent = match p.key.rfind('/') {
            Some(i) => Key::from(&p.key[..i]),
            None => Key::default(),
        };
        let all: Vec<ObjectMeta> = s.list(Some(&parent)).try_collect().await?;
        Ok::<_, object_store::Error>(all.into_iter().filter(|m| m.location.as_ref().starts_with(p.key.as_str())).collect::<Vec<_>>())
    });
    let mut objects = listed.map_err(|e| store_error(prefix, e))?;
    objects.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
    Ok(objects)
}

/// The object at `url`: its size and modification time.
///
/// # Errors
/// [`DataError::NotFound`] when there is none, [`DataError::Store`] otherwise.
pub fn head(url: &ObjectUrl) -> Result<ObjectMeta> {
    let s = store(&url.bucket)?;
    let key = url.location();
    // `ObjectStore`'s own methods: their futures are `Send` (the extension trait's are not).
    block_on(async move { s.get_opts(&key, GetOptions { head: true, ..Default::default() }).await.map(|r| r.meta) }).map_err(|e| store_error(url, e))
}

/// The objects directly under `dir` (not in deeper "directories"), with the names of those
/// "directories", both sorted.
///
/// # Errors
/// [`DataError::Store`] naming the URL (credentials, a missing bucket, the network).
pub fn list_dir(dir: &ObjectUrl) -> Result<(Vec<ObjectMeta>, Vec<String>)> {
    let s = store(&dir.bucket)?;
    let key = dir.location();
    let listed = block_on(async move { s.list_with_delimiter(Some(&key)).await }).map_err(|e| store_error(dir, e))?;
    let mut objects = listed.objects;
    objects.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
    let mut dirs: Vec<String> = listed.common_prefixes.iter().map(|p| p.as_ref().to_string()).collect();
    dirs.sort();
    Ok((objects, dirs))
}

/// The whole object at `url`.
///
/// # Errors
/// [`DataError::NotFound`] when there is none, [`DataError::Store`] otherwise.
pub fn get(url: &ObjectUrl) -> Result<Bytes> {
    let s = store(&url.bucket)?;
    let key = url.location();
    block_on(async move { s.get_opts(&key, GetOptions::default()).await?.bytes().await }).map_err(|e| store_error(url, e))
}

/// Writes `bytes` as the object at `url`, all or nothing (one PUT). `mode` makes it conditional:
/// [`PutMode::Create`] is refused when the object exists, [`PutMode::Update`] when it changed
/// since the version given; the inner result says so.
///
/// # Errors
/// The store's errors naming the URL.
pub fn put(url: &ObjectUrl, bytes: Bytes, mode: PutMode) -> Result<std::result::Result<(), PutRefused>> {
    let s = store(&url.bucket)?;
    let key = url.location();
    let options = PutOptions { mode, ..Default::default() };
    match block_on(async move { s.put_opts(&key, PutPayload::from_bytes(bytes), options).await }) {
        Ok(_) => Ok(Ok(())),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(Err(PutRefused::Exists)),
        Err(object_store::Error::Precondition { .. }) => Ok(Err(PutRefused::Changed)),
        Err(e) => Err(store_error(url, e)),
    }
}

/// Why a conditional [`put`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutRefused {
    /// The object exists (another writer created it first).
    Exists,
    /// The object changed since it was read (another writer replaced it).
    Changed,
}

impl std::fmt::Display for PutRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PutRefused::Exists => "written by another writer first (conditional create refused)",
            PutRefused::Changed => "replaced by another writer meanwhile (conditional update refused)",
        })
    }
}

/// Uploads local file `path` as the object at `url` (one PUT: result parts and references are
/// small beside the corpora; a PUT is all or nothing).
///
/// # Errors
/// [`DataError::Io`] naming the file, the store's errors naming the URL.
pub fn upload(path: &Path, url: &ObjectUrl) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    put(url, Bytes::from(bytes), PutMode::Overwrite).map(|_| ())
}

/// Deletes the object at `url` (a missing one is no error).
///
/// # Errors
/// The store's errors naming the URL.
pub fn delete(url: &ObjectUrl) -> Result<()> {
    let s = store(&url.bucket)?;
    let key = url.location();
    let deleted = block_on(async move {
        use futures::StreamExt;
        let mut stream = s.delete_stream(futures::stream::once(async move { Ok(key) }).boxed());
        stream.next().await.transpose().map(|_| ())
    });
    match deleted {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_error(url, e)),
    }
}

/// An object read in ranges, as Parquet's readers read a file.
pub struct ObjectFile {
    url: ObjectUrl,
    store: Arc<dyn ObjectStore>,
    size: u64,
}

impl std::fmt::Debug for ObjectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectFile({}, {} bytes)", self.url.url(), self.size)
    }
}

impl ObjectFile {
    /// Opens the object at `url` (one HEAD request for its size).
    ///
    /// # Errors
    /// As [`head`].
    pub fn open(url: &ObjectUrl) -> Result<Self> {
        let meta = head(url)?;
        Ok(ObjectFile { url: url.clone(), store: store(&url.bucket)?, size: meta.size })
    }

    fn range(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        let (s, key) = (self.store.clone(), self.url.location());
        block_on(async move { s.get_ranges(&key, &[range]).await.map(|mut r| r.pop().unwrap_or_default()) }).map_err(|e| parquet::errors::ParquetError::External(Box::new(store_error(&self.url, e))))
    }
}

impl parquet::file::reader::Length for ObjectFile {
    fn len(&self) -> u64 {
        self.size
    }
}

/// How much a sequential reader of an object fetches at a time.
const READ_AHEAD: u64 = 4 << 20;

impl parquet::file::reader::ChunkReader for ObjectFile {
    type T = ObjectRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<ObjectRead> {
        Ok(ObjectRead { file: ObjectFile { url: self.url.clone(), store: self.store.clone(), size: self.size }, pos: start, buf: Bytes::new() })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let end = start.saturating_add(length as u64);
        if end > self.size {
            return Err(parquet::errors::ParquetError::EOF(format!("{}: {length} bytes at {start} reach past its end ({} bytes)", self.url.url(), self.size)));
        }
        self.range(start..end)
    }
}

/// A sequential reader of an [`ObjectFile`], fetching [`READ_AHEAD`] bytes at a time.
pub struct ObjectRead {
    file: ObjectFile,
    pos: u64,
    buf: Bytes,
}

impl Read for ObjectRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            if self.pos >= self.file.size {
                return Ok(0);
            }
            let end = (self.pos + READ_AHEAD).min(self.file.size);
            self.buf = self.file.range(self.pos..end).map_err(std::io::Error::other)?;
            self.pos = end;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}
