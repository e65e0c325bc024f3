//! What a run keeps in its resumable staging directory, so that a restarted coordinator goes on
//! where the last one stopped:
//!
//! ```text
//! plan.json             the shards (row-group ranges of the corpus), fixed at the first attempt
//! reference.parquet     the reference, written once
//! reference.json        where it came from and the sample's figures
//! data/part-*.parquet   the parts of committed shards, moved in by rename
//! shards/<i>.json       shard i is committed: its part files and rows (written after the rename)
//! shards/<i>.tmp-*/     a shard being written (removed when a run resumes)
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use lidscope_data::{write_atomic, CorpusSlice, SampleStats};
use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};

/// The shards of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub shards: Vec<CorpusSlice>,
}

/// Where the reference came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ReferenceInfo {
    pub source: String,
    pub stats: SampleStats,
}

/// A committed shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ShardDone {
    /// File names of its parts in `data/`.
    pub parts: Vec<String>,
    pub rows: u64,
}

/// A run's staging directory, seen as shard state.
pub(crate) struct ShardStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |e| ClusterError::Engine(lidscope_engine::EngineError::Io { path: path.to_path_buf(), source: e })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| ClusterError::Ballista(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(value).expect("plain data serialises"))?;
    Ok(())
}

impl ShardStore {
    /// The store in staging directory `dir`; clears shards that were being written.
    pub fn open(dir: &Path) -> Result<Self> {
        let shards = dir.join("shards");
        fs::create_dir_all(&shards).map_err(io(&shards))?;
        for e in fs::read_dir(&shards).map_err(io(&shards))?.flatten() {
            if e.file_name().to_string_lossy().contains(".tmp-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        Ok(ShardStore { dir: dir.to_path_buf() })
    }

    pub fn plan(&self) -> Result<Option<Plan>> {
        read_json(&self.dir.join("plan.json"))
    }

    pub fn save_plan(&self, plan: &Plan) -> Result<()> {
        write_json(&self.dir.join("plan.json"), plan)
    }

    pub fn reference_path(&self) -> PathBuf {
        self.dir.join("reference.parquet")
    }

    pub fn reference_info(&self) -> Result<Option<ReferenceInfo>> {
        match self.reference_path().exists() {
            true => read_json(&self.dir.join("reference.json")),
            false => Ok(None),
        }
    }

    /// Records the reference written to [`Self::reference_path`].
    pub fn save_reference_info(&self, info: &ReferenceInfo) -> Result<()> {
        write_json(&self.dir.join("reference.json"), info)
    }

    pub fn done(&self, shard: usize) -> Result<Option<ShardDone>> {
        read_json(&self.dir.join("shards").join(format!("{shard}.json")))
    }

    /// A fresh directory to write shard `shard` into.
    pub fn scratch(&self, shard: usize, attempt: u32) -> Result<PathBuf> {
        let d = self.dir.join("shards").join(format!("{shard}.tmp-{attempt}"));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).map_err(io(&d))?;
        Ok(d)
    }

    /// Commits a shard written into `scratch`: its parts move into `data/` by rename, then the
    /// shard's record is written. A crash in between leaves the shard uncommitted (it is computed
    /// again, and its parts replaced).
    pub fn commit(&self, shard: usize, scratch: &Path, parts: Vec<String>, rows: u64) -> Result<()> {
        let data = self.data_dir();
        for p in &parts {
            let (from, to) = (scratch.join(p), data.join(p));
            fs::rename(&from, &to).map_err(io(&from))?;
        }
        write_json(&self.dir.join("shards").join(format!("{shard}.json")), &ShardDone { parts, rows })?;
        let _ = fs::remove_dir_all(scratch);
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}
