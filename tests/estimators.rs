//! Golden parity of every local estimator beside TwoNN (`../shared/fixtures/estimators/`, made by
//! scikit-dimension 0.3.4 and 0.5.0) through the kernel API: all of them from one search per
//! neighbourhood size, each golden column at the fixtures README's tolerance.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use lidscope_kernel::{pointwise_estimates, pointwise_lid, KnnIndex, LidConfig, LocalEstimator, PointEstimates, Rows, SearchStrategy, LOCAL_ESTIMATOR_NAMES};

use crate::util::*;

/// Golden column stem (before `_k<k>`), the estimator that gives it, and whether its values are
/// integers (lPCA versions but the participation ratio), compared exactly.
const COLUMNS: &[(&str, &str, bool)] = &[
    ("mle", "mle", false),
    ("mle_unbiased", "mle-unbiased", false),
    ("mom", "mom", false),
    ("lpca_fo", "lpca-fo", true),
    ("lpca_fan", "lpca-fan", true),
    ("lpca_ratio", "lpca-ratio", true),
    ("lpca_participation_ratio", "lpca-pr", false),
    ("lpca_kaiser", "lpca-kaiser", true),
    ("lpca_broken_stick", "lpca-broken-stick", true),
    ("twonn050", "twonn-v05", false),
    ("tle", "tle", false),
];

/// Every estimator, defaults.
fn all() -> Vec<LocalEstimator> {
    LocalEstimator::all()
}

/// Checks every golden column of `k` in the two files against `got`; prints each column's worst
/// error and share of rows within tolerance.
fn check_all(what: &str, got: &PointEstimates, k: usize, goldens: &[&[RecordBatch]]) {
    check_columns(what, |name| got.column(name).map(<[f64]>::to_vec), k, goldens);
}

/// [`check_all`] over columns by estimator name, wherever they come from (the kernel, a run's
/// `lid_<name>` columns).
fn check_columns(what: &str, got: impl Fn(&str) -> Option<Vec<f64>>, k: usize, goldens: &[&[RecordBatch]]) {
    let mut checked = 0;
    for (stem, name, integer) in COLUMNS {
        let col = format!("{stem}_k{k}");
        let Some(b) = goldens.iter().find(|b| b[0].schema().column_with_name(&col).is_some()) else { continue };
        let want = f64_column(b, &col);
        let have = got(name).unwrap_or_else(|| panic!("no estimate {name}"));
        let have = have.as_slice();
        assert_eq!(have.len(), want.len(), "{what} {col}: rows");
        let err: Vec<f64> = have.iter().zip(&want).map(|(g, w)| if g == w { 0.0 } else { (g - w).abs() }).collect();
        let max = err.iter().fold(0.0f64, |m, e| if e.is_nan() { f64::INFINITY } else { m.max(*e) });
        let tol = if *integer { 0.0 } else { 1e-3 };
        let within = err.iter().filter(|e| **e <= tol).count();
        eprintln!("{what} {col}: max |err| {max:.3e}, {within} of {} rows within {tol:e} ({:.4}%)", want.len(), 100.0 * within as f64 / want.len() as f64);
        if *integer {
            let allowed = (want.len() as f64 * 0.001).floor() as usize;
            assert!(want.len() - within <= allowed, "{what} {col}: {} of {} rows differ (allowed {allowed})", want.len() - within, want.len());
        } else {
            assert_golden(&format!("{what} {col}"), have, &want);
        }
        checked += 1;
    }
    assert_eq!(checked, COLUMNS.len(), "{what}: every golden column of k = {k} found");
}

#[test]
fn kernel_estimators_mixture_small() {
    let b = read_batches(&fixture("mixture_small.parquet"));
    let g034 = read_batches(&fixture("estimators/mixture_small.estimators.034.parquet"));
    let g050 = read_batches(&fixture("estimators/mixture_small.estimators.050.parquet"));
    let ids = f64_column(&b, "row_id");
    assert_eq!(f64_column(&g034, "row_id"), ids, "034 rows in the set's order");
    assert_eq!(f64_column(&g050, "row_id"), ids, "050 rows in the set's order");
    let (x, dim) = embeddings(&b, "embedding");
    let rows = Rows::from_flat(&x, dim).unwrap();
    let index = KnnIndex::new(rows, SearchStrategy::Gemm).unwrap();
    let me: Vec<Option<u32>> = (0..rows.len() as u32).map(Some).collect();
    for k in [20, 64] {
        let (got, _) = pointwise_estimates(&index, rows, k, 0.1, &all(), Some(&me)).unwrap();
        check_all("mixture_small", &got, k, &[&g034, &g050]);
        // `twonn` from the same pass is pointwise_lid's `lid`, to the bit.
        let (lids, _) = pointwise_lid(&index, rows, &LidConfig { k, ..LidConfig::default() }, Some(&me)).unwrap();
        let twonn = got.column("twonn").unwrap();
        assert!(lids.iter().zip(twonn).all(|(p, t)| p.lid.to_bits() == t.to_bits()), "k = {k}: twonn is lid");
    }
    // The README's k = 64 golden of today's TwoNN, from the same one-pass call.
    let (got, _) = pointwise_estimates(&index, rows, 64, 0.1, &all(), Some(&me)).unwrap();
    assert_golden("mixture_small twonn lid_k64", got.column("twonn").unwrap(), &f64_column(&b, "lid_k64"));
    assert_golden("mixture_small twonn-mle lid_mle_k64", got.column("twonn-mle").unwrap(), &f64_column(&b, "lid_mle_k64"));
}

#[test]
fn kernel_estimators_minilm_against_flagged_reference() {
    let c = read_batches(&fixture("minilm_fortunes.parquet"));
    let g = read_batches(&fixture("minilm_fortunes.golden.parquet"));
    let g034 = read_batches(&fixture("estimators/minilm_fortunes.estimators.034.parquet"));
    let g050 = read_batches(&fixture("estimators/minilm_fortunes.estimators.050.parquet"));
    let (corpus, dim) = embeddings(&c, "hidden_L6");
    let rows = f64_column(&g, "row");
    assert!(rows.iter().enumerate().all(|(i, r)| *r as usize == i), "golden rows are in corpus order");
    let (seq, pos) = (f64_column(&c, "seq_id"), f64_column(&c, "position"));
    for golden in [&g034, &g050] {
        assert_eq!(f64_column(golden, "seq_id"), seq, "estimator goldens in corpus order");
        assert_eq!(f64_column(golden, "position"), pos, "estimator goldens in corpus order");
    }
    let in_reference = bool_column(&g, "in_reference");
    let ref_rows: Vec<usize> = (0..in_reference.len()).filter(|i| in_reference[*i]).collect();
    let refs: Vec<f32> = ref_rows.iter().flat_map(|i| corpus[i * dim..(i + 1) * dim].iter().copied()).collect();
    let position: HashMap<usize, u32> = ref_rows.iter().enumerate().map(|(j, i)| (*i, j as u32)).collect();
    let exclude: Vec<Option<u32>> = (0..in_reference.len()).map(|i| position.get(&i).copied()).collect();
    let index = KnnIndex::new(Rows::from_flat(&refs, dim).unwrap(), SearchStrategy::Auto).unwrap();
    let queries = Rows::from_flat(&corpus, dim).unwrap();
    let (got, _) = pointwise_estimates(&index, queries, 128, 0.1, &all(), Some(&exclude)).unwrap();
    check_all("minilm", &got, 128, &[&g034, &g050]);
    assert_golden("minilm twonn lid_k128", got.column("twonn").unwrap(), &f64_column(&g, "lid_k128"));
}

/// Every estimator name, as `--estimator` takes them.
fn all_names() -> String {
    LOCAL_ESTIMATOR_NAMES.join(",")
}

/// `lid_<name>` of a run's part files for estimator `name` (`-` as `_`).
fn run_column(batches: &[RecordBatch], name: &str) -> Option<Vec<f64>> {
    let col = format!("lid_{}", name.replace('-', "_"));
    batches[0].schema().column_with_name(&col).map(|_| f64_column(batches, &col))
}

#[test]
fn cli_every_estimator_in_one_run_mixture_small() {
    let file = fixture("mixture_small.parquet");
    let f = s(&file);
    let g034 = read_batches(&fixture("estimators/mixture_small.estimators.034.parquet"));
    let g050 = read_batches(&fixture("estimators/mixture_small.estimators.050.parquet"));
    let names = all_names();
    for k in ["20", "64"] {
        let dir = tempfile::tempdir().unwrap();
        let out = s(&dir.path().join("out"));
        // A sample larger than the set is the whole set: every row is its own reference row.
        let args = ["-q", "run", "--corpus", &f, "--embedding-column", "embedding", "--id-columns", "row_id", "--k", k,
            "--reference-size", "100000", "--pool", "100000", "--estimator", &names, "--out", &out, "--json"];
        let m: serde_json::Value = serde_json::from_str(&lidscope_ok(&args)).unwrap();
        let b = read_batches(&dir.path().join("out/data"));
        check_columns(&format!("cli mixture_small k = {k}"), |name| run_column(&b, name), k.parse().unwrap(), &[&g034, &g050]);
        // `lid` is the first name's, and each column's mean is in the manifest.
        assert_eq!(f64_column(&b, "lid"), f64_column(&b, "lid_twonn"));
        assert_eq!(m["estimator"].as_str(), Some(names.as_str()));
        for name in LOCAL_ESTIMATOR_NAMES {
            let col = format!("lid_{}", name.replace('-', "_"));
            let values: Vec<f64> = f64_column(&b, &col).into_iter().filter(|v| v.is_finite()).collect();
            assert_rel(&format!("manifest mean of {col}"), m["estimates"][&col]["mean"].as_f64().unwrap(), mean(&values), 1e-12);
        }
        let mle: Vec<f64> = f64_column(&b, "lid_mle");
        let mg = 1.0 / mean(&mle.iter().map(|v| 1.0 / v).collect::<Vec<_>>());
        assert_rel("MacKay-Ghahramani mean", m["estimates"]["lid_mle"]["mackay_ghahramani"].as_f64().unwrap(), mg, 1e-12);
        assert!(m["estimates"]["lid_mom"].get("mackay_ghahramani").is_none());
    }
}

#[test]
fn cli_every_estimator_minilm_against_flagged_reference() {
    let dir = tempfile::tempdir().unwrap();
    let r = s(&crate::golden::minilm_reference_file(dir.path()));
    let corpus = s(&fixture("minilm_fortunes.parquet"));
    let out = s(&dir.path().join("out"));
    let names = all_names();
    lidscope_ok(&["-q", "run", "--corpus", &corpus, "--embedding-column", "hidden_L6", "--id-columns", "seq_id,position", "--reference", &r,
        "--estimator", &names, "--out", &out]);
    let b = read_batches(&dir.path().join("out/data"));
    let g034 = read_batches(&fixture("estimators/minilm_fortunes.estimators.034.parquet"));
    let g050 = read_batches(&fixture("estimators/minilm_fortunes.estimators.050.parquet"));
    check_columns("cli minilm", |name| run_column(&b, name), 128, &[&g034, &g050]);
    let g = read_batches(&fixture("minilm_fortunes.golden.parquet"));
    assert_golden("cli minilm lid (twonn)", &f64_column(&b, "lid"), &f64_column(&g, "lid_k128"));
}

/// Two estimators in one run give, to the bit, what two runs of one estimator each give; the
/// result tables, SQL's `lid()` and the views carry both.
#[test]
fn cli_two_estimators_in_one_run_equal_two_runs() {
    let dir = tempfile::tempdir().unwrap();
    let f = s(&fixture("mixture_small.parquet"));
    let run = |est: &str, out: &str| {
        let out = s(&dir.path().join(out));
        let args = ["-q", "run", "--corpus", &f, "--embedding-column", "embedding", "--id-columns", "row_id", "--k", "32",
            "--reference-size", "800", "--pool", "1200", "--estimator", est, "--out", &out, "--json"];
        let m: serde_json::Value = serde_json::from_str(&lidscope_ok(&args)).unwrap();
        (read_batches(&dir.path().join(&out).join("data")), m)
    };
    let (both, m) = run("twonn,mle", "both");
    let (twonn, _) = run("twonn", "twonn");
    let (mle, m_mle) = run("mle", "mle");
    let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(f64_column(&both, "lid")), bits(f64_column(&twonn, "lid")));
    assert_eq!(bits(f64_column(&both, "lid_mle")), bits(f64_column(&mle, "lid")));
    assert_eq!(bits(f64_column(&mle, "lid_mle")), bits(f64_column(&mle, "lid")));
    assert_eq!(m["estimates"]["lid_mle"], m_mle["estimates"]["lid_mle"]);
    assert_eq!(m["mean_lid"], m["estimates"]["lid_twonn"]["mean"]);
    // A default run has no estimator columns, as before.
    let out = s(&dir.path().join("default"));
    lidscope_ok(&["-q", "run", "--corpus", &f, "--embedding-column", "embedding", "--id-columns", "row_id", "--k", "32", "--reference-size", "800", "--pool", "1200", "--out", &out]);
    let plain = read_batches(&dir.path().join("default/data"));
    assert!(LOCAL_ESTIMATOR_NAMES.iter().all(|n| run_column(&plain, n).is_none()), "{:?}", plain[0].schema());
    assert_eq!(bits(f64_column(&plain, "lid")), bits(f64_column(&twonn, "lid")));

    // SQL: lid() with a list returns a field per estimator, the run's values; the views average them.
    let both_dir = s(&dir.path().join("both"));
    let reference = s(&dir.path().join("both/reference.parquet"));
    let q = format!(
        "SELECT count(*) AS n FROM (SELECT row_id, lid(embedding, '{reference}', 32, 'twonn,mle', 0.1, named_struct('row_id', row_id)) AS l FROM c) x \
         JOIN r ON r.row_id = x.row_id WHERE x.l.lid = r.lid AND x.l.lid_twonn = r.lid_twonn AND x.l.lid_mle = r.lid_mle"
    );
    let csv = lidscope_ok(&["sql", "--table", &format!("c={f}"), "--table", &format!("r={both_dir}"), "--format", "csv", &q]);
    assert_eq!(csv, "n\n1200\n");
    let csv = lidscope_ok(&["sql", "--table", &format!("r={both_dir}"), "--format", "json", "SELECT mean, mean_twonn, mean_mle, mg_mean_mle FROM r_summary"]);
    let v: serde_json::Value = serde_json::from_str(csv.trim()).unwrap();
    assert_rel("summary mean_mle", v["mean_mle"].as_f64().unwrap(), m["estimates"]["lid_mle"]["mean"].as_f64().unwrap(), 1e-12);
    assert_rel("summary mg_mean_mle", v["mg_mean_mle"].as_f64().unwrap(), m["estimates"]["lid_mle"]["mackay_ghahramani"].as_f64().unwrap(), 1e-12);
    assert_rel("summary mean_twonn", v["mean_twonn"].as_f64().unwrap(), m["mean_lid"].as_f64().unwrap(), 1e-12);

    // The report of one estimator of the run; an estimator the run lacks is named with those it has.
    let rep = dir.path().join("report");
    lidscope_ok(&["report", &both_dir, "--out", &s(&rep), "--estimator", "mle"]);
    let summary = std::fs::read_to_string(rep.join("summary.csv")).unwrap();
    let mle_mean = format!("{:.4}", m["estimates"]["lid_mle"]["mean"].as_f64().unwrap());
    assert!(summary.contains(&mle_mean[..mle_mean.len() - 1]), "{summary}");
    let e = lidscope_err(&["report", &both_dir, "--out", &s(&rep), "--estimator", "tle"]);
    assert!(e.contains("no column \"lid_tle\" for estimator \"tle\" (estimators in these results: twonn, mle)"), "{e}");
}

#[test]
fn cli_bad_estimators_are_usage_errors() {
    let f = s(&fixture("mixture_small.parquet"));
    let d = tempfile::tempdir().unwrap();
    let out = s(&d.path().join("out"));
    for (est, want) in [
        ("twonn,foo", "unknown estimator \"foo\" (expected one of: twonn, twonn-v05, twonn-mle, mle, mle-unbiased, mom, tle, lpca-fo"),
        ("lpca-fo:alpha=1.5", "alpha"),
        ("mle,mle", "mle"),
    ] {
        let o = lidscope(&["run", "--corpus", &f, "--embedding-column", "embedding", "--out", &out, "--estimator", est]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "--estimator {est}: {stderr}");
        assert!(stderr.contains(want), "--estimator {est}: {stderr}");
    }
    assert!(!d.path().join("out").exists());
}

/// A sweep spec's `estimator` list: every run computes them all; a changed list redoes the runs.
#[test]
fn a_sweep_with_an_estimator_list() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for step in [100, 200] {
        crate::sweep::checkpoint(&crate::sweep::corpus_path(root, "a", step), 300, 3, step as u64);
    }
    let spec = root.join("sweep.toml");
    let write = |est: &str| {
        std::fs::write(
            &spec,
            format!(
                "results = \"results\"\nembedding_column = \"hidden\"\nid_columns = [\"seq_id\", \"position\"]\nk = 16\nreference_size = 200\npool = 300\n\
                 estimator = \"{est}\"\n[[corpus]]\npattern = \"emb/{{model}}/step-{{step}}/{{dataset}}/layer-{{layer}}.parquet\"\n"
            ),
        )
        .unwrap()
    };
    write("twonn,mle");
    let out = lidscope_ok(&["sweep", &s(&spec)]);
    assert_eq!(out.lines().filter(|l| l.starts_with("committed")).count(), 2, "{out}");
    let results = s(&root.join("results"));
    let csv = lidscope_ok(&["sql", "--table", &format!("lid={results}"), "--format", "csv", "SELECT (SELECT count(lid_mle) FROM lid) AS m, (SELECT count(mean_mle) FROM lid_summary) AS s"]);
    assert_eq!(csv, "m,s\n600,2\n");
    write("twonn");
    let plan = lidscope_ok(&["sweep", &s(&spec), "--dry-run"]);
    assert_eq!(plan.lines().filter(|l| l.starts_with("changed") && l.contains("estimator was twonn,mle, is twonn")).count(), 2, "{plan}");
}
