//! `lidscope demo`: the main job on generated data, nothing to set up.

use anyhow::Result;
use lidscope_data::SampleConfig;
use lidscope_engine::{ReferenceSource, RunConfig};
use lidscope_kernel::{LidConfig, SearchStrategy};

use crate::args::DemoArgs;
use crate::run_cmd::{execute, print_summary};
use crate::synth::{write_corpus, SynthSpec};

pub fn main(a: &DemoArgs, quiet: bool) -> Result<()> {
    let corpus = a.out.join("corpus");
    let results = a.out.join("results");
    write_corpus(&corpus, &SynthSpec { rows: a.rows, dim: a.dim, manifold_dim: 6, seed: 1, files: 2 })?;
    if !quiet {
        eprintln!("lidscope demo: {} tokens of dimension {} near a 6-dimensional manifold in {}", a.rows, a.dim, corpus.display());
    }
    let cfg = RunConfig {
        corpus: vec![corpus.display().to_string()],
        embedding_column: "embedding".into(),
        id_columns: vec!["seq_id".into(), "position".into()],
        out: results.clone(),
        lid: LidConfig::default(),
        estimators: Vec::new(),
        reference: ReferenceSource::Sample(SampleConfig::new(a.rows, a.rows / 2, 42)),
        // The demo owns its directory: a new demo replaces the last one.
        overwrite: true,
        batch_rows: 8192,
        strategy: SearchStrategy::Auto,
        partition: Vec::new(),
        filter: None,
    };
    let summary = execute(&cfg, quiet)?;
    print_summary(&summary, &results);
    if !quiet {
        let table = format!("lid={}", results.display());
        eprintln!("next, for example:");
        eprintln!("  lidscope sql --table {table} \"SELECT * FROM lid_summary\"");
        eprintln!("  lidscope sql --table {table} \"SELECT token, n, mean FROM lid_tokens WHERE n >= 20 ORDER BY mean DESC LIMIT 10\"");
        eprintln!("  lidscope plot {} --out lid.svg", results.display());
    }
    Ok(())
}
