//! `lidscope embed`: texts + a Hugging Face checkpoint -> a corpus of per-token hidden states.

use anyhow::{bail, Result};
use lidscope_embed::{embed_corpus, EmbedOptions, EmbedProgress, EmbedSummary, Embedder, LayerRequest};
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
        batch_size: a.batch_size as usize,
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

/// `lidscope bench --embed <MODEL_DIR>`: tokens per second of the forward pass on synthetic texts of
/// 128 tokens (256 texts, batches of 16, the last layer), beside the machine's sgemm rate and
/// candle's rate on the feed-forward product of such a batch.
pub fn bench(a: &crate::args::BenchArgs) -> Result<()> {
    reuse_freed_tensors();
    let dir = a.embed.as_ref().expect("checked by the caller");
    let (texts_n, t, batch) = (256usize, 128usize, 16usize);
    let m = Embedder::load(dir)?;
    let words = m.vocab_words();
    if words.is_empty() {
        bail!("{}: no plain words in the vocabulary to make texts of", dir.join("tokenizer.json").display());
    }
    let mut s = a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let texts: Vec<String> = (0..texts_n).map(|_| (0..t * 2).map(|_| words[(next() % words.len() as u64) as usize].as_str()).collect::<Vec<_>>().join(" ")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let last = m.num_hidden_states() - 1;
    let d = m.dim();
    let ff = m.config.intermediate_size;
    let sgemm = lidscope_kernel::sgemm_gflops(4096, d.max(64), 3);
    let ffn = lidscope_embed::candle_matmul_gflops(batch * t, d, ff, 5);
    m.embed(&refs[..batch], &[last], t, batch)?; // warm-up
    let started = std::time::Instant::now();
    let out = m.embed(&refs, &[last], t, batch)?;
    let secs = started.elapsed().as_secs_f64();
    let tokens: usize = out.iter().map(|e| e.ids.len()).sum();
    let gflops = m.flops_per_token(t) * tokens as f64 / secs / 1e9;
    let threads = rayon::current_num_threads();
    let v = serde_json::json!({
        "model": dir.display().to_string(), "texts": texts_n, "tokens": tokens, "batch_size": batch, "seconds": secs,
        "tokens_per_second": tokens as f64 / secs, "forward_gflops": gflops, "sgemm_gflops": sgemm,
        "candle_ffn_matmul_gflops": ffn, "ffn_shape": [batch * t, d, ff], "threads": threads,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "embed: {tokens} tokens in {secs:.2} s = {:.0} tokens/s ({gflops:.1} GFLOP/s in matrix products) on {threads} threads; \
             sgemm rate {sgemm:.1} GFLOP/s (4096 x 4096 x {}); candle's {}x{}x{} product {ffn:.1} GFLOP/s",
            tokens as f64 / secs,
            d.max(64),
            batch * t,
            d,
            ff
        );
    }
    Ok(())
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
