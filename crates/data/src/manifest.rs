//! The run manifest: one JSON file per run recording what was measured, how, and with which
//! reference, so that results can be trusted, compared and resumed without re-reading them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::sample::SampleStats;
use crate::writer::write_atomic;

/// Everything a run records about itself (written last, atomically: its presence marks a complete
/// run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `lidscope`.
    pub tool: String,
    /// The tool version that produced the run.
    pub version: String,
    /// Seconds since the Unix epoch when the run finished.
    pub created_unix: u64,
    /// The input patterns (or resolved files) as given.
    pub corpus: Vec<String>,
    /// The embedding column.
    pub embedding_column: String,
    /// The identity columns (empty: positional identity).
    #[serde(default)]
    pub id_columns: Vec<String>,
    /// Embedding dimension.
    pub dim: usize,
    /// Corpus rows measured.
    pub rows: u64,
    /// Mean LID over all measured rows.
    pub mean_lid: f64,
    /// Neighbourhood size.
    pub k: usize,
    /// Estimator name, e.g. `twonn`.
    pub estimator: String,
    /// TwoNN discard fraction.
    pub discard_fraction: f64,
    /// Rows in the reference.
    pub reference_rows: usize,
    /// `sample` when drawn from the corpus, otherwise the reference file's path.
    pub reference_source: String,
    /// [`crate::vectors_sha256`] of the reference vectors.
    pub reference_sha256: String,
    /// Sampling figures when the reference was drawn from the corpus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<SampleStats>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Sampling pool size asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<usize>,
    /// Reference size asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_size: Option<usize>,
    /// The boolean column whose `true` rows were kept out of the sample (e.g. `special`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_exclude: Option<String>,
    /// The predicate that chose the rows measured and sampled (`--where`); absent: every row.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Global TwoNN estimate of the reference.
    pub global_twonn: f64,
    /// Per estimator named for the run (`--estimator twonn,mle`), keyed by its result column
    /// (`lid_mle`): its means over the finite values. Absent for a run of the default estimator
    /// alone, whose mean is `mean_lid`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub estimates: BTreeMap<String, EstimateMeans>,
    /// Run keys (model, checkpoint, layer, dataset) that partition the results.
    #[serde(default)]
    pub partition: BTreeMap<String, String>,
    /// Wall-clock seconds of the whole run.
    pub elapsed_seconds: f64,
    /// Seconds per phase (`inspect`, `sample`, `knn`, `write`, ...).
    #[serde(default)]
    pub timings: BTreeMap<String, f64>,
    /// Result part files, relative to the output directory.
    #[serde(default)]
    pub files: Vec<String>,
    /// The reference file, relative to the output directory, where it is not at the layout's
    /// place (results on object stores name each attempt's files apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_file: Option<String>,
    /// Every corpus file as the run found it (size, modification time): a sweep compares them
    /// with the files as they are now to decide whether the run must be done again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<crate::inputs::InputStamp>,
}

/// The run's summary of one estimate column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EstimateMeans {
    /// The estimator as named (`mle`, `lpca-fo`, `lpca-fo:alpha=0.1`).
    pub estimator: String,
    /// Arithmetic mean of the finite values (absent when none is finite).
    pub mean: Option<f64>,
    /// Rows with a finite value.
    pub n_finite: u64,
    /// For the MLE estimators, the MacKay-Ghahramani mean `1 / mean(1 / m_i)` over the finite
    /// values: the average the MLE literature reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mackay_ghahramani: Option<f64>,
}

/// Prefix of the Parquet key-value metadata keys that [`Manifest::part_metadata`] writes.
pub const PART_METADATA_PREFIX: &str = "lidscope.";

impl Manifest {
    /// The run's parameters as Parquet key-value metadata for each of its part files, so that a
    /// file copied out of its directory still says what it holds: `lidscope.version`,
    /// `lidscope.k`, `lidscope.estimator`, `lidscope.discard_fraction`,
    /// `lidscope.embedding_column`, `lidscope.id_columns` (JSON list), `lidscope.dim`,
    /// `lidscope.reference_rows`, `lidscope.reference_sha256`, `lidscope.reference_source`,
    /// `lidscope.partition` (JSON object), and for a sampled reference `lidscope.seed`,
    /// `lidscope.pool`, `lidscope.reference_size`. Results (rows, mean) are known only at the end
    /// and stay in the manifest.
    pub fn part_metadata(&self) -> Vec<(String, String)> {
        let mut kv = vec![
            ("tool", self.tool.clone()),
            ("version", self.version.clone()),
            ("k", self.k.to_string()),
            ("estimator", self.estimator.clone()),
            ("discard_fraction", self.discard_fraction.to_string()),
            ("embedding_column", self.embedding_column.clone()),
            ("id_columns", serde_json::to_string(&self.id_columns).expect("strings serialise")),
            ("dim", self.dim.to_string()),
            ("reference_rows", self.reference_rows.to_string()),
            ("reference_sha256", self.reference_sha256.clone()),
            ("reference_source", self.reference_source.clone()),
            ("partition", serde_json::to_string(&self.partition).expect("strings serialise")),
        ];
        let sampling = [("seed", self.seed.map(|v| v.to_string())), ("pool", self.pool.map(|v| v.to_string())), ("reference_size", self.reference_size.map(|v| v.to_string()))];
        kv.extend(sampling.into_iter().filter_map(|(key, value)| value.map(|v| (key, v))));
        kv.into_iter().map(|(k, v)| (format!("{PART_METADATA_PREFIX}{k}"), v)).collect()
    }
}

/// Reads a manifest.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be read, [`DataError::Json`] when it is not a manifest.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = match crate::store::ObjectUrl::of(path)? {
        Some(url) => crate::store::get(&url)?.to_vec(),
        None => std::fs::read(path).map_err(|e| DataError::io(path, e))?,
    };
    serde_json::from_slice(&bytes).map_err(|source| DataError::Json { path: path.to_path_buf(), source })
}

/// Writes a manifest as pretty JSON, atomically.
///
/// # Errors
/// [`DataError::Io`] naming the file.
pub fn write_manifest(path: &Path, manifest: &Manifest) -> Result<()> {
    write_atomic(path, &manifest_bytes(manifest, path)?)
}

/// A manifest as the bytes of its file (pretty JSON); `path` names it in errors.
pub(crate) fn manifest_bytes(manifest: &Manifest, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(manifest).map_err(|source| DataError::Json { path: path.to_path_buf(), source })?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        let mut m = Manifest {
            tool: "lidscope".into(),
            version: "0.1.0".into(),
            corpus: vec!["c/*.parquet".into()],
            embedding_column: "emb".into(),
            dim: 384,
            rows: 10,
            mean_lid: 9.5,
            k: 128,
            reference_source: "sample".into(),
            sample: Some(SampleStats { pool_requested: 10, pool_rows: 10, duplicates_dropped: 1, requested: 5, rows: 5 }),
            seed: Some(42),
            ..Default::default()
        };
        m.timings.insert("knn".into(), 1.5);
        write_manifest(&path, &m).unwrap();
        assert_eq!(read_manifest(&path).unwrap(), m);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"duplicates_dropped\": 1"), "{text}");
        assert!(!text.contains("\"pool\""), "absent options are omitted: {text}");

        std::fs::write(&path, b"{\"tool\": 1}").unwrap();
        let e = read_manifest(&path).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}: invalid JSON", path.display())), "{e}");
    }
}
