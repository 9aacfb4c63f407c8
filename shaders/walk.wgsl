// walk.wgsl — the synthetic indexer queries' random walk, one step, in place.
//
//   q[i] ← ρ·q[i] + √(1−ρ²)·u_i,   u_i = √3 · uniform[-1, 1) from hash(salt, layer, walk step, i)
//
// Without trained weights, temporal locality comes from this process: consecutive queries are
// correlated by ρ (1 = identical top-k sets, 0 = independent), and the noise has unit variance,
// like the initial queries. Moving it to the GPU keeps the per-step CPU cost independent of the
// batch (at v32 batch 125 the CPU walk took as long as the GPU step). `clock[1]` counts the walk
// steps (warm-up windows and decode steps alike). Reference: `reference::walk_step`.
//
// Mapping: one thread per query element, 2-D grid past 65,535 workgroups.

struct Params {
    n: u32,       // elements of q
    layer: u32,
    salt: u32,
    rho: f32,
    keep: f32,    // √(1 − ρ²)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> clock: array<u32>;        // [1] = walk step
@group(0) @binding(2) var<storage, read_write> q: array<f32>;

// hash(): shaders/lib/hash.wgsl, composed in front of this file.

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= params.n) { return; }
    let h = hash(hash(hash(params.salt ^ params.layer) ^ clock[1]) ^ i);
    let u = (f32(h >> 8u) / 16777216.0 * 2.0 - 1.0) * 1.7320508;
    q[i] = params.rho * q[i] + params.keep * u;
}
