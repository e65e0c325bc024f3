//! `lidscope embed`: texts + a Hugging Face checkpoint -> a corpus of per-token hidden states.

use anyhow::{bail, Context, Result};
use lidscope_embed::{embed_corpus, Batching, EmbedOptions, EmbedProgress, EmbedSummary, Embedder, LayerRequest};
use lidscope_engine::Progress;

use crate::args::EmbedArgs;
use crate::progress::Bar;

pub fn main(a: &EmbedArgs, quiet: bool) -> Result<()> {
    let s = embed(a, quiet)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary_json(&s))?);
    } else if !quiet {
        println!(
            "lidscope: {} texts, {} tokens ({:.0} tokens/s) in {:.1} s -> {} ({})",
            s.texts,
            s.tokens,
            s.tokens as f64 / s.seconds.max(1e-9),
            s.seconds,
            a.out.display(),
            s.columns.join(", ")
        );
    }
    Ok(())
}

/// What `lidscope embed --json` prints.
pub fn summary_json(s: &EmbedSummary) -> serde_json::Value {
    serde_json::json!({
        "texts": s.texts, "tokens": s.tokens, "parts": s.parts, "layers": s.layers, "columns": s.columns,
        "max_length": s.max_length,
        "seconds": s.seconds, "tokens_per_second": s.tokens as f64 / s.seconds.max(1e-9),
    })
}

/// The job of `lidscope embed`, with a progress bar on stderr, without printing.
pub fn embed(a: &EmbedArgs, quiet: bool) -> Result<EmbedSummary> {
    reuse_freed_tensors();
    let layers = LayerRequest::parse_list(&a.layers)?;
    let ids: Vec<String> = a.id_columns.iter().filter(|c| !c.is_empty()).cloned().collect();
    let opts = EmbedOptions {
        texts: a.texts.clone(),
        text_column: a.text_column.clone(),
        out: a.out.clone(),
        id_columns: if ids.is_empty() { None } else { Some(ids) },
        layers,
        max_length: a.max_length,
        batching: Batching { texts: a.batch_size as usize, tokens: a.batch_tokens as usize },
        overwrite: a.overwrite,
    };
    let bar = Bar::new(quiet);
    bar.phase("loading", 0);
    let result = Embedder::load(&a.model).and_then(|e| {
        embed_corpus(&e, &opts, &|p: EmbedProgress| match p {
            EmbedProgress::Start(total) => bar.phase("embedding", total),
            EmbedProgress::Advance(n) => bar.advance(n),
        })
    });
    bar.clear();
    Ok(result?)
}

/// `lidscope bench --embed <MODEL_DIR>`: tokens per second of the forward pass, beside the
/// machine's sgemm rate and candle's rate on the feed-forward product of a full pass. The texts
/// are synthetic (256 of `--max-length` tokens, 128 by default) or, with `--embed-texts`, real ones of mixed
/// length, embedded in chunks and packed passes as `lidscope embed` does. The rate counts the
/// products of real tokens (projections, feed-forward, and attention within each text).
pub fn bench(a: &crate::args::BenchArgs) -> Result<()> {
    reuse_freed_tensors();
    let dir = a.embed.as_ref().expect("checked by the caller");
    let batching = Batching { tokens: a.batch_tokens as usize, ..Batching::default() };
    let m = Embedder::load(dir)?;
    let t = a.max_length.unwrap_or(if a.embed_texts.is_some() { m.default_max_length() } else { 128 });
    let (texts, source) = match &a.embed_texts {
        Some(pattern) => (read_texts(pattern, &a.text_column)?, pattern.clone()),
        None => (synthetic_texts(&m, dir, a.seed, 256, t)?, format!("256 synthetic texts of {t} tokens")),
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let last = m.num_hidden_states() - 1;
    let d = m.dim();
    let ff = m.config.intermediate_size;
    // The baseline as `lidscope bench` takes it: the best sgemm rate before and after the run, so
    // a slow moment of a shared machine lowers the share, never raises it.
    let sgemm_before = lidscope_kernel::sgemm_gflops(4096, d.max(64), 3);
    let ffn = lidscope_embed::candle_matmul_gflops(batching.tokens, d, ff, 5);
    m.embed(&refs[..16.min(refs.len())], &[last], t, batching)?; // warm-up
    let started = std::time::Instant::now();
    let mut lengths = Vec::with_capacity(refs.len());
    for chunk in refs.chunks(batching.texts.max(64)) {
        lengths.extend(m.embed(chunk, &[last], t, batching)?.iter().map(|e| e.ids.len()));
    }
    let secs = started.elapsed().as_secs_f64();
    let sgemm = sgemm_before.max(lidscope_kernel::sgemm_gflops(4096, d.max(64), 3));
    let tokens: usize = lengths.iter().sum();
    let flops: f64 = lengths.iter().map(|&n| m.flops_per_token(n) * n as f64).sum();
    let gflops = flops / secs / 1e9;
    let share = gflops / sgemm;
    lengths.sort_unstable();
    let (shortest, median, longest) = (lengths[0], lengths[lengths.len() / 2], lengths[lengths.len() - 1]);
    let threads = rayon::current_num_threads();
    let v = serde_json::json!({
        "model": dir.display().to_string(), "texts_source": source, "texts": texts.len(), "tokens": tokens,
        "tokens_per_text": {"min": shortest, "median": median, "max": longest}, "max_length": t, "batch_size": batching.texts, "batch_tokens": batching.tokens, "seconds": secs,
        "tokens_per_second": tokens as f64 / secs, "forward_gflops": gflops, "sgemm_gflops": sgemm, "share_of_sgemm": share,
        "candle_ffn_matmul_gflops": ffn, "ffn_shape": [batching.tokens, d, ff], "threads": threads,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "embed: {} texts ({source}; {shortest}/{median}/{longest} tokens min/median/max), {tokens} tokens in {secs:.2} s = {:.0} tokens/s \
             on {threads} threads\n  forward pass {gflops:.1} GFLOP/s in matrix products of real tokens = {share:.2} of the sgemm rate \
             {sgemm:.1} GFLOP/s (4096 x 4096 x {}); candle's {}x{}x{} product {ffn:.1} GFLOP/s",
            texts.len(),
            tokens as f64 / secs,
            d.max(64),
            batching.tokens,
            d,
            ff
        );
    }
    Ok(())
}

/// `n` texts of random vocabulary words, about `t` tokens each once tokenized (and truncated).
fn synthetic_texts(m: &Embedder, dir: &std::path::Path, seed: u64, n: usize, t: usize) -> Result<Vec<String>> {
    let words = m.vocab_words();
    if words.is_empty() {
        bail!("{}: no plain words in the vocabulary to make texts of", dir.join("tokenizer.json").display());
    }
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    Ok((0..n).map(|_| (0..t * 2).map(|_| words[(next() % words.len() as u64) as usize].as_str()).collect::<Vec<_>>().join(" ")).collect())
}

/// Every non-empty text of `column` in the Parquet files `pattern` names, in order.
fn read_texts(pattern: &str, column: &str) -> Result<Vec<String>> {
    use arrow::array::{Array, AsArray};
    let files = lidscope_data::resolve_inputs(&[pattern.to_string()])?;
    let mut texts = Vec::new();
    for path in &files {
        let reader = lidscope_data::open_parquet(path)?;
        let schema = reader.schema().clone();
        let Ok(i) = schema.index_of(column) else {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            bail!("{}: no column {column:?} (--text-column); columns: {}", path.display(), names.join(", "));
        };
        for batch in reader.build().with_context(|| format!("{}: not a readable Parquet file", path.display()))? {
            let batch = batch.with_context(|| format!("{}: reading", path.display()))?;
            let col = arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)
                .with_context(|| format!("{}: column {column:?} is not text", path.display()))?;
            let col = col.as_string::<i32>();
            texts.extend((0..col.len()).filter(|&r| col.is_valid(r) && !col.value(r).trim().is_empty()).map(|r| col.value(r).to_string()));
        }
    }
    if texts.is_empty() {
        bail!("{pattern}: no texts in column {column:?}");
    }
    Ok(texts)
}

/// Every step of the forward pass allocates its output (up to 12 MiB for MiniLM's batches), and
/// glibc maps and unmaps allocations that large each time: the kernel then zeroes fresh pages on
/// every step, about a tenth of the run. Raising the mmap threshold to its maximum (32 MiB) keeps
/// freed blocks in the heap for the next step. Only `embed` does this; other commands keep
/// glibc's defaults.
fn reuse_freed_tensors() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before the work starts, with
    // constants that glibc documents for these options.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
