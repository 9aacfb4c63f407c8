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
//   act_quant   x[r, ·] ← its FP8 round trip in place, blocks of 128 (the last may be shorter):
//               s = ue8m0(amax), e4m3(x / s) · s (lib/fp8.wgsl), bit for bit reference::model's
//   swiglu      y[r, i] = silu(x[r, i]) · x[r, n + i]   (rows of [gate ‖ up], n = the width)
//   head_linear y[r·yr + h·yh + yo + j] = Σ_i x[r·xr + h·xh + xo + i] · w[wb + h·wh + j·wo + i·wk]
//               for each row r, head h, j < o, i < k (its own table at binding 5): MLA's per-head
//               W_UK and W_UV from kv_b_proj as stored, and strided copies (an identity w)
//   expert_up   a[r, j, i] = silu(Σ_k x[r, k] · G[e, i, k]) · Σ_k x[r, k] · U[e, i, k],
//               e = the expert routes[r, j] chose (route's output): G = w, U = b, a = y
//   expert_down y[r, o] = Σ_j weight[r, j] · Σ_i a[r, j, i] · D[e_j, o, i]: a = x, D = w
//               (`heads` = experts a token, `n` = hidden, `d` = the expert width)
//   add         x[i] += b[i]   (residuals; `n` values)
//   round_to    x[r, h, off .. off + d] ← its value as a cache of `mode` stores it, in place: bf16
//               (mode 1, nearest even: the FP8 format's k_pe, lib/fp8.wgsl) or f16 (mode 2,
//               nearest even, lib/f16_round.wgsl, as shaders/fill.wgsl stores f16 rows)
//   embed       y[r, i] = w[token[r] · n + i]   (token ids in b as u32 bits; the table's rows
//               off .. off + d bound, the rest left to another dispatch)
//   linear      y[r, o] = Σ_k x[r, k] · w[o, k]   (a weight [d, n] as the checkpoint stores it,
//               f32; the naive version-1 kernel the model's CPU-checked path uses, one thread an
//               output: the tensor-core GEMMs are kernels::Gemm)
//   argmax      y[r] = the index of row r's largest value, the lowest on a tie (u32 bits)
//   route       the MoE router of token r from its gate logits x[r, 0 .. n] and the correction
//               bias w: s = sigmoid(logit); the biased s + bias select (group score = the sum
//               of its top 2, the top `heads` groups stay, then the top `d` experts of those,
//               ties to the lower index); weights = the unbiased s of the chosen, normalised,
//               times eps (the routed scaling factor). y[r, 2j] = expert j (u32 bits),
//               y[r, 2j + 1] = its weight, best first. Groups: `stride`; one workgroup a token.
//
// Mapping: norms and argmax, one workgroup a row (a tree reduction in workgroup memory, f32);
// rope and swiglu, one thread a pair or value; hadamard, one workgroup a (row, head), the
// butterflies in workgroup memory; act_quant, one workgroup (of whose 256 threads 128 work) a
// block.
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
    mode: u32,     // round_to: 1 = bf16, 2 = f16
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

var<workgroup> red_i: array<u32, 256>;

@compute @workgroup_size(256)
fn act_quant(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // workgroup (block, row)
    let n = params.n;
    let i = wg.x * 128u + lid;
    let live = (lid < 128u) & (i < n);
    var v = 0.0;
    if (live) { v = x[wg.y * n + i]; }
    red[lid] = abs(v);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
        workgroupBarrier();
    }
    let sc = ue8m0(red[0]);   // (s, 1 / s)
    if (live) {
        let q = e4m3(clamp(v * sc.y, -448.0, 448.0));
        x[wg.y * n + i] = e4m3x4_values(q).x * sc.x;
    }
}

@compute @workgroup_size(256)
fn round_to(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= params.rows * params.heads * params.d) { return; }
    let i = t % params.d;
    let h = (t / params.d) % params.heads;
    let r = t / (params.d * params.heads);
    let at = r * params.n + h * params.stride + params.off + i;
    let v = x[at];
    if (params.mode == 1u) {
        x[at] = bf16_value(bf16(v));
    } else {
        x[at] = round_f16_value(v);   // lib/f16_round.wgsl, as fill.wgsl stores f16 rows
    }
}

@compute @workgroup_size(256)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    let n = params.n;
    if (t >= params.rows * n) { return; }
    let r = t / n;
    let g = x[r * 2u * n + t % n];
    let u = x[r * 2u * n + n + t % n];
    y[t] = g / (1.0 + exp(-g)) * u;
}

@compute @workgroup_size(256)
fn argmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * 65535u;
    if (r >= params.rows) { return; }
    let n = params.n;
    var best = lid;
    var bv = neg_inf();
    for (var i = lid; i < n; i += WG) {
        let v = x[r * n + i];
        if (v > bv) { bv = v; best = i; }
    }
    red[lid] = bv;
    red_i[lid] = best;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let va = red[lid];
            let vb = red[lid + s];
            let ib = red_i[lid + s];
            if ((vb > va) | ((vb == va) & (ib < red_i[lid]))) {
                red[lid] = vb;
                red_i[lid] = ib;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) { y[r] = bitcast<f32>(red_i[0]); }
}

var<workgroup> rs: array<f32, 1024>;     // route: the unbiased scores
var<workgroup> rb: array<f32, 1024>;     // route: the biased scores (−inf outside kept groups)
var<workgroup> rg: array<f32, 256>;      // route: the group scores

// Whether (v, i) ranks before (u, j): larger first, the lower index on a tie.
fn before(v: f32, i: u32, u: f32, j: u32) -> bool {
    return (v > u) | ((v == u) & (i < j));
}

@compute @workgroup_size(256)
fn route(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * 65535u;
    if (r >= params.rows) { return; }
    let n = params.n;
    let groups = params.stride;
    let per = n / groups;
    for (var e = lid; e < n; e += WG) {
        let s = 1.0 / (1.0 + exp(-x[r * n + e]));
        rs[e] = s;
        rb[e] = s + w[e];
    }
    workgroupBarrier();
    for (var g = lid; g < groups; g += WG) {   // each group's top-2 sum
        var m1 = neg_inf();
        var m2 = m1;
        for (var e = g * per; e < (g + 1u) * per; e++) {
            let v = rb[e];
            if (v > m1) { m2 = m1; m1 = v; } else if (v > m2) { m2 = v; }
        }
        rg[g] = m1 + m2;
    }
    workgroupBarrier();
    for (var e = lid; e < n; e += WG) {   // drop the experts of groups ranked past `heads`
        let g = e / per;
        var rank = 0u;
        for (var h = 0u; h < groups; h++) { rank += u32(before(rg[h], h, rg[g], g)); }
        if (rank >= params.heads) { rb[e] = neg_inf(); }
    }
    workgroupBarrier();
    for (var e = lid; e < n; e += WG) {
        if (rb[e] == neg_inf()) { continue; }
        var rank = 0u;
        for (var f = 0u; f < n; f++) { rank += u32(before(rb[f], f, rb[e], e)); }
        if (rank < params.d) {
            y[r * 2u * params.d + 2u * rank] = bitcast<f32>(e);
            y[r * 2u * params.d + 2u * rank + 1u] = rs[e];
        }
    }
    storageBarrier();
    workgroupBarrier();
    // normalise: the sum of the chosen unbiased scores, in slot order (one thread: d ≤ 64)
    if (lid == 0u) {
        var sum = 0.0;
        for (var j = 0u; j < params.d; j++) { sum += y[r * 2u * params.d + 2u * j + 1u]; }
        for (var j = 0u; j < params.d; j++) {
            let at = r * 2u * params.d + 2u * j + 1u;
            y[at] = y[at] / sum * params.eps;
        }
    }
}

@compute @workgroup_size(256)
fn linear(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    let n = params.n;
    let d = params.d;
    if (t >= params.rows * d) { return; }
    let r = t / d;
    let o = t % d;
    var acc = 0.0;
    for (var k = 0u; k < n; k++) { acc = fma(x[r * n + k], w[o * n + k], acc); }
    y[t] = acc;
}

struct HeadLinear {
    rows: u32, heads: u32, k: u32, o: u32,
    xr: u32, xh: u32, xo: u32, wb: u32,
    wh: u32, wo: u32, wk: u32, yr: u32,
    yh: u32, yo: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(5) var<storage, read> hl: HeadLinear;

@compute @workgroup_size(256)
fn head_linear(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    _ = params.rows;   // the uniform every entry point binds (unused here)
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= hl.rows * hl.heads * hl.o) { return; }
    let j = t % hl.o;
    let h = (t / hl.o) % hl.heads;
    let r = t / (hl.o * hl.heads);
    let xb = r * hl.xr + h * hl.xh + hl.xo;
    let wbase = hl.wb + h * hl.wh + j * hl.wo;
    var acc = 0.0;
    for (var i = 0u; i < hl.k; i++) { acc = fma(x[xb + i], w[wbase + i * hl.wk], acc); }
    y[r * hl.yr + h * hl.yh + hl.yo + j] = acc;
}

@group(0) @binding(6) var<storage, read> routes: array<vec2<u32>>;   // [rows, k] (expert, weight bits)

@compute @workgroup_size(256)
fn expert_up(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    let n = params.n;
    let inter = params.d;
    let k = params.heads;
    if (t >= params.rows * k * inter) { return; }
    let i = t % inter;
    let j = (t / inter) % k;
    let r = t / (inter * k);
    let e = routes[r * k + j].x;
    let base = (e * inter + i) * n;
    var g = 0.0;
    var u = 0.0;
    for (var c = 0u; c < n; c++) {
        let xv = x[r * n + c];
        g = fma(xv, w[base + c], g);
        u = fma(xv, b[base + c], u);
    }
    y[t] = g / (1.0 + exp(-g)) * u;
}

@compute @workgroup_size(256)
fn expert_down(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    let n = params.n;
    let inter = params.d;
    let k = params.heads;
    if (t >= params.rows * n) { return; }
    let o = t % n;
    let r = t / n;
    var acc = 0.0;
    for (var j = 0u; j < k; j++) {
        let route = routes[r * k + j];
        var s = 0.0;
        let base = (route.x * n + o) * inter;
        for (var i = 0u; i < inter; i++) { s = fma(x[(r * k + j) * inter + i], w[base + i], s); }
        acc = fma(bitcast<f32>(route.y), s, acc);
    }
    y[t] = acc;
}

@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= params.n) { return; }
    x[t] += b[t];
}

@compute @workgroup_size(256)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    let n = params.n;
    if (t >= params.rows * n) { return; }
    // the table's rows off .. off + d are bound (a vocabulary past one binding takes several)
    let token = bitcast<u32>(b[t / n]);
    if (token < params.off || token >= params.off + params.d) { return; }
    y[t] = w[(token - params.off) * n + t % n];
}

// −inf from a runtime value: `bitcast<f32>(0xff800000u)` alone is a constant expression, and
// WGSL refuses a constant that is not finite (Chromium's compiler enforces it; naga does not)
fn neg_inf() -> f32 { var bits = 0xff800000u; return bitcast<f32>(bits); }
