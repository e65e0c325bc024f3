//! lidscope's Arrow/Parquet contracts: which files make a corpus, how embeddings and token
//! identities are read from them, how the reference sample is drawn, and how results, references
//! and manifests are written.
//!
//! This crate knows nothing of the kernel or DataFusion: it hands out row-major `Vec<f32>` matrices
//! and Arrow record batches, and every error it returns names the file, column and row at fault.
//!
//! # Example
//!
//! ```no_run
//! use lidscope_data::{inspect, resolve_inputs, sample_reference, CorpusSpec, SampleConfig};
//!
//! let files = resolve_inputs(&["corpus/".to_string()])?;
//! let spec = CorpusSpec {
//!     files,
//!     embedding_column: "hidden_L6".into(),
//!     id_columns: vec!["seq_id".into(), "position".into()],
//!     filter: None,
//! };
//! let info = inspect(&spec)?;
//! let reference = sample_reference(&spec, &info, &SampleConfig::new(150_000, 60_000, 42))?;
//! println!("{} reference rows of dimension {}", reference.len(), reference.dim);
//! # Ok::<(), lidscope_data::DataError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rustdoc::broken_intra_doc_links)]

mod commit;
mod embedding;
mod error;
mod filter;
mod identity;
mod inputs;
mod layout;
mod manifest;
mod reader;
mod reference;
mod sample;
pub mod store;
mod table_schema;
#[cfg(test)]
mod test_util;
mod writer;

pub use commit::{recover, staging_root, Staging};
pub use embedding::{decode_embeddings, embedding_field_dim};
pub use error::{DataError, Result};
pub use filter::{RowFilter, SharedFilter};
pub use identity::{canonical_identity_type, positional_key, priority, IdentityEncoder};
pub use inputs::{resolve_inputs, InputStamp};
pub use layout::{find_manifests, is_result_dir, Layout, MANIFEST_FILE, PARTITION_MANIFEST_FILE};
pub use manifest::{read_manifest, write_manifest, EstimateMeans, Manifest, PART_METADATA_PREFIX};
pub use reader::{inspect, open_parquet, slice_corpus, ParquetInput, CorpusBatch, CorpusInfo, CorpusReader, CorpusSlice, CorpusSpec};
pub use reference::{read_reference, vectors_sha256, write_reference, Reference};
pub use sample::{count_corpus_identities, merge_pools, pool_candidates, sample_from_pool, sample_identities, sample_reference, PoolCandidate, SampleConfig, SampleStats};
pub use table_schema::{check_new_run, result_field, result_schema, result_type, table_parts, table_schema, to_result_column, unify_types, TablePart};
pub use writer::{plain_float_lists, write_atomic, AtomicParquetWriter};
