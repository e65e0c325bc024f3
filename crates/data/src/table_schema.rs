//! One schema for a result table, whatever tools wrote the corpora of its runs.
//!
//! A results directory is one table (`<out>/data`, a run per partition), read by lidscope's SQL
//! and by every Parquet dataset reader. Corpora come from many writers, and their carried columns
//! (ids, positions, token strings, labels) differ in integer width, string kind, dictionary
//! encoding and nullability. Readers that merge file schemas refuse such differences for the whole
//! table, so:
//!
//! - **Written canonically.** A run writes each carried column as its [`result_type`]: every
//!   integer that fits as Int64 (Int8 to Int64, UInt8 to UInt32), floats as Float64, every string
//!   kind and string dictionary as Utf8, binaries as Binary, all nullable. These widenings lose no
//!   value, and two runs of corpora that differ only in such physical types write the same schema,
//!   so every reader sees one table.
//! - **Refused before it computes.** Where no lossless type holds both (UInt64 beside signed
//!   integers, a string beside a number, different timestamp units, ...), [`check_new_run`] fails
//!   the run before any work, naming the column, both types and the committed run.
//! - **Unified when read.** Directories written before canonical types (lidscope 0.1) or copied
//!   together from elsewhere are read through [`table_schema`], which widens by the same rules.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{DataError, Result};
use crate::layout::{find_manifests, Layout};
use crate::manifest::read_manifest;
use crate::reader::open_parquet;

/// The type a carried column of a corpus is written as in results: lossless widenings only, so
/// that the same values from differently typed corpora give the same column type.
pub fn result_type(data_type: &DataType) -> DataType {
    use DataType::*;
    match data_type {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 => Int64,
        Float16 | Float32 | Float64 => Float64,
        Utf8 | LargeUtf8 | Utf8View => Utf8,
        Binary | LargeBinary | BinaryView => Binary,
        Dictionary(_, value) => result_type(value),
        other => other.clone(),
    }
}

/// `field` as results carry it: [`result_type`], nullable (another run's corpus may have nulls
/// where this one has none), the field's metadata kept.
pub fn result_field(field: &Field) -> Field {
    field.clone().with_data_type(result_type(field.data_type())).with_nullable(true)
}

/// Casts `column` of file `path` to `field`'s type (a [`result_field`]); a value that does not fit
/// is an error naming the file and column, never a silent null.
///
/// # Errors
/// [`DataError::InvalidValue`] when the cast fails.
pub fn to_result_column(column: &ArrayRef, field: &Field, path: &Path) -> Result<ArrayRef> {
    if column.data_type() == field.data_type() {
        return Ok(column.clone());
    }
    let options = CastOptions { safe: false, ..Default::default() };
    cast_with_options(column, field.data_type(), &options)
        .map_err(|e| DataError::invalid(path, field.name(), None, format!("writing it as {}: {e}", field.data_type())))
}

/// The narrowest type that holds every value of both `a` and `b` exactly, if there is one:
/// integers widen to Int64 (or UInt64 when both are unsigned), floats to Float64, string kinds
/// and dictionaries of them to Utf8, binary kinds to Binary. Integers and floats do not mix
/// (Int64 does not fit Float64), nor do UInt64 and signed integers.
pub fn unify_types(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    if a == b {
        return Some(a.clone());
    }
    let signed = |t: &DataType| matches!(t, Int8 | Int16 | Int32 | Int64);
    let unsigned = |t: &DataType| matches!(t, UInt8 | UInt16 | UInt32 | UInt64);
    let float = |t: &DataType| matches!(t, Float16 | Float32 | Float64);
    let string = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    match (a, b) {
        (Dictionary(_, v), other) | (other, Dictionary(_, v)) => unify_types(v, other),
        _ if unsigned(a) && unsigned(b) => Some(if matches!(a, UInt64) || matches!(b, UInt64) { UInt64 } else { UInt32 }),
        _ if (signed(a) || unsigned(a)) && (signed(b) || unsigned(b)) => (!matches!(a, UInt64) && !matches!(b, UInt64)).then_some(Int64),
        _ if float(a) && float(b) => Some(Float64),
        _ if string(a) && string(b) => Some(Utf8),
        _ if binary(a) && binary(b) => Some(Binary),
        _ => None,
    }
}

/// One Parquet part of a result table and the run it belongs to.
#[derive(Clone, Debug)]
pub struct TablePart {
    /// The run: its partition directory under `data/` (`model=m/ckpt=3`), or `(unpartitioned)`.
    pub run: String,
    /// The file.
    pub path: PathBuf,
    /// Its Arrow schema, from the footer.
    pub schema: SchemaRef,
}

/// Every part file a dataset reader of `<dir>/data` reads (`*.parquet`, names starting with `.`
/// or `_` skipped, as Parquet dataset readers skip them), with its schema, sorted by path. On an
/// object store, the files the result's manifests list.
///
/// # Errors
/// [`DataError::Io`] when a directory cannot be listed, [`DataError::NotParquet`] for a file
/// whose footer cannot be read.
pub fn table_parts(dir: &Path) -> Result<Vec<TablePart>> {
    let data = dir.join("data");
    let mut files = Vec::new();
    if crate::store::is_object(dir) {
        // No listing shows what is committed on a store: the manifests say.
        for manifest in find_manifests(dir)? {
            files.extend(read_manifest(&manifest)?.files.iter().map(|f| dir.join(f)));
        }
    } else if data.is_dir() {
        collect_parquet(&data, &mut files)?;
    }
    files.sort();
    files.into_iter().map(|path| part(&data, path)).collect()
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        if path.is_dir() {
            collect_parquet(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

fn part(data: &Path, path: PathBuf) -> Result<TablePart> {
    let run = match path.parent().and_then(|p| p.strip_prefix(data).ok()).map(|p| p.display().to_string()) {
        Some(r) if !r.is_empty() => r,
        _ => "(unpartitioned)".to_string(),
    };
    let schema = open_parquet(&path)?.schema().clone();
    Ok(TablePart { run, path, schema })
}

/// The schema that reads every part of result directory `dir` together: each column at the
/// [`unify_types`] of its types across the parts, nullable where any part has it nullable or
/// lacks it, in the order columns first appear (sorted by path). `None` for a directory without
/// parts.
///
/// # Errors
/// [`DataError::IncompatibleRuns`] when a column's types have no lossless common type (naming
/// both files and runs), and those of [`table_parts`].
pub fn table_schema(dir: &Path) -> Result<Option<Schema>> {
    let parts = table_parts(dir)?;
    if parts.is_empty() {
        return Ok(None);
    }
    let mut fields: Vec<Field> = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        for f in part.schema.fields() {
            let Some(at) = fields.iter().position(|x| x.name() == f.name()) else {
                // A column absent from earlier parts reads as null there.
                fields.push(f.as_ref().clone().with_nullable(f.is_nullable() || p > 0));
                continue;
            };
            let merged = unify_types(fields[at].data_type(), f.data_type()).ok_or_else(|| {
                // Name a part whose own type clashes with this one (there is one: widening only
                // ever adds integer or float width).
                let type_in = |q: &TablePart| q.schema.field_with_name(f.name()).map(|x| x.data_type().clone()).ok();
                let a = parts[..p]
                    .iter()
                    .find(|q| type_in(q).is_some_and(|t| unify_types(&t, f.data_type()).is_none()))
                    .or_else(|| parts[..p].iter().find(|q| type_in(q).is_some()))
                    .expect("an earlier part has the column");
                DataError::IncompatibleRuns {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "column \"{}\" is {} in {} (run {}) and {} in {} (run {}): no type holds both without loss, so the runs cannot be read as one table",
                        f.name(),
                        type_in(a).expect("found with the column"),
                        relative(dir, &a.path),
                        a.run,
                        f.data_type(),
                        relative(dir, &part.path),
                        part.run,
                    ),
                }
            })?;
            let nullable = fields[at].is_nullable() || f.is_nullable();
            fields[at] = fields[at].clone().with_data_type(merged).with_nullable(nullable);
        }
        for f in fields.iter_mut() {
            if part.schema.field_with_name(f.name()).is_err() {
                *f = f.clone().with_nullable(true);
            }
        }
    }
    Ok(Some(Schema::new(fields)))
}

/// Refuses, before it computes, a run whose result `schema` could not be read with the runs
/// already committed in its output directory: for each committed run but the run's own (which it
/// replaces), every column both carry must have a lossless common type ([`unify_types`]).
///
/// # Errors
/// [`DataError::IncompatibleRuns`] naming the column, both types and the committed run and file.
pub fn check_new_run(layout: &Layout, schema: &Schema) -> Result<()> {
    let own = layout.manifests();
    for manifest_path in find_manifests(layout.out())? {
        if own.contains(&manifest_path) {
            continue;
        }
        let manifest = read_manifest(&manifest_path)?;
        let run = match manifest.partition.is_empty() {
            true => "(unpartitioned)".to_string(),
            false => manifest_path
                .parent()
                .and_then(|p| p.strip_prefix(layout.out().join("data")).ok())
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        };
        for file in &manifest.files {
            let path = layout.out().join(file);
            if !crate::store::is_object(&path) && !path.is_file() {
                continue;
            }
            let theirs = open_parquet(&path)?.schema().clone();
            for f in schema.fields() {
                let Ok(t) = theirs.field_with_name(f.name()) else { continue };
                if unify_types(f.data_type(), t.data_type()).is_none() {
                    return Err(DataError::IncompatibleRuns {
                        dir: layout.out().to_path_buf(),
                        message: format!(
                            "this run would write column \"{}\" as {}, but run {run} was committed with {} ({file}): no type holds both without loss, \
                             so the results could no longer be read as one table; cast the column in the corpus, rename it, or write this run to another --out",
                            f.name(),
                            f.data_type(),
                            t.data_type(),
                        ),
                    });
                }
            }
            // One part per run is enough: a run's parts share one schema.
            break;
        }
    }
    Ok(())
}

fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

/// The result schema of a run's carried `fields` followed by `outputs` (non-nullable Float64
/// columns such as `lid`).
pub fn result_schema<'a>(fields: impl IntoIterator<Item = &'a Field>, outputs: &[&str]) -> SchemaRef {
    let mut all: Vec<Field> = fields.into_iter().map(result_field).collect();
    all.extend(outputs.iter().map(|c| Field::new(*c, DataType::Float64, false)));
    Arc::new(Schema::new(all))
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use arrow::array::{Array, DictionaryArray, Float64Array, Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray, UInt64Array};
    use arrow::datatypes::Int16Type;
    use parquet::arrow::ArrowWriter;

    use super::*;

    #[test]
    fn lossless_widenings_only() {
        use DataType::*;
        let dict = |v: DataType| Dictionary(Box::new(Int32), Box::new(v));
        for (a, b, want) in [
            (Int32, Int64, Some(Int64)),
            (UInt32, Int8, Some(Int64)),
            (UInt8, UInt32, Some(UInt32)),
            (UInt64, UInt16, Some(UInt64)),
            (UInt64, Int64, None),
            (Float32, Float64, Some(Float64)),
            (Int64, Float64, None),
            (Utf8, LargeUtf8, Some(Utf8)),
            (Utf8View, Utf8, Some(Utf8)),
            (dict(Utf8), LargeUtf8, Some(Utf8)),
            (dict(Int16), Int32, Some(Int64)),
            (Utf8, Int64, None),
            (LargeBinary, BinaryView, Some(Binary)),
            (Boolean, Boolean, Some(Boolean)),
        ] {
            assert_eq!(unify_types(&a, &b), want, "{a} with {b}");
            assert_eq!(unify_types(&b, &a), want, "{b} with {a}");
        }
        assert_eq!(result_type(&dict(LargeUtf8)), Utf8);
        assert_eq!(result_type(&UInt32), Int64);
        assert_eq!(result_type(&UInt64), UInt64);
        assert_eq!(result_type(&Float16), Float64);
    }

    #[test]
    fn result_columns_keep_every_value() {
        let dict: DictionaryArray<Int16Type> = vec![Some("a"), None, Some("b")].into_iter().collect();
        let f = result_field(&Field::new("t", dict.data_type().clone(), false));
        assert_eq!((f.data_type(), f.is_nullable()), (&DataType::Utf8, true));
        let got = to_result_column(&(Arc::new(dict) as ArrayRef), &f, Path::new("c.parquet")).unwrap();
        assert_eq!(got.as_ref(), &StringArray::from(vec![Some("a"), None, Some("b")]) as &dyn Array);
        let f = result_field(&Field::new("p", DataType::Int32, true));
        let got = to_result_column(&(Arc::new(Int32Array::from(vec![i32::MIN, 7])) as ArrayRef), &f, Path::new("c.parquet")).unwrap();
        assert_eq!(got.as_ref(), &Int64Array::from(vec![i32::MIN as i64, 7]) as &dyn Array);
    }

    fn write(path: &Path, cols: Vec<(&str, ArrayRef)>) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let batch = RecordBatch::try_from_iter_with_nullable(cols.into_iter().map(|(n, a)| (n, a, false))).unwrap();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn a_table_of_differently_typed_runs_reads_widened() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let lid = || Arc::new(Float64Array::from(vec![1.0])) as ArrayRef;
        write(&data.join("m=a/part-00000.parquet"), vec![("position", Arc::new(Int32Array::from(vec![1])) as ArrayRef), ("lid", lid())]);
        write(
            &data.join("m=b/part-00000.parquet"),
            vec![
                ("position", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
                ("token", Arc::new(LargeStringArray::from(vec!["x"])) as ArrayRef),
                ("lid", lid()),
            ],
        );
        write(&data.join("m=b/.staging/part-00000.parquet"), vec![("position", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)]);
        let s = table_schema(d.path()).unwrap().unwrap();
        let types: Vec<(String, DataType, bool)> = s.fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
        assert_eq!(
            types,
            // A type only one part has stays as it is; `token` is null in m=a.
            vec![("position".into(), DataType::Int64, false), ("lid".into(), DataType::Float64, false), ("token".into(), DataType::LargeUtf8, true)]
        );

        write(&data.join("m=c/part-00000.parquet"), vec![("position", Arc::new(UInt64Array::from(vec![3])) as ArrayRef)]);
        let e = table_schema(d.path()).unwrap_err().to_string();
        assert!(e.contains("column \"position\" is Int32 in data/m=a/part-00000.parquet (run m=a) and UInt64 in data/m=c/part-00000.parquet (run m=c)"), "{e}");
    }
}
