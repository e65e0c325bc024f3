//! One result table from runs whose corpora typed their carried columns differently: integer
//! widths, string kinds, dictionaries and nullability are written as one schema and read by `sql`
//! and `report`; a type no lossless type holds beside a committed one is refused before the run
//! computes; directories of differently typed parts (as lidscope 0.1 wrote them) read widened; a
//! sweep over such corpora shares its sample by identity.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::util::*;

const ROWS: usize = 400;
const DIM: usize = 8;

fn dict(value: DataType) -> DataType {
    DataType::Dictionary(Box::new(DataType::Int16), Box::new(value))
}

/// The same tokens and vectors for every variant: `seq_id`, `position` (Int64), `token` (Utf8),
/// `label` (Utf8, a null every fifth row), `weight` (Float32) and the embedding `emb`.
fn base(seed: u64) -> RecordBatch {
    let label: StringArray = (0..ROWS).map(|i| (i % 5 != 0).then(|| format!("l{}", i % 3))).collect();
    batch(vec![
        ("seq_id", Arc::new(Int64Array::from_iter_values((0..ROWS).map(|i| (i / 20) as i64))) as ArrayRef),
        ("position", Arc::new(Int64Array::from_iter_values((0..ROWS).map(|i| (i % 20) as i64)))),
        ("token", Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| format!("t{}", i % 7))))),
        ("label", Arc::new(label)),
        ("weight", Arc::new(Float32Array::from_iter_values((0..ROWS).map(|i| i as f32 / 8.0)))),
        ("emb", fsl(vectors(ROWS, DIM, seed), DIM)),
    ])
}

/// `b` with columns cast to the given types; `non_null` columns declared non-nullable (nulls are
/// replaced by a value first), every other field nullable.
fn retyped(b: &RecordBatch, types: &[(&str, DataType)], non_null: &[&str]) -> RecordBatch {
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        let mut c = c.clone();
        if non_null.contains(&f.name().as_str()) && c.null_count() > 0 {
            let filled: StringArray = cast(&c, &DataType::Utf8).unwrap().as_any().downcast_ref::<StringArray>().unwrap().iter().map(|v| Some(v.unwrap_or("none"))).collect();
            c = Arc::new(filled);
        }
        if let Some((_, t)) = types.iter().find(|(n, _)| n == f.name()) {
            c = cast(&c, t).unwrap();
        }
        fields.push(Field::new(f.name(), c.data_type().clone(), !non_null.contains(&f.name().as_str())));
        cols.push(c);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// The three corpora of one set of tokens, typed as three different writers would.
fn variants(dir: &Path, seed: u64) -> Vec<(&'static str, PathBuf)> {
    let b = base(seed);
    let out = vec![
        // As pyarrow writes Python values: Int64, Utf8, nullable.
        ("a", b.clone()),
        // As lidscope embed and many scripts write them: Int32, LargeUtf8 (polars), a dictionary.
        ("b", retyped(&b, &[("seq_id", DataType::Int32), ("position", DataType::Int32), ("token", DataType::LargeUtf8), ("label", dict(DataType::Utf8)), ("weight", DataType::Float64)], &["seq_id", "position", "token"])),
        // Unsigned and narrow, string views, a dictionary of large strings, no nulls declared.
        ("c", retyped(&b, &[("seq_id", DataType::UInt32), ("position", DataType::Int16), ("token", DataType::Utf8View), ("label", dict(DataType::LargeUtf8))], &["seq_id", "position", "token", "label", "weight"])),
    ];
    out.into_iter()
        .map(|(name, batch)| {
            let p = dir.join(format!("corpus-{name}.parquet"));
            write_parquet(&p, &batch);
            (name, p)
        })
        .collect()
}

fn run_args<'a>(corpus: &'a str, out: &'a str, partition: &'a str) -> Vec<&'a str> {
    vec!["-q", "run", "--corpus", corpus, "--embedding-column", "emb", "--id-columns", "seq_id,position", "--k", "10",
        "--reference-size", "200", "--pool", "400", "--out", out, "--partition", partition, "--json"]
}

fn schema_of(path: &Path) -> Vec<(String, DataType, bool)> {
    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    b.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect()
}

fn part(out: &Path, model: &str) -> PathBuf {
    out.join(format!("data/model={model}/part-00000.parquet"))
}

#[test]
fn runs_of_differently_typed_corpora_form_one_table() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("results");
    let o = s(&out);
    let mut manifests = Vec::new();
    for (name, corpus) in variants(d.path(), 7) {
        let c = s(&corpus);
        let partition = format!("model={name}");
        manifests.push(serde_json::from_str::<serde_json::Value>(&lidscope_ok(&run_args(&c, &o, &partition))).unwrap());
    }

    // One schema on disk, whichever writer typed the corpus: every reader sees one table.
    let want: Vec<(String, DataType, bool)> = [("seq_id", DataType::Int64), ("position", DataType::Int64), ("token", DataType::Utf8), ("label", DataType::Utf8), ("weight", DataType::Float64)]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t, true))
        .chain(["lid", "r1", "r2", "rk"].map(|n| (n.to_string(), DataType::Float64, false)))
        .collect();
    for m in ["a", "b", "c"] {
        assert_eq!(schema_of(&part(&out, m)), want, "model={m}");
    }

    // The sample is drawn by identity, so Int64, Int32 and UInt32/Int16 ids pick the same tokens,
    // and a token finds itself in the reference (left out of its own neighbourhood) whatever its
    // corpus's types: the same vectors give the same LIDs, to the bit.
    for m in &manifests[1..] {
        assert_eq!(m["reference_sha256"], manifests[0]["reference_sha256"]);
        assert_eq!(m["mean_lid"], manifests[0]["mean_lid"]);
        assert_eq!(m["reference_rows"].as_u64(), Some(200));
    }

    // SQL reads every value back: sums per run equal, strings equal, nulls where the corpus had them.
    let csv = lidscope_ok(&[
        "sql", "--table", &format!("lid={o}"), "--format", "csv",
        "SELECT model, count(*) AS n, sum(seq_id) AS s, sum(position) AS p, count(label) AS l, CAST(sum(weight) * 8 AS BIGINT) AS w, count(DISTINCT token) AS t \
         FROM lid GROUP BY model ORDER BY model",
    ]);
    let n = ROWS as i64;
    let (s_sum, p_sum, w_sum) = ((0..n).map(|i| i / 20).sum::<i64>(), (0..n).map(|i| i % 20).sum::<i64>(), (0..n).sum::<i64>());
    let l_a = ROWS - ROWS / 5;
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        vec![
            "model,n,s,p,l,w,t".to_string(),
            format!("a,{n},{s_sum},{p_sum},{l_a},{w_sum},7"),
            format!("b,{n},{s_sum},{p_sum},{l_a},{w_sum},7"),
            format!("c,{n},{s_sum},{p_sum},{ROWS},{w_sum},7"),
        ]
    );
    let joined = lidscope_ok(&[
        "sql", "--table", &format!("lid={o}"), "--format", "csv",
        "SELECT count(*) AS n FROM lid x JOIN lid y ON x.seq_id = y.seq_id AND x.position = y.position AND x.token = y.token \
         WHERE x.model = 'a' AND y.model <> 'a' AND x.lid = y.lid",
    ]);
    assert_eq!(joined, format!("n\n{}\n", 2 * ROWS));

    // The report reads the same table.
    let rep = d.path().join("report");
    lidscope_ok(&["report", &o, "--out", &s(&rep)]);
    let summary = std::fs::read_to_string(rep.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 4, "{summary}");
}

#[test]
fn a_run_no_lossless_type_joins_is_refused_before_it_computes() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("results");
    let o = s(&out);
    let b = base(3);
    let corpus = |name: &str, batch: &RecordBatch| {
        let p = d.path().join(format!("{name}.parquet"));
        write_parquet(&p, batch);
        s(&p)
    };
    let a = corpus("a", &b);
    lidscope_ok(&run_args(&a, &o, "model=a"));

    for (name, column, ty, word) in [("strings", "position", DataType::Utf8, "Utf8"), ("unsigned", "seq_id", DataType::UInt64, "UInt64")] {
        let c = corpus(name, &retyped(&b, &[(column, ty)], &[]));
        let partition = format!("model={name}");
        let e = lidscope_err(&run_args(&c, &o, &partition));
        assert!(
            e.contains(&format!("this run would write column \"{column}\" as {word}, but run model=a was committed with Int64 (data/model=a/part-00000.parquet)")),
            "{e}"
        );
        // Before any work: nothing of the refused run was written, not even a staging directory.
        let data = out.join("data");
        let entries: Vec<String> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(entries, vec!["model=a".to_string()], "{entries:?}");
        assert!(!out.join(format!("references/model={name}")).exists());
    }

    // The run a new type would replace does not count against it: alone in its directory, model=a
    // may be redone from a corpus that types `position` as strings.
    let strings = s(&d.path().join("strings.parquet"));
    let mut args = run_args(&strings, &o, "model=a");
    args.push("--overwrite");
    lidscope_ok(&args);
    assert!(schema_of(&part(&out, "a")).iter().any(|(n, t, _)| n == "position" && *t == DataType::Utf8));
}

/// Rewrites part file `path` with columns cast to `types`, keeping its key-value metadata, as a
/// release that wrote carried columns in the corpus's own types left it.
fn rewrite_part(path: &Path, types: &[(&str, DataType)]) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let kv = builder.metadata().file_metadata().key_value_metadata().cloned();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let b = retyped(&b, types, &[]);
    let props = parquet::file::properties::WriterProperties::builder().set_key_value_metadata(kv).build();
    let mut w = parquet::arrow::ArrowWriter::try_new(File::create(path).unwrap(), b.schema(), Some(props)).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
}

#[test]
fn parts_written_in_their_corpus_types_are_read_widened() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("results");
    let o = s(&out);
    for (name, corpus) in variants(d.path(), 11).into_iter().take(2) {
        let c = s(&corpus);
        let partition = format!("model={name}");
        lidscope_ok(&run_args(&c, &o, &partition));
    }
    // model=b as lidscope 0.1 wrote it: Int32 ids, large strings, a dictionary.
    rewrite_part(&part(&out, "b"), &[("seq_id", DataType::Int32), ("position", DataType::Int32), ("token", DataType::LargeUtf8), ("label", dict(DataType::Utf8))]);
    let t = format!("lid={o}");
    let csv = lidscope_ok(&["sql", "--table", &t, "--format", "csv", "SELECT model, sum(position) AS p, count(label) AS l, min(token) AS t FROM lid GROUP BY model ORDER BY model"]);
    let p: i64 = (0..ROWS as i64).map(|i| i % 20).sum();
    let l = ROWS - ROWS / 5;
    assert_eq!(csv, format!("model,p,l,t\na,{p},{l},t0\nb,{p},{l},t0\n"));
    let types = lidscope_ok(&["sql", "--table", &t, "--format", "csv", "SELECT arrow_typeof(seq_id) AS s, arrow_typeof(token) AS t FROM lid LIMIT 1"]);
    assert_eq!(types, "s,t\nInt64,Utf8\n");
    lidscope_ok(&["report", &o, "--out", &s(&d.path().join("report"))]);

    // Strings beside numbers have no lossless common type: the error names both parts.
    rewrite_part(&part(&out, "b"), &[("position", DataType::Utf8)]);
    let e = lidscope_err(&["sql", "--table", &t, "SELECT count(*) FROM lid"]);
    assert!(
        e.contains("column \"position\" is Int64 in data/model=a/part-00000.parquet (run model=a) and Utf8 in data/model=b/part-00000.parquet (run model=b)"),
        "{e}"
    );
}

#[test]
fn a_sweep_over_differently_typed_corpora_shares_its_sample() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // Model a's checkpoints typed as pyarrow writes them, model b's as lidscope embed does.
    for (model, steps) in [("a", [100, 200]), ("b", [100, 200])] {
        for step in steps {
            let path = root.join(format!("emb/{model}/step-{step}/wiki.parquet"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let b = base(step as u64);
            let b = match model {
                "a" => b,
                _ => retyped(&b, &[("seq_id", DataType::Int32), ("position", DataType::UInt16), ("token", DataType::LargeUtf8), ("label", dict(DataType::Utf8))], &["seq_id", "position"]),
            };
            write_parquet(&path, &b);
        }
    }
    let spec = root.join("sweep.toml");
    std::fs::write(
        &spec,
        r#"results = "results"
embedding_column = "emb"
id_columns = ["seq_id", "position"]
k = 10
reference_size = 200
pool = 400
[[corpus]]
pattern = "emb/{model}/step-{step}/{dataset}.parquet"
"#,
    )
    .unwrap();
    let done = lidscope_ok(&["sweep", &s(&spec)]);
    assert_eq!(done.lines().filter(|l| l.starts_with("committed")).count(), 4, "{done}");
    // One sample for the dataset: the same identities in every run, found in Int32 corpora too,
    // and the same vectors (step seeds) give the same reference and LIDs across the two models.
    let m = |model: &str, step: u32| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(root.join(format!("results/data/model={model}/step={step}/dataset=wiki/_manifest.json"))).unwrap()).unwrap()
    };
    for step in [100, 200] {
        let (a, b) = (m("a", step), m("b", step));
        assert_eq!(a["reference_rows"].as_u64(), Some(200));
        assert_eq!(a["reference_sha256"], b["reference_sha256"], "step {step}");
        assert_eq!(a["mean_lid"], b["mean_lid"], "step {step}");
    }
    let results = root.join("results");
    let csv = lidscope_ok(&["sql", "--table", &format!("lid={}", s(&results)), "--format", "csv", "SELECT count(*) AS n, count(DISTINCT position) AS p FROM lid"]);
    assert_eq!(csv, format!("n,p\n{},20\n", 4 * ROWS));
    lidscope_ok(&["report", &s(&results), "--out", &s(&root.join("report"))]);
}
