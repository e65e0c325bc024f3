use arrow::array::AsArray;
use arrow::datatypes::Int64Type;

use super::*;
use crate::test_util::{batch, fsl, i64s, list_f64, vector, write};
use crate::{inspect, sample_reference, CorpusSpec, SampleConfig};

fn ids() -> Vec<String> {
    vec!["seq_id".into(), "position".into()]
}

#[test]
fn sample_write_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.parquet");
    let vecs: Vec<Vec<f32>> = (0..30).map(|i| vector(i, 6)).collect();
    write(&corpus, &batch(vec![("seq_id", i64s((0..30).map(|i| i / 4))), ("position", i64s((0..30).map(|i| i % 4))), ("emb", fsl(&vecs))]), 8);
    let spec = CorpusSpec { files: vec![corpus], embedding_column: "emb".into(), id_columns: ids(), filter: None };
    let r = sample_reference(&spec, &inspect(&spec).unwrap(), &SampleConfig::new(20, 10, 11)).unwrap();

    let path = dir.path().join("reference.parquet");
    write_reference(&path, &r, "vec").unwrap();
    let back = read_reference(&path, "vec", &ids()).unwrap();
    assert_eq!(back.keys, r.keys);
    assert_eq!(back.embeddings, r.embeddings);
    assert_eq!(back.ids, r.ids);
    assert_eq!(back.dim, 6);
    assert_eq!(back.stats.rows, 10);
    assert_eq!(vectors_sha256(&back.embeddings, 6), vectors_sha256(&r.embeddings, 6));

    // The file holds FixedSizeList<Float32, 6> and the canonical identity types.
    let info = inspect(&CorpusSpec { files: vec![path.clone()], embedding_column: "vec".into(), id_columns: ids(), filter: None }).unwrap();
    assert_eq!(info.dim, Some(6));
    assert_eq!(info.schema.field_with_name("seq_id").unwrap().data_type(), &DataType::Int64);

    // Without id columns the keys are positional in a file of its own.
    let anon = read_reference(&path, "vec", &[]).unwrap();
    assert_eq!(anon.keys[2], positional_key(u32::MAX, 2));
    assert_eq!(anon.ids.column(1).as_primitive::<arrow::datatypes::UInt64Type>().value(2), 2);
    let first = back.ids.column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(first, r.ids.column(0).as_primitive::<Int64Type>().value(0));
}

#[test]
fn reference_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.parquet");
    let vecs: Vec<Vec<f32>> = (0..5).map(|i| vector(i, 3)).collect();
    write(&p, &batch(vec![("seq_id", i64s([1, 1, 2, 3, 1])), ("position", i64s([0, 1, 0, 0, 1])), ("emb", list_f64(&vecs))]), 2);
    let e = read_reference(&p, "emb", &ids()).unwrap_err();
    assert_eq!(e.to_string(), format!("duplicate identity (seq_id=1, position=1): {0} row 1 and {0} row 4", p.display()));
    // Read as a list of f64 and by a single id column, it is fine.
    let ok = read_reference(&p, "emb", &["position".to_string(), "seq_id".to_string()]);
    assert!(ok.is_err());
    let r = read_reference(&p, "emb", &[]).unwrap();
    assert_eq!((r.len(), r.dim), (5, 3));
    assert_eq!(r.embeddings[3..6], vector(1, 3)[..]);

    let empty = dir.path().join("empty.parquet");
    write(&empty, &batch(vec![("emb", fsl(&vecs))]).slice(0, 0), 2);
    assert_eq!(read_reference(&empty, "emb", &[]).unwrap_err().to_string(), format!("reading {}: file holds no rows", empty.display()));

    let nan = dir.path().join("nan.parquet");
    let mut bad = vecs.clone();
    bad[4][0] = f32::NAN;
    write(&nan, &batch(vec![("emb", fsl(&bad))]), 2);
    assert_eq!(
        read_reference(&nan, "emb", &[]).unwrap_err().to_string(),
        format!(r#"reading {}: column "emb": row 4: NaN at element 0"#, nan.display())
    );
}

#[test]
fn content_hash() {
    assert_eq!(vectors_sha256(&[1.0, 2.0], 2), "b9c80b5adeca450753a16950c3cc655d271f7bef7a485bc83f112b72fef21d37");
    assert_eq!(vectors_sha256(&[1.0, 2.0], 1), vectors_sha256(&[1.0, 2.0], 2));
    assert_ne!(vectors_sha256(&[0.0], 1), vectors_sha256(&[-0.0], 1));
}
