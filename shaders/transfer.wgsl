// transfer.wgsl — moving latent rows between the host store and the GPU staging pool.
//
//   gather      pool[b, slot] ← host[b, token]     for each (token, slot) in b's copy list
//   scatter     pool[b, slot] ← staging[b, r]      the same, from rows the CPU packed by rank r
//   write_back  pool[b, P−1] ← new[b];  host[b, T_b − 1] ← new[b]   (the newest token)
//   pool_newest pool[b, P−1] ← new[b]              (when the host store is process memory:
//                                                   the CPU writes the host copy)
//
// `gather` and `write_back` read and write the host store directly over the bus: it is a buffer
// in host RAM (MAP_READ | STORAGE on an adapter with MAPPABLE_PRIMARY_BUFFERS), the wgpu
// counterpart of CUDA's zero-copy / UVA access (the paper's FlashTrans). One dispatch moves every
// missed row of every sequence of one host-store group.
//
// Mapping: one thread per vec4 (16 bytes) of a row; workgroup (x, y) = (vec4s x·256 .., sequence
// b0 + y). Rows are `row_vecs` vec4s (656 B = 41, 1152 B = 72). Copy lists come from resolve.wgsl:
// copies[b, r] = (token, slot) for r < counts[b].x.

struct Params {
    row_vecs: u32,   // vec4s per row
    k: u32,          // copy-list stride per sequence
    slots: u32,      // P: pool rows per sequence (slot P−1 reserved for the newest token)
    capacity: u32,   // host rows per sequence
    b0: u32,         // first sequence (global index) of this dispatch
    host_b0: u32,    // first sequence of the host-store group `src` / `host` hold (≤ b0)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> copies: array<vec2<u32>>;      // [B, k] (token, slot)
@group(0) @binding(2) var<storage, read> counts: array<vec2<u32>>;      // [B] (misses, hits)
@group(0) @binding(3) var<storage, read> src: array<vec4<u32>>;         // gather: host group; scatter: staging [B, k, row]; write_back: new [B, row]
@group(0) @binding(4) var<storage, read_write> pool: array<vec4<u32>>;  // [B, P, row]
@group(0) @binding(5) var<storage, read> seq: array<u32>;               // [B, 2] = (_, T_b)
@group(0) @binding(6) var<storage, read_write> host: array<vec4<u32>>;  // host group [n, capacity, row]

@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.y;
    let e = wg.x * 256u + lid;
    let r = e / params.row_vecs;
    if (r >= counts[b].x) { return; }
    let part = e % params.row_vecs;
    let c = copies[b * params.k + r];
    pool[(b * params.slots + c.y) * params.row_vecs + part] = src[((b - params.host_b0) * params.capacity + c.x) * params.row_vecs + part];
}

@compute @workgroup_size(256)
fn scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.y;
    let e = wg.x * 256u + lid;
    let r = e / params.row_vecs;
    if (r >= counts[b].x) { return; }
    let part = e % params.row_vecs;
    let c = copies[b * params.k + r];
    pool[(b * params.slots + c.y) * params.row_vecs + part] = src[(b * params.k + r) * params.row_vecs + part];
}

@compute @workgroup_size(256)
fn write_back(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.y;
    let part = wg.x * 256u + lid;
    if (part >= params.row_vecs) { return; }
    let v = src[b * params.row_vecs + part];
    pool[(b * params.slots + params.slots - 1u) * params.row_vecs + part] = v;
    let newest = seq[2u * b + 1u] - 1u;
    host[((b - params.host_b0) * params.capacity + newest) * params.row_vecs + part] = v;
}

@compute @workgroup_size(256)
fn pool_newest(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.y;
    let part = wg.x * 256u + lid;
    if (part >= params.row_vecs) { return; }
    pool[(b * params.slots + params.slots - 1u) * params.row_vecs + part] = src[b * params.row_vecs + part];
}
