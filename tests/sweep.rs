//! `lidscope sweep`: a generated sweep of two models and five checkpoints each, whose points lie
//! on manifolds of decreasing dimension as the step grows. Every run once, nothing on a second
//! sweep, a changed input redone, a killed sweep resumed with only the missing runs, a new
//! checkpoint picked up by --watch, the trend of the results following the generated dimensions,
//! and bad specs refused with their line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int32Array, Int64Array};

use crate::util::*;

const STEPS: [u32; 5] = [100, 200, 400, 800, 1600];

/// The manifold dimension of a model's checkpoint: falling as training goes on.
fn manifold_dim(model: &str, step: u32) -> usize {
    let dims = if model == "a" { [8, 6, 4, 3, 2] } else { [9, 7, 5, 3, 2] };
    STEPS.iter().position(|s| *s == step).map_or(1, |i| dims[i])
}

/// `n` tokens (seq_id, position: the same identities in every checkpoint) near an
/// `m`-dimensional linear manifold in 24 dimensions, with a per-checkpoint seed.
pub(crate) fn checkpoint(path: &Path, n: usize, m: usize, seed: u64) {
    const D: usize = 24;
    let z = vectors(n, m, seed);
    let basis = vectors(m, D, seed ^ 0xABCD);
    let mut values = Vec::with_capacity(n * D);
    for i in 0..n {
        for p in 0..D {
            values.push(3.0 + (0..m).map(|j| (z[i * m + j] - 0.5) * basis[j * D + p]).sum::<f32>());
        }
    }
    let b = batch(vec![
        ("seq_id", Arc::new(Int64Array::from_iter_values((0..n).map(|i| (i / 32) as i64))) as ArrayRef),
        ("position", Arc::new(Int32Array::from_iter_values((0..n).map(|i| (i % 32) as i32))) as ArrayRef),
        ("hidden", fsl(values, D)),
    ]);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Written aside and renamed: a watcher never sees half a file.
    let tmp = path.with_extension("tmp");
    write_parquet(&tmp, &b);
    std::fs::rename(&tmp, path).unwrap();
}

pub(crate) fn corpus_path(root: &Path, model: &str, step: u32) -> PathBuf {
    root.join(format!("emb/{model}/step-{step}/wiki/layer-6.parquet"))
}

/// A sweep of two models x five checkpoints in `root`, `n` tokens each.
fn generate(root: &Path, n: usize) {
    for (mi, model) in ["a", "b"].iter().enumerate() {
        for (si, step) in STEPS.iter().enumerate() {
            checkpoint(&corpus_path(root, model, *step), n, manifold_dim(model, *step), (mi * 10 + si) as u64 + 1);
        }
    }
}

fn write_spec(root: &Path, extra: &str) -> PathBuf {
    let spec = root.join("sweep.toml");
    std::fs::write(
        &spec,
        format!(
            r#"results = "results"
embedding_column = "hidden"
id_columns = ["seq_id", "position"]
k = 16
reference_size = 400
pool = 800
{extra}
[[corpus]]
pattern = "emb/{{model}}/step-{{step}}/{{dataset}}/layer-{{layer}}.parquet"
"#
        ),
    )
    .unwrap();
    spec
}

fn manifest(root: &Path, model: &str, step: u32) -> Option<serde_json::Value> {
    let p = root.join(format!("results/data/model={model}/step={step}/dataset=wiki/layer=6/_manifest.json"));
    std::fs::read(p).ok().map(|b| serde_json::from_slice(&b).unwrap())
}

fn committed(root: &Path) -> usize {
    ["a", "b"].iter().flat_map(|m| STEPS.iter().map(move |s| (m, s))).filter(|(m, s)| manifest(root, m, **s).is_some()).count()
}

fn lines_starting(out: &str, word: &str) -> usize {
    out.lines().filter(|l| l.starts_with(word)).count()
}

#[test]
fn a_sweep_runs_every_run_once_then_nothing_then_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root, 600);
    let spec = s(&write_spec(root, ""));

    let plan = lidscope_ok(&["sweep", &spec, "--dry-run"]);
    assert_eq!(lines_starting(&plan, "new"), 10, "{plan}");
    assert_eq!(committed(root), 0, "a dry run runs nothing");

    let out = lidscope_ok(&["sweep", &spec]);
    assert_eq!(lines_starting(&out, "committed"), 10, "{out}");
    assert_eq!(committed(root), 10);

    // Every checkpoint of the dataset is measured on the same token identities.
    let ids = |model: &str, step: u32| {
        let b = read_batches(&root.join(format!("results/references/model={model}/step={step}/dataset=wiki/layer=6/reference.parquet")));
        let mut v: Vec<(i64, i64)> = f64_column(&b, "seq_id").into_iter().zip(f64_column(&b, "position")).map(|(a, b)| (a as i64, b as i64)).collect();
        v.sort();
        v
    };
    let first = ids("a", 100);
    assert_eq!(first.len(), 400);
    for (m, st) in [("a", 1600), ("b", 100), ("b", 800)] {
        assert_eq!(ids(m, st), first, "model={m} step={st} is measured on other tokens");
    }
    let source = manifest(root, "b", 400).unwrap()["reference_source"].as_str().unwrap().to_string();
    assert!(source.starts_with("identities:") && source.contains("_samples"), "{source}");

    // The trend follows the generated dimensions: mean LID falls with the step, for each model.
    for model in ["a", "b"] {
        let means: Vec<f64> = STEPS.iter().map(|s| manifest(root, model, *s).unwrap()["mean_lid"].as_f64().unwrap()).collect();
        for (w, st) in means.windows(2).zip(STEPS.iter().skip(1)) {
            assert!(w[1] < w[0], "model {model}: mean LID rises at step {st}: {means:?}");
        }
        // Local TwoNN on 16 neighbours underestimates higher dimensions; low ones it finds.
        for (m, st) in means.iter().zip(STEPS) {
            let want = manifold_dim(model, st) as f64;
            let (lo, hi) = if want <= 4.0 { (0.75 * want, 1.25 * want) } else { (0.5 * want, 1.1 * want) };
            assert!((lo..=hi).contains(m), "model {model} step {st}: mean LID {m} for a {want}-d manifold (means {means:?})");
        }
    }

    // Again at once: nothing to do, and nothing rewritten.
    let before = std::fs::metadata(root.join("results/data/model=a/step=100/dataset=wiki/layer=6/_manifest.json")).unwrap().modified().unwrap();
    let again = lidscope_ok(&["sweep", &spec]);
    assert!(again.contains("nothing to run: all 10 runs are up to date"), "{again}");
    let after = std::fs::metadata(root.join("results/data/model=a/step=100/dataset=wiki/layer=6/_manifest.json")).unwrap().modified().unwrap();
    assert_eq!(before, after);

    // One changed checkpoint: only it is redone.
    std::thread::sleep(Duration::from_millis(20));
    checkpoint(&corpus_path(root, "b", 400), 600, 3, 99);
    let plan = lidscope_ok(&["sweep", &spec, "--dry-run"]);
    assert_eq!(lines_starting(&plan, "changed"), 1, "{plan}");
    assert!(plan.lines().any(|l| l.starts_with("changed") && l.contains("model=b step=400")), "{plan}");
    assert_eq!(lines_starting(&plan, "done"), 9, "{plan}");
    let old = manifest(root, "b", 400).unwrap()["mean_lid"].as_f64().unwrap();
    let out = lidscope_ok(&["sweep", &spec]);
    assert_eq!(lines_starting(&out, "committed"), 1, "{out}");
    assert!(out.contains("1 committed now, 9 already up to date"), "{out}");
    let new = manifest(root, "b", 400).unwrap()["mean_lid"].as_f64().unwrap();
    assert!(new < old - 0.5, "the redone run measures the new 3-d checkpoint: {old} -> {new}");

    // A changed parameter changes every run.
    let spec = s(&write_spec(root, "discard_fraction = 0.2"));
    let plan = lidscope_ok(&["sweep", &spec, "--dry-run"]);
    assert_eq!(lines_starting(&plan, "changed"), 10, "{plan}");
}

#[test]
fn a_killed_sweep_resumes_with_only_the_missing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root, 3000);
    let spec = s(&write_spec(root, ""));
    let mut child = Command::new(env!("CARGO_BIN_EXE_lidscope")).args(["sweep", &spec, "--threads", "1"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while committed(root) < 2 {
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before it could be killed; make the corpora bigger");
        assert!(t.elapsed() < Duration::from_secs(120), "no run committed in two minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = committed(root);
    assert!(done < 10, "the sweep finished before it was killed");

    let plan = lidscope_ok(&["sweep", &spec, "--dry-run"]);
    assert_eq!(lines_starting(&plan, "done"), done, "{plan}");
    assert_eq!(lines_starting(&plan, "new"), 10 - done, "{plan}");
    let out = lidscope_ok(&["sweep", &spec]);
    assert_eq!(lines_starting(&out, "committed"), 10 - done, "{out}");
    assert_eq!(committed(root), 10);
    assert!(lidscope_ok(&["sweep", &spec]).contains("nothing to run"));
}

#[test]
fn watch_picks_up_a_new_checkpoint_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root, 400);
    let spec = s(&write_spec(root, "settle_seconds = 1"));
    let child = Command::new(env!("CARGO_BIN_EXE_lidscope"))
        .args(["sweep", &spec, "--watch", "--interval", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(120), "waited two minutes for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("the first ten runs", &|| committed(root) == 10);

    // A checkpoint being written (modified just now) waits; once settled, it is run.
    let new = corpus_path(root, "a", 3200);
    checkpoint(&new, 400, 1, 77);
    let plan = lidscope_ok(&["sweep", &spec, "--dry-run", "--watch"]);
    assert!(plan.lines().any(|l| l.starts_with("waiting") && l.contains("step=3200")), "{plan}");
    wait_for("the new checkpoint", &|| manifest(root, "a", 3200).is_some());

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "watch should exit 0 on SIGTERM: {stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(lines_starting(&stdout, "committed"), 11, "{stdout}");
    assert!(lidscope_ok(&["sweep", &spec]).contains("all 11 runs are up to date"));
}

#[test]
fn bad_specs_are_refused_naming_the_line_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root, 100);
    let spec = root.join("bad.toml");
    let base = "results = \"results\"\nembedding_column = \"hidden\"\nid_columns = [\"seq_id\", \"position\"]\n";
    let cases: [(&str, &str); 7] = [
        ("estimator = \"twonn,nope\"\n[[corpus]]\npattern = \"emb/{model}/step-{step}/{dataset}/layer-{layer}.parquet\"\n", ":4: estimator = \"twonn,nope\": invalid parameter: unknown estimator \"nope\" (expected one of: twonn,"),
        ("kk = 16\n[[corpus]]\npattern = \"emb/{model}/step-{step}/{dataset}/layer-{layer}.parquet\"\n", ":4: unknown field `kk`"),
        ("[[corpus]]\npattern = \"emb/a/step-100/wiki/layer-6.parquet\"\n", ":5: pattern \"emb/a/step-100/wiki/layer-6.parquet\" has no capture"),
        ("[[corpus]]\npattern = \"emb/{model}/step-{lid}/{dataset}/layer-{layer}.parquet\"\n", ":5: capture {lid} has the name of a column of the results"),
        ("[[corpus]]\npattern = \"emb/{model}/step-{position}/{dataset}/layer-{layer}.parquet\"\n", ":5: capture {position}"),
        ("[[corpus]]\npattern = \"nothing/{model}/here.parquet\"\n", "no pattern matched any file (line 5: nothing/{model}/here.parquet)"),
        ("k = 2\n[[corpus]]\npattern = \"emb/{model}/step-{step}/{dataset}/layer-{layer}.parquet\"\n", ":4: k = 2: must be at least 3"),
    ];
    for (body, want) in cases {
        std::fs::write(&spec, format!("{base}{body}")).unwrap();
        let err = lidscope_err(&["sweep", &s(&spec)]);
        assert!(err.contains(want), "spec:\n{body}\nwant {want:?} in:\n{err}");
        assert!(err.contains("bad.toml"), "the error names the spec: {err}");
    }
    std::fs::write(&spec, "embedding_column = \"hidden\"\n[[corpus]]\npattern = \"emb/{model}/x.parquet\"\n").unwrap();
    assert!(lidscope_err(&["sweep", &s(&spec)]).contains("missing key `results`"));
    assert!(!root.join("results").exists(), "a refused spec writes nothing");
}
