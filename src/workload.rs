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

/// Bytes of `v` as stored on the GPU: f16 (two per u32, little end first) or f32.
pub fn storage_bytes(v: &[f32], dtype: crate::config::Dtype) -> Vec<u8> {
    match dtype {
        crate::config::Dtype::F16 => {
            let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            bytemuck::cast_slice(&h).to_vec()
        }
        crate::config::Dtype::F32 => bytemuck::cast_slice(v).to_vec(),
    }
}

/// The values `storage_bytes` stores, as f32.
pub fn stored_values(v: &[f32], dtype: crate::config::Dtype) -> Vec<f32> {
    match dtype {
        crate::config::Dtype::F16 => round_f16(v),
        crate::config::Dtype::F32 => v.to_vec(),
    }
}
