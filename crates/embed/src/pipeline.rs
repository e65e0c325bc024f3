//! The streaming pipeline behind `lidscope embed`: Parquet texts in, a corpus directory of Parquet
//! parts out (one row per token), written into a temporary sibling directory that replaces `out`
//! only when every part is complete: on any error nothing is left behind.
//!
//! Texts and the corpus may be on an S3-compatible store (`s3://`). A store has no rename: the
//! parts are written in a local staging directory first ([`lidscope_data::staging_root`]), then
//! uploaded one PUT each, and `_SUCCESS` is put last (and deleted first when a corpus is
//! replaced), so a reader that waits for it (a sweep's `completion_marker`) never reads a corpus
//! half uploaded. Local corpora get the same marker, so one sweep spec serves both.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use lidscope_data::store::{self, ObjectUrl, PutMode};

use crate::{EmbedError, Embedder};

/// What `lidscope embed` was asked to do.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    /// Parquet files, directories or globs holding the texts.
    pub texts: Vec<String>,
    /// The column holding one text per row.
    pub text_column: String,
    /// Where the corpus goes.
    pub out: PathBuf,
    /// Columns that name a text; `None`: `seq_id`, the row's index over the inputs in order.
    pub id_columns: Option<Vec<String>>,
    /// Requested hidden states (Hugging Face's numbering, `all`, `prenorm`); empty: all.
    pub layers: Vec<crate::LayerRequest>,
    /// Truncation length, special tokens included; `None`: [`Embedder::default_max_length`].
    pub max_length: Option<usize>,
    /// How texts are grouped into forward passes.
    pub batching: crate::Batching,
    /// Replace an existing `out`.
    pub overwrite: bool,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct EmbedSummary {
    /// Texts embedded.
    pub texts: u64,
    /// Token rows written.
    pub tokens: u64,
    /// Part files written.
    pub parts: usize,
    /// Resolved hidden-state indices ([`Embedder::resolve_layers`]).
    pub layers: Vec<usize>,
    /// Their columns, `hidden_L<i>` (and `hidden_L<n>_prenorm`).
    pub columns: Vec<String>,
    /// The truncation length used.
    pub max_length: usize,
    /// Wall time.
    pub seconds: f64,
}

/// Progress of [`embed_corpus`].
pub enum EmbedProgress {
    /// Embedding starts: this many texts in all.
    Start(u64),
    /// This many more texts are done.
    Advance(u64),
}

struct Input {
    path: PathBuf,
    rows: u64,
}

/// Removes the temporary output directory unless disarmed.
struct TmpDir(Option<PathBuf>);

impl Drop for TmpDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Io(format!("{}: {e}", path.display()))
}

/// The marker put beside a corpus's parts once all of them are in place.
pub const COMPLETION_MARKER: &str = "_SUCCESS";

/// Where the corpus goes: a local directory (replaced by a rename) or an object-store prefix
/// (uploaded part by part, the marker last). Parts are written in `tmp` first either way.
struct Target {
    out: PathBuf,
    url: Option<ObjectUrl>,
    tmp: PathBuf,
}

impl Target {
    /// Refuses an existing, non-empty `out` without `overwrite` (for a prefix: one that holds
    /// objects; the listing also finds a missing bucket or wrong credentials before any work),
    /// and makes the staging directory.
    fn prepare(out: &Path, overwrite: bool) -> Result<Self, EmbedError> {
        let exists = |what: &str| EmbedError::Input(format!("{}: already {what} (use --overwrite to replace it)", out.display()));
        let url = ObjectUrl::of(out).map_err(|e| EmbedError::Input(e.to_string()))?;
        let tmp = match &url {
            Some(url) => {
                let prefix = url.join("");
                if !store::list(&prefix).map_err(|e| EmbedError::Io(e.to_string()))?.is_empty() && !overwrite {
                    return Err(exists("holds objects"));
                }
                let name: String = url.url().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
                lidscope_data::staging_root().join(format!("embed-{name}-{}", std::process::id()))
            }
            None => {
                if out.exists() {
                    if !out.is_dir() {
                        return Err(io(out, "exists and is not a directory"));
                    }
                    let empty = std::fs::read_dir(out).map_err(|e| io(out, e))?.next().is_none();
                    if !empty && !overwrite {
                        return Err(exists("exists"));
                    }
                }
                let parent = match out.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
                let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
                parent.join(format!(".{name}.embed-tmp-{}", std::process::id()))
            }
        };
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        Ok(Target { out: out.to_path_buf(), url, tmp })
    }

    /// Puts the complete corpus in place, the marker (holding the token count) last.
    fn commit(&self, tokens: u64) -> Result<(), EmbedError> {
        let marker = serde_json::json!({ "tokens": tokens }).to_string();
        let marker_path = self.tmp.join(COMPLETION_MARKER);
        std::fs::write(&marker_path, &marker).map_err(|e| io(&marker_path, e))?;
        let Some(url) = &self.url else {
            if self.out.exists() {
                std::fs::remove_dir_all(&self.out).map_err(|e| io(&self.out, format!("cannot replace: {e}")))?;
            }
            return std::fs::rename(&self.tmp, &self.out).map_err(|e| io(&self.out, e));
        };
        let store_err = |e: lidscope_data::DataError| EmbedError::Io(e.to_string());
        let prefix = url.join("");
        let marker_url = prefix.join(COMPLETION_MARKER);
        store::delete(&marker_url).map_err(store_err)?;
        let mut names: Vec<String> = std::fs::read_dir(&self.tmp)
            .map_err(|e| io(&self.tmp, e))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| io(&self.tmp, e))?;
        names.retain(|n| n != COMPLETION_MARKER);
        names.sort();
        for name in &names {
            store::upload(&self.tmp.join(name), &prefix.join(name)).map_err(store_err)?;
        }
        // What an earlier corpus here left that this one does not have (e.g. more parts).
        for m in store::list(&prefix).map_err(store_err)? {
            let key = m.location.as_ref();
            if !names.iter().any(|n| key.strip_prefix(prefix.key.as_str()) == Some(n.as_str())) {
                store::delete(&ObjectUrl { bucket: prefix.bucket.clone(), key: key.to_string() }).map_err(store_err)?;
            }
        }
        store::put(&marker_url, marker.into(), PutMode::Overwrite).map_err(store_err)?.map_err(|r| EmbedError::Io(format!("{}: {r}", marker_url.url())))
    }
}

const FIXED: [&str; 4] = ["position", "token_id", "token", "special"];

/// Embeds every text of `opts.texts` with `embedder` and writes the corpus to `opts.out`.
///
/// # Errors
/// [`EmbedError`] naming the file and the problem (missing column, empty text, layer out of range,
/// existing output without `overwrite`); nothing is written then.
pub fn embed_corpus(embedder: &Embedder, opts: &EmbedOptions, progress: &dyn Fn(EmbedProgress)) -> Result<EmbedSummary, EmbedError> {
    let started = Instant::now();
    let layers = if opts.layers.is_empty() { (0..embedder.num_hidden_states()).collect() } else { embedder.resolve_layers(&opts.layers)? };
    let columns: Vec<String> = layers.iter().map(|&l| embedder.column_name(l)).collect();
    let max_length = opts.max_length.unwrap_or_else(|| embedder.default_max_length());
    if max_length < 2 {
        return Err(EmbedError::Input(format!("--max-length {max_length} is too short (at least 2)")));
    }
    if max_length > embedder.max_positions() {
        return Err(EmbedError::Input(format!(
            "--max-length {} exceeds what {} can take ({} positions)",
            max_length,
            embedder.dir.join("config.json").display(),
            embedder.max_positions()
        )));
    }
    let batching = opts.batching;

    // Inputs: every file checked before anything is computed.
    let files = lidscope_data::resolve_inputs(&opts.texts).map_err(|e| EmbedError::Input(e.to_string()))?;
    let mut inputs = Vec::new();
    let mut carried: Option<Vec<Field>> = None;
    let mut id_fields: Vec<Field> = Vec::new();
    for path in &files {
        let b = lidscope_data::open_parquet(path).map_err(|e| EmbedError::Io(e.to_string()))?;
        let schema = b.schema().clone();
        let rows = b.metadata().file_metadata().num_rows() as u64;
        let col = schema.field_with_name(&opts.text_column).map_err(|_| {
            EmbedError::Input(format!(
                "{}: no column {:?} (--text-column); columns: {}",
                path.display(),
                opts.text_column,
                schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        if !matches!(col.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return Err(EmbedError::Input(format!("{}: column {:?} is {}, not text", path.display(), opts.text_column, col.data_type())));
        }
        let ids: Vec<String> = opts.id_columns.clone().unwrap_or_default();
        let mut this_ids = Vec::new();
        for id in &ids {
            let f = schema.field_with_name(id).map_err(|_| EmbedError::Input(format!("{}: no id column {id:?} (--id-columns)", path.display())))?;
            this_ids.push(f.clone());
        }
        let rest: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != &opts.text_column && !ids.contains(f.name()))
            .map(|f| f.as_ref().clone())
            .collect();
        for f in rest.iter().chain(this_ids.iter()) {
            let n = f.name().as_str();
            if FIXED.contains(&n) || n.starts_with("hidden_L") || (opts.id_columns.is_none() && n == "seq_id") {
                let hint = if n == "seq_id" { " (name it with --id-columns seq_id)" } else { "" };
                return Err(EmbedError::Input(format!("{}: column {n:?} clashes with an output column{hint}", path.display())));
            }
        }
        match &carried {
            None => {
                carried = Some(rest);
                id_fields = this_ids;
            }
            Some(c) => {
                let names = |v: &[Field]| v.iter().map(|f| (f.name().clone(), f.data_type().clone())).collect::<Vec<_>>();
                if names(c.as_slice()) != names(rest.as_slice()) || names(id_fields.as_slice()) != names(this_ids.as_slice()) {
                    return Err(EmbedError::Input(format!("{}: its columns differ from {}'s", path.display(), files[0].display())));
                }
            }
        }
        inputs.push(Input { path: path.clone(), rows });
    }
    let carried = carried.unwrap_or_default();

    // Output directory (or prefix), checked before anything is computed.
    let target = Target::prepare(&opts.out, opts.overwrite)?;
    let tmp = target.tmp.clone();
    let mut guard = TmpDir(Some(tmp.clone()));

    // Output schema.
    let dim = embedder.dim();
    let mut fields: Vec<Field> = Vec::new();
    if opts.id_columns.is_none() {
        fields.push(Field::new("seq_id", DataType::Int64, false));
    } else {
        fields.extend(id_fields.iter().cloned());
    }
    fields.push(Field::new("position", DataType::Int32, false));
    fields.push(Field::new("token_id", DataType::Int32, false));
    fields.push(Field::new("token", DataType::Utf8, false));
    fields.push(Field::new("special", DataType::Boolean, false));
    fields.extend(carried.iter().cloned());
    let elem = Arc::new(Field::new("element", DataType::Float32, false));
    for c in &columns {
        fields.push(Field::new(c.clone(), DataType::FixedSizeList(elem.clone(), dim as i32), false));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let special: Vec<String> = embedder.special_ids().iter().map(|i| i.to_string()).collect();
    let kv = vec![
        KeyValue::new("lidscope.embed.model".into(), embedder.dir.display().to_string()),
        KeyValue::new("lidscope.embed.model_type".into(), embedder.config.model_type.clone()),
        KeyValue::new("lidscope.embed.config_sha256".into(), embedder.config_sha256.clone()),
        KeyValue::new("lidscope.embed.layers".into(), columns.iter().map(|c| c.trim_start_matches("hidden_L")).collect::<Vec<_>>().join(",")),
        KeyValue::new("lidscope.embed.max_length".into(), max_length.to_string()),
        KeyValue::new("lidscope.embed.special_token_ids".into(), special.join(",")),
    ];
    // Row groups of about 32 MB of vectors; parts of 16 row groups.
    let group_rows = ((8usize << 20) / (dim * layers.len()).max(1)).clamp(256, 65536);
    let part_rows = group_rows * 16;
    // zstd for the ids and tokens; the hidden states plain, which later runs read fastest.
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_max_row_group_row_count(Some(group_rows))
        .set_key_value_metadata(Some(kv));
    let props = lidscope_data::plain_float_lists(props, &schema).build();

    let total: u64 = inputs.iter().map(|i| i.rows).sum();
    progress(EmbedProgress::Start(total));
    let mut writer: Option<(ArrowWriter<File>, usize)> = None;
    let mut parts = 0usize;
    let mut texts_done = 0u64;
    let mut tokens = 0u64;
    let mut seq_base = 0i64;
    // Texts read (and their hidden states held) at a time: a pass's worth of texts, at least 64.
    let chunk = batching.texts.max(64);
    for input in &inputs {
        let path = &input.path;
        let reader = lidscope_data::open_parquet(path)
            .map_err(|e| EmbedError::Io(e.to_string()))?
            .with_batch_size(chunk)
            .build()
            .map_err(|e| io(path, format!("not a readable Parquet file: {e}")))?;
        let mut row0 = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| io(path, format!("reading: {e}")))?;
            let schema_in = batch.schema();
            let text_idx = schema_in.index_of(&opts.text_column).map_err(|e| io(path, e))?;
            let id_cols_idx: Vec<usize> = id_fields.iter().map(|f| schema_in.index_of(f.name()).expect("checked")).collect();
            let carried_idx: Vec<usize> = carried.iter().map(|f| schema_in.index_of(f.name()).expect("checked")).collect();
            let col = cast(batch.column(text_idx), &DataType::Utf8).map_err(|e| io(path, e))?;
            let col = col.as_string::<i32>();
            let mut texts = Vec::with_capacity(col.len());
            for r in 0..col.len() {
                if col.is_null(r) || col.value(r).trim().is_empty() {
                    return Err(EmbedError::Input(format!(
                        "{}: row {}: the text in column {:?} is {}",
                        path.display(),
                        row0 + r as u64,
                        opts.text_column,
                        if col.is_null(r) { "null" } else { "empty" }
                    )));
                }
                texts.push(col.value(r));
            }
            let emb = embedder.embed(&texts, &layers, max_length, batching)?;
            // Rows: one per token.
            let n_tok: usize = emb.iter().map(|e| e.ids.len()).sum();
            let mut take_idx = Vec::with_capacity(n_tok);
            let mut seq = Vec::with_capacity(n_tok);
            let mut pos = Vec::with_capacity(n_tok);
            let mut tid = Vec::with_capacity(n_tok);
            let mut tok = Vec::with_capacity(n_tok);
            let mut spe = Vec::with_capacity(n_tok);
            let mut hid: Vec<Vec<f32>> = vec![Vec::with_capacity(n_tok * dim); layers.len()];
            for (r, e) in emb.iter().enumerate() {
                for p in 0..e.ids.len() {
                    take_idx.push(r as u32);
                    seq.push(seq_base + r as i64);
                    pos.push(p as i32);
                    tid.push(e.ids[p] as i32);
                    tok.push(e.tokens[p].as_str());
                    spe.push(e.special[p]);
                }
                for (h, src) in hid.iter_mut().zip(&e.hidden) {
                    h.extend_from_slice(src);
                }
            }
            let take_idx = UInt32Array::from(take_idx);
            let mut cols: Vec<ArrayRef> = Vec::new();
            if opts.id_columns.is_none() {
                cols.push(Arc::new(Int64Array::from(seq)));
            } else {
                for &i in &id_cols_idx {
                    cols.push(take(batch.column(i), &take_idx, None).map_err(|e| io(path, e))?);
                }
            }
            cols.push(Arc::new(Int32Array::from(pos)));
            cols.push(Arc::new(Int32Array::from(tid)));
            cols.push(Arc::new(StringArray::from(tok)));
            cols.push(Arc::new(BooleanArray::from(spe)));
            for &i in &carried_idx {
                cols.push(take(batch.column(i), &take_idx, None).map_err(|e| io(path, e))?);
            }
            for h in hid {
                let values = Arc::new(Float32Array::from(h));
                let a = FixedSizeListArray::try_new(elem.clone(), dim as i32, values, None).map_err(|e| EmbedError::Compute(e.to_string()))?;
                cols.push(Arc::new(a));
            }
            let out_batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| io(path, e))?;
            if writer.is_none() {
                let p = tmp.join(format!("part-{parts:05}.parquet"));
                let f = File::create(&p).map_err(|e| io(&p, e))?;
                let w = ArrowWriter::try_new(f, schema.clone(), Some(props.clone())).map_err(|e| io(&p, e))?;
                writer = Some((w, 0));
                parts += 1;
            }
            let (w, rows) = writer.as_mut().expect("just opened");
            w.write(&out_batch).map_err(|e| io(&opts.out, e))?;
            *rows += out_batch.num_rows();
            if *rows >= part_rows {
                let (w, _) = writer.take().expect("open");
                w.close().map_err(|e| io(&opts.out, e))?;
            }
            tokens += n_tok as u64;
            row0 += texts.len() as u64;
            seq_base += texts.len() as i64;
            texts_done += texts.len() as u64;
            progress(EmbedProgress::Advance(texts.len() as u64));
        }
    }
    if let Some((w, _)) = writer.take() {
        w.close().map_err(|e| io(&opts.out, e))?;
    }
    if parts == 0 {
        return Err(EmbedError::Input(format!("no texts in {}", opts.texts.join(", "))));
    }
    target.commit(tokens)?;
    if target.url.is_none() {
        // Renamed into place; a staging directory for a store stays armed and goes.
        guard.0 = None;
    }
    Ok(EmbedSummary { texts: texts_done, tokens, parts, layers, columns, max_length, seconds: started.elapsed().as_secs_f64() })
}
