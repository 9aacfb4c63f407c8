//! Plain-Rust CPU references for every kernel, written to be read: plain loops, f64 accumulation,
//! the model's variable names, a shape comment on every array. The GPU kernels are tested
//! against these, and these define the edge-case contract. [`lru`] is the exact-LRU policy of the
//! staging pool: the oracle the GPU resolve must equal.

pub mod fp8;
pub mod lru;
pub mod model;
pub use lru::{LruPool, Resolved};

/// One sequence's rows inside a row buffer (keys, scores or latent rows): rows `first_row .. first_row + len`.
#[derive(Clone, Copy, Debug)]
pub struct SeqRows {
    pub first_row: usize,
    pub len: usize,
}

/// Lightning indexer. `index_score[b, s] = Σ_j w[b, j] · ReLU(q[b, j, :] · k[first_row_b + s, :])`.
///
/// - `q`: `[B, H, D]`, `w`: `[B, H]`, `keys`: `[rows, D]` (values as the GPU sees them, i.e.
///   already rounded to f16 where the cache is f16).
/// - Returns `[B, score_stride]`; entries with `s ≥ T_b` are NaN (the kernel leaves them alone).
pub fn indexer(
    q: &[f32],
    w: &[f32],
    keys: &[f32],
    seqs: &[SeqRows],
    heads: usize,
    dim: usize,
    score_stride: usize,
) -> Vec<f32> {
    let mut index_score = vec![f32::NAN; seqs.len() * score_stride]; // [B, score_stride]
    for (b, sk) in seqs.iter().enumerate() {
        for s in 0..sk.len {
            let k = &keys[(sk.first_row + s) * dim..][..dim]; // [D]
            let mut total = 0.0f64;
            for j in 0..heads {
                let qj = &q[(b * heads + j) * dim..][..dim]; // [D]
                let dot: f64 = qj.iter().zip(k).map(|(&a, &c)| a as f64 * c as f64).sum();
                total += w[b * heads + j] as f64 * dot.max(0.0);
            }
            index_score[b * score_stride + s] = total as f32;
        }
    }
    index_score
}

/// Top-k of one row of scores: the indices of the `min(k, T)` largest, ordered by higher score
/// first and, among equal scores, lower index first; then `-1` up to length `k`.
pub fn topk(index_score: &[f32], k: usize) -> Vec<i32> {
    let mut order: Vec<usize> = (0..index_score.len()).collect(); // [T]
    order.sort_by(|&a, &b| index_score[b].total_cmp(&index_score[a]).then(a.cmp(&b)));
    let mut topk_indices = vec![-1i32; k]; // [k]
    for (slot, &s) in topk_indices.iter_mut().zip(&order) {
        *slot = s as i32;
    }
    topk_indices
}

/// Sparse MLA decode, absorbed mode.
///
/// - `q`: `[B, H, KV + ROPE]` = q_abs ‖ q_pe; `topk_indices`: `[B, k]` ids, `-1` skipped, id i of
///   sequence b naming row `first_rows[b] + i` of `rows`: `[R, KV + ROPE]` = c_kv ‖ k_pe.
/// - `score[h, s] = (q_abs[h]·c_kv[s] + q_pe[h]·k_pe[s]) · softmax_scale`;
///   `o_lat[h] = Σ_s softmax(score[h])_s · c_kv[s]`; `lse[h] = log Σ_s exp(score[h, s])`.
/// - A sequence with no valid id gives `o_lat = 0`, `lse = -inf`.
///
/// Returns (`o_lat` `[B, H, KV]`, `lse` `[B, H]`).
#[allow(clippy::too_many_arguments)]
pub fn sparse_mla(
    q: &[f32],
    topk_indices: &[i32],
    first_rows: &[usize],
    rows: &[f32],
    batch: usize,
    heads: usize,
    kv: usize,
    rope: usize,
    k: usize,
    softmax_scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let dq = kv + rope;
    let mut o_lat = vec![0.0f32; batch * heads * kv]; // [B, H, KV]
    let mut lse = vec![f32::NEG_INFINITY; batch * heads]; // [B, H]
    for b in 0..batch {
        let ids: Vec<usize> = topk_indices[b * k..][..k]
            .iter()
            .filter(|&&i| i >= 0)
            .map(|&i| first_rows[b] + i as usize)
            .collect();
        if ids.is_empty() {
            continue;
        }
        for h in 0..heads {
            let qh = &q[(b * heads + h) * dq..][..dq]; // [KV + ROPE]
            let score: Vec<f64> = ids
                .iter()
                .map(|&s| {
                    let row = &rows[s * dq..][..dq];
                    qh.iter()
                        .zip(row)
                        .map(|(&a, &c)| a as f64 * c as f64)
                        .sum::<f64>()
                        * softmax_scale as f64
                })
                .collect(); // [n_valid]
            let m = score.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = score.iter().map(|&x| (x - m).exp()).collect();
            let l: f64 = p.iter().sum();
            for d in 0..kv {
                let acc: f64 = ids
                    .iter()
                    .zip(&p)
                    .map(|(&s, &ps)| ps * rows[s * dq + d] as f64)
                    .sum();
                o_lat[(b * heads + h) * kv + d] = (acc / l) as f32;
            }
            lse[b * heads + h] = (m + l.ln()) as f32;
        }
    }
    (o_lat, lse)
}

/// Merge two partial results over disjoint id sets: `o0, o1`: `[rows, dim]`, `lse0, lse1`: `[rows]`.
/// Both empty (`-inf`) gives `o = 0`, `lse = -inf`.
pub fn lse_merge(
    o0: &[f32],
    lse0: &[f32],
    o1: &[f32],
    lse1: &[f32],
    dim: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut o = vec![0.0f32; o0.len()];
    let mut lse = vec![f32::NEG_INFINITY; lse0.len()];
    for r in 0..lse0.len() {
        let (a, c) = (lse0[r] as f64, lse1[r] as f64);
        let m = a.max(c);
        if m == f64::NEG_INFINITY {
            continue;
        }
        let (w0, w1) = ((a - m).exp(), (c - m).exp());
        for d in 0..dim {
            let i = r * dim + d;
            o[i] = ((w0 * o0[i] as f64 + w1 * o1[i] as f64) / (w0 + w1)) as f32;
        }
        lse[r] = (m + (w0 + w1).ln()) as f32;
    }
    (o, lse)
}

/// ESS's DA order of one sequence (`shaders/da_order.wgsl`): its k slot ids with the hits first,
/// then the misses (slots in `missed_slots`, the copy list's), then the −1s, each kind in its
/// top-k order; and how many hits lead.
pub fn da_order(slot_ids: &[i32], missed_slots: &[u32]) -> (Vec<i32>, u32) {
    let missed = |id: i32| missed_slots.contains(&(id as u32));
    let hits: Vec<i32> = slot_ids
        .iter()
        .copied()
        .filter(|&id| id >= 0 && !missed(id))
        .collect();
    let n = hits.len() as u32;
    let mut out = hits;
    out.extend(slot_ids.iter().copied().filter(|&id| id >= 0 && missed(id)));
    out.extend(slot_ids.iter().copied().filter(|&id| id < 0));
    (out, n)
}

/// `C[b, i, j] (+)= Σ_k A[b, i, k] · B[b, k, j]` in f64, with A and B given as f32 values already
/// rounded the way the kernels round them (to f16). `a`: `[batch, m, k]`, `b`: `[batch, k, n]`,
/// `c`: `[batch, m, n]` (read when `accumulate`).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Vec<f32> {
    let mut out = vec![0.0f32; batch * m * n]; // [batch, m, n]
    for bt in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for kk in 0..k {
                    acc += a[(bt * m + i) * k + kk] as f64 * b[(bt * k + kk) * n + j] as f64;
                }
                let at = (bt * m + i) * n + j;
                if accumulate {
                    acc += c[at] as f64;
                }
                out[at] = acc as f32;
            }
        }
    }
    out
}

/// The 32-bit hash of `shaders/lib/hash.wgsl` (lowbias32), bit for bit.
pub fn hash32(x: u32) -> u32 {
    let mut h = x;
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// Values of the synthetic row of `shaders/fill.wgsl`: `row(layer, b, token)[d]`, uniform in
/// [-scale, scale) from the hash of (salt, layer, b, token, d), `width` of them. Exact in f32, so
/// the GPU's stored rows (f16, f32 or FP8) are these values stored, byte for byte.
pub fn fill_row(salt: u32, layer: u32, b: u32, token: u32, width: usize, scale: f32) -> Vec<f32> {
    (0..width as u32)
        .map(|d| {
            let h = hash32(hash32(hash32(hash32(salt ^ layer) ^ b) ^ token) ^ d);
            ((h >> 8) as f32 / 16_777_216.0 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// What `shaders/digest.wgsl` adds to its slot for `data` (u32 words) at `step`: two wrapping
/// sums of per-word hashes of (bits, index, step). Exact: the GPU must give the same bits.
pub fn digest(data: &[u32], step: u32, salt: u32) -> [u32; 2] {
    let mut d = [0u32; 2];
    for (i, &x) in data.iter().enumerate() {
        let i = i as u32;
        d[0] = d[0].wrapping_add(hash32(hash32(hash32(x ^ salt) ^ i) ^ step));
        d[1] = d[1].wrapping_add(hash32(
            hash32(hash32(x ^ !salt).wrapping_add(i.wrapping_mul(0x9e37_79b9)))
                ^ step.wrapping_mul(0x85eb_ca6b),
        ));
    }
    d
}

/// One step of the synthetic queries' random walk (`shaders/walk.wgsl`): `q` in place.
pub fn walk_step(q: &mut [f32], salt: u32, layer: u32, walk_step: u32, rho: f32) {
    let keep = (1.0 - rho * rho).max(0.0).sqrt();
    for (i, x) in q.iter_mut().enumerate() {
        let h = hash32(hash32(hash32(salt ^ layer) ^ walk_step) ^ i as u32);
        let u = ((h >> 8) as f32 / 16_777_216.0 * 2.0 - 1.0) * 1.732_050_8;
        *x = rho * *x + keep * u;
    }
}

/// Step-to-step overlap of one sequence's top-k: `|prev ∩ cur| / max(|cur|, 1)` over the valid
/// (≥ 0) ids (`shaders/overlap.wgsl` sums it over steps ≥ 2).
pub fn topk_overlap(prev: &[i32], cur: &[i32]) -> f64 {
    let prev: std::collections::HashSet<i32> = prev.iter().copied().filter(|&t| t >= 0).collect();
    let cur: Vec<i32> = cur.iter().copied().filter(|&t| t >= 0).collect();
    let common = cur.iter().filter(|t| prev.contains(t)).count();
    common as f64 / cur.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_contract() {
        assert_eq!(topk(&[1.0, 3.0, 3.0, 2.0], 3), vec![1, 2, 3]);
        assert_eq!(topk(&[1.0, 2.0], 4), vec![1, 0, -1, -1]);
        assert_eq!(topk(&[], 2), vec![-1, -1]);
    }

    #[test]
    fn split_and_merge_equals_one_pass() {
        // rows 0..6, dims 2 + 0 rope; one head
        let rows: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let q = vec![0.5, -1.5];
        let all = sparse_mla(&q, &[0, 1, 2, 3, 4, 5], &[0], &rows, 1, 1, 2, 0, 6, 1.0);
        let a = sparse_mla(&q, &[0, 2, 4], &[0], &rows, 1, 1, 2, 0, 3, 1.0);
        let b = sparse_mla(&q, &[0, 2, 4], &[1], &rows, 1, 1, 2, 0, 3, 1.0);
        let (o, lse) = lse_merge(&a.0, &a.1, &b.0, &b.1, 2);
        for (x, y) in o.iter().zip(&all.0) {
            assert!((x - y).abs() < 1e-6);
        }
        assert!((lse[0] - all.1[0]).abs() < 1e-6);
        let empty = sparse_mla(&q, &[-1, -1], &[0], &rows, 1, 1, 2, 0, 2, 1.0);
        assert_eq!((empty.0, empty.1[0]), (vec![0.0, 0.0], f32::NEG_INFINITY));
    }
}
