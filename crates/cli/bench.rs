//! `lidscope bench`: the paper's setting end to end, as a ratio to the machine's own sgemm rate
//! measured in the same process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lidscope_data::SampleConfig;
use lidscope_engine::{run, NoProgress, ReferenceSource, RunConfig};
use lidscope_kernel::{estimates_from_neighbours, sgemm_gflops, KnnIndex, LidConfig, LocalEstimator, Rows, SearchStrategy, KDTREE_DIMS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::args::BenchArgs;
use crate::synth::{write_corpus, SynthSpec};

pub fn main(a: &BenchArgs) -> Result<()> {
    // The baseline: the best of several sgemm timings, taken before and after the run, so a
    // noisy neighbour on the machine makes the floor lower (stricter), never higher.
    let measure = || sgemm_gflops(4096, a.dim.max(64), 5);
    let before = measure();
    eprintln!("sgemm rate (gemm crate, 4096 x 4096 x {}, all threads): {before:.1} GFLOP/s", a.dim.max(64));
    let mut report = json!({ "sgemm_gflops_before": before });
    report["mac_rates"] = mac_rates_line();
    if a.kdtree {
        report["kdtree"] = kdtree_crossover(a.k.min(64));
    }
    if a.estimators {
        report["estimators"] = estimator_costs(a);
    } else if a.cluster {
        report["cluster"] = crate::bench_cluster::main(a)?;
    } else if let Some(other) = &a.against {
        report["against"] = against(a, other)?;
    } else if !a.no_run {
        let synthetic = if a.no_synthetic { None } else { Some((paper_setting(a)?, corpus_over_reference(a)?)) };
        let real = a.real.as_deref().map(|corpus| real_settings(a, corpus)).transpose()?;
        let after = measure();
        let rate = before.max(after);
        eprintln!("sgemm rate after the runs: {after:.1} GFLOP/s; baseline = best = {rate:.1} GFLOP/s");
        report["sgemm_gflops_after"] = json!(after);
        if let Some(((run, by_file), large)) = synthetic {
            eprintln!("-- the paper's setting, the corpus as its own sample:");
            report["run"] = summarise(a, run, rate);
            eprintln!("-- the same rows given as a reference file (--reference):");
            report["reference_file"] = summarise(a, by_file, rate);
            if let Some(large) = large {
                eprintln!("-- the corpus much larger than the reference (a file of other rows):");
                report["corpus_over_reference"] = summarise(a, large, rate);
            }
        }
        if let Some((own, sampled)) = real {
            eprintln!("-- real hidden states ({}, column {}), the corpus as its own sample:", a.real.as_deref().unwrap_or_default(), a.real_column);
            report["real"] = summarise(a, own, rate);
            if let Some(sampled) = sampled {
                eprintln!("-- the same real corpus against a sample of {} of its rows:", a.real_reference);
                report["real_over_sample"] = summarise(a, sampled, rate);
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// One core's float32 FMA and bfloat16 dot-product rates: whether a bfloat16 candidate search
/// could pay on this machine (it needs the bfloat16 rate well above the float32 one).
fn mac_rates_line() -> serde_json::Value {
    let r = lidscope_kernel::mac_rates();
    match r.dot_bf16 {
        Some(bf) => {
            let verdict = if bf >= 1.5 * r.fma_f32 { "a bfloat16 candidate search could pay here" } else { "a bfloat16 candidate search cannot pay here" };
            eprintln!("one core: float32 FMA {:.1} G multiply-adds/s, bfloat16 dot (vdpbf16ps) {bf:.1} G/s = {:.2}x: {verdict}", r.fma_f32, bf / r.fma_f32);
        }
        None => eprintln!("one core: float32 FMA {:.1} G multiply-adds/s; no bfloat16 dot product on this CPU", r.fma_f32),
    }
    match r.dot_int8 {
        Some(i8) => eprintln!("one core: int8 dot (vpdpbusd) {i8:.1} G multiply-adds/s = {:.2}x float32 FMA: the int8 candidate search's rate", i8 / r.fma_f32),
        None => eprintln!("one core: no int8 dot product (AVX512_VNNI) on this CPU: candidates come from float32 products"),
    }
    if let Some(i16) = r.dot_int16 {
        eprintln!("one core: int16 dot (vpdpwssd) {i16:.1} G multiply-adds/s = {:.2}x float32 FMA: the int16 candidate search's rate", i16 / r.fma_f32);
    }
    json!({ "fma_f32_gmacs": r.fma_f32, "dot_bf16_gmacs": r.dot_bf16, "dot_int8_gmacs": r.dot_int8, "dot_int16_gmacs": r.dot_int16 })
}

/// Times this executable and `other` on one corpus, as separate processes in the order
/// A B B A A B ... so that a drift in the machine's speed falls on both alike.
fn against(a: &BenchArgs, other: &Path) -> Result<serde_json::Value> {
    let tmp = tempfile::tempdir()?;
    let corpus = tmp.path().join("corpus");
    write_corpus(&corpus, &SynthSpec { rows: a.rows, dim: a.dim, manifold_dim: a.manifold_dim, seed: a.seed, files: 4 })?;
    let this = std::env::current_exe()?;
    let time = |bin: &Path| -> Result<(f64, lidscope_data::Manifest)> {
        let out = tmp.path().join("out");
        let t = Instant::now();
        let result = Command::new(bin)
            .args(["-q", "run", "--embedding-column", "embedding", "--id-columns", "seq_id,position", "--search", "auto", "--overwrite", "--json"])
            .arg("--corpus")
            .arg(&corpus)
            .arg("--out")
            .arg(&out)
            .args(["--k", &a.k.to_string(), "--reference-size", &a.rows.to_string(), "--pool", &a.rows.to_string(), "--seed", "42"])
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        let wall = t.elapsed().as_secs_f64();
        if !result.status.success() {
            bail!("{} run failed: {}", bin.display(), String::from_utf8_lossy(&result.stderr));
        }
        let manifest: lidscope_data::Manifest =
            serde_json::from_slice(&result.stdout).with_context(|| format!("{}: reading its --json manifest", bin.display()))?;
        Ok((wall, manifest))
    };
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    let mut means = Vec::new();
    for i in 0..a.repeat {
        let order = if i % 2 == 0 { [true, false] } else { [false, true] };
        for is_this in order {
            let (wall, m) = time(if is_this { &this } else { other })?;
            eprintln!("  {:<8} wall {wall:>7.2} s (manifest {:.2} s), mean LID {:.6}", if is_this { "this" } else { "against" }, m.elapsed_seconds, m.mean_lid);
            means.push(m.mean_lid);
            if is_this { &mut mine } else { &mut theirs }.push(wall);
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        (s[(s.len() - 1) / 2] + s[s.len() / 2]) / 2.0
    };
    let ratio = best(&mine) / best(&theirs);
    let ratio_median = median(&mine) / median(&theirs);
    let same = means.windows(2).all(|w| w[0] == w[1]);
    eprintln!(
        "this / against: best of {} each {:.3} ({:.2} s vs {:.2} s), median {ratio_median:.3}; mean LID identical: {same}",
        a.repeat,
        ratio,
        best(&mine),
        best(&theirs)
    );
    Ok(json!({ "against": other.display().to_string(), "this_seconds": mine, "against_seconds": theirs, "ratio_best": ratio, "ratio_median": ratio_median, "mean_lid_identical": same }))
}

/// One end-to-end run of the benchmark and the sizes its floors are computed from.
struct Timed {
    manifest: lidscope_data::Manifest,
    /// Which neighbour search answered, and why.
    search: Option<String>,
    /// Corpus rows measured.
    queries: usize,
    /// Reference rows.
    reference: usize,
    dim: usize,
    /// The queries are the reference rows themselves: the symmetric floor applies.
    symmetric: bool,
}

/// The paper's setting (the corpus is its own sample), then the same reference rows given as a
/// file: the one the first run wrote.
fn paper_setting(a: &BenchArgs) -> Result<(Timed, Timed)> {
    let tmp = tempfile::tempdir()?;
    let t = Instant::now();
    write_corpus(&tmp.path().join("corpus"), &SynthSpec { rows: a.rows, dim: a.dim, manifold_dim: a.manifold_dim, seed: a.seed, files: 4 })?;
    eprintln!("generated {} x {} near a {}-d manifold in {:.1} s", a.rows, a.dim, a.manifold_dim, t.elapsed().as_secs_f64());
    let cfg = config(a, vec![tmp.path().join("corpus").display().to_string()], tmp.path().join("out"), ReferenceSource::Sample(SampleConfig::new(a.rows, a.rows, 42)));
    let sampled = run(&cfg, &NoProgress)?;
    let by_file = RunConfig { reference: ReferenceSource::File(cfg.out.join("reference.parquet")), out: tmp.path().join("out-file"), ..cfg };
    let by_file = run(&by_file, &NoProgress)?;
    if by_file.manifest.mean_lid != sampled.manifest.mean_lid {
        anyhow::bail!("the reference as a file gave mean LID {} against {} as a sample", by_file.manifest.mean_lid, sampled.manifest.mean_lid);
    }
    let timed = |r: lidscope_engine::RunSummary| Timed { manifest: r.manifest, search: r.search, queries: a.rows, reference: a.rows, dim: a.dim, symmetric: true };
    Ok((timed(sampled), timed(by_file)))
}

/// The corpus much larger than the reference: `--corpus-rows` rows against a reference file of
/// `--reference-rows` other rows of the same manifold (the corpus is rounded to whole files of
/// that size). `None` when `--corpus-rows 0`.
fn corpus_over_reference(a: &BenchArgs) -> Result<Option<Timed>> {
    if a.corpus_rows == 0 {
        return Ok(None);
    }
    let tmp = tempfile::tempdir()?;
    let n = a.reference_rows.max(1);
    let files = (a.corpus_rows + n).div_ceil(n);
    let spec = SynthSpec { rows: files * n, dim: a.corpus_dim, manifold_dim: a.manifold_dim, seed: a.seed + 1, files };
    let paths = write_corpus(&tmp.path().join("corpus"), &spec)?;
    let (reference, corpus) = paths.split_last().expect("at least two files");
    let corpus: Vec<String> = corpus.iter().map(|p| p.display().to_string()).collect();
    eprintln!("generated {} x {} against a {}-row reference", (files - 1) * n, a.corpus_dim, n);
    let cfg = config(a, corpus, tmp.path().join("out"), ReferenceSource::File(reference.clone()));
    let r = run(&cfg, &NoProgress)?;
    Ok(Some(Timed { manifest: r.manifest, search: r.search, queries: (files - 1) * n, reference: n, dim: a.corpus_dim, symmetric: false }))
}

/// Real hidden states (`--real`): the corpus as its own sample (the paper's setting: one
/// self-join; exact duplicate rows are left out of a sample, so the reference may be a little
/// smaller than the corpus), then every row against a sample of `--real-reference` of them.
fn real_settings(a: &BenchArgs, corpus: &str) -> Result<(Timed, Option<Timed>)> {
    let tmp = tempfile::tempdir()?;
    let base = RunConfig {
        embedding_column: a.real_column.clone(),
        id_columns: a.real_id_columns.clone(),
        ..config(a, vec![corpus.to_string()], tmp.path().join("own"), ReferenceSource::Sample(SampleConfig::new(0, 0, 42)))
    };
    let rows = base.validate().with_context(|| format!("the real corpus {corpus}"))?.info.total_rows as usize;
    eprintln!("real corpus {corpus}: {rows} rows of column {}", a.real_column);
    let timed = |r: lidscope_engine::RunSummary, symmetric: bool| {
        let (queries, reference, dim) = (r.manifest.rows as usize, r.manifest.reference_rows, r.manifest.dim);
        Timed { manifest: r.manifest, search: r.search, queries, reference, dim, symmetric }
    };
    let own = RunConfig { reference: ReferenceSource::Sample(SampleConfig::new(rows, rows, 42)), ..base.clone() };
    let own = timed(run(&own, &NoProgress)?, true);
    let sampled = if a.real_reference == 0 || a.real_reference >= rows {
        None
    } else {
        let cfg = RunConfig { reference: ReferenceSource::Sample(SampleConfig::new(rows, a.real_reference, 42)), out: tmp.path().join("sampled"), ..base };
        Some(timed(run(&cfg, &NoProgress)?, false))
    };
    Ok((own, sampled))
}

fn config(a: &BenchArgs, corpus: Vec<String>, out: PathBuf, reference: ReferenceSource) -> RunConfig {
    RunConfig {
        corpus,
        embedding_column: "embedding".into(),
        id_columns: vec!["seq_id".into(), "position".into()],
        out,
        lid: LidConfig { k: a.k, ..LidConfig::default() },
        estimators: Vec::new(),
        reference,
        overwrite: false,
        batch_rows: 8192,
        strategy: SearchStrategy::Auto,
        partition: Vec::new(),
        filter: None,
    }
}

/// The figures of the issue: wall time split, GFLOP/s, and the ratio to the float32 floor at the
/// sgemm rate: `2QNd + 2Qk^2d` in general (each query against every reference row, a `k x k`
/// Gram per query); `N^2d + 2(Q-N)Nd + Qk^2d` when the reference is drawn from the queries
/// (symmetric products among its rows, any other query in general).
fn summarise(a: &BenchArgs, r: Timed, rate: f64) -> serde_json::Value {
    let m = r.manifest;
    let t = |k: &str| m.timings.get(k).copied().unwrap_or(0.0);
    let (q, n, d, k) = (r.queries as f64, r.reference as f64, r.dim as f64, a.k as f64);
    let flops_knn = 2.0 * q * n * d;
    let flops_est = 2.0 * q * k * k * d;
    let floor = (flops_knn + flops_est) / (rate * 1e9);
    // Symmetric: the reference rows' own products once (`N^2 d`), any other query in general.
    let symmetric_floor = r.symmetric.then(|| (n * n * d + 2.0 * (q - n).max(0.0) * n * d + q * k * k * d) / (rate * 1e9));
    let io = t("reference") + t("read") + t("write");
    let wall = m.elapsed_seconds;
    // The result parts are written beside the computation (a helper thread), so their time is
    // not a term of the wall time's sum.
    eprintln!(
        "wall {wall:.2} s = neighbour search {:.2} s + local estimates {:.2} s + sampling {:.2} s + the rest {:.2} s (reading, indexing, committing); writing {:.2} s beside them",
        t("knn"),
        t("estimate"),
        t("reference"),
        wall - t("knn") - t("estimate") - t("reference"),
        t("write")
    );
    eprintln!("neighbour search {:.1} GFLOP/s, local estimates {:.1} GFLOP/s, end to end {:.1} GFLOP/s (general flop counts)",
        flops_knn / t("knn") / 1e9, flops_est / t("estimate") / 1e9, (flops_knn + flops_est) / wall / 1e9);
    eprintln!("float32 floor {floor:.2} s (2QNd + 2Qk^2d at {rate:.1} GFLOP/s): wall / floor = {:.2}", wall / floor);
    if let Some(s) = symmetric_floor {
        eprintln!("symmetric float32 floor {s:.2} s (N^2d + 2(Q-N)Nd + Qk^2d): wall / floor = {:.2}", wall / s);
    }
    eprintln!("mean LID {:.4}, global TwoNN {:.4}", m.mean_lid, m.global_twonn);
    if let Some(s) = &r.search {
        eprintln!("search: {s}");
    }
    json!({
        "search": r.search,
        "queries": r.queries, "reference_rows": r.reference, "dim": r.dim, "k": a.k, "manifold_dim": a.manifold_dim,
        "wall_seconds": wall, "knn_seconds": t("knn"), "estimate_seconds": t("estimate"), "io_seconds": io,
        "timings": m.timings, "floor_seconds": floor, "wall_over_floor": wall / floor,
        "symmetric_floor_seconds": symmetric_floor, "wall_over_symmetric_floor": symmetric_floor.map(|s| wall / s),
        "gflops_end_to_end": (flops_knn + flops_est) / wall / 1e9,
        "mean_lid": m.mean_lid, "global_twonn": m.global_twonn, "sgemm_gflops": rate,
    })
}

/// Times the GEMM path and the k-d tree on the same data for each compiled k-d tree dimension.
/// What each estimator costs per query beside the search, on the paper's setting (the corpus is
/// its own reference: one self-join finds every neighbourhood and is every member's list): the
/// self-join timed once, then every estimator alone on the same neighbourhoods, then all of them
/// in one pass.
fn estimator_costs(a: &BenchArgs) -> serde_json::Value {
    let (n, d, k) = (a.rows, a.dim, a.k);
    let m = a.manifold_dim.clamp(1, d);
    let data = near_subspace(n, d, m, a.seed);
    let rows = Rows::try_new(&data, n, d).expect("shape");
    let index = KnnIndex::new(rows, SearchStrategy::Auto).expect("index");
    let t = Instant::now();
    let (lists, _) = index.self_knn(k).expect("self-join");
    let search = t.elapsed().as_secs_f64();
    let per_query = |s: f64| s / n as f64 * 1e6;
    eprintln!("estimator costs, {n} x {d} near a {m}-d subspace as its own reference, k = {k} ({}):", index.search_path());
    eprintln!("  {:<18} {:>9.2} s  {:>8.1} us/query", "search (self-join)", search, per_query(search));
    let time = |est: &[LocalEstimator]| {
        let t = Instant::now();
        estimates_from_neighbours(&index, rows, &lists, 0.1, est, Some(&lists)).expect("estimates");
        t.elapsed().as_secs_f64()
    };
    let all = LocalEstimator::all();
    let twonn = time(&[LocalEstimator::TwoNN]);
    let mut out = Vec::new();
    for e in &all {
        let s = if *e == LocalEstimator::TwoNN { twonn } else { time(std::slice::from_ref(e)) };
        eprintln!("  {:<18} {s:>9.2} s  {:>8.1} us/query  {:>6.2}x twonn  {:>6.2}x the search", e.name(), per_query(s), s / twonn, s / search);
        out.push(json!({ "estimator": e.name(), "seconds": s, "us_per_query": per_query(s), "vs_twonn": s / twonn, "vs_search": s / search }));
    }
    let together = time(&all);
    let sum: f64 = out.iter().map(|o| o["seconds"].as_f64().unwrap_or(0.0)).sum();
    eprintln!("  {:<18} {together:>9.2} s  {:>8.1} us/query  (the {} alone: {sum:.2} s)", "all in one pass", per_query(together), all.len());
    json!({ "rows": n, "dim": d, "k": k, "search_seconds": search, "estimators": out, "all_seconds": together, "sum_alone_seconds": sum })
}

/// `n` seeded points of dimension `d` near a random `m`-dimensional linear subspace (noise 0.01).
fn near_subspace(n: usize, d: usize, m: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let basis: Vec<f32> = (0..m * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    (0..n)
        .flat_map(|_| {
            let z: Vec<f32> = (0..m).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let noise: Vec<f32> = (0..d).map(|_| rng.random_range(-0.01f32..0.01)).collect();
            let basis = &basis;
            (0..d).map(move |p| (0..m).map(|j| basis[j * d + p] * z[j]).sum::<f32>() + noise[p]).collect::<Vec<_>>()
        })
        .collect()
}

fn kdtree_crossover(k: usize) -> serde_json::Value {
    let n = 20_000;
    let mut rows = Vec::new();
    let mut crossover = 0;
    let mut crossover_open = true;
    eprintln!("k-d tree vs GEMM, {n} points near a min(d, 6)-dimensional subspace, k = {k}:");
    for &d in KDTREE_DIMS {
        let m = d.min(6);
        let data = near_subspace(n, d, m, d as u64);
        let rows_view = Rows::try_new(&data, n, d).expect("shape");
        let me: Vec<Option<u32>> = (0..n as u32).map(Some).collect();
        let time = |s: SearchStrategy| {
            let t = Instant::now();
            let index = KnnIndex::new(rows_view, s).expect("index");
            let (nb, _) = index.knn(rows_view, k, Some(&me)).expect("knn");
            (t.elapsed().as_secs_f64(), nb)
        };
        let (tg, ng) = time(SearchStrategy::Gemm);
        let (tk, nk) = time(SearchStrategy::KdTree);
        assert_eq!(ng.indices, nk.indices, "k-d tree and GEMM disagree at d = {d}");
        // The crossover: the largest d up to which the tree wins at every measured dimension.
        if tk < tg && crossover_open {
            crossover = d;
        } else {
            crossover_open = false;
        }
        eprintln!("  d = {d:>2}: gemm {tg:>7.3} s, kdtree {tk:>7.3} s, kdtree/gemm {:.2}", tk / tg);
        rows.push(json!({ "dim": d, "gemm_seconds": tg, "kdtree_seconds": tk }));
    }
    eprintln!("k-d tree faster up to d = {crossover}");
    json!({ "points": n, "k": k, "table": rows, "kdtree_faster_up_to_dim": crossover })
}
