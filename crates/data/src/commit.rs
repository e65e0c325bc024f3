//! The result directory's commit protocol.
//!
//! Everything is written under `<out>/.staging-<attempt>/` first. When all files are complete the
//! run writes the new manifest into the staging directory (the mark that it is complete), then
//! swaps the files in: the old manifest goes first, so a half-replaced result never looks
//! complete; then `data/` and `reference.parquet` (their old versions move into the staging
//! directory); the manifest moves in last.
//!
//! An interrupted run leaves its staging directory behind. The next run into the same directory
//! finishes it if it was complete (every step above can be redone from where it stopped), and
//! removes it otherwise; either way the last complete result is what remains. Staging directories
//! of runs that are still going (several partitions written at once, perhaps from several hosts
//! sharing one file system) are left alone.
//!
//! An attempt is named by a random id, not by its process: the staging directory holds an owner
//! file (host and pid) that says who may still be writing it. A run on the same host is checked
//! for life through `/proc`; a run of another host is never taken for dead, so at worst its
//! directory stays as clutter.
//!
//! Results on object stores (`--out s3://...`) stage the same way in a local directory and are
//! published by a protocol without rename ([`publish`]).

use std::collections::HashSet;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::layout::Layout;
use crate::manifest::{write_manifest, Manifest};
use crate::store::ObjectUrl;
use crate::writer::write_atomic;

mod publish;
pub use publish::staging_root;

/// The staged manifest: present once the staged result is complete.
const MANIFEST: &str = "manifest.json";
/// A staged result's partition, in order (`[["model","m"],["checkpoint","3"]]`).
const PARTITION: &str = "partition.json";
/// Who is writing a staging directory.
const OWNER: &str = "owner.json";
/// Prefix of staging directory names; the rest is the attempt id.
const STAGING_PREFIX: &str = ".staging-";
/// Marks a staging directory that outlives its process: a run that is resumed, not restarted,
/// after its coordinator dies (the file holds the run's key).
const RESUMABLE: &str = "resumable";
/// A staging directory without an owner file (its run died between creating it and naming
/// itself) is taken for abandoned after this long.
const ORPHAN_AGE: Duration = Duration::from_secs(600);

/// The writer of a staging directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Owner {
    host: String,
    pid: u32,
}

impl Owner {
    fn this_process() -> Self {
        Owner { host: host_name().to_string(), pid: std::process::id() }
    }
}

/// This machine's name, as the kernel reports it (containers have their own).
fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| fs::read_to_string("/etc/hostname"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into())
    })
}

/// A fresh attempt id: unique across processes and hosts that share the output directory.
fn attempt_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(host_name().as_bytes());
    h.write_u32(std::process::id());
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    format!("{:016x}", h.finish())
}

/// Staging directories of this process's runs in progress.
fn active() -> &'static Mutex<HashSet<PathBuf>> {
    static ACTIVE: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    ACTIVE.get_or_init(Default::default)
}

/// Where a staged result goes when committed.
enum Target {
    /// Renamed into the output directory.
    Dir,
    /// Published to the object store the output URL names.
    Object(publish::Began),
}

/// An output being prepared: files written into [`Self::data_dir`] and [`Self::reference_path`]
/// appear in the result only through [`Self::commit`]. Dropped uncommitted, it leaves nothing.
pub struct Staging {
    layout: Layout,
    dir: PathBuf,
    target: Target,
    /// Kept when dropped uncommitted: a resumable run's work so far.
    keep: bool,
}

impl Staging {
    /// Refuses a complete result unless `overwrite`; finishes or clears what interrupted runs
    /// left; creates `<out>/.staging-<attempt>/data`.
    ///
    /// # Errors
    /// [`DataError::OutputExists`] for a complete result without `overwrite`, [`DataError::Io`]
    /// when the directory cannot be prepared.
    pub fn begin(layout: Layout, overwrite: bool) -> Result<Self> {
        let (base, target) = prepare(&layout, overwrite)?;
        let dir = base.join(format!("{STAGING_PREFIX}{}", attempt_id()));
        fs::create_dir_all(dir.join("data")).map_err(|e| DataError::io(&dir, e))?;
        active().lock().expect("staging registry poisoned").insert(dir.clone());
        let staging = Self { layout, dir, target, keep: false };
        staging.claim()?;
        Ok(staging)
    }

    /// As [`Self::begin`] for a run that survives its process: its directory is named by `key`
    /// (the run's parameters and inputs, as the caller hashes them) and kept when the process
    /// dies or drops it uncommitted. Calling this again with the same key, after a crash or from
    /// a restarted coordinator, picks up the directory with whatever the run had stored in it;
    /// the second value says whether it did. Resumable directories of the same layout under
    /// another key, whose runs are gone, are removed.
    ///
    /// # Errors
    /// As [`Self::begin`]; [`DataError::InvalidArgument`] when a live process still owns the run.
    pub fn resumable(layout: Layout, overwrite: bool, key: &str) -> Result<(Self, bool)> {
        let (base, target) = prepare(&layout, overwrite)?;
        let prefix = format!("{STAGING_PREFIX}run-{}-", layout_id(&layout));
        let name = format!("{prefix}{key}");
        for e in fs::read_dir(&base).map_err(|e| DataError::io(&base, e))?.flatten() {
            let other = e.file_name().to_string_lossy().into_owned();
            if other.starts_with(&prefix) && other != name && !owner_alive(&e.path()) {
                tracing::info!("removing {}, an unfinished run of other parameters", e.path().display());
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let dir = base.join(&name);
        let resumed = dir.join(RESUMABLE).exists();
        if resumed && owner_alive(&dir) {
            return Err(DataError::InvalidArgument(format!("{}: this run is in progress in another process", dir.display())));
        }
        fs::create_dir_all(dir.join("data")).map_err(|e| DataError::io(&dir, e))?;
        active().lock().expect("staging registry poisoned").insert(dir.clone());
        let staging = Self { layout, dir, target, keep: true };
        staging.claim()?;
        write_atomic(&staging.dir.join(RESUMABLE), key.as_bytes())?;
        Ok((staging, resumed))
    }

    /// Records this process as the directory's writer.
    fn claim(&self) -> Result<()> {
        let owner = serde_json::to_vec(&Owner::this_process()).expect("owner serialises");
        write_atomic(&self.dir.join(OWNER), &owner)
    }

    /// The staging directory, for files of the caller's own (a resumable run's plan and shards).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes a resumable run's work: it cannot succeed as it stands (bad input).
    pub fn abandon(mut self) {
        self.keep = false;
    }

    /// Where result parts are written.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Where the reference file is written.
    pub fn reference_path(&self) -> PathBuf {
        self.dir.join("reference.parquet")
    }

    /// Where the files go when committed.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Records where the staged result goes, marks it complete (its manifest), then swaps it in.
    /// Returns the manifest as committed (on an object store its files carry the attempt's names).
    ///
    /// # Errors
    /// [`DataError::Io`] naming the path; the last complete result then still stands, or the
    /// next run into the directory finishes this one.
    pub fn commit(self, manifest: &Manifest) -> Result<Manifest> {
        if let Target::Object(began) = &self.target {
            let published = publish::publish(&self.dir, &self.layout, manifest, began, &attempt_id())?;
            let _ = fs::remove_dir_all(&self.dir);
            return Ok(published);
        }
        let partition = serde_json::to_vec(self.layout.partition()).expect("strings serialise");
        write_atomic(&self.dir.join(PARTITION), &partition)?;
        write_manifest(&self.dir.join(MANIFEST), manifest)?;
        roll_forward(&self.dir, &self.layout)?;
        Ok(manifest.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // After a commit the directory is gone already; after a failure nothing in it counts,
        // except the work of a resumable run.
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
        if let Ok(mut a) = active().lock() {
            a.remove(&self.dir);
        }
    }
}

/// Makes the output directory, finishes or clears what interrupted runs left in it, and refuses
/// a complete result there unless `overwrite`. Returns the directory to stage in (the output
/// directory, or for an object store a local one) and where the result goes.
fn prepare(layout: &Layout, overwrite: bool) -> Result<(PathBuf, Target)> {
    if let Some(url) = ObjectUrl::of(layout.out())? {
        let (base, began) = publish::prepare(layout, &url, overwrite)?;
        // Staged results are published by their own run only: what dead runs left is removed.
        recover(&base)?;
        return Ok((base, Target::Object(began)));
    }
    let out = layout.out().to_path_buf();
    if out.exists() && !out.is_dir() {
        return Err(DataError::io(&out, std::io::Error::new(std::io::ErrorKind::NotADirectory, "exists and is not a directory")));
    }
    fs::create_dir_all(&out).map_err(|e| DataError::io(&out, e))?;
    recover(&out)?;
    match layout.committed_manifest() {
        Some(existing) if !overwrite => {
            let dir = existing.parent().unwrap_or(&out).to_path_buf();
            let manifest = existing.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Err(DataError::OutputExists { dir, manifest })
        }
        _ => Ok((out, Target::Dir)),
    }
}

/// Swaps a complete staged result (`staging` holds its manifest) into `layout`. Each step checks
/// what is already done, so a swap cut short at any point is finished by calling this again.
fn roll_forward(staging: &Path, layout: &Layout) -> Result<()> {
    let staged_manifest = staging.join(MANIFEST);
    if staged_manifest.exists() {
        for old in layout.manifests() {
            if old.exists() {
                fs::remove_file(&old).map_err(|e| DataError::io(&old, e))?;
            }
        }
        for (i, (new, old)) in [(staging.join("data"), layout.data()), (staging.join("reference.parquet"), layout.reference())].into_iter().enumerate() {
            if !new.exists() {
                continue;
            }
            if old.exists() {
                let replaced = staging.join(format!(".old-{i}"));
                if replaced.exists() {
                    fs::remove_dir_all(&replaced).or_else(|_| fs::remove_file(&replaced)).map_err(|e| DataError::io(&replaced, e))?;
                }
                fs::rename(old, &replaced).map_err(|e| DataError::io(old, e))?;
            }
            if let Some(parent) = old.parent() {
                fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
            }
            fs::rename(&new, old).map_err(|e| DataError::io(&new, e))?;
        }
        let manifest = layout.manifest();
        if let Some(parent) = manifest.parent() {
            fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
        }
        fs::rename(&staged_manifest, manifest).map_err(|e| DataError::io(&staged_manifest, e))?;
    }
    let _ = fs::remove_dir_all(staging);
    Ok(())
}

/// Finishes or removes the staging directories in `out` whose runs are gone.
///
/// # Errors
/// [`DataError::Io`] or [`DataError::Json`] when an interrupted commit cannot be finished.
pub fn recover(out: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(out) else { return Ok(()) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dir = e.path();
        let Some(attempt) = name.strip_prefix(STAGING_PREFIX) else { continue };
        if still_running(attempt, &dir) {
            continue;
        }
        let complete = dir.join(MANIFEST);
        if !complete.exists() && dir.join(RESUMABLE).exists() {
            // An unfinished resumable run: it waits for its resumption.
            continue;
        }
        if complete.exists() {
            // The partition in its order (the manifest's map is sorted by key).
            let file = dir.join(PARTITION);
            let bytes = fs::read(&file).map_err(|e| DataError::io(&file, e))?;
            let partition: Vec<(String, String)> = serde_json::from_slice(&bytes).map_err(|source| DataError::Json { path: file, source })?;
            tracing::info!("finishing the interrupted commit in {}", dir.display());
            roll_forward(&dir, &Layout::new(out, &partition))?;
        } else {
            tracing::debug!("removing {} left by an interrupted run", dir.display());
            let _ = fs::remove_dir_all(&dir);
        }
    }
    Ok(())
}

/// A short stable name for a layout's partition, so that resumable runs of one partition find
/// each other.
fn layout_id(layout: &Layout) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(serde_json::to_vec(layout.partition()).expect("strings serialise"));
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Whether the process named in `dir`'s owner file is alive (unknown owners count as alive).
fn owner_alive(dir: &Path) -> bool {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    still_running(name.strip_prefix(STAGING_PREFIX).unwrap_or(&name), dir)
}

/// Whether the run that owns staging directory `dir` (attempt `attempt`) may still be writing.
fn still_running(attempt: &str, dir: &Path) -> bool {
    let owner = match fs::read(dir.join(OWNER)) {
        Ok(bytes) => serde_json::from_slice::<Owner>(&bytes).ok(),
        Err(_) => None,
    };
    let owner = match owner {
        Some(o) => o,
        // Releases before 0.2 named the directory `<pid>-<n>`, on one host.
        None => match attempt.split_once('-').and_then(|(pid, _)| pid.parse::<u32>().ok()) {
            Some(pid) => Owner { host: host_name().to_string(), pid },
            None => {
                let age = fs::metadata(dir).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                return age.is_none_or(|a| a < ORPHAN_AGE);
            }
        },
    };
    if owner.host != host_name() {
        return true;
    }
    if owner.pid == std::process::id() {
        return active().lock().map(|a| a.contains(dir)).unwrap_or(true);
    }
    // Linux: a live process has /proc/<pid>. Elsewhere there is no cheap check, and a stale
    // directory is only clutter, so it is kept.
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(owner.pid.to_string()).exists()
}

#[cfg(test)]
mod tests;
