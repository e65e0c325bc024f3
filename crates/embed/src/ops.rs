//! The forward pass's element-wise work, fused and vectorised.
//!
//! Between the matrix products, candle evaluates GELU with a scalar `erf` per element and the
//! attention softmax as separate scale, mask-add and softmax passes with a scalar `exp`; on
//! all-MiniLM-L6-v2 that took more time than the products themselves. These candle custom ops do
//! each in one pass over contiguous `f32` data, with polynomial `erf` and `exp` that the compiler
//! vectorises (AVX-512 or AVX2 when the CPU has them, via [`lidscope_kernel::multiversion!`]), and
//! rows spread over rayon's threads. Their error is a few 1e-7 relative: far inside the 1e-4 that
//! the hidden states must keep against transformers (tested on every fixture checkpoint).

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

/// Which keys each query of a batch may attend to: those of its own text (right padding), and
/// for decoders none after itself.
#[derive(Clone, Debug)]
pub struct AttentionMask {
    /// Tokens of each text of the batch.
    pub lengths: Vec<usize>,
    /// Decoders: query `i` sees keys `0..=i` only.
    pub causal: bool,
}

/// The fused `softmax(scores * scale + mask)` over the last dimension of `[B, H, T, T]` scores;
/// keys a query may not see get probability exactly 0, as with transformers' additive mask.
struct MaskedSoftmax<'a> {
    mask: &'a AttentionMask,
    scale: f32,
}

/// One row: `out[j] = exp(s[j] * scale - max) / sum` for `j < valid`, 0 after. The max and the
/// sum run in 16 independent lanes: a float reduction in one accumulator cannot be vectorised
/// (its order is fixed), and the loop around `exp` would stay scalar with it.
#[inline(always)]
fn softmax_row(row: &mut [f32], valid: usize, scale: f32) {
    const L: usize = 16;
    let o = &mut row[..valid];
    let mut lanes = [f32::NEG_INFINITY; L];
    let chunks = o.chunks_exact(L);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for c in chunks {
        for l in 0..L {
            lanes[l] = lanes[l].max(c[l]);
        }
    }
    let max = lanes.iter().fold(tail, |m, v| m.max(*v)) * scale;
    for o in o.iter_mut() {
        *o = exp(*o * scale - max);
    }
    let mut lanes = [0f32; L];
    let chunks = o.chunks_exact(L);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..L {
            lanes[l] += c[l];
        }
    }
    let inv = 1.0 / (lanes.iter().sum::<f32>() + tail);
    o.iter_mut().for_each(|o| *o *= inv);
    row[valid..].iter_mut().for_each(|o| *o = 0.0);
}

/// The rows of one `(text, head)` block of `t` queries.
#[inline(always)]
fn softmax_block(s: &mut [f32], t: usize, len: usize, causal: bool, scale: f32) {
    for (i, row) in s.chunks_exact_mut(t).enumerate() {
        let valid = if causal { (i + 1).min(len) } else { len };
        softmax_row(row, valid.max(1), scale);
    }
}

lidscope_kernel::multiversion! {
    fn softmax_block_v(s: &mut [f32], t: usize, len: usize, causal: bool, scale: f32) -> () => softmax_block
}

impl candle_core::InplaceOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "lidscope-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let (b, h, t, t2) = layout.shape().dims4()?;
        if t != t2 || b != self.mask.lengths.len() {
            candle_core::bail!("masked softmax: scores {:?} for {} texts", layout.shape(), self.mask.lengths.len());
        }
        let s = contiguous_f32_mut(storage, layout, self.name())?;
        let (causal, scale) = (self.mask.causal, self.scale);
        s.par_chunks_mut(t * t).enumerate().for_each(|(block, s)| softmax_block_v(s, t, self.mask.lengths[block / h], causal, scale));
        Ok(())
    }
}

/// Turns raw attention scores `q kᵀ` (`[B, H, T, T]`, a tensor nothing else shares) into
/// probabilities in place: scaled, masked and normalised in one pass.
pub fn masked_softmax(scores: &Tensor, scale: f32, mask: &AttentionMask) -> Result<()> {
    scores.inplace_op1(&MaskedSoftmax { mask, scale }).map_err(|e| EmbedError::Compute(e.to_string()))
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

    #[test]
    fn masked_softmax_is_the_additive_mask_softmax() {
        let (b, h, t) = (2, 3, 5);
        let s: Vec<f32> = (0..b * h * t * t).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7).collect();
        let scores = Tensor::from_vec(s.clone(), (b, h, t, t), &candle_core::Device::Cpu).unwrap();
        for causal in [false, true] {
            let mask = AttentionMask { lengths: vec![5, 3], causal };
            let probs = scores.copy().unwrap();
            masked_softmax(&probs, 0.25, &mask).unwrap();
            let got: Vec<f32> = probs.flatten_all().unwrap().to_vec1().unwrap();
            for (r, row) in s.chunks(t).enumerate() {
                let (text, i) = (r / (h * t), r % t);
                let visible = |j: usize| j < mask.lengths[text] && (!causal || j <= i);
                let max = (0..t).filter(|&j| visible(j)).map(|j| row[j] as f64 * 0.25).fold(f64::MIN, f64::max);
                let sum: f64 = (0..t).filter(|&j| visible(j)).map(|j| (row[j] as f64 * 0.25 - max).exp()).sum();
                for j in 0..t {
                    let want = if visible(j) { (row[j] as f64 * 0.25 - max).exp() / sum } else { 0.0 };
                    assert!((got[r * t + j] as f64 - want).abs() < 1e-6, "row {r} key {j}: {} vs {want}", got[r * t + j]);
                }
            }
        }
    }
}
