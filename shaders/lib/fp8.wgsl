// lib/fp8.wgsl — e4m3 and bf16 values on their bits, as reference::fp8 defines them: composed in
// front of the kernels that write or read DeepSeek-V3.2's FP8 cache rows (fp8_quant.wgsl).

const BLOCK: u32 = 128u;   // values per scale
const INV_448: f32 = 0.002232142857142857;   // f32(1 / 448), as the reference's constant

// A block's scale from its largest magnitude, and its inverse: s = 2^e, e = ceil(log2(max(amax,
// 1e-4) · (1/448))) read from the f32 product's bits (a correctly rounded multiply); 1/s exact.
fn ue8m0(amax: f32) -> vec2<f32> {
    let p = bitcast<u32>(max(amax, 1e-4) * INV_448);
    let e = i32((p >> 23u) & 0xffu) - 127 + select(0, 1, (p & 0x7fffffu) != 0u);
    return vec2<f32>(bitcast<f32>(u32(e + 127) << 23u), bitcast<f32>(u32(127 - e) << 23u));
}

// The e4m3 byte of v (|v| ≤ 448 after the clamp): round to nearest even.
fn e4m3(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    let sign = (b >> 24u) & 0x80u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) { return sign | 0x7fu; }   // NaN
    if (a >= 0x43e00000u) { return sign | 0x7eu; }  // 448 and up
    if (a < 0x3c800000u) {                          // below 2^-6: subnormal, steps of 2^-9
        return sign | u32(round(bitcast<f32>(a) * 512.0));   // 0 … 8 (8: the smallest normal)
    }
    // keep 3 mantissa bits, rounding to nearest even (a carry moves into the exponent); the
    // e4m3 exponent is the f32 one less 120
    let r = (a + 0x7ffffu + ((a >> 20u) & 1u)) >> 20u;
    return sign | min(r - (120u << 3u), 0x7eu);
}

// Four e4m3 bytes in one word, the first in the low byte.
fn e4m3x4(v: vec4<f32>) -> u32 {
    return e4m3(v.x) | (e4m3(v.y) << 8u) | (e4m3(v.z) << 16u) | (e4m3(v.w) << 24u);
}

// bf16 bits of a finite x, rounded to nearest even.
fn bf16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

// The 4 values of a word of e4m3 bytes (e4m3x4 packs them), the first from the low byte: what
// the kernels read FP8 caches with, branch-free. The magnitude's 7 bits shifted into an f32
// (exponent and mantissa in place) and the exponent rebiased by 120 give a normal value exactly;
// a subnormal byte (exponent 0: m · 2^-9) is rebiased by 121 instead, reading 2^-6 · (1 + m/8),
// and 2^-6 is subtracted (exact). Nothing is ever an f32 or f16 subnormal on the way, so no
// flush-to-zero can touch it. (The NaN bytes 0x7F / 0xFF, which the quantiser never writes,
// read as ±480 here; reference::fp8::e4m3_decode reads them as NaN.)
fn e4m3x4_values(word: u32) -> vec4<f32> {
    let b = (vec4<u32>(word) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
    let mag = b & vec4<u32>(0x7fu);
    let sub = mag < vec4<u32>(8u);
    let bias = select(vec4<u32>(120u << 23u), vec4<u32>(121u << 23u), sub);
    let v = bitcast<vec4<f32>>((mag << vec4<u32>(20u)) + bias) - select(vec4<f32>(0.0), vec4<f32>(0.015625), sub);
    return select(v, -v, b >= vec4<u32>(0x80u));
}

// Two e4m3 bytes (the low two of `w`) as two f16 whose values are the e4m3 values · 2^-8, by
// placing bits alone (sign, then exponent and mantissa shifted into f16's, which has 8 more
// exponent bias): 9 integer operations for 2 values, the cheapest decoding WGSL allows (CUDA has
// one instruction for it, cvt.rn.f16x2.e4m3x2). An e4m3 subnormal becomes an f16 subnormal, which
// what reads it must keep (unpack2x16float): exact where f16 subnormals are kept, as on NVIDIA's
// GPUs, where the coop kernels that use it run (tests/kernels.rs feeds them every e4m3 code).
fn e4m3x2_f16_bits(w: u32) -> u32 {
    let l = (w & 0xffu) | ((w & 0xff00u) << 8u);   // one byte a 16-bit lane
    return ((l & 0x007f007fu) << 7u) | ((l & 0x00800080u) << 8u);
}

// The value of bf16 bits (the low 16 bits of `h`).
fn bf16_value(h: u32) -> f32 {
    return bitcast<f32>((h & 0xffffu) << 16u);
}

// Where value d of a packed row (kv e4m3 bytes, `slots` f32 scale slots of which the first
// ⌈kv / 128⌉ hold scales, rope bf16) lives, in u32 words from the row's start: (the value's word,
// its scale's word; for a bf16 value the second is unused), and the row's length in words (kv a
// multiple of 4, rope even). Latent rows round their slots up to a multiple of 4
// (reference::fp8::latent_scale_slots), indexer keys do not.
fn fp8_latent_slots(kv: u32) -> u32 { return ((kv + BLOCK - 1u) / BLOCK + 3u) / 4u * 4u; }

fn fp8_row_words(kv: u32, slots: u32, rope: u32) -> u32 {
    return kv / 4u + slots + rope / 2u;
}

fn fp8_row_at(kv: u32, slots: u32, d: u32) -> vec2<u32> {
    if (d < kv) { return vec2<u32>(d / 4u, kv / 4u + d / BLOCK); }
    return vec2<u32>(kv / 4u + slots + (d - kv) / 2u, 0u);
}

// Where word w of packed row `row` (`row_words` words) goes: rows one after another
// (cache_rows = 0), or the FP8 key cache of `cache_rows` rows of kv values and one scale each
// (lib/indexer_io.wgsl: the values at row · kv / 4, the scale after all of them).
fn fp8_word_at(row: u32, w: u32, row_words: u32, kv: u32, cache_rows: u32) -> u32 {
    if (cache_rows == 0u) { return row * row_words + w; }
    if (w < kv / 4u) { return row * (kv / 4u) + w; }
    return cache_rows * (kv / 4u) + row;
}

// Value d of a packed row, given the two words fp8_row_at named.
fn fp8_row_value(kv: u32, d: u32, word: u32, scale_word: u32) -> f32 {
    if (d < kv) { return e4m3x4_values(word)[d % 4u] * bitcast<f32>(scale_word); }
    return bf16_value(word >> (16u * ((d - kv) % 2u)));
}
