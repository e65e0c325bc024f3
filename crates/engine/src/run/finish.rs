//! The run's totals and its manifest: what was measured, how, and with which reference.

use std::collections::BTreeMap;

use arrow::array::Float64Array;
use lidscope_data::{vectors_sha256, EstimateMeans, Manifest};
use lidscope_kernel::{twonn_from_distances, Estimator, KnnIndex, LocalEstimator, Neighbours, Rows};

use super::config::{ReferenceSource, RunConfig, ValidRun};
use super::reference::Drawn;
use crate::error::{EngineError, Result};

/// Seconds per phase, as the manifest's `timings` records them: `reference` (drawing or reading
/// it), `reference_write`, `lid` (the whole plan, of which `knn` and `estimate` are the kernel's
/// share and `write` the part files'), `global`, `total`.
#[derive(Default)]
pub(crate) struct Timings(BTreeMap<String, f64>);

impl From<BTreeMap<String, f64>> for Timings {
    fn from(m: BTreeMap<String, f64>) -> Self {
        Timings(m)
    }
}

impl Timings {
    pub fn record(&mut self, phase: &str, seconds: f64) {
        self.0.insert(phase.to_string(), seconds);
    }
}

/// Running totals of a run.
pub(crate) struct Accumulator {
    pub rows: u64,
    sum: f64,
    finite: u64,
    pub nonfinite: u64,
    pub zero_r1: u64,
    /// Per reference row, its (r1, r2) inside the reference, when it was seen as a query.
    covered: Vec<Option<(f64, f64)>>,
    /// Per estimator named: its result column and running sums.
    estimates: Vec<(String, LocalEstimator, Tally)>,
}

/// Running sums of one estimate column, in row order (so the means do not depend on threads).
#[derive(Clone, Copy, Default)]
struct Tally {
    sum: f64,
    inverse_sum: f64,
    finite: u64,
}

impl Accumulator {
    pub fn new(reference_rows: usize) -> Self {
        Self { rows: 0, sum: 0.0, finite: 0, nonfinite: 0, zero_r1: 0, covered: vec![None; reference_rows], estimates: Vec::new() }
    }

    /// Also tallies the columns of the estimators `cfg` names (see [`Self::record_estimates`]).
    pub fn with_estimates(mut self, cfg: &RunConfig) -> Self {
        self.estimates = cfg.estimators.iter().map(|e| (crate::udf::estimate_column(e), *e, Tally::default())).collect();
        self
    }

    /// The estimate columns of the named estimators, by name, as [`Self::with_estimates`] set
    /// them up.
    pub fn estimate_columns(&self) -> impl Iterator<Item = &str> {
        self.estimates.iter().map(|(c, _, _)| c.as_str())
    }

    /// Tallies a batch of the named estimators' columns, in [`Self::estimate_columns`] order.
    pub fn record_estimates(&mut self, columns: &[&Float64Array]) {
        for ((_, _, t), col) in self.estimates.iter_mut().zip(columns) {
            for v in col.values().iter().filter(|v| v.is_finite()) {
                t.sum += v;
                t.inverse_sum += 1.0 / v;
                t.finite += 1;
            }
        }
    }

    /// The manifest's `estimates`: per named estimator its mean and, for MLE, the
    /// MacKay-Ghahramani mean ([`lidscope_kernel::mackay_ghahramani_mean`]'s definition).
    pub fn estimate_means(&self) -> BTreeMap<String, EstimateMeans> {
        self.estimates
            .iter()
            .map(|(column, e, t)| {
                let mean = (t.finite > 0).then(|| t.sum / t.finite as f64);
                let mle = matches!(e, LocalEstimator::Mle | LocalEstimator::MleUnbiased);
                let mackay_ghahramani = (mle && t.finite > 0).then(|| 1.0 / (t.inverse_sum / t.finite as f64));
                (column.clone(), EstimateMeans { estimator: e.to_string(), mean, n_finite: t.finite, mackay_ghahramani })
            })
            .collect()
    }

    /// Tallies a batch; `exclude[i]` is the reference row that query `i` is, if any.
    pub fn record(&mut self, lid: &Float64Array, r1: &Float64Array, r2: &Float64Array, exclude: &[Option<u32>]) {
        for (((lid, r1), r2), ex) in lid.values().iter().zip(r1.values()).zip(r2.values()).zip(exclude) {
            self.rows += 1;
            if lid.is_finite() {
                self.sum += lid;
                self.finite += 1;
            } else {
                self.nonfinite += 1;
            }
            if *r1 == 0.0 {
                self.zero_r1 += 1;
            }
            // A query that is reference row r, with itself excluded, has r's two nearest
            // neighbours inside the reference: exactly what the global estimate needs.
            if let Some(r) = ex {
                self.covered[*r as usize] = Some((*r1, *r2));
            }
        }
    }

    /// The mean of the finite LIDs (NaN when there are none).
    pub fn mean(&self) -> f64 {
        if self.finite == 0 {
            f64::NAN
        } else {
            self.sum / self.finite as f64
        }
    }

    /// TwoNN of the reference set. The rows no query has covered take their two nearest other
    /// rows from `lists` (the reference rows' own lists, when the run built them), else from a
    /// search.
    pub fn global_twonn(&self, index: &KnnIndex, lists: Option<&Neighbours>, discard_fraction: f64) -> Result<f64> {
        let missing: Vec<usize> = (0..self.covered.len()).filter(|r| self.covered[*r].is_none()).collect();
        let mut r1r2: Vec<(f64, f64)> = self.covered.iter().flatten().copied().collect();
        match lists.filter(|l| l.k >= 2 && l.len() == index.len()) {
            // The reference rows' own lists already hold their two nearest other rows, with the
            // distances a search would give (the same exact float64 values, the same order).
            Some(l) => r1r2.extend(missing.iter().map(|r| (l.distances_of(*r)[0], l.distances_of(*r)[1]))),
            None if !missing.is_empty() => {
                let dim = index.dim();
                let all = index.rows();
                let data: Vec<f32> = missing.iter().flat_map(|r| all.row(*r).iter().copied()).collect();
                let me: Vec<Option<u32>> = missing.iter().map(|r| Some(*r as u32)).collect();
                let rows = Rows::try_new(&data, missing.len(), dim).map_err(|e| EngineError::kernel("global estimate", e))?;
                let (nb, _) = index.knn(rows, 2, Some(&me)).map_err(|e| EngineError::kernel("global estimate", e))?;
                r1r2.extend(nb.distances.chunks_exact(2).map(|d| (d[0], d[1])));
            }
            None => {}
        }
        let (r1, r2): (Vec<f64>, Vec<f64>) = r1r2.into_iter().unzip();
        Ok(twonn_from_distances(&r1, &r2, discard_fraction, Estimator::TwoNN))
    }

    /// What a person should know about the totals.
    pub fn warnings(&self, cfg: &RunConfig) -> Vec<String> {
        let mut w = Vec::new();
        if self.zero_r1 > 0 && matches!(cfg.reference, ReferenceSource::File(_)) && cfg.id_columns.is_empty() {
            w.push(format!(
                "{} corpus rows have a zero-distance reference neighbour: without --id-columns a --reference file shares no identity \
                 with the corpus, so rows that are in the reference count themselves",
                self.zero_r1
            ));
        }
        if self.nonfinite > 0 {
            w.push(format!("{} rows have a non-finite LID (duplicate vectors in their neighbourhood); mean_lid leaves them out", self.nonfinite));
        }
        w
    }
}

/// What the run's manifest records before anything is measured: its parameters, its inputs and
/// its reference. The part files carry them too.
pub(crate) fn parameters(cfg: &RunConfig, valid: &ValidRun, drawn: &Drawn) -> Manifest {
    let spec = &valid.spec;
    let (seed, pool, size, exclude) = match &cfg.reference {
        ReferenceSource::Sample(s) => (Some(s.seed), Some(s.pool), Some(s.size), s.exclude.clone()),
        ReferenceSource::File(_) | ReferenceSource::Identities(_) => (None, None, None, None),
    };
    let reference = &drawn.reference;
    Manifest {
        tool: "lidscope".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        corpus: spec.files.iter().map(|p| p.display().to_string()).collect(),
        embedding_column: cfg.embedding_column.clone(),
        id_columns: cfg.id_columns.clone(),
        dim: reference.dim,
        k: cfg.lid.k,
        estimator: cfg.estimator_arg(),
        discard_fraction: cfg.lid.discard_fraction,
        reference_rows: reference.len(),
        reference_source: drawn.source.clone(),
        reference_sha256: vectors_sha256(&reference.embeddings, reference.dim),
        sample: cfg.sampled().then_some(reference.stats),
        seed,
        pool,
        reference_size: size,
        sample_exclude: exclude,
        filter: cfg.filter.clone(),
        partition: cfg.partition.iter().cloned().collect(),
        inputs: valid.inputs.clone(),
        ..Manifest::default()
    }
}

/// The complete manifest: `params` with the run's results.
pub(crate) fn manifest(params: Manifest, acc: &Accumulator, global_twonn: f64, timings: Timings, files: Vec<String>, elapsed: f64) -> Manifest {
    Manifest {
        created_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        rows: acc.rows,
        mean_lid: acc.mean(),
        global_twonn,
        estimates: acc.estimate_means(),
        elapsed_seconds: elapsed,
        timings: timings.0,
        files,
        ..params
    }
}
