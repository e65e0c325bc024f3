//! The supported architectures, written on candle's tensor operations.
//!
//! Every model takes a *packed* batch: the token ids of several texts one after another, no
//! padding (`[N]`), and where each text starts; it returns the requested entries of Hugging
//! Face's `hidden_states` (`[N, D]` each): entry 0 is the embedding output, entry `i` the output
//! of block `i`; for GPT-2, Llama and Qwen2 the last entry is taken after the final norm, as
//! transformers does. Dense layers, norms and activations see real tokens only; attention
//! ([`ops::Attention`](crate::ops::Attention)) keeps each text to itself (and, for the decoders,
//! each token to its past), and positions count from each text's start, so a token's vector does
//! not depend on what else is in its batch.

use candle_core::{DType, Device, Tensor};

use crate::config::{Arch, ModelConfig};
use crate::ops::{add_residual, attention, bias_activation, swiglu, Activation, Attention, Norm};
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

    /// Several layers that read the same input as one, their outputs side by side (the fused
    /// query-key-value projection, Llama's gate and up): one wider product instead of thin ones.
    fn concat(parts: &[Linear]) -> Result<Self> {
        let w_t = c(Tensor::cat(&parts.iter().map(|p| &p.w_t).collect::<Vec<_>>(), 1))?;
        let b = if parts.iter().any(|p| p.b.is_some()) {
            let mut all = Vec::new();
            for p in parts {
                match &p.b {
                    Some(b) => all.extend_from_slice(b),
                    None => all.extend(std::iter::repeat_n(0.0, c(p.w_t.dim(1))?)),
                }
            }
            Some(all)
        } else {
            None
        };
        Ok(Self { w_t, b })
    }

    /// `x W^T` of `[N, in]` rows, nothing added.
    fn product(&self, x: &Tensor) -> Result<Tensor> {
        c(x.matmul(&self.w_t))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Identity)
    }

    /// `act(x W^T + b)`: the bias and activation in one pass over the fresh product.
    fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let y = self.product(x)?;
        if self.b.is_some() || act != Activation::Identity {
            bias_activation(&y, self.b.as_deref(), act)?;
        }
        Ok(y)
    }

    /// `norm(x W^T + b + residual)`: bias, residual add and (post-norm) norm in one pass.
    fn forward_residual(&self, x: &Tensor, residual: &Tensor, norm: Option<&LayerNorm>) -> Result<Tensor> {
        let y = self.product(x)?;
        add_residual(&y, self.b.as_deref(), residual, norm.map(LayerNorm::fused))?;
        Ok(y)
    }
}

struct LayerNorm {
    w: Tensor,
    b: Tensor,
    /// `w` and `b` as slices, for the norm fused after a residual add.
    w_v: Vec<f32>,
    b_v: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<Self> {
        // Old BERT checkpoints call them gamma and beta.
        let weight = w.get_any(&[format!("{name}.weight").as_str(), format!("{name}.gamma").as_str()], &[dim])?;
        let bias = w.get_any(&[format!("{name}.bias").as_str(), format!("{name}.beta").as_str()], &[dim])?;
        Ok(Self { w_v: c(weight.to_vec1())?, b_v: c(bias.to_vec1())?, w: weight, b: bias, eps: eps as f32 })
    }

    fn fused(&self) -> Norm<'_> {
        Norm::Layer { w: &self.w_v, b: &self.b_v, eps: self.eps }
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

/// The texts of a packed batch and the hidden states the caller wants kept.
struct Pass<'a> {
    /// Text `i` is rows `offsets[i]..offsets[i + 1]`.
    offsets: &'a [usize],
    /// Requested `hidden_states` indices, and what each got.
    want: &'a [usize],
    got: Vec<Option<Tensor>>,
}

impl Pass<'_> {
    /// Keeps `x` as entry `index` if it was asked for (a cheap handle: tensors share storage).
    fn offer(&mut self, index: usize, x: &Tensor) {
        for (w, g) in self.want.iter().zip(&mut self.got) {
            if *w == index {
                *g = Some(x.clone());
            }
        }
    }

    /// Each token's position within its text, from `start`.
    fn positions(&self, start: usize, dev: &Device) -> Result<Tensor> {
        let ids: Vec<u32> = self.offsets.windows(2).flat_map(|w| (0..w[1] - w[0]).map(move |p| (p + start) as u32)).collect();
        c(Tensor::new(ids.as_slice(), dev))
    }

    fn longest(&self) -> usize {
        self.offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// BERT and RoBERTa

struct BertLayer {
    /// Query, key and value projections side by side.
    qkv: Linear,
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
                qkv: Linear::concat(&[
                    Linear::load(w, &format!("{p}.attention.self.query"), d, d, true)?,
                    Linear::load(w, &format!("{p}.attention.self.key"), d, d, true)?,
                    Linear::load(w, &format!("{p}.attention.self.value"), d, d, true)?,
                ])?,
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

    fn forward(&self, ids: &Tensor, pass: &mut Pass<'_>) -> Result<()> {
        let x = c(self.word.index_select(ids, 0))?;
        let p = c(self.pos.index_select(&pass.positions(self.position_offset, ids.device())?, 0))?;
        let x = c(x.add(&p))?;
        let x = match &self.token_type {
            Some(tt) => c(x.broadcast_add(tt))?,
            None => x,
        };
        let mut x = self.ln.forward(&x)?;
        pass.offer(0, &x);
        for (i, l) in self.layers.iter().enumerate() {
            let qkv = l.qkv.forward(&x)?;
            let op = Attention { offsets: pass.offsets, heads: l.heads, kv_heads: l.heads, head_dim: l.head_dim, causal: false, rope: None };
            let a = l.attn_out.forward_residual(&attention(&qkv, &op)?, &x, Some(&l.attn_ln))?;
            let h = l.inter.forward_act(&a, if l.gelu_tanh { Activation::GeluTanh } else { Activation::GeluErf })?;
            x = l.out.forward_residual(&h, &a, Some(&l.out_ln))?;
            pass.offer(i + 1, &x);
        }
        Ok(())
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

    fn forward(&self, ids: &Tensor, pass: &mut Pass<'_>) -> Result<()> {
        let x = c(self.wte.index_select(ids, 0))?;
        let mut x = c(x.add(&c(self.wpe.index_select(&pass.positions(0, ids.device())?, 0))?))?;
        let d = c(x.dim(1))?;
        let op = Attention { offsets: pass.offsets, heads: self.heads, kv_heads: self.heads, head_dim: d / self.heads, causal: true, rope: None };
        pass.offer(0, &x);
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            let qkv = l.c_attn.forward(&l.ln1.forward(&x)?)?;
            x = l.c_proj.forward_residual(&attention(&qkv, &op)?, &x, None)?;
            let h = l.fc.forward_act(&l.ln2.forward(&x)?, if self.gelu_tanh { Activation::GeluTanh } else { Activation::GeluErf })?;
            x = l.proj.forward_residual(&h, &x, None)?;
            if i + 1 < n {
                pass.offer(i + 1, &x);
            }
        }
        // Hugging Face's last entry is after the final norm; the block's own output follows it,
        // as the pre-norm entry (index `layers + 1`).
        pass.offer(n, &self.ln_f.forward(&x)?);
        pass.offer(n + 1, &x);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Llama and Qwen2

struct LlamaLayer {
    ln1: RmsNorm,
    /// Query, key and value projections side by side.
    qkv: Linear,
    o: Linear,
    ln2: RmsNorm,
    /// Gate and up projections side by side.
    gate_up: Linear,
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
                qkv: Linear::concat(&[
                    Linear::load(w, &format!("{p}.self_attn.q_proj"), d, h * hd, qkv_bias)?,
                    Linear::load(w, &format!("{p}.self_attn.k_proj"), d, kv * hd, qkv_bias)?,
                    Linear::load(w, &format!("{p}.self_attn.v_proj"), d, kv * hd, qkv_bias)?,
                ])?,
                o: Linear::load(w, &format!("{p}.self_attn.o_proj"), h * hd, d, cfg.o_bias)?,
                ln2: RmsNorm::load(w, &format!("{p}.post_attention_layernorm"), d, eps)?,
                gate_up: Linear::concat(&[
                    Linear::load(w, &format!("{p}.mlp.gate_proj"), d, cfg.intermediate_size, cfg.mlp_bias)?,
                    Linear::load(w, &format!("{p}.mlp.up_proj"), d, cfg.intermediate_size, cfg.mlp_bias)?,
                ])?,
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
    fn rope_tables(&self, t: usize) -> (Vec<f32>, Vec<f32>) {
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
        (cos, sin)
    }

    fn forward(&self, ids: &Tensor, pass: &mut Pass<'_>) -> Result<()> {
        let mut x = c(self.embed.index_select(ids, 0))?;
        let (cos, sin) = self.rope_tables(pass.longest());
        let op = Attention {
            offsets: pass.offsets,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            causal: true,
            rope: Some((cos.as_slice(), sin.as_slice())),
        };
        pass.offer(0, &x);
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            let qkv = l.qkv.forward(&l.ln1.forward(&x)?)?;
            x = l.o.forward_residual(&attention(&qkv, &op)?, &x, None)?;
            let g = swiglu(&l.gate_up.forward(&l.ln2.forward(&x)?)?)?;
            x = l.down.forward_residual(&g, &x, None)?;
            if i + 1 < n {
                pass.offer(i + 1, &x);
            }
        }
        pass.offer(n, &self.norm.forward(&x)?);
        pass.offer(n + 1, &x);
        Ok(())
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

    /// The requested hidden states (`layers`: indices as [`Model::num_hidden_states`] counts
    /// them, plus the decoders' pre-norm entry) of a packed batch: the texts' token ids one after
    /// another, one flat row-major `[tokens, hidden_size]` vector per requested entry, the rows in
    /// the order of `seqs`. Decoders (GPT-2, Llama, Qwen2) also answer index
    /// `num_hidden_states`: the last block's output before the final norm.
    pub fn run(&self, seqs: &[&[u32]], layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        let dev = Device::Cpu;
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        offsets.push(0);
        for s in seqs {
            offsets.push(offsets.last().copied().unwrap_or(0) + s.len());
        }
        if offsets.last() == Some(&0) {
            return Ok(vec![Vec::new(); layers.len()]);
        }
        let ids: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        let ids = c(Tensor::from_vec(ids, offsets[offsets.len() - 1], &dev))?;
        let mut pass = Pass { offsets: &offsets, want: layers, got: vec![None; layers.len()] };
        match &self.net {
            Net::Bert(m) => m.forward(&ids, &mut pass)?,
            Net::Gpt2(m) => m.forward(&ids, &mut pass)?,
            Net::Llama(m) => m.forward(&ids, &mut pass)?,
        }
        let mut out = Vec::with_capacity(layers.len());
        for (&l, h) in layers.iter().zip(pass.got) {
            let h = h.ok_or_else(|| EmbedError::Compute(format!("hidden state {l} is not one this model computes")))?;
            out.push(c(h.to_dtype(DType::F32).and_then(|h| h.flatten_all()).and_then(|h| h.to_vec1::<f32>()))?);
        }
        Ok(out)
    }
}
