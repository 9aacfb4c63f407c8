// indexer_coop.wgsl — the lightning indexer on the tensor cores (the coop matrix path).
//
//   index_score[b, s] = Σ_j w[b, j] · ReLU( q[b, j, :] · k_b[s, :] )      s ∈ [0, T_b)
//
// The same contract as indexer.wgsl (ragged sequences in one dispatch, keys at rows seq[2b] ..,
// scores past T_b untouched) for f16 keys; q is rounded to f16 as it is staged (the products
// are exact in f32 and summed in f32, so the one rounding this path adds is q's: the model
// itself feeds the indexer FP8 q and k).
//
// KEYS_FP8: the model's FP8 indexer, as DeepSeek's `fp8_index` computes it, over the FP8 key
// cache and the FP8 queries (lib/indexer_io.wgsl; D ≤ 128, one scale a key and a head):
//
//   index_score[b, s] = k_s · Σ_j (w[b, j] · q_s[b, j]) · ReLU( q̂[b, j, :] · k̂_s )
//
// q̂ and k̂ enter the tensor cores as f16 values · 2^-8 (their bits placed: lib/fp8.wgsl's
// e4m3x2_f16_bits, exact), their products are exact in f32 and summed in f32, and the scales
// (and the 2^16) are applied in the epilogue, never to the staged values.

enable f16;
enable wgpu_cooperative_matrix;

override KEYS_FP8: bool = false;   // the FP8 key cache and queries (see the top)
override FUSED: bool = false;      // a gather in the dispatch's first workgroups (indexer_gather.wgsl)

const KEYS_PER_WG: u32 = 256u;
const HEADS: u32 = 64u;          // rows of Q in a tile: H ≤ 64, padded with zeros
const DC: u32 = 32u;             // dims per chunk
const PAD: u32 = 8u;
const SR: u32 = DC + PAD;        // row stride of q_s and k_s (f16)

// (the uniform and the bindings: lib/indexer_io.wgsl)

var<workgroup> q_s: array<f16, 2560>;    // [HEADS][SR]
var<workgroup> k_s: array<f16, 10240>;   // [KEYS_PER_WG][SR]: key j's dims contiguous
var<workgroup> c_s: array<f32, 2048>;    // 8 subgroups × a 16 × 16 staging slot
var<workgroup> w_s: array<f32, 64>;      // the head weights, zero past H (FP8: times q_s · 2^16)

// q's vec4 `e` (of 512 in a chunk: head e / 8, dims c + 4 · (e % 8)), zero past H. FP8: 16 e4m3
// values (of 128: head e / 2, dims c + 16 · (e % 2)), as bits.
fn fetch_q(b: u32, c: u32, e: u32) -> vec4<f32> {
    if (KEYS_FP8) {
        let h = e / 2u;
        if (e >= 128u || h >= params.heads) { return vec4<f32>(0.0); }   // (0 bits: 0.0)
        return q[((b * params.heads + h) * params.dim + c) / 16u + e % 2u];
    }
    let h = e / 8u;
    if (h >= params.heads) { return vec4<f32>(0.0); }
    return q[((b * params.heads + h) * params.dim + c) / 4u + e % 8u];
}

fn put_q(e: u32, v: vec4<f32>) {
    if (KEYS_FP8) {   // 16 e4m3 values as f16 values · 2^-8
        if (e >= 128u) { return; }
        let h = e4m3x16(bitcast<vec4<u32>>(v));
        let at = (e / 2u) * SR + 16u * (e % 2u);
        for (var i = 0u; i < 8u; i++) {
            q_s[at + 2u * i] = h[i].x;
            q_s[at + 2u * i + 1u] = h[i].y;
        }
        return;
    }
    let at = (e / 8u) * SR + 4u * (e % 8u);
    q_s[at] = f16(v.x);
    q_s[at + 1u] = f16(v.y);
    q_s[at + 2u] = f16(v.z);
    q_s[at + 3u] = f16(v.w);
}

// 16 e4m3 values (4 words) as f16 values · 2^-8, bits placed (lib/fp8.wgsl; widened through f32:
// naga 30 types a bitcast<vec2<f16>> f32)
fn e4m3x16(v: vec4<u32>) -> array<vec2<f16>, 8> {
    var h: array<vec2<f16>, 8>;
    for (var i = 0u; i < 4u; i++) {
        h[2u * i] = vec2<f16>(unpack2x16float(e4m3x2_f16_bits(v[i])));
        h[2u * i + 1u] = vec2<f16>(unpack2x16float(e4m3x2_f16_bits(v[i] >> 16u)));
    }
    return h;
}

// the keys' quad `e` (of 1024: key e / 4, dims c + 8 · (e % 4)), zero past T. FP8: 16 e4m3
// values (of 512: key e / 2, dims c + 16 · (e % 2)).
fn fetch_k(row0: u32, T: u32, s0: u32, c: u32, e: u32) -> vec4<u32> {
    if (KEYS_FP8) {
        let key = s0 + e / 2u;
        if (e >= 512u || key >= T) { return vec4<u32>(0u); }
        return keys[((row0 + key) * params.dim + c) / 16u + e % 2u];
    }
    let key = s0 + e / 4u;
    if (key >= T) { return vec4<u32>(0u); }
    return keys[((row0 + key) * params.dim + c) / 8u + e % 4u];
}

fn put_k(e: u32, v: vec4<u32>) {
    if (KEYS_FP8) {   // 16 e4m3 values as f16 values · 2^-8 (the epilogue's w_s has the 2^8)
        if (e >= 512u) { return; }
        let h = e4m3x16(v);
        let at = (e / 2u) * SR + 16u * (e % 2u);
        for (var i = 0u; i < 8u; i++) {
            k_s[at + 2u * i] = h[i].x;
            k_s[at + 2u * i + 1u] = h[i].y;
        }
        return;
    }
    let at = (e / 4u) * SR + 8u * (e % 4u);
    for (var i = 0u; i < 4u; i++) {
        let h = vec2<f16>(unpack2x16float(v[i]));   // exact: every f16 is an f32
        k_s[at + 2u * i] = h[0];
        k_s[at + 2u * i + 1u] = h[1];
    }
}

// w · ReLU of the fragment staged in `slot` (head rows h0 ..), summed into this lane's key
// column lane % 16 over the rows of its half (lane / 16, + 2, …)
fn fold(slot: u32, lane: u32, h0: u32) -> f32 {
    var sum = 0.0;
    for (var r = lane / 16u; r < 16u; r += 2u) {
        sum = fma(w_s[h0 + r], max(c_s[slot + r * 16u + lane % 16u], 0.0), sum);
    }
    return sum;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // the grid is (tiles, sequences); with FUSED the first gather_wgs workgroups gather
    // (indexer_gather.wgsl) and the rest are tiles, numbered by the linear workgroup id (the
    // host folds the grid)
    // (lets and `&`: naga's uniformity analysis takes a `var` for non-uniform, and makes `&&` a
    // branch; with FUSED false all of this folds away)
    let id = wg.x + wg.y * nwg.x;
    if (FUSED & (id < gp.gather_wgs)) {   // uniform across the workgroup
        gather_wg(id, lid);
        return;
    }
    let i = id - gp.gather_wgs;
    if (FUSED & (i >= gp.index_wgs)) { return; }   // the folded grid's tail
    let tiles = max(gp.tiles, 1u);
    let tile = select(wg.x, i % tiles, FUSED);
    let bl = select(wg.y, i / tiles, FUSED);
    let H = params.heads;
    let D = params.dim;
    let b = params.b0 + bl;
    let row0 = seq[2u * b];
    let T = seq[2u * b + 1u];
    let s0 = tile * KEYS_PER_WG;
    if (s0 >= T) { return; }   // uniform across the workgroup: no barrier is skipped by some only

    let s = lid / 32u;
    let lane = lid % 32u;
    if (lid < HEADS) {
        var wt = 0.0;
        if (lid < H) { wt = w[b * H + lid]; }
        if (KEYS_FP8 & (lid < H)) { wt *= q_scale(b * H + lid) * 65536.0; }   // q_s, and 2^16 for the staged q̂, k̂
        w_s[lid] = wt;
    }
    var c00 = coop_mat16x16<f32, C>(); var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>(); var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>(); var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>(); var c31 = coop_mat16x16<f32, C>();
    var q0 = fetch_q(b, 0u, lid);
    var q1 = fetch_q(b, 0u, lid + 256u);
    var k0 = fetch_k(row0, T, s0, 0u, lid);
    var k1 = fetch_k(row0, T, s0, 0u, lid + 256u);
    var k2 = fetch_k(row0, T, s0, 0u, lid + 512u);
    var k3 = fetch_k(row0, T, s0, 0u, lid + 768u);
    for (var c = 0u; c < D; c += DC) {
        put_q(lid, q0);
        put_q(lid + 256u, q1);
        put_k(lid, k0);
        put_k(lid + 256u, k1);
        put_k(lid + 512u, k2);
        put_k(lid + 768u, k3);
        workgroupBarrier();   // the chunk is staged before the fragments are loaded
        let c1 = c + DC;
        if (c1 < D) {         // the next chunk's loads are in flight while this one multiplies
            q0 = fetch_q(b, c1, lid);
            q1 = fetch_q(b, c1, lid + 256u);
            k0 = fetch_k(row0, T, s0, c1, lid);
            k1 = fetch_k(row0, T, s0, c1, lid + 256u);
            k2 = fetch_k(row0, T, s0, c1, lid + 512u);
            k3 = fetch_k(row0, T, s0, c1, lid + 768u);
        }
        for (var kk = 0u; kk < DC; kk += 16u) {
            let ia0 = kk;
            let ia1 = 16u * SR + kk;
            let ia2 = 32u * SR + kk;
            let ia3 = 48u * SR + kk;
            let ib0 = (s * 32u) * SR + kk;
            let ib1 = (s * 32u + 16u) * SR + kk;
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&q_s[ia0], SR);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&q_s[ia1], SR);
            let a2 = coopLoadT<coop_mat16x16<f16, A>>(&q_s[ia2], SR);
            let a3 = coopLoadT<coop_mat16x16<f16, A>>(&q_s[ia3], SR);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&k_s[ib0], SR);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&k_s[ib1], SR);
            c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
            c20 = coopMultiplyAdd(a2, b0, c20); c21 = coopMultiplyAdd(a2, b1, c21);
            c30 = coopMultiplyAdd(a3, b0, c30); c31 = coopMultiplyAdd(a3, b1, c31);
        }
        workgroupBarrier();   // fragments read before the next chunk overwrites them
    }

    // w · ReLU, summed over heads: fragment by fragment through the subgroup's slot (index and
    // stride bound to lets: naga 30's SPIR-V writer panics on inline ones)
    let slot = s * 256u;
    let st = 16u;
    var p0 = 0.0;   // this lane's half of key s·32 + lane % 16
    var p1 = 0.0;   // … of key s·32 + 16 + lane % 16
    coopStoreT(c00, &c_s[slot], st); workgroupBarrier(); p0 += fold(slot, lane, 0u); workgroupBarrier();
    coopStoreT(c10, &c_s[slot], st); workgroupBarrier(); p0 += fold(slot, lane, 16u); workgroupBarrier();
    coopStoreT(c20, &c_s[slot], st); workgroupBarrier(); p0 += fold(slot, lane, 32u); workgroupBarrier();
    coopStoreT(c30, &c_s[slot], st); workgroupBarrier(); p0 += fold(slot, lane, 48u); workgroupBarrier();
    coopStoreT(c01, &c_s[slot], st); workgroupBarrier(); p1 += fold(slot, lane, 0u); workgroupBarrier();
    coopStoreT(c11, &c_s[slot], st); workgroupBarrier(); p1 += fold(slot, lane, 16u); workgroupBarrier();
    coopStoreT(c21, &c_s[slot], st); workgroupBarrier(); p1 += fold(slot, lane, 32u); workgroupBarrier();
    coopStoreT(c31, &c_s[slot], st); workgroupBarrier(); p1 += fold(slot, lane, 48u); workgroupBarrier();
    // the two halves of each key column meet: slot[j · 32 + lane] holds half lane / 16 of
    // column lane % 16 of key block j
    c_s[slot + lane] = p0;
    c_s[slot + 32u + lane] = p1;
    workgroupBarrier();
    let j = lane / 16u;
    let col = lane % 16u;
    let key = s0 + s * 32u + j * 16u + col;
    if (key < T) {
        var total = c_s[slot + j * 32u + col] + c_s[slot + j * 32u + 16u + col];
        if (KEYS_FP8) {   // times the key's scale, after its values
            let si = params.key_rows * (params.dim / 4u) + row0 + key;
            total *= bitcast<f32>(keys[si / 4u][si % 4u]);
        }
        scores[b * params.score_stride + key] = total;
    }
}
