//! Reading a checkpoint's safetensors (one file, or shards listed in `model.safetensors.index.json`)
//! with candle's buffered loader (no memory mapping), as float32, with the task-head prefix
//! (`bert.`, `roberta.`, `transformer.`, `model.`) stripped.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::Arch;
use crate::EmbedError;

/// A checkpoint's tensors by name (prefix stripped).
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    /// Where they came from, for messages.
    source: String,
}

fn load_file(path: &Path) -> Result<HashMap<String, Tensor>, EmbedError> {
    let bytes = std::fs::read(path).map_err(|e| EmbedError::Checkpoint(format!("{}: cannot read: {e}", path.display())))?;
    let ts = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| EmbedError::Checkpoint(format!("{}: not a readable safetensors file: {e}", path.display())))?;
    ts.into_iter()
        .map(|(k, t)| {
            let t = if t.dtype() == DType::F32 { t } else { t.to_dtype(DType::F32).map_err(|e| EmbedError::Checkpoint(format!("{}: tensor {k}: {e}", path.display())))? };
            Ok((k, t))
        })
        .collect()
}

impl Weights {
    /// Loads `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    pub fn load(dir: &Path, arch: Arch) -> Result<Self, EmbedError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let mut all = HashMap::new();
        let source;
        if single.exists() {
            all = load_file(&single)?;
            source = single.display().to_string();
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| EmbedError::Checkpoint(format!("{}: cannot read: {e}", index.display())))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| EmbedError::Checkpoint(format!("{}: not JSON: {e}", index.display())))?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| EmbedError::Checkpoint(format!("{}: no \"weight_map\"", index.display())))?;
            let shards: BTreeSet<&str> = map.values().filter_map(|s| s.as_str()).collect();
            for shard in shards {
                let p = dir.join(shard);
                if !p.exists() {
                    return Err(EmbedError::Checkpoint(format!("{}: shard {shard} is missing (named by {})", p.display(), index.display())));
                }
                all.extend(load_file(&p)?);
            }
            for k in map.keys() {
                if !all.contains_key(k) {
                    return Err(EmbedError::Checkpoint(format!("{}: tensor {k} is not in its shard", index.display())));
                }
            }
            source = index.display().to_string();
        } else {
            return Err(EmbedError::Checkpoint(format!("{}: no model.safetensors nor model.safetensors.index.json", dir.display())));
        }
        let anchor = match arch {
            Arch::Bert | Arch::Roberta => "embeddings.word_embeddings.weight",
            Arch::Gpt2 => "wte.weight",
            Arch::Llama | Arch::Qwen2 => "embed_tokens.weight",
        };
        let prefix = ["", "bert.", "roberta.", "transformer.", "model."]
            .into_iter()
            .find(|p| all.contains_key(&format!("{p}{anchor}")))
            .ok_or_else(|| EmbedError::Checkpoint(format!("{source}: no tensor {anchor} (with or without a bert./roberta./transformer./model. prefix): not a checkpoint of this architecture")))?;
        let tensors = all.into_iter().filter_map(|(k, t)| k.strip_prefix(prefix).map(|s| (s.to_string(), t))).collect();
        Ok(Self { tensors, source })
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, EmbedError> {
        let t = self.get_unchecked(name)?;
        if t.dims() != shape {
            return Err(EmbedError::Checkpoint(format!("{}: tensor {name} has shape {:?}, config.json implies {shape:?}", self.source, t.dims())));
        }
        Ok(t)
    }

    /// The first of `names` present, checked against `shape`.
    pub fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Tensor, EmbedError> {
        let name = names.iter().find(|n| self.contains(n)).unwrap_or(&names[0]);
        self.get(name, shape)
    }

    /// The tensor `name`, any shape.
    pub fn get_unchecked(&self, name: &str) -> Result<Tensor, EmbedError> {
        self.tensors.get(name).cloned().ok_or_else(|| EmbedError::Checkpoint(format!("{}: tensor {name} is missing", self.source)))
    }
}
