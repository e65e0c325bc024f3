//! Real process kills and concurrent runs: the last committed result survives an interrupted run,
//! and runs writing different partitions of one directory at the same time both land.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array};
use std::sync::Arc;

use crate::util::*;

/// A corpus of `n` pseudo-random vectors of dimension `dim`, with `seq_id` and `position`.
fn corpus(path: &Path, n: usize, dim: usize, seed: u64) {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..n as i64));
    write_parquet(path, &batch(vec![("seq_id", ids.clone()), ("position", ids), ("emb", fsl(vectors(n, dim, seed), dim))]));
}

fn run_args<'a>(corpus: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["-q", "run", "--corpus", corpus, "--embedding-column", "emb", "--id-columns", "seq_id,position", "--k", "64", "--out", out]
}

/// Every file under `dir` (relative path, bytes), hidden ones included, sorted.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn staging_dirs(out: &Path) -> Vec<String> {
    std::fs::read_dir(out).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(".staging-")).collect()
}

#[test]
fn a_killed_run_leaves_the_committed_result_intact() {
    let d = tempfile::tempdir().unwrap();
    let (small, big) = (d.path().join("small.parquet"), d.path().join("big.parquet"));
    corpus(&small, 2000, 32, 1);
    corpus(&big, 40_000, 96, 2);
    let out = d.path().join("out");
    let (o, sm, bg) = (s(&out), s(&small), s(&big));
    lidscope_ok(&run_args(&sm, &o));
    let committed = snapshot(&out);

    // A longer run over it, killed (SIGKILL) once it has written into its staging directory.
    let mut args = run_args(&bg, &o);
    args.push("--overwrite");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lidscope")).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    loop {
        let staged = staging_dirs(&out).iter().any(|n| out.join(n).join("reference.parquet").exists());
        if staged {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed; make the corpus bigger");
        assert!(start.elapsed() < Duration::from_secs(60), "no staged reference after 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    assert_eq!(staging_dirs(&out).len(), 1, "the killed run's staging directory is left behind");

    // The committed result is byte for byte what it was, and still reads as a result.
    let now: Vec<_> = snapshot(&out).into_iter().filter(|(p, _)| !p.starts_with(".staging-")).collect();
    assert_eq!(now, committed);
    let n = lidscope_ok(&["sql", "--table", &format!("lid={o}"), "--format", "csv", "SELECT count(*) AS n FROM lid"]);
    assert_eq!(n.lines().nth(1), Some("2000"));

    // The next run clears the left-over and commits.
    let mut args = run_args(&sm, &o);
    args.push("--overwrite");
    lidscope_ok(&args);
    assert!(staging_dirs(&out).is_empty());
}

#[test]
fn concurrent_runs_into_different_partitions_both_land() {
    let d = tempfile::tempdir().unwrap();
    let c = d.path().join("c.parquet");
    corpus(&c, 6000, 48, 3);
    let (cs, o) = (s(&c), s(&d.path().join("sweep")));
    let children: Vec<_> = ["1", "2", "3"]
        .iter()
        .map(|ckpt| {
            let mut args = run_args(&cs, &o);
            let part = format!("model=m,checkpoint={ckpt}");
            args.extend(["--partition", &part]);
            Command::new(env!("CARGO_BIN_EXE_lidscope")).args(&args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = lidscope_ok(&["sql", "--table", &format!("lid={o}"), "--format", "csv",
        "SELECT checkpoint, count(*) AS n FROM lid GROUP BY checkpoint ORDER BY checkpoint"]);
    assert_eq!(text, "checkpoint,n\n1,6000\n2,6000\n3,6000\n");
    let runs = lidscope_ok(&["sql", "--table", &format!("lid={o}"), "--format", "csv", "SELECT count(*) AS n FROM lid_runs"]);
    assert_eq!(runs, "n\n3\n");
}
