//! The plain-Rust reference of DeepSeek-V3.2's forward (issue 15), in f64, following DeepSeek's
//! `inference/model.py` as fixed in November 2025: the norms, both RoPE layouts, the Hadamard
//! rotation of the indexer, the MoE router, SwiGLU, and the whole forward of a token through a
//! checkpoint's loaded layers ([`forward_token`], [`generate`]). What differs from DeepSeek's code
//! on purpose is in the README ("Checkpoints").

/// RMSNorm: `x / sqrt(mean(x²) + eps) · weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f64) -> Vec<f32> {
    let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter()
        .zip(weight)
        .map(|(&v, &w)| (v as f64 * r * w as f64) as f32)
        .collect()
}

/// LayerNorm (the indexer's `k_norm`): `(x − mean) / sqrt(var + eps) · weight + bias`, the
/// biased variance, as `torch.nn.LayerNorm`.
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f64) -> Vec<f32> {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let r = 1.0 / (var + eps).sqrt();
    x.iter()
        .zip(weight.iter().zip(bias))
        .map(|(&v, (&w, &b))| ((v as f64 - mean) * r * w as f64 + b as f64) as f32)
        .collect()
}

/// Which values of a rope'd vector form the rotated pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(x[2i], x[2i+1])` rotated by frequency i: MLA's q_pe and k_pe.
    Interleaved,
    /// Pairs `(x[i], x[i + d/2])` rotated by frequency i (NeoX, rotate-half): the indexer's q
    /// and k, since DeepSeek's fix of 2025-11 ("fix indexer rope").
    NeoX,
}

/// Rotate `x` (d values, d even, the rope dims only) for position `pos` with the inverse
/// frequencies `inv_freq` (d / 2 of them: `HfConfig::rope_inv_freqs`).
pub fn rope(x: &[f32], pos: u32, inv_freq: &[f64], layout: RopeLayout) -> Vec<f32> {
    let half = x.len() / 2;
    assert_eq!(inv_freq.len(), half, "one frequency per pair");
    let mut y = x.to_vec();
    for (i, &f) in inv_freq.iter().enumerate() {
        let (a, b) = match layout {
            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
            RopeLayout::NeoX => (i, i + half),
        };
        let (s, c) = (pos as f64 * f).sin_cos();
        let (xa, xb) = (x[a] as f64, x[b] as f64);
        y[a] = (xa * c - xb * s) as f32;
        y[b] = (xa * s + xb * c) as f32;
    }
    y
}

/// The Walsh–Hadamard rotation of the indexer's q and k (`rotate_activation`: fast-hadamard-
/// transform's Sylvester order, scaled by d^-1/2; d a power of two). Orthonormal: applied twice
/// it gives x back.
pub fn hadamard(x: &[f32]) -> Vec<f32> {
    let d = x.len();
    assert!(
        d.is_power_of_two(),
        "the Hadamard rotation needs a power-of-two length"
    );
    let mut v: Vec<f64> = x.iter().map(|&a| a as f64).collect();
    let mut h = 1;
    while h < d {
        for i in (0..d).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (v[j], v[j + h]);
                v[j] = a + b;
                v[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let s = (d as f64).powf(-0.5);
    v.iter().map(|&a| (a * s) as f32).collect()
}

/// The indices of the `k` largest of `v`, largest first, ties to the lower index (DeepSeek
/// leaves ties to `torch.topk`; this project defines them).
fn largest(v: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// The MoE router (`Gate.forward`, sigmoid scoring, noaux_tc): `logits` = `gate.weight · x`
/// (n_routed values), `bias` = `e_score_correction_bias`. Scores are sigmoids; the bias is added
/// for the selection only; a group's score is the sum of its top-2 biased scores; the top
/// `topk_group` groups stay; the top `top_k` experts of those are chosen; their weights are the
/// unbiased scores normalised to sum 1, times `routed_scaling_factor`. Returns (experts,
/// weights), best first.
pub fn route(
    logits: &[f32],
    bias: &[f32],
    n_group: usize,
    topk_group: usize,
    top_k: usize,
    routed_scaling_factor: f64,
) -> (Vec<usize>, Vec<f32>) {
    let scores: Vec<f64> = logits
        .iter()
        .map(|&l| 1.0 / (1.0 + (-l as f64).exp()))
        .collect();
    let biased: Vec<f64> = scores
        .iter()
        .zip(bias)
        .map(|(&s, &b)| s + b as f64)
        .collect();
    let per = scores.len() / n_group;
    let group_score: Vec<f64> = (0..n_group)
        .map(|g| {
            let grp = &biased[g * per..(g + 1) * per];
            largest(grp, 2).iter().map(|&i| grp[i]).sum()
        })
        .collect();
    let keep = largest(&group_score, topk_group);
    let masked: Vec<f64> = biased
        .iter()
        .enumerate()
        .map(|(e, &s)| match keep.contains(&(e / per)) {
            true => s,
            false => f64::NEG_INFINITY,
        })
        .collect();
    let experts = largest(&masked, top_k);
    let sum: f64 = experts.iter().map(|&e| scores[e]).sum();
    let weights = experts
        .iter()
        .map(|&e| (scores[e] / sum * routed_scaling_factor) as f32)
        .collect();
    (experts, weights)
}

/// SwiGLU MLP of one token: `down · (silu(gate · x) ⊙ (up · x))`; weights `[out, in]` row-major.
pub fn swiglu(x: &[f32], gate: &[f32], up: &[f32], down: &[f32], inter: usize) -> Vec<f32> {
    let h = x.len();
    let dot = |w: &[f32], r: usize, n: usize, v: &[f64]| -> f64 {
        w[r * n..(r + 1) * n]
            .iter()
            .zip(v)
            .map(|(&a, &b)| a as f64 * b)
            .sum()
    };
    let xv: Vec<f64> = x.iter().map(|&a| a as f64).collect();
    let act: Vec<f64> = (0..inter)
        .map(|r| {
            let g = dot(gate, r, h, &xv);
            g / (1.0 + (-g).exp()) * dot(up, r, h, &xv)
        })
        .collect();
    (0..h).map(|r| dot(down, r, inter, &act) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hadamard_is_sylvester_ordered_and_orthonormal() {
        // H_4 in Sylvester order, scaled by 1/2
        let e1 = hadamard(&[0.0, 1.0, 0.0, 0.0]);
        assert_eq!(e1, vec![0.5, -0.5, 0.5, -0.5]);
        let e2 = hadamard(&[0.0, 0.0, 1.0, 0.0]);
        assert_eq!(e2, vec![0.5, 0.5, -0.5, -0.5]);
        let x: Vec<f32> = (0..128).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let back = hadamard(&hadamard(&x));
        assert!(x.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn the_two_rope_layouts_are_one_rotation_on_different_pairs() {
        let freqs: Vec<f64> = (0..8)
            .map(|i| 1.0 / 10_000f64.powf(i as f64 / 8.0))
            .collect();
        let x: Vec<f32> = (0..16).map(|i| i as f32 * 0.25 - 1.0).collect();
        // NeoX on x = interleaved on x with its halves interleaved, then split back
        let inter: Vec<f32> = (0..8).flat_map(|i| [x[i], x[i + 8]]).collect();
        let a = rope(&x, 7, &freqs, RopeLayout::NeoX);
        let b = rope(&inter, 7, &freqs, RopeLayout::Interleaved);
        for i in 0..8 {
            assert_eq!((a[i], a[i + 8]), (b[2 * i], b[2 * i + 1]));
        }
        // position 0 is the identity; every position keeps the norm
        assert_eq!(rope(&x, 0, &freqs, RopeLayout::NeoX), x);
        let n = |v: &[f32]| v.iter().map(|&a| a as f64 * a as f64).sum::<f64>();
        assert!((n(&a) - n(&x)).abs() < 1e-4);
        assert_ne!(a, rope(&x, 7, &freqs, RopeLayout::Interleaved));
    }

    #[test]
    fn the_router_selects_with_the_bias_and_weighs_without_it() {
        // 8 experts in 2 groups of 4; group 1's top-2 sum wins only with the bias
        let logits = [2.0, 1.9, -3.0, -3.0, 1.0, 1.0, 1.0, -3.0];
        let no_bias = [0.0; 8];
        let (e, w) = route(&logits, &no_bias, 2, 1, 2, 1.0);
        assert_eq!(e, vec![0, 1]);
        assert!((w[0] + w[1] - 1.0).abs() < 1e-6);
        let bias = [0.0, 0.0, 0.0, 0.0, 0.2, 0.1, 0.0, 0.0];
        let (e, w) = route(&logits, &bias, 2, 1, 2, 2.5);
        assert_eq!(e, vec![4, 5], "the bias moves the selection to group 1");
        // weights: the unbiased scores (equal here), normalised, times the scaling factor
        assert!((w[0] - 1.25).abs() < 1e-6 && (w[1] - 1.25).abs() < 1e-6);
        // ties (equal groups, equal experts) go to the lower index
        let flat = [0.0f32; 8];
        assert_eq!(route(&flat, &no_bias, 2, 1, 3, 1.0).0, vec![0, 1, 2]);
    }

    #[test]
    fn norms_match_their_definitions() {
        let x = [1.0f32, -2.0, 3.0, -4.0];
        let y = rms_norm(&x, &[1.0; 4], 0.0);
        let rms = (30.0f64 / 4.0).sqrt();
        assert!(
            y.iter()
                .zip(&x)
                .all(|(a, b)| (*a as f64 - *b as f64 / rms).abs() < 1e-6)
        );
        let z = layer_norm(&x, &[2.0; 4], &[0.5; 4], 0.0);
        let mean: f64 = z.iter().map(|&a| a as f64).sum::<f64>() / 4.0;
        assert!((mean - 0.5).abs() < 1e-6, "mean 0 before the bias");
    }
}

// ===================================================================== the whole forward

use crate::config::Dtype;
use crate::model::checkpoint::{Checkpoint, expected_tensors};
use crate::model::config::HfConfig;
use std::collections::HashMap;
use std::ops::Range;

/// DeepSeek's `act_quant` and back: blocks of 128 values (a shorter last block where the length
/// is not a multiple), ue8m0 scales, e4m3 round to nearest even. What an FP8 cache holds, and
/// what an FP8 linear layer sees of its input.
pub fn act_quant(x: &[f32]) -> Vec<f32> {
    use super::fp8::{ScaleRule, block_scale, e4m3_decode, quantize_with};
    x.chunks(128)
        .flat_map(|b| {
            let s = block_scale(b, ScaleRule::Ue8m0);
            quantize_with(b, s)
                .into_iter()
                .map(move |q| e4m3_decode(q) * s)
        })
        .collect()
}

/// The loaded layers' weights as f32 (FP8 weights times their block scales), for the CPU
/// reference forward.
pub struct ModelWeights {
    pub config: HfConfig,
    pub layers: Range<u32>,
    /// The tensors not stored as FP8, as f32 values.
    t: HashMap<String, Vec<f32>>,
    /// Linear weights stored as FP8, as the checkpoint stores them (the GPU reads them so, a
    /// quarter of f32's bytes): their inputs go through `act_quant` (DeepSeek's `linear`).
    fp8_raw: HashMap<String, Fp8Tensor>,
    /// Their f32 values, dequantised the first time something asks for them (the CPU
    /// reference, an f32 upload): a run that keeps FP8 weights FP8 never holds them (a MoE layer
    /// of 256 experts is 11 GB as FP8 and 45 GB as f32).
    dequantised: HashMap<String, std::sync::OnceLock<Vec<f32>>>,
    inv_freq: Vec<f64>,
}

/// An FP8 weight as the checkpoint stores it: e4m3 bytes `[rows, cols]` and one f32 scale a
/// 128 × 128 block, `[⌈rows / 128⌉, ⌈cols / 128⌉]`; value = e4m3 · scale (in f32).
#[derive(Clone, Debug)]
pub struct Fp8Tensor {
    pub bytes: Vec<u8>,
    pub scales: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl Fp8Tensor {
    /// The values it stands for: each e4m3 byte times its block's scale, in f32 (as
    /// `Checkpoint::f32` reads an FP8 weight).
    pub fn values(&self) -> Vec<f32> {
        let sc = self.cols.div_ceil(128);
        self.bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let (r, k) = (i / self.cols, i % self.cols);
                super::fp8::e4m3_decode(b) * self.scales[(r / 128) * sc + k / 128]
            })
            .collect()
    }
}

impl ModelWeights {
    pub fn load(ck: &Checkpoint) -> crate::Result<ModelWeights> {
        let c = &ck.config;
        let mut t = HashMap::new();
        let mut fp8_raw = HashMap::new();
        for spec in expected_tensors(c, ck.layers.clone()) {
            match ck.fp8(&spec.name)? {
                // its f32 values are `Checkpoint::f32`'s, made on demand (`Fp8Tensor::values`)
                Some(raw) => {
                    fp8_raw.insert(spec.name.clone(), raw);
                }
                None => {
                    t.insert(spec.name.clone(), ck.f32(&spec.name)?);
                }
            }
        }
        Ok(Self::from_tensors(c.clone(), ck.layers.clone(), t, fp8_raw))
    }

    /// Weights given by name as f32 values (`t`) or as FP8 (`fp8`; an f32 copy of one of those
    /// in `t` is dropped: its values are the FP8 tensor's, made on demand). A model made in
    /// memory: [`crate::model::init::random_weights`].
    pub fn from_tensors(
        config: HfConfig,
        layers: Range<u32>,
        mut t: HashMap<String, Vec<f32>>,
        fp8: HashMap<String, Fp8Tensor>,
    ) -> ModelWeights {
        t.retain(|name, _| !fp8.contains_key(name));
        ModelWeights {
            inv_freq: config.rope_inv_freqs(),
            config,
            layers,
            t,
            dequantised: fp8
                .keys()
                .map(|k| (k.clone(), Default::default()))
                .collect(),
            fp8_raw: fp8,
        }
    }

    /// Bytes of every loaded tensor as f32 (what the GPU holds of them with FP8 weights
    /// uploaded as f32).
    pub fn f32_bytes(&self) -> u64 {
        let fp8: u64 = self.fp8_raw.values().map(|f| f.bytes.len() as u64).sum();
        self.t.values().map(|v| v.len() as u64 * 4).sum::<u64>() + 4 * fp8
    }

    /// Bytes the weights hold in host memory now: f32 tensors, FP8 ones as bytes and scales,
    /// and the f32 values of those dequantised so far.
    pub fn host_bytes(&self) -> u64 {
        let made: u64 = self
            .dequantised
            .values()
            .filter_map(|v| v.get())
            .map(|v| 4 * v.len() as u64)
            .sum();
        self.gpu_bytes() + made
    }

    /// Values in tensor `name` (panics on a name it did not load), without dequantising it.
    pub fn elements(&self, name: &str) -> usize {
        match self.fp8_raw.get(name) {
            Some(f) => f.bytes.len(),
            None => self.t[name].len(),
        }
    }

    fn w(&self, name: &str) -> &[f32] {
        match self.t.get(name) {
            Some(v) => v,
            None => self.dequantised[name].get_or_init(|| self.fp8_raw[name].values()),
        }
    }

    /// Tensor `name` of the loaded layers as f32 values (panics on a name it did not load).
    pub fn tensor(&self, name: &str) -> &[f32] {
        self.w(name)
    }

    /// Weight `name` as FP8 bytes and block scales, where the checkpoint stores it so.
    pub fn fp8_tensor(&self, name: &str) -> Option<&Fp8Tensor> {
        self.fp8_raw.get(name)
    }

    /// Bytes of the weights as the GPU holds them: FP8 weights as bytes and scales, the rest
    /// as f32.
    pub fn gpu_bytes(&self) -> u64 {
        let fp8: u64 = self
            .fp8_raw
            .values()
            .map(|f| f.bytes.len() as u64 + 4 * f.scales.len() as u64)
            .sum();
        self.t.values().map(|v| 4 * v.len() as u64).sum::<u64>() + fp8
    }

    /// Whether linear weight `name` is stored as FP8 (its inputs then go through `act_quant`).
    pub fn is_fp8(&self, name: &str) -> bool {
        self.fp8_raw.contains_key(name)
    }

    /// RoPE's inverse frequencies (`HfConfig::rope_inv_freqs`).
    pub fn inv_freq(&self) -> Vec<f64> {
        self.inv_freq.clone()
    }

    /// `weight · x` of linear layer `name` (`[out, in]`), its input through `act_quant` where
    /// the weight is FP8.
    fn linear(&self, name: &str, x: &[f32]) -> Vec<f32> {
        let w = self.w(name);
        let x = match self.fp8_raw.contains_key(name) {
            true => act_quant(x),
            false => x.to_vec(),
        };
        let n = x.len();
        w.chunks_exact(n)
            .map(|row| {
                row.iter()
                    .zip(&x)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32
            })
            .collect()
    }

    /// The head's weight: `lm_head.weight`, or the embedding where they are tied.
    pub fn lm_head_name(&self) -> &'static str {
        match self.config.tie_word_embeddings {
            true => "model.embed_tokens.weight",
            false => "lm_head.weight",
        }
    }
}

/// One sequence's caches, per loaded layer: the latent rows as cached (after the FP8 round
/// trip), the rope'd key parts, and the indexer keys (after the FP8 round trip), each as a
/// cache of `stored` holds it ([`stored_value`]).
#[derive(Clone, Debug)]
pub struct SeqCache {
    pub latent: Vec<Vec<Vec<f32>>>,
    pub k_pe: Vec<Vec<Vec<f32>>>,
    pub index_k: Vec<Vec<Vec<f32>>>,
    pub stored: Dtype,
}

/// Caches that hold the values as computed (f32).
impl Default for SeqCache {
    fn default() -> Self {
        Self::stored_as(Dtype::F32)
    }
}

/// `v` as a cache of `dtype` holds it: f16 rounds every value (nearest even); DeepSeek's FP8
/// format holds act_quant's values exactly (its scales are powers of two) and `k_pe` as bf16
/// (`rope`: model.py's `pe_cache` is bf16 too); f32 holds everything as it is.
pub fn stored_value(mut v: Vec<f32>, dtype: Dtype, rope: bool) -> Vec<f32> {
    match (dtype, rope) {
        (Dtype::F16, _) => v
            .iter_mut()
            .for_each(|x| *x = half::f16::from_f32(*x).to_f32()),
        (Dtype::Fp8, true) => v
            .iter_mut()
            .for_each(|x| *x = half::bf16::from_f32(*x).to_f32()),
        _ => {}
    }
    v
}

impl SeqCache {
    /// Empty caches that hold their values as a cache of `stored` does.
    pub fn stored_as(stored: Dtype) -> Self {
        SeqCache {
            latent: Vec::new(),
            k_pe: Vec::new(),
            index_k: Vec::new(),
            stored,
        }
    }

    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.latent.first().map_or(0, |l| l.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one token's forward gives: the logits of the next token, and per loaded layer the
/// positions its indexer selected and the experts its router chose (MoE layers).
#[derive(Clone, Debug)]
pub struct TokenOut {
    pub logits: Vec<f32>,
    pub topk: Vec<Vec<i32>>,
    pub experts: Vec<Vec<usize>>,
    /// Per loaded layer, the attention block's output (before the residual add).
    pub attn: Vec<Vec<f32>>,
    /// Per loaded layer, the feed-forward block's normed input and its output (before the
    /// residual add).
    pub ffn_in: Vec<Vec<f32>>,
    pub ffn: Vec<Vec<f32>>,
}

/// How attention picks its rows: the lightning indexer's top-k (the model), or every position
/// (dense, for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    Sparse,
    Dense,
}

/// The indexer of layer `l` for the token at `pos`: caches its key, returns the selected
/// positions (best first, ties to the lower position).
fn indexer(
    w: &ModelWeights,
    p: &str,
    x: &[f32],
    qr: &[f32],
    (keys, stored): (&mut Vec<Vec<f32>>, Dtype),
    pos: u32,
) -> Vec<i32> {
    let c = &w.config;
    let (ih, id, rope) = (
        c.index_n_heads as usize,
        c.index_head_dim as usize,
        c.qk_rope_head_dim as usize,
    );
    let rotate = |v: &[f32]| -> Vec<f32> {
        let mut v = v.to_vec();
        let pe = super::model::rope(&v[..rope], pos, &w.inv_freq, RopeLayout::NeoX);
        v[..rope].copy_from_slice(&pe);
        act_quant(&hadamard(&v))
    };
    let q = w.linear(&format!("{p}self_attn.indexer.wq_b.weight"), qr);
    let q: Vec<Vec<f32>> = q.chunks_exact(id).map(rotate).collect();
    let k = w.linear(&format!("{p}self_attn.indexer.wk.weight"), x);
    let k = layer_norm(
        &k,
        w.w(&format!("{p}self_attn.indexer.k_norm.weight")),
        w.w(&format!("{p}self_attn.indexer.k_norm.bias")),
        1e-6,
    );
    keys.push(stored_value(rotate(&k), stored, false));
    // weights_proj in f32: · H^-1/2 · d^-1/2 (the q scale is inside the dequantised q)
    let wts = w.linear(&format!("{p}self_attn.indexer.weights_proj.weight"), x);
    let scale = (ih as f64).powf(-0.5) * (id as f64).powf(-0.5);
    let scores: Vec<f64> = keys
        .iter()
        .map(|key| {
            q.iter()
                .zip(&wts)
                .map(|(qh, &wh)| {
                    let dot: f64 = qh.iter().zip(key).map(|(&a, &b)| a as f64 * b as f64).sum();
                    dot.max(0.0) * wh as f64 * scale
                })
                .sum()
        })
        .collect();
    let k = (c.index_topk as usize).min(keys.len());
    largest(&scores, k).into_iter().map(|s| s as i32).collect()
}

/// MLA (absorbed) of layer `l` for the token at `pos` over the positions `ids`.
#[allow(clippy::too_many_arguments)]
fn mla(
    w: &ModelWeights,
    p: &str,
    qr: &[f32],
    latent: &[Vec<f32>],
    k_pe: &[Vec<f32>],
    ids: &[i32],
    pos: u32,
) -> Vec<f32> {
    let c = &w.config;
    let (heads, nope, rd, v, kv) = (
        c.num_attention_heads as usize,
        c.qk_nope_head_dim as usize,
        c.qk_rope_head_dim as usize,
        c.v_head_dim as usize,
        c.kv_lora_rank as usize,
    );
    let q = w.linear(&format!("{p}self_attn.q_b_proj.weight"), qr);
    let wkv_b = w.w(&format!("{p}self_attn.kv_b_proj.weight")); // [heads · (nope + v), kv]
    let scale = c.softmax_scale();
    let mut o = Vec::with_capacity(heads * v);
    for h in 0..heads {
        let qh = &q[h * (nope + rd)..(h + 1) * (nope + rd)];
        let q_pe = rope(&qh[nope..], pos, &w.inv_freq, RopeLayout::Interleaved);
        let row = |r: usize| &wkv_b[(h * (nope + v) + r) * kv..][..kv];
        // q_abs = q_nope · W_UK[h]
        let mut q_abs = vec![0f64; kv];
        for (d, &qd) in qh[..nope].iter().enumerate() {
            for (a, &wv) in q_abs.iter_mut().zip(row(d)) {
                *a += qd as f64 * wv as f64;
            }
        }
        let score: Vec<f64> = ids
            .iter()
            .map(|&s| {
                let s = s as usize;
                let a: f64 = q_abs
                    .iter()
                    .zip(&latent[s])
                    .map(|(&x, &y)| x * y as f64)
                    .sum();
                let b: f64 = q_pe
                    .iter()
                    .zip(&k_pe[s])
                    .map(|(&x, &y)| x as f64 * y as f64)
                    .sum();
                (a + b) * scale
            })
            .collect();
        let m = score.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = score.iter().map(|&x| (x - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        let mut o_lat = vec![0f64; kv];
        for (&s, &ej) in ids.iter().zip(&e) {
            for (a, &y) in o_lat.iter_mut().zip(&latent[s as usize]) {
                *a += ej / sum * y as f64;
            }
        }
        // o = o_lat · W_UV[h]
        for d in 0..v {
            o.push(
                row(nope + d)
                    .iter()
                    .zip(&o_lat)
                    .map(|(&a, &b)| a as f64 * b)
                    .sum::<f64>() as f32,
            );
        }
    }
    w.linear(&format!("{p}self_attn.o_proj.weight"), &o)
}

/// SwiGLU through the linear layers `{at}.{gate,up,down}_proj` (FP8 ones quantise their inputs).
fn mlp(w: &ModelWeights, at: &str, x: &[f32]) -> Vec<f32> {
    let g = w.linear(&format!("{at}.gate_proj.weight"), x);
    let u = w.linear(&format!("{at}.up_proj.weight"), x);
    let a: Vec<f32> = g
        .iter()
        .zip(&u)
        .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
        .collect();
    w.linear(&format!("{at}.down_proj.weight"), &a)
}

/// One token through the loaded layers at position `cache.len()`: caches its rows, returns the
/// next token's logits and what each layer selected.
pub fn forward_token(
    w: &ModelWeights,
    cache: &mut SeqCache,
    token: u32,
    attention: Attention,
) -> TokenOut {
    let c = &w.config;
    let (hsz, kv, eps) = (
        c.hidden_size as usize,
        c.kv_lora_rank as usize,
        c.rms_norm_eps,
    );
    let nl = w.layers.len();
    if cache.latent.len() < nl {
        *cache = SeqCache {
            latent: vec![Vec::new(); nl],
            k_pe: vec![Vec::new(); nl],
            index_k: vec![Vec::new(); nl],
            stored: cache.stored,
        };
    }
    let pos = cache.len() as u32;
    let emb = w.w("model.embed_tokens.weight");
    let mut h: Vec<f32> = emb[token as usize * hsz..][..hsz].to_vec();
    let (mut topk, mut experts, mut attn) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ffn_in, mut ffn) = (Vec::new(), Vec::new());
    for (li, l) in w.layers.clone().enumerate() {
        let p = format!("model.layers.{l}.");
        let x = rms_norm(&h, w.w(&format!("{p}input_layernorm.weight")), eps);
        let qa = w.linear(&format!("{p}self_attn.q_a_proj.weight"), &x);
        let qr = rms_norm(&qa, w.w(&format!("{p}self_attn.q_a_layernorm.weight")), eps);
        let kv_a = w.linear(&format!("{p}self_attn.kv_a_proj_with_mqa.weight"), &x);
        let latent = rms_norm(
            &kv_a[..kv],
            w.w(&format!("{p}self_attn.kv_a_layernorm.weight")),
            eps,
        );
        let stored = cache.stored;
        cache.latent[li].push(stored_value(act_quant(&latent), stored, false));
        let k_pe = rope(&kv_a[kv..], pos, &w.inv_freq, RopeLayout::Interleaved);
        cache.k_pe[li].push(stored_value(k_pe, stored, true));
        let keys = (&mut cache.index_k[li], stored);
        let sel = indexer(w, &p, &x, &qr, keys, pos);
        let ids: Vec<i32> = match attention {
            Attention::Sparse => sel.clone(),
            Attention::Dense => (0..=pos as i32).collect(),
        };
        let a = mla(w, &p, &qr, &cache.latent[li], &cache.k_pe[li], &ids, pos);
        h.iter_mut().zip(&a).for_each(|(hv, av)| *hv += av);
        attn.push(a);
        topk.push(sel);
        let x = rms_norm(&h, w.w(&format!("{p}post_attention_layernorm.weight")), eps);
        let f = if c.is_moe(l) {
            let logits = w.linear(&format!("{p}mlp.gate.weight"), &x);
            let bias = w.w(&format!("{p}mlp.gate.e_score_correction_bias"));
            let (ex, wts) = route(
                &logits,
                bias,
                c.n_group as usize,
                c.topk_group as usize,
                c.num_experts_per_tok as usize,
                c.routed_scaling_factor,
            );
            let mut y = vec![0f64; hsz];
            for (&e, &we) in ex.iter().zip(&wts) {
                let o = mlp(w, &format!("{p}mlp.experts.{e}"), &x);
                y.iter_mut()
                    .zip(&o)
                    .for_each(|(a, &b)| *a += b as f64 * we as f64);
            }
            if c.n_shared_experts > 0 {
                let s = mlp(w, &format!("{p}mlp.shared_experts"), &x);
                y.iter_mut().zip(&s).for_each(|(a, &b)| *a += b as f64);
            }
            experts.push(ex);
            y.into_iter().map(|v| v as f32).collect()
        } else {
            experts.push(Vec::new());
            mlp(w, &format!("{p}mlp"), &x)
        };
        h.iter_mut().zip(&f).for_each(|(hv, fv)| *hv += fv);
        ffn_in.push(x);
        ffn.push(f);
    }
    let x = rms_norm(&h, w.w("model.norm.weight"), eps);
    let logits = w.linear(w.lm_head_name(), &x);
    TokenOut {
        logits,
        topk,
        experts,
        attn,
        ffn_in,
        ffn,
    }
}

/// Greedy generation on the CPU: the prompt token by token, then `new_tokens` argmax tokens
/// (the last one is chosen, not run). Returns the new tokens, every run token's output (the
/// prompt's, then decode steps 1 … N − 1) and the caches.
pub fn generate(
    w: &ModelWeights,
    prompt: &[u32],
    new_tokens: usize,
) -> (Vec<u32>, Vec<TokenOut>, SeqCache) {
    generate_stored(w, prompt, new_tokens, Dtype::F32)
}

/// [`generate`] with caches that hold their values as the engine's caches of `stored` do.
pub fn generate_stored(
    w: &ModelWeights,
    prompt: &[u32],
    new_tokens: usize,
    stored: Dtype,
) -> (Vec<u32>, Vec<TokenOut>, SeqCache) {
    assert!(!prompt.is_empty(), "a prompt of one token or more");
    let mut cache = SeqCache::stored_as(stored);
    let mut outs = Vec::new();
    for &t in prompt {
        outs.push(forward_token(w, &mut cache, t, Attention::Sparse));
    }
    let mut tokens = Vec::new();
    for i in 0..new_tokens {
        let next = argmax(&outs.last().expect("the prompt ran").logits);
        tokens.push(next);
        if i + 1 < new_tokens {
            outs.push(forward_token(w, &mut cache, next, Attention::Sparse));
        }
    }
    (tokens, outs, cache)
}

/// The index of the largest logit (the lowest on a tie).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}
