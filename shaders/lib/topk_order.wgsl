// lib/topk_order.wgsl — what the two top-k kernels share: the uniform and the bindings of the
// scores and the result, the order-preserving map of f32 scores onto u32 keys, and the order of
// the result (lib/select.wgsl's hooks select_largest and sorts_before): higher score first,
// ties to the lower token index. Composed in front of topk.wgsl (a row a workgroup) and
// topk_split.wgsl (long rows over several workgroups).

override WG: u32 = 256u;   // threads per workgroup, a power of two ≤ 1024

struct Params {
    k: u32,             // selected per row, 1 ..= MAX_K
    score_stride: u32,  // row stride of `scores`
    b0: u32,            // first row of this dispatch
    segments: u32,      // topk_split.wgsl: workgroups a row is split over (topk.wgsl: unused)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> scores: array<f32>;            // [B, score_stride]
@group(0) @binding(2) var<storage, read> seq: array<u32>;               // [B, 2] = (first row, T_b)
@group(0) @binding(3) var<storage, read_write> topk_indices: array<i32>; // [B, k]

// Monotone map f32 → u32: a > b as floats ⇔ key(a) > key(b) as integers.
fn order_key(x: f32) -> u32 {
    let u = bitcast<u32>(x);
    return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

// lib/select.wgsl hooks: the largest keys win; the output is by key descending, then index
// ascending.
fn select_largest() -> bool {
    return true;
}

fn sorts_before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia <= ib);
}
