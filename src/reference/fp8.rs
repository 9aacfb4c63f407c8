//! FP8 e4m3 values and the block quantisation of DeepSeek-V3.2's production caches, in plain
//! Rust: the reference the GPU quantisers (issue 13) must equal byte for byte.
//!
//! **e4m3** (`float8_e4m3fn`): 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits, no
//! infinities. Normal values are `(1 + m/8) · 2^(e−7)` for e = 1 … 15, subnormals `m/8 · 2^-6`;
//! `0x7F` / `0xFF` are NaN, so the largest finite value is 448 (`0x7E`). Encoding rounds to
//! nearest, ties to even, and saturates to ±448 (CUDA's `cvt.rn.satfinite`, which the
//! quantiser's clamp makes moot); a NaN encodes as NaN with its sign.
//!
//! **Block quantisation** (`act_quant` in DeepSeek's inference code, `kernel.py`, after its
//! November 2025 fixes; the model rounds the MLA latent through it before caching, and
//! quantises the indexer's keys and queries with it): blocks of [`BLOCK`] values; `amax` is the
//! block's largest magnitude, floored at 1e-4; the scale is
//! - [`ScaleRule::Ue8m0`] (the model's `scale_fmt = "ue8m0"`): `2^ceil(log2(amax · (1/448)))`,
//!   the product taken in f32 and the ceiling read from its bits (exponent, plus one if any
//!   mantissa bit is set), so a scale is a power of two;
//! - [`ScaleRule::Amax`]: `amax / 448` (FlashMLA's test quantiser `quantize_k_cache`, offered as
//!   an option; FlashMLA divides in the input's dtype and has no floor, so an all-zero tile gives
//!   a NaN there: here the 1e-4 floor applies to both rules);
//!
//! and each value is stored as `e4m3(clamp(x / scale, −448, 448))`; it reads back as
//! `decode(byte) · scale`.
//!
//! **Layouts**: a latent row ([`pack_latent_row`], FlashMLA's "V32 FP8", 656 B at v32) is the
//! kv values as e4m3 bytes, then one little-endian f32 scale per 128 of them, padded with zero
//! words to a multiple of 4 scales ([`latent_scale_slots`]: at v32's 512 values there are
//! exactly 4, so nothing is padded; the small test models' rows stay 16-byte aligned for the
//! kernels' vector loads), then the rope values as little-endian bf16 (rounded to nearest even).
//! An indexer key ([`pack_index_key`], 132 B at v32) is its e4m3 bytes then one f32 scale.

/// Values per scale.
pub const BLOCK: usize = 128;
/// The largest finite e4m3 value.
pub const E4M3_MAX: f32 = 448.0;
/// The floor of a block's largest magnitude (no scale below 1e-4 / 448).
pub const AMAX_FLOOR: f32 = 1e-4;

/// How a block's scale is derived from its largest magnitude.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleRule {
    /// A power of two, `2^ceil(log2(amax / 448))`: DeepSeek-V3.2's rule for its caches.
    Ue8m0,
    /// `amax / 448`: FlashMLA's test quantiser.
    Amax,
}

/// The e4m3 byte of `x`: round to nearest even, saturate to ±448, NaN to NaN.
pub fn e4m3_encode(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    if x.is_nan() {
        return sign | 0x7F;
    }
    let a = x.abs() as f64; // every step below is exact in f64
    if a >= E4M3_MAX as f64 {
        return sign | 0x7E;
    }
    // the quantum of a's binade: 2^-9 below 2^-6 (subnormals), else 2^(floor(log2 a) − 3)
    let min_normal = 2f64.powi(-6);
    let quantum = if a < min_normal {
        2f64.powi(-9)
    } else {
        2f64.powi(binade(a) - 3)
    };
    let q = (a / quantum).round_ties_even(); // the value in quanta
    let v = q * quantum; // the rounded value, ≤ 448 since a < 448
    // re-derive the code from the rounded value (a carry into the next binade is handled here)
    let code = if v < min_normal {
        (v / 2f64.powi(-9)) as u8 // 0 … 7, or 8 = the smallest normal, the same code
    } else {
        let e = binade(v); // −6 … 8
        let m = (v / 2f64.powi(e - 3)) as u8 - 8; // 0 … 7
        (((e + 7) as u8) << 3) | m
    };
    sign | code
}

/// floor(log2 x) of a normal, positive f64, from its exponent bits.
fn binade(x: f64) -> i32 {
    ((x.to_bits() >> 52) & 0x7FF) as i32 - 1023
}

/// The value of an e4m3 byte.
pub fn e4m3_decode(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = ((b >> 3) & 0xF) as i32;
    let m = (b & 7) as f32;
    if e == 15 && b & 7 == 7 {
        return f32::from_bits(0x7FC0_0000 | ((b as u32 & 0x80) << 24)); // NaN, the byte's sign
    }
    let mag = if e == 0 {
        m * 2f32.powi(-9)
    } else {
        (8.0 + m) * 2f32.powi(e - 10)
    };
    sign * mag
}

/// The scale of a block under `rule` (its largest magnitude floored at [`AMAX_FLOOR`]).
pub fn block_scale(block: &[f32], rule: ScaleRule) -> f32 {
    let amax = block
        .iter()
        .fold(0f32, |m, x| m.max(x.abs()))
        .max(AMAX_FLOOR);
    match rule {
        ScaleRule::Ue8m0 => {
            // as the kernel does it: an f32 product, then ceil(log2) from its bits
            let inv = (1.0f64 / E4M3_MAX as f64) as f32;
            let bits = (amax * inv).to_bits();
            let exp = ((bits >> 23) & 0xFF) as i32 - 127 + (bits & 0x7F_FFFF != 0) as i32;
            f32::from_bits(((exp + 127) as u32) << 23)
        }
        ScaleRule::Amax => amax / E4M3_MAX,
    }
}

/// A block's e4m3 bytes under `scale`: `e4m3(clamp(x / scale, −448, 448))`.
pub fn quantize_with(block: &[f32], scale: f32) -> Vec<u8> {
    block
        .iter()
        .map(|&x| e4m3_encode((x / scale).clamp(-E4M3_MAX, E4M3_MAX)))
        .collect()
}

/// A block's e4m3 bytes and its scale.
pub fn quantize_block(block: &[f32], rule: ScaleRule) -> (Vec<u8>, f32) {
    let scale = block_scale(block, rule);
    (quantize_with(block, scale), scale)
}

/// The values a block of e4m3 bytes stands for under `scale`.
pub fn dequantize_block(bytes: &[u8], scale: f32) -> Vec<f32> {
    bytes.iter().map(|&b| e4m3_decode(b) * scale).collect()
}

/// f32 slots for the scales of a latent row of `kv` values: one per 128, rounded up to a
/// multiple of 4 (16 bytes; the slots past the scales hold zeros).
pub fn latent_scale_slots(kv: usize) -> usize {
    kv.div_ceil(BLOCK).next_multiple_of(4)
}

/// Bytes of a latent row of `kv` + `rope` values: kv e4m3, [`latent_scale_slots`] f32, rope
/// bf16 (656 at v32's 512 + 64).
pub fn latent_row_bytes(kv: usize, rope: usize) -> usize {
    kv + 4 * latent_scale_slots(kv) + 2 * rope
}

/// Bytes of an indexer key of `dim` values: dim e4m3, dim / 128 f32 scales (132 at v32's 128).
pub fn index_key_bytes(dim: usize) -> usize {
    dim + 4 * dim.div_ceil(BLOCK)
}

/// Values and scales of `x` in blocks of 128 (the last may be shorter): e4m3 bytes, then the
/// scales as little-endian f32 in `slots` slots (zeros past the scales).
fn pack_blocks(x: &[f32], rule: ScaleRule, slots: usize, out: &mut Vec<u8>) {
    let mut scales = Vec::new();
    for block in x.chunks(BLOCK) {
        let (bytes, scale) = quantize_block(block, rule);
        out.extend_from_slice(&bytes);
        scales.push(scale);
    }
    let pad = slots - scales.len();
    for s in scales.into_iter().chain(std::iter::repeat_n(0.0, pad)) {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// The inverse of [`pack_blocks`]: the `n` dequantised values at the start of `bytes`, and the
/// bytes after them.
fn unpack_blocks(bytes: &[u8], n: usize, slots: usize) -> (Vec<f32>, &[u8]) {
    let (values, rest) = bytes.split_at(n);
    let (scales, rest) = rest.split_at(4 * slots);
    let mut out = Vec::with_capacity(n);
    for (i, block) in values.chunks(BLOCK).enumerate() {
        let s = f32::from_le_bytes(scales[4 * i..4 * i + 4].try_into().unwrap());
        out.extend(dequantize_block(block, s));
    }
    (out, rest)
}

/// A latent row `c_kv ‖ k_pe` in FlashMLA's "V32 FP8" layout: `c_kv` as e4m3 bytes with one f32
/// scale per 128 values ([`latent_scale_slots`] slots), then `k_pe` as bf16.
pub fn pack_latent_row(c_kv: &[f32], k_pe: &[f32], rule: ScaleRule) -> Vec<u8> {
    let mut out = Vec::with_capacity(latent_row_bytes(c_kv.len(), k_pe.len()));
    pack_blocks(c_kv, rule, latent_scale_slots(c_kv.len()), &mut out);
    for &x in k_pe {
        out.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
    }
    out
}

/// The values a packed latent row stands for: `c_kv` (dequantised) ‖ `k_pe`, `kv` + `rope` of
/// them.
pub fn unpack_latent_row(bytes: &[u8], kv: usize, rope: usize) -> Vec<f32> {
    assert_eq!(bytes.len(), latent_row_bytes(kv, rope), "latent row size");
    let (mut out, rest) = unpack_blocks(bytes, kv, latent_scale_slots(kv));
    out.extend(
        rest.chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
    );
    out
}

/// An indexer key as e4m3 bytes with one f32 scale per 128 values.
pub fn pack_index_key(k: &[f32], rule: ScaleRule) -> Vec<u8> {
    let mut out = Vec::with_capacity(index_key_bytes(k.len()));
    pack_blocks(k, rule, k.len().div_ceil(BLOCK), &mut out);
    out
}

/// The values a packed indexer key of `dim` values stands for.
pub fn unpack_index_key(bytes: &[u8], dim: usize) -> Vec<f32> {
    assert_eq!(bytes.len(), index_key_bytes(dim), "index key size");
    unpack_blocks(bytes, dim, dim.div_ceil(BLOCK)).0
}

/// Rows of `dim` values quantised block by block ([`quantize_block`] under `rule`), as DeepSeek's
/// model quantises the indexer's queries (a row a head: 128 values, one scale) and keys. Returns
/// the e4m3 bytes `[rows, dim]` and the scales `[rows, ⌈dim / 128⌉]`.
pub fn quantize_rows(x: &[f32], dim: usize, rule: ScaleRule) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::with_capacity(x.len());
    let mut scales = Vec::new();
    for row in x.chunks(dim) {
        for block in row.chunks(BLOCK) {
            let (b, s) = quantize_block(block, rule);
            bytes.extend(b);
            scales.push(s);
        }
    }
    (bytes, scales)
}

/// The values of `x` after [`quantize_rows`] and back: what the FP8 kernels compute with (the
/// queries the FP8 indexer quantises, the keys and latent values it stores).
pub fn round_rows(x: &[f32], dim: usize, rule: ScaleRule) -> Vec<f32> {
    let (bytes, scales) = quantize_rows(x, dim, rule);
    let blocks_per_row = dim.div_ceil(BLOCK);
    bytes
        .chunks(dim)
        .enumerate()
        .flat_map(|(r, row)| {
            let s = &scales[r * blocks_per_row..][..blocks_per_row];
            row.chunks(BLOCK)
                .zip(s)
                .flat_map(|(block, &scale)| dequantize_block(block, scale))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The FP8 key cache of `keys` (`[R, dim]`, dim ≤ 128): the R keys' e4m3 bytes, then their R
/// scales as little-endian f32, then zeros to a multiple of 16 bytes, as DeepGEMM's
/// `fp8_mqa_logits` takes the cache (`k_fp8 [R, dim]`, `k_scale [R]`): 4 + dim bytes a key
/// (132 at v32), the values 16-byte aligned. Key r is [`pack_index_key`] of row r, split.
pub fn pack_index_cache(keys: &[f32], dim: usize, rule: ScaleRule) -> Vec<u8> {
    assert!(dim <= BLOCK, "one scale a key: dim ≤ {BLOCK}");
    let (mut out, scales) = quantize_rows(keys, dim, rule);
    for s in scales {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(16), 0);
    out
}

/// The values an FP8 key cache of `dim`-value keys stands for, `[R, dim]`: the inverse of
/// [`pack_index_cache`] (R from the length, the padding after the scales ignored).
pub fn unpack_index_cache(bytes: &[u8], dim: usize) -> Vec<f32> {
    let rows = bytes.len() / (dim + 4);
    let (values, scales) = bytes.split_at(rows * dim);
    values
        .chunks_exact(dim)
        .zip(scales.chunks_exact(4))
        .flat_map(|(key, s)| dequantize_block(key, f32::from_le_bytes(s.try_into().unwrap())))
        .collect()
}

/// The FP8 lightning indexer as DeepSeek's `fp8_index` computes it, for one key row:
/// `index_score = k_s · Σ_h (w_h · q_s_h) · ReLU(Σ_d q̂[h, d] · k̂[d])`, with `q̂`, `k̂` the e4m3
/// values (`q`: `[H, D]` bytes, one scale a head; `k`: `[D]` bytes, one scale), the sums in f64
/// here (f32 in the model's kernel). `w` are the head weights with the model's scales folded in,
/// as [`crate::reference::indexer`] takes them. Since the scales are positive and ReLU commutes
/// with them, this equals [`crate::reference::indexer`] on the dequantised q and k (a test says
/// so), which is how the kernels' tests use it.
pub fn fp8_index_score(q: &[u8], q_s: &[f32], w: &[f32], k: &[u8], k_s: f32) -> f64 {
    let dim = k.len();
    let mut total = 0.0f64;
    for (h, (&wh, &qs)) in w.iter().zip(q_s).enumerate() {
        let qh = &q[h * dim..][..dim];
        let dot: f64 = qh
            .iter()
            .zip(k)
            .map(|(&a, &b)| e4m3_decode(a) as f64 * e4m3_decode(b) as f64)
            .sum();
        total += wh as f64 * qs as f64 * dot.max(0.0);
    }
    k_s as f64 * total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nearest finite e4m3 code to `x` by search over all of them, ties to the even code
    /// (an even mantissa): an oracle independent of [`e4m3_encode`]'s arithmetic.
    fn nearest(x: f32) -> u8 {
        let sign = if x.is_sign_negative() { 0x80 } else { 0 };
        let a = x.abs().min(E4M3_MAX) as f64;
        let mut best = 0u8;
        let mut best_d = f64::INFINITY;
        for code in 0u8..=0x7E {
            let d = (e4m3_decode(code) as f64 - a).abs();
            if d < best_d || (d == best_d && code % 2 == 0) {
                best = code;
                best_d = d;
            }
        }
        sign | best
    }

    #[test]
    fn every_code_reads_back_as_itself() {
        for b in 0u8..=255 {
            if b & 0x7F == 0x7F {
                assert!(e4m3_decode(b).is_nan());
                assert_eq!(e4m3_encode(e4m3_decode(b)), b, "NaN keeps its sign");
                continue;
            }
            assert_eq!(e4m3_encode(e4m3_decode(b)), b, "code {b:#04x}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(e4m3_encode(0.0), 0x00);
        assert_eq!(e4m3_encode(-0.0), 0x80);
        assert_eq!(e4m3_encode(1.0), 0x38);
        assert_eq!(e4m3_encode(-2.0), 0xC0);
        assert_eq!(e4m3_encode(448.0), 0x7E);
        assert_eq!(e4m3_encode(-448.0), 0xFE);
        assert_eq!(e4m3_encode(2f32.powi(-9)), 0x01); // the smallest subnormal
        assert_eq!(e4m3_encode(2f32.powi(-6)), 0x08); // the smallest normal
        assert_eq!(e4m3_encode(1e6), 0x7E); // saturates
        assert_eq!(e4m3_encode(f32::INFINITY), 0x7E);
        assert_eq!(e4m3_encode(f32::NEG_INFINITY), 0xFE);
        assert_eq!(e4m3_decode(0x7E), 448.0);
        assert_eq!(e4m3_decode(0x01), 2f32.powi(-9));
    }

    #[test]
    fn ties_go_to_even() {
        // halfway between 0 and the smallest subnormal: to 0
        assert_eq!(e4m3_encode(2f32.powi(-10)), 0x00);
        // halfway between subnormals 1 and 2 (2^-9, 2^-8): to 2
        assert_eq!(e4m3_encode(3.0 * 2f32.powi(-10)), 0x02);
        // halfway between 1.0 (m 0) and 1.125 (m 1): to 1.0; between 1.125 and 1.25: to 1.25
        assert_eq!(e4m3_encode(1.0625), 0x38);
        assert_eq!(e4m3_encode(1.1875), 0x3A);
        // halfway between 448 and (the NaN slot's) 480: to 448
        assert_eq!(e4m3_encode(464.0), 0x7E);
        // just under the smallest normal, rounding up into it
        assert_eq!(e4m3_encode(2f32.powi(-6) - 2f32.powi(-12)), 0x08);
    }

    #[test]
    fn encode_is_the_nearest_code() {
        // every f16 value in range, both signs: a dense sweep across all binades and subnormals
        for bits in 0u16..=0x7BFF {
            let x = half::f16::from_bits(bits).to_f32();
            for x in [x, -x] {
                assert_eq!(e4m3_encode(x), nearest(x), "x = {x:e}");
            }
        }
    }

    #[test]
    fn ue8m0_scales_are_powers_of_two_that_fit_the_block() {
        let mut rng = crate::workload::Rng::new(5);
        for i in 0..2000 {
            let mag = 2f32.powi(i % 40 - 20);
            let block: Vec<f32> = (0..BLOCK).map(|_| rng.range(-mag, mag)).collect();
            let s = block_scale(&block, ScaleRule::Ue8m0);
            assert_eq!(s.to_bits() & 0x7F_FFFF, 0, "a power of two: {s:e}");
            let amax = block
                .iter()
                .fold(0f32, |m, x| m.max(x.abs()))
                .max(AMAX_FLOOR);
            // the smallest power of two ≥ amax / 448, up to the rounding of the f32 product
            assert!(amax / s <= E4M3_MAX * (1.0 + 1e-6), "{amax:e} / {s:e}");
            assert!(amax / s > E4M3_MAX / 2.0 * (1.0 - 1e-6), "{amax:e} / {s:e}");
        }
        // an all-zero block: amax floored at 1e-4, 1e-4 / 448 = 2^-22.1, so 2^-22; bytes all 0
        let (bytes, s) = quantize_block(&[0.0; BLOCK], ScaleRule::Ue8m0);
        assert_eq!(s, 2f32.powi(-22));
        assert!(bytes.iter().all(|&b| b == 0));
        // amax exactly 448 · 2^k: 448 · f32(1/448) rounds to exactly 1, so the scale is 2^k
        assert_eq!(block_scale(&[448.0], ScaleRule::Ue8m0), 1.0);
        assert_eq!(block_scale(&[-3584.0], ScaleRule::Ue8m0), 8.0);
    }

    #[test]
    fn quantisation_error_is_within_half_a_step() {
        let mut rng = crate::workload::Rng::new(6);
        for rule in [ScaleRule::Ue8m0, ScaleRule::Amax] {
            for _ in 0..200 {
                let block: Vec<f32> = (0..BLOCK).map(|_| rng.range(-3.0, 3.0)).collect();
                let (bytes, s) = quantize_block(&block, rule);
                for (&x, &y) in block.iter().zip(&dequantize_block(&bytes, s)) {
                    // a normal e4m3 value is off by at most 2^-4 of itself; a subnormal by
                    // half its step, 2^-10 · s
                    let bound = (x.abs() * 2f32.powi(-4)).max(2f32.powi(-10) * s) * (1.0 + 1e-6);
                    assert!((x - y).abs() <= bound, "{rule:?}: {x} → {y} (scale {s:e})");
                }
            }
        }
    }

    #[test]
    fn fp8_index_equals_the_indexer_on_dequantised_values() {
        use crate::reference::{SeqRows, indexer};
        let (heads, dim, n) = (8, 128, 50);
        let mut rng = crate::workload::Rng::new(8);
        let q: Vec<f32> = rng.vec(heads * dim);
        let w: Vec<f32> = rng.vec(heads);
        let keys: Vec<f32> = (0..n * dim)
            .map(|i| rng.range(-1.0, 1.0) * (1 + i % 7) as f32)
            .collect();
        let (qb, qs) = quantize_rows(&q, dim, ScaleRule::Ue8m0);
        let (kb, ks) = quantize_rows(&keys, dim, ScaleRule::Ue8m0);
        let deq = |b: &[u8], s: &[f32]| -> Vec<f32> {
            b.chunks(BLOCK)
                .zip(s)
                .flat_map(|(c, &s)| dequantize_block(c, s))
                .collect()
        };
        let seqs = [SeqRows {
            first_row: 0,
            len: n,
        }];
        let want = indexer(&deq(&qb, &qs), &w, &deq(&kb, &ks), &seqs, heads, dim, n);
        for t in 0..n {
            let got = fp8_index_score(&qb, &qs, &w, &kb[t * dim..][..dim], ks[t]);
            let tol = 1e-6 * (1.0 + want[t].abs() as f64);
            assert!(
                (got - want[t] as f64).abs() <= tol,
                "key {t}: {got} vs {}",
                want[t]
            );
        }
    }

    #[test]
    fn latent_row_layout() {
        assert_eq!(latent_row_bytes(512, 64), 656);
        assert_eq!(index_key_bytes(128), 132);
        let mut rng = crate::workload::Rng::new(7);
        let c_kv: Vec<f32> = (0..512)
            .map(|i| rng.range(-1.0, 1.0) * (1 + i / 128) as f32)
            .collect();
        let k_pe: Vec<f32> = rng.vec(64);
        let row = pack_latent_row(&c_kv, &k_pe, ScaleRule::Ue8m0);
        assert_eq!(row.len(), 656);
        // byte 512 .. 528: the four scales, in block order; 528 ..: k_pe as bf16
        for t in 0..4 {
            let s = f32::from_le_bytes(row[512 + 4 * t..516 + 4 * t].try_into().unwrap());
            assert_eq!(
                s,
                block_scale(&c_kv[128 * t..128 * (t + 1)], ScaleRule::Ue8m0)
            );
            assert_eq!(
                &row[128 * t..128 * (t + 1)],
                &quantize_with(&c_kv[128 * t..128 * (t + 1)], s)[..]
            );
        }
        let back = unpack_latent_row(&row, 512, 64);
        for (i, &x) in k_pe.iter().enumerate() {
            assert_eq!(back[512 + i], half::bf16::from_f32(x).to_f32());
        }
        let key = pack_index_key(&k_pe.repeat(2), ScaleRule::Ue8m0);
        assert_eq!(key.len(), 132);
        assert_eq!(unpack_index_key(&key, 128).len(), 128);
    }

    /// The key cache reads back as its keys quantised and back, whatever its padding (7 keys of
    /// 96 values: 700 bytes, padded to 704).
    #[test]
    fn index_cache_reads_back() {
        let keys = crate::workload::Rng::new(8).vec(7 * 96);
        let cache = pack_index_cache(&keys, 96, ScaleRule::Ue8m0);
        assert_eq!(cache.len(), 704);
        let back = unpack_index_cache(&cache, 96);
        let want = round_rows(&keys, 96, ScaleRule::Ue8m0);
        assert!(
            back.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        assert_eq!(back.len(), want.len());
    }
}
