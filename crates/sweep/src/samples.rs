//! Shared samples: the runs of one dataset are measured on the same token identities.
//!
//! The mean LID of step 100 and of step 5000 are comparable only when both are measured against
//! references of the same tokens. A sweep therefore draws the paper's sample once per *sample
//! group* (the runs with equal values of the spec's `share_sample_by` keys, by default
//! `dataset`): from the group's first run in partition order (its *anchor*), with the spec's
//! seed, pool and size. The sample's identity columns and vectors are kept in
//! `<results>/_samples/<group>/sample-<hash>.parquet`, and every run of the group, the anchor
//! included, uses as its reference the rows of its own corpus with those identities
//! ([`lidscope_engine::ReferenceSource::Identities`]): the same tokens, each checkpoint's own
//! vectors. The file is written once and kept: checkpoints that appear later are measured on the
//! same tokens. Its name carries a hash of the sample's parameters, so that changing the seed,
//! pool, size or columns draws a new sample (and recomputes the group's runs).

use std::path::{Path, PathBuf};

use lidscope_data::{inspect, resolve_inputs, sample_reference, vectors_sha256, write_atomic, write_reference, CorpusSpec, InputStamp, SampleConfig};
use lidscope_data::store::{self, ObjectUrl};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Result, SweepError};
use crate::plan::PlannedRun;
use crate::spec::{ReferenceChoice, RunParameters, Spec};

/// The runs that share one sample.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleGroup {
    /// The values of the `share_sample_by` keys.
    pub values: Vec<(String, String)>,
    sample: SampleConfig,
    embedding_column: String,
    id_columns: Vec<String>,
    /// `where`: the sample is drawn from the rows the runs measure.
    filter: Option<String>,
}

impl SampleGroup {
    /// The group of a run with `parameters` in `partition`; `None` when its runs do not share
    /// samples (a reference file, `share_sample = false`, no id columns).
    pub fn of(parameters: &RunParameters, partition: &[(String, String)]) -> Option<SampleGroup> {
        let ReferenceChoice::Sample { sample, share_by: Some(by) } = &parameters.reference else { return None };
        Some(SampleGroup {
            values: partition.iter().filter(|(k, _)| by.contains(k)).cloned().collect(),
            sample: sample.clone(),
            embedding_column: parameters.embedding_column.clone(),
            id_columns: parameters.id_columns.clone(),
            filter: parameters.filter.clone(),
        })
    }

    /// `dataset=wiki`, or `all runs`.
    pub fn label(&self) -> String {
        match self.values.is_empty() {
            true => "all runs".into(),
            false => self.values.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
        }
    }

    /// The group's sample file.
    pub fn file(&self, spec: &Spec) -> PathBuf {
        let s = &self.sample;
        let mut key = serde_json::json!([s.size, s.pool, s.seed, self.embedding_column, self.id_columns]);
        if let Some(c) = &s.exclude {
            // Only when set, so that samples drawn before the key existed keep their names.
            key.as_array_mut().expect("an array").push(serde_json::json!({ "exclude": c }));
        }
        if let Some(w) = &self.filter {
            key.as_array_mut().expect("an array").push(serde_json::json!({ "where": w }));
        }
        let key = key.to_string();
        let hash: String = Sha256::digest(key.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect();
        let mut dir = spec.results.join("_samples");
        match self.values.is_empty() {
            true => dir.push("all"),
            false => self.values.iter().for_each(|(k, v)| dir.push(format!("{k}={v}"))),
        }
        dir.join(format!("sample-{hash}.parquet"))
    }
}

/// What `sample-<hash>.json` records beside a sample.
#[derive(Serialize)]
struct SampleRecord<'a> {
    group: &'a [(String, String)],
    anchor: &'a [(String, String)],
    inputs: Vec<InputStamp>,
    seed: u64,
    pool: usize,
    size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    exclude: Option<&'a str>,
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    filter: Option<&'a str>,
    stats: lidscope_data::SampleStats,
    reference_sha256: String,
}

/// The group's sample file, drawn from `anchor`'s corpus if it does not exist yet.
///
/// # Errors
/// The anchor's corpus cannot be read or sampled, or the file cannot be written.
pub fn ensure(spec: &Spec, group: &SampleGroup, anchor: &PlannedRun) -> Result<PathBuf> {
    let target = group.file(spec);
    // Results on an object store: the sample is drawn into local staging, then uploaded beside
    // them (record first), where every node of a cluster reads it.
    let object = ObjectUrl::of(&target)?;
    let path = match &object {
        Some(url) if store::head(url).is_ok() => return Ok(target),
        Some(url) => lidscope_data::staging_root().join("samples").join(url.key.replace('/', "_")),
        None if target.is_file() => return Ok(target),
        None => target.clone(),
    };
    let dir = path.parent().expect("a sample file has a directory");
    std::fs::create_dir_all(dir).map_err(SweepError::io(dir))?;
    let patterns: Vec<String> = anchor.files.iter().map(|f| f.display().to_string()).collect();
    let mut cspec = CorpusSpec { files: resolve_inputs(&patterns)?, embedding_column: group.embedding_column.clone(), id_columns: group.id_columns.clone(), filter: None };
    let info = inspect(&cspec)?;
    if let Some(sql) = &group.filter {
        cspec.filter = Some(lidscope_engine::row_filter(sql, &info, &group.embedding_column, &cspec.files[0])?);
    }
    let reference = sample_reference(&cspec, &info, &group.sample)?;
    let record = SampleRecord {
        group: &group.values,
        anchor: &anchor.partition,
        inputs: InputStamp::all(&cspec.files)?,
        seed: group.sample.seed,
        pool: group.sample.pool,
        size: group.sample.size,
        exclude: group.sample.exclude.as_deref(),
        filter: group.filter.as_deref(),
        stats: reference.stats,
        reference_sha256: vectors_sha256(&reference.embeddings, reference.dim),
    };
    // The record first: a sample file without one is never left behind.
    let json = path.with_extension("json");
    write_atomic(&json, &serde_json::to_vec_pretty(&record).expect("plain data serialises"))?;
    write_reference(&path, &reference, &group.embedding_column)?;
    if let Some(url) = &object {
        let record = ObjectUrl { bucket: url.bucket.clone(), key: Path::new(&url.key).with_extension("json").display().to_string() };
        store::upload(&json, &record)?;
        store::upload(&path, url)?;
        let _ = (std::fs::remove_file(&json), std::fs::remove_file(&path));
    }
    tracing::info!(group = %group.label(), anchor = %anchor.label(), rows = reference.len(), "sample drawn");
    Ok(target)
}
