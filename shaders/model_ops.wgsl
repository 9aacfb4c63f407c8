// model_ops.wgsl — DeepSeek-V3.2's per-token operations on the GPU (issue 15), each against its
// plain-Rust reference in reference::model:
//
//   rms_norm    y[r] = x[r] / sqrt(mean(x[r]²) + eps) · w                 (RMSNorm)
//   layer_norm  y[r] = (x[r] − mean) / sqrt(var + eps) · w + b            (the indexer's k_norm)
//   rope        x[r, h, off .. off + d] rotated in place for position pos[r], by the (cos, sin)
//               table of that position: pairs (2i, 2i+1) (MLA, INTERLEAVED) or (i, i + d/2)
//               (the indexer, NeoX)
//   hadamard    x[r, h, 0 .. d] ← H_d · x · d^-1/2 in place (Sylvester order; d a power of two
//               ≤ 1024): the indexer's rotate_activation
//
// Mapping: norms, one workgroup a row (a tree reduction in workgroup memory, f32); rope, one
// thread a pair; hadamard, one workgroup a (row, head), the butterflies in workgroup memory.
// The (cos, sin) table is made on the CPU in f64 (position · frequency loses radians in f32 at
// 128K positions), [positions, d/2] pairs.

struct Params {
    rows: u32,     // rows (tokens)
    n: u32,        // norms: values a row; rope / hadamard: the row stride (values)
    heads: u32,    // rope / hadamard: heads a row, `d` values each, `stride` apart
    d: u32,        // rope: rotated dims a head; hadamard: the head's length
    stride: u32,   // rope / hadamard: values between heads
    off: u32,      // rope: the first rotated value of a head
    eps: f32,      // norms
    _pad: u32,
}

override INTERLEAVED: bool = true;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;       // norms: input; rope / hadamard: in place
@group(0) @binding(2) var<storage, read> w: array<f32>;             // norms: weight [n]; rope: (cos, sin) table
@group(0) @binding(3) var<storage, read> b: array<f32>;             // layer_norm: bias [n]; rope: positions (u32 bits)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;       // norms: output [rows, n]

const WG: u32 = 256u;
var<workgroup> red: array<f32, 1024>;

// the workgroup's sum of `v` (every thread gets it)
fn wg_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * 65535u;
    if (r >= params.rows) { return; }   // uniform: the whole workgroup
    let n = params.n;
    var ss = 0.0;
    for (var i = lid; i < n; i += WG) { let v = x[r * n + i]; ss += v * v; }
    let inv = inverseSqrt(wg_sum(ss, lid) / f32(n) + params.eps);
    for (var i = lid; i < n; i += WG) { y[r * n + i] = x[r * n + i] * inv * w[i]; }
}

@compute @workgroup_size(256)
fn layer_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * 65535u;
    if (r >= params.rows) { return; }
    let n = params.n;
    var s = 0.0;
    for (var i = lid; i < n; i += WG) { s += x[r * n + i]; }
    let mean = wg_sum(s, lid) / f32(n);
    var ss = 0.0;
    for (var i = lid; i < n; i += WG) { let v = x[r * n + i] - mean; ss += v * v; }
    let inv = inverseSqrt(wg_sum(ss, lid) / f32(n) + params.eps);
    for (var i = lid; i < n; i += WG) { y[r * n + i] = (x[r * n + i] - mean) * inv * w[i] + b[i]; }
}

@compute @workgroup_size(256)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let half = params.d / 2u;
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= params.rows * params.heads * half) { return; }
    let i = t % half;
    let h = (t / half) % params.heads;
    let r = t / (half * params.heads);
    let pos = bitcast<u32>(b[r]);
    let base = r * params.n + h * params.stride + params.off;
    let ia = select(i, 2u * i, INTERLEAVED);
    let ib = select(i + half, 2u * i + 1u, INTERLEAVED);
    let c = w[2u * (pos * half + i)];
    let s = w[2u * (pos * half + i) + 1u];
    let xa = x[base + ia];
    let xb = x[base + ib];
    x[base + ia] = xa * c - xb * s;
    x[base + ib] = xa * s + xb * c;
}

@compute @workgroup_size(256)
fn hadamard(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let id = wg.x + wg.y * 65535u;
    if (id >= params.rows * params.heads) { return; }
    let d = params.d;
    let base = (id / params.heads) * params.n + (id % params.heads) * params.stride;
    for (var i = lid; i < d; i += WG) { red[i] = x[base + i]; }
    workgroupBarrier();
    for (var h = 1u; h < d; h <<= 1u) {
        // d / 2 butterflies: butterfly k pairs j = (k / h)·2h + k % h with j + h
        for (var k = lid; k < d / 2u; k += WG) {
            let j = (k / h) * 2u * h + k % h;
            let a = red[j];
            let c = red[j + h];
            red[j] = a + c;
            red[j + h] = a - c;
        }
        workgroupBarrier();
    }
    let s = inverseSqrt(f32(d));
    for (var i = lid; i < d; i += WG) { x[base + i] = red[i] * s; }
}
