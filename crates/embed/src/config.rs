//! `config.json`: the few fields each architecture needs, under their various historical names.

use serde_json::Value;

use crate::EmbedError;

/// The supported architectures (`model_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `bert` (incl. MiniLM and sentence-transformers checkpoints).
    Bert,
    /// `roberta`.
    Roberta,
    /// `gpt2`.
    Gpt2,
    /// `llama`.
    Llama,
    /// `qwen2`.
    Qwen2,
}

/// The `model_type`s that [`Arch`] covers.
pub const SUPPORTED: &str = "bert, roberta, gpt2, llama, qwen2";

/// What the model code reads from `config.json`.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// The architecture.
    pub arch: Arch,
    /// `model_type` as written.
    pub model_type: String,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of blocks.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention); = `num_heads` otherwise.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Rows of the learned position table (BERT, RoBERTa, GPT-2).
    pub max_positions: usize,
    /// LayerNorm / RMSNorm epsilon.
    pub norm_eps: f64,
    /// Activation.
    pub hidden_act: String,
    /// Padding token id, if any.
    pub pad_token_id: Option<i64>,
    /// Rotary base.
    pub rope_theta: f64,
    /// Biases on q, k, v (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the attention output (Llama's `attention_bias`).
    pub o_bias: bool,
    /// Biases in the MLP (Llama's `mlp_bias`).
    pub mlp_bias: bool,
}

fn usize_of(v: &Value, keys: &[&str]) -> Option<usize> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_u64)).map(|x| x as usize)
}

fn f64_of(v: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_f64))
}

impl ModelConfig {
    /// Parses `config.json` (`path` is only for messages).
    pub fn parse(v: &Value, path: &str) -> Result<Self, EmbedError> {
        let bad = |what: &str| EmbedError::Config(format!("{path}: {what}"));
        let model_type = v.get("model_type").and_then(Value::as_str).ok_or_else(|| bad("no \"model_type\""))?.to_string();
        let arch = match model_type.as_str() {
            "bert" => Arch::Bert,
            "roberta" => Arch::Roberta,
            "gpt2" => Arch::Gpt2,
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => return Err(bad(&format!("model_type {other:?} is not supported (supported: {SUPPORTED})"))),
        };
        let need = |keys: &[&str]| usize_of(v, keys).ok_or_else(|| bad(&format!("missing \"{}\"", keys[0])));
        let hidden_size = need(&["hidden_size", "n_embd"])?;
        let num_layers = need(&["num_hidden_layers", "n_layer"])?;
        let num_heads = need(&["num_attention_heads", "n_head"])?;
        let num_kv_heads = usize_of(v, &["num_key_value_heads"]).unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(bad(&format!("{num_heads} attention heads cannot share {num_kv_heads} key/value heads")));
        }
        let head_dim = usize_of(v, &["head_dim"]).unwrap_or(hidden_size / num_heads);
        let intermediate_size = usize_of(v, &["intermediate_size", "n_inner"]).unwrap_or(4 * hidden_size);
        let vocab_size = need(&["vocab_size"])?;
        let max_positions = usize_of(v, &["max_position_embeddings", "n_positions"]).unwrap_or(0);
        let norm_eps = f64_of(v, &["layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps"]).unwrap_or(1e-12);
        let hidden_act = v
            .get("hidden_act")
            .or_else(|| v.get("activation_function"))
            .and_then(Value::as_str)
            .unwrap_or(if arch == Arch::Gpt2 { "gelu_new" } else if matches!(arch, Arch::Llama | Arch::Qwen2) { "silu" } else { "gelu" })
            .to_string();
        let pad_token_id = v.get("pad_token_id").and_then(Value::as_i64);
        let rope = v.get("rope_parameters").or_else(|| v.get("rope_scaling")).filter(|r| !r.is_null());
        if let Some(r) = rope {
            let ty = r.get("rope_type").or_else(|| r.get("type")).and_then(Value::as_str).unwrap_or("default");
            if ty != "default" {
                return Err(bad(&format!("rope_type {ty:?} is not supported (default)")));
            }
        }
        let rope_theta = rope.and_then(|r| f64_of(r, &["rope_theta"])).or_else(|| f64_of(v, &["rope_theta"])).unwrap_or(10000.0);
        let attention_bias = v.get("attention_bias").and_then(Value::as_bool).unwrap_or(false);
        let (qkv_bias, o_bias) = match arch {
            Arch::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let mlp_bias = v.get("mlp_bias").and_then(Value::as_bool).unwrap_or(false);
        if matches!(arch, Arch::Bert | Arch::Roberta | Arch::Gpt2) && max_positions == 0 {
            return Err(bad("missing \"max_position_embeddings\""));
        }
        if let Some(pe) = v.get("position_embedding_type").and_then(Value::as_str) {
            if pe != "absolute" {
                return Err(bad(&format!("position_embedding_type {pe:?} is not supported (absolute)")));
            }
        }
        Ok(Self {
            arch,
            model_type,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            intermediate_size,
            vocab_size,
            max_positions,
            norm_eps,
            hidden_act,
            pad_token_id,
            rope_theta,
            qkv_bias,
            o_bias,
            mlp_bias,
        })
    }

    /// Whether the model sees only the past (GPT-2, Llama, Qwen2).
    pub fn is_decoder(&self) -> bool {
        matches!(self.arch, Arch::Gpt2 | Arch::Llama | Arch::Qwen2)
    }
}
