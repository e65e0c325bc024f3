//! Golden parity with the reference implementation (scikit-dimension), read from
//! `../shared/fixtures` at test time, at the fixtures README's tolerances.

use std::collections::HashMap;

use arrow::array::{ArrayRef, Int32Array, Int64Array};
use lidscope_kernel::{global_twonn, int8_search_available, pointwise_lid, Estimator, KnnIndex, LidConfig, Rows, SearchStrategy};

use crate::util::*;

/// The mixture fixtures: the set is its own reference, each point excluded from its own
/// neighbourhood.
fn kernel_self_reference(file: &str, k: usize, estimator: Estimator, golden: &str, strategy: SearchStrategy) {
    let b = read_batches(&fixture(file));
    let (x, dim) = embeddings(&b, "embedding");
    let rows = Rows::from_flat(&x, dim).unwrap();
    let index = KnnIndex::new(rows, strategy).unwrap();
    let me: Vec<Option<u32>> = (0..rows.len() as u32).map(Some).collect();
    let cfg = LidConfig { k, estimator, discard_fraction: 0.1 };
    let (lids, _) = pointwise_lid(&index, rows, &cfg, Some(&me)).unwrap();
    let got: Vec<f64> = lids.iter().map(|p| p.lid).collect();
    assert_golden(&format!("{file} {golden} ({strategy:?})"), &got, &f64_column(&b, golden));
}

#[test]
fn kernel_mixture_small_k16() {
    for s in product_paths(32).into_iter().chain([SearchStrategy::KdTree]) {
        kernel_self_reference("mixture_small.parquet", 16, Estimator::TwoNN, "lid_k16", s);
    }
}

/// Every search path this CPU runs besides the k-d tree: float32 products, and int8 and int16
/// candidates (and both levels together) where the CPU has them (where it has not, asking for them must fail with a clear
/// error).
fn product_paths(dim: usize) -> Vec<SearchStrategy> {
    if int8_search_available(dim) {
        vec![SearchStrategy::Gemm, SearchStrategy::Int8, SearchStrategy::Int16, SearchStrategy::Int8Fine]
    } else {
        for s in [SearchStrategy::Int8, SearchStrategy::Int16, SearchStrategy::Int8Fine] {
            let err = KnnIndex::new(Rows::from_flat(&vec![0.0; dim], dim).unwrap(), s).err().expect("integer search refused");
            assert!(err.to_string().contains("AVX512_VNNI"), "{err}");
        }
        vec![SearchStrategy::Gemm]
    }
}

#[test]
fn kernel_mixture_small_k64() {
    for s in product_paths(32) {
        kernel_self_reference("mixture_small.parquet", 64, Estimator::TwoNN, "lid_k64", s);
    }
}

#[test]
fn kernel_mixture_small_mle_k64() {
    for s in product_paths(32) {
        kernel_self_reference("mixture_small.parquet", 64, Estimator::TwoNNMle, "lid_mle_k64", s);
    }
}

#[test]
fn kernel_mixture_wide_k128() {
    for s in product_paths(256) {
        kernel_self_reference("mixture_wide.parquet", 128, Estimator::TwoNN, "lid_k128", s);
    }
}

#[test]
fn kernel_global_twonn() {
    for name in ["mixture_small", "mixture_wide"] {
        let b = read_batches(&fixture(&format!("{name}.parquet")));
        let (x, dim) = embeddings(&b, "embedding");
        let index = KnnIndex::new(Rows::from_flat(&x, dim).unwrap(), SearchStrategy::Gemm).unwrap();
        let want = fixture_json(&format!("{name}.json"))["global_twonn"].as_f64().unwrap();
        assert_rel(name, global_twonn(&index, 0.1, Estimator::TwoNN).unwrap(), want, 1e-4);
    }
}

/// minilm_fortunes: the golden file flags the reference rows; the corpus is in the same order.
struct Minilm {
    corpus: Vec<f32>,
    dim: usize,
    in_reference: Vec<bool>,
    lid: Vec<f64>,
    seq: Vec<f64>,
    pos: Vec<f64>,
}

fn minilm() -> Minilm {
    let c = read_batches(&fixture("minilm_fortunes.parquet"));
    let g = read_batches(&fixture("minilm_fortunes.golden.parquet"));
    let (corpus, dim) = embeddings(&c, "hidden_L6");
    let rows = f64_column(&g, "row");
    assert!(rows.iter().enumerate().all(|(i, r)| *r as usize == i), "golden rows are in corpus order");
    Minilm {
        corpus,
        dim,
        in_reference: bool_column(&g, "in_reference"),
        lid: f64_column(&g, "lid_k128"),
        seq: f64_column(&c, "seq_id"),
        pos: f64_column(&c, "position"),
    }
}

#[test]
fn kernel_minilm_k128_against_flagged_reference() {
    let m = minilm();
    let ref_rows: Vec<usize> = (0..m.in_reference.len()).filter(|i| m.in_reference[*i]).collect();
    let refs: Vec<f32> = ref_rows.iter().flat_map(|i| m.corpus[i * m.dim..(i + 1) * m.dim].iter().copied()).collect();
    let position: HashMap<usize, u32> = ref_rows.iter().enumerate().map(|(j, i)| (*i, j as u32)).collect();
    let exclude: Vec<Option<u32>> = (0..m.lid.len()).map(|i| position.get(&i).copied()).collect();
    for s in product_paths(m.dim) {
        let index = KnnIndex::new(Rows::from_flat(&refs, m.dim).unwrap(), s).unwrap();
        let (lids, _) = pointwise_lid(&index, Rows::from_flat(&m.corpus, m.dim).unwrap(), &LidConfig::default(), Some(&exclude)).unwrap();
        let got: Vec<f64> = lids.iter().map(|p| p.lid).collect();
        assert_golden(&format!("minilm lid_k128 ({s:?})"), &got, &m.lid);
    }
    let index = KnnIndex::new(Rows::from_flat(&refs, m.dim).unwrap(), SearchStrategy::Auto).unwrap();
    let (lids, _) = pointwise_lid(&index, Rows::from_flat(&m.corpus, m.dim).unwrap(), &LidConfig::default(), Some(&exclude)).unwrap();
    let got: Vec<f64> = lids.iter().map(|p| p.lid).collect();
    let want = fixture_json("minilm_fortunes.golden.json");
    assert_rel("minilm mean_lid_all", mean(&got), want["mean_lid_all"].as_f64().unwrap(), 1e-4);
    assert_rel("minilm global", global_twonn(&index, 0.1, Estimator::TwoNN).unwrap(), want["global_twonn_reference"].as_f64().unwrap(), 1e-4);
}

/// Runs the CLI and returns (output lids in corpus order, manifest).
fn cli_run(args: &[&str], dir: &std::path::Path) -> (Vec<f64>, serde_json::Value) {
    let out = dir.join("out");
    let mut all: Vec<&str> = args.to_vec();
    let out_s = out.display().to_string();
    all.extend(["--out", &out_s]);
    lidscope_ok(&all);
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    (f64_column(&read_batches(&out.join("data")), "lid"), manifest)
}

#[test]
fn cli_mixture_fixtures() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("mixture_small", "16", "twonn", "lid_k16"),
        ("mixture_small", "64", "twonn", "lid_k64"),
        ("mixture_small", "64", "twonn-mle", "lid_mle_k64"),
        ("mixture_wide", "128", "twonn", "lid_k128"),
    ];
    for (name, k, est, golden) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = fixture(&format!("{name}.parquet"));
        let f = file.display().to_string();
        // A sample larger than the set is the whole set: every row is its own reference row.
        let (got, m) = cli_run(
            &["-q", "run", "--corpus", &f, "--embedding-column", "embedding", "--id-columns", "row_id", "--k", k, "--estimator", est,
              "--reference-size", "100000", "--pool", "100000"],
            dir.path(),
        );
        let want = f64_column(&read_batches(&file), golden);
        assert_golden(&format!("cli {name} {golden}"), &got, &want);
        assert_eq!(m["rows"].as_u64().unwrap() as usize, want.len());
        assert_rel("manifest mean_lid", m["mean_lid"].as_f64().unwrap(), mean(&got), 1e-12);
        let json = fixture_json(&format!("{name}.json"));
        assert_rel("manifest global_twonn", m["global_twonn"].as_f64().unwrap(), json["global_twonn"].as_f64().unwrap(), 1e-4);
        assert_eq!(m["reference_rows"].as_u64().unwrap() as usize, want.len());
    }
}

/// The minilm fixture's flagged reference rows as a `--reference` file in `dir`: their identity and
/// vectors, in corpus order.
pub(crate) fn minilm_reference_file(dir: &std::path::Path) -> std::path::PathBuf {
    let m = minilm();
    let idx: Vec<usize> = (0..m.in_reference.len()).filter(|i| m.in_reference[*i]).collect();
    let seq: ArrayRef = std::sync::Arc::new(Int64Array::from_iter_values(idx.iter().map(|i| m.seq[*i] as i64)));
    let pos: ArrayRef = std::sync::Arc::new(Int32Array::from_iter_values(idx.iter().map(|i| m.pos[*i] as i32)));
    let vecs: Vec<f32> = idx.iter().flat_map(|i| m.corpus[i * m.dim..(i + 1) * m.dim].iter().copied()).collect();
    let ref_path = dir.join("reference.parquet");
    write_parquet(&ref_path, &batch(vec![("seq_id", seq), ("position", pos), ("hidden_L6", fsl(vecs, m.dim))]));
    ref_path
}

#[test]
fn cli_minilm_against_flagged_reference() {
    let m = minilm();
    let dir = tempfile::tempdir().unwrap();
    let idx: Vec<usize> = (0..m.in_reference.len()).filter(|i| m.in_reference[*i]).collect();
    let ref_path = minilm_reference_file(dir.path());
    let corpus = fixture("minilm_fortunes.parquet").display().to_string();
    let r = ref_path.display().to_string();
    let (got, manifest) = cli_run(
        &["-q", "run", "--corpus", &corpus, "--embedding-column", "hidden_L6", "--id-columns", "seq_id,position", "--reference", &r],
        dir.path(),
    );
    assert_golden("cli minilm lid_k128", &got, &m.lid);
    let want = fixture_json("minilm_fortunes.golden.json");
    assert_rel("global", manifest["global_twonn"].as_f64().unwrap(), want["global_twonn_reference"].as_f64().unwrap(), 1e-4);
    assert_rel("mean", manifest["mean_lid"].as_f64().unwrap(), want["mean_lid_all"].as_f64().unwrap(), 1e-4);
    assert_eq!(manifest["reference_rows"].as_u64(), Some(idx.len() as u64));
    assert_eq!(manifest["k"].as_u64(), Some(128));
}

/// The fixture's rule for its reference (non-special tokens) through `--exclude-special`: a
/// sample of our own seed, so the values are not the golden ones, but no special token is a
/// reference row, every token (special ones included) is measured, and the manifest says so.
#[test]
fn cli_minilm_exclude_special_keeps_special_tokens_out_of_the_sample() {
    let corpus = fixture("minilm_fortunes.parquet");
    let c = read_batches(&corpus);
    let special: HashMap<(i64, i64), bool> = f64_column(&c, "seq_id")
        .iter()
        .zip(f64_column(&c, "position"))
        .zip(bool_column(&c, "special"))
        .map(|((q, p), sp)| ((*q as i64, p as i64), sp))
        .collect();
    let specials_in = |dir: &std::path::Path| {
        let r = read_batches(&dir.join("out/reference.parquet"));
        let keys: Vec<(i64, i64)> =
            f64_column(&r, "seq_id").iter().zip(f64_column(&r, "position")).map(|(q, p)| (*q as i64, p as i64)).collect();
        (keys.iter().filter(|k| special[k]).count(), keys.len())
    };
    let f = s(&corpus);
    let args = ["-q", "run", "--corpus", &f, "--embedding-column", "hidden_L6", "--id-columns", "seq_id,position", "--reference-size", "4000", "--pool", "13192"];
    let (with, without) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (lid, manifest) = cli_run(&[&args[..], &["--exclude-special"]].concat(), with.path());
    let (lid_all, plain) = cli_run(&args, without.path());
    assert_eq!(specials_in(with.path()), (0, 4000));
    let (n, rows) = specials_in(without.path());
    assert!(n > 0 && rows == 4000, "without the flag the sample holds special tokens like any other ({n})");
    assert_eq!(lid.len(), special.len(), "special tokens are still measured");
    assert_eq!(manifest["sample_exclude"], "special");
    assert!(plain.get("sample_exclude").is_none());
    // A sample of other tokens gives other values: the flag reached the sample.
    assert_ne!(lid, lid_all);
}
