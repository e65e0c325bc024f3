//! `lidscope embed`: texts + a Hugging Face checkpoint -> a corpus of per-token hidden states.

use anyhow::{bail, Result};
use lidscope_embed::{embed_corpus, EmbedOptions, EmbedProgress, Embedder};
use lidscope_engine::Progress;

use crate::args::EmbedArgs;
use crate::progress::Bar;

/// Parses `--layers`: `all` or a comma-separated list of indices (negative from the end).
pub fn parse_layers(s: &str) -> Result<Option<Vec<i64>>> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<i64>() {
            Ok(l) => out.push(l),
            Err(_) => bail!("--layers: {part:?} is not a layer index (e.g. 0,3,-1 or all)"),
        }
    }
    if out.is_empty() {
        bail!("--layers: no layer given (e.g. -1, 0,3,-1 or all)");
    }
    Ok(Some(out))
}

pub fn main(a: &EmbedArgs, quiet: bool) -> Result<()> {
    let layers = parse_layers(&a.layers)?;
    let ids: Vec<String> = a.id_columns.iter().filter(|c| !c.is_empty()).cloned().collect();
    let opts = EmbedOptions {
        texts: a.texts.clone(),
        text_column: a.text_column.clone(),
        out: a.out.clone(),
        id_columns: if ids.is_empty() { None } else { Some(ids) },
        layers,
        max_length: a.max_length,
        batch_size: a.batch_size as usize,
        overwrite: a.overwrite,
    };
    let bar = Bar::new(quiet);
    bar.phase("loading", 0);
    let result = Embedder::load(&a.model).and_then(|e| {
        embed_corpus(&e, &opts, &|p| match p {
            EmbedProgress::Start(total) => bar.phase("embedding", total),
            EmbedProgress::Advance(n) => bar.advance(n),
        })
    });
    bar.clear();
    let s = result?;
    if a.json {
        let v = serde_json::json!({
            "texts": s.texts, "tokens": s.tokens, "parts": s.parts, "layers": s.layers,
            "seconds": s.seconds, "tokens_per_second": s.tokens as f64 / s.seconds.max(1e-9),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !quiet {
        let cols: Vec<String> = s.layers.iter().map(|l| format!("hidden_L{l}")).collect();
        println!(
            "lidscope: {} texts, {} tokens ({:.0} tokens/s) in {:.1} s -> {} ({})",
            s.texts,
            s.tokens,
            s.tokens as f64 / s.seconds.max(1e-9),
            s.seconds,
            a.out.display(),
            cols.join(", ")
        );
    }
    Ok(())
}
