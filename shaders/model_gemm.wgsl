// model_gemm.wgsl — the model's linear layers as tiled f32 GEMMs (issue 15, version 2): a
// workgroup computes a tile of TM = 32 rows × TN = 64 outputs of x · Wᵀ (W [N, K] as the
// checkpoint stores it), so each weight is read once for 32 rows where model_ops.wgsl's
// version 1 (`linear`, `expert_up`, `expert_down`: one thread an output) reads it once a row.
//
//   linear       y[r·yr + yo + h·yh + o] = Σ_k x[r·xr + h·xh + k] · w[wb + h·wh + o·wr + k]
//                for each of `heads` products h (1 but for MLA's per-head W_UV);
//                K in `splits` slices (chosen from N and K, never from M): each slice's sums
//                into `part` [heads, splits, M, N], then `reduce` adds the slices in order
//   group        the routed experts' (token, slot) pairs p = r·top_k + j, grouped by expert:
//                counts, the pairs in expert order (stable), and the tiles of ≤ TM pairs of one
//                expert (`routes` as model_ops.wgsl's `route` writes them)
//   expert_up    for a tile of expert e's pairs: act[p, i] = silu(x[r] · G_e[i]) · (x[r] · U_e[i])
//   expert_down  for a tile of expert e's pairs: part[p, o] = act[p] · D_e[o]
//                (each dispatch binds the weights of experts [expert_base, + expert_count): a
//                layer's experts past one storage binding take one dispatch a binding)
//   combine      y[r, o] = Σ_j weight[r, j] · part[r·top_k + j, o]    (j in order)
//
// Numerics: every output is one thread's f32 fma chain over k ascending, exactly as version 1
// sums it, so with one slice a result is version 1's bit for bit; with slices, each slice is
// such a chain and the slices are added in order. Nothing depends on M or on which rows share
// a tile: a row's result is the same in any batch (resident and offload, prefill and decode).
//
// Mapping: 256 threads as 16 × 16; thread (ty, tx) owns rows ty + 16i (i < 2) and outputs
// tx + 16c (c < 4) of the tile. K is streamed TK = 32 at a time through registers (the next
// slice loaded while this one is multiplied) into workgroup memory (rows padded to 33 words
// against bank conflicts), zero past M, N and K.

const TM: u32 = 32u;
const TN: u32 = 64u;
const TK: u32 = 32u;
const PAD: u32 = 33u;
const NONE: u32 = 0xffffffffu;

struct Params {
    m: u32,        // rows (linear: x's rows; experts: tokens)
    n: u32,        // outputs
    k: u32,        // inputs
    xr: u32,       // linear: x's row stride
    yr: u32,       // linear: y's row stride
    yo: u32,       // linear: y's first column
    k_chunk: u32,  // linear: K of one slice (a multiple of TK)
    splits: u32,   // linear: slices of K
    top_k: u32,    // experts: experts a token
    experts: u32,  // experts: routed experts
    expert_base: u32,   // expert_up, expert_down: the first expert whose weights are bound
    expert_count: u32,  // … and how many (a layer's experts may span several bindings)
    row0: u32,     // W_FP8: the first weight row bound (a piece of a weight), for its scales
    kblocks: u32,  // W_FP8: ⌈K / 128⌉, the scales of a row of blocks
    heads: u32,    // linear: independent products (MLA's heads), grid z = head · splits + slice
    xh: u32,       // linear: x's offset from one head to the next
    wb: u32,       // linear: the weight's first element
    wh: u32,       // linear: the weight's offset from one head to the next
    wr: u32,       // the weight's row stride (K, but for a head's rows inside kv_b_proj)
    yh: u32,       // linear: y's offset from one head to the next
}

// The weights are f32 words, or (W_FP8) e4m3 bytes, four a word, each 128 × 128 block of a
// weight [N, K] times one f32 scale ([⌈N/128⌉, ⌈K/128⌉] a weight, an expert's after the
// expert before it): value = e4m3 · scale in f32, exactly what the CPU reads the checkpoint as.
override W_FP8: bool = false;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // inputs (experts: x or act)
@group(0) @binding(2) var<storage, read> w: array<u32>;            // weight [N, K] (experts: [E, N, K])
@group(0) @binding(3) var<storage, read_write> y: array<f32>;      // output (or a slice's partial sums)
@group(0) @binding(4) var<storage, read> u: array<u32>;            // expert_up: the up weights
@group(0) @binding(5) var<storage, read> routes: array<vec2<u32>>; // [M, top_k] (expert, weight bits)
@group(0) @binding(6) var<storage, read_write> groups: array<u32>; // see `group`
@group(0) @binding(7) var<storage, read> part: array<f32>;         // reduce, combine: partial sums
@group(0) @binding(8) var<storage, read> scales_w: array<f32>;     // W_FP8: w's block scales
@group(0) @binding(9) var<storage, read> scales_u: array<f32>;     // W_FP8: u's block scales

// Element `at` of w (or of u), in row `row` of its weight and column kk; `sb`: the weight's
// first scale.
fn weight_w(at: u32, row: u32, kk: u32, sb: u32) -> f32 {
    if (!W_FP8) { return bitcast<f32>(w[at]); }
    let s = scales_w[sb + ((params.row0 + row) / 128u) * params.kblocks + kk / 128u];
    return e4m3x4_values(w[at / 4u])[at % 4u] * s;   // lib/fp8.wgsl
}

fn weight_u(at: u32, row: u32, kk: u32, sb: u32) -> f32 {
    if (!W_FP8) { return bitcast<f32>(u[at]); }
    let s = scales_u[sb + ((params.row0 + row) / 128u) * params.kblocks + kk / 128u];
    return e4m3x4_values(u[at / 4u])[at % 4u] * s;
}

var<workgroup> xs: array<f32, 1056>;   // [TM][PAD]: the x tile
var<workgroup> ws: array<f32, 2112>;   // [TN][PAD]: the weight tile
var<workgroup> us: array<f32, 2112>;   // [TN][PAD]: expert_up's up-weight tile
var<workgroup> src: array<u32, 32>;    // x's row of each tile row (NONE past the rows)
var<workgroup> dst: array<u32, 32>;    // the output row of each tile row (NONE past the rows)
// The tile's expert and first entry in `order` (x, y). A vec4, not two u32 scalars: composed
// into model_gemm_coop.wgsl, a u32 (or an array<u32, 4>) workgroup variable made the H200's
// driver (580.159) give wrong tensor-core sums even where the variable was never touched at
// run time, while a vec4<u32> is exact (docs/PERF.md, "The routed experts on the tensor cores").
var<workgroup> tile_at: vec4<u32>;

// The tiles of K slice [k0, k0 + TK) (inputs end at `kend`) into registers: x rows `src`
// (stride xr.x, from xr.y), TN weight rows from `wb` (stride wr) of w, and of u where `two`. Element
// e = lid + 256·q of a tile is thread lid's q-th: x's 4, each weight's 8.
struct Staged {
    x: array<f32, 4>,
    w: array<f32, 8>,
    u: array<f32, 8>,
}

fn fetch(lid: u32, k0: u32, kend: u32, xr: vec2<u32>, wsb: vec2<u32>, n0: u32, two: bool) -> Staged {
    var st: Staged;
    for (var q = 0u; q < 4u; q++) {
        let e = lid + 256u * q;
        let kk = k0 + e % TK;
        let r = src[e / TK];
        var v = 0.0;
        if (r != NONE && kk < kend) { v = x[r * xr.x + xr.y + kk]; }
        st.x[q] = v;
    }
    for (var q = 0u; q < 8u; q++) {
        let e = lid + 256u * q;
        let j = e / TK;
        let kk = k0 + e % TK;
        var a = 0.0;
        var b = 0.0;
        if (n0 + j < params.n && kk < kend) {
            let at = wsb.x + (n0 + j) * params.wr + kk;
            a = weight_w(at, n0 + j, kk, wsb.y);
            if (two) { b = weight_u(at, n0 + j, kk, wsb.y); }
        }
        st.w[q] = a;
        st.u[q] = b;
    }
    return st;
}

// The registers `fetch` filled, into the tiles in workgroup memory.
fn stash(lid: u32, st: Staged, two: bool) {
    for (var q = 0u; q < 4u; q++) {
        let e = lid + 256u * q;
        xs[(e / TK) * PAD + e % TK] = st.x[q];
    }
    for (var q = 0u; q < 8u; q++) {
        let e = lid + 256u * q;
        ws[(e / TK) * PAD + e % TK] = st.w[q];
        if (two) { us[(e / TK) * PAD + e % TK] = st.u[q]; }
    }
}

// acc[i·4 + c] += Σ_kk xs[ty + 16i][kk] · ws[tx + 16c][kk], kk ascending (and acc_u, from
// us), for the thread's rows that hold a row of x (`src`): a batch smaller than the tile costs
// no arithmetic past its rows (on a CPU adapter, where lanes are threads, that is the time).
fn multiply(lid: u32, acc: ptr<function, array<f32, 8>>, acc_u: ptr<function, array<f32, 8>>, two: bool) {
    let tx = lid % 16u;
    let ty = lid / 16u;
    let live1 = src[ty + 16u] != NONE;
    if (src[ty] == NONE) { return; }   // rows fill the tile from its first
    for (var kk = 0u; kk < TK; kk++) {
        let a0 = xs[ty * PAD + kk];
        let a1 = xs[(ty + 16u) * PAD + kk];
        for (var c = 0u; c < 4u; c++) {
            let o = (tx + 16u * c) * PAD + kk;
            let b = ws[o];
            (*acc)[c] = fma(a0, b, (*acc)[c]);
            if (live1) { (*acc)[4u + c] = fma(a1, b, (*acc)[4u + c]); }
            if (two) {
                let bu = us[o];
                (*acc_u)[c] = fma(a0, bu, (*acc_u)[c]);
                if (live1) { (*acc_u)[4u + c] = fma(a1, bu, (*acc_u)[4u + c]); }
            }
        }
    }
}

// The tile's sums over K [kb, ke) of x rows `src` against TN weight rows from `wb`: the next
// slice's loads are in flight while this one is multiplied (registers, then workgroup memory).
fn tile(lid: u32, kb: u32, ke: u32, xr: vec2<u32>, wsb: vec2<u32>, n0: u32, two: bool,
        acc: ptr<function, array<f32, 8>>, acc_u: ptr<function, array<f32, 8>>) {
    var st = fetch(lid, kb, ke, xr, wsb, n0, two);
    for (var k0 = kb; k0 < ke; k0 += TK) {
        stash(lid, st, two);
        workgroupBarrier();   // tiles stored before anyone multiplies
        if (k0 + TK < ke) { st = fetch(lid, k0 + TK, ke, xr, wsb, n0, two); }
        multiply(lid, acc, acc_u, two);
        workgroupBarrier();   // everyone done with the tiles before the next stash
    }
}

@compute @workgroup_size(256)
fn linear(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wg.x * TN;
    let m0 = wg.y * TM;
    let s = wg.z % params.splits;
    let hd = wg.z / params.splits;
    if (lid < TM) {
        let r = m0 + lid;
        src[lid] = select(NONE, r, r < params.m);
    }
    workgroupBarrier();
    var acc: array<f32, 8>;
    var unused: array<f32, 8>;
    let kb = s * params.k_chunk;
    let ke = min(params.k, kb + params.k_chunk);
    let xr = vec2<u32>(params.xr, hd * params.xh);
    tile(lid, kb, ke, xr, vec2<u32>(params.wb + hd * params.wh, 0u), n0, false, &acc, &unused);
    let tx = lid % 16u;
    let ty = lid / 16u;
    for (var i = 0u; i < 2u; i++) {
        let r = m0 + ty + 16u * i;
        for (var c = 0u; c < 4u; c++) {
            let o = n0 + tx + 16u * c;
            if (r < params.m && o < params.n) {
                if (params.splits == 1u) {
                    y[r * params.yr + params.yo + hd * params.yh + o] = acc[i * 4u + c];
                } else {
                    y[((hd * params.splits + s) * params.m + r) * params.n + o] = acc[i * 4u + c];
                }
            }
        }
    }
}

@compute @workgroup_size(256)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    let mn = params.m * params.n;
    if (t >= params.heads * mn) { return; }
    let hd = t / mn;
    let r = (t % mn) / params.n;
    let o = t % params.n;
    let first = hd * params.splits * mn + t % mn;
    var sum = part[first];
    for (var s = 1u; s < params.splits; s++) { sum += part[first + s * mn]; }
    y[r * params.yr + params.yo + hd * params.yh + o] = sum;
}

// groups: [0, E) each expert's pair count; [E, 2E) its first entry in `order`; [2E, 2E + P)
// `order`, the pairs by expert (each expert's in pair order); [2E + P] the tiles used; then
// per tile (expert, first entry in order). P = M · top_k; at most ⌈P / TM⌉ + E tiles.
@compute @workgroup_size(256)
fn group(@builtin(local_invocation_index) lid: u32) {
    let ne = params.experts;
    let pairs = params.m * params.top_k;
    for (var e = lid; e < ne; e += 256u) {
        var count = 0u;
        for (var p = 0u; p < pairs; p++) { count += u32(routes[p].x == e); }
        groups[e] = count;
    }
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) {
        var first = 0u;
        var tiles = 0u;
        let at = 2u * ne + pairs + 1u;
        for (var e = 0u; e < ne; e++) {
            groups[ne + e] = first;
            for (var s = 0u; s < groups[e]; s += TM) {
                groups[at + 2u * tiles] = e;
                groups[at + 2u * tiles + 1u] = first + s;
                tiles += 1u;
            }
            first += groups[e];
        }
        groups[2u * ne + pairs] = tiles;
    }
    storageBarrier();
    workgroupBarrier();
    for (var e = lid; e < ne; e += 256u) {
        var next = groups[ne + e];
        for (var p = 0u; p < pairs; p++) {
            if (routes[p].x == e) {
                groups[2u * ne + next] = p;
                next += 1u;
            }
        }
    }
}

// Thread 0: tile t of the grouped pairs, its expert (NONE past the tiles used) and its first
// entry in `order`, into workgroup memory.
fn find_tile(t: u32, lid: u32) {
    let ne = params.experts;
    let pairs = params.m * params.top_k;
    if (lid == 0u) {
        tile_at.x = NONE;
        if (t < groups[2u * ne + pairs]) {
            let at = 2u * ne + pairs + 1u + 2u * t;
            tile_at.x = groups[at];
            tile_at.y = groups[at + 1u];
        }
    }
}

// The rows of expert e's tile: each row's pair (`dst`) and x's row (`src`: the pair's token,
// or the pair itself where x has a row a pair).
fn tile_rows(lid: u32, e: u32, x_is_pair: bool) {
    let ne = params.experts;
    if (lid < TM) {
        let q = tile_at.y + lid;
        let end = groups[ne + e] + groups[e];
        var p = NONE;
        if (q < end) { p = groups[2u * ne + q]; }
        dst[lid] = p;
        src[lid] = select(p / params.top_k, p, x_is_pair || p == NONE);
    }
}

// Tile wg.y of the grouped pairs, its rows set up: its expert, or NONE past the tiles used.
fn expert_tile(t: u32, lid: u32, x_is_pair: bool) -> u32 {
    find_tile(t, lid);
    let e = workgroupUniformLoad(&tile_at).x;
    if (e != NONE) { tile_rows(lid, e, x_is_pair); }
    workgroupBarrier();
    return e;
}

// expert_up (`up`: x's rows are tokens, SwiGLU of the gate and up sums into act) or
// expert_down (x's rows are the pairs' activations, the sums into the pairs' outputs).
fn experts(wg: vec3<u32>, lid: u32, up: bool) {
    let e = expert_tile(wg.y, lid, !up);
    // tiles of the experts whose weights this dispatch binds (e is uniform: a tile's)
    if (e == NONE || e < params.expert_base || e >= params.expert_base + params.expert_count) {
        return;
    }
    let n0 = wg.x * TN;
    var acc: array<f32, 8>;
    var acc_u: array<f32, 8>;
    let local = e - params.expert_base;
    let wsb = vec2<u32>(local * params.n * params.k, local * ((params.n + 127u) / 128u) * params.kblocks);
    tile(lid, 0u, params.k, vec2<u32>(params.k, 0u), wsb, n0, up, &acc, &acc_u);
    let tx = lid % 16u;
    let ty = lid / 16u;
    for (var i = 0u; i < 2u; i++) {
        let p = dst[ty + 16u * i];
        for (var c = 0u; c < 4u; c++) {
            let o = n0 + tx + 16u * c;
            if (p != NONE && o < params.n) {
                var v = acc[i * 4u + c];
                if (up) { v = v / (1.0 + exp(-v)) * acc_u[i * 4u + c]; }
                y[p * params.n + o] = v;
            }
        }
    }
}

@compute @workgroup_size(256)
fn expert_up(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    experts(wg, lid, true);
}

@compute @workgroup_size(256)
fn expert_down(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    experts(wg, lid, false);
}

@compute @workgroup_size(256)
fn combine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= params.m * params.n) { return; }
    let r = t / params.n;
    let o = t % params.n;
    var acc = 0.0;
    for (var j = 0u; j < params.top_k; j++) {
        let route = routes[r * params.top_k + j];
        acc = fma(bitcast<f32>(route.y), part[(r * params.top_k + j) * params.n + o], acc);
    }
    y[t] = acc;
}
