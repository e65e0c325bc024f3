//! `lidscope embed`: golden parity of every fixture checkpoint with Hugging Face transformers
//! (token ids exact, every hidden state within 1e-4), truncation, batch independence, bad input, and
//! `lidscope run` on the output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Int64Array, StringArray};
use lidscope_embed::{Batching, Embedder, LayerRequest};

use crate::util::*;

pub(crate) fn model_dir(name: &str) -> PathBuf {
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

/// Embeds the golden file's texts with `m` (all layers, `batch` texts per packed forward pass)
/// and compares: token ids, tokens and special flags exactly, hidden states within 1e-4.
/// Returns the largest absolute difference.
fn check_golden(m: &Embedder, file: &str, max_length: usize, batch: usize) -> f32 {
    let all = texts();
    let (gold, dim) = golden(file);
    assert_eq!(m.dim(), dim, "{file}: dimension");
    let n_layers = gold[0].hidden.len();
    assert_eq!(m.num_hidden_states(), n_layers, "{file}: number of hidden states");
    let t: Vec<&str> = gold.iter().map(|g| all[&g.seq_id].as_str()).collect();
    let layers: Vec<usize> = (0..n_layers).collect();
    let got = m.embed(&t, &layers, max_length, per_pass(batch)).unwrap();
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

/// Checks the pre-norm entry against `tests/goldens/prenorm_<name>.golden.parquet`, made by
/// transformers with a forward hook on the last block (`tools/goldens/prenorm.py`): token ids
/// exact, `hidden_L<n>` and `hidden_L<n>_prenorm` within 1e-4, both through the library with
/// `--layers -1,prenorm` and batches of 8 texts. `texts` maps the file's seq_id to its text.
fn check_prenorm(m: &Embedder, name: &str, texts: &BTreeMap<i64, String>, max_length: usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/goldens/prenorm_{name}.golden.parquet"));
    let b = read_batches(&path);
    let n = m.config.num_layers;
    let post_col = format!("hidden_L{n}");
    let pre_col = format!("hidden_L{n}_prenorm");
    let seq = f64_column(&b, "seq_id");
    let ids = f64_column(&b, "token_id");
    let (post, dim) = embeddings(&b, &post_col);
    let (pre, _) = embeddings(&b, &pre_col);
    let mut order: Vec<i64> = Vec::new();
    for &s in &seq {
        if order.last() != Some(&(s as i64)) {
            order.push(s as i64);
        }
    }
    let t: Vec<&str> = order.iter().map(|s| texts[s].as_str()).collect();
    let layers = m.resolve_layers(&LayerRequest::parse_list("-1,prenorm").unwrap()).unwrap();
    assert_eq!(layers.iter().map(|&l| m.column_name(l)).collect::<Vec<_>>(), [post_col.clone(), pre_col.clone()]);
    let got = m.embed(&t, &layers, max_length, per_pass(8)).unwrap();
    let (mut r, mut worst, mut apart) = (0usize, 0f32, 0f32);
    for e in &got {
        for (p, id) in e.ids.iter().enumerate() {
            assert_eq!(ids[r] as u32, *id, "{name}: row {r}: token id");
            for k in 0..dim {
                let (a, b) = (e.hidden[1][p * dim + k], pre[r * dim + k]);
                assert!((a - b).abs() <= 1e-4, "{name}: row {r} {pre_col}[{k}]: {a} vs transformers {b}");
                let (c, d) = (e.hidden[0][p * dim + k], post[r * dim + k]);
                assert!((c - d).abs() <= 1e-4, "{name}: row {r} {post_col}[{k}]: {c} vs transformers {d}");
                worst = worst.max((a - b).abs());
                apart = apart.max((a - c).abs());
            }
            r += 1;
        }
    }
    assert_eq!(r, seq.len(), "{name}: rows");
    // The two entries are different states: a hook on the wrong module would give the same one.
    assert!(apart > 0.1, "{name}: {pre_col} equals {post_col} (max |diff| {apart})");
    eprintln!("{name}: {pre_col}: {r} tokens, max |diff| vs transformers {worst:.2e}");
}

/// The decoders' state before the final norm, which Hugging Face's `hidden_states` leaves out,
/// on the fixture decoders and on a real checkpoint of the grokking run (4 positions: the default
/// `--max-length` must fit it).
#[test]
fn prenorm_matches_transformers() {
    let all = texts();
    for name in ["tiny-gpt2", "tiny-llama", "tiny-qwen2"] {
        let m = Embedder::load(&model_dir(name)).unwrap();
        assert_eq!(m.prenorm_index(), Some(m.num_hidden_states()));
        check_prenorm(&m, name, &all, m.default_max_length());
    }
    let m = Embedder::load(&fixture("grokking/checkpoints/step-4900")).unwrap();
    assert_eq!(m.default_max_length(), 4, "the checkpoint has 4 positions");
    let b = read_batches(&fixture("grokking/texts.parquet"));
    let grok: BTreeMap<i64, String> = f64_column(&b, "seq_id").into_iter().map(|i| i as i64).zip(string_column(&b, "text")).collect();
    check_prenorm(&m, "grokking_step-4900", &grok, m.default_max_length());
    // Encoders have no final norm after their last block.
    let err = minilm().resolve_layers(&[LayerRequest::PreNorm]).unwrap_err().to_string();
    assert!(err.contains("prenorm") && err.contains("encoder") && err.contains("hidden_L6"), "{err}");
}

/// `--layers all,prenorm` through the CLI, on a checkpoint with 4 positions and no
/// `--max-length`: the column is named and its values are the library's.
#[test]
fn embed_cli_writes_the_prenorm_column() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("corpus");
    let ckpt = fixture("grokking/checkpoints/step-4900");
    let json = lidscope_ok(&[
        "-q", "embed", "--model", &s(&ckpt), "--texts", &s(&fixture("grokking/texts.parquet")), "--text-column", "text", "--id-columns", "seq_id",
        "--layers", "all,prenorm", "--out", &s(&out), "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["max_length"], 4, "{json}");
    assert_eq!(v["columns"], serde_json::json!(["hidden_L0", "hidden_L1", "hidden_L2", "hidden_L2_prenorm"]), "{json}");
    let b = read_batches(&out);
    let names: Vec<String> = b[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(&names[names.len() - 4..], ["hidden_L0", "hidden_L1", "hidden_L2", "hidden_L2_prenorm"]);
    assert!(names.contains(&"split".to_string()), "carried columns: {names:?}");
    assert_eq!(f64_column(&b, "seq_id").len(), 3481 * 4);
    let m = Embedder::load(&ckpt).unwrap();
    let (pre, dim) = embeddings(&b, "hidden_L2_prenorm");
    let want = m.embed(&["3 + 5 ="], &[3], 4, per_pass(1)).unwrap();
    let seq = f64_column(&b, "seq_id");
    let tb = read_batches(&fixture("grokking/texts.parquet"));
    let row = string_column(&tb, "text").iter().position(|t| t == "3 + 5 =").unwrap();
    let id = f64_column(&tb, "seq_id")[row];
    let r0 = seq.iter().position(|&x| x == id).unwrap();
    for k in 0..4 * dim {
        assert!((pre[r0 * dim + k] - want[0].hidden[0][k]).abs() <= 1e-5);
    }
    // prenorm on an encoder is refused, naming the checkpoint.
    let err = lidscope_err(&["embed", "--model", &s(&model_dir("tiny-roberta")), "--texts", &s(&fixture("grokking/texts.parquet")), "--text-column", "text", "--id-columns", "seq_id", "--layers", "prenorm", "--out", &s(&d.path().join("x"))]);
    assert!(err.contains("prenorm") && err.contains("tiny-roberta"), "{err}");
    let err = lidscope_err(&["embed", "--model", &s(&ckpt), "--texts", &s(&fixture("grokking/texts.parquet")), "--text-column", "text", "--layers", "last", "--out", &s(&d.path().join("x"))]);
    assert!(err.contains("\"last\""), "{err}");
}

/// Largest |a - b| between two embeddings of the same texts.
fn max_diff(a: &[lidscope_embed::EmbeddedText], b: &[lidscope_embed::EmbeddedText]) -> f32 {
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.ids, y.ids);
        for (hx, hy) in x.hidden.iter().zip(&y.hidden) {
            assert_eq!(hx.len(), hy.len());
            for (p, q) in hx.iter().zip(hy) {
                worst = worst.max((p - q).abs());
            }
        }
    }
    worst
}

/// `n` texts per forward pass, whatever their tokens.
fn per_pass(n: usize) -> Batching {
    Batching { texts: n, tokens: usize::MAX }
}

/// Packing texts into one pass does not change a token's vector: one text per forward pass
/// against 16 texts of different lengths per pass, and against passes cut by a token budget
/// (encoder and decoders, every layer).
#[test]
fn batching_does_not_change_vectors() {
    let all = texts();
    let t: Vec<&str> = all.values().take(24).map(|s| s.as_str()).collect();
    let tiny: Vec<Embedder> = ["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-roberta"].iter().map(|n| Embedder::load(&model_dir(n)).unwrap()).collect();
    let models: Vec<&Embedder> = std::iter::once(minilm()).chain(tiny.iter()).collect();
    for m in models {
        let layers: Vec<usize> = (0..m.num_hidden_states()).collect();
        let one = m.embed(&t, &layers, 512, per_pass(1)).unwrap();
        let many = m.embed(&t, &layers, 512, per_pass(16)).unwrap();
        let d = max_diff(&one, &many);
        eprintln!("{}: batch 1 vs 16: max |diff| {d:.2e}", m.dir.display());
        assert!(d <= 1e-5, "{}: batch 1 vs 16 differ by {d}", m.dir.display());
        let budget = m.embed(&t, &layers, 512, Batching { texts: 256, tokens: 100 }).unwrap();
        let d = max_diff(&one, &budget);
        assert!(d <= 1e-5, "{}: batch 1 vs passes of 100 tokens differ by {d}", m.dir.display());
    }
}

/// Writes the golden texts (or the first `n`) with an extra column to carry.
pub(crate) fn write_texts(path: &Path, n: usize) -> usize {
    let all = texts();
    let rows: Vec<(i64, &String)> = all.iter().take(n).map(|(k, v)| (*k, v)).collect();
    let b = batch(vec![
        ("doc", Arc::new(Int64Array::from(rows.iter().map(|r| r.0 * 10).collect::<Vec<_>>())) as ArrayRef),
        ("text", Arc::new(StringArray::from(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())) as ArrayRef),
        ("topic", Arc::new(StringArray::from(rows.iter().map(|r| format!("t{}", r.0 % 3)).collect::<Vec<_>>())) as ArrayRef),
    ]);
    write_parquet(path, &b);
    rows.len()
}

/// The CLI end to end on a decoder: columns, carried columns, layer numbering, values, and
/// `lidscope run` on the output.
#[test]
fn embed_cli_writes_a_corpus_that_run_reads() {
    let d = tempfile::tempdir().unwrap();
    let tx = d.path().join("texts.parquet");
    write_texts(&tx, 12);
    let out = d.path().join("corpus");
    let model = model_dir("tiny-gpt2");
    let stdout = lidscope_ok(&["embed", "--model", &s(&model), "--texts", &s(&tx), "--text-column", "text", "--out", &s(&out), "--layers", "0,-1", "--batch-size", "5"]);
    assert!(stdout.contains("12 texts"), "{stdout}");
    let b = read_batches(&out);
    let names: Vec<String> = b[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["seq_id", "position", "token_id", "token", "special", "doc", "topic", "hidden_L0", "hidden_L3"]);
    // Same values as the library (checked against the golden files above).
    let m = Embedder::load(&model).unwrap();
    let all = texts();
    let t: Vec<&str> = all.values().take(12).map(|s| s.as_str()).collect();
    let want = m.embed(&t, &[0, 3], 512, per_pass(1)).unwrap();
    let seq = f64_column(&b, "seq_id");
    let ids = f64_column(&b, "token_id");
    let (h3, dim) = embeddings(&b, "hidden_L3");
    let mut r = 0;
    for (i, e) in want.iter().enumerate() {
        for (p, id) in e.ids.iter().enumerate() {
            assert_eq!(seq[r] as usize, i);
            assert_eq!(ids[r] as u32, *id);
            for k in 0..dim {
                assert!((h3[r * dim + k] - e.hidden[1][p * dim + k]).abs() <= 1e-5);
            }
            r += 1;
        }
    }
    assert_eq!(r, seq.len());
    let topic = string_column(&b, "topic");
    assert_eq!(topic[0], "t0");
    // The hidden states are written plain (what later runs read fastest), the rest with zstd.
    {
        use parquet::basic::Compression;
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let part = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "parquet")).unwrap();
        let meta = SerializedFileReader::new(std::fs::File::open(&part).unwrap()).unwrap().metadata().clone();
        for c in meta.row_group(0).columns() {
            let name = c.column_path().string();
            if name.starts_with("hidden_L") {
                assert_eq!(c.compression(), Compression::UNCOMPRESSED, "{name}");
                assert!(c.dictionary_page_offset().is_none(), "{name}: no dictionary");
            } else {
                assert!(matches!(c.compression(), Compression::ZSTD(_)), "{name}: {:?}", c.compression());
            }
        }
    }
    // Existing output is kept without --overwrite.
    let err = lidscope_err(&["embed", "--model", &s(&model), "--texts", &s(&tx), "--text-column", "text", "--out", &s(&out)]);
    assert!(err.contains("--overwrite"), "{err}");
    lidscope_ok(&["-q", "embed", "--model", &s(&model), "--texts", &s(&tx), "--text-column", "text", "--out", &s(&out), "--overwrite", "--id-columns", "doc"]);
    let b = read_batches(&out);
    assert_eq!(b[0].schema().field(0).name(), "doc");
    assert_eq!(b[0].schema().fields().last().unwrap().name(), "hidden_L3", "default: the last layer");
    // `lidscope run` reads it as is.
    let res = d.path().join("res");
    let json = lidscope_ok(&["-q", "run", "--corpus", &s(&out), "--embedding-column", "hidden_L3", "--id-columns", "doc,position", "--k", "10", "--reference-size", "200", "--pool", "300", "--out", &s(&res), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["rows"].as_u64().unwrap() as usize == seq.len(), "{json}");
}

/// Bad input: a clear error naming the file and the problem, nothing written.
#[test]
fn embed_rejects_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let tx = d.path().join("texts.parquet");
    write_texts(&tx, 3);
    let model = s(&model_dir("tiny-llama"));
    let out = d.path().join("out");
    let o = s(&out);
    let t = s(&tx);
    let err = lidscope_err(&["embed", "--model", &model, "--texts", &t, "--text-column", "body", "--out", &o]);
    assert!(err.contains("texts.parquet") && err.contains("\"body\""), "{err}");
    let err = lidscope_err(&["embed", "--model", &model, "--texts", &t, "--text-column", "text", "--out", &o, "--layers", "4"]);
    assert!(err.contains("layer 4 is out of range") && err.contains("0..=3"), "{err}");
    let err = lidscope_err(&["embed", "--model", &model, "--texts", &t, "--text-column", "text", "--out", &o, "--id-columns", "nope"]);
    assert!(err.contains("\"nope\""), "{err}");
    // An empty text.
    let empty = d.path().join("empty.parquet");
    write_parquet(&empty, &batch(vec![("text", Arc::new(StringArray::from(vec!["a text", ""])) as ArrayRef)]));
    let err = lidscope_err(&["embed", "--model", &model, "--texts", &s(&empty), "--text-column", "text", "--out", &o]);
    assert!(err.contains("empty.parquet") && err.contains("row 1") && err.contains("empty"), "{err}");
    // A missing shard.
    let broken = d.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for e in std::fs::read_dir(model_dir("tiny-llama")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains("00003") {
            std::fs::copy(&p, broken.join(&name)).unwrap();
        }
    }
    let err = lidscope_err(&["embed", "--model", &s(&broken), "--texts", &t, "--text-column", "text", "--out", &o]);
    assert!(err.contains("model-00003-of-00006.safetensors") && err.contains("missing"), "{err}");
    // An unsupported architecture.
    let cfg = std::fs::read_to_string(broken.join("config.json")).unwrap().replace("\"llama\"", "\"mamba\"");
    std::fs::write(broken.join("config.json"), cfg).unwrap();
    let err = lidscope_err(&["embed", "--model", &s(&broken), "--texts", &t, "--text-column", "text", "--out", &o]);
    assert!(err.contains("\"mamba\"") && err.contains("bert, roberta, gpt2, llama, qwen2"), "{err}");
    // An unreadable checkpoint.
    let err = lidscope_err(&["embed", "--model", &s(&d.path().join("nothing")), "--texts", &t, "--text-column", "text", "--out", &o]);
    assert!(err.contains("nothing"), "{err}");
    // A seq_id column in the texts needs naming.
    let b = read_batches(&fixture("minilm_fortunes_texts.parquet"));
    let err = lidscope_err(&["embed", "--model", &model, "--texts", &s(&fixture("minilm_fortunes_texts.parquet")), "--text-column", "text", "--out", &o]);
    assert!(err.contains("--id-columns seq_id"), "{err}");
    drop(b);
    assert!(!out.exists(), "nothing is written on failure");
    let leftovers: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
