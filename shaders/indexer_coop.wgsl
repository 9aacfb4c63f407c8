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
//
// Mapping: workgroup (x, y) = (tile of 128 keys, sequence b0 + y), 256 threads = 8 subgroups of
// 32 (the host requires a subgroup size of 32). The tile's product is C[64 heads × 128 keys] =
// Q[64 × D] · K^T[D × 128]: subgroup s owns keys s·16 .. +16 for all 64 heads, as 4 accumulator
// fragments of 16 × 16 (heads past H are zero rows of Q, their weight zero). That is 32
// registers of accumulators, so two workgroups share an SM; 8 fragments and 256 keys a workgroup
// took 142 registers a thread and one workgroup an SM. D is streamed 32 dims at a time through
// workgroup memory (Q [64][32] and K [128][32] f16, rows padded by 8 f16 so a fragment load's
// rows start in different banks), and the next chunk is fetched into registers while the
// current one multiplies, as in gemm/gemm_coop_f16.wgsl.
// Epilogue: each fragment is staged through the subgroup's 16 × 16 slot, where every lane takes
// one key column and half its rows and adds w · ReLU(c) to its key's partial sum; the two halves
// meet in the slot at the end.

enable f16;
enable wgpu_cooperative_matrix;

override KEYS_FP8: bool = false;   // the FP8 key cache and queries (see the top)
override FUSED: bool = false;      // a gather in the dispatch's first workgroups (indexer_gather.wgsl)

const KEYS_PER_WG: u32 = 128u;
const HEADS: u32 = 64u;          // rows of Q in a tile: H ≤ 64, padded with zeros
const DC: u32 = 32u;             // dims per chunk
const PAD: u32 = 8u;
const SR: u32 = DC + PAD;        // row stride of q_s and k_s (f16)

// (the uniform and the bindings: lib/indexer_io.wgsl)

var<workgroup> q_s: array<f16, 2560>;    // [HEADS][SR]
var<workgroup> k_s: array<f16, 5120>;    // [KEYS_PER_WG][SR]: key j's dims contiguous
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

// the keys' quad `e` (of 512: key e / 4, dims c + 8 · (e % 4)), zero past T. FP8: 16 e4m3
// values (of 256: key e / 2, dims c + 16 · (e % 2)).
fn fetch_k(row0: u32, T: u32, s0: u32, c: u32, e: u32) -> vec4<u32> {
    if (KEYS_FP8) {
        let key = s0 + e / 2u;
        if (e >= 256u || key >= T) { return vec4<u32>(0u); }
        return keys[((row0 + key) * params.dim + c) / 16u + e % 2u];
    }
    let key = s0 + e / 4u;
    if (key >= T) { return vec4<u32>(0u); }
    return keys[((row0 + key) * params.dim + c) / 8u + e % 4u];
}

fn put_k(e: u32, v: vec4<u32>) {
    if (KEYS_FP8) {   // 16 e4m3 values as f16 values · 2^-8 (the epilogue's w_s has the 2^8)
        if (e >= 256u) { return; }
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
    // four 16 × 16 accumulators (64 heads × this subgroup's 16 keys): 32 registers, so two
    // workgroups fit an SM
    var c0 = coop_mat16x16<f32, C>(); var c1 = coop_mat16x16<f32, C>();
    var c2 = coop_mat16x16<f32, C>(); var c3 = coop_mat16x16<f32, C>();
    var q0 = fetch_q(b, 0u, lid);
    var q1 = fetch_q(b, 0u, lid + 256u);
    var k0 = fetch_k(row0, T, s0, 0u, lid);
    var k1 = fetch_k(row0, T, s0, 0u, lid + 256u);
    for (var c = 0u; c < D; c += DC) {
        put_q(lid, q0);
        put_q(lid + 256u, q1);
        put_k(lid, k0);
        put_k(lid + 256u, k1);
        workgroupBarrier();   // the chunk is staged before the fragments are loaded
        let cn = c + DC;
        if (cn < D) {         // the next chunk's loads are in flight while this one multiplies
            q0 = fetch_q(b, cn, lid);
            q1 = fetch_q(b, cn, lid + 256u);
            k0 = fetch_k(row0, T, s0, cn, lid);
            k1 = fetch_k(row0, T, s0, cn, lid + 256u);
        }
        for (var kk = 0u; kk < DC; kk += 16u) {
            let ia0 = kk;
            let ia1 = 16u * SR + kk;
            let ia2 = 32u * SR + kk;
            let ia3 = 48u * SR + kk;
            let ib = (s * 16u) * SR + kk;
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&q_s[ia0], SR);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&q_s[ia1], SR);
            let a2 = coopLoadT<coop_mat16x16<f16, A>>(&q_s[ia2], SR);
            let a3 = coopLoadT<coop_mat16x16<f16, A>>(&q_s[ia3], SR);
            let bk = coopLoad<coop_mat16x16<f16, B>>(&k_s[ib], SR);
            c0 = coopMultiplyAdd(a0, bk, c0);
            c1 = coopMultiplyAdd(a1, bk, c1);
            c2 = coopMultiplyAdd(a2, bk, c2);
            c3 = coopMultiplyAdd(a3, bk, c3);
        }
        workgroupBarrier();   // fragments read before the next chunk overwrites them
    }

    // w · ReLU, summed over heads: fragment by fragment through the subgroup's slot (index and
    // stride bound to lets: naga 30's SPIR-V writer panics on inline ones)
    let slot = s * 256u;
    let st = 16u;
    var p0 = 0.0;   // this lane's half of key s·16 + lane % 16
    coopStoreT(c0, &c_s[slot], st); workgroupBarrier(); p0 += fold(slot, lane, 0u); workgroupBarrier();
    coopStoreT(c1, &c_s[slot], st); workgroupBarrier(); p0 += fold(slot, lane, 16u); workgroupBarrier();
    coopStoreT(c2, &c_s[slot], st); workgroupBarrier(); p0 += fold(slot, lane, 32u); workgroupBarrier();
    coopStoreT(c3, &c_s[slot], st); workgroupBarrier(); p0 += fold(slot, lane, 48u); workgroupBarrier();
    // the two halves of each key column meet: slot[lane] holds half lane / 16 of column lane % 16
    c_s[slot + lane] = p0;
    workgroupBarrier();
    let col = lane % 16u;
    let key = s0 + s * 16u + col;
    if (lane < 16u && key < T) {
        var total = c_s[slot + col] + c_s[slot + 16u + col];
        if (KEYS_FP8) {   // times the key's scale, after its values
            let si = params.key_rows * (params.dim / 4u) + row0 + key;
            total *= bitcast<f32>(keys[si / 4u][si % 4u]);
        }
        scores[b * params.score_stride + key] = total;
    }
}
