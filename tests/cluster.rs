//! The cluster with real processes on 127.0.0.1: a coordinator and workers started here, runs
//! compared with local runs of the same corpus, workers and the coordinator killed with SIGKILL,
//! tokens refused, bad input reported as a local run reports it; a cluster with mutual TLS on
//! every port, and every peer without a certificate of its CA refused.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, StringArray};
use std::sync::Arc;

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_lidscope");
const TOKEN: &str = "test-token-4f1c";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `lidscope args` (with `env` added to its environment) and waits (60 s at most) for the
/// first line of its stdout.
fn start(args: &[&str], log: &Path, env: &[(String, String)]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("LIDSCOPE_LOG", "warn")
        .env_remove("LIDSCOPE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("lidscope {args:?} said nothing in 60 s:\n{}", read(log)));
    assert!(!line.is_empty(), "lidscope {args:?} ended:\n{}", read(log));
    (Proc(child), line.trim().to_string())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A coordinator and its workers.
pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    pub(crate) token: PathBuf,
    pub(crate) url: String,
    coordinator: Option<Proc>,
    workers: Vec<Proc>,
    /// Each worker's Flight address, as it printed it.
    flight: Vec<String>,
    /// With mutual TLS: the directory of the cluster's certificates (`lidscope certs`).
    certs: Option<PathBuf>,
    /// Added to the environment of every node (an object store's `AWS_*` settings).
    env: Vec<(String, String)>,
}

/// `--tls-ca`, `--tls-cert` and `--tls-key` for `node`, from the certificates in `certs`.
fn tls_args(certs: &Path, node: &str) -> Vec<String> {
    let f = |name: String| s(&certs.join(name));
    vec!["--tls-ca".into(), f("ca.pem".into()), "--tls-cert".into(), f(format!("{node}.pem")), "--tls-key".into(), f(format!("{node}.key"))]
}

impl Cluster {
    fn new(workers: usize) -> Self {
        Self::start(workers, false)
    }

    /// With `tls`, certificates are made first (`lidscope certs`) and every node uses them.
    fn start(workers: usize, tls: bool) -> Self {
        Self::start_with(workers, tls, Vec::new())
    }

    /// As [`Self::start`], with `env` in every node's environment.
    pub(crate) fn start_with(workers: usize, tls: bool, env: Vec<(String, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let certs = tls.then(|| {
            let certs = dir.path().join("certs");
            lidscope_ok(&["certs", "--out", &s(&certs), "--node", "coordinator", "--node", "client"]);
            // The workers' in a second call: signed by the CA reloaded from its key.
            let nodes: Vec<String> = (0..workers + 1).flat_map(|w| ["--node".to_string(), format!("worker-{w}")]).collect();
            let certs_s = s(&certs);
            let mut args = vec!["certs", "--out", certs_s.as_str()];
            args.extend(nodes.iter().map(String::as_str));
            lidscope_ok(&args);
            certs
        });
        let mut c = Cluster { dir, token, url: String::new(), coordinator: None, workers: Vec::new(), flight: Vec::new(), certs, env };
        c.start_coordinator("127.0.0.1:0");
        for _ in 0..workers {
            c.add_worker();
        }
        c
    }

    pub(crate) fn start_coordinator(&mut self, bind: &str) {
        let log = self.dir.path().join(format!("coordinator-{}.log", Instant::now().elapsed().as_nanos()));
        let token = s(&self.token);
        let mut args = vec!["coordinator", "--bind", bind, "--token-file", &token, "--worker-timeout", "8", "--shards-in-flight", "4"];
        let tls = self.certs.as_ref().map(|c| tls_args(c, "coordinator")).unwrap_or_default();
        args.extend(tls.iter().map(String::as_str));
        let (p, line) = start(&args, &log, &self.env);
        self.url = line.rsplit(' ').next().unwrap().to_string();
        let scheme = if self.certs.is_some() { "https" } else { "http" };
        assert!(self.url.starts_with(&format!("{scheme}://127.0.0.1:")), "{line}");
        self.coordinator = Some(p);
    }

    /// Starts a worker; returns its work directory.
    fn add_worker(&mut self) -> PathBuf {
        let n = self.workers.len();
        let work = self.dir.path().join(format!("worker-{n}"));
        let log = self.dir.path().join(format!("worker-{n}.log"));
        let (token, work_s) = (s(&self.token), s(&work));
        let mut args = vec!["worker", "--coordinator", &self.url, "--token-file", &token, "--work-dir", &work_s];
        let tls = self.certs.as_ref().map(|c| tls_args(c, &format!("worker-{n}"))).unwrap_or_default();
        args.extend(tls.iter().map(String::as_str));
        let (p, line) = start(&args, &log, &self.env);
        assert!(line.contains("serving results"), "{line}");
        self.flight.push(line.rsplit(' ').next().unwrap().to_string());
        self.workers.push(p);
        work
    }

    pub(crate) fn kill_coordinator(&mut self) {
        let mut p = self.coordinator.take().unwrap();
        p.0.kill().unwrap(); // SIGKILL
        p.0.wait().unwrap();
    }

    pub(crate) fn port(&self) -> &str {
        self.url.rsplit(':').next().unwrap()
    }

    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                out += &format!("--- {}\n{}", e.file_name().to_string_lossy(), read(&e.path()));
            }
        }
        out
    }
}

/// A corpus of `files` files of `rows` rows (row groups of `group` rows): seq_id, position, a
/// token string, `special` (the first and last position of a sequence), and `emb`.
pub(crate) fn corpus(dir: &Path, files: usize, rows: usize, dim: usize, group: usize) -> PathBuf {
    let c = dir.join("corpus");
    std::fs::create_dir_all(&c).unwrap();
    for f in 0..files {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values((0..rows).map(|r| (f * rows + r) as i64 / 50)));
        let pos: ArrayRef = Arc::new(Int64Array::from_iter_values((0..rows).map(|r| (f * rows + r) as i64 % 50)));
        let tok: ArrayRef = Arc::new(StringArray::from_iter_values((0..rows).map(|r| format!("t{}", r % 97))));
        let special: ArrayRef = Arc::new(arrow::array::BooleanArray::from_iter((0..rows).map(|r| Some(matches!((f * rows + r) % 50, 0 | 49)))));
        let b = batch(vec![("seq_id", ids), ("position", pos), ("token", tok), ("special", special), ("emb", fsl(vectors(rows, dim, 100 + f as u64), dim))]);
        write_parquet_groups(&c.join(format!("part-{f:03}.parquet")), &b, group);
    }
    c
}

/// (seq_id, position) -> lid of every row of a result table; asserts each identity once.
fn lids(out: &Path) -> HashMap<(i64, i64), f64> {
    let mut files = Vec::new();
    let mut stack = vec![out.join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".parquet") && !name.starts_with(['.', '_']) {
                files.push(p);
            }
        }
    }
    let mut m = HashMap::new();
    for f in files {
        let b = read_batches(&f);
        let (seq, pos, lid) = (i64_column(&b, "seq_id"), i64_column(&b, "position"), f64_column(&b, "lid"));
        for i in 0..seq.len() {
            assert!(m.insert((seq[i], pos[i]), lid[i]).is_none(), "row {:?} twice in {}", (seq[i], pos[i]), out.display());
        }
    }
    m
}

fn i64_column(batches: &[arrow::array::RecordBatch], name: &str) -> Vec<i64> {
    use arrow::array::AsArray;
    batches.iter().flat_map(|b| b.column_by_name(name).unwrap().as_primitive::<arrow::datatypes::Int64Type>().values().to_vec()).collect()
}

/// Same rows, each LID within 1e-9.
pub(crate) fn assert_same_rows(cluster: &Path, local: &Path) {
    let (a, b) = (lids(cluster), lids(local));
    assert_eq!(a.len(), b.len(), "row counts");
    for (k, v) in &b {
        let w = a.get(k).unwrap_or_else(|| panic!("row {k:?} missing from the cluster's result"));
        assert!((v - w).abs() <= 1e-9 || (v.is_nan() && w.is_nan()), "row {k:?}: {w} on the cluster, {v} locally");
    }
}

/// The manifest figures a cluster run must share with a local run.
pub(crate) fn assert_same_manifest(c: &serde_json::Value, l: &serde_json::Value) {
    for key in ["rows", "k", "estimator", "reference_rows", "reference_sha256", "dim", "sample", "sample_exclude", "partition", "id_columns", "embedding_column"] {
        assert_eq!(c[key], l[key], "manifest field {key}");
    }
    for key in ["mean_lid", "global_twonn"] {
        let (x, y) = (c[key].as_f64().unwrap(), l[key].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-12 * y.abs(), "manifest {key}: {x} on the cluster, {y} locally");
    }
}

pub(crate) fn run_args<'a>(corpus: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["-q", "run", "--corpus", corpus, "--embedding-column", "emb", "--id-columns", "seq_id,position", "--out", out, "--json"];
    v.extend_from_slice(extra);
    v
}

pub(crate) fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Committed shard records in a run's staging directory.
pub(crate) fn committed_shards(out: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(out) else { return Vec::new() };
    let mut v = Vec::new();
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".staging-run-") {
            if let Ok(shards) = std::fs::read_dir(e.path().join("shards")) {
                v.extend(shards.flatten().map(|s| s.path()).filter(|p| p.extension().is_some_and(|x| x == "json")));
            }
        }
    }
    v
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_cluster_run_equals_the_local_run_and_refuses_bad_tokens_and_input() {
    let mut cluster = Cluster::new(2);
    let d = cluster.dir.path().to_path_buf();
    let c = corpus(&d, 3, 4000, 48, 1000);
    let (cs, token) = (s(&c), s(&cluster.token));
    let url = cluster.url.clone();
    let common = ["--k", "16", "--reference-size", "2000", "--pool", "5000", "--partition", "model=m,ckpt=1", "--exclude-special"];

    let local = d.join("local");
    let lm = json(&lidscope_ok(&run_args(&cs, &s(&local), &common)));
    assert_eq!(lm["sample_exclude"], "special");
    let remote = d.join("cluster");
    let remote_s = s(&remote);
    let mut args = run_args(&cs, &remote_s, &common);
    args.extend(["--cluster", &url, "--token-file", &token, "--shard-rows", "2000"]);
    let out = lidscope(&args);
    assert!(out.status.success(), "cluster run failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    let cm = json(&String::from_utf8(out.stdout).unwrap());
    assert_same_manifest(&cm, &lm);
    assert_same_rows(&remote, &local);
    // The local run's layout: parts beside the partition's manifest, the reference outside data/.
    let part = remote.join("data/model=m/ckpt=1");
    assert!(part.join("_manifest.json").exists() && remote.join("references/model=m/ckpt=1/reference.parquet").exists());
    let positions = i64_column(&read_batches(&remote.join("references/model=m/ckpt=1/reference.parquet")), "position");
    assert!(positions.iter().all(|p| *p != 0 && *p != 49), "--exclude-special: a special row in the cluster's sample");
    assert_eq!(cm["files"].as_array().unwrap().len(), 6, "one part per shard: {}", cm["files"]);
    let left: Vec<_> = std::fs::read_dir(&remote).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|n| !n.starts_with('.')), "staging left behind: {left:?}");
    // And `lidscope sql` reads it like any result.
    let n = lidscope_ok(&["sql", "--table", &format!("lid={}", s(&remote)), "--format", "csv", "SELECT count(*) AS n FROM lid"]);
    assert_eq!(n, "n\n12000\n");

    // A file reference (the local run's), given as a file: the same figures again.
    let reference = s(&local.join("references/model=m/ckpt=1/reference.parquet"));
    let by_file = d.join("by-file");
    let by_file_s = s(&by_file);
    let mut args = run_args(&cs, &by_file_s, &["--k", "16", "--reference", &reference]);
    args.extend(["--cluster", &url, "--token-file", &token]);
    let fm = json(&lidscope_ok(&args));
    assert_eq!(fm["reference_sha256"], lm["reference_sha256"]);
    assert_eq!(fm["rows"], lm["rows"]);

    // The same run locally and on the cluster, into `<name>-local` and `<name>-cluster`: their
    // manifests and directories.
    let both = |name: &str, extra: &[&str]| {
        let (l, r) = (s(&d.join(format!("{name}-local"))), s(&d.join(format!("{name}-cluster"))));
        let lj = json(&lidscope_ok(&run_args(&cs, &l, extra)));
        let mut args = run_args(&cs, &r, extra);
        args.extend(["--cluster", &url, "--token-file", &token]);
        (lj, json(&lidscope_ok(&args)), l, r)
    };

    // Several estimators on the cluster: the columns and means of the same local run.
    let (le, ce, local_est, remote_est) = both("est", &["--k", "16", "--reference", &reference, "--estimator", "twonn,mle"]);
    assert_eq!(ce["estimator"], "twonn,mle");
    assert_eq!(ce["estimates"]["lid_mle"]["n_finite"], le["estimates"]["lid_mle"]["n_finite"]);
    for (column, field) in [("lid_mle", "mean"), ("lid_mle", "mackay_ghahramani"), ("lid_twonn", "mean")] {
        let (x, y) = (ce["estimates"][column][field].as_f64().unwrap(), le["estimates"][column][field].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-12 * y.abs(), "{column} {field}: {x} on the cluster, {y} locally");
    }
    let q = "SELECT count(*) AS n, round(sum(lid_mle), 6) AS m FROM lid";
    let sum = |dir: &str| lidscope_ok(&["sql", "--table", &format!("lid={dir}"), "--format", "csv", q]);
    assert_eq!(sum(&remote_est), sum(&local_est));

    // --where on the cluster: the workers' pools and scans keep the same rows as the local run.
    let (lw, cw, local_w, remote_w) = both("where", &["--k", "16", "--reference-size", "500", "--pool", "1200", "--where", "position < 20 AND NOT special"]);
    assert_eq!(cw["where"], "position < 20 AND NOT special");
    assert_eq!(cw["rows"], lw["rows"]);
    assert_eq!(cw["reference_sha256"], lw["reference_sha256"], "the same sample of the kept rows");
    assert_same_rows(Path::new(&remote_w), Path::new(&local_w));

    // Without the token, or with another one: refused, nothing written.
    let denied = d.join("denied");
    let wrong = d.join("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let (wrong_s, denied_s) = (s(&wrong), s(&denied));
    for extra in [vec!["--token-file", wrong_s.as_str()], vec![]] {
        let mut args = run_args(&cs, &denied_s, &common);
        args.extend(["--cluster", &url]);
        args.extend(extra.iter().copied());
        let out = lidscope(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted without the right token");
        assert!(err.contains("token"), "{err}");
        assert!(!denied.exists(), "a refused run left {}", denied.display());
    }
    // A worker with the wrong token does not join.
    let out = Command::new(BIN).args(["worker", "--coordinator", &url, "--token-file", &s(&wrong)]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("wrong token"), "{}", String::from_utf8_lossy(&out.stderr));

    // Bad input: the local run's messages, naming the file; nothing committed.
    let bad = d.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let nan_file = bad.join("nan.parquet");
    let mut v = vectors(3000, 8, 5);
    v[2500 * 8 + 3] = f32::NAN;
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..3000));
    write_parquet_groups(&nan_file, &batch(vec![("seq_id", ids.clone()), ("position", ids), ("emb", fsl(v, 8))]), 500);
    let garbage = bad.join("garbage.parquet");
    std::fs::write(&garbage, b"this is not parquet").unwrap();
    let cases: [(&str, String, &[&str]); 3] = [
        ("nope", cs.clone(), &["nope", "part-000.parquet"]),
        ("emb", s(&garbage), &["garbage.parquet", "Parquet"]),
        ("emb", s(&nan_file), &["nan.parquet", "row 2500", "NaN"]),
    ];
    for (column, corpus, words) in cases {
        let o = d.join(format!("bad-{column}-{}", words[0]));
        let (o, t) = (s(&o), token.clone());
        let args = ["-q", "run", "--corpus", &corpus, "--embedding-column", column, "--id-columns", "seq_id,position", "--k", "5",
            "--reference-size", "100", "--pool", "200", "--out", &o, "--cluster", &url, "--token-file", &t, "--shard-rows", "500"];
        let out = lidscope(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        for w in words {
            assert!(err.contains(w), "{args:?}: {w:?} not in: {err}");
        }
        let manifests = lidscope_data::find_manifests(Path::new(&o)).unwrap_or_default();
        assert!(manifests.is_empty(), "a failed run committed {manifests:?}");
    }
    drop(cluster.workers.drain(..));
}

#[test]
fn a_worker_killed_mid_run_and_a_worker_joining() {
    let mut cluster = Cluster::new(2);
    let d = cluster.dir.path().to_path_buf();
    let c = corpus(&d, 8, 12_000, 96, 3000);
    let (cs, token, url) = (s(&c), s(&cluster.token), cluster.url.clone());
    let common = ["--k", "48", "--reference-size", "8000", "--pool", "20000"];
    let remote = d.join("cluster");
    let remote_s = s(&remote);
    let mut args = run_args(&cs, &remote_s, &common);
    args.extend(["--cluster", &url, "--token-file", &token, "--shard-rows", "3000"]);
    let client = Command::new(BIN).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();

    // Once a shard is committed, one worker dies (SIGKILL) and another joins.
    wait_for("a first committed shard", Duration::from_secs(120), || !committed_shards(&remote).is_empty());
    let mut victim = cluster.workers.remove(0);
    victim.0.kill().unwrap();
    let killed_at = Instant::now();
    let before = committed_shards(&remote).len();
    assert!(before < 32, "the run was over before the kill; make the corpus bigger");
    let joined = cluster.add_worker();

    let out = client.wait_with_output().unwrap();
    let recovered = killed_at.elapsed();
    assert!(out.status.success(), "run failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    let cm = json(&String::from_utf8(out.stdout).unwrap());
    eprintln!("run finished {recovered:?} after the kill ({before} of 32 shards committed before it)");
    let joined_work: Vec<_> = std::fs::read_dir(&joined).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(!joined_work.is_empty(), "the worker that joined got no task");

    let local = d.join("local");
    let lm = json(&lidscope_ok(&run_args(&cs, &s(&local), &common)));
    assert_same_manifest(&cm, &lm);
    assert_same_rows(&remote, &local);
}

#[test]
fn a_coordinator_killed_mid_run_resumes_without_redoing_committed_shards() {
    let mut cluster = Cluster::new(2);
    let d = cluster.dir.path().to_path_buf();
    let c = corpus(&d, 8, 12_000, 96, 3000);
    let (cs, token) = (s(&c), s(&cluster.token));
    let common = ["--k", "48", "--reference-size", "8000", "--pool", "20000", "--partition", "model=m"];
    let remote = d.join("cluster");
    let url = cluster.url.clone();
    let remote_s = s(&remote);
    let mut args = run_args(&cs, &remote_s, &common);
    args.extend(["--cluster", &url, "--token-file", &token, "--shard-rows", "3000"]);
    let client = Command::new(BIN).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("two committed shards", Duration::from_secs(120), || committed_shards(&remote).len() >= 2);
    cluster.kill_coordinator();
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success(), "the client cannot succeed without its coordinator");

    // What was committed before the kill: each part's inode, modification time and bytes.
    let staging: PathBuf = committed_shards(&remote)[0].parent().unwrap().parent().unwrap().to_path_buf();
    let mut kept = Vec::new();
    for shard in committed_shards(&remote) {
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&shard).unwrap()).unwrap();
        for p in rec["parts"].as_array().unwrap() {
            let f = staging.join("data").join(p.as_str().unwrap());
            let m = std::fs::metadata(&f).unwrap();
            kept.push((p.as_str().unwrap().to_string(), m.ino(), m.mtime_nsec(), std::fs::read(&f).unwrap()));
        }
    }
    assert!(kept.len() >= 2 && kept.len() < 32, "{} parts committed before the kill", kept.len());

    // The same coordinator address again: workers find it by themselves; the same command resumes.
    let port = cluster.port().to_string();
    cluster.start_coordinator(&format!("127.0.0.1:{port}"));
    let out = lidscope(&args);
    assert!(out.status.success(), "resumed run failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    assert!(String::from_utf8_lossy(&out.stderr).is_empty() || !String::from_utf8_lossy(&out.stderr).contains("error"));
    let cm = json(&String::from_utf8(out.stdout).unwrap());
    let data = remote.join("data/model=m");
    for (name, ino, mtime, bytes) in &kept {
        let f = data.join(name);
        let m = std::fs::metadata(&f).unwrap_or_else(|_| panic!("{name} committed before the kill is gone"));
        assert_eq!((m.ino(), m.mtime_nsec()), (*ino, *mtime), "{name} was rewritten, not moved");
        assert_eq!(&std::fs::read(&f).unwrap(), bytes);
    }
    let local = d.join("local");
    let lm = json(&lidscope_ok(&run_args(&cs, &s(&local), &common)));
    assert_same_manifest(&cm, &lm);
    assert_same_rows(&remote, &local);
}

#[test]
fn ctrl_c_cancels_a_cluster_run_and_the_same_command_resumes_it() {
    let cluster = Cluster::new(2);
    let d = cluster.dir.path().to_path_buf();
    let c = corpus(&d, 8, 12_000, 96, 3000);
    let (cs, token, url) = (s(&c), s(&cluster.token), cluster.url.clone());
    let common = ["--k", "48", "--reference-size", "8000", "--pool", "20000"];
    let remote = d.join("cluster");
    let remote_s = s(&remote);
    let mut args = run_args(&cs, &remote_s, &common);
    args.extend(["--cluster", &url, "--token-file", &token, "--shard-rows", "3000"]);
    let client = Command::new(BIN).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("a first committed shard", Duration::from_secs(120), || !committed_shards(&remote).is_empty());
    // Ctrl-C, as a terminal sends it.
    assert!(Command::new("kill").args(["-INT", &client.id().to_string()]).status().unwrap().success());
    let out = client.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert!(lidscope_data::find_manifests(&remote).unwrap().is_empty(), "a cancelled run committed a manifest");
    let kept = committed_shards(&remote).len();
    assert!((1..32).contains(&kept), "{kept} shards committed");

    let out = lidscope(&args);
    assert!(out.status.success(), "resumed run failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    let cm = json(&String::from_utf8(out.stdout).unwrap());
    let local = d.join("local");
    let lm = json(&lidscope_ok(&run_args(&cs, &s(&local), &common)));
    assert_same_manifest(&cm, &lm);
    assert_same_rows(&remote, &local);
}

#[test]
fn a_sweep_on_the_cluster_equals_the_local_sweep() {
    let cluster = Cluster::new(2);
    let d = cluster.dir.path().to_path_buf();
    for (i, (model, step)) in [("a", 100), ("a", 200), ("b", 100), ("b", 200)].into_iter().enumerate() {
        crate::sweep::checkpoint(&crate::sweep::corpus_path(&d, model, step), 1500, 3 + i, i as u64 + 5);
    }
    let spec = |results: &str| {
        let p = d.join(format!("{results}.toml"));
        std::fs::write(
            &p,
            format!(
                "results = \"{results}\"\nembedding_column = \"hidden\"\nid_columns = [\"seq_id\", \"position\"]\nk = 16\nreference_size = 500\npool = 1000\n\
                 [[corpus]]\npattern = \"emb/{{model}}/step-{{step}}/{{dataset}}/layer-{{layer}}.parquet\"\n"
            ),
        )
        .unwrap();
        s(&p)
    };
    let local = spec("local");
    lidscope_ok(&["-q", "sweep", &local]);
    let remote = spec("remote");
    let out = lidscope(&["-q", "sweep", &remote, "--cluster", &cluster.url, "--token-file", &s(&cluster.token), "--runs-in-flight", "3"]);
    assert!(out.status.success(), "cluster sweep failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    for (model, step) in [("a", 100), ("a", 200), ("b", 100), ("b", 200)] {
        let part = format!("model={model}/step={step}/dataset=wiki/layer=6");
        let m = |r: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(d.join(format!("{r}/data/{part}/_manifest.json"))).unwrap()).unwrap() };
        let (c, l) = (m("remote"), m("local"));
        assert_same_manifest(&c, &l);
        assert!(c["reference_source"].as_str().unwrap().starts_with("identities:"), "{}", c["reference_source"]);
        let rows = |r: &str| -> HashMap<(i64, i64), f64> {
            let b = read_batches(&d.join(format!("{r}/data/{part}")));
            let (seq, pos, lid) = (f64_column(&b, "seq_id"), f64_column(&b, "position"), f64_column(&b, "lid"));
            (0..seq.len()).map(|i| ((seq[i] as i64, pos[i] as i64), lid[i])).collect()
        };
        let (a, b) = (rows("remote"), rows("local"));
        assert_eq!((a.len(), b.len()), (1500, 1500), "every row once");
        for (k, v) in &b {
            assert!((a[k] - v).abs() <= 1e-9, "{part} row {k:?}: {} on the cluster, {v} locally", a[k]);
        }
    }
    let again = lidscope_ok(&["sweep", &remote, "--cluster", &cluster.url, "--token-file", &s(&cluster.token)]);
    assert!(again.contains("nothing to run: all 4 runs are up to date"), "{again}");
}

/// A Flight call to a worker at `addr` over TLS trusting `ca`, presenting `identity` (certificate
/// and key files) if given: Ok once the worker answers at all (`list_flights` is unimplemented).
fn flight_call(addr: &str, ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> Result<(), String> {
    use arrow_flight::flight_service_client::FlightServiceClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()));
        }
        let endpoint = Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
        let channel = endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?;
        match FlightServiceClient::new(channel).list_flights(arrow_flight::Criteria::default()).await {
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(()),
            Err(status) => Err(format!("{status:?}")),
            Ok(_) => Ok(()),
        }
    })
}

#[test]
fn a_mutual_tls_cluster_equals_the_local_run_and_refuses_peers_without_a_certificate_of_its_ca() {
    let mut cluster = Cluster::start(2, true);
    let d = cluster.dir.path().to_path_buf();
    let certs = cluster.certs.clone().unwrap();
    let c = corpus(&d, 2, 3000, 32, 1000);
    let (cs, token, url) = (s(&c), s(&cluster.token), cluster.url.clone());
    let common = ["--k", "12", "--reference-size", "1500", "--pool", "4000", "--partition", "model=m"];

    let local = d.join("local");
    let lm = json(&lidscope_ok(&run_args(&cs, &s(&local), &common)));
    let remote = d.join("cluster");
    let remote_s = s(&remote);
    let client = tls_args(&certs, "client");
    let mut args = run_args(&cs, &remote_s, &common);
    args.extend(["--cluster", &url, "--token-file", &token, "--shard-rows", "1000"]);
    args.extend(client.iter().map(String::as_str));
    let out = lidscope(&args);
    assert!(out.status.success(), "TLS cluster run failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    let cm = json(&String::from_utf8(out.stdout).unwrap());
    assert_same_manifest(&cm, &lm);
    assert_same_rows(&remote, &local);
    assert_eq!(cm["files"].as_array().unwrap().len(), 6, "one part per shard");

    // Refused, each leaving nothing behind: plaintext; a client certificate of another CA
    // (trusting the right one); the right certificate with the wrong token (the second factor);
    // an https:// URL without certificates (refused before dialling).
    let other = d.join("other-ca");
    lidscope_ok(&["certs", "--out", &s(&other), "--node", "client", "--node", "worker-9"]);
    let ca = s(&certs.join("ca.pem"));
    let (other_cert, other_key) = (s(&other.join("client.pem")), s(&other.join("client.key")));
    let foreign = ["--tls-ca", ca.as_str(), "--tls-cert", other_cert.as_str(), "--tls-key", other_key.as_str()];
    let wrong = d.join("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let wrong_s = s(&wrong);
    let plain_url = url.replacen("https://", "http://", 1);
    let client_refs: Vec<&str> = client.iter().map(String::as_str).collect();
    // (case, coordinator URL, token file, the client's TLS arguments, what the error must say)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<&'a str>, &'a [&'a str]);
    let cases: [Case; 4] = [
        ("plaintext", plain_url.as_str(), token.as_str(), vec![], &["broke the connection", "https://"]),
        ("foreign", url.as_str(), token.as_str(), foreign.to_vec(), &["broke the connection", "https://127.0.0.1", "--tls-cert"]),
        ("wrong-token", url.as_str(), wrong_s.as_str(), client_refs.clone(), &["token"]),
        ("no-certificate", url.as_str(), token.as_str(), vec![], &["--tls-ca"]),
    ];
    for (name, target, token_file, tls, words) in cases {
        let o = d.join(format!("refused-{name}"));
        let o_s = s(&o);
        let mut args = run_args(&cs, &o_s, &common);
        args.extend(["--cluster", target, "--token-file", token_file]);
        args.extend(tls.iter().copied());
        let out = lidscope(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted: {err}\n{}", String::from_utf8_lossy(&out.stdout));
        for w in words {
            assert!(err.contains(w), "{name}: {w:?} not in: {err}");
        }
        assert!(!o.exists(), "{name}: a refused run left {}", o.display());
    }

    // A client without a certificate, at the TLS level: the coordinator's port and a worker's
    // Flight port refuse it, and take the same call with the client's certificate.
    let port_addr = url.trim_start_matches("https://").to_string();
    let with_cert = Some((certs.join("client.pem"), certs.join("client.key")));
    for addr in [cluster.flight[0].clone(), port_addr] {
        assert!(flight_call(&addr, &certs.join("ca.pem"), with_cert.clone()).is_ok(), "{addr}: refused the cluster's client");
        let err = flight_call(&addr, &certs.join("ca.pem"), None).expect_err("a call without a client certificate was answered");
        assert!(!err.contains("Unimplemented"), "{addr}: {err}");
        let foreign_id = Some((other.join("client.pem"), other.join("client.key")));
        assert!(flight_call(&addr, &certs.join("ca.pem"), foreign_id).is_err(), "{addr}: a certificate of another CA was taken");
    }

    // A worker with a certificate of another CA cannot join: it says why and exits.
    let (w_cert, w_key) = (s(&other.join("worker-9.pem")), s(&other.join("worker-9.key")));
    let args = ["worker", "--coordinator", &url, "--token-file", &token, "--tls-ca", &ca, "--tls-cert", &w_cert, "--tls-key", &w_key];
    let mut child = Command::new(BIN).args(args).env("LIDSCOPE_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("a worker with a foreign certificate kept trying for 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success() && err.contains("TLS"), "{status:?}: {err}");
    drop(cluster.workers.drain(..));
}
