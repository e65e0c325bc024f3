//! The user guide's grokking walkthrough (docs/reports.md), run as written (its shell block, verbatim) on a subsample of
//! the fixture run's checkpoints, and what the guide says it measures: mean LID falls across the
//! jump in validation accuracy (steps 3,600 to 4,900), by more than half over all positions, and
//! it moves against validation accuracy over the checkpoints.

use std::collections::BTreeMap;
use std::path::Path;

use crate::util::*;

/// The checkpoints the test embeds: both sides of memorisation and of the jump, and the end.
const STEPS: [u32; 10] = [0, 50, 200, 500, 1000, 2200, 3600, 4200, 4900, 15000];

/// The shell block after the guide's "## The grokking run, end to end" heading (docs/reports.md).
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reports.md")).unwrap();
    let section = &readme[readme.find("## The grokking run, end to end").expect("the walkthrough's heading")..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    section[start..start + section[start..].find("```").unwrap()].to_string()
}

/// (layer, tokens, step) -> mean LID, from `summary.csv`.
type MeanLids = BTreeMap<(String, String, u32), f64>;
/// (layer, tokens, metric) -> spearman.
type Correlations = BTreeMap<(String, String, String), f64>;

/// (layer, tokens, step) -> mean LID, from `summary.csv`; and (layer, tokens, metric) -> spearman.
fn summaries(report: &Path) -> (MeanLids, Correlations) {
    let table = |p: &Path| -> Vec<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(p).unwrap();
        let mut lines = text.lines();
        let head: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
        lines.map(|l| head.iter().cloned().zip(l.split(',').map(String::from)).collect()).collect()
    };
    let means = table(&report.join("summary.csv"))
        .into_iter()
        .map(|r| ((r["layer"].clone(), r["tokens"].clone(), r["step"].parse().unwrap()), r["mean_lid"].parse().unwrap()))
        .collect();
    let corr = table(&report.join("correlations.csv"))
        .into_iter()
        .map(|r| ((r["layer"].clone(), r["tokens"].clone(), r["metric"].clone()), r["spearman"].parse().unwrap()))
        .collect();
    (means, corr)
}

#[test]
fn the_grokking_walkthrough_reproduces_the_guide() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // The fixture with a subsample of its checkpoints, laid out as the walkthrough expects.
    let src = fixture("grokking");
    let f = root.join("fixture");
    std::fs::create_dir_all(f.join("checkpoints")).unwrap();
    for name in ["texts.parquet", "metrics.csv"] {
        std::os::unix::fs::symlink(src.join(name), f.join(name)).unwrap();
    }
    for step in STEPS {
        std::os::unix::fs::symlink(src.join(format!("checkpoints/step-{step}")), f.join(format!("checkpoints/step-{step}"))).unwrap();
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(root.join("examples/grokking")).unwrap();
    std::fs::copy(repo.join("examples/grokking/sweep.toml"), root.join("examples/grokking/sweep.toml")).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_lidscope")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &walkthrough()])
        .current_dir(root)
        .env("PATH", path)
        .env("F", &f)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the walkthrough failed:\n{stderr}");
    let report = root.join("grokking/report");
    for file in ["index.html", "trend.svg", "metrics.svg", "distributions.svg", "correlations.csv"] {
        assert!(report.join(file).is_file(), "{file} missing");
    }
    let (means, corr) = summaries(&report);
    assert_eq!(means.len(), 4 * STEPS.len(), "a run per step, layer and token set");
    let m = |layer: &str, tokens: &str, step: u32| means[&(layer.to_string(), tokens.to_string(), step)];
    // Across the jump (validation accuracy 0.40 at 3,600, 1.00 at 4,900), as the guide states:
    // every position, both layers: mean LID falls by more than half (measured 62% and 55%).
    for layer in ["1", "2_prenorm"] {
        let (before, after) = (m(layer, "all", 3600), m(layer, "all", 4900));
        assert!(after < 0.5 * before, "layer {layer}, all positions: {before} at 3600, {after} at 4900");
    }
    // The answer position alone falls too, by less (measured 21% and 12%).
    for layer in ["1", "2_prenorm"] {
        let (before, after) = (m(layer, "answer", 3600), m(layer, "answer", 4900));
        assert!(after < 0.95 * before && after > 0.5 * before, "layer {layer}, answer: {before} at 3600, {after} at 4900");
    }
    // Over the checkpoints, mean LID before the final norm moves against validation accuracy.
    let rho = corr[&("2_prenorm".to_string(), "all".to_string(), "val_acc".to_string())];
    assert!(rho < -0.6, "spearman of mean LID (2_prenorm, all) with val_acc: {rho}");
    // The fall across the jump is listed with what validation accuracy did.
    let falls = std::fs::read_to_string(report.join("falls.csv")).unwrap();
    let row = falls.lines().find(|l| l.starts_with("1,all,4200,4900,") && l.contains(",val_acc,")).unwrap_or_else(|| panic!("no fall 4200 -> 4900 listed:\n{falls}"));
    let f: Vec<&str> = row.split(',').collect();
    assert!(f[11].parse::<f64>().unwrap() > 0.3, "val_acc rose over the fall: {row}");
    // The checkpoints are spaced geometrically: a log axis, and a heatmap of the 10 runs per line.
    assert!(std::fs::read_to_string(report.join("trend.svg")).unwrap().contains("step (log scale)"));
    assert!(std::fs::read_to_string(report.join("distributions.svg")).unwrap().contains("one column per run"));
    // The metrics file's other rows (every 50 steps) are reported, not dropped silently.
    assert!(stderr.contains("rows of the metrics file are no run's checkpoint"), "{stderr}");
}
