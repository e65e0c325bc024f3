//! Golden parity of every local estimator beside TwoNN (`../shared/fixtures/estimators/`, made by
//! scikit-dimension 0.3.4 and 0.5.0) through the kernel API: all of them from one search per
//! neighbourhood size, each golden column at the fixtures README's tolerance.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use lidscope_kernel::{pointwise_estimates, pointwise_lid, KnnIndex, LidConfig, LocalEstimator, PointEstimates, Rows, SearchStrategy};

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
    let mut checked = 0;
    for (stem, name, integer) in COLUMNS {
        let col = format!("{stem}_k{k}");
        let Some(b) = goldens.iter().find(|b| b[0].schema().column_with_name(&col).is_some()) else { continue };
        let want = f64_column(b, &col);
        let have = got.column(name).unwrap_or_else(|| panic!("no estimate {name}"));
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
