//! `lidscope sql` and the `lid()` SQL function: results compared with values computed
//! independently from the same files, partitioned runs as one table, golden parity through SQL.

use std::path::Path;

use crate::util::*;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A mixture run into `out` (the whole set as its own reference), optionally partitioned.
fn mixture_run(out: &Path, k: &str, partition: Option<&str>) -> serde_json::Value {
    let f = s(&fixture("mixture_small.parquet"));
    let o = s(out);
    let mut args = vec!["-q", "run", "--corpus", &f, "--embedding-column", "embedding", "--id-columns", "row_id", "--k", k,
        "--reference-size", "5000", "--pool", "5000", "--out", &o, "--json"];
    if let Some(p) = partition {
        args.extend(["--partition", p]);
    }
    serde_json::from_str(&lidscope_ok(&args)).unwrap()
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines().map(|l| l.split(',').map(str::to_string).collect()).collect()
}

#[test]
fn mean_and_count_match_the_manifest() {
    let d = tempfile::tempdir().unwrap();
    let m = mixture_run(&d.path().join("r"), "16", None);
    let table = format!("lid={}", s(&d.path().join("r")));
    let out = lidscope_ok(&["sql", "--table", &table, "--format", "csv", "SELECT avg(lid) AS m, count(*) AS n FROM lid"]);
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 2, "a header line and one data line:\n{out}");
    assert_eq!(rows[0], ["m", "n"]);
    let (mean, n): (f64, u64) = (rows[1][0].parse().unwrap(), rows[1][1].parse().unwrap());
    assert_rel("avg(lid) vs manifest mean_lid", mean, m["mean_lid"].as_f64().unwrap(), 1e-9);
    assert_eq!(n, m["rows"].as_u64().unwrap());
    // And against the Parquet files read directly.
    let lids = f64_column(&read_batches(&d.path().join("r/data")), "lid");
    assert_rel("avg(lid) vs files", mean, crate::util::mean(&lids), 1e-12);
}

#[test]
fn partitioned_runs_form_one_table() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("sweep");
    let a = mixture_run(&out, "16", Some("model=mix,checkpoint=1"));
    let b = mixture_run(&out, "64", Some("model=mix,checkpoint=2"));
    assert!(out.join("data/model=mix/checkpoint=1/manifest.json").exists());
    assert!(out.join("data/model=mix/checkpoint=2/manifest.json").exists());
    assert!(!out.join("manifest.json").exists());
    let table = format!("lid={}", s(&out));
    let text = lidscope_ok(&["sql", "--table", &table, "--format", "csv",
        "SELECT model, checkpoint, count(*) AS n, avg(lid) AS m FROM lid GROUP BY model, checkpoint ORDER BY checkpoint"]);
    let rows = csv_rows(&text);
    assert_eq!(rows.len(), 3, "{text}");
    for (row, (ckpt, man)) in rows[1..].iter().zip([("1", &a), ("2", &b)]) {
        assert_eq!(row[0], "mix");
        assert_eq!(row[1], ckpt);
        assert_eq!(row[2].parse::<u64>().unwrap(), man["rows"].as_u64().unwrap());
        assert_rel("partition mean", row[3].parse().unwrap(), man["mean_lid"].as_f64().unwrap(), 1e-9);
        let files = read_batches(&out.join(format!("data/model=mix/checkpoint={ckpt}")));
        assert_rel("partition mean vs files", row[3].parse().unwrap(), mean(&f64_column(&files, "lid")), 1e-12);
    }
    // The manifests as a table: one row per run, with its partition values.
    let runs = lidscope_ok(&["sql", "--table", &table, "--format", "json", "SELECT checkpoint, k, rows, mean_lid FROM lid_runs ORDER BY checkpoint"]);
    let runs: Vec<serde_json::Value> = runs.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["k"].as_u64(), Some(16));
    assert_eq!(runs[1]["k"].as_u64(), Some(64));
    assert_eq!(runs[1]["checkpoint"].as_str(), Some("2"));
}

#[test]
fn lid_function_matches_the_golden_columns() {
    let d = tempfile::tempdir().unwrap();
    // The reference file `lidscope run` writes: row_id + embedding of the whole set.
    mixture_run(&d.path().join("r"), "16", None);
    let reference = s(&d.path().join("r/reference.parquet"));
    let table = format!("t={}", s(&fixture("mixture_small.parquet")));
    for (k, est, golden) in [("16", "twonn", "lid_k16"), ("64", "twonn-mle", "lid_mle_k64")] {
        let q = format!(
            "SELECT lid(embedding, '{reference}', {k}, '{est}', 0.1, named_struct('row_id', row_id))['lid'] AS l, {golden} AS g \
             FROM t ORDER BY row_id"
        );
        let text = lidscope_ok(&["sql", "--table", &table, "--format", "csv", &q]);
        let rows = csv_rows(&text);
        let got: Vec<f64> = rows[1..].iter().map(|r| r[0].parse().unwrap()).collect();
        let want: Vec<f64> = rows[1..].iter().map(|r| r[1].parse().unwrap()).collect();
        assert_eq!(got.len(), 1200);
        assert_golden(&format!("sql lid() {golden}"), &got, &want);
    }
}

#[test]
fn errors_are_reported() {
    let d = tempfile::tempdir().unwrap();
    let e = lidscope_err(&["sql", "SELECT * FROM nowhere"]);
    assert!(e.contains("nowhere"), "{e}");
    let missing = format!("x={}", s(&d.path().join("missing")));
    let e = lidscope_err(&["sql", "--table", &missing, "SELECT 1"]);
    assert!(e.contains("missing") && e.contains("no such"), "{e}");
    let e = lidscope_err(&["sql", "SELEC 1"]);
    assert!(e.contains("query"), "{e}");
}
