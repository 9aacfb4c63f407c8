// lib/f16_round.wgsl — f32 to f16 on the bits, rounded to nearest even, the same on every
// driver: pack2x16float's rounding is the driver's (NVIDIA's differs from lavapipe's and from
// half::f16::from_f32, which the CPU reference uses, by an ulp). Subnormals, overflow to
// infinity and NaN as IEEE 754. Composed in front of the kernels that store f16 rows
// (fill.wgsl) or round values as an f16 cache holds them (model_ops.wgsl).

// The f16 bits of x, in the low 16 bits.
fn f16_bits(x: f32) -> u32 {
    let u = bitcast<u32>(x);
    let sign = (u >> 16u) & 0x8000u;
    let a = u & 0x7fffffffu;
    if (a > 0x7f800000u) { return sign | 0x7e00u; }      // NaN
    if (a >= 0x477ff000u) { return sign | 0x7c00u; }     // ≥ 65520 rounds to infinity
    if (a >= 0x38800000u) {                              // f16's normals, ≥ 2^-14
        let r = a + 0xfffu + ((a >> 13u) & 1u);
        return sign | ((r - 0x38000000u) >> 13u);
    }
    if (a <= 0x33000000u) { return sign; }               // ≤ 2^-25: zero (2^-25 ties to even)
    // subnormals: the 24-bit significand m times 2^(E − 126), to nearest even
    let m = (a & 0x7fffffu) | 0x800000u;
    let s = 126u - (a >> 23u);
    let q = m >> s;
    let rem = m & ((1u << s) - 1u);
    let half = 1u << (s - 1u);
    let up = (rem > half) | ((rem == half) & ((q & 1u) == 1u));
    return sign | (q + u32(up));
}

// Two values as an f16 pair (a in the low half).
fn pack_f16(a: f32, b: f32) -> u32 {
    return f16_bits(a) | (f16_bits(b) << 16u);
}

// x as an f16 holds it.
fn round_f16_value(x: f32) -> f32 {
    return unpack2x16float(f16_bits(x)).x;
}
