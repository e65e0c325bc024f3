//! `lidscope sql` and the `lid()` SQL function: results compared with values computed
//! independently from the same files, partitioned runs as one table, golden parity through SQL.

use std::path::Path;

use crate::util::*;

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
    // Beside its parts, named so that Parquet dataset readers (pandas, pyarrow, Spark) skip it.
    assert!(out.join("data/model=mix/checkpoint=1/_manifest.json").exists());
    assert!(out.join("data/model=mix/checkpoint=2/_manifest.json").exists());
    assert!(!out.join("manifest.json").exists());
    assert!(!out.join("data/model=mix/checkpoint=1/manifest.json").exists());
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
fn part_files_describe_their_run() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("sweep");
    let m = mixture_run(&out, "16", Some("model=mix,checkpoint=1"));
    let part = out.join("data/model=mix/checkpoint=1/part-00000.parquet");
    let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&part).unwrap()).unwrap();
    let kv: std::collections::HashMap<String, String> = parquet::file::reader::FileReader::metadata(&reader)
        .file_metadata()
        .key_value_metadata()
        .expect("key-value metadata")
        .iter()
        .filter_map(|e| e.key.strip_prefix("lidscope.").map(|k| (k.to_string(), e.value.clone().unwrap_or_default())))
        .collect();
    for key in ["k", "reference_rows", "dim", "seed", "pool", "reference_size"] {
        assert_eq!(kv[key], m[key].to_string(), "lidscope.{key}");
    }
    for key in ["estimator", "reference_sha256", "version", "embedding_column", "reference_source"] {
        assert_eq!(kv[key], m[key].as_str().unwrap(), "lidscope.{key}");
    }
    assert_eq!(kv["discard_fraction"].parse::<f64>().unwrap(), m["discard_fraction"].as_f64().unwrap());
    assert_eq!(serde_json::from_str::<serde_json::Value>(&kv["partition"]).unwrap(), m["partition"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&kv["id_columns"]).unwrap(), m["id_columns"]);
}

#[test]
fn result_directories_of_the_earlier_layout_are_still_read() {
    // Before 0.2 a partitioned run's manifest was `manifest.json` beside its parts.
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("sweep");
    let a = mixture_run(&out, "16", Some("model=mix,checkpoint=1"));
    mixture_run(&out, "64", Some("model=mix,checkpoint=2"));
    let old = out.join("data/model=mix/checkpoint=1");
    std::fs::rename(old.join("_manifest.json"), old.join("manifest.json")).unwrap();
    let table = format!("lid={}", s(&out));
    let runs = json_rows(&lidscope_ok(&["sql", "--table", &table, "--format", "json", "SELECT checkpoint, rows FROM lid_runs ORDER BY checkpoint"]));
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["rows"].as_u64(), a["rows"].as_u64());
    // It is a result: replacing it needs --overwrite, and then leaves one manifest of the new name.
    let f = s(&fixture("mixture_small.parquet"));
    let o = s(&out);
    let args = ["-q", "run", "--corpus", &f, "--embedding-column", "embedding", "--id-columns", "row_id", "--k", "16",
        "--reference-size", "5000", "--pool", "5000", "--out", &o, "--partition", "model=mix,checkpoint=1"];
    let e = lidscope_err(&args);
    assert!(e.contains("already holds a result") && e.contains("manifest.json"), "{e}");
    lidscope_ok(&[&args[..], &["--overwrite"]].concat());
    assert!(old.join("_manifest.json").exists() && !old.join("manifest.json").exists());
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

/// numpy's default percentile: linear interpolation between the order statistics around p(n-1).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let h = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (h - lo as f64)
}

/// n, mean, std (ddof = 1), median, p10, p90 of `v`, computed here rather than by DataFusion,
/// each with its tolerance. DataFusion's `percentile_cont` rounds the interpolation weight down to a
/// multiple of 1e-6, so p10 and p90 may sit up to 1e-6 of the gap between the two order statistics
/// below their exact value; everything else is held to 1e-9 relative.
fn describe(v: &[f64]) -> [(f64, f64); 6] {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    let m = mean(&s);
    let var = s.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    let rel = |x: f64| (x, 1e-9 * x.abs());
    let quantile = |p: f64| {
        let h = p * (n - 1.0);
        let gap = s[h.ceil() as usize] - s[h.floor() as usize];
        (percentile(&s, p), 1e-9 * percentile(&s, p).abs() + 1e-6 * gap)
    };
    [rel(n), rel(m), rel(var.sqrt()), rel(percentile(&s, 0.5)), quantile(0.1), quantile(0.9)]
}

fn assert_stats(what: &str, row: &serde_json::Value, values: &[f64]) {
    for (name, (want, tol)) in ["n", "mean", "std", "median", "p10", "p90"].iter().zip(describe(values)) {
        let got = row[name].as_f64().unwrap_or_else(|| panic!("{what}: no {name} in {row}"));
        assert!((got - want).abs() <= tol, "{what} {name}: {got} vs {want} (tolerance {tol:e})");
    }
}

/// Parses `--format json` output: one object per line.
fn json_rows(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn summary_and_token_views_match_statistics_computed_from_the_files() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("sweep");
    let (o, f) = (s(&out), s(&fixture("minilm_fortunes.parquet")));
    for (k, part) in [("16", "model=minilm,k=16"), ("32", "model=minilm,k=32")] {
        lidscope_ok(&["-q", "run", "--corpus", &f, "--embedding-column", "hidden_L6", "--id-columns", "seq_id,position", "--k", k,
            "--reference-size", "3000", "--pool", "6000", "--out", &o, "--partition", part]);
    }
    let table = format!("lid={o}");
    let summary = json_rows(&lidscope_ok(&["sql", "--table", &table, "--format", "json", "SELECT * FROM lid_summary ORDER BY k"]));
    assert_eq!(summary.len(), 2, "one row per run: {summary:?}");
    let tokens = json_rows(&lidscope_ok(&["sql", "--table", &table, "--format", "json",
        "SELECT * FROM lid_tokens WHERE n >= 20 ORDER BY k, token"]));
    for (i, k) in ["16", "32"].into_iter().enumerate() {
        let files = read_batches(&out.join(format!("data/model=minilm/k={k}")));
        let (lid, token) = (f64_column(&files, "lid"), string_column(&files, "token"));
        assert_eq!(summary[i]["k"].as_str(), Some(k));
        assert_eq!(summary[i]["model"].as_str(), Some("minilm"));
        assert_stats(&format!("lid_summary k={k}"), &summary[i], &lid);
        // Per token: every frequent token of this run against the same statistics by hand.
        let rows: Vec<&serde_json::Value> = tokens.iter().filter(|r| r["k"].as_str() == Some(k)).collect();
        assert!(rows.len() > 10, "frequent tokens in run k={k}: {}", rows.len());
        for row in rows {
            let t = row["token"].as_str().unwrap();
            let mine: Vec<f64> = lid.iter().zip(&token).filter(|(_, x)| *x == t).map(|(l, _)| *l).collect();
            assert_stats(&format!("lid_tokens k={k} token {t:?}"), row, &mine);
        }
    }
}

#[test]
fn lid_in_sql_over_parallel_partitions_equals_the_run() {
    // The corpus split into three files: DataFusion reads them as parallel partitions, each
    // calling lid() on the shared rayon pool. The run self-joins its 2,000-row sample at once;
    // lid() in SQL searches the first sampled rows that come back as queries and self-joins the
    // reference once half of them have. The rows before and after must agree to the bit.
    let d = tempfile::tempdir().unwrap();
    let corpus = d.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    let all = arrow::compute::concat_batches(&read_batches(&fixture("minilm_fortunes.parquet"))[0].schema(), &read_batches(&fixture("minilm_fortunes.parquet"))).unwrap();
    let third = all.num_rows().div_ceil(3);
    for (i, lo) in (0..all.num_rows()).step_by(third).enumerate() {
        write_parquet(&corpus.join(format!("part-{i}.parquet")), &all.slice(lo, third.min(all.num_rows() - lo)));
    }
    let (c, o) = (s(&corpus), s(&d.path().join("r")));
    lidscope_ok(&["-q", "run", "--corpus", &c, "--embedding-column", "hidden_L6", "--id-columns", "seq_id,position", "--k", "24",
        "--reference-size", "2000", "--pool", "6000", "--out", &o]);
    let reference = s(&d.path().join("r/reference.parquet"));
    let q = format!(
        "SELECT lid(hidden_L6, '{reference}', 24, 'twonn', 0.1, named_struct('position', position, 'seq_id', seq_id))['lid'] AS l \
         FROM c ORDER BY seq_id, position"
    );
    let out = lidscope(&["-vv", "sql", "--table", &format!("c={c}"), "--format", "csv", &q]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    // The 2,000 sampled rows come back as queries with their identity: once 1,000 have, one
    // self-join serves the rest (direction 3 of the performance issue, for lid() in SQL).
    assert!(log.contains("self-join of the reference, after"), "no lazy self-join in the log:\n{log}");
    let text = String::from_utf8(out.stdout).unwrap();
    let got: Vec<f64> = csv_rows(&text)[1..].iter().map(|r| r[0].parse().unwrap()).collect();
    let text = lidscope_ok(&["sql", "--table", &format!("lid={o}"), "--format", "csv", "SELECT lid FROM lid ORDER BY seq_id, position"]);
    let want: Vec<f64> = csv_rows(&text)[1..].iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(got.len(), all.num_rows());
    assert_eq!(got, want, "lid() in SQL (identity fields in another order) and lidscope run disagree");

    // Without the identity no query is a reference row, so no self-join: the reference's
    // neighbour lists pay after 6,945 queries (2,000 rows, k = 24) and are built mid-run. Rows
    // outside the sample must still agree with the run to the bit.
    let outside = |table: &str, lid: &str| {
        format!(
            "SELECT {lid} AS l FROM {table} t LEFT JOIN r ON t.seq_id = r.seq_id AND t.position = r.position \
             WHERE r.seq_id IS NULL ORDER BY t.seq_id, t.position"
        )
    };
    let q = outside("c", &format!("lid(t.hidden_L6, '{reference}', 24)['lid']"));
    let out = lidscope(&["-vv", "sql", "--table", &format!("c={c}"), "--table", &format!("r={reference}"), "--format", "csv", &q]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("neighbour lists of the reference rows, after"), "no lazy lists in the log:\n{log}");
    assert!(!log.contains("self-join of the reference"), "a self-join without identities:\n{log}");
    let got: Vec<f64> = csv_rows(&String::from_utf8(out.stdout).unwrap())[1..].iter().map(|r| r[0].parse().unwrap()).collect();
    let text = lidscope_ok(&["sql", "--table", &format!("lid={o}"), "--table", &format!("r={reference}"), "--format", "csv", &outside("lid", "t.lid")]);
    let want: Vec<f64> = csv_rows(&text)[1..].iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(got.len(), all.num_rows() - 2000);
    assert_eq!(got, want, "lid() in SQL without identities and lidscope run disagree outside the sample");
}

/// A training log as a CSV table beside the results: LID and metrics in one query.
#[test]
fn csv_training_logs_join_the_results() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("sweep");
    let m16 = mixture_run(&out, "16", Some("step=100"));
    let m64 = mixture_run(&out, "64", Some("step=200"));
    let log = d.path().join("metrics.csv");
    std::fs::write(&log, "step,val_acc,val_loss\n100,0.25,2.5\n150,0.5,1.5\n200,0.75,0.5\n").unwrap();
    let q = "SELECT m.step, m.val_acc, s.mean FROM m JOIN lid_summary s ON CAST(s.step AS BIGINT) = m.step ORDER BY m.step";
    let rows = json_rows(&lidscope_ok(&["sql", "--table", &format!("lid={}", s(&out)), "--table", &format!("m={}", s(&log)), "--format", "json", q]));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0]["step"].as_i64(), rows[0]["val_acc"].as_f64()), (Some(100), Some(0.25)));
    assert_rel("step 100 mean", rows[0]["mean"].as_f64().unwrap(), m16["mean_lid"].as_f64().unwrap(), 1e-9);
    assert_rel("step 200 mean", rows[1]["mean"].as_f64().unwrap(), m64["mean_lid"].as_f64().unwrap(), 1e-9);
    // The grokking run's own log reads as it is.
    let grok = s(&fixture("grokking/metrics.csv"));
    let rows = json_rows(&lidscope_ok(&["sql", "--table", &format!("m={grok}"), "--format", "json", "SELECT max(val_acc) AS a, min(step) AS s FROM m"]));
    assert_eq!(rows[0]["s"].as_i64(), Some(0));
    assert!(rows[0]["a"].as_f64().unwrap() > 0.99, "{rows:?}");
}

/// A reader that stops early (`lidscope sql ... | head -1`) is not a failure: exit 0, nothing on
/// stderr. (Only a closed standard output is forgiven so; a broken connection is an error.)
#[test]
fn a_closed_standard_output_ends_the_query_quietly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let q = "SELECT value FROM generate_series(1, 2000000) AS t(value)";
    let mut child = Command::new(env!("CARGO_BIN_EXE_lidscope")).args(["sql", "--format", "csv", q]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = [0u8; 6];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"value\n");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}
