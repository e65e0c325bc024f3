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

/// An output directory being prepared.
pub(crate) struct Staging {
    out: PathBuf,
    dir: PathBuf,
}

impl Staging {
    /// Refuses a complete result unless `overwrite`; creates `<out>/.staging-<pid>/data`.
    pub(crate) fn begin(out: &Path, overwrite: bool) -> Result<Self> {
        if out.join(MANIFEST).exists() && !overwrite {
            return Err(EngineError::OutputExists(out.to_path_buf()));
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
        Ok(Self { out: out.to_path_buf(), dir })
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
        let out = &self.out;
        let old_manifest = out.join(MANIFEST);
        if old_manifest.exists() {
            fs::remove_file(&old_manifest).map_err(|e| EngineError::io(&old_manifest, e))?;
        }
        let trash = out.join(format!(".trash-{}", std::process::id()));
        fs::create_dir_all(&trash).map_err(|e| EngineError::io(&trash, e))?;
        for name in ["data", "reference.parquet"] {
            let (old, new) = (out.join(name), self.dir.join(name));
            if old.exists() {
                fs::rename(&old, trash.join(name)).map_err(|e| EngineError::io(&old, e))?;
            }
            fs::rename(&new, &old).map_err(|e| EngineError::io(&new, e))?;
        }
        lidscope_data::write_manifest(&old_manifest, manifest)?;
        let _ = fs::remove_dir_all(&trash);
        let _ = fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // After a commit the directory is gone already; after a failure nothing in it counts.
        let _ = fs::remove_dir_all(&self.dir);
    }
}
