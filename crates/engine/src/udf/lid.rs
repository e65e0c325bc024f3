//! `lid(embedding, reference, k [, estimator [, discard_fraction [, identity]]])`: pointwise LID
//! as a DataFusion scalar function.
//!
//! - `embedding`: a list of floats (FixedSizeList or List of Float16/32/64), one per row;
//! - `reference`: path of a reference Parquet file (identity columns + one embedding column, as
//!   `lidscope run` writes it), loaded once per process ([`super::reference_cache`]);
//! - `k`: neighbourhood size (>= 3); `estimator`: `'twonn'` (default), any other name of
//!   [`lidscope_kernel::LOCAL_ESTIMATOR_NAMES`], or a comma-separated list of them
//!   (`'twonn,mle,lpca-fo'`), all computed from one neighbour search; `discard_fraction`: default
//!   0.1;
//! - `identity`: a struct whose fields name identity columns of the reference, e.g.
//!   `named_struct('seq_id', seq_id, 'position', position)`: a row with the identity of a
//!   reference row is left out of its own neighbourhood.
//!
//! Returns `struct<lid, r1, r2, rk>` (Float64), `lid` the (first) estimator's value; with a list
//! of several estimators, one more field per estimator, `lid_<name>` with `-` as `_` (`lid_mle`,
//! `lid_lpca_fo`). Each batch runs on the process's rayon pool, so partitions evaluated at the same
//! time share the cores instead of oversubscribing them.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{exec_err, plan_err, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};
use lidscope_data::{decode_embeddings, IdentityEncoder};
use lidscope_kernel::{parse_estimators, LidConfig, LocalEstimator, Rows};

use super::reference::LoadedReference;
use crate::error::EngineError;
use super::reference_cache;

/// The `lid` scalar function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LidUdf {
    signature: Signature,
}

impl Default for LidUdf {
    fn default() -> Self {
        Self { signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

/// The result struct's fields for `estimators` as `lid()` was given them: `lid`, `r1`, `r2`, `rk`,
/// and with more than one estimator a `lid_<name>` field for each ([`estimate_column`]).
pub fn lid_fields(estimators: &[LocalEstimator]) -> Fields {
    let mut names: Vec<String> = ["lid", "r1", "r2", "rk"].map(String::from).to_vec();
    if estimators.len() > 1 {
        names.extend(estimators.iter().map(estimate_column));
    }
    Fields::from(names.into_iter().map(|n| Field::new(n, DataType::Float64, false)).collect::<Vec<_>>())
}

/// The result column of one estimator: `lid_<name>`, `-` as `_` (`lid_mle`, `lid_twonn_v05`).
pub fn estimate_column(e: &LocalEstimator) -> String {
    format!("lid_{}", e.column_suffix())
}

/// The estimators of `lid()`'s fourth argument (absent: the paper's TwoNN).
fn estimators_of(arg: Option<&str>) -> Result<Vec<LocalEstimator>> {
    match arg {
        None => Ok(vec![LocalEstimator::TwoNN]),
        Some(list) => parse_estimators(list).map_err(|e| DataFusionError::Plan(format!("lid(): argument 4 (estimator): {e}"))),
    }
}

impl ScalarUDFImpl for LidUdf {
    fn name(&self) -> &str {
        "lid"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !(3..=6).contains(&args.len()) {
            return plan_err!("lid(embedding, reference, k [, estimator [, discard_fraction [, identity]]]) takes 3 to 6 arguments, got {}", args.len());
        }
        if lidscope_data::embedding_field_dim(&args[0]).is_err() {
            return plan_err!("lid(): argument 1 (embedding) must be a list of floats, got {}", args[0]);
        }
        if !matches!(args[1], DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return plan_err!("lid(): argument 2 (reference) must be a file path string, got {}", args[1]);
        }
        if !args[2].is_integer() {
            return plan_err!("lid(): argument 3 (k) must be an integer, got {}", args[2]);
        }
        if args.len() > 5 && !matches!(args[5], DataType::Struct(_)) {
            return plan_err!("lid(): argument 6 (identity) must be a struct such as named_struct('seq_id', seq_id), got {}", args[5]);
        }
        // The fields follow the estimator list, a constant: see `return_field_from_args`.
        Ok(DataType::Struct(lid_fields(&[LocalEstimator::TwoNN])))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args.arg_fields.iter().map(|f| f.data_type().clone()).collect();
        self.return_type(&types)?;
        let list = match args.scalar_arguments.get(3) {
            None => None,
            Some(Some(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)))) => Some(s.as_str()),
            Some(_) => return plan_err!("lid(): argument 4 (estimator) must be a constant string such as 'twonn' or 'twonn,mle'"),
        };
        Ok(Arc::new(Field::new(self.name(), DataType::Struct(lid_fields(&estimators_of(list)?)), false)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let reference = literal_string(&args.args[1], "reference")?;
        let k = match literal(&args.args[2], "k")?.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(k)) if k >= 3 => k as usize,
            other => return exec_err!("lid(): k must be an integer >= 3, got {other}"),
        };
        let list = args.args.get(3).map(|v| literal_string(v, "estimator")).transpose()?;
        let estimators = estimators_of(list.as_deref())?;
        let discard_fraction = match args.args.get(4) {
            None => 0.1,
            Some(v) => match literal(v, "discard_fraction")?.cast_to(&DataType::Float64)? {
                ScalarValue::Float64(Some(f)) => f,
                other => return exec_err!("lid(): discard_fraction must be a number, got {other}"),
            },
        };
        let loaded = reference_cache::load(Path::new(&reference)).map_err(DataFusionError::from)?;
        let emb = args.args[0].to_array(n)?;
        let (values, dim) = decode_embeddings(emb.as_ref(), Path::new("<query>"), "lid() argument 1 (embedding)", 0, Some(loaded.index.dim()))
            .map_err(|e| DataFusionError::from(EngineError::Data(e)))?;
        let exclude = match args.args.get(5) {
            None => None,
            Some(v) => Some(self_rows(&v.to_array(n)?, &loaded, &reference)?),
        };
        let rows = Rows::try_new(&values, n, dim).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let kernel = |e| DataFusionError::from(EngineError::kernel(format!("lid() against {reference}"), e));
        let columns: Vec<ArrayRef> = match estimators.as_slice() {
            // The paper's path (and its bits) for TwoNN alone.
            [one] if one.as_twonn().is_some() => {
                let cfg = LidConfig { k, estimator: one.as_twonn().expect("matched"), discard_fraction };
                let lids = loaded.lid(rows, exclude.as_deref(), &cfg).map_err(kernel)?;
                let col = |f: fn(&lidscope_kernel::PointLid) -> f64| Arc::new(Float64Array::from_iter_values(lids.iter().map(f))) as ArrayRef;
                vec![col(|p| p.lid), col(|p| p.r1), col(|p| p.r2), col(|p| p.rk)]
            }
            _ => {
                let est = loaded.estimates(rows, exclude.as_deref(), k, discard_fraction, &estimators).map_err(kernel)?;
                let col = |v: &[f64]| Arc::new(Float64Array::from(v.to_vec())) as ArrayRef;
                let mut cols = vec![col(&est.columns[0]), col(&est.r1), col(&est.r2), col(&est.rk)];
                if estimators.len() > 1 {
                    cols.extend(est.columns.iter().map(|c| col(c)));
                }
                cols
            }
        };
        let out = StructArray::try_new(lid_fields(&estimators), columns, None)?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The reference row of each query, by identity (`None`: not in the reference).
fn self_rows(identity: &ArrayRef, loaded: &LoadedReference, reference: &str) -> Result<Vec<Option<u32>>> {
    let Some(s) = identity.as_struct_opt() else {
        return exec_err!("lid(): argument 6 (identity) must be a struct");
    };
    let batch = RecordBatch::from(s.clone());
    let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    if let Some(missing) = names.iter().find(|n| !loaded.id_columns.contains(n)) {
        return exec_err!("lid(): identity field {missing:?} is not a column of the reference {reference} (it has {})", loaded.id_columns.join(", "));
    }
    if names.len() != loaded.id_columns.len() {
        return exec_err!(
            "lid(): the identity struct names {} but the reference {reference} is identified by {}",
            names.join(", "),
            loaded.id_columns.join(", ")
        );
    }
    // Keys in the reference's column order, whatever the struct's field order.
    let encoder =
        IdentityEncoder::new(&batch.schema(), &loaded.id_columns, Path::new("<query>")).map_err(|e| DataFusionError::External(Box::new(e)))?;
    let keys = encoder.encode(&batch, Path::new("<query>"), 0).map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(keys.iter().map(|k| loaded.rows.get(&**k).copied()).collect())
}

fn literal<'a>(v: &'a ColumnarValue, what: &str) -> Result<&'a ScalarValue> {
    match v {
        ColumnarValue::Scalar(s) if !s.is_null() => Ok(s),
        _ => exec_err!("lid(): {what} must be a constant"),
    }
}

fn literal_string(v: &ColumnarValue, what: &str) -> Result<String> {
    match literal(v, what)? {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Ok(s.clone()),
        other => exec_err!("lid(): {what} must be a string, got {other}"),
    }
}
