//! The sweep spec: a TOML file naming the results directory, the run parameters and the corpora.
//!
//! ```toml
//! results = "results/"
//! embedding_column = "hidden"
//! id_columns = ["seq_id", "position"]
//! k = 128
//! reference_size = 60000
//!
//! [[corpus]]
//! pattern = "emb/{model}/step-{step}/{dataset}/layer-{layer}.parquet"
//! ```
//!
//! Every run parameter may be given at the top (for all corpora) or in a `[[corpus]]` block (for
//! that block). Paths are relative to the spec file. Unknown keys are errors, so that a typo does
//! not silently run with a default.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lidscope_data::SampleConfig;
use lidscope_kernel::{parse_estimators, Estimator, LocalEstimator};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Result, SweepError};
use crate::pattern::Pattern;

/// Declares a struct with the run parameters (all optional) after its own fields, so that the top
/// level and each `[[corpus]]` block accept the same keys and still refuse unknown ones (serde's
/// `flatten` cannot be combined with `deny_unknown_fields`).
macro_rules! with_run_parameters {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($field: $ty,)*
            embedding_column: Option<String>,
            id_columns: Option<Vec<String>>,
            k: Option<Spanned<i64>>,
            estimator: Option<Spanned<String>>,
            discard_fraction: Option<Spanned<f64>>,
            reference_size: Option<Spanned<i64>>,
            pool: Option<Spanned<i64>>,
            seed: Option<i64>,
            reference: Option<String>,
            share_sample_by: Option<Spanned<Vec<String>>>,
            share_sample: Option<bool>,
            sample_exclude: Option<Spanned<String>>,
            #[serde(rename = "where")]
            filter: Option<String>,
            batch_rows: Option<Spanned<i64>>,
            completion_marker: Option<String>,
        }

        impl $name {
            #[allow(dead_code)] // RawParameters is its own parameters
            fn parameters(&self) -> RawParameters {
                RawParameters {
                    embedding_column: self.embedding_column.clone(),
                    id_columns: self.id_columns.clone(),
                    k: self.k.clone(),
                    estimator: self.estimator.clone(),
                    discard_fraction: self.discard_fraction.clone(),
                    reference_size: self.reference_size.clone(),
                    pool: self.pool.clone(),
                    seed: self.seed,
                    reference: self.reference.clone(),
                    share_sample_by: self.share_sample_by.clone(),
                    share_sample: self.share_sample,
                    sample_exclude: self.sample_exclude.clone(),
                    filter: self.filter.clone(),
                    batch_rows: self.batch_rows.clone(),
                    completion_marker: self.completion_marker.clone(),
                }
            }
        }
    };
}

with_run_parameters! {
    /// The file as written.
    struct RawSpec {
        results: Option<Spanned<String>>,
        settle_seconds: Option<Spanned<i64>>,
        corpus: Option<Vec<RawCorpus>>,
    }
}

with_run_parameters! {
    /// A `[[corpus]]` block as written.
    struct RawCorpus {
        pattern: Option<Spanned<String>>,
        partition: Option<Spanned<toml::Table>>,
    }
}

with_run_parameters! {
    /// The run parameters of one level, as written.
    struct RawParameters {}
}

impl RawParameters {
    /// `self` with the keys `over` sets replaced.
    fn overridden_by(&self, over: &RawParameters) -> RawParameters {
        RawParameters {
            embedding_column: over.embedding_column.clone().or_else(|| self.embedding_column.clone()),
            id_columns: over.id_columns.clone().or_else(|| self.id_columns.clone()),
            k: over.k.clone().or_else(|| self.k.clone()),
            estimator: over.estimator.clone().or_else(|| self.estimator.clone()),
            discard_fraction: over.discard_fraction.clone().or_else(|| self.discard_fraction.clone()),
            reference_size: over.reference_size.clone().or_else(|| self.reference_size.clone()),
            pool: over.pool.clone().or_else(|| self.pool.clone()),
            seed: over.seed.or(self.seed),
            reference: over.reference.clone().or_else(|| self.reference.clone()),
            share_sample_by: over.share_sample_by.clone().or_else(|| self.share_sample_by.clone()),
            share_sample: over.share_sample.or(self.share_sample),
            sample_exclude: over.sample_exclude.clone().or_else(|| self.sample_exclude.clone()),
            filter: over.filter.clone().or_else(|| self.filter.clone()),
            batch_rows: over.batch_rows.clone().or_else(|| self.batch_rows.clone()),
            completion_marker: over.completion_marker.clone().or_else(|| self.completion_marker.clone()),
        }
    }
}

/// Where a corpus's reference rows come from.
#[derive(Clone, Debug, PartialEq)]
pub enum ReferenceChoice {
    /// The paper's sample. With `share_by`, runs with equal values of those keys share one
    /// sample of token identities ([`crate::samples`]); without, each run draws its own.
    Sample {
        /// Size, pool, seed and the rows kept out.
        sample: SampleConfig,
        /// Partition keys whose values name a sample group (empty: one group for all runs).
        share_by: Option<Vec<String>>,
    },
    /// A reference file for every run.
    File(PathBuf),
}

/// The parameters of the runs of one `[[corpus]]` block.
#[derive(Clone, Debug, PartialEq)]
pub struct RunParameters {
    /// The embedding column.
    pub embedding_column: String,
    /// Identity columns.
    pub id_columns: Vec<String>,
    /// Neighbourhood size.
    pub k: usize,
    /// The TwoNN estimator of the paper's path (the first named, when it is a TwoNN).
    pub estimator: Estimator,
    /// The estimators named by `estimator = "twonn,mle"`, in order (empty: the default, TwoNN
    /// alone, as `lid`); see `lidscope_engine::RunConfig::estimators`.
    pub estimators: Vec<LocalEstimator>,
    /// TwoNN discard fraction.
    pub discard_fraction: f64,
    /// The reference.
    pub reference: ReferenceChoice,
    /// Corpus rows per batch.
    pub batch_rows: usize,
    /// `where = "..."`: the rows measured and sampled (`run --where`).
    pub filter: Option<String>,
    /// A file that must exist beside a corpus's files before it is read (e.g. `_SUCCESS`).
    pub completion_marker: Option<String>,
}

/// A `[[corpus]]` block.
#[derive(Clone, Debug)]
pub struct CorpusBlock {
    /// 0-based position in the spec.
    pub index: usize,
    /// Line of its `pattern` key.
    pub line: usize,
    /// The path pattern.
    pub pattern: Pattern,
    /// Partition values the block sets without a capture (`partition = { dataset = "wiki" }`).
    pub constants: Vec<(String, String)>,
    /// Its runs' parameters.
    pub parameters: RunParameters,
}

/// A checked spec.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The spec file.
    pub path: PathBuf,
    /// The results directory (one table for all runs).
    pub results: PathBuf,
    /// In `--watch`, corpus files modified less than this many seconds ago are taken to be still
    /// written and left for a later round.
    pub settle_seconds: u64,
    /// The corpora.
    pub corpora: Vec<CorpusBlock>,
    /// The partition keys every run has, in path order.
    pub keys: Vec<String>,
}

/// Column names a partition key may not take: they are the result table's own.
fn reserved_columns(p: &RunParameters) -> Vec<String> {
    let mut v: Vec<String> = lidscope_engine::OUTPUT_COLUMNS.iter().map(|s| s.to_string()).collect();
    v.extend(["file", "row"].map(String::from));
    v.extend(p.id_columns.iter().cloned());
    v.push(p.embedding_column.clone());
    v
}

impl Spec {
    /// Reads and checks the spec at `path`.
    ///
    /// # Errors
    /// [`SweepError::Spec`] naming the line or key: TOML syntax, unknown keys, missing `results`,
    /// `embedding_column` or `pattern`, a pattern without captures, a capture named like a
    /// result column, blocks with different partition keys, impossible parameters.
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path).map_err(SweepError::io(path))?;
        Spec::parse(path, &text)
    }

    /// Checks `text` as the spec at `path` (relative paths are relative to its directory).
    ///
    /// # Errors
    /// As [`Spec::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Spec> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let err = |line: Option<usize>, message: String| SweepError::Spec { path: path.to_path_buf(), line, message };
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(s.start));
            err(line, e.message().trim().to_string())
        })?;
        let base = std::path::absolute(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
            .map_err(SweepError::io(path))?;
        let results = raw.results.as_ref().ok_or_else(|| err(None, "missing key `results` (the results directory)".into()))?;
        let settle_seconds = match &raw.settle_seconds {
            None => 10,
            Some(s) if *s.get_ref() >= 0 => *s.get_ref() as u64,
            Some(s) => return Err(err(Some(line_of(s.span().start)), "settle_seconds must not be negative".into())),
        };
        let blocks = raw.corpus.as_deref().unwrap_or_default();
        if blocks.is_empty() {
            return Err(err(None, "no [[corpus]] block: name at least one corpus pattern".into()));
        }
        let top = raw.parameters();
        let mut corpora = Vec::new();
        let mut keys: Option<(Vec<String>, usize)> = None;
        for (index, block) in blocks.iter().enumerate() {
            let pattern = block.pattern.as_ref().ok_or_else(|| err(None, format!("[[corpus]] block {}: missing key `pattern`", index + 1)))?;
            let line = line_of(pattern.span().start);
            let raw_parameters = top.overridden_by(&block.parameters());
            let mut parameters = resolve(&raw_parameters, &base, &|offset, m| err(Some(line_of(offset)), m), &|m| {
                err(Some(line), format!("[[corpus]] block {}: {m}", index + 1))
            })?;
            let compiled = Pattern::parse(pattern.get_ref(), &base).map_err(|m| err(Some(line), format!("pattern {:?}: {m}", pattern.get_ref())))?;
            if compiled.captures().is_empty() {
                return Err(err(
                    Some(line),
                    format!("pattern {:?} has no capture: name the parts that tell runs apart, e.g. emb/{{model}}/step-{{step}}.parquet", pattern.get_ref()),
                ));
            }
            let mut constants = Vec::new();
            if let Some(table) = &block.partition {
                for (k, v) in table.get_ref() {
                    let value = match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(i) => i.to_string(),
                        other => return Err(err(Some(line_of(table.span().start)), format!("partition value {k} = {other:?}: expected a string or an integer"))),
                    };
                    constants.push((k.clone(), value));
                }
            }
            let mut block_keys: Vec<String> = compiled.captures().to_vec();
            for (k, _) in &constants {
                if block_keys.contains(k) {
                    return Err(err(Some(line), format!("partition key {k:?} is both a capture and a constant")));
                }
                block_keys.push(k.clone());
            }
            let reserved = reserved_columns(&parameters);
            if let Some(k) = block_keys.iter().find(|k| reserved.contains(k) || k.starts_with("__lidscope")) {
                return Err(err(
                    Some(line),
                    format!("capture {{{k}}} has the name of a column of the results ({}); rename the capture", reserved.join(", ")),
                ));
            }
            if let ReferenceChoice::Sample { share_by: Some(by), .. } = &mut parameters.reference {
                if raw_parameters.share_sample_by.is_none() {
                    // The default, `dataset`, applies where there is one.
                    by.retain(|k| block_keys.contains(k));
                } else if let Some(k) = by.iter().find(|k| !block_keys.contains(k)) {
                    return Err(err(Some(line), format!("share_sample_by names {k:?}, which is not a partition key of this block ({})", block_keys.join(", "))));
                }
            }
            match &keys {
                None => keys = Some((block_keys.clone(), index)),
                Some((first, at)) => {
                    let (a, b): (BTreeSet<&String>, BTreeSet<&String>) = (first.iter().collect(), block_keys.iter().collect());
                    if a != b {
                        return Err(err(
                            Some(line),
                            format!(
                                "[[corpus]] block {} has partition keys {{{}}} but block {} has {{{}}}: all runs of a results table need the same keys \
                                 (add constants with `partition = {{ key = \"value\" }}`)",
                                index + 1,
                                block_keys.join(", "),
                                at + 1,
                                first.join(", ")
                            ),
                        ));
                    }
                }
            }
            corpora.push(CorpusBlock { index, line, pattern: compiled, constants, parameters });
        }
        let keys = keys.map(|(k, _)| k).unwrap_or_default();
        Ok(Spec { path: path.to_path_buf(), results: place(&base, results.get_ref()), settle_seconds, corpora, keys })
    }
}

/// The effective parameters of a block, with defaults; `at` reports a bad value at its offset,
/// `missing` a key that has no default.
fn resolve(
    p: &RawParameters,
    base: &Path,
    at: &dyn Fn(usize, String) -> SweepError,
    missing: &dyn Fn(String) -> SweepError,
) -> Result<RunParameters> {
    let positive = |v: &Option<Spanned<i64>>, name: &str, default: i64, min: i64| -> Result<usize> {
        match v {
            None => Ok(default as usize),
            Some(s) if *s.get_ref() >= min => Ok(*s.get_ref() as usize),
            Some(s) => Err(at(s.span().start, format!("{name} = {}: must be at least {min}", s.get_ref()))),
        }
    };
    let embedding_column = p.embedding_column.clone().ok_or_else(|| missing("missing key `embedding_column` (at the top or in the block)".into()))?;
    let id_columns = p.id_columns.clone().unwrap_or_default();
    let k = positive(&p.k, "k", 128, 3)?;
    let estimators = match &p.estimator {
        None => Vec::new(),
        Some(s) => parse_estimators(s.get_ref()).map_err(|e| at(s.span().start, format!("estimator = {:?}: {e}", s.get_ref())))?,
    };
    let estimator = estimators.first().and_then(LocalEstimator::as_twonn).unwrap_or(Estimator::TwoNN);
    let discard_fraction = match &p.discard_fraction {
        None => 0.1,
        Some(s) if (0.0..1.0).contains(s.get_ref()) => *s.get_ref(),
        Some(s) => return Err(at(s.span().start, format!("discard_fraction = {}: must be in [0, 1)", s.get_ref()))),
    };
    let size = positive(&p.reference_size, "reference_size", 60_000, 1)?;
    let pool = positive(&p.pool, "pool", 150_000.max(size as i64), 1)?;
    if pool < size {
        let offset = p.pool.as_ref().map_or(0, |s| s.span().start);
        return Err(at(offset, format!("pool = {pool} is smaller than reference_size = {size}")));
    }
    let exclude = p.sample_exclude.as_ref().map(|s| s.get_ref().clone());
    let reference = match (&p.reference, &p.share_sample_by) {
        (Some(_), _) if p.sample_exclude.is_some() => {
            let s = p.sample_exclude.as_ref().expect("checked");
            return Err(at(s.span().start, "sample_exclude has no meaning with a reference file".into()));
        }
        (Some(file), None) => ReferenceChoice::File(place(base, file)),
        (Some(_), Some(s)) => return Err(at(s.span().start, "share_sample_by has no meaning with a reference file".into())),
        (None, Some(s)) if id_columns.is_empty() => {
            return Err(at(s.span().start, "share_sample_by needs id_columns: identities that name the same token in every checkpoint".into()))
        }
        (None, share) => {
            let share_by = match share {
                Some(s) => Some(s.get_ref().clone()),
                None => Some(vec!["dataset".to_string()]),
            };
            // Sharing needs identities that mean the same token in every checkpoint.
            let share_by = if id_columns.is_empty() || p.share_sample == Some(false) { None } else { share_by };
            ReferenceChoice::Sample { sample: SampleConfig { exclude, ..SampleConfig::new(pool, size, p.seed.unwrap_or(42) as u64) }, share_by }
        }
    };
    let batch_rows = positive(&p.batch_rows, "batch_rows", 8192, 1)?;
    Ok(RunParameters {
        embedding_column,
        id_columns,
        k,
        estimator,
        estimators,
        discard_fraction,
        reference,
        batch_rows,
        filter: p.filter.clone(),
        completion_marker: p.completion_marker.clone(),
    })
}

/// `text` as a path: an absolute path or an object URL as it is, anything else under `base`.
pub(crate) fn place(base: &Path, text: &str) -> PathBuf {
    let p = Path::new(text);
    if p.is_absolute() || lidscope_data::store::is_object(p) {
        p.to_path_buf()
    } else {
        base.join(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The user guide's full example spec (docs/sweeps.md), as written there.
    fn readme_spec() -> String {
        let readme = include_str!("../../../docs/sweeps.md");
        let section = &readme[readme.find("# Sweeps").expect("a Sweeps heading")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        section[start..start + section[start..].find("```").expect("closed")].to_string()
    }

    #[test]
    fn the_readme_spec_parses_with_every_key() {
        let spec = Spec::parse(Path::new("/data/sweep.toml"), &readme_spec()).unwrap();
        assert_eq!(spec.results, Path::new("/data/results/"));
        assert_eq!(spec.keys, ["model", "step", "dataset", "layer"]);
        assert_eq!(spec.corpora.len(), 2);
        let (a, b) = (&spec.corpora[0].parameters, &spec.corpora[1].parameters);
        assert_eq!((a.k, b.k), (128, 64));
        assert_eq!(spec.corpora[1].constants, [("dataset".to_string(), "pile".to_string())]);
        assert_eq!(a.reference, ReferenceChoice::Sample {
                sample: SampleConfig { exclude: Some("special".into()), ..SampleConfig::new(150_000, 60_000, 42) },
                share_by: Some(vec!["dataset".into()])
            });
        assert_eq!(spec.settle_seconds, 10);
    }

    #[test]
    fn errors_name_the_line() {
        let text = "results = \"r\"\nembedding_column = \"e\"\nid_columns = [\"s\"]\n[[corpus]]\npattern = \"x/{m}.parquet\"\nshare_sample_by = [\"dataset\"]\n";
        let e = Spec::parse(Path::new("s.toml"), text).unwrap_err().to_string();
        assert!(e.starts_with("s.toml:5: share_sample_by names \"dataset\""), "{e}");
        let e = Spec::parse(Path::new("s.toml"), &text.replace("id_columns = [\"s\"]\n", "")).unwrap_err().to_string();
        assert!(e.starts_with("s.toml:5: share_sample_by needs id_columns"), "{e}");
        let e = Spec::parse(Path::new("s.toml"), "results = \"r\"\nembedding_column = \"e\"\n[[corpus]]\npatern = \"x\"\n").unwrap_err().to_string();
        assert!(e.starts_with("s.toml:4: unknown field `patern`"), "{e}");
        let two = "results = \"r\"\nembedding_column = \"e\"\n[[corpus]]\npattern = \"x/{m}.parquet\"\n[[corpus]]\npattern = \"y/{n}.parquet\"\n";
        let e = Spec::parse(Path::new("s.toml"), two).unwrap_err().to_string();
        assert!(e.contains("s.toml:6:") && e.contains("the same keys"), "{e}");
        let file = "results = \"r\"\nembedding_column = \"e\"\nsample_exclude = \"special\"\n[[corpus]]\npattern = \"x/{m}.parquet\"\nreference = \"f.parquet\"\n";
        let e = Spec::parse(Path::new("s.toml"), file).unwrap_err().to_string();
        assert!(e.starts_with("s.toml:3: sample_exclude has no meaning with a reference file"), "{e}");
    }
}
