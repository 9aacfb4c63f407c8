// probe.wgsl — two tiny kernels that measure the device's ceilings for the roofline.
//
//   copy: dst[i] = src[i] over vec4<u32>  → bandwidth = (bytes read + bytes written) / time
//   fma:  8 independent chains of ITERS dependent fma per thread → rate = 2·8·ITERS·threads / time
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
    let x = f32(gid.x) * 1e-9;
    var a = array<f32, 8>(x, x + 0.1, x + 0.2, x + 0.3, x + 0.4, x + 0.5, x + 0.6, x + 0.7);
    for (var it = 0u; it < params.n; it++) {
        for (var j = 0u; j < 8u; j++) {
            a[j] = fma(a[j], 0.9999999, 1e-7);
        }
    }
    let total = a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
    if (total == -1.0) {
        dst[gid.x] = src[0];   // (also keeps `src` in the auto layout)
    }
}
