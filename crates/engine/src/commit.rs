//! The result directory's commit protocol.
//!
//! Everything is written under `<out>/.staging-<pid>-<n>/` first. When all files are complete the
//! run writes the new manifest into the staging directory (the mark that it is complete), then
//! swaps the files in: the old manifest goes first, so a half-replaced result never looks
//! complete; then `data/` and `reference.parquet` (their old versions move into the staging
//! directory); the manifest moves in last.
//!
//! An interrupted run leaves its staging directory behind. The next run into the same directory
//! finishes it if it was complete (every step above can be redone from where it stopped), and
//! removes it otherwise; either way the last complete result is what remains. Staging directories
//! of runs that are still going (several partitions written at once) are left alone.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{EngineError, Result};

/// File name of the run manifest.
pub(crate) const MANIFEST: &str = "manifest.json";
/// A staged result's partition, in order (`[["model","m"],["checkpoint","3"]]`).
const PARTITION: &str = "partition.json";

/// Where a run's files land: `<out>/data`, `<out>/reference.parquet` and `<out>/manifest.json`,
/// or with a partition `k1=v1/k2=v2`: `<out>/data/k1=v1/k2=v2/` (parts and `manifest.json`) and
/// `<out>/references/k1=v1/k2=v2/reference.parquet` (outside `data/`, so that a table over
/// `data/` holds result rows only).
pub(crate) struct Layout {
    out: PathBuf,
    partition: Vec<(String, String)>,
    data: PathBuf,
    reference: PathBuf,
    manifest: PathBuf,
}

impl Layout {
    pub(crate) fn new(out: &Path, partition: &[(String, String)]) -> Self {
        let sub: PathBuf = partition.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if partition.is_empty() {
            Self {
                out: out.into(),
                partition: Vec::new(),
                data: out.join("data"),
                reference: out.join("reference.parquet"),
                manifest: out.join(MANIFEST),
            }
        } else {
            let data = out.join("data").join(&sub);
            Self {
                out: out.into(),
                partition: partition.to_vec(),
                manifest: data.join(MANIFEST),
                data,
                reference: out.join("references").join(&sub).join("reference.parquet"),
            }
        }
    }
}

/// An output directory being prepared.
pub(crate) struct Staging {
    layout: Layout,
    dir: PathBuf,
}

/// Prefix of staging directory names; the rest is `<pid>-<n>`.
const STAGING_PREFIX: &str = ".staging-";

/// Staging directories of this process's runs in progress.
fn active() -> &'static Mutex<HashSet<PathBuf>> {
    static ACTIVE: std::sync::OnceLock<Mutex<HashSet<PathBuf>>> = std::sync::OnceLock::new();
    ACTIVE.get_or_init(Default::default)
}

impl Staging {
    /// Refuses a complete result unless `overwrite`; finishes or clears what interrupted runs
    /// left; creates `<out>/.staging-<pid>-<n>/data`.
    pub(crate) fn begin(layout: Layout, overwrite: bool) -> Result<Self> {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let out = layout.out.clone();
        let out = out.as_path();
        if out.exists() && !out.is_dir() {
            return Err(EngineError::Invalid(format!("{}: exists and is not a directory", out.display())));
        }
        fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
        recover(out)?;
        if layout.manifest.exists() && !overwrite {
            return Err(EngineError::OutputExists(layout.manifest.parent().unwrap_or(out).to_path_buf()));
        }
        let dir = out.join(format!("{STAGING_PREFIX}{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(dir.join("data")).map_err(|e| EngineError::io(&dir, e))?;
        active().lock().expect("staging registry poisoned").insert(dir.clone());
        Ok(Self { layout, dir })
    }

    /// Where result parts are written.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Where the reference file is written.
    pub(crate) fn reference_path(&self) -> PathBuf {
        self.dir.join("reference.parquet")
    }

    /// Records where the staged result goes, marks it complete (its manifest), then swaps it in.
    pub(crate) fn commit(self, manifest: &lidscope_data::Manifest) -> Result<()> {
        let partition = serde_json::to_vec(&self.layout.partition).expect("strings serialise");
        lidscope_data::write_atomic(&self.dir.join(PARTITION), &partition)?;
        lidscope_data::write_manifest(&self.dir.join(MANIFEST), manifest)?;
        roll_forward(&self.dir, &self.layout)
    }

    /// Result part paths relative to the output directory, for the manifest.
    pub(crate) fn relative_data(&self, name: &str) -> String {
        let l = &self.layout;
        l.data.join(name).strip_prefix(&l.out).map(|p| p.display().to_string()).unwrap_or_else(|_| name.to_string())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // After a commit the directory is gone already; after a failure nothing in it counts.
        let _ = fs::remove_dir_all(&self.dir);
        if let Ok(mut a) = active().lock() {
            a.remove(&self.dir);
        }
    }
}

/// Swaps a complete staged result (`staging` holds its manifest) into `layout`. Each step checks
/// what is already done, so a swap cut short at any point is finished by calling this again.
fn roll_forward(staging: &Path, layout: &Layout) -> Result<()> {
    let staged_manifest = staging.join(MANIFEST);
    if staged_manifest.exists() {
        if layout.manifest.exists() {
            fs::remove_file(&layout.manifest).map_err(|e| EngineError::io(&layout.manifest, e))?;
        }
        for (i, (new, old)) in [(staging.join("data"), &layout.data), (staging.join("reference.parquet"), &layout.reference)].into_iter().enumerate() {
            if !new.exists() {
                continue;
            }
            if old.exists() {
                let replaced = staging.join(format!(".old-{i}"));
                if replaced.exists() {
                    fs::remove_dir_all(&replaced).or_else(|_| fs::remove_file(&replaced)).map_err(|e| EngineError::io(&replaced, e))?;
                }
                fs::rename(old, &replaced).map_err(|e| EngineError::io(old, e))?;
            }
            if let Some(parent) = old.parent() {
                fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
            }
            fs::rename(&new, old).map_err(|e| EngineError::io(&new, e))?;
        }
        if let Some(parent) = layout.manifest.parent() {
            fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
        }
        fs::rename(&staged_manifest, &layout.manifest).map_err(|e| EngineError::io(&staged_manifest, e))?;
    }
    let _ = fs::remove_dir_all(staging);
    Ok(())
}

/// Finishes or removes the staging directories in `out` whose runs are gone.
fn recover(out: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(out) else { return Ok(()) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dir = e.path();
        // `.trash-<pid>`: where earlier releases moved the old result aside while committing.
        if let Some(owner) = name.strip_prefix(".trash-") {
            if !still_running(owner, &dir) {
                let _ = fs::remove_dir_all(&dir);
            }
            continue;
        }
        let Some(owner) = name.strip_prefix(STAGING_PREFIX) else { continue };
        if still_running(owner, &dir) {
            continue;
        }
        let complete = dir.join(MANIFEST);
        match complete.exists() {
            true => {
                // The partition in its order (the manifest's map is sorted by key).
                let file = dir.join(PARTITION);
                let bytes = fs::read(&file).map_err(|e| EngineError::io(&file, e))?;
                let partition: Vec<(String, String)> =
                    serde_json::from_slice(&bytes).map_err(|e| EngineError::Invalid(format!("{}: {e}", file.display())))?;
                tracing::info!("finishing the interrupted commit in {}", dir.display());
                roll_forward(&dir, &Layout::new(out, &partition))?;
            }
            false => {
                tracing::debug!("removing {} left by an interrupted run", dir.display());
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }
    Ok(())
}

/// Whether the run that owns staging directory `dir` (named `<pid>-<n>`) may still be writing.
fn still_running(owner: &str, dir: &Path) -> bool {
    let Some(pid) = owner.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { return false };
    if pid == std::process::id() {
        return active().lock().map(|a| a.contains(dir)).unwrap_or(true);
    }
    // Linux: a live process has /proc/<pid>. Elsewhere there is no cheap check, and a stale
    // directory is only clutter, so it is kept.
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests;
