//! The supported architectures, written on candle's tensor operations.
//!
//! Every model takes a right-padded batch of token ids (`[B, T]`) and the true length of each row,
//! and returns every entry of Hugging Face's `hidden_states` (`[B, T, D]` each): entry 0 is the
//! embedding output, entry `i` the output of block `i`; for GPT-2, Llama and Qwen2 the last entry is
//! taken after the final norm, as transformers does. Padding is masked out of attention (and, for the
//! decoders, the future too), and right padding leaves every real token's position unchanged, so a
//! token's vector does not depend on what else is in its batch.

use candle_core::{DType, Device, Tensor};

use crate::config::{Arch, ModelConfig};
use crate::ops::{bias_activation, masked_softmax, Activation, AttentionMask};
use crate::weights::Weights;
use crate::EmbedError;

type Result<T> = std::result::Result<T, EmbedError>;

fn c<T>(r: candle_core::Result<T>) -> Result<T> {
    r.map_err(|e| EmbedError::Compute(e.to_string()))
}

/// A dense layer `y = x W^T + b`, W stored `[out, in]` (or, for GPT-2's Conv1D, `[in, out]`).
struct Linear {
    /// `[in, out]`, contiguous.
    w_t: Tensor,
    b: Option<Vec<f32>>,
}

impl Linear {
    fn load(w: &Weights, name: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let w_t = c(weight.t().and_then(|t| t.contiguous()))?;
        let b = if bias { Some(c(w.get(&format!("{name}.bias"), &[out_dim])?.to_vec1())?) } else { None };
        Ok(Self { w_t, b })
    }

    /// GPT-2's Conv1D: the weight is stored `[in, out]` already.
    fn load_conv1d(w: &Weights, name: &str, in_dim: usize, out_dim: usize) -> Result<Self> {
        let w_t = w.get(&format!("{name}.weight"), &[in_dim, out_dim])?;
        let b = Some(c(w.get(&format!("{name}.bias"), &[out_dim])?.to_vec1())?);
        Ok(Self { w_t, b })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Identity)
    }

    /// `act(x W^T + b)`: the bias and activation in one pass over the fresh product.
    fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let (b, t, d) = c(x.dims3())?;
        let y = c(x.reshape((b * t, d)).and_then(|x| x.matmul(&self.w_t)))?;
        if self.b.is_some() || act != Activation::Identity {
            bias_activation(&y, self.b.as_deref(), act)?;
        }
        c(y.reshape((b, t, ())))
    }
}

struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<Self> {
        // Old BERT checkpoints call them gamma and beta.
        let weight = w.get_any(&[format!("{name}.weight").as_str(), format!("{name}.gamma").as_str()], &[dim])?;
        let bias = w.get_any(&[format!("{name}.bias").as_str(), format!("{name}.beta").as_str()], &[dim])?;
        Ok(Self { w: weight, b: bias, eps: eps as f32 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        c(candle_nn::ops::layer_norm(&c(x.contiguous())?, &self.w, &self.b, self.eps))
    }
}

struct RmsNorm {
    w: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { w: w.get(&format!("{name}.weight"), &[dim])?, eps: eps as f32 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        c(candle_nn::ops::rms_norm(&c(x.contiguous())?, &self.w, self.eps))
    }
}

/// `[B, T, H*d] -> [B, H, T, d]`.
fn heads(x: &Tensor, h: usize, d: usize) -> Result<Tensor> {
    let (b, t, _) = c(x.dims3())?;
    c(x.reshape((b, t, h, d)).and_then(|x| x.transpose(1, 2)).and_then(|x| x.contiguous()))
}

/// Scaled dot-product attention. `q`: `[B, H, T, d]`, `k`, `v`: `[B, KV, T, d]` (grouped-query
/// attention when `KV < H`). Returns `[B, T, H*d]`.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
    let (b, h, t, d) = c(q.dims4())?;
    let kv = c(k.dim(1))?;
    let (k, v) = if kv != h {
        let rep = h / kv;
        let expand = |x: &Tensor| -> Result<Tensor> {
            c(x.unsqueeze(2)
                .and_then(|x| x.expand((b, kv, rep, t, d)))
                .and_then(|x| x.contiguous())
                .and_then(|x| x.reshape((b, h, t, d))))
        };
        (expand(k)?, expand(v)?)
    } else {
        (k.clone(), v.clone())
    };
    let kt = c(k.t().and_then(|x| x.contiguous()))?;
    let probs = c(q.matmul(&kt))?;
    masked_softmax(&probs, 1.0 / (d as f32).sqrt(), mask)?;
    let out = c(probs.matmul(&v))?;
    c(out.transpose(1, 2).and_then(|x| x.contiguous()).and_then(|x| x.reshape((b, t, h * d))))
}

// ---------------------------------------------------------------------------------------------
// BERT and RoBERTa

struct BertLayer {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_ln: LayerNorm,
    inter: Linear,
    out: Linear,
    out_ln: LayerNorm,
    heads: usize,
    head_dim: usize,
    gelu_tanh: bool,
}

struct Bert {
    word: Tensor,
    pos: Tensor,
    token_type: Option<Tensor>,
    ln: LayerNorm,
    layers: Vec<BertLayer>,
    /// RoBERTa: positions start at `padding_idx + 1`.
    position_offset: usize,
}

impl Bert {
    fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let d = cfg.hidden_size;
        let eps = cfg.norm_eps;
        let word = w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, d])?;
        let pos = w.get("embeddings.position_embeddings.weight", &[cfg.max_positions, d])?;
        let token_type = if w.contains("embeddings.token_type_embeddings.weight") {
            Some(c(w.get_unchecked("embeddings.token_type_embeddings.weight")?.get(0))?)
        } else {
            None
        };
        let ln = LayerNorm::load(w, "embeddings.LayerNorm", d, eps)?;
        let gelu_tanh = match cfg.hidden_act.as_str() {
            "gelu" => false,
            "gelu_new" | "gelu_pytorch_tanh" => true,
            other => return Err(EmbedError::Config(format!("hidden_act {other:?} is not supported (gelu, gelu_new)"))),
        };
        let mut layers = Vec::new();
        for i in 0..cfg.num_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(BertLayer {
                q: Linear::load(w, &format!("{p}.attention.self.query"), d, d, true)?,
                k: Linear::load(w, &format!("{p}.attention.self.key"), d, d, true)?,
                v: Linear::load(w, &format!("{p}.attention.self.value"), d, d, true)?,
                attn_out: Linear::load(w, &format!("{p}.attention.output.dense"), d, d, true)?,
                attn_ln: LayerNorm::load(w, &format!("{p}.attention.output.LayerNorm"), d, eps)?,
                inter: Linear::load(w, &format!("{p}.intermediate.dense"), d, cfg.intermediate_size, true)?,
                out: Linear::load(w, &format!("{p}.output.dense"), cfg.intermediate_size, d, true)?,
                out_ln: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), d, eps)?,
                heads: cfg.num_heads,
                head_dim: d / cfg.num_heads,
                gelu_tanh,
            });
        }
        let position_offset = if cfg.arch == Arch::Roberta { cfg.pad_token_id.unwrap_or(1) as usize + 1 } else { 0 };
        Ok(Self { word, pos, token_type, ln, layers, position_offset })
    }

    fn forward(&self, ids: &Tensor, lengths: &[usize]) -> Result<Vec<Tensor>> {
        let (b, t) = c(ids.dims2())?;
        let dev = ids.device();
        let flat = c(ids.flatten_all())?;
        let x = c(self.word.index_select(&flat, 0))?;
        let pos_ids: Vec<u32> = (0..t).map(|i| (i + self.position_offset) as u32).collect();
        let pos_ids = c(Tensor::new(pos_ids.as_slice(), dev))?;
        let p = c(self.pos.index_select(&pos_ids, 0))?;
        let x = c(x.reshape((b, t, ())).and_then(|x| x.broadcast_add(&p)))?;
        let x = match &self.token_type {
            Some(tt) => c(x.broadcast_add(tt))?,
            None => x,
        };
        let mut x = self.ln.forward(&x)?;
        let mask = AttentionMask { lengths: lengths.to_vec(), causal: false };
        let mut hs = vec![x.clone()];
        for l in &self.layers {
            let q = heads(&l.q.forward(&x)?, l.heads, l.head_dim)?;
            let k = heads(&l.k.forward(&x)?, l.heads, l.head_dim)?;
            let v = heads(&l.v.forward(&x)?, l.heads, l.head_dim)?;
            let a = attention(&q, &k, &v, &mask)?;
            let a = l.attn_ln.forward(&c(l.attn_out.forward(&a)?.add(&x))?)?;
            let h = l.inter.forward_act(&a, if l.gelu_tanh { Activation::GeluTanh } else { Activation::GeluErf })?;
            x = l.out_ln.forward(&c(l.out.forward(&h)?.add(&a))?)?;
            hs.push(x.clone());
        }
        Ok(hs)
    }
}

// ---------------------------------------------------------------------------------------------
// GPT-2

struct Gpt2Layer {
    ln1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln2: LayerNorm,
    fc: Linear,
    proj: Linear,
}

struct Gpt2 {
    wte: Tensor,
    wpe: Tensor,
    layers: Vec<Gpt2Layer>,
    ln_f: LayerNorm,
    heads: usize,
    gelu_tanh: bool,
}

impl Gpt2 {
    fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let d = cfg.hidden_size;
        let eps = cfg.norm_eps;
        let inner = cfg.intermediate_size;
        let mut layers = Vec::new();
        for i in 0..cfg.num_layers {
            let p = format!("h.{i}");
            layers.push(Gpt2Layer {
                ln1: LayerNorm::load(w, &format!("{p}.ln_1"), d, eps)?,
                c_attn: Linear::load_conv1d(w, &format!("{p}.attn.c_attn"), d, 3 * d)?,
                c_proj: Linear::load_conv1d(w, &format!("{p}.attn.c_proj"), d, d)?,
                ln2: LayerNorm::load(w, &format!("{p}.ln_2"), d, eps)?,
                fc: Linear::load_conv1d(w, &format!("{p}.mlp.c_fc"), d, inner)?,
                proj: Linear::load_conv1d(w, &format!("{p}.mlp.c_proj"), inner, d)?,
            });
        }
        let gelu_tanh = match cfg.hidden_act.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => true,
            "gelu" => false,
            other => return Err(EmbedError::Config(format!("activation_function {other:?} is not supported (gelu_new, gelu)"))),
        };
        Ok(Self {
            wte: w.get("wte.weight", &[cfg.vocab_size, d])?,
            wpe: w.get("wpe.weight", &[cfg.max_positions, d])?,
            layers,
            ln_f: LayerNorm::load(w, "ln_f", d, eps)?,
            heads: cfg.num_heads,
            gelu_tanh,
        })
    }

    fn forward(&self, ids: &Tensor, lengths: &[usize]) -> Result<Vec<Tensor>> {
        let (b, t) = c(ids.dims2())?;
        let x = c(self.wte.index_select(&c(ids.flatten_all())?, 0).and_then(|x| x.reshape((b, t, ()))))?;
        let p = c(self.wpe.narrow(0, 0, t))?;
        let mut x = c(x.broadcast_add(&p))?;
        let d = c(x.dim(2))?;
        let hd = d / self.heads;
        let mask = AttentionMask { lengths: lengths.to_vec(), causal: true };
        let mut hs = vec![x.clone()];
        for l in &self.layers {
            let h = l.ln1.forward(&x)?;
            let qkv = l.c_attn.forward(&h)?;
            let q = heads(&c(qkv.narrow(2, 0, d))?, self.heads, hd)?;
            let k = heads(&c(qkv.narrow(2, d, d))?, self.heads, hd)?;
            let v = heads(&c(qkv.narrow(2, 2 * d, d))?, self.heads, hd)?;
            let a = l.c_proj.forward(&attention(&q, &k, &v, &mask)?)?;
            x = c(x.add(&a))?;
            let h = l.fc.forward_act(&l.ln2.forward(&x)?, if self.gelu_tanh { Activation::GeluTanh } else { Activation::GeluErf })?;
            x = c(x.add(&l.proj.forward(&h)?))?;
            hs.push(x.clone());
        }
        // Hugging Face's last entry is after the final norm; the block's own output follows it,
        // as the pre-norm entry (index `layers + 1`).
        let last = hs.len() - 1;
        hs[last] = self.ln_f.forward(&x)?;
        hs.push(x);
        Ok(hs)
    }
}

// ---------------------------------------------------------------------------------------------
// Llama and Qwen2

struct LlamaLayer {
    ln1: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Llama {
    embed: Tensor,
    layers: Vec<LlamaLayer>,
    norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope_theta: f64,
}

impl Llama {
    fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let d = cfg.hidden_size;
        let hd = cfg.head_dim;
        let (h, kv) = (cfg.num_heads, cfg.num_kv_heads);
        let eps = cfg.norm_eps;
        let qkv_bias = cfg.qkv_bias;
        let mut layers = Vec::new();
        for i in 0..cfg.num_layers {
            let p = format!("layers.{i}");
            layers.push(LlamaLayer {
                ln1: RmsNorm::load(w, &format!("{p}.input_layernorm"), d, eps)?,
                q: Linear::load(w, &format!("{p}.self_attn.q_proj"), d, h * hd, qkv_bias)?,
                k: Linear::load(w, &format!("{p}.self_attn.k_proj"), d, kv * hd, qkv_bias)?,
                v: Linear::load(w, &format!("{p}.self_attn.v_proj"), d, kv * hd, qkv_bias)?,
                o: Linear::load(w, &format!("{p}.self_attn.o_proj"), h * hd, d, cfg.o_bias)?,
                ln2: RmsNorm::load(w, &format!("{p}.post_attention_layernorm"), d, eps)?,
                gate: Linear::load(w, &format!("{p}.mlp.gate_proj"), d, cfg.intermediate_size, cfg.mlp_bias)?,
                up: Linear::load(w, &format!("{p}.mlp.up_proj"), d, cfg.intermediate_size, cfg.mlp_bias)?,
                down: Linear::load(w, &format!("{p}.mlp.down_proj"), cfg.intermediate_size, d, cfg.mlp_bias)?,
            });
        }
        if cfg.hidden_act != "silu" {
            return Err(EmbedError::Config(format!("hidden_act {:?} is not supported (silu)", cfg.hidden_act)));
        }
        Ok(Self {
            embed: w.get("embed_tokens.weight", &[cfg.vocab_size, d])?,
            layers,
            norm: RmsNorm::load(w, "norm", d, eps)?,
            heads: h,
            kv_heads: kv,
            head_dim: hd,
            rope_theta: cfg.rope_theta,
        })
    }

    /// `cos`, `sin`: `[T, head_dim/2]`, computed in float32 as transformers does.
    fn rope_tables(&self, t: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.head_dim / 2;
        // As transformers: base ** (arange(0, d, 2) / d) in float32, then its reciprocal.
        let inv: Vec<f32> = (0..half).map(|i| 1.0f32 / (self.rope_theta as f32).powf((2 * i) as f32 / self.head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in 0..t {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok((c(Tensor::from_vec(cos, (t, half), dev))?, c(Tensor::from_vec(sin, (t, half), dev))?))
    }

    fn forward(&self, ids: &Tensor, lengths: &[usize]) -> Result<Vec<Tensor>> {
        let (b, t) = c(ids.dims2())?;
        let dev = ids.device();
        let mut x = c(self.embed.index_select(&c(ids.flatten_all())?, 0).and_then(|x| x.reshape((b, t, ()))))?;
        let mask = AttentionMask { lengths: lengths.to_vec(), causal: true };
        let (cos, sin) = self.rope_tables(t, dev)?;
        let mut hs = vec![x.clone()];
        for l in &self.layers {
            let h = l.ln1.forward(&x)?;
            let q = heads(&l.q.forward(&h)?, self.heads, self.head_dim)?;
            let k = heads(&l.k.forward(&h)?, self.kv_heads, self.head_dim)?;
            let v = heads(&l.v.forward(&h)?, self.kv_heads, self.head_dim)?;
            let q = c(candle_nn::rotary_emb::rope(&q, &cos, &sin))?;
            let k = c(candle_nn::rotary_emb::rope(&k, &cos, &sin))?;
            let a = l.o.forward(&attention(&q, &k, &v, &mask)?)?;
            x = c(x.add(&a))?;
            let h = l.ln2.forward(&x)?;
            let g = c(candle_nn::ops::silu(&l.gate.forward(&h)?))?;
            let u = l.up.forward(&h)?;
            x = c(x.add(&l.down.forward(&c(g.mul(&u))?)?))?;
            hs.push(x.clone());
        }
        let last = hs.len() - 1;
        hs[last] = self.norm.forward(&x)?;
        hs.push(x);
        Ok(hs)
    }
}

// ---------------------------------------------------------------------------------------------

enum Net {
    Bert(Bert),
    Gpt2(Gpt2),
    Llama(Llama),
}

/// A loaded model of one of the supported architectures.
pub struct Model {
    net: Net,
    /// Number of `hidden_states` entries (layers + 1).
    pub num_hidden_states: usize,
    /// Width of each hidden state.
    pub hidden_size: usize,
}

impl Model {
    /// Builds the model from its configuration and weights.
    pub fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let net = match cfg.arch {
            Arch::Bert | Arch::Roberta => Net::Bert(Bert::load(cfg, w)?),
            Arch::Gpt2 => Net::Gpt2(Gpt2::load(cfg, w)?),
            Arch::Llama | Arch::Qwen2 => Net::Llama(Llama::load(cfg, w)?),
        };
        Ok(Self { net, num_hidden_states: cfg.num_layers + 1, hidden_size: cfg.hidden_size })
    }

    /// Every hidden state of a right-padded batch: `ids` is `[B, T]` (u32), `lengths[b]` the real
    /// length of row `b`. Decoders (GPT-2, Llama, Qwen2) return one entry more than
    /// `num_hidden_states`: the last block's output before the final norm.
    pub fn forward(&self, ids: &Tensor, lengths: &[usize]) -> Result<Vec<Tensor>> {
        match &self.net {
            Net::Bert(m) => m.forward(ids, lengths),
            Net::Gpt2(m) => m.forward(ids, lengths),
            Net::Llama(m) => m.forward(ids, lengths),
        }
    }

    /// Runs a batch of token id sequences; returns, per requested hidden-state index, the
    /// `[B, T, D]` float32 values as a flat row-major vector (padding rows included).
    pub fn run(&self, seqs: &[&[u32]], layers: &[usize]) -> Result<(usize, Vec<Vec<f32>>)> {
        let dev = Device::Cpu;
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let b = seqs.len();
        if t == 0 {
            return Ok((0, vec![Vec::new(); layers.len()]));
        }
        let mut ids = vec![0u32; b * t];
        for (i, s) in seqs.iter().enumerate() {
            ids[i * t..i * t + s.len()].copy_from_slice(s);
        }
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let ids = c(Tensor::from_vec(ids, (b, t), &dev))?;
        let hs = self.forward(&ids, &lengths)?;
        let mut out = Vec::with_capacity(layers.len());
        for &l in layers {
            let h = c(hs[l].to_dtype(DType::F32).and_then(|h| h.flatten_all()).and_then(|h| h.to_vec1::<f32>()))?;
            out.push(h);
        }
        Ok((t, out))
    }
}
