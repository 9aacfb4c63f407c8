// sparse_mla.wgsl — sparse MLA decode in absorbed (MQA) mode, DeepSeek-V3.2 DSA.
//
//   score[h, s] = (q_abs[h] · c_kv[s] + q_pe[h] · k_pe[s]) · softmax_scale     s ∈ topk_indices[b]
//   p[h, ·]     = softmax over the selected s;   lse[h] = log Σ_s exp(score[h, s])
//   o_lat[h]    = Σ_s p[h, s] · c_kv[s]
//
// Every head of a sequence attends to the same k latent rows, each row = c_kv (KV dims) ‖ k_pe
// (ROPE dims). The query is stored the same way: q = q_abs ‖ q_pe. The kernel reads rows only
// through `ids` (row ids into `rows`; -1 = skip), so it cannot tell a resident cache from an
// offloaded pool: that is what makes the two modes give the same bits.
//
// Mapping: workgroup (x, y) = (heads 32x .. 32x+31, sequence b0 + y), 256 threads. The k ids are
// walked in tiles of ST = 64 rows with an online softmax (running max m, running sum l):
//   phase 1  S[32 heads × 64 rows] = Q · Rᵀ: the KV+ROPE dims are streamed 32 at a time through
//            workgroup memory (q_s[d][h], r_s[d][row]); thread (hi, si) owns 2 heads × 4 rows.
//   softmax  8 threads per head find the tile max, rescale factor α = e^(m_old − m_new),
//            p = e^(s − m_new) and the tile sum; l ← α·l + Σp.
//   phase 2  O[32 heads × KV] ← α·O + P · V, V = the c_kv part of the same rows, streamed 8 rows
//            at a time; thread (hg, dg) owns 8 heads × 8 dims (dims 8·dg .. while < KV) for the
//            whole run, as 16 named vec4 registers (a private array indexed in a loop may be
//            left in local memory by the driver, at a fraction of the speed).
// Rows are read from global memory twice per tile (once per phase); the second read hits cache.
//
// Left out: FP8 rows, heads split across workgroups of one sequence (split-k flash decoding),
// tensor cores. Ids ≥ the number of rows are not checked (robust access makes them read junk).

override KV: u32 = 512u;          // kv_lora_rank, a multiple of 64, ≤ 512
override ROPE: u32 = 64u;         // qk_rope_head_dim, a multiple of 32
override ROWS_F16: bool = true;   // rows are f16 pairs packed in u32 (else f32 bit patterns)

const HB: u32 = 32u;              // heads per workgroup
const ST: u32 = 64u;              // rows per tile
const DC: u32 = 32u;              // dims per phase-1 chunk
const VR: u32 = 8u;               // rows per phase-2 chunk
override DQ: u32 = KV + ROPE;     // dims of one row / one query

struct Params {
    heads: u32,          // H (any; the last workgroup masks heads ≥ H)
    topk: u32,           // ids per sequence
    b0: u32,             // first sequence of this dispatch
    softmax_scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;        // [B, H, DQ] = q_abs ‖ q_pe
@group(0) @binding(2) var<storage, read> ids: array<i32>;            // [B, topk] row ids, -1 = none
@group(0) @binding(3) var<storage, read> seq: array<u32>;            // [B, 2] = (first row, _)
@group(0) @binding(4) var<storage, read> rows: array<vec4<u32>>;     // [R, DQ] = c_kv ‖ k_pe
@group(0) @binding(5) var<storage, read_write> o_lat_v: array<vec4<f32>>; // [B, H, KV]
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;      // [B, H]

var<workgroup> q_s: array<vec2<f32>, 512>;     // phase 1: [DC][HB / 2]
var<workgroup> tile_s: array<vec4<f32>, 1024>; // phase 1: r_s [DC][ST / 4]; phase 2: v_s [VR][KV / 4]
var<workgroup> p_s: array<vec4<f32>, 512>;     // [ST][HB / 4]: scores, then probabilities
var<workgroup> red_s: array<f32, 256>;         // [HB][8] partial max / sum
var<workgroup> m_s: array<f32, HB>;            // running max per head
var<workgroup> l_s: array<f32, HB>;            // running sum per head
var<workgroup> alpha_s: array<f32, HB>;        // this tile's rescale factor per head
var<workgroup> ids_s: array<i32, ST>;           // row ids of the tile (base added), -1 = none

fn neg_inf() -> f32 { return bitcast<f32>(0xff800000u); }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let H = params.heads;
    let K = params.topk;
    let b = params.b0 + wg.y;
    let h0 = wg.x * HB;
    let row_words = select(DQ, DQ / 2u, ROWS_F16);   // u32 words per row

    // phase-1 ownership: heads h0 + 2·hi + {0,1}, tile rows 4·si + {0..3}
    let hi = lid / 16u;
    let si = lid % 16u;
    // phase-2 ownership: heads h0 + 8·hg + {0..7}, dims 8·dg + {0..7} (idle when 8·dg ≥ KV)
    let hg = lid / 64u;
    let dg = lid % 64u;
    let owns_dims = dg * 8u < KV;
    // softmax ownership: head sh, tile rows 8·sp + {0..7}
    let sh = lid / 8u;
    let sp = lid % 8u;

    // o_i_a: head hg·8+i, dims 8·dg ..+3;  o_i_b: dims 8·dg+4 ..+7
    var o0a = vec4<f32>(0.0); var o0b = vec4<f32>(0.0);
    var o1a = vec4<f32>(0.0); var o1b = vec4<f32>(0.0);
    var o2a = vec4<f32>(0.0); var o2b = vec4<f32>(0.0);
    var o3a = vec4<f32>(0.0); var o3b = vec4<f32>(0.0);
    var o4a = vec4<f32>(0.0); var o4b = vec4<f32>(0.0);
    var o5a = vec4<f32>(0.0); var o5b = vec4<f32>(0.0);
    var o6a = vec4<f32>(0.0); var o6b = vec4<f32>(0.0);
    var o7a = vec4<f32>(0.0); var o7b = vec4<f32>(0.0);
    if (lid < HB) {
        m_s[lid] = neg_inf();
        l_s[lid] = 0.0;
    }

    for (var t0 = 0u; t0 < K; t0 += ST) {
        workgroupBarrier();   // the previous tile's phase 2 is done with tile_s, p_s and ids_s
        if (lid < ST) {
            let id = select(-1i, ids[b * K + t0 + lid], t0 + lid < K);
            ids_s[lid] = select(-1i, id + i32(seq[2u * b]), id >= 0i);
        }

        // ---- phase 1: scores for 2 heads × 4 rows per thread
        var s0 = vec4<f32>(0.0);   // head 2·hi,     rows 4·si ..+3
        var s1 = vec4<f32>(0.0);   // head 2·hi + 1, rows 4·si ..+3
        workgroupBarrier();   // ids_s visible before the first prefetch reads it
        // Software pipeline: chunk c+DC is loaded into registers while chunk c is computed, so
        // global-memory latency hides behind arithmetic instead of stalling at every barrier.
        var q_next = load_q(b, h0 + lid / 8u, c_part(lid), 0u);
        var r_next0 = load_r(0u, lid);
        var r_next1 = load_r(0u, lid + 256u);
        for (var c = 0u; c < DQ; c += DC) {
            workgroupBarrier();   // the last chunk's reads of q_s / tile_s are done
            store_q(lid, q_next);
            store_r(lid, r_next0);
            store_r(lid + 256u, r_next1);
            workgroupBarrier();   // q_s and r_s complete before the dot products read them
            if (c + DC < DQ) {
                q_next = load_q(b, h0 + lid / 8u, c_part(lid), c + DC);
                r_next0 = load_r(c + DC, lid);
                r_next1 = load_r(c + DC, lid + 256u);
            }
            for (var d = 0u; d < DC; d++) {
                let qv = q_s[d * 16u + hi];
                let rv = tile_s[d * 16u + si];
                s0 = fma(vec4<f32>(qv.x), rv, s0);
                s1 = fma(vec4<f32>(qv.y), rv, s1);
            }
        }
        {   // scale, mask invalid ids to -inf, store as p_s[row][head]
            let hc = (hi * 2u) / 4u;
            let hl = (hi * 2u) % 4u;
            let sa = s0 * params.softmax_scale;
            let sb = s1 * params.softmax_scale;
            for (var j = 0u; j < 4u; j++) {
                let r = si * 4u + j;
                let valid = ids_s[r] >= 0i;
                p_s[r * 8u + hc][hl] = select(neg_inf(), sa[j], valid);
                p_s[r * 8u + hc][hl + 1u] = select(neg_inf(), sb[j], valid);
            }
        }
        workgroupBarrier();   // all scores of the tile are in p_s

        // ---- online softmax: 8 threads per head, 8 rows each
        var tile_max = neg_inf();
        for (var j = 0u; j < 8u; j++) { tile_max = max(tile_max, p_s[(sp * 8u + j) * 8u + sh / 4u][sh % 4u]); }
        red_s[sh * 8u + sp] = tile_max;
        workgroupBarrier();   // partial maxima visible
        for (var j = 0u; j < 8u; j++) { tile_max = max(tile_max, red_s[sh * 8u + j]); }
        let m_old = m_s[sh];
        let m_new = max(m_old, tile_max);
        var part_sum = 0.0;
        for (var j = 0u; j < 8u; j++) {
            let e = (sp * 8u + j) * 8u + sh / 4u;
            var p = 0.0;
            if (m_new != neg_inf()) { p = exp(p_s[e][sh % 4u] - m_new); }
            p_s[e][sh % 4u] = p;
            part_sum += p;
        }
        workgroupBarrier();   // every thread has read red_s (maxima) and m_s before they change
        red_s[sh * 8u + sp] = part_sum;
        workgroupBarrier();   // partial sums visible
        if (sp == 0u) {
            var tile_sum = 0.0;
            for (var j = 0u; j < 8u; j++) { tile_sum += red_s[sh * 8u + j]; }
            var alpha = 1.0;
            if (m_new != neg_inf()) { alpha = exp(m_old - m_new); }
            alpha_s[sh] = alpha;
            l_s[sh] = l_s[sh] * alpha + tile_sum;
            m_s[sh] = m_new;
        }
        workgroupBarrier();   // alpha_s, l_s, m_s and p_s final for this tile

        // ---- phase 2: O ← α·O + P·V for 8 heads × 8 dims per thread
        {
            let a = hg * 8u;
            o0a *= alpha_s[a]; o0b *= alpha_s[a];
            o1a *= alpha_s[a + 1u]; o1b *= alpha_s[a + 1u];
            o2a *= alpha_s[a + 2u]; o2b *= alpha_s[a + 2u];
            o3a *= alpha_s[a + 3u]; o3b *= alpha_s[a + 3u];
            o4a *= alpha_s[a + 4u]; o4b *= alpha_s[a + 4u];
            o5a *= alpha_s[a + 5u]; o5b *= alpha_s[a + 5u];
            o6a *= alpha_s[a + 6u]; o6b *= alpha_s[a + 6u];
            o7a *= alpha_s[a + 7u]; o7b *= alpha_s[a + 7u];
        }
        var v_next0 = load_v(0u, lid);
        var v_next1 = load_v(0u, lid + 256u);
        var v_next2 = load_v(0u, lid + 512u);
        var v_next3 = load_v(0u, lid + 768u);
        for (var r0 = 0u; r0 < ST; r0 += VR) {
            workgroupBarrier();   // the previous chunk's reads of tile_s are done
            store_v(lid, v_next0);
            store_v(lid + 256u, v_next1);
            store_v(lid + 512u, v_next2);
            store_v(lid + 768u, v_next3);
            workgroupBarrier();   // V chunk complete
            if (r0 + VR < ST) {
                v_next0 = load_v(r0 + VR, lid);
                v_next1 = load_v(r0 + VR, lid + 256u);
                v_next2 = load_v(r0 + VR, lid + 512u);
                v_next3 = load_v(r0 + VR, lid + 768u);
            }
            if (owns_dims) {
                for (var r = 0u; r < VR; r++) {
                    let pa = p_s[(r0 + r) * 8u + hg * 2u];        // heads hg·8 ..+3
                    let pb = p_s[(r0 + r) * 8u + hg * 2u + 1u];   // heads hg·8+4 ..+7
                    let va = tile_s[(r * KV + dg * 8u) / 4u];
                    let vb = tile_s[(r * KV + dg * 8u) / 4u + 1u];
                    o0a = fma(vec4<f32>(pa.x), va, o0a); o0b = fma(vec4<f32>(pa.x), vb, o0b);
                    o1a = fma(vec4<f32>(pa.y), va, o1a); o1b = fma(vec4<f32>(pa.y), vb, o1b);
                    o2a = fma(vec4<f32>(pa.z), va, o2a); o2b = fma(vec4<f32>(pa.z), vb, o2b);
                    o3a = fma(vec4<f32>(pa.w), va, o3a); o3b = fma(vec4<f32>(pa.w), vb, o3b);
                    o4a = fma(vec4<f32>(pb.x), va, o4a); o4b = fma(vec4<f32>(pb.x), vb, o4b);
                    o5a = fma(vec4<f32>(pb.y), va, o5a); o5b = fma(vec4<f32>(pb.y), vb, o5b);
                    o6a = fma(vec4<f32>(pb.z), va, o6a); o6b = fma(vec4<f32>(pb.z), vb, o6b);
                    o7a = fma(vec4<f32>(pb.w), va, o7a); o7b = fma(vec4<f32>(pb.w), vb, o7b);
                }
            }
        }
    }

    workgroupBarrier();   // l_s and m_s final
    if (owns_dims) {
        store_head(b, h0, hg * 8u, dg, o0a, o0b);
        store_head(b, h0, hg * 8u + 1u, dg, o1a, o1b);
        store_head(b, h0, hg * 8u + 2u, dg, o2a, o2b);
        store_head(b, h0, hg * 8u + 3u, dg, o3a, o3b);
        store_head(b, h0, hg * 8u + 4u, dg, o4a, o4b);
        store_head(b, h0, hg * 8u + 5u, dg, o5a, o5b);
        store_head(b, h0, hg * 8u + 6u, dg, o6a, o6b);
        store_head(b, h0, hg * 8u + 7u, dg, o7a, o7b);
    }
}

// Normalise one head's 8 output dims by l and store them; dim group 0 also stores lse.
fn store_head(b: u32, h0: u32, hl: u32, dg: u32, oa: vec4<f32>, ob: vec4<f32>) {
    let h = h0 + hl;
    if (h >= params.heads) { return; }
    let l = l_s[hl];
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let base = ((b * params.heads + h) * KV + dg * 8u) / 4u;
    o_lat_v[base] = oa * inv;
    o_lat_v[base + 1u] = ob * inv;
    if (dg == 0u) {
        lse[b * params.heads + h] = select(neg_inf(), m_s[hl] + log(l), l > 0.0);
    }
}

// ---- chunk loaders (global → registers) and storers (registers → workgroup memory).
// Each thread moves whole vec4s; an index past the chunk, or a row id of -1, moves zeros.

fn c_part(lid: u32) -> u32 { return lid % 8u; }

// q chunk: 32 heads × DC dims; thread lid carries head lid/8, dims c + 4·(lid%8) ..+3.
fn load_q(b: u32, h: u32, part: u32, c: u32) -> vec4<f32> {
    if (h >= params.heads) { return vec4<f32>(0.0); }
    return q[((b * params.heads + h) * DQ + c) / 4u + part];
}

fn store_q(lid: u32, v: vec4<f32>) {
    let h = lid / 8u;
    let e = (lid % 8u) * 4u * 16u + h / 2u;   // q_s[d][h], d = 4·part + j
    q_s[e][h % 2u] = v.x;
    q_s[e + 16u][h % 2u] = v.y;
    q_s[e + 32u][h % 2u] = v.z;
    q_s[e + 48u][h % 2u] = v.w;
}

fn row_words() -> u32 { return select(DQ, DQ / 2u, ROWS_F16); }
fn r_vecs() -> u32 { return select(8u, 4u, ROWS_F16); }   // vec4<u32> per row per chunk

// row chunk: ST rows × DC dims; index idx = row · r_vecs() + part.
fn load_r(c: u32, idx: u32) -> vec4<u32> {
    if (idx >= ST * r_vecs()) { return vec4<u32>(0u); }
    let id = ids_s[idx / r_vecs()];
    if (id < 0i) { return vec4<u32>(0u); }
    return rows[(u32(id) * row_words() + select(c, c / 2u, ROWS_F16)) / 4u + idx % r_vecs()];
}

fn store_r(idx: u32, v: vec4<u32>) {
    if (idx >= ST * r_vecs()) { return; }
    let r = idx / r_vecs();
    let part = idx % r_vecs();
    if (ROWS_F16) {   // 8 dims: part·8 ..+7, stored transposed as r_s[d][row]
        let e = part * 8u * 16u + r / 4u;
        let p0 = unpack2x16float(v.x);
        let p1 = unpack2x16float(v.y);
        let p2 = unpack2x16float(v.z);
        let p3 = unpack2x16float(v.w);
        tile_s[e][r % 4u] = p0.x;
        tile_s[e + 16u][r % 4u] = p0.y;
        tile_s[e + 32u][r % 4u] = p1.x;
        tile_s[e + 48u][r % 4u] = p1.y;
        tile_s[e + 64u][r % 4u] = p2.x;
        tile_s[e + 80u][r % 4u] = p2.y;
        tile_s[e + 96u][r % 4u] = p3.x;
        tile_s[e + 112u][r % 4u] = p3.y;
    } else {          // 4 dims: part·4 ..+3
        let f = bitcast<vec4<f32>>(v);
        let e = part * 4u * 16u + r / 4u;
        tile_s[e][r % 4u] = f.x;
        tile_s[e + 16u][r % 4u] = f.y;
        tile_s[e + 32u][r % 4u] = f.z;
        tile_s[e + 48u][r % 4u] = f.w;
    }
}

fn v_vecs() -> u32 { return select(KV / 4u, KV / 8u, ROWS_F16); }   // vec4<u32> of c_kv per row

// V chunk: VR rows × KV dims (the c_kv part); index idx = row · v_vecs() + part.
fn load_v(r0: u32, idx: u32) -> vec4<u32> {
    if (idx >= VR * v_vecs()) { return vec4<u32>(0u); }
    let id = ids_s[r0 + idx / v_vecs()];
    if (id < 0i) { return vec4<u32>(0u); }
    return rows[u32(id) * row_words() / 4u + idx % v_vecs()];
}

fn store_v(idx: u32, v: vec4<u32>) {
    if (idx >= VR * v_vecs()) { return; }
    let r = idx / v_vecs();
    let part = idx % v_vecs();
    if (ROWS_F16) {
        tile_s[r * (KV / 4u) + part * 2u] = vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
        tile_s[r * (KV / 4u) + part * 2u + 1u] = vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w));
    } else {
        tile_s[r * (KV / 4u) + part] = bitcast<vec4<f32>>(v);
    }
}
