//! `lidscope report`: the summary table against the runs' manifests, the figures and the page,
//! numeric steps placed by value, and clear errors for what is not a result directory.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, UInt64Type};

use crate::util::*;

const ROWS: usize = 600;
const DIM: usize = 16;

/// `ROWS` vectors filling a `manifold`-dimensional cube inside `DIM` dimensions (the rest zero):
/// their LID is near `manifold`, so runs on different manifolds differ clearly.
fn write_corpus(file: &Path, manifold: usize, seed: u64) {
    let cube = vectors(ROWS, manifold, seed);
    let values: Vec<f32> = cube.chunks(manifold).flat_map(|p| p.iter().copied().chain(std::iter::repeat_n(0.0, DIM - manifold))).collect();
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..ROWS as i64));
    write_parquet(file, &batch(vec![("seq_id", ids), ("emb", fsl(values, DIM))]));
}

/// One run of `corpus` into result directory `out` as partition `partition` (if any); its
/// manifest as `--json` prints it.
fn run(corpus: &Path, out: &Path, partition: Option<&str>) -> serde_json::Value {
    let (c, o, n) = (s(corpus), s(out), ROWS.to_string());
    let mut args = vec!["-q", "run", "--corpus", &c, "--embedding-column", "emb", "--id-columns", "seq_id", "--k", "10",
        "--reference-size", &n, "--pool", &n, "--out", &o, "--json"];
    if let Some(p) = partition {
        args.extend(["--partition", p]);
    }
    serde_json::from_str(&lidscope_ok(&args)).unwrap()
}

/// CSV text as rows of fields (the summary has no quoted fields: keys and numbers only).
fn csv(text: &str) -> Vec<Vec<String>> {
    text.lines().map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// The `cx` of every `<circle>` of colour `fill` in an SVG document.
fn circles(svg: &str, fill: &str) -> Vec<f64> {
    let attr = |tag: &str, name: &str| {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[at..at + tag[at..].find('"')?].to_string())
    };
    svg.split("<circle").skip(1).map(|t| &t[..t.find("/>").unwrap()]).filter(|t| attr(t, "fill").is_some_and(|f| f.eq_ignore_ascii_case(fill))).map(|t| attr(t, "cx").unwrap().parse().unwrap()).collect()
}

/// Checks that a page loads nothing from the network and that every local file it names exists.
fn assert_offline(page: &Path) {
    let html = std::fs::read_to_string(page).unwrap();
    for needle in ["http://", "https://", "<script", "src=\"//", "href=\"//"] {
        assert!(!html.contains(needle), "{} contains {needle}", page.display());
    }
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let target = &part[..part.find('"').unwrap()];
            assert!(page.parent().unwrap().join(target).exists(), "{} names {target}, which does not exist", page.display());
        }
    }
}

#[test]
fn report_summarises_every_run_of_a_sweep() {
    let d = tempfile::tempdir().unwrap();
    let sweep = d.path().join("sweep");
    // Two models, three steps far apart; model a's manifold shrinks with training, b's grows.
    let plan = [("a", "100", 3), ("a", "1000", 5), ("a", "5000", 7), ("b", "100", 8), ("b", "1000", 10), ("b", "5000", 12)];
    let mut manifests = Vec::new();
    for (i, (model, step, manifold)) in plan.iter().enumerate() {
        let corpus = d.path().join(format!("{model}-{step}.parquet"));
        write_corpus(&corpus, *manifold, i as u64 + 1);
        manifests.push(run(&corpus, &sweep, Some(&format!("model={model},step={step}"))));
    }
    let out = d.path().join("report");
    lidscope_ok(&["report", &s(&sweep), "--out", &s(&out)]);

    // summary.csv: a header naming the partition keys and the statistics, one row per run.
    let rows = csv(&std::fs::read_to_string(out.join("summary.csv")).unwrap());
    assert_eq!(rows[0], ["model", "step", "rows", "mean_lid", "std", "median", "p10", "p90", "global_twonn", "k", "reference_rows"]);
    assert_eq!(rows.len(), 1 + plan.len(), "{rows:?}");
    let col = |name: &str| rows[0].iter().position(|c| c == name).unwrap();
    for ((model, step, _), m) in plan.iter().zip(&manifests) {
        let row = rows[1..].iter().find(|r| r[0] == *model && r[1] == *step).unwrap_or_else(|| panic!("no row for {model}, {step}"));
        assert_rel(&format!("{model} {step} mean_lid"), row[col("mean_lid")].parse().unwrap(), m["mean_lid"].as_f64().unwrap(), 1e-9);
        assert_rel(&format!("{model} {step} global_twonn"), row[col("global_twonn")].parse().unwrap(), m["global_twonn"].as_f64().unwrap(), 1e-9);
        assert_eq!(row[col("rows")], m["rows"].to_string());
        assert_eq!(row[col("k")], "10");
        assert_eq!(row[col("reference_rows")], m["reference_rows"].to_string());
        let (p10, median, p90): (f64, f64, f64) = (row[col("p10")].parse().unwrap(), row[col("median")].parse().unwrap(), row[col("p90")].parse().unwrap());
        assert!(p10 < median && median < p90, "{row:?}");
    }
    // The data behave as built: within a model, a larger manifold gives a larger mean LID.
    let means: Vec<f64> = manifests.iter().map(|m| m["mean_lid"].as_f64().unwrap()).collect();
    assert!(means[0] < means[1] && means[1] < means[2] && means[3] < means[4] && means[4] < means[5], "{means:?}");

    // summary.parquet: the same rows.
    let table = read_batches(&out.join("summary.parquet"));
    let (models, steps, lids) = (string_column(&table, "model"), string_column(&table, "step"), f64_column(&table, "mean_lid"));
    let counts: Vec<u64> = table.iter().flat_map(|b| b.column_by_name("rows").unwrap().as_primitive::<UInt64Type>().values().to_vec()).collect();
    assert_eq!(models.len(), plan.len());
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!((&models[i], &steps[i]), (&row[0], &row[1]));
        assert_eq!(lids[i], row[col("mean_lid")].parse::<f64>().unwrap());
        assert_eq!(counts[i].to_string(), row[col("rows")]);
    }
    assert_eq!(table[0].schema().field_with_name("step").unwrap().data_type(), &DataType::Utf8);

    // The page: the figures inline, the summary table, nothing from the network.
    let page = out.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Mean LID against step") && html.contains("LID distributions per run"), "{html}");
    assert!(html.matches("<svg").count() >= 2);
    assert!(html.contains("<th>model</th><th>step</th>") && html.contains("<th>mean_lid</th>"));
    for m in &manifests {
        assert!(html.contains(&format!("{:.4}", m["mean_lid"].as_f64().unwrap())), "the table shows each run's mean LID");
    }
    assert_offline(&page);

    // Steps on a numeric axis: 100, 1000 and 5000 placed by value (a category axis would put
    // 1000 halfway). Each model's points are circles of its colour; the legend's is the last.
    let trend = std::fs::read_to_string(out.join("trend.svg")).unwrap();
    assert!(html.contains(&trend[trend.find("<rect").unwrap()..trend.find("</text>").unwrap()]), "trend.svg is the page's figure");
    for colour in ["#1F77B4", "#FF7F0E"] {
        let mut x = circles(&trend, colour);
        x.sort_by(f64::total_cmp);
        assert_eq!(x.len(), 4, "three runs and the legend in {colour}: {x:?}");
        let ratio = (x[1] - x[0]) / (x[2] - x[0]);
        assert!((ratio - 900.0 / 4900.0).abs() < 0.01, "step 1000 at {ratio} of the way from 100 to 5000");
    }

    // A numeric key can be chosen; a key that is not numeric or not there is refused by name.
    let out2 = d.path().join("report2");
    let e = lidscope_err(&["report", &s(&sweep), "--out", &s(&out2), "--x", "model"]);
    assert!(e.contains("--x model") && e.contains("not a number"), "{e}");
    let e = lidscope_err(&["report", &s(&sweep), "--out", &s(&out2), "--x", "layer"]);
    assert!(e.contains("--x layer") && e.contains("model, step"), "{e}");
    assert!(!out2.join("index.html").exists());
    assert!(lidscope_ok(&["report", "--help"]).contains("Examples:"));
}

#[test]
fn report_without_a_numeric_key_still_shows_the_runs() {
    let d = tempfile::tempdir().unwrap();
    let sweep = d.path().join("sweep");
    for (model, manifold) in [("small", 2), ("large", 6)] {
        let corpus = d.path().join(format!("{model}.parquet"));
        write_corpus(&corpus, manifold, manifold as u64);
        run(&corpus, &sweep, Some(&format!("model={model}")));
    }
    let out = d.path().join("report");
    // A trend chart left by an earlier report must not stay beside this one.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("trend.svg"), "<svg/>").unwrap();
    lidscope_ok(&["report", &s(&sweep), "--out", &s(&out)]);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("Not drawn") && html.contains("numeric axis"), "the page says why there is no trend chart");
    assert!(!out.join("trend.svg").exists());
    assert!(out.join("distributions.svg").exists() && out.join("means.svg").exists());
    assert_eq!(html.matches("<svg").count(), 2, "distributions and per-run means");
    assert!(html.contains("model=small") && html.contains("model=large"));
    assert_offline(&out.join("index.html"));
    let rows = csv(&std::fs::read_to_string(out.join("summary.csv")).unwrap());
    assert_eq!(rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["model", "large", "small"]);

    // An unpartitioned run: one row, no key columns, the distribution alone.
    let corpus = d.path().join("small.parquet");
    let single = d.path().join("single");
    let m = run(&corpus, &single, None);
    let out = d.path().join("report-single");
    lidscope_ok(&["-q", "report", &s(&single), "--out", &s(&out)]);
    let rows = csv(&std::fs::read_to_string(out.join("summary.csv")).unwrap());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], "rows");
    assert_rel("mean_lid", rows[1][1].parse().unwrap(), m["mean_lid"].as_f64().unwrap(), 1e-9);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("not partitioned") && html.matches("<svg").count() == 1, "{html}");
}

#[test]
fn report_refuses_what_is_not_a_result_directory() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("report");
    let missing = d.path().join("missing");
    let plain = d.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let empty = d.path().join("empty");
    std::fs::create_dir_all(empty.join("data")).unwrap();
    let file = d.path().join("corpus.parquet");
    write_corpus(&file, 2, 1);
    for (input, reason) in [(&missing, "no such directory"), (&plain, "not a lidscope result directory"), (&empty, "no result files"), (&file, "not a directory")] {
        let e = lidscope_err(&["report", &s(input), "--out", &s(&out)]);
        assert!(e.contains(&s(input)) && e.contains(reason), "{}: {e}", input.display());
        assert!(e.starts_with("lidscope: error:"), "{e}");
        assert!(!out.exists(), "nothing written for {}", input.display());
    }
    // The report must not land where its Parquet file would be read as a run.
    let sweep = d.path().join("sweep");
    run(&file, &sweep, Some("step=1"));
    let e = lidscope_err(&["report", &s(&sweep), "--out", &s(&sweep.join("data/report"))]);
    assert!(e.contains("would be read as results"), "{e}");
}

/// `--metrics`: a training log matched to the runs by step (and by model where it has one),
/// its columns in the summary, a panel per metric, and the correlations of mean LID with each.
#[test]
fn report_sets_training_metrics_beside_mean_lid() {
    let d = tempfile::tempdir().unwrap();
    let sweep = d.path().join("sweep");
    // Model a's manifold shrinks with the step, b's grows: mean LID falls for a, rises for b.
    let plan = [("a", "100", 10), ("a", "200", 8), ("a", "400", 6), ("a", "800", 4), ("a", "1600", 2), ("b", "100", 2), ("b", "200", 4), ("b", "400", 6), ("b", "800", 8), ("b", "1600", 10)];
    for (i, (model, step, manifold)) in plan.iter().enumerate() {
        let corpus = d.path().join(format!("{model}-{step}.parquet"));
        write_corpus(&corpus, *manifold, i as u64 + 1);
        run(&corpus, &sweep, Some(&format!("model={model},step={step}")));
    }
    // Accuracy rises with the step for both models; step 300 is no run's checkpoint.
    let metrics = d.path().join("metrics.csv");
    std::fs::write(&metrics, "step,accuracy,loss\n100,0.1,3.0\n200,0.3,2.0\n300,0.4,1.8\n400,0.6,1.0\n800,0.8,0.5\n1600,0.9,0.2\n").unwrap();
    let out = d.path().join("report");
    let o = lidscope(&["report", &s(&sweep), "--out", &s(&out), "--metrics", &s(&metrics)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("1 rows of the metrics file are no run's checkpoint: step=300"), "{stderr}");

    let rows = csv(&std::fs::read_to_string(out.join("summary.csv")).unwrap());
    let at = |name: &str| rows[0].iter().position(|c| c == name).unwrap_or_else(|| panic!("no {name} in {:?}", rows[0]));
    let (step, acc) = (at("step"), at("accuracy"));
    for r in &rows[1..] {
        let want = match r[step].as_str() { "100" => "0.1", "200" => "0.3", "400" => "0.6", "800" => "0.8", _ => "0.9" };
        assert_eq!(r[acc], want, "{r:?}");
    }
    // Mean LID falls with accuracy for a (Spearman -1), rises for b (+1); loss the other way.
    let c = csv(&std::fs::read_to_string(out.join("correlations.csv")).unwrap());
    assert_eq!(c[0], ["model", "metric", "n", "spearman", "pearson", "lagged_spearman"]);
    let get = |model: &str, metric: &str| c[1..].iter().find(|r| r[0] == model && r[1] == metric).unwrap_or_else(|| panic!("{model} {metric}: {c:?}")).clone();
    for (model, metric, sign) in [("a", "accuracy", -1.0), ("b", "accuracy", 1.0), ("a", "loss", 1.0), ("b", "loss", -1.0)] {
        let r = get(model, metric);
        assert_eq!(r[2], "5");
        assert_eq!(r[3].parse::<f64>().unwrap(), sign, "{model} {metric} spearman: {r:?}");
        assert!(r[4].parse::<f64>().unwrap() * sign > 0.8, "{model} {metric} pearson: {r:?}");
        // Over 5 checkpoints, 3 pairs of (this interval's LID change, the next one's metric change).
        assert!(r[5].parse::<f64>().is_ok_and(|v| (-1.0..=1.0).contains(&v)), "lagged: {r:?}");
    }
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains("Training metrics against step") && page.contains("correlations.csv") && page.contains("step=300"));
    let svg = std::fs::read_to_string(out.join("metrics.svg")).unwrap();
    assert!(svg.contains("accuracy against step") && svg.contains("loss against step"));
    assert_offline(&out.join("index.html"));

    // Without --metrics the report is as before: no metric columns, no correlations.
    lidscope_ok(&["report", &s(&sweep), "--out", &s(&out)]);
    assert!(!out.join("correlations.csv").exists() && !out.join("metrics.svg").exists());

    // Bad metrics files name the file and the column, before anything is written.
    let bad = d.path().join("bad.csv");
    for (body, want) in [
        ("epoch,accuracy\n1,0.5\n", "no column \"step\", the trend's x key"),
        ("step,accuracy,note\n100,0.5,good\n", "column \"note\" is Utf8: metrics must be numbers"),
        ("step,accuracy\n7,0.5\n", "no row matches a run by step (the runs' values: 100, 200, 400, 800, 1600"),
    ] {
        std::fs::write(&bad, body).unwrap();
        let e = lidscope_err(&["report", &s(&sweep), "--out", &s(&d.path().join("r2")), "--metrics", &s(&bad)]);
        assert!(e.contains("bad.csv") && e.contains(want), "{body}: {e}");
    }
}

/// Two runs on the same tokens (`model=a` on a 3-dimensional cube, `model=b` on a 6-dimensional
/// one, per `layer`): `paired_test` in SQL and `report --compare` give the textbook paired
/// figures of the per-token differences, computed here from the two runs' rows.
#[test]
fn two_runs_compare_token_by_token() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("results");
    for (layer, shift) in [("1", 0u64), ("2", 10)] {
        for (model, manifold) in [("a", 3), ("b", 6)] {
            let c = d.path().join(format!("{model}-{layer}.parquet"));
            write_corpus(&c, manifold, 7 + shift + manifold as u64);
            run(&c, &out, Some(&format!("model={model},layer={layer}")));
        }
    }
    let t = format!("lid={}", s(&out));
    let rows = |model: &str, layer: &str| -> Vec<f64> {
        let q = format!("SELECT lid FROM lid WHERE model = '{model}' AND layer = '{layer}' ORDER BY seq_id");
        csv(&lidscope_ok(&["sql", "--table", &t, "--format", "csv", &q])).into_iter().skip(1).map(|r| r[0].parse().unwrap()).collect()
    };
    let q = "SELECT layer, r['n'] AS n, r['mean_diff'] AS m, r['std_diff'] AS s, r['d_z'] AS dz, r['t'] AS t, r['p'] AS p, r['paper_score'] AS paper FROM \
             (SELECT a.layer, paired_test(a.lid, b.lid) AS r FROM lid a JOIN lid b USING (seq_id, layer) WHERE a.model = 'a' AND b.model = 'b' GROUP BY a.layer) ORDER BY layer";
    let sql = csv(&lidscope_ok(&["sql", "--table", &t, "--format", "csv", q]));
    let rep = d.path().join("rep");
    lidscope_ok(&["report", &s(&out), "--out", &s(&rep), "--compare", "model=a:b"]);
    let cmp = csv(&std::fs::read_to_string(rep.join("compare.csv")).unwrap());
    assert_eq!(cmp[0], ["layer", "n", "mean_diff", "std_diff", "d_z", "t", "p", "paper_score"]);
    for (i, layer) in ["1", "2"].iter().enumerate() {
        let (x, y) = (rows("a", layer), rows("b", layer));
        let diffs: Vec<f64> = x.iter().zip(&y).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(a, b)| a - b).collect();
        let n = diffs.len() as f64;
        let mean = diffs.iter().sum::<f64>() / n;
        let ss = diffs.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        let (sd, pop) = ((ss / (n - 1.0)).sqrt(), (ss / n).sqrt());
        let tval = mean / sd * n.sqrt();
        let want = [n, mean, sd, mean / sd, tval, lidscope_kernel::students_t_two_sided(tval, n - 1.0), mean / pop];
        assert!(mean < -1.0, "a 3-d cube against a 6-d one: {mean}");
        for (row, what) in [(&sql[i + 1], "sql"), (&cmp[i + 1], "report")] {
            assert_eq!(row[0], *layer, "{what}");
            for (k, w) in want.iter().enumerate() {
                let got: f64 = row[k + 1].parse().unwrap_or(f64::NAN);
                assert!((got - w).abs() <= 1e-9 * w.abs().max(1e-300) || (got == 0.0 && *w < 1e-300), "{what} layer {layer} field {k}: {got} vs {w}");
            }
        }
    }
    let page = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert!(page.contains("model=a against model=b, token by token") && page.contains("paper_score"));
    // Without identity-paired runs of that value: a clear error naming the value.
    let o = lidscope(&["report", &s(&out), "--out", &s(&rep), "--compare", "model=a:c"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no run has model=c"), "{:?}", o);
}
