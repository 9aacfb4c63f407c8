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
//            at a time; thread (hg, dg) owns 8 heads × KV/64 dims in registers for the whole run.
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
override DPT: u32 = KV / 64u;     // output dims per thread in phase 2 (≤ 8)

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
@group(0) @binding(5) var<storage, read_write> o_lat: array<f32>;    // [B, H, KV]
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
    // phase-2 ownership: heads h0 + 8·hg + {0..7}, dims DPT·dg + {0..DPT-1}
    let hg = lid / 64u;
    let dg = lid % 64u;
    // softmax ownership: head sh, tile rows 8·sp + {0..7}
    let sh = lid / 8u;
    let sp = lid % 8u;

    var acc_o: array<array<f32, 8>, 8>;   // [head i][dim j], j < DPT
    for (var i = 0u; i < 8u; i++) { for (var j = 0u; j < 8u; j++) { acc_o[i][j] = 0.0; } }
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
        var acc_s: array<array<f32, 4>, 2>;
        for (var i = 0u; i < 2u; i++) { for (var j = 0u; j < 4u; j++) { acc_s[i][j] = 0.0; } }
        for (var c = 0u; c < DQ; c += DC) {
            workgroupBarrier();   // ids_s written / last chunk's reads done before overwriting
            {   // q chunk: 32 heads × 32 dims, one vec4 per thread
                let h = lid / 8u;
                let part = lid % 8u;
                var v = vec4<f32>(0.0);
                if (h0 + h < H) { v = q[((b * H + h0 + h) * DQ + c) / 4u + part]; }
                for (var j = 0u; j < 4u; j++) { q_s[(part * 4u + j) * 16u + h / 2u][h % 2u] = v[j]; }
            }
            if (ROWS_F16) {   // row chunk: 64 rows × 32 dims = 4 vec4<u32> per row
                let r = lid / 4u;
                let part = lid % 4u;
                let id = ids_s[r];
                var v = vec4<u32>(0u);
                if (id >= 0i) { v = rows[(u32(id) * row_words + c / 2u) / 4u + part]; }
                for (var j = 0u; j < 4u; j++) {
                    let pair = unpack2x16float(v[j]);
                    let d = part * 8u + 2u * j;
                    tile_s[d * 16u + r / 4u][r % 4u] = pair.x;
                    tile_s[(d + 1u) * 16u + r / 4u][r % 4u] = pair.y;
                }
            } else {          // 8 vec4<u32> per row, two per thread
                for (var idx = lid; idx < ST * 8u; idx += 256u) {
                    let r = idx / 8u;
                    let part = idx % 8u;
                    let id = ids_s[r];
                    var v = vec4<u32>(0u);
                    if (id >= 0i) { v = rows[(u32(id) * row_words + c) / 4u + part]; }
                    for (var j = 0u; j < 4u; j++) {
                        tile_s[(part * 4u + j) * 16u + r / 4u][r % 4u] = bitcast<f32>(v[j]);
                    }
                }
            }
            workgroupBarrier();   // q_s and r_s complete before the dot products read them
            for (var d = 0u; d < DC; d++) {
                let qv = q_s[d * 16u + hi];
                let rv = tile_s[d * 16u + si];
                for (var j = 0u; j < 4u; j++) {
                    acc_s[0][j] = fma(qv.x, rv[j], acc_s[0][j]);
                    acc_s[1][j] = fma(qv.y, rv[j], acc_s[1][j]);
                }
            }
        }
        for (var i = 0u; i < 2u; i++) {
            let h = hi * 2u + i;
            for (var j = 0u; j < 4u; j++) {
                let r = si * 4u + j;
                var s = acc_s[i][j] * params.softmax_scale;
                if (ids_s[r] < 0i) { s = neg_inf(); }
                p_s[r * 8u + h / 4u][h % 4u] = s;
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

        // ---- phase 2: O ← α·O + P·V for 8 heads × DPT dims per thread
        for (var i = 0u; i < 8u; i++) {
            let alpha = alpha_s[hg * 8u + i];
            for (var j = 0u; j < DPT; j++) { acc_o[i][j] *= alpha; }
        }
        for (var r0 = 0u; r0 < ST; r0 += VR) {
            workgroupBarrier();   // the previous chunk's reads of tile_s are done
            // V chunk: VR rows × KV dims (the c_kv part only)
            let vecs_per_row = select(KV / 4u, KV / 8u, ROWS_F16);
            for (var idx = lid; idx < VR * vecs_per_row; idx += 256u) {
                let r = idx / vecs_per_row;
                let part = idx % vecs_per_row;
                let id = ids_s[r0 + r];
                var v = vec4<u32>(0u);
                if (id >= 0i) { v = rows[u32(id) * row_words / 4u + part]; }
                if (ROWS_F16) {
                    let lo = unpack2x16float(v.x);
                    let a = unpack2x16float(v.y);
                    let bb = unpack2x16float(v.z);
                    let hi2 = unpack2x16float(v.w);
                    tile_s[r * (KV / 4u) + part * 2u] = vec4<f32>(lo, a);
                    tile_s[r * (KV / 4u) + part * 2u + 1u] = vec4<f32>(bb, hi2);
                } else {
                    tile_s[r * (KV / 4u) + part] = bitcast<vec4<f32>>(v);
                }
            }
            workgroupBarrier();   // V chunk complete
            for (var r = 0u; r < VR; r++) {
                let pa = p_s[(r0 + r) * 8u + hg * 2u];
                let pb = p_s[(r0 + r) * 8u + hg * 2u + 1u];
                var v: array<f32, 8>;
                if (DPT % 4u == 0u) {
                    for (var jj = 0u; jj < DPT / 4u; jj++) {
                        let v4 = tile_s[(r * KV + dg * DPT) / 4u + jj];
                        for (var j = 0u; j < 4u; j++) { v[jj * 4u + j] = v4[j]; }
                    }
                } else {
                    for (var j = 0u; j < DPT; j++) {
                        let e = r * KV + dg * DPT + j;
                        v[j] = tile_s[e / 4u][e % 4u];
                    }
                }
                for (var j = 0u; j < DPT; j++) {
                    for (var i = 0u; i < 4u; i++) {
                        acc_o[i][j] = fma(pa[i], v[j], acc_o[i][j]);
                        acc_o[4u + i][j] = fma(pb[i], v[j], acc_o[4u + i][j]);
                    }
                }
            }
        }
    }

    workgroupBarrier();   // l_s and m_s final
    for (var i = 0u; i < 8u; i++) {
        let hl = hg * 8u + i;
        let h = h0 + hl;
        if (h < H) {
            let l = l_s[hl];
            let inv = select(0.0, 1.0 / l, l > 0.0);
            for (var j = 0u; j < DPT; j++) {
                o_lat[(b * H + h) * KV + dg * DPT + j] = acc_o[i][j] * inv;
            }
            if (dg == 0u) {
                lse[b * H + h] = select(neg_inf(), m_s[hl] + log(l), l > 0.0);
            }
        }
    }
}
