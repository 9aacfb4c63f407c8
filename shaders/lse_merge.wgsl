// lse_merge.wgsl — merge two partial attention results over disjoint id sets.
//
//   m   = max(lse0, lse1)
//   o   = (e^(lse0−m)·o0 + e^(lse1−m)·o1) / (e^(lse0−m) + e^(lse1−m))
//   lse = m + log(e^(lse0−m) + e^(lse1−m))
//
// This equals one pass over the union (BRIEF.md §2): it lets attention start on the rows already
// on the GPU while the missed rows are still in flight, and finish on them afterwards.
// Both parts empty (lse0 = lse1 = −inf) gives o = 0, lse = −inf.
//
// Mapping: one thread per output element (b, h, d) of [B·H, KV]; the thread with d = 0 also
// writes lse. No workgroup memory, no barriers.

struct Params {
    rows: u32,   // B · H
    dim: u32,    // KV
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> o0: array<f32>;           // [B·H, KV]
@group(0) @binding(2) var<storage, read> lse0: array<f32>;         // [B·H]
@group(0) @binding(3) var<storage, read> o1: array<f32>;           // [B·H, KV]
@group(0) @binding(4) var<storage, read> lse1: array<f32>;         // [B·H]
@group(0) @binding(5) var<storage, read_write> o: array<f32>;      // [B·H, KV]
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;    // [B·H]

// −inf from a runtime value: `bitcast<f32>(0xff800000u)` alone is a constant expression, and
// WGSL refuses a constant that is not finite (Chromium's compiler enforces it; naga does not)
fn neg_inf() -> f32 { var bits = 0xff800000u; return bitcast<f32>(bits); }

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= params.rows * params.dim) { return; }
    let r = i / params.dim;
    let a = lse0[r];
    let c = lse1[r];
    let m = max(a, c);
    if (m == neg_inf()) {
        o[i] = 0.0;
        if (i % params.dim == 0u) { lse[r] = neg_inf(); }
        return;
    }
    let w0 = exp(a - m);
    let w1 = exp(c - m);
    let sum = w0 + w1;
    o[i] = (w0 * o0[i] + w1 * o1[i]) / sum;
    if (i % params.dim == 0u) { lse[r] = m + log(sum); }
}
