//! The CLI's contracts: one output row per corpus row, reference sampling by identity, manifests,
//! overwrite, determinism, the demo and the help text.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};

use crate::util::*;

/// A corpus of `files` files with ids (seq_id, position), a token column and 24-d vectors near a
/// 3-d subspace; `shift` moves every vector (another "checkpoint" of the same tokens), and
/// `reverse` stores rows in reverse order.
fn write_corpus(dir: &Path, files: usize, rows_per_file: usize, shift: f32, reverse: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let dim = 24;
    for f in 0..files {
        let mut rows: Vec<usize> = (f * rows_per_file..(f + 1) * rows_per_file).collect();
        if reverse {
            rows.reverse();
        }
        let seq: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| (r / 10) as i64)));
        let pos: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| (r % 10) as i64)));
        let tok: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| format!("t{}", r % 7))));
        let vecs: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                let (a, b, c) = ((*r as f32 * 0.618).fract(), (*r as f32 * 0.414).fract(), (*r as f32 * 0.732).fract());
                (0..dim).map(move |p| shift + a * (p as f32).sin() + b * (p as f32 * 0.5).cos() + c * ((p % 5) as f32 * 0.3))
            })
            .collect();
        let name = dir.join(format!("part-{f}.parquet"));
        write_parquet(&name, &batch(vec![("seq_id", seq), ("position", pos), ("token", tok), ("emb", fsl(vecs, dim))]));
    }
}

fn run(corpus: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let c = corpus.display().to_string();
    let o = out.display().to_string();
    let mut args = vec!["-q", "run", "--corpus", &c, "--embedding-column", "emb", "--out", &o, "--k", "10", "--json"];
    args.extend(extra);
    serde_json::from_str(&lidscope_ok(&args)).unwrap()
}

fn identities(dir: &Path) -> Vec<(i64, i64)> {
    let b = read_batches(dir);
    f64_column(&b, "seq_id").into_iter().zip(f64_column(&b, "position")).map(|(s, p)| (s as i64, p as i64)).collect()
}

#[test]
fn one_output_row_per_corpus_row_with_carried_columns() {
    let d = tempfile::tempdir().unwrap();
    write_corpus(&d.path().join("c"), 3, 70, 5.0, false);
    let m = run(&d.path().join("c"), &d.path().join("out"), &["--id-columns", "seq_id,position", "--batch-rows", "32", "--reference-size", "100"]);
    assert_eq!(m["rows"].as_u64(), Some(210));
    assert_eq!(m["files"].as_array().unwrap().len(), 3);
    let out = read_batches(&d.path().join("out/data"));
    let schema = out[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["seq_id", "position", "token", "lid", "r1", "r2", "rk"]);
    let got: Vec<(i64, i64)> = identities(&d.path().join("out/data"));
    let want: Vec<(i64, i64)> = identities(&d.path().join("c"));
    assert_eq!(got, want, "every corpus row once, in corpus order");
    let (r1, r2, rk) = (f64_column(&out, "r1"), f64_column(&out, "r2"), f64_column(&out, "rk"));
    assert!(r1.iter().zip(&r2).zip(&rk).all(|((a, b), c)| 0.0 < *a && a <= b && b <= c));
    let lid = f64_column(&out, "lid");
    assert_rel("mean_lid", m["mean_lid"].as_f64().unwrap(), mean(&lid), 1e-12);
    // The reference file: identity columns + embedding, as many rows as the manifest says.
    let r = read_batches(&d.path().join("out/reference.parquet"));
    assert_eq!(r.iter().map(|b| b.num_rows()).sum::<usize>(), 100);
    assert_eq!(m["reference_rows"].as_u64(), Some(100));
    assert!(m["reference_sha256"].as_str().unwrap().len() == 64);
    assert!(m["global_twonn"].as_f64().unwrap().is_finite());
}

#[test]
fn sample_is_chosen_by_identity_across_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    write_corpus(&d.path().join("ckpt1"), 2, 100, 1.0, false);
    // The same tokens with other vectors, other file split and reversed row order.
    write_corpus(&d.path().join("ckpt2"), 4, 50, 9.0, true);
    let args = ["--id-columns", "seq_id,position", "--reference-size", "40", "--pool", "80", "--seed", "3"];
    run(&d.path().join("ckpt1"), &d.path().join("o1"), &args);
    run(&d.path().join("ckpt2"), &d.path().join("o2"), &args);
    let r1: BTreeSet<(i64, i64)> = identities(&d.path().join("o1/reference.parquet")).into_iter().collect();
    let r2: BTreeSet<(i64, i64)> = identities(&d.path().join("o2/reference.parquet")).into_iter().collect();
    assert_eq!(r1.len(), 40);
    assert_eq!(r1, r2, "every checkpoint gets the same reference tokens");
    // Another seed, another sample.
    run(&d.path().join("ckpt1"), &d.path().join("o3"), &["--id-columns", "seq_id,position", "--reference-size", "40", "--pool", "80", "--seed", "4"]);
    let r3: BTreeSet<(i64, i64)> = identities(&d.path().join("o3/reference.parquet")).into_iter().collect();
    assert_ne!(r1, r3);
}

#[test]
fn same_result_for_any_thread_count_and_batch_size() {
    let d = tempfile::tempdir().unwrap();
    write_corpus(&d.path().join("c"), 2, 150, 3.0, false);
    run(&d.path().join("c"), &d.path().join("a"), &["--threads", "1", "--batch-rows", "7"]);
    run(&d.path().join("c"), &d.path().join("b"), &["--threads", "2"]);
    let (a, b) = (read_batches(&d.path().join("a/data")), read_batches(&d.path().join("b/data")));
    for col in ["lid", "r1", "r2", "rk"] {
        assert_eq!(f64_column(&a, col), f64_column(&b, col), "{col}");
    }
}

#[test]
fn reference_file_without_identity_warns_on_zero_distances() {
    let d = tempfile::tempdir().unwrap();
    write_corpus(&d.path().join("c"), 1, 120, 2.0, false);
    // The corpus itself as reference, without --id-columns: rows find themselves at distance 0.
    let corpus = d.path().join("c/part-0.parquet");
    let (c, o, r) = (corpus.display().to_string(), d.path().join("o").display().to_string(), corpus.display().to_string());
    let out = lidscope(&["run", "--corpus", &c, "--embedding-column", "emb", "--out", &o, "--k", "10", "--reference", &r]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("zero-distance"), "{stderr}");
    // With identities the same run excludes each row from its own neighbourhood.
    let o2 = d.path().join("o2").display().to_string();
    let out = lidscope(&["run", "--corpus", &c, "--embedding-column", "emb", "--out", &o2, "--k", "10", "--reference", &r, "--id-columns", "seq_id,position"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("zero-distance"));
    assert!(f64_column(&read_batches(&d.path().join("o2/data")), "r1").iter().all(|v| *v > 0.0));
}

/// A reference file of other rows, measured by enough corpus rows for the reference rows' own
/// neighbour lists to pay: the global TwoNN takes each reference row's two nearest other rows
/// from those lists, and equals the kernel's own search over the reference to the bit.
#[test]
fn global_twonn_of_a_reference_file_equals_the_kernels() {
    let d = tempfile::tempdir().unwrap();
    write_corpus(&d.path().join("c"), 2, 300, 0.0, false);
    let (n, dim) = (150, 24);
    let vecs = vectors(n, dim, 11);
    let seq: ArrayRef = Arc::new(Int64Array::from_iter_values((0..n).map(|i| 1_000_000 + i as i64)));
    let pos: ArrayRef = Arc::new(Int64Array::from_iter_values((0..n).map(|_| 0)));
    let reference = d.path().join("reference.parquet");
    write_parquet(&reference, &batch(vec![("seq_id", seq), ("position", pos), ("emb", fsl(vecs.clone(), dim))]));
    let r = reference.display().to_string();
    let m = run(&d.path().join("c"), &d.path().join("out"), &["--id-columns", "seq_id,position", "--reference", &r]);
    let index = lidscope_kernel::KnnIndex::new(lidscope_kernel::Rows::try_new(&vecs, n, dim).unwrap(), lidscope_kernel::SearchStrategy::Auto).unwrap();
    let want = lidscope_kernel::global_twonn(&index, 0.1, lidscope_kernel::Estimator::TwoNN).unwrap();
    assert_eq!(m["global_twonn"].as_f64().unwrap().to_bits(), want.to_bits(), "{} against {want}", m["global_twonn"]);
}

#[test]
fn overwrite_replaces_a_result() {
    let d = tempfile::tempdir().unwrap();
    write_corpus(&d.path().join("c"), 1, 60, 2.0, false);
    let a = run(&d.path().join("c"), &d.path().join("o"), &[]);
    let b = run(&d.path().join("c"), &d.path().join("o"), &["--overwrite", "--discard-fraction", "0.2"]);
    assert_eq!(a["discard_fraction"].as_f64(), Some(0.1));
    assert_eq!(b["discard_fraction"].as_f64(), Some(0.2));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(d.path().join("o/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["discard_fraction"].as_f64(), Some(0.2));
    assert_eq!(f64_column(&read_batches(&d.path().join("o/data")), "lid").len(), 60);
}

#[test]
fn demo_runs_and_summarises() {
    let d = tempfile::tempdir().unwrap();
    let o = d.path().join("demo").display().to_string();
    let stdout = lidscope_ok(&["demo", "--out", &o, "--rows", "1500", "--dim", "32"]);
    assert!(stdout.contains("1500 rows") && stdout.contains("mean LID"), "{stdout}");
    assert!(d.path().join("demo/results/manifest.json").exists());
}

#[test]
fn help_has_examples() {
    for cmd in ["run", "demo", "bench", "sql", "plot"] {
        let out = lidscope_ok(&[cmd, "--help"]);
        assert!(out.contains("Examples:"), "{cmd} --help:\n{out}");
    }
    assert!(lidscope_ok(&["run", "--help"]).contains("--embedding-column"));
}

#[test]
fn plot_draws_every_run_of_a_sweep() {
    let d = tempfile::tempdir().unwrap();
    let (c, o) = (fixture("mixture_small.parquet").display().to_string(), d.path().join("sweep").display().to_string());
    // k = 8 and k = 128: a person expects them in that order, not as text ("128" < "8").
    for k in ["128", "8"] {
        let part = format!("data=mixture,k={k}");
        lidscope_ok(&["-q", "run", "--corpus", &c, "--embedding-column", "embedding", "--id-columns", "row_id", "--k", k,
            "--reference-size", "5000", "--pool", "5000", "--out", &o, "--partition", &part]);
    }
    let svg = d.path().join("sweep.svg");
    lidscope_ok(&["plot", &o, "--out", &svg.display().to_string(), "--bins", "40"]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    let (k8, k128) = (text.find("data=mixture, k=8 (n = 1200").expect("k=8 in the legend"), text.find("data=mixture, k=128 (n = 1200").expect("k=128"));
    assert!(k8 < k128, "runs in numeric order");
    assert!(text.contains("Mean LID per run"));

    // Nothing to draw: a clear error, exit code 1.
    let empty = d.path().join("empty");
    std::fs::create_dir_all(empty.join("data")).unwrap();
    let e = lidscope_err(&["plot", &empty.display().to_string(), "--out", &svg.display().to_string()]);
    assert!(e.contains("empty"), "{e}");
}

/// `bench --real`: both real settings run on the MiniLM fixture rows, each names its search and
/// why, and the measured run is the run `lidscope run` makes with the same sample.
#[test]
fn bench_real_times_real_hidden_states_and_says_which_search_answered() {
    let corpus = s(&fixture("minilm_fortunes.parquet"));
    let out = lidscope_ok(&["bench", "--real", &corpus, "--no-synthetic", "--k", "32", "--real-reference", "2000", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = read_batches(&fixture("minilm_fortunes.parquet")).iter().map(|b| b.num_rows()).sum::<usize>();
    for (key, reference) in [("real", None), ("real_over_sample", Some(2000))] {
        let r = &v[key];
        assert_eq!(r["queries"].as_u64(), Some(rows as u64), "{key}: {r}");
        if let Some(n) = reference {
            assert_eq!(r["reference_rows"].as_u64(), Some(n), "{key}");
        }
        let search = r["search"].as_str().unwrap_or_else(|| panic!("{key}: no search path: {r}"));
        assert!(search.contains("products") && search.contains(": "), "{key}: {search}");
        assert!(r["floor_seconds"].as_f64().unwrap() > 0.0 && r["wall_over_floor"].as_f64().unwrap() > 0.0, "{key}: {r}");
    }
    assert!(v["real"]["wall_over_symmetric_floor"].as_f64().is_some(), "the corpus as its own sample has the symmetric floor");
    // The same run by hand: the same sample (seed 42, pool and size = the corpus) and mean LID.
    let d = tempfile::tempdir().unwrap();
    let n = rows.to_string();
    let m = lidscope_ok(&["-q", "run", "--corpus", &corpus, "--embedding-column", "hidden_L6", "--id-columns", "seq_id,position", "--k", "32",
        "--reference-size", &n, "--pool", &n, "--seed", "42", "--out", &s(&d.path().join("out")), "--json"]);
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["mean_lid"], v["real"]["mean_lid"]);
    // Every forced search path gives the same mean LID on the real rows; without AVX512_VNNI the
    // integer ones are refused with a reason.
    for search in ["gemm", "int8", "int16", "int8-fine"] {
        let out = s(&d.path().join(format!("out-{search}")));
        let args = ["-q", "run", "--corpus", &corpus, "--embedding-column", "hidden_L6", "--id-columns", "seq_id,position", "--k", "32",
            "--reference-size", &n, "--pool", &n, "--seed", "42", "--search", search, "--out", &out, "--json"];
        if search == "gemm" || lidscope_kernel::int8_search_available(384) {
            let f: serde_json::Value = serde_json::from_str(&lidscope_ok(&args)).unwrap();
            assert_eq!(f["mean_lid"], m["mean_lid"], "--search {search}");
        } else {
            assert!(lidscope_err(&args).contains("AVX512_VNNI"), "--search {search}");
        }
    }
}

/// `bench --embed --embed-texts`: the fixture's 300 texts truncated at 128 tokens are exactly the
/// 13,192 tokens of `minilm_fortunes.parquet`, and the rate is given against the sgemm rate.
#[test]
fn bench_embed_on_real_texts_counts_their_tokens_and_the_share_of_the_sgemm_rate() {
    let model = fixture("embed/models/all-MiniLM-L6-v2");
    let texts = fixture("minilm_fortunes_texts.parquet");
    let out = lidscope_ok(&["bench", "--embed", &s(&model), "--embed-texts", &s(&texts), "--max-length", "128", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tokens = read_batches(&fixture("minilm_fortunes.parquet")).iter().map(|b| b.num_rows()).sum::<usize>();
    assert_eq!(v["texts"].as_u64(), Some(300), "{v}");
    assert_eq!(v["tokens"].as_u64(), Some(tokens as u64), "{v}");
    assert!(v["tokens_per_text"]["min"].as_u64() < v["tokens_per_text"]["max"].as_u64(), "mixed lengths: {v}");
    assert_eq!(v["tokens_per_text"]["max"].as_u64(), Some(128));
    let (share, gflops, sgemm) = (v["share_of_sgemm"].as_f64().unwrap(), v["forward_gflops"].as_f64().unwrap(), v["sgemm_gflops"].as_f64().unwrap());
    assert!(share > 0.0 && (share - gflops / sgemm).abs() < 1e-9, "{v}");
    let err = lidscope_err(&["bench", "--embed", &s(&model), "--embed-texts", &s(&texts), "--text-column", "body"]);
    assert!(err.contains("no column \"body\"") && err.contains("minilm_fortunes_texts.parquet"), "{err}");
}
