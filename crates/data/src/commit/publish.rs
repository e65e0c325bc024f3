//! Committing a result to an object store, where nothing can be renamed.
//!
//! The run stages its files on local disk as for a directory (under [`staging_root`], in a
//! directory named after the output URL, so that a cluster run's shards survive its coordinator
//! there). Its commit then:
//!
//! 1. uploads each part as `part-NNNNN-<attempt>.parquet` beside the parts it replaces, and the
//!    reference as `reference-<attempt>.parquet`: new names, so nothing a reader is reading
//!    changes under it;
//! 2. writes the manifest, which lists those names, with a conditional put: *create* when the
//!    partition had no result when the run began, *update if unchanged* when it replaces one.
//!    This single PUT is the commit point: the first writer wins, and a run that loses (another
//!    run committed the partition meanwhile) deletes what it uploaded and fails;
//! 3. deletes the objects the new manifest does not name that are older than the run (the
//!    replaced result, and the uploads of runs killed before their commit point).
//!
//! lidscope's readers follow manifests, so they see the old result until step 2 and the new one
//! after it. A reader that lists the prefix instead sees, between steps 1 and 3, both sets of
//! parts, and after a killed run, that run's parts until the next commit to the partition.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use object_store::{PutMode, UpdateVersion};

use crate::error::{DataError, Result};
use crate::layout::Layout;
use crate::manifest::{manifest_bytes, Manifest};
use crate::store::{self, ObjectUrl};

/// What a run into an object store knew of its partition when it began.
#[derive(Clone, Debug)]
pub(super) struct Began {
    /// The manifest object.
    manifest: ObjectUrl,
    /// The version of the result it replaces; `None`: the partition had none.
    replaces: Option<UpdateVersion>,
    /// When the run began (objects older than this and not named by its manifest are left-overs).
    at: SystemTime,
}

/// Where runs into object stores stage their files: `$LIDSCOPE_STAGING_DIR`, else the user's
/// cache directory (`$XDG_CACHE_HOME/lidscope/staging`, `~/.cache/lidscope/staging`), else the
/// system's temporary directory.
pub fn staging_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIDSCOPE_STAGING_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|h| PathBuf::from(h).join(".cache")));
    match cache {
        Some(c) => c.join("lidscope").join("staging"),
        None => std::env::temp_dir().join("lidscope-staging"),
    }
}

/// The local directory where runs into `out` stage: readable, and unique per URL.
fn local_base(out: &ObjectUrl) -> PathBuf {
    use sha2::Digest;
    let url = out.url();
    let digest = sha2::Sha256::digest(url.trim_end_matches('/').as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let readable: String = format!("{}-{}", out.bucket, out.key).chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '=' { c } else { '_' }).take(80).collect();
    staging_root().join(format!("{readable}-{hash}"))
}

/// Checks the store (so that a wrong key or a missing bucket fails before any work), refuses a
/// complete result unless `overwrite`, and returns the local directory to stage in.
pub(super) fn prepare(layout: &Layout, out: &ObjectUrl, overwrite: bool) -> Result<(PathBuf, Began)> {
    let at = SystemTime::now();
    // A listing: S3 answers a HEAD of a missing bucket as a missing object, a listing names it.
    store::list_dir(out)?;
    let manifest = object(layout.manifest())?;
    let replaces = match store::head(&manifest) {
        Ok(meta) => Some(UpdateVersion { e_tag: meta.e_tag, version: meta.version }),
        Err(DataError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    if replaces.is_some() && !overwrite {
        let dir = layout.manifest().parent().unwrap_or(layout.out()).to_path_buf();
        let name = layout.manifest().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        return Err(DataError::OutputExists { dir, manifest: name });
    }
    let base = local_base(out);
    std::fs::create_dir_all(&base).map_err(|e| DataError::io(&base, e))?;
    Ok((base, Began { manifest, replaces, at }))
}

fn object(path: &Path) -> Result<ObjectUrl> {
    ObjectUrl::of(path)?.ok_or_else(|| DataError::InvalidArgument(format!("{}: not an object URL", path.display())))
}

/// `part-00000.parquet` as `part-00000-<tag>.parquet`.
fn tagged(name: &str, tag: &str) -> String {
    match name.strip_suffix(".parquet") {
        Some(stem) => format!("{stem}-{tag}.parquet"),
        None => format!("{name}-{tag}"),
    }
}

/// Publishes the result staged in `staged` (parts in `data/`, perhaps `reference.parquet`) with
/// `manifest` (its files relative to the output, as staged): the protocol of the module's
/// documentation. Returns the manifest as published.
///
/// # Errors
/// The store's errors naming the URL; [`DataError::OutputExists`] or [`DataError::Store`] when
/// another run committed the partition first. Nothing this run uploaded is left then.
pub(super) fn publish(staged: &Path, layout: &Layout, manifest: &Manifest, began: &Began, tag: &str) -> Result<Manifest> {
    let out = object(layout.out())?;
    let mut published = manifest.clone();
    let mut uploaded: Vec<ObjectUrl> = Vec::new();
    let mut upload = |local: &Path, relative: &Path| -> Result<String> {
        let name = relative.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let relative = relative.with_file_name(tagged(&name, tag)).display().to_string();
        let url = out.join(&relative);
        store::upload(local, &url)?;
        uploaded.push(url);
        Ok(relative)
    };
    let result = (|| {
        for file in published.files.iter_mut() {
            let relative = PathBuf::from(file.as_str());
            let local = staged.join("data").join(relative.file_name().unwrap_or_default());
            *file = upload(&local, &relative)?;
        }
        let reference = staged.join("reference.parquet");
        if reference.exists() {
            let relative = layout.reference().strip_prefix(layout.out()).map(Path::to_path_buf).unwrap_or_else(|_| "reference.parquet".into());
            published.reference_file = Some(upload(&reference, &relative)?);
        }
        let mode = match &began.replaces {
            None => PutMode::Create,
            Some(v) => PutMode::Update(v.clone()),
        };
        match store::put(&began.manifest, Bytes::from(manifest_bytes(&published, layout.manifest())?), mode)? {
            Ok(()) => Ok(()),
            Err(refused) => Err(lost(refused, layout, &began.manifest)),
        }
    })();
    if let Err(e) = result {
        for url in &uploaded {
            let _ = store::delete(url);
        }
        return Err(e);
    }
    sweep(layout, &published, began.at);
    Ok(published)
}

/// A refused manifest put, said as what happened to the run.
fn lost(refused: store::PutRefused, layout: &Layout, manifest: &ObjectUrl) -> DataError {
    match refused {
        // Another run committed the partition after this one began.
        store::PutRefused::Exists => DataError::OutputExists {
            dir: layout.manifest().parent().unwrap_or(layout.out()).to_path_buf(),
            manifest: layout.manifest().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        },
        store::PutRefused::Changed => DataError::Store {
            url: manifest.url(),
            message: "another run replaced this result while this one ran; its result stands, and this run's files were removed".into(),
        },
    }
}

/// Deletes, beside the published result, the parts and references its manifest does not name
/// that are older than the run. Failures only leave clutter, which the next commit removes.
fn sweep(layout: &Layout, published: &Manifest, began: SystemTime) {
    let Ok(out) = object(layout.out()) else { return };
    let keep: std::collections::HashSet<String> = published.files.iter().chain(published.reference_file.iter()).map(|f| out.join(f).key).collect();
    let began_ms = began.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(i64::MAX);
    let reference_dir = layout.reference().parent().map(Path::to_path_buf).unwrap_or_else(|| layout.out().to_path_buf());
    for (dir, prefix) in [(layout.data().to_path_buf(), "part-"), (reference_dir, "reference")] {
        let Ok(url) = object(&dir) else { continue };
        let listed = match store::list_dir(&url) {
            Ok((objects, _)) => objects,
            Err(e) => {
                tracing::warn!("listing {} to remove replaced files: {e}", url.url());
                continue;
            }
        };
        for meta in listed {
            let key = meta.location.as_ref();
            let name = key.rsplit('/').next().unwrap_or(key);
            if name.starts_with(prefix) && name.ends_with(".parquet") && !keep.contains(key) && meta.last_modified.timestamp_millis() < began_ms {
                let stale = ObjectUrl { bucket: out.bucket.clone(), key: key.to_string() };
                tracing::debug!("removing {}, no longer part of the result", stale.url());
                if let Err(e) = store::delete(&stale) {
                    tracing::warn!("{e}");
                }
            }
        }
    }
}
