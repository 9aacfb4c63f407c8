// lib/fp8_pack.wgsl — one row of values packed into the FP8 layout by a workgroup of 128 threads,
// byte for byte what reference::fp8::pack_latent_row (and pack_index_key: rope 0, slots =
// ⌈kv / 128⌉) makes with ScaleRule::Ue8m0. Composed after lib/fp8.wgsl and before the unit that
// uses it (fp8_quant.wgsl, fill.wgsl), which defines where the values come from and where the
// words go:
//
//   fn fp8_src(src: vec2<u32>, i: u32) -> f32       value i of the row `src` names (finite)
//   fn fp8_dst(dst: u32, w: u32, word: u32)         word w of the packed row `dst` names
//
//   e4m3(clamp(x / s_b, ±448)) for the kv values, b = block of 128 (the last may be shorter);
//   the scales s_b as f32, zeros in the slots past them; the rope values as bf16 (nearest even)
//   s_b = 2^ceil(log2(max(amax_b, 1e-4) · f32(1/448))), the ceiling read from the product's bits
//
// Every step is exact in f32 or done on integer bits, so the bytes do not depend on the GPU: the
// product amax · (1/448) is a correctly rounded f32 multiply (WGSL requires it), dividing by a
// power of two is multiplying by its exact reciprocal, e4m3 rounding is integer arithmetic on
// the f32 bits (normal range) or `round` (ties to even, WGSL requires it) of an exact multiple of
// 2^-9 (subnormal range), and bf16 rounding is integer arithmetic. (FlashMLA's amax / 448 rule
// divides, which WGSL computes to 2.5 ulp: it is a CPU option only.)
//
// Blocks go four at a time, one per 32-thread group; a thread takes 4 consecutive values (one
// output word), the group's largest magnitude is reduced through workgroup memory, lane 0 writes
// the scale. Every thread of the workgroup must call it (it has barriers).

var<workgroup> fp8_red: array<f32, 128>;

fn fp8_pack(lid: u32, src: vec2<u32>, dst: u32, kv: u32, slots: u32, rope: u32) {
    let blocks = (kv + BLOCK - 1u) / BLOCK;
    let g = lid / 32u;
    let lane = lid % 32u;
    for (var b0 = 0u; b0 < blocks; b0 += 4u) {   // uniform: every thread runs every round
        let bi = b0 + g;
        let i = bi * BLOCK + 4u * lane;   // this thread's first value
        let mine = bi < blocks && i < kv;
        var x = vec4<f32>(0.0);
        if (mine) { x = vec4<f32>(fp8_src(src, i), fp8_src(src, i + 1u), fp8_src(src, i + 2u), fp8_src(src, i + 3u)); }
        let ax = abs(x);
        fp8_red[lid] = max(max(ax.x, ax.y), max(ax.z, ax.w));
        workgroupBarrier();   // every thread's maximum in before the group reduces them
        for (var off = 16u; off > 0u; off >>= 1u) {
            if (lane < off) { fp8_red[lid] = max(fp8_red[lid], fp8_red[lid + off]); }
            workgroupBarrier();   // this step done before the next reads it
        }
        let sc = ue8m0(fp8_red[g * 32u]);   // lib/fp8.wgsl: (scale, 1 / scale)
        workgroupBarrier();   // the maxima read before the next round overwrites them
        if (mine) {
            let q = clamp(x * sc.y, vec4<f32>(-448.0), vec4<f32>(448.0));
            let ix = fp8_row_at(kv, slots, i);   // (the value's word, the block's scale word)
            fp8_dst(dst, ix.x, e4m3x4(q));
            if (lane == 0u) { fp8_dst(dst, ix.y, bitcast<u32>(sc.x)); }
        }
    }
    for (var j = blocks + lid; j < slots; j += 128u) { fp8_dst(dst, kv / 4u + j, 0u); }
    for (var j = lid; j < rope / 2u; j += 128u) {
        let x0 = fp8_src(src, kv + 2u * j);
        let x1 = fp8_src(src, kv + 2u * j + 1u);
        fp8_dst(dst, fp8_row_at(kv, slots, kv + 2u * j).x, bf16(x0) | (bf16(x1) << 16u));
    }
}
