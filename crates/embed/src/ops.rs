//! The forward pass's work outside the dense products, fused and vectorised.
//!
//! Between the matrix products, candle evaluates GELU with a scalar `erf` per element, the
//! attention softmax as separate scale, mask-add and softmax passes with a scalar `exp`, and
//! attention itself as head transposes and many small batched products over padded texts; on
//! all-MiniLM-L6-v2 that took more time than the dense products. These candle custom ops do each
//! in one pass over contiguous `f32` data: bias and activation, bias, residual add and norm,
//! SwiGLU, and attention over a packed batch (per text and head, no padding, no transposes),
//! with polynomial `erf` and `exp` that the compiler vectorises (AVX-512 or AVX2 when the CPU has
//! them, via [`lidscope_kernel::multiversion!`]), and rows or texts spread over rayon's threads.
//! Their error is a few 1e-7 relative: far inside the 1e-4 that the hidden states must keep
//! against transformers (tested on every fixture checkpoint).

use candle_core::{CpuStorage, Layout, Tensor};
use rayon::prelude::*;

use crate::EmbedError;

type Result<T> = std::result::Result<T, EmbedError>;

/// Elements per rayon task of the element-wise ops (large enough to amortise the task).
const CHUNK: usize = 16 * 1024;

/// `e^x` for `x` in about [-87, 88] (clamped outside): Cody-Waite reduction to `|r| <= ln2/2` and
/// Cephes' degree-6 polynomial, relative error about 2e-7. Branch-free, so loops over it vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round x / ln 2 to the nearest integer n: adding 1.5 * 2^23 rounds in the float unit and
    // leaves n in the low mantissa bits (read without a float-to-int conversion, which would not
    // vectorise).
    let shifted = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5;
    let y = p * r * r + r + 1.0;
    let two_n = shifted.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    y * f32::from_bits(two_n)
}

/// `erf(x)`: Eigen's rational approximation on [-4, 4] (±1 beyond, as in float32), error a few
/// ulp. No `exp`, no branch.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_3e-3;
    q = x2 * q + -1.426_473_9e-2;
    x * p / q
}

/// GELU as BERT defines it: `x Φ(x) = x (1 + erf(x / √2)) / 2`.
#[inline(always)]
fn gelu_erf_one(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GPT-2's GELU: `x (1 + tanh(√(2/π) (x + 0.044715 x³))) / 2`, with `tanh(u) = 1 - 2 / (e^{2u} + 1)`.
#[inline(always)]
fn gelu_tanh_one(x: f32) -> f32 {
    let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    let tanh = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + tanh)
}

/// `y[r, :] = act(y[r, :] + bias)` over the rows of one chunk.
#[inline(always)]
fn bias_act_rows(y: &mut [f32], bias: &[f32], act: Activation) {
    for row in y.chunks_exact_mut(bias.len()) {
        match act {
            Activation::Identity => row.iter_mut().zip(bias).for_each(|(y, b)| *y += b),
            Activation::GeluErf => row.iter_mut().zip(bias).for_each(|(y, b)| *y = gelu_erf_one(*y + b)),
            Activation::GeluTanh => row.iter_mut().zip(bias).for_each(|(y, b)| *y = gelu_tanh_one(*y + b)),
        }
    }
}

/// `y = act(y)` over one chunk.
#[inline(always)]
fn act_only(y: &mut [f32], act: Activation) {
    match act {
        Activation::Identity => {}
        Activation::GeluErf => y.iter_mut().for_each(|y| *y = gelu_erf_one(*y)),
        Activation::GeluTanh => y.iter_mut().for_each(|y| *y = gelu_tanh_one(*y)),
    }
}

lidscope_kernel::multiversion! {
    fn bias_act_rows_v(y: &mut [f32], bias: &[f32], act: Activation) -> () => bias_act_rows
}

lidscope_kernel::multiversion! {
    fn act_only_v(y: &mut [f32], act: Activation) -> () => act_only
}

/// What follows a dense layer's product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Nothing (the bias only).
    Identity,
    /// The exact GELU (`erf`): BERT, RoBERTa.
    GeluErf,
    /// GELU's tanh approximation: GPT-2's `gelu_new`.
    GeluTanh,
}

/// The in-place op: bias (optional) and activation on the rows of a fresh product.
struct BiasAct<'a> {
    bias: Option<&'a [f32]>,
    act: Activation,
}

impl candle_core::InplaceOp1 for BiasAct<'_> {
    fn name(&self) -> &'static str {
        "lidscope-bias-activation"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let y = contiguous_f32_mut(storage, layout, self.name())?;
        match self.bias {
            Some(bias) => {
                if bias.is_empty() || y.len() % bias.len() != 0 {
                    candle_core::bail!("bias of {} for {:?}", bias.len(), layout.shape());
                }
                let rows = (CHUNK / bias.len()).max(1) * bias.len();
                y.par_chunks_mut(rows).for_each(|y| bias_act_rows_v(y, bias, self.act));
            }
            None => y.par_chunks_mut(CHUNK).for_each(|y| act_only_v(y, self.act)),
        }
        Ok(())
    }
}

/// Adds `bias` to every row of `y` and applies `act`, in one pass, in place. `y` must be a
/// tensor nothing else shares (a product just computed).
pub fn bias_activation(y: &Tensor, bias: Option<&[f32]>, act: Activation) -> Result<()> {
    y.inplace_op1(&BiasAct { bias, act }).map_err(|e| EmbedError::Compute(e.to_string()))
}

/// Multi-head attention over a *packed* batch: the tokens of several texts one after another,
/// with no padding, so that every dense layer of the model runs on real tokens only and on as
/// many of them as a pass holds (short texts made thin, padded products before). Only here do
/// the texts' boundaries matter: a query sees the keys of its own text (and, for decoders, none
/// after itself). Heads are read from the fused projection in place, so no head transposes.
pub struct Attention<'a> {
    /// Text `i` is rows `offsets[i]..offsets[i + 1]` of the batch.
    pub offsets: &'a [usize],
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer than `heads` for grouped-query attention).
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Decoders: query `i` sees keys `0..=i` of its text.
    pub causal: bool,
    /// Rotary position tables (`cos`, `sin`, each `[positions, head_dim / 2]`, position = index
    /// within the text) applied to queries and keys: Llama and Qwen2.
    pub rope: Option<(&'a [f32], &'a [f32])>,
}

/// One `(text, head)` of [`Attention`]: where its rows and columns are in the fused projection.
struct Head<'a> {
    qkv: &'a [f32],
    width: usize,
    row0: usize,
    t: usize,
    q_col: usize,
    k_col: usize,
    v_col: usize,
    hd: usize,
    causal: bool,
    rope: Option<(&'a [f32], &'a [f32])>,
}

/// Scratch of one task: rotated queries `[t, hd]` (rotary models), keys transposed and padded
/// `[hd, t16]`, and the scores of a block of queries `[4, t16]`.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    kt: Vec<f32>,
    s: Vec<f32>,
}

/// Rotates the pairs `(x[j], x[j + half])` of one head's row by its position's angles, as
/// transformers' `rotate_half` (and candle's `rope`) does.
#[inline(always)]
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (a, b) = x.split_at_mut(half);
    for j in 0..half {
        let (x1, x2) = (a[j], b[j]);
        a[j] = x1 * cos[j] - x2 * sin[j];
        b[j] = x1 * sin[j] + x2 * cos[j];
    }
}

/// Lanes of the attention kernel's register blocks (one AVX-512 vector of `f32`).
const LANES: usize = 16;

/// One row of attention probabilities, padded to whole vectors: `row[j] = exp(row[j] * scale -
/// max) / sum` for `j < valid`, 0 after (those keys are padding or, for decoders, the future).
/// Every step runs on full 16-lane blocks, in 16 independent lanes: a short row would otherwise
/// be mostly scalar remainder, and a reduction in one accumulator cannot be vectorised.
#[inline(always)]
fn softmax_padded(row: &mut [f32], valid: usize, scale: f32) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for (c, chunk) in row.chunks_exact(LANES).enumerate() {
        for l in 0..LANES {
            let v = if c * LANES + l < valid { chunk[l] } else { f32::NEG_INFINITY };
            lanes[l] = lanes[l].max(v);
        }
    }
    let max = lanes.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) * scale;
    let mut sums = [0f32; LANES];
    for (c, chunk) in row.chunks_exact_mut(LANES).enumerate() {
        for l in 0..LANES {
            let e = exp(chunk[l] * scale - max);
            chunk[l] = if c * LANES + l < valid { e } else { 0.0 };
            sums[l] += chunk[l];
        }
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    row.iter_mut().for_each(|p| *p *= inv);
}

/// Queries per register block of the attention kernel: independent sums to hide the FMAs'
/// latency, sharing each load of a key or value block.
const QB: usize = 4; // the kernel's four named sums

/// `softmax(q kᵀ / √d) v` for one text and head, into rows `0..t` of `out` (row `i` at
/// `out[i * stride..][..hd]`). Texts are short (tens of tokens), so the loops are shaped for
/// registers rather than caches: scores are formed for 4 queries and 16 keys at a time over the
/// head's dimensions (keys transposed and padded with zeros to a multiple of 16, so there is no
/// scalar remainder), outputs for 4 queries and 16 dimensions at a time over the keys. Queries
/// and values are read where the projection put them (queries copied only to rotate them). Each
/// score and output element is still one sum in order, over dimensions or keys; keys a query
/// may not see add exact zeros.
#[inline(always)]
fn attend_head(job: &Head<'_>, buf: &mut Scratch, out: &mut [f32], stride: usize) {
    let (t, hd, w) = (job.t, job.hd, job.width);
    let tp = t.div_ceil(LANES) * LANES;
    let scale = 1.0 / (hd as f32).sqrt();
    let rows = &job.qkv[job.row0 * w..(job.row0 + t) * w];
    buf.kt.clear();
    buf.kt.resize(hd * tp, 0.0);
    buf.s.resize(QB * tp, 0.0);
    if job.rope.is_some() {
        buf.q.resize(t * hd, 0.0);
    }
    let mut krow = [0f32; 512];
    for (r, row) in rows.chunks_exact(w).enumerate() {
        let k = &mut krow[..hd];
        k.copy_from_slice(&row[job.k_col..job.k_col + hd]);
        if let Some((cos, sin)) = job.rope {
            let half = hd / 2;
            let (c, s) = (&cos[r * half..(r + 1) * half], &sin[r * half..(r + 1) * half]);
            let q = &mut buf.q[r * hd..(r + 1) * hd];
            q.copy_from_slice(&row[job.q_col..job.q_col + hd]);
            rotate(q, c, s);
            rotate(k, c, s);
        }
        for (d, &kd) in k.iter().enumerate() {
            buf.kt[d * tp + r] = kd;
        }
    }
    // Query `i`'s row (the last real one stands in for the padding of a partial block).
    let (qs, q_stride, q_col) = if job.rope.is_some() { (&buf.q[..], hd, 0) } else { (rows, w, job.q_col) };
    let query = |i: usize| &qs[i.min(t - 1) * q_stride + q_col..][..hd];
    let value = |j: usize| &rows[j * w + job.v_col..][..hd];
    let full = hd / LANES * LANES;
    for i0 in (0..t).step_by(QB) {
        let valid: [usize; QB] = std::array::from_fn(|qi| if job.causal { (i0 + qi + 1).min(t) } else { t });
        let keys = valid[QB - 1];
        let kp = keys.div_ceil(LANES) * LANES;
        let q: [&[f32]; QB] = std::array::from_fn(|qi| query(i0 + qi));
        for c in 0..kp / LANES {
            // Four named sums, so that each stays in a register.
            let (mut a0, mut a1, mut a2, mut a3) = ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
            let ks = buf.kt.chunks_exact(tp).map(|row| &row[c * LANES..(c + 1) * LANES]);
            for ((((k, &q0), &q1), &q2), &q3) in ks.zip(q[0]).zip(q[1]).zip(q[2]).zip(q[3]) {
                for l in 0..LANES {
                    a0[l] = q0.mul_add(k[l], a0[l]);
                    a1[l] = q1.mul_add(k[l], a1[l]);
                    a2[l] = q2.mul_add(k[l], a2[l]);
                    a3[l] = q3.mul_add(k[l], a3[l]);
                }
            }
            for (qi, acc) in [a0, a1, a2, a3].iter().enumerate() {
                buf.s[qi * tp + c * LANES..][..LANES].copy_from_slice(acc);
            }
        }
        for (qi, &valid) in valid.iter().enumerate() {
            softmax_padded(&mut buf.s[qi * tp..qi * tp + kp], valid, scale);
        }
        let real = QB.min(t - i0);
        let (s0, rest) = buf.s.split_at(tp);
        let (s1, rest) = rest.split_at(tp);
        let (s2, s3) = rest.split_at(tp);
        for c in (0..full).step_by(LANES) {
            let (mut a0, mut a1, mut a2, mut a3) = ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
            let vs = rows.chunks_exact(w).map(|row| &row[job.v_col + c..job.v_col + c + LANES]);
            for ((((v, &p0), &p1), &p2), &p3) in vs.zip(&s0[..keys]).zip(&s1[..keys]).zip(&s2[..keys]).zip(&s3[..keys]) {
                for l in 0..LANES {
                    a0[l] = p0.mul_add(v[l], a0[l]);
                    a1[l] = p1.mul_add(v[l], a1[l]);
                    a2[l] = p2.mul_add(v[l], a2[l]);
                    a3[l] = p3.mul_add(v[l], a3[l]);
                }
            }
            for (qi, acc) in [a0, a1, a2, a3].iter().enumerate().take(real) {
                out[(i0 + qi) * stride + c..][..LANES].copy_from_slice(acc);
            }
        }
        for dd in full..hd {
            for qi in 0..real {
                let p = &buf.s[qi * tp..qi * tp + keys];
                out[(i0 + qi) * stride + dd] = p.iter().enumerate().fold(0.0, |a, (j, &pj)| pj.mul_add(value(j)[dd], a));
            }
        }
    }
}

lidscope_kernel::multiversion! {
    fn attend_head_v(job: &Head<'_>, buf: &mut Scratch, out: &mut [f32], stride: usize) -> () => attend_head
}

impl Attention<'_> {
    fn head<'b>(&'b self, qkv: &'b [f32], width: usize, text: usize, head: usize) -> Head<'b> {
        let hd = self.head_dim;
        let kv = head / (self.heads / self.kv_heads);
        Head {
            qkv,
            width,
            row0: self.offsets[text],
            t: self.offsets[text + 1] - self.offsets[text],
            q_col: head * hd,
            k_col: (self.heads + kv) * hd,
            v_col: (self.heads + self.kv_heads + kv) * hd,
            hd,
            causal: self.causal,
            rope: self.rope,
        }
    }
}

impl candle_core::CustomOp1 for Attention<'_> {
    fn name(&self) -> &'static str {
        "lidscope-packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, candle_core::Shape)> {
        let CpuStorage::F32(all) = storage else { candle_core::bail!("{}: float32 only", self.name()) };
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{}: the input must be contiguous", self.name()) };
        let qkv = &all[start..end];
        let (n, width) = layout.shape().dims2()?;
        let (h, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        if kv == 0 || h % kv != 0 || width != (h + 2 * kv) * hd || self.offsets.last() != Some(&n) || hd > 512 || (self.rope.is_some() && hd % 2 != 0) {
            candle_core::bail!("{}: {n} x {width} projections for {h} heads, {kv} key/value heads of {hd}, texts ending at {:?}", self.name(), self.offsets.last());
        }
        let longest = self.offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        if let Some((cos, sin)) = self.rope {
            if cos.len() < longest * hd / 2 || sin.len() < longest * hd / 2 {
                candle_core::bail!("{}: rotary tables shorter than a text of {longest}", self.name());
            }
        }
        let texts = self.offsets.len() - 1;
        let dq = h * hd;
        let mut out = vec![0f32; n * dq];
        if texts >= 4 * rayon::current_num_threads() {
            // Many texts: one task per text, writing its own rows.
            let mut rows = Vec::with_capacity(texts);
            let mut rest = out.as_mut_slice();
            for w in self.offsets.windows(2) {
                let (mine, after) = rest.split_at_mut((w[1] - w[0]) * dq);
                rows.push(mine);
                rest = after;
            }
            rows.into_par_iter().enumerate().for_each_init(Scratch::default, |buf, (text, rows)| {
                for head in 0..h {
                    attend_head_v(&self.head(qkv, width, text, head), buf, &mut rows[head * hd..], dq);
                }
            });
        } else {
            // Few (long) texts: one task per text and head, copied into place after.
            let tasks: Vec<(usize, usize)> = (0..texts).flat_map(|t| (0..h).map(move |head| (t, head))).collect();
            let outs: Vec<Vec<f32>> = tasks
                .par_iter()
                .map_init(Scratch::default, |buf, &(text, head)| {
                    let job = self.head(qkv, width, text, head);
                    let mut o = vec![0f32; job.t * hd];
                    attend_head_v(&job, buf, &mut o, hd);
                    o
                })
                .collect();
            for (&(text, head), o) in tasks.iter().zip(&outs) {
                let rows = &mut out[self.offsets[text] * dq..self.offsets[text + 1] * dq];
                for (dst, src) in rows.chunks_exact_mut(dq).zip(o.chunks_exact(hd)) {
                    dst[head * hd..(head + 1) * hd].copy_from_slice(src);
                }
            }
        }
        Ok((CpuStorage::F32(out), candle_core::Shape::from((n, dq))))
    }
}

/// Multi-head attention of a packed batch: `qkv` is `[N, (heads + 2 kv_heads) head_dim]` (the
/// fused projections: queries, then keys, then values), the result `[N, heads head_dim]`.
pub fn attention(qkv: &Tensor, op: &Attention<'_>) -> Result<Tensor> {
    qkv.apply_op1_no_bwd(op).map_err(|e| EmbedError::Compute(e.to_string()))
}

/// A norm fused after a residual add.
#[derive(Clone, Copy)]
pub enum Norm<'a> {
    /// `(x - mean) / √(var + eps) * w + b`.
    Layer { w: &'a [f32], b: &'a [f32], eps: f32 },
}

/// `y = norm(y + bias + residual)` (or without the norm) over rows of `bias.len()`, in place.
struct Residual<'a> {
    bias: Option<&'a [f32]>,
    norm: Option<Norm<'a>>,
}

/// One chunk of rows of [`Residual`]. The norm's mean and variance are two passes over the row,
/// as PyTorch computes them (not `E[x²] - E[x]²`, which cancels in float32).
#[inline(always)]
fn residual_rows(y: &mut [f32], r: &[f32], dim: usize, bias: Option<&[f32]>, norm: Option<Norm<'_>>) {
    for (y, r) in y.chunks_exact_mut(dim).zip(r.chunks_exact(dim)) {
        match bias {
            Some(b) => y.iter_mut().zip(r).zip(b).for_each(|((y, r), b)| *y = *y + b + r),
            None => y.iter_mut().zip(r).for_each(|(y, r)| *y += r),
        }
        if let Some(Norm::Layer { w, b, eps }) = norm {
            let mean = lane_sum(y) / dim as f32;
            let mut lanes = [0f32; 16];
            let chunks = y.chunks_exact(16);
            let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
            for c in chunks {
                for l in 0..16 {
                    lanes[l] += (c[l] - mean) * (c[l] - mean);
                }
            }
            let var = (lanes.iter().sum::<f32>() + tail) / dim as f32;
            let inv = 1.0 / (var + eps).sqrt();
            y.iter_mut().zip(w).zip(b).for_each(|((y, w), b)| *y = (*y - mean) * inv * w + b);
        }
    }
}

/// A sum in 16 lanes, so that it vectorises.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..16 {
            lanes[l] += c[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

lidscope_kernel::multiversion! {
    fn residual_rows_v(y: &mut [f32], r: &[f32], dim: usize, bias: Option<&[f32]>, norm: Option<Norm<'_>>) -> () => residual_rows
}

impl candle_core::InplaceOp2 for Residual<'_> {
    fn name(&self) -> &'static str {
        "lidscope-residual-norm"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let dim = *l1.dims().last().unwrap_or(&0);
        if l1.shape() != l2.shape() || dim == 0 || self.bias.is_some_and(|b| b.len() != dim) {
            candle_core::bail!("{}: {:?} + {:?}", self.name(), l1.shape(), l2.shape());
        }
        let CpuStorage::F32(r) = s2 else { candle_core::bail!("{}: float32 only", self.name()) };
        let Some((a, b)) = l2.contiguous_offsets() else { candle_core::bail!("{}: the residual must be contiguous", self.name()) };
        let r = &r[a..b];
        let y = contiguous_f32_mut(s1, l1, self.name())?;
        let rows = (CHUNK / dim).max(1) * dim;
        y.par_chunks_mut(rows).zip(r.par_chunks(rows)).for_each(|(y, r)| residual_rows_v(y, r, dim, self.bias, self.norm));
        Ok(())
    }
}

/// `y = norm(y + bias + residual)`, in place on `y` (a fresh product nothing else shares): a
/// dense layer's bias, the block's residual add and (post-norm encoders) the norm in one pass.
pub fn add_residual(y: &Tensor, bias: Option<&[f32]>, residual: &Tensor, norm: Option<Norm<'_>>) -> Result<()> {
    y.inplace_op2(residual, &Residual { bias, norm }).map_err(|e| EmbedError::Compute(e.to_string()))
}

/// SwiGLU of a fused gate-and-up product: `[N, 2 ff]` (gate columns, then up) to `[N, ff]`,
/// `silu(gate) * up` with `silu(g) = g / (1 + e^-g)`.
struct SwiGlu;

#[inline(always)]
fn swiglu_rows(gu: &[f32], out: &mut [f32], ff: usize) {
    for (gu, o) in gu.chunks_exact(2 * ff).zip(out.chunks_exact_mut(ff)) {
        let (g, u) = gu.split_at(ff);
        o.iter_mut().zip(g).zip(u).for_each(|((o, &g), &u)| *o = g / (exp(-g) + 1.0) * u);
    }
}

lidscope_kernel::multiversion! {
    fn swiglu_rows_v(gu: &[f32], out: &mut [f32], ff: usize) -> () => swiglu_rows
}

impl candle_core::CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "lidscope-swiglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, candle_core::Shape)> {
        let CpuStorage::F32(all) = storage else { candle_core::bail!("{}: float32 only", self.name()) };
        let Some((a, b)) = layout.contiguous_offsets() else { candle_core::bail!("{}: the input must be contiguous", self.name()) };
        let (n, w) = layout.shape().dims2()?;
        if w % 2 != 0 || w == 0 {
            candle_core::bail!("{}: {n} x {w} is not a gate and an up product side by side", self.name());
        }
        let ff = w / 2;
        let mut out = vec![0f32; n * ff];
        let rows = (CHUNK / w).max(1);
        all[a..b].par_chunks(rows * w).zip(out.par_chunks_mut(rows * ff)).for_each(|(gu, o)| swiglu_rows_v(gu, o, ff));
        Ok((CpuStorage::F32(out), candle_core::Shape::from((n, ff))))
    }
}

/// `silu(gate) * up` of a fused `[N, 2 ff]` gate-and-up product.
pub fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    gate_up.apply_op1_no_bwd(&SwiGlu).map_err(|e| EmbedError::Compute(e.to_string()))
}

/// The `f32` data of a contiguous tensor's storage, to write.
fn contiguous_f32_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(all) = storage else { candle_core::bail!("{op}: float32 only") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{op}: the input must be contiguous") };
    Ok(&mut all[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every float32 in [-12, 12] on a 2^-12 grid, plus the extremes.
    fn grid() -> Vec<f32> {
        (-12 * 4096..=12 * 4096).map(|i| i as f32 / 4096.0).chain([-1e30, -88.0, 88.0, 1e30]).collect()
    }

    #[test]
    fn erf_is_within_a_few_ulp() {
        let worst = grid().iter().map(|&x| (erf(x) as f64 - libm::erf(x as f64)).abs()).fold(0.0, f64::max);
        assert!(worst < 5e-7, "erf: max abs error {worst:e}");
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let xs: Vec<f32> = (-87 * 1000..=88 * 1000).map(|i| i as f32 / 1000.0).collect();
        let worst = xs.iter().map(|&x| ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs()).fold(0.0, f64::max);
        assert!(worst < 5e-7, "exp: max relative error {worst:e}");
        assert!(exp(-1e30) < 1e-37 && exp(1e30).is_finite());
    }

    #[test]
    fn gelus_match_their_definitions() {
        for &x in &grid() {
            let xd = x as f64;
            let want = 0.5 * xd * (1.0 + libm::erf(xd / std::f64::consts::SQRT_2));
            // erf's absolute error (under 5e-7) scaled by |x| / 2, plus rounding.
            assert!((gelu_erf_one(x) as f64 - want).abs() <= 2.5e-7 * xd.abs() + 1e-6 * (1.0 + want.abs()), "gelu erf({x})");
            let want = 0.5 * xd * (1.0 + (0.797_884_560_802_865_4 * (xd + 0.044715 * xd * xd * xd)).tanh());
            assert!((gelu_tanh_one(x) as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "gelu tanh({x}): {} vs {want}", gelu_tanh_one(x));
        }
        let x = Tensor::new(&[[-3.0f32, -0.5, 0.0], [0.5, 2.0, 40.0]], &candle_core::Device::Cpu).unwrap();
        bias_activation(&x, Some(&[0.0, 0.0, 1.0]), Activation::GeluErf).unwrap();
        let y: Vec<Vec<f32>> = x.to_vec2().unwrap();
        assert!((y[1][1] - 1.954_5).abs() < 1e-4 && (y[0][2] - 0.841_3).abs() < 1e-4 && (y[1][2] - 41.0).abs() < 1e-5, "{y:?}");
        bias_activation(&x, None, Activation::Identity).unwrap();
        assert_eq!(x.to_vec2::<f32>().unwrap(), y);
    }

    /// Attention of one text and head in float64: `softmax(q kᵀ / √d + mask) v`, rotary
    /// positions applied first.
    fn naive(qkv: &[f32], width: usize, rows: std::ops::Range<usize>, cols: (usize, usize, usize), hd: usize, causal: bool, rope: Option<(&[f32], &[f32])>) -> Vec<f64> {
        let t = rows.len();
        // Queries and keys are rotated, values not.
        let get = |r: usize, c: usize| -> Vec<f64> {
            let mut x: Vec<f64> = qkv[(rows.start + r) * width + c..][..hd].iter().map(|&v| v as f64).collect();
            if let Some((cos, sin)) = rope.filter(|_| c != cols.2) {
                let half = hd / 2;
                let y = x.clone();
                for j in 0..half {
                    let (c, s) = (cos[r * half + j] as f64, sin[r * half + j] as f64);
                    x[j] = y[j] * c - y[j + half] * s;
                    x[j + half] = y[j] * s + y[j + half] * c;
                }
            }
            x
        };
        let mut out = vec![0.0; t * hd];
        for i in 0..t {
            let q = get(i, cols.0);
            let keys = if causal { i + 1 } else { t };
            let s: Vec<f64> = (0..keys).map(|j| q.iter().zip(get(j, cols.1)).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()).collect();
            let max = s.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = s.iter().map(|v| (v - max).exp()).sum();
            for (j, sj) in s.iter().enumerate() {
                let v = get(j, cols.2);
                for d in 0..hd {
                    out[i * hd + d] += (sj - max).exp() / sum * v[d];
                }
            }
        }
        out
    }

    #[test]
    fn packed_attention_equals_per_text_attention() {
        // Few texts (tasks per head) and many (tasks per text); grouped-query heads; rotary;
        // heads narrower than a vector, of whole vectors, and of vectors and a remainder; texts
        // longer than a block of keys.
        for (lengths, heads, kv, hd, causal, rotary) in [
            (vec![5, 1, 9], 4, 4, 8, false, false),
            (vec![7, 3, 37], 4, 2, 40, true, true),
            ((0..40).map(|i| 1 + i % 11).collect::<Vec<usize>>(), 2, 1, 16, true, false),
            ((0..40).map(|i| 1 + i * 7 % 19).collect::<Vec<usize>>(), 3, 3, 24, false, true),
        ] {
            let width = (heads + 2 * kv) * hd;
            let mut offsets = vec![0];
            lengths.iter().for_each(|l| offsets.push(offsets.last().unwrap() + l));
            let n = *offsets.last().unwrap();
            let qkv: Vec<f32> = (0..n * width).map(|i| ((i * 7919 % 211) as f32 - 105.0) * 0.013).collect();
            let longest = *lengths.iter().max().unwrap();
            let cos: Vec<f32> = (0..longest * hd / 2).map(|i| (i as f32 * 0.3).cos()).collect();
            let sin: Vec<f32> = (0..longest * hd / 2).map(|i| (i as f32 * 0.3).sin()).collect();
            let rope = rotary.then_some((cos.as_slice(), sin.as_slice()));
            let op = Attention { offsets: &offsets, heads, kv_heads: kv, head_dim: hd, causal, rope };
            let x = Tensor::from_vec(qkv.clone(), (n, width), &candle_core::Device::Cpu).unwrap();
            let got: Vec<Vec<f32>> = attention(&x, &op).unwrap().to_vec2().unwrap();
            for (text, w) in offsets.windows(2).enumerate() {
                for head in 0..heads {
                    let g = head / (heads / kv);
                    let want = naive(&qkv, width, w[0]..w[1], (head * hd, (heads + g) * hd, (heads + kv + g) * hd), hd, causal, rope);
                    for r in 0..w[1] - w[0] {
                        for d in 0..hd {
                            let (a, b) = (got[w[0] + r][head * hd + d] as f64, want[r * hd + d]);
                            assert!((a - b).abs() < 1e-5, "text {text} head {head} row {r} dim {d}: {a} vs {b}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn residual_norm_and_swiglu_match_their_definitions() {
        let (n, d) = (3, 20);
        let y: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let r: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let bias: Vec<f32> = (0..d).map(|i| i as f32 * 0.01).collect();
        let (w, b): (Vec<f32>, Vec<f32>) = ((0..d).map(|i| 1.0 + i as f32 * 0.1).collect(), (0..d).map(|i| -(i as f32) * 0.05).collect());
        let dev = candle_core::Device::Cpu;
        let yt = Tensor::from_vec(y.clone(), (n, d), &dev).unwrap();
        let rt = Tensor::from_vec(r.clone(), (n, d), &dev).unwrap();
        add_residual(&yt, Some(&bias), &rt, Some(Norm::Layer { w: &w, b: &b, eps: 1e-5 })).unwrap();
        let got: Vec<f32> = yt.flatten_all().unwrap().to_vec1().unwrap();
        for row in 0..n {
            let x: Vec<f64> = (0..d).map(|j| y[row * d + j] as f64 + bias[j] as f64 + r[row * d + j] as f64).collect();
            let mean = x.iter().sum::<f64>() / d as f64;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
            for j in 0..d {
                let want = (x[j] - mean) / (var + 1e-5).sqrt() * w[j] as f64 + b[j] as f64;
                assert!((got[row * d + j] as f64 - want).abs() < 1e-5, "row {row} {j}");
            }
        }
        let gu = Tensor::from_vec(y.clone(), (n, d), &dev).unwrap();
        let got: Vec<Vec<f32>> = swiglu(&gu).unwrap().to_vec2().unwrap();
        for row in 0..n {
            for j in 0..d / 2 {
                let (g, u) = (y[row * d + j] as f64, y[row * d + d / 2 + j] as f64);
                let want = g / (1.0 + (-g).exp()) * u;
                assert!((got[row][j] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "swiglu row {row} {j}");
            }
        }
    }
}
