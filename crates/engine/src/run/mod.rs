//! `lidscope run`: a corpus in, per-token LID tables and a manifest out.
//!
//! A run goes through five phases, one module each: [`config`] checks the job against its
//! corpus (footers only); [`reference`] draws or reads the reference, writes it beside the results
//! and indexes it; [`plan`] builds the DataFusion plan (the corpus scan projected through
//! `lid()`); [`drive`] executes it, writing part files and keeping totals; [`finish`] computes the
//! global estimate and the manifest, and the result is committed through
//! [`lidscope_data::Staging`].

mod config;
mod drive;
mod finish;
mod plan;
mod reference;
mod sharded;

use std::time::Instant;

use datafusion::prelude::{SessionConfig, SessionContext};
use lidscope_data::{Layout, Manifest, Staging};

pub use config::{ReferenceSource, RunConfig, ValidRun};
pub use reference::{by_identities as reference_by_identities, identities_source};
pub use sharded::{CommittedPart, ShardedRun};

use crate::error::{EngineError, Result};
use crate::progress::Progress;
use crate::scan::CorpusScan;
use drive::PartSink;
use finish::{Accumulator, Timings};

/// Columns every result row gets, after the carried corpus columns.
pub const OUTPUT_COLUMNS: [&str; 4] = ["lid", "r1", "r2", "rk"];

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The manifest as written.
    pub manifest: Manifest,
    /// Warnings raised during the run.
    pub warnings: Vec<String>,
    /// Which neighbour search answered and why ([`lidscope_kernel::KnnIndex::search_path`]);
    /// `None` where the search ran elsewhere (on a cluster's workers).
    pub search: Option<String>,
}

/// Runs the job end to end and commits `<out>/data/*.parquet`, `<out>/reference.parquet` and
/// the manifest (written last).
///
/// The computation is a DataFusion plan: the corpus as a table, projected through `lid()` against
/// the reference file just written. The call blocks on its own single-threaded runtime (the kernel
/// spreads each batch over rayon's pool), so it must not be made from inside a tokio runtime.
///
/// # Errors
/// Bad input (naming file and column), too few reference rows for `k`, mismatched dimensions, an
/// existing result without `overwrite`, or a failed write. Nothing committed before is lost.
pub fn run(cfg: &RunConfig, progress: &dyn Progress) -> Result<RunSummary> {
    let start = Instant::now();
    let mut warnings = Vec::new();
    let mut warn = |m: String| {
        progress.warn(&m);
        warnings.push(m);
    };
    let mut timings = Timings::default();
    let valid = cfg.validate()?;
    let staging = Staging::begin(Layout::new(&cfg.out, &cfg.partition), cfg.overwrite)?;

    progress.phase("reference", 0);
    let t = Instant::now();
    let drawn = reference::draw(cfg, &valid, &mut warn)?;
    timings.record("reference", t.elapsed().as_secs_f64());
    let params = finish::parameters(cfg, &valid, &drawn);
    let reference_path = staging.reference_path();
    let indexed = reference::write_and_index(cfg, &drawn, valid.info.total_rows, &reference_path, progress, &mut timings)?;

    progress.phase("lid", valid.info.total_rows);
    let t = Instant::now();
    let scan = CorpusScan {
        spec: valid.spec.clone(),
        info: valid.info.clone(),
        batch_rows: cfg.batch_rows,
        dim: drawn.reference.dim,
        dim_source: drawn.source.clone(),
        partitions: None,
    };
    // One partition in corpus order: the kernel spreads each batch over the cores.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let outputs = cfg.output_columns();
    let mut sink = PartSink::new(staging.data_dir(), staging.layout(), &valid.info, &outputs, params.part_metadata(), String::new());
    let mut acc = Accumulator::new(drawn.reference.len()).with_estimates(cfg);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| EngineError::io(&cfg.out, e))?;
    runtime.block_on(async {
        let stream = plan::lid_plan(&ctx, scan, cfg, &reference_path)?.execute_stream().await?;
        drive::drive(stream, cfg, &valid.info, Some((&indexed.loaded, &mut acc)), &mut sink, progress).await
    })?;
    timings.record("lid", t.elapsed().as_secs_f64());
    let kernel = indexed.loaded.times();
    timings.record("knn", kernel.knn);
    timings.record("estimate", kernel.estimate);
    timings.record("write", sink.seconds);

    let t = Instant::now();
    let global_twonn = acc.global_twonn(&indexed.loaded.index, indexed.loaded.lists(), cfg.lid.discard_fraction)?;
    timings.record("global", t.elapsed().as_secs_f64());
    acc.warnings(cfg).into_iter().for_each(&mut warn);

    let elapsed = start.elapsed().as_secs_f64();
    timings.record("total", elapsed);
    let files = std::mem::take(&mut sink.files);
    drop(sink);
    let manifest = finish::manifest(params, &acc, global_twonn, timings, files, elapsed);
    // A run into another partition may have committed other column types meanwhile.
    lidscope_data::check_new_run(staging.layout(), &drive::output_schema(&valid.info, &outputs))?;
    let manifest = staging.commit(&manifest)?;
    let search = indexed.loaded.index.search_path();
    tracing::info!("neighbour search: {search}");
    Ok(RunSummary { manifest, warnings, search: Some(search) })
}
