//! `lidscope run`.

use anyhow::{Context, Result};
use lidscope_data::SampleConfig;
use lidscope_engine::{ReferenceSource, RunConfig, RunSummary};
use lidscope_kernel::{Estimator, LidConfig, SearchStrategy};

use crate::args::{RunArgs, SearchArg};
use crate::progress::Bar;

impl From<&RunArgs> for RunConfig {
    fn from(a: &RunArgs) -> Self {
        RunConfig {
            corpus: a.corpus.clone(),
            embedding_column: a.embedding_column.clone(),
            id_columns: a.id_columns.iter().filter(|c| !c.is_empty()).cloned().collect(),
            out: a.out.clone(),
            lid: LidConfig {
                k: a.k as usize,
                estimator: a.estimator.as_ref().and_then(|e| e.0[0].as_twonn()).unwrap_or(Estimator::TwoNN),
                discard_fraction: a.discard_fraction,
            },
            estimators: a.estimator.clone().map(|e| e.0).unwrap_or_default(),
            reference: match &a.reference {
                Some(p) => ReferenceSource::File(p.clone()),
                None => ReferenceSource::Sample(SampleConfig {
                    exclude: match a.exclude_special {
                        true => Some("special".to_string()),
                        false => a.sample_exclude.clone(),
                    },
                    ..SampleConfig::new(a.pool, a.reference_size, a.seed)
                }),
            },
            overwrite: a.overwrite,
            batch_rows: a.batch_rows as usize,
            strategy: match a.search {
                SearchArg::Auto => SearchStrategy::Auto,
                SearchArg::Gemm => SearchStrategy::Gemm,
                SearchArg::Int8 => SearchStrategy::Int8,
                SearchArg::Int16 => SearchStrategy::Int16,
                SearchArg::Int8Fine => SearchStrategy::Int8Fine,
                SearchArg::Kdtree => SearchStrategy::KdTree,
            },
            partition: a.partition.clone(),
            filter: a.where_.clone(),
        }
    }
}

pub fn main(a: &RunArgs, quiet: bool) -> Result<()> {
    let summary = run(a, quiet)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary.manifest)?);
    } else if !quiet {
        print_summary(&summary, &a.out);
    }
    Ok(())
}

/// The job of `lidscope run`, on the cluster when `--cluster` is given, without printing.
pub fn run(a: &RunArgs, quiet: bool) -> Result<RunSummary> {
    crate::cluster_cmd::tls_needs_cluster(&a.tls, a.cluster.as_deref())?;
    match &a.cluster {
        Some(url) => crate::cluster_cmd::run(a, &RunConfig::from(a), url, quiet),
        None => with_threads(a.threads, || execute(&RunConfig::from(a), quiet)),
    }
}

/// Runs with a progress bar on stderr.
pub fn execute(cfg: &RunConfig, quiet: bool) -> Result<RunSummary> {
    let bar = Bar::new(quiet);
    let result = lidscope_engine::run(cfg, &bar);
    bar.clear();
    Ok(result?)
}

/// Runs `f` on a rayon pool of `threads` workers (default: the global pool).
pub fn with_threads<T: Send>(threads: Option<u64>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    match threads {
        None => f(),
        Some(n) => rayon::ThreadPoolBuilder::new().num_threads(n as usize).build().context("starting the worker pool")?.install(f),
    }
}

/// The one-line summary a person reads at the end of a run.
pub fn print_summary(s: &RunSummary, out: &std::path::Path) {
    let m = &s.manifest;
    println!(
        "lidscope: {} rows, mean LID {:.4}, global TwoNN {:.4} (k = {}, {}, reference {} rows) in {:.1} s -> {}",
        m.rows,
        m.mean_lid,
        m.global_twonn,
        m.k,
        m.estimator,
        m.reference_rows,
        m.elapsed_seconds,
        out.display()
    );
}
