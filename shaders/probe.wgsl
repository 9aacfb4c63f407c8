// probe.wgsl — two tiny kernels that measure the device's ceilings for the roofline.
//
//   copy: dst[i] = src[i] over vec4<u32>  → bandwidth = (bytes read + bytes written) / time
//   fma:  16 independent chains of 4·ITERS dependent fma per thread → rate = 2·64·ITERS·threads / time
//
// The fma result is stored only if it equals a value it cannot reach, so the compiler must keep
// every chain, and memory traffic stays nil.

struct Params {
    n: u32,        // copy: vec4 elements; fma: iterations per chain
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 256u;
    for (var i = gid.x; i < params.n; i += stride) {
        dst[i] = src[i];
    }
}

@compute @workgroup_size(256)
fn fma_rate(@builtin(global_invocation_id) gid: vec3<u32>) {
    // 16 independent chains as four vec4 registers (no private arrays: a driver may keep those
    // in local memory, which would measure memory, not arithmetic).
    let x = f32(gid.x) * 1e-9;
    var a0 = vec4<f32>(x, x + 0.1, x + 0.2, x + 0.3);
    var a1 = a0 + 0.4;
    var a2 = a0 + 0.8;
    var a3 = a0 + 1.2;
    let m = vec4<f32>(0.9999999);
    let c = vec4<f32>(1e-7);
    for (var it = 0u; it < params.n; it++) {   // 4 × 16 FMAs per trip: loop overhead ≪ work
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    }
    let total = dot(a0 + a1 + a2 + a3, vec4<f32>(1.0));
    if (total == -1.0) {
        dst[gid.x] = src[0];   // (also keeps `src` in the auto layout)
    }
}
