//! `lidscope embed`: golden parity of every fixture checkpoint with Hugging Face transformers
//! (token ids exact, every hidden state within 1e-4), truncation, batch independence, bad input, and
//! `lidscope run` on the output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{Int64Array, StringArray};
use lidscope_embed::Embedder;

use crate::util::*;

fn model_dir(name: &str) -> PathBuf {
    fixture("embed/models").join(name)
}

/// MiniLM is 91 MB: loaded once for every test that needs it.
fn minilm() -> &'static Embedder {
    static M: OnceLock<Embedder> = OnceLock::new();
    M.get_or_init(|| Embedder::load(&model_dir("all-MiniLM-L6-v2")).unwrap())
}

/// The fixture texts by seq_id.
fn texts() -> BTreeMap<i64, String> {
    let b = read_batches(&fixture("minilm_fortunes_texts.parquet"));
    let ids = f64_column(&b, "seq_id");
    let t = string_column(&b, "text");
    ids.into_iter().map(|i| i as i64).zip(t).collect()
}

struct GoldenText {
    seq_id: i64,
    ids: Vec<u32>,
    tokens: Vec<String>,
    special: Vec<bool>,
    /// Per hidden-state index: rows x dim.
    hidden: Vec<Vec<f32>>,
}

fn golden(file: &str) -> (Vec<GoldenText>, usize) {
    let b = read_batches(&fixture(&format!("embed/{file}")));
    let seq = f64_column(&b, "seq_id");
    let pos = f64_column(&b, "position");
    let ids = f64_column(&b, "token_id");
    let tokens = string_column(&b, "token");
    let special = bool_column(&b, "special");
    let schema = b[0].schema();
    let n_layers = schema.fields().iter().filter(|f| f.name().starts_with("hidden_L")).count();
    let mut layers = Vec::new();
    let mut dim = 0;
    for l in 0..n_layers {
        let (v, d) = embeddings(&b, &format!("hidden_L{l}"));
        dim = d;
        layers.push(v);
    }
    let mut out: Vec<GoldenText> = Vec::new();
    for r in 0..seq.len() {
        let s = seq[r] as i64;
        if out.last().is_none_or(|g| g.seq_id != s) {
            assert_eq!(pos[r], 0.0, "{file}: row {r}: a text starts at position 0");
            out.push(GoldenText { seq_id: s, ids: vec![], tokens: vec![], special: vec![], hidden: vec![Vec::new(); n_layers] });
        }
        let g = out.last_mut().unwrap();
        g.ids.push(ids[r] as u32);
        g.tokens.push(tokens[r].clone());
        g.special.push(special[r]);
        for (l, h) in layers.iter().enumerate() {
            g.hidden[l].extend_from_slice(&h[r * dim..(r + 1) * dim]);
        }
    }
    (out, dim)
}

/// Embeds the golden file's texts with `m` (all layers, `batch` texts per forward pass, with
/// padding) and compares: token ids, tokens and special flags exactly, hidden states within 1e-4.
/// Returns the largest absolute difference.
fn check_golden(m: &Embedder, file: &str, max_length: usize, batch: usize) -> f32 {
    let all = texts();
    let (gold, dim) = golden(file);
    assert_eq!(m.dim(), dim, "{file}: dimension");
    let n_layers = gold[0].hidden.len();
    assert_eq!(m.num_hidden_states(), n_layers, "{file}: number of hidden states");
    let t: Vec<&str> = gold.iter().map(|g| all[&g.seq_id].as_str()).collect();
    let layers: Vec<usize> = (0..n_layers).collect();
    let got = m.embed(&t, &layers, max_length, batch).unwrap();
    let mut worst = 0f32;
    for (g, e) in gold.iter().zip(&got) {
        assert_eq!(e.ids, g.ids, "{file}: seq {}: token ids", g.seq_id);
        assert_eq!(e.tokens, g.tokens, "{file}: seq {}: tokens", g.seq_id);
        assert_eq!(e.special, g.special, "{file}: seq {}: special", g.seq_id);
        for l in 0..n_layers {
            for (i, (a, b)) in e.hidden[l].iter().zip(&g.hidden[l]).enumerate() {
                let d = (a - b).abs();
                assert!(d <= 1e-4, "{file}: seq {} token {} hidden_L{l}[{}]: {a} vs golden {b}", g.seq_id, i / dim, i % dim);
                worst = worst.max(d);
            }
            assert_eq!(e.hidden[l].len(), g.hidden[l].len());
        }
    }
    eprintln!("{file}: {} texts, max |diff| {worst:.2e}", gold.len());
    worst
}

#[test]
fn minilm_matches_transformers() {
    let m = minilm();
    check_golden(m, "embed_minilm.golden.parquet", 512, 8);
    check_golden(m, "embed_minilm_max16.golden.parquet", 16, 8);
}

#[test]
fn gpt2_matches_transformers() {
    let m = Embedder::load(&model_dir("tiny-gpt2")).unwrap();
    check_golden(&m, "embed_gpt2.golden.parquet", 512, 8);
    check_golden(&m, "embed_gpt2_max16.golden.parquet", 16, 8);
}

#[test]
fn roberta_matches_transformers() {
    let m = Embedder::load(&model_dir("tiny-roberta")).unwrap();
    check_golden(&m, "embed_roberta.golden.parquet", 512, 8);
}

#[test]
fn llama_matches_transformers() {
    let m = Embedder::load(&model_dir("tiny-llama")).unwrap();
    check_golden(&m, "embed_llama.golden.parquet", 512, 8);
}

#[test]
fn qwen2_matches_transformers() {
    let m = Embedder::load(&model_dir("tiny-qwen2")).unwrap();
    check_golden(&m, "embed_qwen2.golden.parquet", 512, 8);
}
