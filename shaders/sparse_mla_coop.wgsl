// sparse_mla_coop.wgsl — sparse MLA decode on the tensor cores (the coop matrix path): the
// `scores` and `attend` steps of sparse_mla.wgsl as cooperative-matrix products, for f16 or FP8 rows
// (dequantised into f16 as they are staged: lib/mla.wgsl).
// The same math, bindings and scratch (lib/mla.wgsl), so sparse_mla.wgsl's `reduce` merges the
// slices of either, and the offload pool and the resident cache stay indistinguishable:
//
//   score[h, j] = (q_abs[h] · c_kv[s_j] + q_pe[h] · k_pe[s_j]) · softmax_scale   s_j = row of id j
//   o_lat[h]    = Σ_j p[h, j] · c_kv[s_j],   p = softmax over the slice's ids;   lse per head
//
// What the tensor cores change: q is rounded to f16 as it is staged, and so is p. Products of
// f16 values are exact in f32 and every sum is f32, so those roundings are the error this path
// adds (src/problems.rs bounds it). P goes in unnormalised and scaled, P_SCALE · exp(score −
// max) ∈ (0, 1024], and O is divided by P_SCALE · Σ exp at the end (as flash attention does):
// a normalised p of a long slice sits near f16's subnormal range (2^-14), where rounding loses
// relative precision and tensor cores may flush to zero; scaled, only terms below 2^-24 of the
// largest do.
// Subgroups of 32 (the host requires it), 256 threads = 8 subgroups a workgroup.
//
// `scores`  workgroup (x, y, z) = (256 ids 256x.., heads 64y.., sequence b0 + z). S[64 heads ×
//           256 ids] = Q · Rᵀ over the DQ dims, streamed 32 at a time through workgroup memory
//           (Q [64][32] and the gathered rows [256][32] f16, rows padded by 8 f16), the next
//           chunk fetched into registers while this one multiplies; subgroup s owns ids s·32 ..
//           +32 for all 64 heads as 4 × 2 fragments (the indexer_coop.wgsl tile). Each fragment
//           is staged through its subgroup's slot and written scaled (−inf for ids of −1); then
//           each (head, 64-id tile) pair's (max, Σ exp(score − max)) is folded from the scores
//           just written, one thread a pair.
// `attend`  workgroup (x, y, z) = (heads 64(x/2).. × half x%2 of the KV dims, sequence b0 + y,
//           slice z of the ids), as sparse_mla.wgsl. The slice's statistics from its tiles'
//           (slice_stats), then O[64 heads × KV/2] = P · V streamed 32 ids at a time: P [64][32]
//           f16 formed from the scores as they are staged (scaled, unnormalised), V [32][KV/2] the rows' half c_kv;
//           subgroup s owns dims 32s .. +32 of the half for all 64 heads (4 × 2 fragments;
//           subgroups past KV/2 multiply padding and store nothing). The epilogue stages each
//           fragment and writes the heads < H: o_lat and lse with one slice, else the slice's
//           partial and lse for `reduce`.

enable f16;
enable wgpu_cooperative_matrix;

const CH: u32 = 64u;          // heads per workgroup (both steps)
const CT: u32 = 256u;         // scores: ids per workgroup
const CD: u32 = 32u;          // scores: dims per chunk
const AR: u32 = 32u;          // attend: ids per chunk
const PAD: u32 = 8u;          // f16 of padding a staged row
const SQ: u32 = CD + PAD;     // row stride of cq_s, cr_s and cp_s (f16)
const SV: u32 = 256u + PAD;   // row stride of cv_s: the largest half row (KV = 512)
const P_SCALE: f32 = 1024.0;  // P's scale on the tensor cores (see the top)

var<workgroup> cq_s: array<f16, 2560>;    // scores: [CH][SQ] the q chunk
var<workgroup> cr_s: array<f16, 10240>;   // scores: [CT][SQ] the rows' chunk, a row's dims contiguous
var<workgroup> crow_s: array<i32, 256>;   // scores: the absolute row of each id of the tile (−1: none)
var<workgroup> cp_s: array<f16, 2560>;    // attend: [CH][SQ] P of the chunk
var<workgroup> cv_s: array<f16, 8448>;    // attend: [AR][SV] V of the chunk
var<workgroup> cc_s: array<f32, 2048>;    // both: 8 subgroups × a 16 × 16 staging slot

// ============================================================================ scores

// 16 c_kv values of an FP8 row (the e4m3 bytes of fp8_fetch16's first piece, and the bits of the
// block's scale) as eight f16 pairs, value · scale: the bits placed (value · 2^-8, lib/fp8.wgsl),
// widened to f32 and multiplied by 2^8 · scale, exact for a block scale in 2^-15 .. 2^7 (where
// the tests' and the engine's rows are: lib/mla.wgsl's fp8_stage8 says why).
fn fp8_f16x16(v: vec4<u32>, scale: u32) -> array<vec2<f16>, 8> {
    let k = bitcast<f32>(scale) * 256.0;   // (bitcast<vec2<f16>> of the bits: naga 30 types it f32)
    var h: array<vec2<f16>, 8>;
    for (var i = 0u; i < 4u; i++) {
        h[2u * i] = vec2<f16>(unpack2x16float(e4m3x2_f16_bits(v[i])) * k);
        h[2u * i + 1u] = vec2<f16>(unpack2x16float(e4m3x2_f16_bits(v[i] >> 16u)) * k);
    }
    return h;
}

// q's vec4 `e` (of 512 in a chunk: head h0 + e / 8, dims c + 4 · (e % 8)), zero past H
fn cfetch_q(b: u32, h0: u32, c: u32, e: u32) -> vec4<f32> {
    let h = h0 + e / 8u;
    if (h >= params.heads) { return vec4<f32>(0.0); }
    return q[((b * params.heads + h) * DQ + c) / 4u + e % 8u];
}

fn cput_q(e: u32, v: vec4<f32>) {
    let at = (e / 8u) * SQ + 4u * (e % 8u);
    cq_s[at] = f16(v.x);
    cq_s[at + 1u] = f16(v.y);
    cq_s[at + 2u] = f16(v.z);
    cq_s[at + 3u] = f16(v.w);
}

// quad `part` (dims c + 8 · part ..+7) of absolute row `row`, zero for −1. FP8 rows: 16 dims
// (half part / 2 of the chunk) in two pieces, part % 2: c_kv, the 16 e4m3 bytes (piece 0) and
// the block's scale (piece 1, in x); k_pe, the two vectors of its 16 bf16 (fp8_put16 converts)
fn cfetch_r(row: i32, c: u32, part: u32) -> vec4<u32> {
    if (row < 0i) { return vec4<u32>(0u); }
    if (ROWS_FP8) { return fp8_fetch16(u32(row), c + 16u * (part / 2u), part % 2u); }
    return rows[(u32(row) * DQ + c) / 8u + part];
}

// Piece `piece` of FP8 row `row`'s 16 dims from d (d a multiple of 16; see cfetch_r).
fn fp8_fetch16(row: u32, d: u32, piece: u32) -> vec4<u32> {
    let base = row * (row_words() / 4u);   // lib/mla.wgsl: rows are whole vec4s
    if (d < KV) {
        if (piece == 0u) { return rows[base + d / 16u]; }
        return vec4<u32>(fp8_scale_word(base, d), 0u, 0u, 0u);   // lib/mla.wgsl
    }
    return rows[fp8_rope_vec(base, d) + piece];
}

// 16 dims of an FP8 row into f16 at `at` of the rows' chunk (c: the chunk's first dim)
fn fp8_put16(at: u32, v: vec4<u32>, w: vec4<u32>, c: u32) {
    if (c < KV) {   // c_kv: e4m3 · scale
        let h = fp8_f16x16(v, w.x);
        for (var i = 0u; i < 8u; i++) {
            cr_s[at + 2u * i] = h[i].x;
            cr_s[at + 2u * i + 1u] = h[i].y;
        }
        return;
    }
    for (var i = 0u; i < 4u; i++) {   // k_pe: bf16 pairs
        cr_s[at + 2u * i] = f16(bf16_value(v[i]));
        cr_s[at + 2u * i + 1u] = f16(bf16_value(v[i] >> 16u));
        cr_s[at + 8u + 2u * i] = f16(bf16_value(w[i]));
        cr_s[at + 8u + 2u * i + 1u] = f16(bf16_value(w[i] >> 16u));
    }
}

// the 8 f16 of a quad into the rows' chunk at `at` (exact: every f16 is an f32). (The V
// chunk has its own copy, cput_v: a function that named both arrays would make each step's
// pipeline reserve both, 50 KiB of workgroup memory, past the 48 KiB an H200 has; no
// validation catches that, the dispatch hangs.)
fn cput_r(at: u32, v: vec4<u32>) {
    for (var i = 0u; i < 4u; i++) {
        let h = vec2<f16>(unpack2x16float(v[i]));
        cr_s[at + 2u * i] = h[0];
        cr_s[at + 2u * i + 1u] = h[1];
    }
}

// the staged fragment (heads hl0 .., ids jl0 .. of the tile) written out scaled, −inf for ids
// of −1, within H and k
fn cput_scores(bl: u32, h0: u32, j0: u32, slot: u32, lane: u32, hl0: u32, jl0: u32) {
    let K = params.topk;
    for (var e = lane; e < 256u; e += 32u) {
        let h = h0 + hl0 + e / 16u;
        let jl = jl0 + e % 16u;
        if (h < params.heads && j0 + jl < K) {
            let v = select(neg_inf(), cc_s[slot + e] * params.softmax_scale, crow_s[jl] >= 0i);
            scratch[(bl * params.heads + h) * K + j0 + jl] = v;
        }
    }
}

// DA (sparse_mla_da.wgsl; the engine's `--overlap da`): each sequence's ids are ordered hits first
// and seq[2b + 1] holds how many lead. PHASE 1 scores the tiles whose 256 ids are all of those,
// after params.gather_wgs workgroups that gather the misses (the grid folded: linear id = x +
// y · grid x, as the indexer's fused gather); PHASE 2 the other tiles; PHASE 0 every tile.
override PHASE: u32 = 0u;

@compute @workgroup_size(256)
fn scores(@builtin(workgroup_id) wg0: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    // (lets and `&`, all uniform: see indexer_coop.wgsl's `main`)
    let id = wg0.x + wg0.y * nwg.x;
    let folded = PHASE == 1u;
    if (folded & (id < params.gather_wgs)) {
        da_gather(id, lid);
        return;
    }
    let gx = (params.topk + CT - 1u) / CT;
    let gy = (params.heads + CH - 1u) / CH;
    let i = id - params.gather_wgs;
    if (folded & (i >= gx * gy * params.batch)) { return; }   // the folded grid's tail
    let wg = select(wg0, vec3<u32>(i % gx, (i / gx) % gy, i / (gx * gy)), folded);
    let bl = wg.z;
    let b = params.b0 + bl;
    let j0 = wg.x * CT;
    let h0 = wg.y * CH;
    let hits_only = j0 + CT <= seq[2u * b + 1u];
    if ((PHASE != 0u) & (hits_only != folded)) { return; }
    let s = lid / 32u;
    let lane = lid % 32u;
    crow_s[lid] = row_of(b, j0 + lid);
    // thread lid stages quad lid % 4 of ids lid / 4 + 64p, p = 0 .. 3: their rows. FP8 rows: 16
    // dims (half lid % 2 of the chunk) of ids lid / 2 and lid / 2 + 128, in two pieces each
    // (cfetch_r): half the loads, each a whole vector
    let fp8_row = j0 + lid / 2u;
    let r0 = row_of(b, select(j0 + lid / 4u, fp8_row, ROWS_FP8));
    let r1 = row_of(b, select(j0 + lid / 4u + 64u, fp8_row, ROWS_FP8));
    let r2 = row_of(b, select(j0 + lid / 4u + 128u, fp8_row + 128u, ROWS_FP8));
    let r3 = row_of(b, select(j0 + lid / 4u + 192u, fp8_row + 128u, ROWS_FP8));
    let part = select(lid % 4u, 2u * (lid % 2u), ROWS_FP8);   // (FP8: the piece is added below)
    let p1 = select(part, part + 1u, ROWS_FP8);
    var c00 = coop_mat16x16<f32, C>(); var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>(); var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>(); var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>(); var c31 = coop_mat16x16<f32, C>();
    var q0 = cfetch_q(b, h0, 0u, lid);
    var q1 = cfetch_q(b, h0, 0u, lid + 256u);
    var k0 = cfetch_r(r0, 0u, part);
    var k1 = cfetch_r(r1, 0u, p1);
    var k2 = cfetch_r(r2, 0u, part);
    var k3 = cfetch_r(r3, 0u, p1);
    for (var c = 0u; c < DQ; c += CD) {
        cput_q(lid, q0);
        cput_q(lid + 256u, q1);
        if (ROWS_FP8) {
            let at = (lid / 2u) * SQ + 16u * (lid % 2u);
            fp8_put16(at, k0, k1, c);
            fp8_put16(at + 128u * SQ, k2, k3, c);
        } else {
            let at = (lid / 4u) * SQ + 8u * part;
            cput_r(at, k0);
            cput_r(at + 64u * SQ, k1);
            cput_r(at + 128u * SQ, k2);
            cput_r(at + 192u * SQ, k3);
        }
        workgroupBarrier();   // the chunk is staged before the fragments are loaded
        let c1 = c + CD;
        if (c1 < DQ) {        // the next chunk's loads are in flight while this one multiplies
            q0 = cfetch_q(b, h0, c1, lid);
            q1 = cfetch_q(b, h0, c1, lid + 256u);
            k0 = cfetch_r(r0, c1, part);
            k1 = cfetch_r(r1, c1, p1);
            k2 = cfetch_r(r2, c1, part);
            k3 = cfetch_r(r3, c1, p1);
        }
        for (var kk = 0u; kk < CD; kk += 16u) {
            let ia0 = kk;
            let ia1 = 16u * SQ + kk;
            let ia2 = 32u * SQ + kk;
            let ia3 = 48u * SQ + kk;
            let ib0 = (s * 32u) * SQ + kk;
            let ib1 = (s * 32u + 16u) * SQ + kk;
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&cq_s[ia0], SQ);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&cq_s[ia1], SQ);
            let a2 = coopLoadT<coop_mat16x16<f16, A>>(&cq_s[ia2], SQ);
            let a3 = coopLoadT<coop_mat16x16<f16, A>>(&cq_s[ia3], SQ);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&cr_s[ib0], SQ);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&cr_s[ib1], SQ);
            c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
            c20 = coopMultiplyAdd(a2, b0, c20); c21 = coopMultiplyAdd(a2, b1, c21);
            c30 = coopMultiplyAdd(a3, b0, c30); c31 = coopMultiplyAdd(a3, b1, c31);
        }
        workgroupBarrier();   // fragments read before the next chunk overwrites them
    }

    // the scores, fragment by fragment through the subgroup's slot (index and stride bound to
    // lets: naga 30's SPIR-V writer panics on inline ones)
    let slot = s * 256u;
    let st = 16u;
    let jl = s * 32u;
    coopStoreT(c00, &cc_s[slot], st); workgroupBarrier(); cput_scores(bl, h0, j0, slot, lane, 0u, jl); workgroupBarrier();
    coopStoreT(c10, &cc_s[slot], st); workgroupBarrier(); cput_scores(bl, h0, j0, slot, lane, 16u, jl); workgroupBarrier();
    coopStoreT(c20, &cc_s[slot], st); workgroupBarrier(); cput_scores(bl, h0, j0, slot, lane, 32u, jl); workgroupBarrier();
    coopStoreT(c30, &cc_s[slot], st); workgroupBarrier(); cput_scores(bl, h0, j0, slot, lane, 48u, jl); workgroupBarrier();
    coopStoreT(c01, &cc_s[slot], st); workgroupBarrier(); cput_scores(bl, h0, j0, slot, lane, 0u, jl + 16u); workgroupBarrier();
    coopStoreT(c11, &cc_s[slot], st); workgroupBarrier(); cput_scores(bl, h0, j0, slot, lane, 16u, jl + 16u); workgroupBarrier();
    coopStoreT(c21, &cc_s[slot], st); workgroupBarrier(); cput_scores(bl, h0, j0, slot, lane, 32u, jl + 16u); workgroupBarrier();
    coopStoreT(c31, &cc_s[slot], st); workgroupBarrier(); cput_scores(bl, h0, j0, slot, lane, 48u, jl + 16u);
    storageBarrier();   // every score of the tile written before the statistics read them

    // each 64-id tile's softmax statistics: thread (head lid / 4, tile lid % 4)
    let h = h0 + lid / 4u;
    let jt = j0 + RT * (lid % 4u);
    if (h < params.heads && jt < params.topk) {
        let at = (bl * params.heads + h) * params.topk;
        let je = min(jt + RT, params.topk);
        var m = neg_inf();
        for (var j = jt; j < je; j++) { m = max(m, scratch[at + j]); }
        var l = 0.0;
        if (m != neg_inf()) {
            for (var j = jt; j < je; j++) { l += exp(scratch[at + j] - m); }   // exp(−inf) = 0
        }
        let st_at = stats_at(bl, h, jt / RT);
        scratch[st_at] = m;
        scratch[st_at + 1u] = l;
    }
}

// ============================================================================ attend

// the 4 raw scores of P-part `e` (head e / 8, ids 4 · (e % 8) ..+3 of the chunk at j0), −inf
// past the slice's end je and for heads ≥ H
fn cfetch_s(bl: u32, h0: u32, j0: u32, je: u32, e: u32) -> vec4<f32> {
    var v = vec4<f32>(neg_inf());
    let h = h0 + e / 8u;
    if (h >= params.heads) { return v; }
    let j = j0 + 4u * (e % 8u);
    let at = (bl * params.heads + h) * params.topk + j;
    for (var i = 0u; i < 4u; i++) {
        if (j + i < je) { v[i] = scratch[at + i]; }
    }
    return v;
}

// the 4 weights of P-part `e` into cp_s as f16: P_SCALE · exp(score − max), 0 for −inf
fn cput_p(e: u32, sc: vec4<f32>) {
    let hl = e / 8u;
    let p = select(P_SCALE * exp(sc - m_s[hl]), vec4<f32>(0.0), sc == vec4<f32>(neg_inf()));
    let at = hl * SQ + 4u * (e % 8u);
    cp_s[at] = f16(p.x);
    cp_s[at + 1u] = f16(p.y);
    cp_s[at + 2u] = f16(p.z);
    cp_s[at + 3u] = f16(p.w);
}

// V quad `e` of the chunk at j0 (id j0 + e / VQ, quad e % VQ of half dz of its c_kv), zero for
// ids of −1, past je, or past the chunk. FP8 rows: 16 dims a part (id j0 + e / 16, dims
// 16 · (e % 16) of the half) for e < 512, and for e ≥ 512 the block scale of part e − 512 (in x)
fn cfetch_v(b: u32, j0: u32, je: u32, dz: u32, e: u32) -> vec4<u32> {
    if (ROWS_FP8) {
        let part = e % 512u;
        let j = j0 + part / 16u;
        if (j >= je) { return vec4<u32>(0u); }
        let row = row_of(b, j);
        if (row < 0i) { return vec4<u32>(0u); }
        return fp8_fetch16(u32(row), dz * (KV / 2u) + 16u * (part % 16u), e / 512u);
    }
    let vq = KV / 16u;   // quads of a half row
    let j = j0 + e / vq;
    if (e >= AR * vq || j >= je) { return vec4<u32>(0u); }
    let row = row_of(b, j);
    if (row < 0i) { return vec4<u32>(0u); }
    return rows[u32(row) * (DQ / 8u) + dz * vq + e % vq];
}

// V quad `e` into the V chunk as 8 f16; FP8 rows: part `e` (< 512) with its scale piece `w`
fn cput_v(e: u32, v: vec4<u32>, w: vec4<u32>) {
    if (ROWS_FP8) {   // e4m3 · scale straight into f16 (V is c_kv only)
        if (e >= 512u) { return; }
        let at = (e / 16u) * SV + 16u * (e % 16u);
        let h = fp8_f16x16(v, w.x);
        for (var i = 0u; i < 8u; i++) {
            cv_s[at + 2u * i] = h[i].x;
            cv_s[at + 2u * i + 1u] = h[i].y;
        }
        return;
    }
    let vq = KV / 16u;
    if (e >= AR * vq) { return; }
    let at = (e / vq) * SV + 8u * (e % vq);
    for (var i = 0u; i < 4u; i++) {
        let h = vec2<f16>(unpack2x16float(v[i]));
        cv_s[at + 2u * i] = h[0];
        cv_s[at + 2u * i + 1u] = h[1];
    }
}

// the staged O fragment (heads hl0 .., dims dl0 .. of the half), normalised (÷ P_SCALE · Σ exp),
// written for heads < H and dims inside the half: to o_lat, or to the slice's partial
fn cput_o(b: u32, h0: u32, dz: u32, pslot: u32, slot: u32, lane: u32, hl0: u32, dl0: u32) {
    let H = params.heads;
    for (var e = lane; e < 256u; e += 32u) {
        let hl = hl0 + e / 16u;
        let h = h0 + hl;
        let dl = dl0 + e % 16u;
        if (h < H && dl < KV / 2u) {
            let d = dz * (KV / 2u) + dl;
            let v = cc_s[slot + e] * (il_s[hl] / P_SCALE);
            if (params.splits == 1u) {
                let o = (b * H + h) * KV + d;
                o_lat[o / 4u][o % 4u] = v;
            } else {
                let o = (pslot * H + h) * KV + d;
                partials[o / 4u][o % 4u] = v;
            }
        }
    }
}

@compute @workgroup_size(256)
fn attend(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let H = params.heads;
    let bl = wg.y;
    let b = params.b0 + bl;
    let h0 = (wg.x / 2u) * CH;
    let dz = wg.x % 2u;   // which half of the KV dims
    let slice = slice_ids(wg.z);
    let js = slice.x;
    let je = slice.y;
    slice_stats(bl, h0, js, je, lid);   // lib/mla.wgsl: m_s, l_s, il_s

    let s = lid / 32u;
    let lane = lid % 32u;
    var c00 = coop_mat16x16<f32, C>(); var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>(); var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>(); var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>(); var c31 = coop_mat16x16<f32, C>();
    var p0 = cfetch_s(bl, h0, js, je, lid);
    var p1 = cfetch_s(bl, h0, js, je, lid + 256u);
    var v0 = cfetch_v(b, js, je, dz, lid);
    var v1 = cfetch_v(b, js, je, dz, lid + 256u);
    var v2 = cfetch_v(b, js, je, dz, lid + 512u);
    var v3 = cfetch_v(b, js, je, dz, lid + 768u);
    for (var j0 = js; j0 < je; j0 += AR) {
        cput_p(lid, p0);
        cput_p(lid + 256u, p1);
        cput_v(lid, v0, v2);          // (FP8: v2, v3 are the scales of v0, v1)
        cput_v(lid + 256u, v1, v3);
        cput_v(lid + 512u, v2, v2);
        cput_v(lid + 768u, v3, v3);
        workgroupBarrier();   // P and V staged before the fragments are loaded
        let j1 = j0 + AR;
        if (j1 < je) {        // the next chunk's loads are in flight while this one multiplies
            p0 = cfetch_s(bl, h0, j1, je, lid);
            p1 = cfetch_s(bl, h0, j1, je, lid + 256u);
            v0 = cfetch_v(b, j1, je, dz, lid);
            v1 = cfetch_v(b, j1, je, dz, lid + 256u);
            v2 = cfetch_v(b, j1, je, dz, lid + 512u);
            v3 = cfetch_v(b, j1, je, dz, lid + 768u);
        }
        for (var kk = 0u; kk < AR; kk += 16u) {
            let ia0 = kk;
            let ia1 = 16u * SQ + kk;
            let ia2 = 32u * SQ + kk;
            let ia3 = 48u * SQ + kk;
            let ib0 = kk * SV + s * 32u;
            let ib1 = kk * SV + s * 32u + 16u;
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&cp_s[ia0], SQ);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&cp_s[ia1], SQ);
            let a2 = coopLoadT<coop_mat16x16<f16, A>>(&cp_s[ia2], SQ);
            let a3 = coopLoadT<coop_mat16x16<f16, A>>(&cp_s[ia3], SQ);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&cv_s[ib0], SV);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&cv_s[ib1], SV);
            c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
            c20 = coopMultiplyAdd(a2, b0, c20); c21 = coopMultiplyAdd(a2, b1, c21);
            c30 = coopMultiplyAdd(a3, b0, c30); c31 = coopMultiplyAdd(a3, b1, c31);
        }
        workgroupBarrier();   // fragments read before the next chunk overwrites them
    }

    // O, fragment by fragment through the subgroup's slot; then the slice's lse per head
    let pslot = wg.z * params.batch + bl;   // (slice, sequence) of the partial
    let slot = s * 256u;
    let st = 16u;
    let dl = s * 32u;
    coopStoreT(c00, &cc_s[slot], st); workgroupBarrier(); cput_o(b, h0, dz, pslot, slot, lane, 0u, dl); workgroupBarrier();
    coopStoreT(c10, &cc_s[slot], st); workgroupBarrier(); cput_o(b, h0, dz, pslot, slot, lane, 16u, dl); workgroupBarrier();
    coopStoreT(c20, &cc_s[slot], st); workgroupBarrier(); cput_o(b, h0, dz, pslot, slot, lane, 32u, dl); workgroupBarrier();
    coopStoreT(c30, &cc_s[slot], st); workgroupBarrier(); cput_o(b, h0, dz, pslot, slot, lane, 48u, dl); workgroupBarrier();
    coopStoreT(c01, &cc_s[slot], st); workgroupBarrier(); cput_o(b, h0, dz, pslot, slot, lane, 0u, dl + 16u); workgroupBarrier();
    coopStoreT(c11, &cc_s[slot], st); workgroupBarrier(); cput_o(b, h0, dz, pslot, slot, lane, 16u, dl + 16u); workgroupBarrier();
    coopStoreT(c21, &cc_s[slot], st); workgroupBarrier(); cput_o(b, h0, dz, pslot, slot, lane, 32u, dl + 16u); workgroupBarrier();
    coopStoreT(c31, &cc_s[slot], st); workgroupBarrier(); cput_o(b, h0, dz, pslot, slot, lane, 48u, dl + 16u);
    let h = h0 + lid;
    if (dz == 0u && lid < CH && h < H) {
        let l = l_s[lid];
        let slice_lse = select(neg_inf(), m_s[lid] + log(l), l > 0.0);
        if (params.splits == 1u) {
            lse[b * H + h] = slice_lse;
        } else {
            part_lse[pslot * H + h] = slice_lse;
        }
    }
}
