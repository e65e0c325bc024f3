//! Which runs a spec names now, and what each needs: nothing (its committed manifest has the same
//! parameters and inputs), a first run, or a new run because something changed.
//!
//! Inputs are compared by path, size and modification time ([`lidscope_data::InputStamp`], as
//! the manifest records them), not by content: deciding that nothing changed must not read a
//! corpus of hundreds of gigabytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lidscope_data::store::{self, ObjectUrl};
use lidscope_data::{read_manifest, InputStamp, Layout, Manifest};
use lidscope_engine::{identities_source, ReferenceSource, RunConfig};
use lidscope_kernel::{LidConfig, SearchStrategy};

use crate::error::{Result, SweepError};
use crate::samples::SampleGroup;
use crate::spec::{ReferenceChoice, RunParameters, Spec};

/// One run of the sweep.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Its partition, in the spec's key order.
    pub partition: Vec<(String, String)>,
    /// The `[[corpus]]` block it comes from.
    pub block: usize,
    /// Its corpus files (or directories of part files).
    pub files: Vec<PathBuf>,
    /// Its parameters.
    pub parameters: RunParameters,
    /// The sample group it shares token identities with, if any.
    pub group: Option<SampleGroup>,
}

impl PlannedRun {
    /// `model=a step=100 ...`, for people.
    pub fn label(&self) -> String {
        self.partition.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }

    /// The run as the engine takes it; `overwrite` replaces a committed result.
    pub fn config(&self, spec: &Spec, overwrite: bool) -> RunConfig {
        let p = &self.parameters;
        let reference = match (&p.reference, &self.group) {
            (ReferenceChoice::File(f), _) => ReferenceSource::File(f.clone()),
            (ReferenceChoice::Sample { .. }, Some(g)) => ReferenceSource::Identities(g.file(spec)),
            (ReferenceChoice::Sample { sample, .. }, None) => ReferenceSource::Sample(sample.clone()),
        };
        RunConfig {
            corpus: self.files.iter().map(|f| f.display().to_string()).collect(),
            embedding_column: p.embedding_column.clone(),
            id_columns: p.id_columns.clone(),
            out: spec.results.clone(),
            lid: LidConfig { k: p.k, estimator: p.estimator, discard_fraction: p.discard_fraction },
            estimators: p.estimators.clone(),
            reference,
            overwrite,
            batch_rows: p.batch_rows,
            strategy: SearchStrategy::Auto,
            partition: self.partition.clone(),
            filter: p.filter.clone(),
        }
    }

    /// Where its result lives.
    pub fn layout(&self, spec: &Spec) -> Layout {
        Layout::new(&spec.results, &self.partition)
    }
}

/// What a run needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// No committed result.
    New,
    /// A committed result whose parameters or inputs differ (the reason says which).
    Changed(String),
    /// Committed with these parameters and inputs.
    Done,
    /// Its files are not complete yet (being written, or without their completion marker).
    Waiting(String),
}

impl Status {
    /// `new`, `changed`, `done` or `waiting`.
    pub fn name(&self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Changed(_) => "changed",
            Status::Done => "done",
            Status::Waiting(_) => "waiting",
        }
    }

    /// Whether the run is to be computed now.
    pub fn pending(&self) -> bool {
        matches!(self, Status::New | Status::Changed(_))
    }
}

/// The runs of a spec and their status.
#[derive(Debug)]
pub struct Plan {
    /// Runs in partition order.
    pub runs: Vec<(PlannedRun, Status)>,
    /// `[[corpus]]` blocks (0-based) whose pattern matched nothing.
    pub unmatched: Vec<usize>,
}

impl Plan {
    /// Runs to compute now.
    pub fn pending(&self) -> impl Iterator<Item = &(PlannedRun, Status)> {
        self.runs.iter().filter(|(_, s)| s.pending())
    }

    /// How many runs have each status, by name.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut c = BTreeMap::new();
        for (_, s) in &self.runs {
            *c.entry(s.name()).or_default() += 1;
        }
        c
    }
}

/// Lists the spec's runs now. With `settle`, files modified less than that long ago are taken to
/// be still written (the run waits); a block's completion marker is always required.
///
/// # Errors
/// A directory that cannot be listed, two blocks naming the same partition, a manifest that
/// cannot be read.
pub fn plan(spec: &Spec, settle: Option<Duration>) -> Result<Plan> {
    let mut runs: BTreeMap<Vec<String>, PlannedRun> = BTreeMap::new();
    let mut unmatched = Vec::new();
    for block in &spec.corpora {
        let matches = block.pattern.matches()?;
        if matches.is_empty() {
            unmatched.push(block.index);
        }
        for m in matches {
            let mut values: BTreeMap<&str, String> = block.pattern.captures().iter().map(|s| s.as_str()).zip(m.values.iter().cloned()).collect();
            values.extend(block.constants.iter().map(|(k, v)| (k.as_str(), v.clone())));
            let partition: Vec<(String, String)> = spec.keys.iter().map(|k| (k.clone(), values[k.as_str()].clone())).collect();
            let key: Vec<String> = partition.iter().map(|(_, v)| v.clone()).collect();
            let group = SampleGroup::of(&block.parameters, &partition);
            let run = PlannedRun { partition, block: block.index, files: m.paths, parameters: block.parameters.clone(), group };
            if let Some(other) = runs.get(&key) {
                return Err(SweepError::Spec {
                    path: spec.path.clone(),
                    line: Some(block.line),
                    message: format!(
                        "run {} is matched by [[corpus]] blocks {} and {} ({} and {})",
                        run.label(),
                        other.block + 1,
                        block.index + 1,
                        other.files[0].display(),
                        run.files[0].display()
                    ),
                });
            }
            runs.insert(key, run);
        }
    }
    let mut out: Vec<(PlannedRun, Status)> = Vec::with_capacity(runs.len());
    for (_, run) in runs {
        let status = status(spec, &run, settle)?;
        out.push((run, status));
    }
    out.sort_by(|(a, _), (b, _)| natural(&a.partition, &b.partition));
    Ok(Plan { runs: out, unmatched })
}

/// Partition values in a person's order: numbers by value (`step=100` before `step=5000`).
pub fn natural(a: &[(String, String)], b: &[(String, String)]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|((_, x), (_, y))| match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.total_cmp(&y),
            _ => x.cmp(y),
        })
        .find(|o| o.is_ne())
        .unwrap_or(a.len().cmp(&b.len()))
}

/// The corpus files of `run` as they are now (directories expanded as a run resolves them).
pub fn stamps(run: &PlannedRun) -> Result<Vec<InputStamp>> {
    let patterns: Vec<String> = run.files.iter().map(|f| f.display().to_string()).collect();
    let files = lidscope_data::resolve_inputs(&patterns)?;
    Ok(InputStamp::all(&files)?)
}

fn status(spec: &Spec, run: &PlannedRun, settle: Option<Duration>) -> Result<Status> {
    if let Some(marker) = &run.parameters.completion_marker {
        for f in &run.files {
            if let Some(missing) = missing_marker(f, marker)? {
                return Ok(Status::Waiting(format!("no {marker} in {missing}")));
            }
        }
    }
    let now = stamps(run)?;
    if let Some(settle) = settle {
        let limit = SystemTime::now().checked_sub(settle).unwrap_or(SystemTime::UNIX_EPOCH);
        let limit_ns = limit.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        if let Some(young) = now.iter().find(|s| s.modified_ns > limit_ns) {
            return Ok(Status::Waiting(format!("{} was modified less than {} s ago", young.path, settle.as_secs())));
        }
    }
    let Some(path) = run.layout(spec).committed_manifest() else { return Ok(Status::New) };
    let manifest = read_manifest(&path)?;
    Ok(match difference(spec, run, &manifest, &now) {
        Some(reason) => Status::Changed(reason),
        None => Status::Done,
    })
}

/// The directory (or prefix) beside input `f` when it lacks `marker`: `f` itself when it is a
/// directory (a prefix ending in `/`), else the one holding it.
fn missing_marker(f: &Path, marker: &str) -> Result<Option<String>> {
    if let Some(url) = ObjectUrl::of(f)? {
        let dir = if url.key.ends_with('/') || url.key.is_empty() { url.key.clone() } else { url.key.rsplit_once('/').map_or(String::new(), |(d, _)| format!("{d}/")) };
        let want = ObjectUrl { bucket: url.bucket.clone(), key: format!("{dir}{marker}") };
        let found = match store::head(&want) {
            Ok(_) => true,
            Err(lidscope_data::DataError::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        let dir = ObjectUrl { bucket: url.bucket, key: dir }.url();
        return Ok((!found).then_some(dir));
    }
    let dir = if f.is_dir() { f.to_path_buf() } else { f.parent().map(PathBuf::from).unwrap_or_default() };
    Ok((!dir.join(marker).exists()).then(|| dir.display().to_string()))
}

/// How the committed `m` differs from what `run` asks for now, if it does.
fn difference(spec: &Spec, run: &PlannedRun, m: &Manifest, now: &[InputStamp]) -> Option<String> {
    let cfg = run.config(spec, false);
    let p = &run.parameters;
    if m.k != p.k {
        return Some(format!("k was {}, is {}", m.k, p.k));
    }
    if m.estimator != cfg.estimator_arg() {
        return Some(format!("estimator was {}, is {}", m.estimator, cfg.estimator_arg()));
    }
    if m.discard_fraction != p.discard_fraction {
        return Some(format!("discard_fraction was {}, is {}", m.discard_fraction, p.discard_fraction));
    }
    if m.filter != p.filter {
        return Some(format!("where was {:?}, is {:?}", m.filter, p.filter));
    }
    if m.embedding_column != p.embedding_column || m.id_columns != p.id_columns {
        return Some("the embedding or id columns changed".into());
    }
    let reference_same = match &cfg.reference {
        ReferenceSource::Sample(s) => {
            m.reference_source == "sample"
                && m.seed == Some(s.seed)
                && m.pool == Some(s.pool)
                && m.reference_size == Some(s.size)
                && m.sample_exclude == s.exclude
        }
        ReferenceSource::File(f) => m.reference_source == f.display().to_string(),
        ReferenceSource::Identities(f) => m.reference_source == identities_source(f),
    };
    if !reference_same {
        return Some(format!("the reference was {}", m.reference_source));
    }
    if m.inputs.is_empty() {
        return Some("its manifest does not record its input files".into());
    }
    let before: BTreeMap<&str, &InputStamp> = m.inputs.iter().map(|s| (s.path.as_str(), s)).collect();
    let after: BTreeMap<&str, &InputStamp> = now.iter().map(|s| (s.path.as_str(), s)).collect();
    if let Some(s) = now.iter().find(|s| !before.contains_key(s.path.as_str())) {
        return Some(format!("new input {}", s.path));
    }
    if let Some(s) = m.inputs.iter().find(|s| !after.contains_key(s.path.as_str())) {
        return Some(format!("input {} is gone", s.path));
    }
    if let Some(s) = now.iter().find(|s| before[s.path.as_str()] != *s) {
        return Some(format!("{} changed (size or modification time)", s.path));
    }
    None
}
