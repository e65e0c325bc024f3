//! Seeded synthetic corpora for `demo` and `bench`: tokens near a low-dimensional curved manifold,
//! far from the origin (as real hidden states are), written as real Parquet files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use lidscope_data::AtomicParquetWriter;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Tokens per synthetic sequence.
const SEQ_LEN: usize = 64;

/// What to generate.
pub struct SynthSpec {
    pub rows: usize,
    pub dim: usize,
    pub manifold_dim: usize,
    pub seed: u64,
    pub files: usize,
}

/// Writes `files` Parquet files `part-N.parquet` into `dir` with columns `seq_id` (Int64),
/// `position` (Int32), `token` (Utf8) and `embedding` (FixedSizeList<Float32, dim>).
///
/// Each vector is `c + A z + B sin(3 z) + noise` with `z` uniform in `[-1, 1]^m`: a curved
/// `m`-dimensional manifold whose centre `c` is far from the origin.
pub fn write_corpus(dir: &Path, spec: &SynthSpec) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let (d, m) = (spec.dim, spec.manifold_dim);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let scale = 1.0 / (m as f32).sqrt();
    let centre: Vec<f32> = (0..d).map(|_| 4.0 + rng.random_range(-1.0f32..1.0)).collect();
    let a: Vec<f32> = (0..m * d).map(|_| rng.random_range(-scale..scale)).collect();
    let b: Vec<f32> = (0..m * d).map(|_| rng.random_range(-scale..scale) * 0.5).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq_id", DataType::Int64, false),
        Field::new("position", DataType::Int32, false),
        Field::new("token", DataType::Utf8, false),
        Field::new("embedding", DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), d as i32), false),
    ]));
    let per_file = spec.rows.div_ceil(spec.files.max(1));
    let mut paths = Vec::new();
    let mut z = vec![0.0f32; m];
    let mut s = vec![0.0f32; m];
    for (f, lo) in (0..spec.rows).step_by(per_file.max(1)).enumerate() {
        let hi = (lo + per_file).min(spec.rows);
        let mut values = Vec::with_capacity((hi - lo) * d);
        for _ in lo..hi {
            z.iter_mut().for_each(|v| *v = rng.random_range(-1.0f32..1.0));
            s.iter_mut().zip(&z).for_each(|(s, z)| *s = (3.0 * z).sin());
            for p in 0..d {
                let mut v = centre[p] + rng.random_range(-0.01f32..0.01);
                for j in 0..m {
                    v += a[j * d + p] * z[j] + b[j * d + p] * s[j];
                }
                values.push(v);
            }
        }
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values((lo..hi).map(|i| (i / SEQ_LEN) as i64))),
            Arc::new(Int32Array::from_iter_values((lo..hi).map(|i| (i % SEQ_LEN) as i32))),
            Arc::new(StringArray::from_iter_values((lo..hi).map(token))),
            Arc::new(FixedSizeListArray::try_new(item, d as i32, Arc::new(Float32Array::from(values)), None)?),
        ];
        let path = dir.join(format!("part-{f:03}.parquet"));
        let mut w = AtomicParquetWriter::new(&path, schema.clone())?;
        w.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
        w.finish()?;
        paths.push(path);
    }
    Ok(paths)
}

/// A skewed vocabulary of 300 token strings, so that per-token aggregates have something to show.
fn token(i: usize) -> String {
    let u = ((i * 7919) % 5000) as f64 / 5000.0;
    format!("tok{}", (u * u * 300.0) as usize)
}
