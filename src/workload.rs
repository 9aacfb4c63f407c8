//! Seeded inputs. No GPU here: a small SplitMix64 generator (reproducible across platforms and
//! releases, unlike a crate's default RNG) and helpers for f16 storage.

use half::f16;

/// SplitMix64: tiny, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The generator as it is after `n` more draws (each draw adds one constant to the state),
    /// without drawing them: a stream of values cut into pieces drawn in parallel.
    pub fn skip(&self, n: u64) -> Rng {
        Rng(self.0.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// `n` values uniform in [-1, 1).
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.range(-1.0, 1.0)).collect()
    }
}

/// Round every value to f16 and back: what the GPU sees of an f16 cache.
pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// How a cache's values make rows: latent rows (`kv` values, then `rope`) or indexer keys of
/// `dim` values. Only the FP8 layout tells them apart ([`crate::reference::fp8`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowLayout {
    Latent { kv: usize, rope: usize },
    Key { dim: usize },
}

impl RowLayout {
    /// Values a row.
    pub fn width(self) -> usize {
        match self {
            RowLayout::Latent { kv, rope } => kv + rope,
            RowLayout::Key { dim } => dim,
        }
    }
}

/// Bytes of `v` (whole rows of `layout`) as stored on the GPU: f16 (two per u32, little end
/// first), f32, or FP8 (latent rows packed one after another; keys as the FP8 key cache,
/// [`crate::reference::fp8::pack_index_cache`]), always with DeepSeek's ue8m0 rule.
pub fn storage_bytes(v: &[f32], dtype: crate::config::Dtype, layout: RowLayout) -> Vec<u8> {
    use crate::reference::fp8::{ScaleRule, pack_index_cache, pack_latent_row};
    match (dtype, layout) {
        (crate::config::Dtype::F16, _) => {
            let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            bytemuck::cast_slice(&h).to_vec()
        }
        (crate::config::Dtype::F32, _) => bytemuck::cast_slice(v).to_vec(),
        (crate::config::Dtype::Fp8, RowLayout::Latent { kv, rope }) => v
            .chunks(kv + rope)
            .flat_map(|r| pack_latent_row(&r[..kv], &r[kv..], ScaleRule::Ue8m0))
            .collect(),
        (crate::config::Dtype::Fp8, RowLayout::Key { dim }) => {
            pack_index_cache(v, dim, ScaleRule::Ue8m0)
        }
    }
}

/// The bytes of the indexer's queries `q` (`[B, H, dim]`) for keys stored as `key_dtype`: f32,
/// or for FP8 keys quantised as the model does before its `fp8_index` (one ue8m0 scale a head)
/// into the FP8 key cache's layout ([`crate::kernels::indexer::IndexerArgs::q`]).
pub fn query_bytes(q: &[f32], dim: usize, key_dtype: crate::config::Dtype) -> Vec<u8> {
    match key_dtype {
        crate::config::Dtype::Fp8 => storage_bytes(q, key_dtype, RowLayout::Key { dim }),
        _ => bytemuck::cast_slice(q).to_vec(),
    }
}

/// The values stored rows stand for: the inverse of [`storage_bytes`] (whole rows; an FP8 key
/// cache of R keys is R · (dim + 4) bytes, padding after it ignored).
pub fn values_of(bytes: &[u8], dtype: crate::config::Dtype, layout: RowLayout) -> Vec<f32> {
    use crate::reference::fp8::{latent_row_bytes, unpack_index_cache, unpack_latent_row};
    match (dtype, layout) {
        (crate::config::Dtype::F16, _) => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        (crate::config::Dtype::F32, _) => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (crate::config::Dtype::Fp8, RowLayout::Latent { kv, rope }) => bytes
            .chunks_exact(latent_row_bytes(kv, rope))
            .flat_map(|r| unpack_latent_row(r, kv, rope))
            .collect(),
        (crate::config::Dtype::Fp8, RowLayout::Key { dim }) => unpack_index_cache(bytes, dim),
    }
}

/// The values `storage_bytes` stores, as f32 (FP8: what the packed rows stand for).
pub fn stored_values(v: &[f32], dtype: crate::config::Dtype, layout: RowLayout) -> Vec<f32> {
    use crate::reference::fp8::{ScaleRule, round_rows};
    match (dtype, layout) {
        (crate::config::Dtype::F16, _) => round_f16(v),
        (crate::config::Dtype::F32, _) => v.to_vec(),
        (crate::config::Dtype::Fp8, RowLayout::Latent { kv, rope }) => v
            .chunks(kv + rope)
            .flat_map(|r| {
                let mut out = round_rows(&r[..kv], kv, ScaleRule::Ue8m0);
                out.extend(r[kv..].iter().map(|&x| half::bf16::from_f32(x).to_f32()));
                out
            })
            .collect(),
        (crate::config::Dtype::Fp8, RowLayout::Key { dim }) => round_rows(v, dim, ScaleRule::Ue8m0),
    }
}

/// The next step's selection of `k` distinct token ids from `[0, len)`, about `overlap · k` of
/// them (0 ≤ overlap ≤ 1) taken from `prev`, the rest fresh, in shuffled order. Models the
/// step-to-step temporal locality of real top-k sets (BRIEF.md §3).
pub fn next_selection(rng: &mut Rng, prev: &[i32], len: usize, k: usize, overlap: f32) -> Vec<i32> {
    let k = k.min(len);
    let mut chosen = std::collections::HashSet::with_capacity(k);
    let mut out = Vec::with_capacity(k);
    let keep = ((overlap.clamp(0.0, 1.0) * k as f32).round() as usize).min(prev.len());
    let mut pool: Vec<i32> = prev
        .iter()
        .copied()
        .filter(|&t| t >= 0 && (t as usize) < len)
        .collect();
    for i in 0..keep.min(pool.len()) {
        let j = i + rng.below((pool.len() - i) as u64) as usize;
        pool.swap(i, j);
        if chosen.insert(pool[i]) {
            out.push(pool[i]);
        }
    }
    while out.len() < k {
        let t = rng.below(len as u64) as i32;
        if chosen.insert(t) {
            out.push(t);
        }
    }
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}
