// lib/fp8.wgsl — e4m3 and bf16 values on their bits, as reference::fp8 defines them: composed in
// front of the kernels that write or read DeepSeek-V3.2's FP8 cache rows (fp8_quant.wgsl).

const BLOCK: u32 = 128u;   // values per scale

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

// bf16 bits of a finite x, rounded to nearest even.
fn bf16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

// The value of an e4m3 byte (the low 8 bits of `b`): (1 + m/8) · 2^(e−7), or m/8 · 2^-6 for
// e = 0; 0x7F / 0xFF are NaN.
fn e4m3_value(b: u32) -> f32 {
    let sign = (b & 0x80u) << 24u;
    let e = (b >> 3u) & 0xfu;
    let m = b & 7u;
    if (e == 15u && m == 7u) { return bitcast<f32>(sign | 0x7fc00000u); }
    if (e == 0u) { return bitcast<f32>(sign | bitcast<u32>(f32(m) * 0.001953125)); }   // m · 2^-9
    return bitcast<f32>(sign | ((e + 120u) << 23u) | (m << 20u));
}

// The value of bf16 bits (the low 16 bits of `h`).
fn bf16_value(h: u32) -> f32 {
    return bitcast<f32>((h & 0xffffu) << 16u);
}
