//! Plain-Rust references of DeepSeek-V3.2's per-token operations (issue 15), in f64, following
//! DeepSeek's `inference/model.py` as fixed in November 2025: the norms, both RoPE layouts, the
//! Hadamard rotation of the indexer, the MoE router and SwiGLU. The whole forward built from
//! them is not here yet.

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
