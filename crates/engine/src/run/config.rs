//! What a run is asked to do, and the checks that refuse a job before any heavy work.

use std::path::PathBuf;

use lidscope_data::{check_new_run, inspect, resolve_inputs, CorpusInfo, CorpusSpec, InputStamp, Layout, SampleConfig};
use lidscope_kernel::{check_estimates, LidConfig, LocalEstimator, SearchStrategy};

use super::OUTPUT_COLUMNS;
use crate::error::{EngineError, Result};
use crate::scan::{FILE_COLUMN, RESERVED_PREFIX, ROW_COLUMN};

/// Where the reference rows come from.
#[derive(Clone, Debug, PartialEq)]
pub enum ReferenceSource {
    /// A Parquet file of identity columns and the embedding column.
    File(PathBuf),
    /// The paper's sample from the corpus itself (paper: 60,000 rows from a pool of 150,000).
    Sample(SampleConfig),
    /// The corpus rows whose identities (id columns) a Parquet file lists, in its order,
    /// duplicate vectors dropped: the reference of a sweep's checkpoints, so that all of them are
    /// measured on the same tokens ([`lidscope_data::sample_identities`]).
    Identities(PathBuf),
}

/// A `lidscope run` job as asked for; [`RunConfig::validate`] checks it against its corpus.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Corpus files, directories or globs.
    pub corpus: Vec<String>,
    /// The embedding column.
    pub embedding_column: String,
    /// Identity columns (empty: identity is (file, row)).
    pub id_columns: Vec<String>,
    /// Output directory.
    pub out: PathBuf,
    /// Neighbourhood size, estimator, discard fraction.
    pub lid: LidConfig,
    /// The estimators asked for by name, in order (`--estimator twonn,mle`): all computed from
    /// one search, the first as `lid`, each also as a `lid_<name>` column and with its mean in
    /// the manifest. Empty: `lid.estimator` alone, as `lid` (the paper's default run).
    pub estimators: Vec<LocalEstimator>,
    /// Reference rows.
    pub reference: ReferenceSource,
    /// Replace an existing complete result.
    pub overwrite: bool,
    /// Corpus rows per batch: memory is the reference plus a few batches.
    pub batch_rows: usize,
    /// Neighbour search path.
    pub strategy: SearchStrategy,
    /// Run keys (`model=m`, `checkpoint=3`, ...): results go to `<out>/data/k=v/...` so that many
    /// runs form one table.
    pub partition: Vec<(String, String)>,
    /// `--where`: a SQL predicate over the corpus's columns; only the rows it keeps are measured
    /// and sampled ([`crate::row_filter`]). `None`: every row.
    pub filter: Option<String>,
}

/// A job whose parameters hold together and whose corpus was found and inspected (footers only).
#[derive(Clone, Debug)]
pub struct ValidRun {
    /// The resolved corpus.
    pub spec: CorpusSpec,
    /// What its footers say.
    pub info: CorpusInfo,
    /// Its files as they were when checked, for the manifest.
    pub inputs: Vec<InputStamp>,
}

impl RunConfig {
    /// Checks the parameters ([`EngineError::Usage`] when they cannot work whatever the data),
    /// resolves and inspects the corpus, and refuses corpus columns that would collide with the
    /// run's own or whose types the runs already committed in `out` could not be read with
    /// ([`lidscope_data::check_new_run`]). Reads Parquet footers only, so a bad file deep in a
    /// corpus fails at once.
    ///
    /// # Errors
    /// [`EngineError::Usage`] for bad parameters; data errors naming the file and column.
    pub fn validate(&self) -> Result<ValidRun> {
        self.lid.validate().map_err(|e| EngineError::Usage(format!("parameters: {e}")))?;
        check_estimates(self.lid.k, self.lid.discard_fraction, &self.estimator_list()).map_err(|e| EngineError::Usage(format!("parameters: {e}")))?;
        for (k, v) in &self.partition {
            let ok = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '=']);
            if !ok(k) || !ok(v) {
                return Err(EngineError::Usage(format!("--partition {k}={v}: keys and values must be non-empty and hold no '/', '\\' or '='")));
            }
        }
        if self.batch_rows == 0 {
            return Err(EngineError::Usage("batch size must be at least 1 row".into()));
        }
        let mut spec = CorpusSpec { files: resolve_inputs(&self.corpus)?, embedding_column: self.embedding_column.clone(), id_columns: self.id_columns.clone(), filter: None };
        let info = inspect(&spec)?;
        if let Some(sql) = &self.filter {
            spec.filter = Some(crate::row_filter(sql, &info, &self.embedding_column, &spec.files[0])?);
        }
        let outputs = self.output_columns();
        if let Some(c) = outputs.iter().find(|c| info.carried.iter().any(|x| x == *c)) {
            return Err(EngineError::Invalid(format!(
                "{}: column {c:?} would collide with the output column of the same name; rename it first",
                spec.files[0].display()
            )));
        }
        if let Some(c) = info.carried.iter().find(|c| c.starts_with(RESERVED_PREFIX)) {
            return Err(EngineError::Invalid(format!(
                "{}: column {c:?}: names starting with {RESERVED_PREFIX:?} are reserved for lidscope's plan; rename it first",
                spec.files[0].display()
            )));
        }
        // Runs committed beside this one with other column types: refuse now, not after the work.
        check_new_run(&Layout::new(&self.out, &self.partition), &super::drive::output_schema(&info, &outputs))?;
        let inputs = InputStamp::all(&spec.files)?;
        Ok(ValidRun { spec, info, inputs })
    }

    /// The estimators computed: those named, or `lid.estimator` alone.
    pub fn estimator_list(&self) -> Vec<LocalEstimator> {
        match self.estimators.is_empty() {
            true => vec![self.lid.estimator.into()],
            false => self.estimators.clone(),
        }
    }

    /// The estimators as `lid()` and the manifest name them: `twonn`, `twonn,mle`, ...
    pub fn estimator_arg(&self) -> String {
        self.estimator_list().iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }

    /// The result columns after the carried ones: `lid`, `r1`, `r2`, `rk`, then `lid_<name>` for
    /// each estimator named.
    pub fn output_columns(&self) -> Vec<String> {
        let mut out: Vec<String> = OUTPUT_COLUMNS.map(String::from).to_vec();
        out.extend(self.estimators.iter().map(crate::udf::estimate_column));
        out
    }

    /// The identity columns `lid()` gets (as the reference names them): the id columns; for a
    /// sample from a corpus without them, the row's file and row number; none for a reference
    /// file without them (it shares no identity with the corpus).
    pub(crate) fn identity(&self) -> Vec<String> {
        match (&self.reference, self.id_columns.is_empty()) {
            (_, false) => self.id_columns.clone(),
            (ReferenceSource::Sample(_), true) => vec!["file".into(), "row".into()],
            (ReferenceSource::File(_) | ReferenceSource::Identities(_), true) => Vec::new(),
        }
    }

    /// The corpus column behind identity column `name` of the reference.
    pub(crate) fn identity_source<'a>(&self, name: &'a str) -> &'a str {
        match (self.id_columns.is_empty(), name) {
            (true, "file") => FILE_COLUMN,
            (true, "row") => ROW_COLUMN,
            _ => name,
        }
    }

    /// Whether the reference rows are rows of the corpus (a token is then not its own neighbour).
    pub(crate) fn sampled(&self) -> bool {
        matches!(self.reference, ReferenceSource::Sample(_) | ReferenceSource::Identities(_))
    }
}
