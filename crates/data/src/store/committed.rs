//! A bucket as lidscope's readers see result tables on it: committed parts only.
//!
//! On an object store a commit cannot rename files into place, so a result's part files are
//! uploaded under names of their attempt before its manifest, the commit point, is written; a
//! killed run leaves parts that no manifest lists, and a run replacing a result has both sets
//! in place until it removes the old one. A query engine that lists a table's `data/` prefix
//! would read them all. [`CommittedView`] is the store the engine is given instead: under each
//! prefix registered with [`CommittedView::show_only`], listings hold only the objects the
//! result's manifests name (and the "directories" that lead to them); everything else passes
//! through unchanged.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result,
};

/// A store whose listings under registered prefixes hold committed objects only.
#[derive(Debug)]
pub struct CommittedView {
    inner: Arc<dyn ObjectStore>,
    shown: Arc<RwLock<Vec<Shown>>>,
}

/// One result table's `data/` prefix and the keys its manifests list.
#[derive(Debug)]
struct Shown {
    /// The prefix, ending in `/`.
    prefix: String,
    keys: HashSet<String>,
}

impl CommittedView {
    /// A view of `inner` that filters nothing yet.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        CommittedView { inner, shown: Arc::default() }
    }

    /// From now on, listings under `prefix` (a key prefix; a `/` is added) hold only `keys`.
    pub fn show_only(&self, prefix: &str, keys: impl IntoIterator<Item = String>) {
        let prefix = if prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        let mut shown = self.shown.write().expect("view poisoned");
        shown.retain(|s| s.prefix != prefix);
        shown.push(Shown { prefix, keys: keys.into_iter().collect() });
    }

    fn filter(&self) -> Filter {
        Filter(self.shown.clone())
    }
}

/// What a listing keeps (cloned into listing streams, which outlive the call).
#[derive(Clone)]
struct Filter(Arc<RwLock<Vec<Shown>>>);

impl Filter {
    /// Whether object `key` is listed: outside every registered prefix, or named by a manifest.
    fn object(&self, key: &str) -> bool {
        let shown = self.0.read().expect("view poisoned");
        shown.iter().filter(|s| key.starts_with(&s.prefix)).all(|s| s.keys.contains(key))
    }

    /// Whether "directory" `dir` is listed: outside every registered prefix, or leading to a
    /// listed object.
    fn dir(&self, dir: &str) -> bool {
        let with_slash = format!("{dir}/");
        let shown = self.0.read().expect("view poisoned");
        shown.iter().filter(|s| with_slash.starts_with(&s.prefix)).all(|s| s.keys.iter().any(|k| k.starts_with(&with_slash)))
    }
}

impl std::fmt::Display for CommittedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommittedView({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CommittedView {
    async fn put_opts(&self, location: &Key, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Key, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Key, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Key, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Key>>) -> BoxStream<'static, Result<Key>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Key>) -> BoxStream<'static, Result<ObjectMeta>> {
        let keep = self.filter();
        self.inner.list(prefix).filter(move |m| std::future::ready(m.as_ref().map_or(true, |m| keep.object(m.location.as_ref())))).boxed()
    }

    fn list_with_offset(&self, prefix: Option<&Key>, offset: &Key) -> BoxStream<'static, Result<ObjectMeta>> {
        let keep = self.filter();
        self.inner.list_with_offset(prefix, offset).filter(move |m| std::future::ready(m.as_ref().map_or(true, |m| keep.object(m.location.as_ref())))).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Key>) -> Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        let keep = self.filter();
        listed.objects.retain(|m| keep.object(m.location.as_ref()));
        listed.common_prefixes.retain(|p| keep.dir(p.as_ref()));
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Key, to: &Key, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Key, to: &Key, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn listings_under_a_shown_prefix_hold_only_its_committed_keys() {
        let inner = Arc::new(InMemory::new());
        for k in ["r/data/m=a/part-0-x.parquet", "r/data/m=a/part-0-y.parquet", "r/data/m=b/part-0-z.parquet", "r/data/_manifest.json", "other/f.parquet"] {
            inner.put(&Key::from(k), PutPayload::from_static(b"1")).await.unwrap();
        }
        let view = CommittedView::new(inner);
        view.show_only("r/data", ["r/data/m=a/part-0-x.parquet".to_string()]);
        let all: Vec<String> = view.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all.contains(&"r/data/m=a/part-0-x.parquet".to_string()) && all.contains(&"other/f.parquet".to_string()));
        let top = view.list_with_delimiter(Some(&Key::from("r/data"))).await.unwrap();
        assert_eq!(top.common_prefixes, vec![Key::from("r/data/m=a")], "a partition with no committed part is not listed");
        assert!(top.objects.is_empty());
        // Reads are not filtered: a manifest is read by its name.
        assert!(view.get_opts(&Key::from("r/data/_manifest.json"), GetOptions::default()).await.is_ok());
    }
}
