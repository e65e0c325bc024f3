//! Where a result directory keeps what: the part files, the reference and the run manifests.
//!
//! Parquet dataset readers (pyarrow, pandas, Spark, Hive) read every file under a dataset
//! directory except those whose names start with `_` or `.`. So everything under `<out>/data/`
//! that is not result rows carries a `_` prefix, and `pandas.read_parquet("<out>/data")` reads
//! the rows and nothing else:
//!
//! ```text
//! <out>/manifest.json                          an unpartitioned run
//! <out>/data/part-00000.parquet
//! <out>/reference.parquet
//!
//! <out>/data/model=m/ckpt=3/_manifest.json     a partitioned run (`--partition model=m,ckpt=3`)
//! <out>/data/model=m/ckpt=3/part-00000.parquet
//! <out>/references/model=m/ckpt=3/reference.parquet
//! ```
//!
//! On an object store (`s3://bucket/prefix`) the layout is the same, but the part and reference
//! files carry their attempt in their names, and the manifest says which are the result's (see
//! `commit::publish`).
//!
//! Releases before 0.2 named a partitioned run's manifest `manifest.json`; readers accept both,
//! and a run replacing such a result removes the old name.

use std::path::{Path, PathBuf};

use crate::store::{self, ObjectUrl};

/// Manifest of an unpartitioned run, at the top of the output directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Manifest of a partitioned run, beside its parts inside `data/` (hidden from dataset readers).
pub const PARTITION_MANIFEST_FILE: &str = "_manifest.json";
/// What earlier releases called a partitioned run's manifest (read, never written).
const LEGACY_PARTITION_MANIFEST_FILE: &str = "manifest.json";

/// The paths of one run's files in an output directory.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    out: PathBuf,
    partition: Vec<(String, String)>,
    data: PathBuf,
    reference: PathBuf,
    manifest: PathBuf,
}

impl Layout {
    /// The layout of the run with partition `partition` (keys in order; empty for none) in `out`.
    pub fn new(out: &Path, partition: &[(String, String)]) -> Self {
        if partition.is_empty() {
            return Self {
                out: out.into(),
                partition: Vec::new(),
                data: out.join("data"),
                reference: out.join("reference.parquet"),
                manifest: out.join(MANIFEST_FILE),
            };
        }
        let sub: PathBuf = partition.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let data = out.join("data").join(&sub);
        Self {
            out: out.into(),
            partition: partition.to_vec(),
            manifest: data.join(PARTITION_MANIFEST_FILE),
            data,
            reference: out.join("references").join(&sub).join("reference.parquet"),
        }
    }

    /// The output directory.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// The run's partition, keys in order.
    pub fn partition(&self) -> &[(String, String)] {
        &self.partition
    }

    /// The directory of the run's part files.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The run's reference file.
    pub fn reference(&self) -> &Path {
        &self.reference
    }

    /// The run's manifest, as this release writes it.
    pub fn manifest(&self) -> &Path {
        &self.manifest
    }

    /// Every name under which the run's manifest may exist (this release's first).
    pub fn manifests(&self) -> Vec<PathBuf> {
        let mut v = vec![self.manifest.clone()];
        if !self.partition.is_empty() {
            v.push(self.data.join(LEGACY_PARTITION_MANIFEST_FILE));
        }
        v
    }

    /// The run's committed manifest, under whichever name it has.
    pub fn committed_manifest(&self) -> Option<PathBuf> {
        if store::is_object(&self.out) {
            let exists = |p: &PathBuf| ObjectUrl::of(p).ok().flatten().is_some_and(|u| store::head(&u).is_ok());
            return std::iter::once(self.manifest.clone()).find(exists);
        }
        self.manifests().into_iter().find(|p| p.is_file())
    }

    /// A part file's path relative to the output directory, as the manifest lists it.
    pub fn relative_data(&self, name: &str) -> String {
        self.data.join(name).strip_prefix(&self.out).map(|p| p.display().to_string()).unwrap_or_else(|_| name.to_string())
    }
}

/// Whether `dir` is a result directory (as opposed to a corpus or a reference file).
pub fn is_result_dir(dir: &Path) -> bool {
    if let Ok(Some(url)) = ObjectUrl::of(dir) {
        return store::list_dir(&url).is_ok_and(|(objects, dirs)| {
            objects.iter().any(|m| m.location.as_ref() == url.join(MANIFEST_FILE).key) || dirs.contains(&url.join("data").key.trim_end_matches('/').to_string())
        });
    }
    dir.is_dir() && (dir.join("data").is_dir() || dir.join(MANIFEST_FILE).is_file())
}

/// Every run manifest in result directory `dir`, sorted by path: the top-level one of an
/// unpartitioned run and one per partition directory under `data/` (either name; where a
/// directory holds both, this release's). Hidden entries (staging) are skipped.
///
/// # Errors
/// [`crate::DataError::Io`] when a directory cannot be listed.
pub fn find_manifests(dir: &Path) -> crate::Result<Vec<PathBuf>> {
    if let Some(url) = ObjectUrl::of(dir)? {
        return find_object_manifests(&url);
    }
    let mut found = Vec::new();
    let top = dir.join(MANIFEST_FILE);
    if top.is_file() {
        found.push(top);
    }
    let data = dir.join("data");
    if data.is_dir() {
        collect(&data, &mut found)?;
    }
    found.sort();
    Ok(found)
}

/// As [`find_manifests`] for a result on an object store (one listing of its objects).
fn find_object_manifests(out: &ObjectUrl) -> crate::Result<Vec<PathBuf>> {
    let top = out.join(MANIFEST_FILE).key;
    let data = out.join("data/").key;
    let mut found: Vec<PathBuf> = store::list(&out.join(""))?
        .iter()
        .map(|m| m.location.as_ref())
        .filter(|key| {
            *key == top
                || key.strip_prefix(data.as_str()).and_then(|rest| rest.strip_suffix(PARTITION_MANIFEST_FILE)).is_some_and(|dirs| {
                    !dirs.is_empty() && dirs.ends_with('/') && dirs.split('/').filter(|d| !d.is_empty()).all(|d| !d.starts_with(['.', '_']))
                })
        })
        .map(|key| PathBuf::from(ObjectUrl { bucket: out.bucket.clone(), key: key.to_string() }.url()))
        .collect();
    found.sort();
    Ok(found)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> crate::Result<()> {
    let current = dir.join(PARTITION_MANIFEST_FILE);
    let legacy = dir.join(LEGACY_PARTITION_MANIFEST_FILE);
    if current.is_file() {
        out.push(current);
    } else if legacy.is_file() {
        out.push(legacy);
    }
    for e in std::fs::read_dir(dir).map_err(|e| crate::DataError::io(dir, e))?.flatten() {
        if !e.file_name().to_string_lossy().starts_with(['.', '_']) && e.path().is_dir() {
            collect(&e.path(), out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_of_both_layouts_are_found_once() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        let p = |k: &str, v: &str| vec![("model".to_string(), k.to_string()), ("k".to_string(), v.to_string())];
        let new = Layout::new(out, &p("a", "16"));
        let old = Layout::new(out, &p("b", "16"));
        let both = Layout::new(out, &p("c", "16"));
        for (l, names) in [(&new, &["_manifest.json"][..]), (&old, &["manifest.json"]), (&both, &["manifest.json", "_manifest.json"])] {
            std::fs::create_dir_all(l.data()).unwrap();
            for n in names {
                std::fs::write(l.data().join(n), "{}").unwrap();
            }
        }
        std::fs::create_dir_all(out.join("data/.staging-x")).unwrap();
        std::fs::write(out.join("data/.staging-x/_manifest.json"), "{}").unwrap();
        let found = find_manifests(out).unwrap();
        assert_eq!(found, vec![new.manifest().to_path_buf(), old.data().join("manifest.json"), both.manifest().to_path_buf()]);
        assert_eq!(old.committed_manifest().unwrap(), old.data().join("manifest.json"));
        assert_eq!(new.relative_data("part-00000.parquet"), "data/model=a/k=16/part-00000.parquet");
        assert!(is_result_dir(out));
        assert_eq!(Layout::new(out, &[]).manifests(), vec![out.join("manifest.json")]);
    }
}
