//! `lidscope bench --cluster`: what the cluster costs on one machine, and how fast it recovers.
//!
//! One generated corpus is run four times as separate processes of this executable: locally, on
//! a loopback cluster (a coordinator and two workers started here), on a second such cluster with
//! mutual TLS on every port, and on the first cluster again with one worker killed (SIGKILL) once
//! a quarter of the shards are committed. With `--s3` the first cluster also runs the corpus
//! uploaded to an object store, its results committed there. The figures are ratios of wall times
//! taken on the same machine in the same minutes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::args::BenchArgs;
use crate::synth::{write_corpus, SynthSpec};

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this executable with `args` and returns it with the first line it prints.
fn start(args: &[&str]) -> Result<(Proc, String)> {
    let mut child = Command::new(std::env::current_exe()?).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    if line.is_empty() {
        bail!("lidscope {} ended before it was ready", args.join(" "));
    }
    Ok((Proc(child), line.trim().to_string()))
}

pub fn main(a: &BenchArgs) -> Result<serde_json::Value> {
    let tmp = tempfile::tempdir()?;
    let corpus = tmp.path().join("corpus");
    let files = (a.rows / 100_000).max(4);
    let t = Instant::now();
    write_corpus(&corpus, &SynthSpec { rows: a.rows, dim: a.dim, manifold_dim: a.manifold_dim, seed: a.seed, files })?;
    eprintln!("generated {} x {} in {files} files in {:.1} s", a.rows, a.dim, t.elapsed().as_secs_f64());
    let reference = a.reference_size.unwrap_or(4000);
    let token = tmp.path().join("token");
    std::fs::write(&token, "bench-token")?;
    let (c, tk) = (corpus.display().to_string(), token.display().to_string());
    let (k, size, pool) = (a.k.to_string(), reference.to_string(), (reference * 5 / 2).to_string());
    let certs = tmp.path().join("certs");
    let nodes = ["coordinator", "worker-0", "worker-1", "client"].map(|n| lidscope_cluster::certs::Node::parse(n).expect("a valid name"));
    lidscope_cluster::certs::create(&certs, &nodes)?;
    let tls = |node: &str| -> Vec<String> {
        let f = |ext: &str| certs.join(format!("{node}.{ext}")).display().to_string();
        vec!["--tls-ca".into(), certs.join(lidscope_cluster::certs::CA_CERT).display().to_string(), "--tls-cert".into(), f("pem"), "--tls-key".into(), f("key")]
    };
    let run_on = |corpus: &str, out: &str, cluster: Option<&str>| -> Vec<String> {
        let mut v: Vec<String> = ["-q", "run", "--corpus", corpus, "--embedding-column", "embedding", "--id-columns", "seq_id,position", "--json",
            "--k", &k, "--reference-size", &size, "--pool", &pool, "--out", out]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(url) = cluster {
            v.extend(["--cluster", url, "--token-file", &tk].map(String::from));
            if url.starts_with("https://") {
                v.extend(tls("client"));
            }
        }
        v
    };
    let run = |out: &str, cluster: Option<&str>| run_on(&c, out, cluster);
    let timed = |args: Vec<String>| -> Result<(f64, lidscope_data::Manifest)> {
        let t = Instant::now();
        let out = Command::new(std::env::current_exe()?).args(&args).output()?;
        if !out.status.success() {
            bail!("lidscope {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok((t.elapsed().as_secs_f64(), serde_json::from_slice(&out.stdout)?))
    };
    let dir = |name: &str| tmp.path().join(name).display().to_string();

    let (local, lm) = timed(run(&dir("local"), None))?;
    eprintln!("local run: {local:.2} s (mean LID {:.6})", lm.mean_lid);

    // A coordinator and two workers, in plaintext or with `--tls-*` for every node.
    let start_cluster = |with_tls: bool| -> Result<(Proc, String, Vec<Proc>)> {
        let node = |name: &str| if with_tls { tls(name) } else { Vec::new() };
        let mut args: Vec<String> = ["coordinator", "--bind", "127.0.0.1:0", "--token-file", &tk, "--worker-timeout", "8"].map(String::from).to_vec();
        args.extend(node("coordinator"));
        let (coordinator, line) = start(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let url = line.rsplit(' ').next().context("the coordinator's address")?.to_string();
        let mut workers = Vec::new();
        for w in 0..2 {
            let mut args: Vec<String> = ["worker", "--coordinator", &url, "--token-file", &tk].map(String::from).to_vec();
            args.extend(node(&format!("worker-{w}")));
            workers.push(start(&args.iter().map(String::as_str).collect::<Vec<_>>())?.0);
        }
        Ok((coordinator, url, workers))
    };
    let (_coordinator, url, mut workers) = start_cluster(false)?;
    let (cluster, cm) = timed(run(&dir("cluster"), Some(&url)))?;
    let shards = cm.files.len();
    eprintln!("cluster run (2 workers, {shards} shards): {cluster:.2} s, cluster / local = {:.2} (mean LID identical: {})", cluster / local, cm.mean_lid == lm.mean_lid);

    // The same with the corpus read from an object store and the result committed there.
    let on_store = match &a.s3 {
        Some(prefix) => {
            let (seconds, sm) = on_object_store(prefix, &corpus, |c, out| run_on(c, out, Some(&url)), &timed)?;
            eprintln!("cluster run on {prefix}: {seconds:.2} s, store / file-system cluster = {:.3} (mean LID identical: {})", seconds / cluster, sm.mean_lid == lm.mean_lid);
            Some((seconds, sm.mean_lid == lm.mean_lid))
        }
        None => None,
    };

    // The same on a cluster with mutual TLS on every port (stopped before the next run).
    let (tls_seconds, tm) = {
        let (_c, tls_url, _w) = start_cluster(true)?;
        timed(run(&dir("cluster-tls"), Some(&tls_url)))?
    };
    eprintln!("cluster run with mutual TLS: {tls_seconds:.2} s, TLS / plaintext cluster = {:.3} (mean LID identical: {})", tls_seconds / cluster, tm.mean_lid == lm.mean_lid);

    // Again, with one worker killed once a quarter of the shards are in.
    let out = dir("killed");
    let mut client = Proc(Command::new(std::env::current_exe()?).args(run(&out, Some(&url))).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?);
    let start_run = Instant::now();
    while committed(Path::new(&out)) < shards.div_ceil(4) {
        if client.0.try_wait()?.is_some() {
            bail!("the run ended before a quarter of its shards were committed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut victim = workers.remove(0);
    victim.0.kill()?;
    let killed = Instant::now();
    let status = client.0.wait()?;
    let (after_kill, total) = (killed.elapsed().as_secs_f64(), start_run.elapsed().as_secs_f64());
    if !status.success() {
        bail!("the run with a killed worker failed");
    }
    eprintln!("run with a worker killed at {:.2} s: done {after_kill:.2} s after the kill, {total:.2} s in all ({:+.2} s against the undisturbed run)",
        total - after_kill, total - cluster);
    let mut report = json!({
        "rows": a.rows, "dim": a.dim, "k": a.k, "reference_rows": reference, "shards": shards,
        "local_seconds": local, "cluster_seconds": cluster, "cluster_over_local": cluster / local,
        "tls_cluster_seconds": tls_seconds, "tls_over_plaintext_cluster": tls_seconds / cluster,
        "killed_run_seconds": total, "seconds_from_kill_to_commit": after_kill, "extra_seconds_from_kill": total - cluster,
        "mean_lid_identical": cm.mean_lid == lm.mean_lid && tm.mean_lid == lm.mean_lid && on_store.is_none_or(|(_, same)| same),
    });
    if let Some((seconds, _)) = on_store {
        report["s3_cluster_seconds"] = json!(seconds);
        report["s3_over_file_cluster"] = json!(seconds / cluster);
    }
    Ok(report)
}

/// Uploads the corpus under `prefix` (a fresh sub-prefix per bench), runs `args(corpus, out)`
/// with both on the store, and deletes what it put there, whether the run succeeded or not.
fn on_object_store(
    prefix: &str,
    corpus: &Path,
    args: impl Fn(&str, &str) -> Vec<String>,
    timed: &dyn Fn(Vec<String>) -> Result<(f64, lidscope_data::Manifest)>,
) -> Result<(f64, lidscope_data::Manifest)> {
    use lidscope_data::store::{self, ObjectUrl};
    let base = ObjectUrl::parse(prefix)?.with_context(|| format!("--s3 {prefix}: not an s3://BUCKET/PREFIX URL"))?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let root = base.join(&format!("lidscope-bench-{stamp}-{}/", std::process::id()));
    let t = Instant::now();
    let mut files: Vec<_> = std::fs::read_dir(corpus)?.collect::<std::io::Result<_>>()?;
    files.sort_by_key(|e| e.file_name());
    let result = (|| {
        for f in &files {
            store::upload(&f.path(), &root.join(&format!("corpus/{}", f.file_name().to_string_lossy())))?;
        }
        eprintln!("uploaded the corpus to {} in {:.1} s", root.url(), t.elapsed().as_secs_f64());
        timed(args(&root.join("corpus/").url(), &root.join("results").url()))
    })();
    // Everything under the bench's own prefix (staging on this host is removed by the run).
    let cleaned = store::list(&root).and_then(|objects| {
        objects.iter().try_for_each(|m| store::delete(&ObjectUrl { bucket: root.bucket.clone(), key: m.location.to_string() }))
    });
    if let Err(e) = cleaned {
        eprintln!("warning: could not delete the bench's objects under {}: {e}", root.url());
    }
    result
}

/// Committed shards of the run in `out` so far.
fn committed(out: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(out) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-run-"))
        .filter_map(|e| std::fs::read_dir(e.path().join("shards")).ok())
        .map(|r| r.flatten().filter(|s| s.path().extension().is_some_and(|x| x == "json")).count())
        .sum()
}
