//! The result directory's commit protocol.
//!
//! Everything is written under `<out>/.staging-<pid>/` first. Only when all files are complete
//! does the commit swap them in: the old manifest (if any) goes first, so a half-replaced
//! directory never looks complete; then `data/` and `reference.parquet`; the new manifest is
//! written last. An interrupted run therefore leaves either the old complete result, or a
//! directory without a manifest, plus a staging directory that the next run removes.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};

/// File name of the run manifest.
pub(crate) const MANIFEST: &str = "manifest.json";

/// Where a run's files land: `<out>/data`, `<out>/reference.parquet` and `<out>/manifest.json`,
/// or with a partition `k1=v1/k2=v2`: `<out>/data/k1=v1/k2=v2/` (parts and `manifest.json`) and
/// `<out>/references/k1=v1/k2=v2/reference.parquet` (outside `data/`, so that a table over
/// `data/` holds result rows only).
pub(crate) struct Layout {
    out: PathBuf,
    data: PathBuf,
    reference: PathBuf,
    manifest: PathBuf,
}

impl Layout {
    pub(crate) fn new(out: &Path, partition: &[(String, String)]) -> Self {
        let sub: PathBuf = partition.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if partition.is_empty() {
            Self { out: out.into(), data: out.join("data"), reference: out.join("reference.parquet"), manifest: out.join(MANIFEST) }
        } else {
            let data = out.join("data").join(&sub);
            Self { out: out.into(), manifest: data.join(MANIFEST), data, reference: out.join("references").join(&sub).join("reference.parquet") }
        }
    }
}

/// An output directory being prepared.
pub(crate) struct Staging {
    layout: Layout,
    dir: PathBuf,
}

impl Staging {
    /// Refuses a complete result unless `overwrite`; creates `<out>/.staging-<pid>/data`.
    pub(crate) fn begin(layout: Layout, overwrite: bool) -> Result<Self> {
        let out = layout.out.clone();
        let out = out.as_path();
        if layout.manifest.exists() && !overwrite {
            return Err(EngineError::OutputExists(layout.manifest.parent().unwrap_or(out).to_path_buf()));
        }
        if out.exists() && !out.is_dir() {
            return Err(EngineError::Invalid(format!("{}: exists and is not a directory", out.display())));
        }
        fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
        // Left-overs of interrupted runs are never part of a result.
        if let Ok(entries) = fs::read_dir(out) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".staging-") || name.starts_with(".trash-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = out.join(format!(".staging-{}", std::process::id()));
        fs::create_dir_all(dir.join("data")).map_err(|e| EngineError::io(&dir, e))?;
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

    /// Swaps the staged files in and writes the manifest last.
    pub(crate) fn commit(self, manifest: &lidscope_data::Manifest) -> Result<()> {
        let l = &self.layout;
        if l.manifest.exists() {
            fs::remove_file(&l.manifest).map_err(|e| EngineError::io(&l.manifest, e))?;
        }
        let trash = l.out.join(format!(".trash-{}", std::process::id()));
        fs::create_dir_all(&trash).map_err(|e| EngineError::io(&trash, e))?;
        for (i, (new, old)) in [(self.dir.join("data"), &l.data), (self.dir.join("reference.parquet"), &l.reference)].into_iter().enumerate() {
            if old.exists() {
                fs::rename(old, trash.join(i.to_string())).map_err(|e| EngineError::io(old, e))?;
            }
            if let Some(parent) = old.parent() {
                fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
            }
            fs::rename(&new, old).map_err(|e| EngineError::io(&new, e))?;
        }
        lidscope_data::write_manifest(&l.manifest, manifest)?;
        let _ = fs::remove_dir_all(&trash);
        let _ = fs::remove_dir_all(&self.dir);
        Ok(())
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
    }
}
