//! The run's reference: drawn or read, checked against the corpus and `k`, written beside the
//! results, and indexed (self-joined when it is a sample) under that file for `lid()`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use lidscope_data::{count_corpus_identities, read_reference, sample_identities, sample_reference, write_reference, Reference};

use super::config::{ReferenceSource, RunConfig, ValidRun};
use super::finish::Timings;
use crate::error::{EngineError, Result};
use crate::progress::Progress;
use crate::udf::{adopt, file_sha256, lists_pay, member_list_len, Adopted, LoadedReference};

/// The reference rows and what to call them in messages (`sample` or the file's path).
pub(crate) struct Drawn {
    pub reference: Reference,
    pub source: String,
    /// Whether its rows come back as queries (a sample, or a file of corpus rows): one symmetric
    /// self-join then serves them at half the cost of searching them one by one.
    pub self_join: bool,
}

/// Reads the reference file or draws the paper's sample; warns when the corpus gave fewer rows
/// than asked. Then checks the reference's dimension and size against the corpus and `k`.
pub(crate) fn draw(cfg: &RunConfig, valid: &ValidRun, warn: &mut dyn FnMut(String)) -> Result<Drawn> {
    let drawn = match &cfg.reference {
        ReferenceSource::File(p) => {
            let reference = read_reference(p, &cfg.embedding_column, &cfg.id_columns)?;
            let self_join = mostly_corpus_rows(cfg, valid, &reference)?;
            Drawn { reference, source: p.display().to_string(), self_join }
        }
        ReferenceSource::Sample(sample) => {
            let r = sample_reference(&valid.spec, &valid.info, sample)?;
            if let Some(w) = short_sample(sample.size, &r) {
                warn(w);
            }
            Drawn { reference: r, source: "sample".to_string(), self_join: true }
        }
        ReferenceSource::Identities(p) => Drawn { reference: by_identities(cfg, valid, p)?, source: identities_source(p), self_join: true },
    };
    check(cfg, valid, &drawn)?;
    Ok(drawn)
}

/// Whether at least half of a reference file's rows are corpus rows by identity (the same rows
/// given as a file, or a reference an earlier run of this corpus wrote). The self-join computes
/// every reference row's neighbourhood at about half the cost of a search of all of them, so it
/// pays when at least half come back as queries; a row is taken from it only when its vector is
/// the query's too. Costs one pass over the corpus's id columns.
fn mostly_corpus_rows(cfg: &RunConfig, valid: &ValidRun, reference: &Reference) -> Result<bool> {
    if cfg.id_columns.is_empty() || reference.is_empty() {
        return Ok(false);
    }
    let n = count_corpus_identities(&valid.spec, &valid.info, &reference.keys)?;
    tracing::debug!("{n} of the {} reference rows are corpus rows", reference.len());
    Ok(2 * n >= reference.len())
}

/// The warning for a sample with fewer rows than the `size` asked for (a small corpus, or many
/// duplicate vectors): not an error, but the user should know.
pub(crate) fn short_sample(size: usize, r: &Reference) -> Option<String> {
    (r.len() < size).then(|| {
        format!(
            "asked for {size} reference rows; the corpus gave {} (pool of {} rows, {} duplicate vectors dropped)",
            r.len(),
            r.stats.pool_rows,
            r.stats.duplicates_dropped
        )
    })
}

/// The corpus rows whose identities file `p` lists ([`ReferenceSource::Identities`]).
pub fn by_identities(cfg: &RunConfig, valid: &ValidRun, p: &Path) -> Result<Reference> {
    if cfg.id_columns.is_empty() {
        return Err(EngineError::Usage(format!("{}: a reference by identities needs --id-columns", p.display())));
    }
    let listed = read_reference(p, &cfg.embedding_column, &cfg.id_columns)?;
    Ok(sample_identities(&valid.spec, &valid.info, &listed.keys, p)?)
}

/// What the manifest calls a reference by identities: `identities:<file>`.
pub fn identities_source(p: &Path) -> String {
    format!("identities:{}", p.display())
}

/// Checks the reference against the corpus and `k` before any heavy work.
pub(crate) fn check(cfg: &RunConfig, valid: &ValidRun, drawn: &Drawn) -> Result<()> {
    let (r, source) = (&drawn.reference, &drawn.source);
    if let Some(d) = valid.info.dim {
        if d != r.dim {
            return Err(EngineError::Invalid(format!(
                "column {:?}: the reference ({source}) has dimension {} but {} has dimension {d}",
                cfg.embedding_column,
                r.dim,
                valid.spec.files[0].display()
            )));
        }
    }
    let needed = cfg.lid.k + 1;
    if r.len() < needed {
        return Err(EngineError::Invalid(format!(
            "too few reference rows for k = {}: the reference ({source}) has {} rows, at least k + 1 = {needed} are needed",
            cfg.lid.k,
            r.len()
        )));
    }
    Ok(())
}

/// The reference indexed for the run, and registered in `lid()`'s cache under its file for as
/// long as this lives.
pub(crate) struct Indexed {
    pub loaded: Arc<LoadedReference>,
    _adopted: Adopted,
}

/// Writes the reference to `path` while it is indexed (and, for a sample, self-joined); the
/// query then finds the index under that file, as any `lid()` call would.
///
/// Without a self-join, a reference that `queries` corpus rows will be measured against gets its
/// rows' own neighbour lists when they pay: they cost about `n^2 d` once and save most of the
/// `k^2 d` of every query's estimate ([`lidscope_kernel::lid_from_neighbours`]).
pub(crate) fn write_and_index(cfg: &RunConfig, drawn: &Drawn, queries: u64, path: &Path, progress: &dyn Progress, timings: &mut Timings) -> Result<Indexed> {
    let identity = cfg.identity();
    let (loaded, hash) = std::thread::scope(|scope| -> Result<(LoadedReference, String)> {
        // The file's hash (the cache's key) is taken here too, off the kernel's path.
        let writer = scope.spawn(|| -> Result<(f64, String)> {
            let t = Instant::now();
            write_reference(path, &drawn.reference, &cfg.embedding_column)?;
            Ok((t.elapsed().as_secs_f64(), file_sha256(path)?))
        });
        let lists = match (drawn.self_join, lists_pay(queries, cfg.lid.k, drawn.reference.len())) {
            (true, _) => Some(cfg.lid.k),
            (false, true) => Some(member_list_len(cfg.lid.k, drawn.reference.len())),
            (false, false) => None,
        };
        let built = LoadedReference::new(&drawn.reference, &drawn.source, &identity, cfg.strategy).and_then(|r| match lists {
            Some(m) if m < drawn.reference.len() => {
                progress.phase("self-join", 0);
                r.with_self_knn(m).map_err(|e| EngineError::kernel(format!("reference {}", drawn.source), e))
            }
            _ => Ok(r),
        });
        let (seconds, hash) = writer.join().expect("reference writer panicked")?;
        timings.record("reference_write", seconds);
        Ok((built?, hash))
    })?;
    let loaded = Arc::new(loaded);
    let adopted = adopt(path, hash, loaded.clone())?;
    Ok(Indexed { loaded, _adopted: adopted })
}
