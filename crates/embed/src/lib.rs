//! lidscope's checkpoint-to-corpus step: texts and a Hugging Face checkpoint in, per-token hidden
//! states out, as a Parquet corpus that `lidscope run` reads as is.
//!
//! * [`Embedder`]: a checkpoint directory (`config.json`, `model.safetensors` or shards with
//!   `model.safetensors.index.json`, `tokenizer.json`) loaded once; [`Embedder::embed`] tokenizes
//!   texts (special tokens added, truncation to `max_length` the way the tokenizer truncates) and
//!   returns the requested `hidden_states` entries of every token.
//! * [`embed_corpus`]: the streaming pipeline behind `lidscope embed` (Parquet texts in, a corpus
//!   directory of Parquet parts out, written atomically).
//!
//! Architectures: BERT (incl. MiniLM), RoBERTa, GPT-2, Llama and Qwen2, written on candle's tensor
//! operations (float32, CPU) on packed batches (no padding), with attention and the element-wise
//! steps fused in [`ops`](crate) and dispatched to the CPU's vector width by the kernel's
//! `multiversion!`. It does not depend on DataFusion.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod model;
mod ops;
mod pipeline;
mod weights;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use config::{Arch, ModelConfig, SUPPORTED};
pub use model::Model;
pub use pipeline::{embed_corpus, EmbedOptions, EmbedProgress, EmbedSummary};
pub use weights::Weights;

/// Best of `repeats` timings of candle's `[m, k] x [k, n]` float32 product (the one the models
/// use), in GFLOP/s.
pub fn candle_matmul_gflops(m: usize, k: usize, n: usize, repeats: usize) -> f64 {
    use candle_core::{Device, Tensor};
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32) * 1e-3).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729 % 1000) as f32) * 1e-3).collect();
    let (Ok(a), Ok(b)) = (Tensor::from_vec(a, (m, k), &Device::Cpu), Tensor::from_vec(b, (k, n), &Device::Cpu)) else { return 0.0 };
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let t = std::time::Instant::now();
        if a.matmul(&b).is_err() {
            return 0.0;
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

/// Errors of loading a checkpoint, reading texts or computing hidden states; each message names the
/// file at fault.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// `config.json` is missing, malformed or describes something unsupported.
    #[error("{0}")]
    Config(String),
    /// The weights cannot be read or do not match the configuration.
    #[error("{0}")]
    Checkpoint(String),
    /// `tokenizer.json` cannot be read or applied.
    #[error("{0}")]
    Tokenizer(String),
    /// Bad input texts or arguments.
    #[error("{0}")]
    Input(String),
    /// Reading or writing Parquet.
    #[error("{0}")]
    Io(String),
    /// A tensor operation failed (a bug, or out of memory).
    #[error("computing hidden states: {0}")]
    Compute(String),
}

/// One entry of `--layers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerRequest {
    /// A `hidden_states` index in Hugging Face's numbering (0 = embeddings, negative from the end).
    Index(i64),
    /// Every `hidden_states` entry.
    All,
    /// The last block's output before the final norm (decoders), the state the paper's grokking
    /// study measures; Hugging Face's last entry is after that norm.
    PreNorm,
}

impl LayerRequest {
    /// Parses `--layers`: a comma-separated list of indices, `all` and `prenorm`.
    ///
    /// # Errors
    /// [`EmbedError::Input`] naming the entry that is none of these.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, EmbedError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.push(match part.to_ascii_lowercase().as_str() {
                "all" => Self::All,
                "prenorm" => Self::PreNorm,
                p => Self::Index(p.parse().map_err(|_| EmbedError::Input(format!("--layers: {part:?} is not a layer index, all or prenorm (e.g. 0,3,-1 or all,prenorm)")))?),
            });
        }
        if out.is_empty() {
            return Err(EmbedError::Input("--layers: no layer given (e.g. -1, 0,3,-1, all or all,prenorm)".into()));
        }
        Ok(out)
    }
}

/// One text's tokens and hidden states.
#[derive(Clone, Debug)]
pub struct EmbeddedText {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Tokens as the tokenizer spells them.
    pub tokens: Vec<String>,
    /// Whether each token is one of the tokenizer's special tokens.
    pub special: Vec<bool>,
    /// Per requested layer, `ids.len() x dim` row-major float32.
    pub hidden: Vec<Vec<f32>>,
}

/// A loaded checkpoint: configuration, tokenizer and model.
pub struct Embedder {
    /// The parsed configuration.
    pub config: ModelConfig,
    /// sha256 of `config.json`'s bytes.
    pub config_sha256: String,
    /// The checkpoint directory.
    pub dir: PathBuf,
    tokenizer: Tokenizer,
    special_ids: BTreeSet<u32>,
    model: Model,
}

/// One text's tokens: their ids and their strings (the `token` column).
pub type Tokenized = (Vec<u32>, Vec<String>);

impl Embedder {
    /// Loads the checkpoint in `dir`.
    ///
    /// # Errors
    /// [`EmbedError`] naming the file at fault (missing `config.json`, unsupported `model_type`,
    /// missing shard or tensor, unreadable `tokenizer.json`).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        if !dir.is_dir() {
            return Err(EmbedError::Checkpoint(format!("{}: not a checkpoint directory", dir.display())));
        }
        let cfg_path = dir.join("config.json");
        let bytes = std::fs::read(&cfg_path).map_err(|e| EmbedError::Config(format!("{}: cannot read: {e}", cfg_path.display())))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| EmbedError::Config(format!("{}: not JSON: {e}", cfg_path.display())))?;
        let config = ModelConfig::parse(&v, &cfg_path.display().to_string())?;
        let config_sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(EmbedError::Tokenizer(format!("{}: missing (only tokenizer.json is supported)", tok_path.display())));
        }
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| EmbedError::Tokenizer(format!("{}: cannot load: {e}", tok_path.display())))?;
        // Padding and truncation stored in tokenizer.json must not leak into the output.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| EmbedError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let special_ids = tokenizer.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
        let weights = Weights::load(dir, config.arch)?;
        let model = Model::load(&config, &weights)?;
        Ok(Self { config, config_sha256, dir: dir.to_path_buf(), tokenizer, special_ids, model })
    }

    /// Number of `hidden_states` entries: layers + 1.
    pub fn num_hidden_states(&self) -> usize {
        self.model.num_hidden_states
    }

    /// Width of the hidden states.
    pub fn dim(&self) -> usize {
        self.model.hidden_size
    }

    /// The tokenizer's special token ids.
    pub fn special_ids(&self) -> &BTreeSet<u32> {
        &self.special_ids
    }

    /// Longest sequence the model's position table allows (`usize::MAX` for rotary models).
    pub fn max_positions(&self) -> usize {
        match self.config.arch {
            Arch::Bert | Arch::Gpt2 => self.config.max_positions,
            Arch::Roberta => self.config.max_positions.saturating_sub(self.config.pad_token_id.unwrap_or(1) as usize + 1),
            Arch::Llama | Arch::Qwen2 => usize::MAX,
        }
    }

    /// Plain word tokens of the vocabulary (ASCII letters, no special or continuation tokens), for
    /// synthetic benchmark texts.
    pub fn vocab_words(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tokenizer
            .get_vocab(false)
            .into_keys()
            .map(|w| w.trim_start_matches(['\u{120}', '\u{2581}']).to_string())
            .filter(|w| w.len() >= 2 && w.bytes().all(|b| b.is_ascii_alphabetic()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Floating-point operations of one forward pass per token over a sequence of `t` tokens
    /// (matrix products only: projections, feed-forward, attention scores and values).
    pub fn flops_per_token(&self, t: usize) -> f64 {
        let c = &self.config;
        let (d, h, kv, hd, ff) = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size);
        let mlp = if matches!(c.arch, Arch::Llama | Arch::Qwen2) { 3 * d * ff } else { 2 * d * ff };
        let per_layer = 2 * (d * h * hd + 2 * d * kv * hd + h * hd * d + mlp) + 4 * t * h * hd;
        (per_layer * c.num_layers) as f64
    }

    /// Index of the pre-norm entry (the last block's output before the final norm) among the
    /// hidden states [`forward`](Self::forward) returns: `layers + 1` for the decoders, whose last
    /// Hugging Face entry is after the norm; `None` for encoders, whose last entry is the block's
    /// own output already.
    pub fn prenorm_index(&self) -> Option<usize> {
        matches!(self.config.arch, Arch::Gpt2 | Arch::Llama | Arch::Qwen2).then_some(self.num_hidden_states())
    }

    /// The corpus column of a hidden-state index: `hidden_L<i>` in Hugging Face's numbering, and
    /// `hidden_L<layers>_prenorm` for the pre-norm entry.
    pub fn column_name(&self, index: usize) -> String {
        if Some(index) == self.prenorm_index() {
            format!("hidden_L{}_prenorm", self.config.num_layers)
        } else {
            format!("hidden_L{index}")
        }
    }

    /// The truncation length `embed` uses when none is given: 512 tokens, or fewer when the
    /// checkpoint's position table is shorter (a 4-position model takes 4).
    pub fn default_max_length(&self) -> usize {
        self.max_positions().min(512)
    }

    /// Resolves layer requests (Hugging Face's numbering, negative from the end, `all`,
    /// `prenorm`) to hidden-state indices, in the order asked, each once.
    ///
    /// # Errors
    /// [`EmbedError::Input`] for an index out of range, or `prenorm` on an encoder.
    pub fn resolve_layers(&self, layers: &[LayerRequest]) -> Result<Vec<usize>, EmbedError> {
        let n = self.num_hidden_states() as i64;
        let mut out = Vec::new();
        let mut push = |r: usize| {
            if !out.contains(&r) {
                out.push(r);
            }
        };
        for l in layers {
            match *l {
                LayerRequest::All => (0..n as usize).for_each(&mut push),
                LayerRequest::PreNorm => match self.prenorm_index() {
                    Some(i) => push(i),
                    None => {
                        return Err(EmbedError::Input(format!(
                            "layer prenorm: {} is an encoder ({}) with no final norm after its last block; its hidden_L{} is that block's output",
                            self.dir.display(),
                            self.config.model_type,
                            n - 1
                        )))
                    }
                },
                LayerRequest::Index(l) => {
                    let r = if l < 0 { n + l } else { l };
                    if r < 0 || r >= n {
                        return Err(EmbedError::Input(format!(
                            "layer {l} is out of range: {} has hidden states 0..={} (or -1..=-{n})",
                            self.dir.display(),
                            n - 1
                        )));
                    }
                    push(r as usize);
                }
            }
        }
        Ok(out)
    }

    /// Tokenizes `texts`: special tokens added, truncated to `max_length` tokens (special tokens
    /// included) the way the tokenizer truncates.
    ///
    /// # Errors
    /// [`EmbedError::Tokenizer`].
    pub fn tokenize(&self, texts: &[&str], max_length: usize) -> Result<Vec<Tokenized>, EmbedError> {
        let mut tok = self.tokenizer.clone();
        tok.with_truncation(Some(tokenizers::TruncationParams { max_length, ..Default::default() }))
            .map_err(|e| EmbedError::Tokenizer(format!("truncating to {max_length}: {e}")))?;
        let encs = tok.encode_batch(texts.to_vec(), true).map_err(|e| EmbedError::Tokenizer(format!("{}: {e}", self.dir.join("tokenizer.json").display())))?;
        Ok(encs.into_iter().map(|e| (e.get_ids().to_vec(), e.get_tokens().to_vec())).collect())
    }

    /// Hidden states of already tokenized sequences, run together as one packed batch (no
    /// padding); per sequence, per requested layer, `len x dim` row-major.
    ///
    /// # Errors
    /// [`EmbedError::Compute`].
    pub fn forward(&self, seqs: &[&[u32]], layers: &[usize]) -> Result<Vec<Vec<Vec<f32>>>, EmbedError> {
        let flat = self.model.run(seqs, layers)?;
        let d = self.dim();
        let mut start = 0;
        Ok(seqs
            .iter()
            .map(|s| {
                let rows = start * d..(start + s.len()) * d;
                start += s.len();
                flat.iter().map(|h| h[rows.clone()].to_vec()).collect()
            })
            .collect())
    }

    /// Tokenizes and embeds `texts`, grouped into forward passes by `batching`; results in the
    /// order of `texts`.
    ///
    /// # Errors
    /// [`EmbedError`].
    pub fn embed(&self, texts: &[&str], layers: &[usize], max_length: usize, batching: Batching) -> Result<Vec<EmbeddedText>, EmbedError> {
        let toks = self.tokenize(texts, max_length)?;
        let mut hidden: Vec<Vec<Vec<f32>>> = Vec::with_capacity(texts.len());
        for pass in batching.passes(toks.iter().map(|t| t.0.len())) {
            let seqs: Vec<&[u32]> = toks[pass].iter().map(|t| t.0.as_slice()).collect();
            hidden.extend(self.forward(&seqs, layers)?);
        }
        Ok(toks
            .into_iter()
            .zip(hidden)
            .map(|((ids, tokens), hidden)| {
                let special = ids.iter().map(|i| self.special_ids.contains(i)).collect();
                EmbeddedText { ids, tokens, special, hidden }
            })
            .collect())
    }
}

/// How texts are grouped into forward passes. A pass runs its texts' tokens packed, without
/// padding, so its size is what makes the matrix products efficient: about two thousand tokens
/// keep them near the machine's GEMM rate while the activations stay in cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Texts per pass, at most.
    pub texts: usize,
    /// Tokens per pass, at most (a longer text runs alone).
    pub tokens: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self { texts: 256, tokens: 2048 }
    }
}

impl Batching {
    /// Consecutive ranges of texts (of `lengths` tokens each), one per forward pass.
    pub fn passes(&self, lengths: impl IntoIterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
        let (max_texts, max_tokens) = (self.texts.max(1), self.tokens.max(1));
        let mut out = Vec::new();
        let (mut start, mut tokens, mut i) = (0, 0, 0);
        for len in lengths {
            if i > start && (i - start == max_texts || tokens + len > max_tokens) {
                out.push(start..i);
                (start, tokens) = (i, 0);
            }
            tokens += len;
            i += 1;
        }
        if i > start {
            out.push(start..i);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Batching;

    #[test]
    fn passes_respect_both_limits_and_keep_every_text() {
        let b = Batching { texts: 3, tokens: 10 };
        assert_eq!(b.passes([4, 4, 4, 1, 1, 1, 1, 12, 2]), vec![0..2, 2..5, 5..7, 7..8, 8..9]);
        assert_eq!(b.passes([]), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(Batching { texts: 1, tokens: usize::MAX }.passes([5, 6]), vec![0..1, 1..2]);
    }
}
