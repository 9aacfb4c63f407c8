// fp8_quant.wgsl — rows of f32 values into DeepSeek-V3.2's FP8 cache layout, byte for byte what
// reference::fp8::pack_latent_row (and pack_index_key, rope = 0) makes with ScaleRule::Ue8m0
// (entry point `main`), and back (`dequant`). The bit-level e4m3 and bf16 are lib/fp8.wgsl's.
//
//   row in:  x[0 .. KV) ‖ x[KV .. KV + ROPE)                                        (f32)
//   row out: e4m3(clamp(x / s_b, ±448)) for the KV values, b = block of 128 (the last may be
//            shorter); the scales s_b as f32; the ROPE values as bf16 (round to nearest even)
//   s_b = 2^ceil(log2(max(amax_b, 1e-4) · f32(1/448))), the ceiling read from the product's bits
//
// Every step is exact in f32 or done on integer bits, so the bytes do not depend on the GPU: the
// product amax · (1/448) is a correctly rounded f32 multiply (WGSL requires it), dividing by a
// power of two is multiplying by its exact reciprocal, e4m3 rounding is integer arithmetic on
// the f32 bits (normal range) or `round` (ties to even, WGSL requires it) of an exact multiple of
// 2^-9 (subnormal range), and bf16 rounding is integer arithmetic. (FlashMLA's amax / 448 rule
// divides, which WGSL computes to 2.5 ulp: it is a CPU option only.)
//
// Mapping: one workgroup of 128 threads per row (grid folded past 65,535). Blocks go four at a
// time, one per 32-thread group; a thread takes 4 consecutive values (one output word), the
// group's largest magnitude is reduced through workgroup memory, lane 0 writes the scale.
// The input values are finite (NaN is encoded as NaN, ±inf saturate; nothing makes them).

struct Params {
    rows: u32,
    kv: u32,          // values quantised, a multiple of 4
    rope: u32,        // values kept as bf16, even
    row_words: u32,   // u32 words of an output row: kv / 4 + ⌈kv / 128⌉ + rope / 2
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;          // [rows, kv + rope]
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;    // [rows, row_words]


var<workgroup> red: array<f32, 128>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= params.rows) { return; }   // uniform across the workgroup
    let kv = params.kv;
    let at = row * (kv + params.rope);
    let out = row * params.row_words;
    let blocks = (kv + BLOCK - 1u) / BLOCK;
    let g = lid / 32u;
    let lane = lid % 32u;
    for (var b0 = 0u; b0 < blocks; b0 += 4u) {   // uniform: every thread runs every round
        let bi = b0 + g;
        let i = bi * BLOCK + 4u * lane;   // this thread's first value
        let mine = bi < blocks && i < kv;
        var x = vec4<f32>(0.0);
        if (mine) { x = vec4<f32>(src[at + i], src[at + i + 1u], src[at + i + 2u], src[at + i + 3u]); }
        let ax = abs(x);
        red[lid] = max(max(ax.x, ax.y), max(ax.z, ax.w));
        workgroupBarrier();   // every thread's maximum in before the group reduces them
        for (var off = 16u; off > 0u; off >>= 1u) {
            if (lane < off) { red[lid] = max(red[lid], red[lid + off]); }
            workgroupBarrier();   // this step done before the next reads it
        }
        let sc = ue8m0(red[g * 32u]);   // lib/fp8.wgsl: (scale, 1 / scale)
        let s = sc.x;
        let inv_s = sc.y;
        workgroupBarrier();   // the maxima read before the next round overwrites them
        if (mine) {
            let q = clamp(x * inv_s, vec4<f32>(-448.0), vec4<f32>(448.0));
            let ix = fp8_row_at(kv, i);   // (the value's word, the block's scale word)
            packed[out + ix.x] = e4m3x4(q);
            if (lane == 0u) { packed[out + ix.y] = bitcast<u32>(s); }
        }
    }
    for (var j = lid; j < params.rope / 2u; j += 128u) {
        let x0 = src[at + kv + 2u * j];
        let x1 = src[at + kv + 2u * j + 1u];
        packed[out + fp8_row_at(kv, kv + 2u * j).x] = bf16(x0) | (bf16(x1) << 16u);
    }
}

// The inverse, for tests and readers: packed rows back to f32 values, `e4m3_value(byte) · s_b`
// and the bf16 values, one thread per value.
@group(0) @binding(3) var<storage, read_write> values: array<f32>;   // [rows, kv + rope]

@compute @workgroup_size(256)
fn dequant(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let width = params.kv + params.rope;
    let e = gid.x + gid.y * nwg.x * 256u;
    if (e >= params.rows * width) { return; }
    let at = (e / width) * params.row_words;
    let d = e % width;
    let ix = fp8_row_at(params.kv, d);   // lib/fp8.wgsl
    values[e] = fp8_row_value(params.kv, d, packed[at + ix.x], packed[at + ix.y]);
}
