//! `report --compare KEY=A:B`: the paper's main comparison, two runs on the same tokens (checkpoint
//! a against b, base against fine-tuned), for every combination of the other partition keys. The
//! runs are joined on their identity columns and summarised by the `paired_test` SQL aggregate,
//! the same figures a user gets from `lidscope sql`.

use std::path::Path;

use arrow::array::RecordBatch;
use lidscope_engine::sql;

use crate::error::{ReportError, Result};
use crate::load::Results;

/// Which runs to compare: those with `key = a` against those with `key = b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The partition key that tells the two sides apart.
    pub key: String,
    /// Its value on the first side (`x` of `x - y`).
    pub a: String,
    /// Its value on the second side.
    pub b: String,
}

impl std::str::FromStr for Comparison {
    type Err = String;

    /// `step=3600:4900`, `model=base:tuned`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?} is not KEY=A:B (e.g. step=3600:4900 or model=base:tuned)");
        let (key, values) = s.split_once('=').ok_or_else(bad)?;
        let (a, b) = values.split_once(':').ok_or_else(bad)?;
        if key.is_empty() || a.is_empty() || b.is_empty() || a == b {
            return Err(bad());
        }
        Ok(Comparison { key: key.into(), a: a.into(), b: b.into() })
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn ident(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// The comparison's table: the other partition keys, then `paired_test`'s fields (`n`,
/// `mean_diff` of `A - B`, `std_diff`, `d_z`, `t`, `p`, `paper_score`), one row per combination of
/// the other keys whose two runs share identities.
///
/// # Errors
/// [`ReportError::Input`] naming the results: the key is not a partition key, a value has no run,
/// the runs have no identity columns, or the query fails.
pub(crate) async fn compare(results: &Results, c: &Comparison, estimator: Option<&str>) -> Result<RecordBatch> {
    let bad = |reason: String| ReportError::Input { path: results.dir.clone(), reason: format!("--compare {}={}:{}: {reason}", c.key, c.a, c.b) };
    let Some(index) = results.keys.iter().position(|k| *k == c.key) else {
        return Err(bad(format!("no partition key {:?} (keys: {})", c.key, results.keys.join(", "))));
    };
    for v in [&c.a, &c.b] {
        if !results.runs.iter().any(|r| &r.values[index] == v) {
            let mut have: Vec<&str> = Vec::new();
            for r in &results.runs {
                if !have.contains(&r.values[index].as_str()) {
                    have.push(&r.values[index]);
                }
            }
            return Err(bad(format!("no run has {}={v} (values: {})", c.key, have.join(", "))));
        }
    }
    let ids = identity_columns(&results.dir).map_err(&bad)?;
    let others: Vec<&String> = results.keys.iter().filter(|k| **k != c.key).collect();
    let ctx = sql::session();
    let dir = results.dir.to_str().ok_or_else(|| bad("not a UTF-8 path".into()))?;
    sql::register_measuring(&ctx, "lid", dir, estimator).await.map_err(|e| bad(e.to_string()))?;
    let on: Vec<String> = ids.iter().chain(others.iter().copied()).map(|k| format!("a.{0} = b.{0}", ident(k))).collect();
    let group: Vec<String> = others.iter().map(|k| format!("a.{}", ident(k))).collect();
    let select: Vec<String> = others.iter().map(|k| format!("a.{0} AS {0}", ident(k))).collect();
    let fields: Vec<String> = lidscope_engine::udf::PAIRED_FIELDS.iter().map(|f| format!("r['{f}'] AS {f}")).collect();
    let inner = format!(
        "SELECT {sel}paired_test(a.lid, b.lid) AS r FROM lid a JOIN lid b ON {on} WHERE a.{key} = {a} AND b.{key} = {b}{group}",
        sel = select.iter().map(|s| format!("{s}, ")).collect::<String>(),
        on = on.join(" AND "),
        key = ident(&c.key),
        a = quote(&c.a),
        b = quote(&c.b),
        group = if group.is_empty() { String::new() } else { format!(" GROUP BY {}", group.join(", ")) },
    );
    let outer_keys: Vec<String> = others.iter().map(|k| ident(k)).collect();
    let query = format!(
        "SELECT {keys}{fields} FROM ({inner}){order}",
        keys = outer_keys.iter().map(|k| format!("{k}, ")).collect::<String>(),
        fields = fields.join(", "),
        order = if outer_keys.is_empty() { String::new() } else { format!(" ORDER BY {}", outer_keys.join(", ")) },
    );
    let df = ctx.sql(&query).await.map_err(|e| bad(e.to_string()))?;
    let schema = df.schema().inner().clone();
    let batches = df.collect().await.map_err(|e| bad(e.to_string()))?;
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| bad(e.to_string()))
}

/// The identity columns the runs were measured with (their manifests'): what pairs a token of one
/// run with the same token of the other.
fn identity_columns(dir: &Path) -> std::result::Result<Vec<String>, String> {
    let manifests = lidscope_data::find_manifests(dir).map_err(|e| e.to_string())?;
    let first = manifests.first().ok_or("no run manifest: comparing needs committed runs")?;
    let m = lidscope_data::read_manifest(first).map_err(|e| e.to_string())?;
    if m.id_columns.is_empty() {
        return Err("the runs have no identity columns (run --id-columns), so no token of one run can be paired with the other's".into());
    }
    Ok(m.id_columns)
}
