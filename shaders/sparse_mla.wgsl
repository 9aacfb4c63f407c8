// sparse_mla.wgsl — sparse MLA decode in absorbed (MQA) mode, DeepSeek-V3.2 DSA.
//
//   score[h, j] = (q_abs[h] · c_kv[s_j] + q_pe[h] · k_pe[s_j]) · softmax_scale   s_j = row of id j
//   p[h, ·]     = softmax over the selected rows;   lse[h] = log Σ_j exp(score[h, j])
//   o_lat[h]    = Σ_j p[h, j] · c_kv[s_j]
//
// Every head of a sequence attends to the same k latent rows, each row = c_kv (KV dims) ‖ k_pe
// (ROPE dims). The query is stored the same way: q = q_abs ‖ q_pe. The kernel reads rows only
// through `ids` (-1 = skip): id i of sequence b is row seq[2b] + i of `rows`. In resident mode
// the ids are token ids and seq[2b] is where b's cache starts; in offload mode they are slot ids
// and seq[2b] is where b's pool starts. The kernel cannot tell the two apart: that is what makes
// the two modes give the same bits.
//
// Three entry points, recorded back to back in one pass:
//
// `scores`  workgroup (x, y, z) = (64 ids 64x.., heads 128y.., sequence b0 + z), 256 threads.
//           A GEMM tile S[128 heads × 64 rows] over the KV+ROPE dims, streamed 16 u32 words at a
//           time (32 f16 dims, kept packed in workgroup memory, or 16 f32 dims): q_s[d][h],
//           r_s[word][row]. Thread (hg, rg) owns 8 heads × 4 rows = 8 vec4 registers; per word
//           it reads 2–4 vec4 of q (broadcast in a warp) and one of rows for 32–64 FMAs. The next
//           chunk is loaded into registers while this one is computed. Writes the scores to
//           `scratch` [batch, H, k] (−inf where the id is −1) and, after them, the tile's softmax
//           statistics per head, (max, Σ exp(score − max)) [batch, H, tiles], folded from the
//           threads' partials through q_s once the dot products are done.
// `attend`  workgroup (x, y, z) = (heads 32x.., sequence b0 + y, slice z of the k ids), 256 threads.
//           Flash-decoding over slices of whole score tiles: the slice's softmax statistics are
//           the fold of its tiles' (a few values per head, not a pass over the scores), then the
//           slice's O[32 heads × KV] = softmax(S) · V with V = the c_kv part of the rows,
//           streamed VR rows at a time; thread (hg, dg) owns 8 heads × 8 dims as 16 vec4
//           registers, dims laid out so a warp reads contiguous workgroup memory. Writes the
//           slice's normalised O and its lse; with one slice, o_lat and lse themselves. Slices
//           (split-k) give small batches enough workgroups.
// `reduce`  (only with several slices) one thread per vec4 of o_lat: merges the slices by their
//           lse, in slice order —
//           o = Σ_z e^(lse_z − M) o_z / Σ_z e^(lse_z − M), lse = M + log Σ_z e^(lse_z − M) —
//           the identity of lse_merge.wgsl, for any number of parts.
// Accumulators are named vec4 registers, never private arrays indexed in loops (a driver may keep
// those in local memory, at a fraction of the speed). Every barrier says why it is there.
// Workgroup memory stays under 24 KiB per entry point: NVIDIA's Vulkan driver gives a workgroup's
// SM 48 KiB, so one byte more halves the workgroups per SM (docs/PERF.md measures the cliff).
//
// Left out: FP8 rows, tensor cores. Ids ≥ the number of rows are not checked (robust access
// makes them read junk).

override KV: u32 = 512u;          // kv_lora_rank, a multiple of 64, ≤ 512
override ROPE: u32 = 64u;         // qk_rope_head_dim, a multiple of 32
override ROWS_F16: bool = true;   // rows are f16 pairs packed in u32 (else f32 bit patterns)
override DQ: u32 = KV + ROPE;     // dims of one row / one query

const HT: u32 = 128u;             // scores: heads per workgroup
const RT: u32 = 64u;              // scores: rows per workgroup
const WORDS: u32 = 16u;           // scores: u32 words per row per chunk
override DC: u32 = select(16u, 32u, ROWS_F16);   // scores: dims per chunk
const HB: u32 = 32u;              // attend: heads per workgroup
override VR: u32 = select(8u, 16u, ROWS_F16);    // attend: rows per V chunk (16 KiB)

struct Params {
    heads: u32,          // H (any; workgroups mask heads ≥ H)
    topk: u32,           // ids per sequence
    b0: u32,             // first sequence of this dispatch
    softmax_scale: f32,
    batch: u32,          // sequences in this dispatch
    splits: u32,         // slices of the k ids in `attend`
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;          // [B, H, DQ] = q_abs ‖ q_pe
@group(0) @binding(2) var<storage, read> ids: array<i32>;              // [B, topk], -1 = none
@group(0) @binding(3) var<storage, read> seq: array<u32>;              // [B, 2] = (first row, _)
@group(0) @binding(4) var<storage, read> rows: array<vec4<u32>>;       // [R, DQ] = c_kv ‖ k_pe
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;    // [batch, H, topk] scores,
                                                                      // then [batch, H, tiles, 2] tile stats
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>; // [splits, batch, H, KV]
@group(0) @binding(7) var<storage, read_write> part_lse: array<f32>;   // [splits, batch, H]
@group(0) @binding(8) var<storage, read_write> o_lat: array<vec4<f32>>; // [B, H, KV]
@group(0) @binding(9) var<storage, read_write> lse: array<f32>;        // [B, H]

fn neg_inf() -> f32 { return bitcast<f32>(0xff800000u); }
fn row_words() -> u32 { return select(DQ, DQ / 2u, ROWS_F16); }   // u32 words per row

// ============================================================================ scores

var<workgroup> q_s: array<vec4<f32>, 1024>;   // [DC][HT / 4]
var<workgroup> r_s: array<vec4<u32>, 256>;    // [WORDS][RT / 4]
var<workgroup> ids_s: array<i32, RT>;         // absolute row ids of the tile, -1 = none

@compute @workgroup_size(256)
fn scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let K = params.topk;
    let b = params.b0 + wg.z;
    let j0 = wg.x * RT;
    let h0 = wg.y * HT;
    let hg = lid / 16u;   // heads h0 + 8·hg ..+7
    let rg = lid % 16u;   // tile rows 4·rg ..+3

    if (lid < RT) {
        let id = select(-1i, ids[b * K + j0 + lid], j0 + lid < K);
        ids_s[lid] = select(-1i, id + i32(seq[2u * b]), id >= 0i);
    }
    workgroupBarrier();   // ids_s visible before the first prefetch reads it

    var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);   // acc_i: head 8·hg+i, 4 rows
    var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0); var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0); var acc7 = vec4<f32>(0.0);

    var qn0 = load_q(b, h0, 0u, lid);
    var qn1 = load_q(b, h0, 0u, lid + 256u);
    var qn2 = load_q(b, h0, 0u, lid + 512u);
    var qn3 = load_q(b, h0, 0u, lid + 768u);
    var rn = load_r(0u, lid);
    for (var c = 0u; c < DQ; c += DC) {
        workgroupBarrier();   // the last chunk's reads of q_s / r_s are done
        store_q(lid, qn0);
        store_q(lid + 256u, qn1);
        store_q(lid + 512u, qn2);
        store_q(lid + 768u, qn3);
        store_r(lid, rn);
        workgroupBarrier();   // q_s and r_s complete before the dot products read them
        if (c + DC < DQ) {
            qn0 = load_q(b, h0, c + DC, lid);
            qn1 = load_q(b, h0, c + DC, lid + 256u);
            qn2 = load_q(b, h0, c + DC, lid + 512u);
            qn3 = load_q(b, h0, c + DC, lid + 768u);
            rn = load_r(c + DC, lid);
        }
        for (var wd = 0u; wd < WORDS; wd++) {
            let pr = r_s[wd * 16u + rg];
            var r0: vec4<f32>;   // rows 4·rg ..+3 at dim d
            var r1: vec4<f32>;   // … at dim d + 1 (f16 only)
            if (ROWS_F16) {
                let u0 = unpack2x16float(pr.x); let u1 = unpack2x16float(pr.y);
                let u2 = unpack2x16float(pr.z); let u3 = unpack2x16float(pr.w);
                r0 = vec4<f32>(u0.x, u1.x, u2.x, u3.x);
                r1 = vec4<f32>(u0.y, u1.y, u2.y, u3.y);
            } else {
                r0 = bitcast<vec4<f32>>(pr);
            }
            let d = select(wd, 2u * wd, ROWS_F16);
            var qa = q_s[d * 32u + hg * 2u];        // heads 8·hg ..+3
            var qb = q_s[d * 32u + hg * 2u + 1u];   // heads 8·hg+4 ..+7
            acc0 = fma(vec4<f32>(qa.x), r0, acc0); acc1 = fma(vec4<f32>(qa.y), r0, acc1);
            acc2 = fma(vec4<f32>(qa.z), r0, acc2); acc3 = fma(vec4<f32>(qa.w), r0, acc3);
            acc4 = fma(vec4<f32>(qb.x), r0, acc4); acc5 = fma(vec4<f32>(qb.y), r0, acc5);
            acc6 = fma(vec4<f32>(qb.z), r0, acc6); acc7 = fma(vec4<f32>(qb.w), r0, acc7);
            if (ROWS_F16) {
                qa = q_s[(d + 1u) * 32u + hg * 2u];
                qb = q_s[(d + 1u) * 32u + hg * 2u + 1u];
                acc0 = fma(vec4<f32>(qa.x), r1, acc0); acc1 = fma(vec4<f32>(qa.y), r1, acc1);
                acc2 = fma(vec4<f32>(qa.z), r1, acc2); acc3 = fma(vec4<f32>(qa.w), r1, acc3);
                acc4 = fma(vec4<f32>(qb.x), r1, acc4); acc5 = fma(vec4<f32>(qb.y), r1, acc5);
                acc6 = fma(vec4<f32>(qb.z), r1, acc6); acc7 = fma(vec4<f32>(qb.w), r1, acc7);
            }
        }
    }
    workgroupBarrier();   // every thread is done reading q_s: it now holds the tile statistics
    let h = h0 + hg * 8u;
    let jt = j0 + rg * 4u;
    store_scores(wg.z, h, jt, hg * 8u, rg, acc0);
    store_scores(wg.z, h + 1u, jt, hg * 8u + 1u, rg, acc1);
    store_scores(wg.z, h + 2u, jt, hg * 8u + 2u, rg, acc2);
    store_scores(wg.z, h + 3u, jt, hg * 8u + 3u, rg, acc3);
    store_scores(wg.z, h + 4u, jt, hg * 8u + 4u, rg, acc4);
    store_scores(wg.z, h + 5u, jt, hg * 8u + 5u, rg, acc5);
    store_scores(wg.z, h + 6u, jt, hg * 8u + 6u, rg, acc6);
    store_scores(wg.z, h + 7u, jt, hg * 8u + 7u, rg, acc7);
    workgroupBarrier();   // all 16 partial statistics of every head are in q_s
    // The tile's softmax statistics per head, (max, Σ exp(score − max)), for `attend`: thread
    // `lid` < HT folds the 16 partials of head h0 + lid, in order.
    let hl = lid;
    if (hl < HT && h0 + hl < params.heads) {
        var m = neg_inf();
        for (var i = 0u; i < 16u; i++) { m = max(m, stat_get(hl * 16u + i)); }
        var l = 0.0;
        if (m != neg_inf()) {
            for (var i = 0u; i < 16u; i++) {
                let mi = stat_get(hl * 16u + i);
                if (mi != neg_inf()) { l += stat_get(2048u + hl * 16u + i) * exp(mi - m); }
            }
        }
        let st = stats_at(wg.z, h0 + hl, wg.x);
        scratch[st] = m;
        scratch[st + 1u] = l;
    }
}

// Score tiles per sequence (RT ids each).
fn tiles() -> u32 { return (params.topk + RT - 1u) / RT; }

// Where tile t's (max, sum) of head h of the dispatch's sequence bl is: after all the scores.
fn stats_at(bl: u32, h: u32, t: u32) -> u32 {
    return params.batch * params.heads * params.topk + 2u * ((bl * params.heads + h) * tiles() + t);
}

// The statistics scratch aliases q_s after the last chunk: float i of [max: HT × 16 | sum: HT × 16].
fn stat_set(i: u32, v: f32) { q_s[i / 4u][i % 4u] = v; }
fn stat_get(i: u32) -> f32 { return q_s[i / 4u][i % 4u]; }

// Scale and store one head's scores for ids j .. j+3 (−inf for an id of −1 or past k), and put
// their (max, Σ exp(s − max)) at partial rg of local head hl in the statistics scratch.
fn store_scores(bl: u32, h: u32, j: u32, hl: u32, rg: u32, acc: vec4<f32>) {
    let K = params.topk;
    let r = j % RT;
    let s = acc * params.softmax_scale;
    let v = vec4<f32>(
        select(neg_inf(), s.x, j < K && ids_s[r] >= 0i),
        select(neg_inf(), s.y, j + 1u < K && ids_s[r + 1u] >= 0i),
        select(neg_inf(), s.z, j + 2u < K && ids_s[r + 2u] >= 0i),
        select(neg_inf(), s.w, j + 3u < K && ids_s[r + 3u] >= 0i));
    let m = max(max(v.x, v.y), max(v.z, v.w));
    var l = 0.0;
    if (m != neg_inf()) { l = exp(v.x - m) + exp(v.y - m) + exp(v.z - m) + exp(v.w - m); }
    stat_set(hl * 16u + rg, m);
    stat_set(2048u + hl * 16u + rg, l);
    if (h >= params.heads) { return; }
    let base = (bl * params.heads + h) * K;   // scores are per sequence of the dispatch
    if (j < K) { scratch[base + j] = v.x; }
    if (j + 1u < K) { scratch[base + j + 1u] = v.y; }
    if (j + 2u < K) { scratch[base + j + 2u] = v.z; }
    if (j + 3u < K) { scratch[base + j + 3u] = v.w; }
}

// q chunk: HT heads × DC dims as vec4s; idx = part · HT + head (consecutive threads store
// consecutive heads: no bank conflicts). Heads ≥ H load zeros.
fn load_q(b: u32, h0: u32, c: u32, idx: u32) -> vec4<f32> {
    let h = h0 + idx % HT;
    if (idx >= HT * (DC / 4u) || h >= params.heads) { return vec4<f32>(0.0); }
    return q[((b * params.heads + h) * DQ + c) / 4u + idx / HT];
}

fn store_q(idx: u32, v: vec4<f32>) {
    if (idx >= HT * (DC / 4u)) { return; }
    let h = idx % HT;
    let d = (idx / HT) * 4u;
    q_s[d * 32u + h / 4u][h % 4u] = v.x;
    q_s[(d + 1u) * 32u + h / 4u][h % 4u] = v.y;
    q_s[(d + 2u) * 32u + h / 4u][h % 4u] = v.z;
    q_s[(d + 3u) * 32u + h / 4u][h % 4u] = v.w;
}

// row chunk: RT rows × 16 words = 4 vec4<u32> per row; idx = part · RT + row.
fn load_r(c: u32, idx: u32) -> vec4<u32> {
    let id = ids_s[idx % RT];
    if (id < 0i) { return vec4<u32>(0u); }
    return rows[(u32(id) * row_words() + select(c, c / 2u, ROWS_F16)) / 4u + idx / RT];
}

fn store_r(idx: u32, v: vec4<u32>) {
    let r = idx % RT;
    let wd = (idx / RT) * 4u;
    r_s[wd * 16u + r / 4u][r % 4u] = v.x;
    r_s[(wd + 1u) * 16u + r / 4u][r % 4u] = v.y;
    r_s[(wd + 2u) * 16u + r / 4u][r % 4u] = v.z;
    r_s[(wd + 3u) * 16u + r / 4u][r % 4u] = v.w;
}

// ============================================================================ attend

var<workgroup> v_s: array<vec4<u32>, 1024>;   // [VR][KV words / 4]: f16 pairs or f32 bits (16 KiB)
var<workgroup> p_s: array<vec4<f32>, 128>;    // [VR][HB / 4] probabilities of the chunk
var<workgroup> red_m: array<f32, 256>;        // [HB][8] partial maxima
var<workgroup> red_l: array<f32, 256>;        // [HB][8] partial sums
var<workgroup> m_s: array<f32, HB>;           // max score per head
var<workgroup> l_s: array<f32, HB>;           // Σ exp(score − max) per head

@compute @workgroup_size(256)
fn attend(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let K = params.topk;
    let H = params.heads;
    let b = params.b0 + wg.y;
    let h0 = wg.x * HB;
    // Slices are whole score tiles (RT ids), so the tiles' statistics add up to the slice's.
    let per_split = ((K + params.splits - 1u) / params.splits + RT - 1u) / RT * RT;
    let js = min(wg.z * per_split, K);           // this slice: ids js .. je
    let je = min(js + per_split, K);

    // ---- softmax statistics of the slice from the tiles' (max, sum): thread (sh, sp) folds
    // tiles t0+sp, t0+sp+8, … of head sh
    {
        let sh = lid / 8u;
        let sp = lid % 8u;
        var m = neg_inf();
        var l = 0.0;
        if (h0 + sh < H && js < je) {   // (an empty slice at the end starts at k, inside a tile)
            for (var t = js / RT + sp; t * RT < je; t += 8u) {
                let at = stats_at(wg.y, h0 + sh, t);
                let tm = scratch[at];
                if (tm != neg_inf()) {
                    let m_new = max(m, tm);
                    l = l * exp(m - m_new) + scratch[at + 1u] * exp(tm - m_new);
                    m = m_new;
                }
            }
        }
        red_m[lid] = m;
        red_l[lid] = l;
        workgroupBarrier();   // all partial (max, sum) pairs visible
        if (sp == 0u) {
            var mm = neg_inf();
            for (var i = 0u; i < 8u; i++) { mm = max(mm, red_m[sh * 8u + i]); }
            var ll = 0.0;
            if (mm != neg_inf()) {
                for (var i = 0u; i < 8u; i++) {
                    let mi = red_m[sh * 8u + i];
                    if (mi != neg_inf()) { ll += red_l[sh * 8u + i] * exp(mi - mm); }
                }
            }
            m_s[sh] = mm;
            l_s[sh] = ll;
        }
        workgroupBarrier();   // m_s and l_s final before probabilities are formed
    }

    // ---- O = P · V
    let hg = lid / 64u;   // heads h0 + 8·hg ..+7
    let dg = lid % 64u;   // dims: f16 8·dg ..+7; f32 4·dg ..+3 and KV/2 + 4·dg ..+3
    let owns_dims = dg * 8u < KV;
    var o0a = vec4<f32>(0.0); var o0b = vec4<f32>(0.0);
    var o1a = vec4<f32>(0.0); var o1b = vec4<f32>(0.0);
    var o2a = vec4<f32>(0.0); var o2b = vec4<f32>(0.0);
    var o3a = vec4<f32>(0.0); var o3b = vec4<f32>(0.0);
    var o4a = vec4<f32>(0.0); var o4b = vec4<f32>(0.0);
    var o5a = vec4<f32>(0.0); var o5b = vec4<f32>(0.0);
    var o6a = vec4<f32>(0.0); var o6b = vec4<f32>(0.0);
    var o7a = vec4<f32>(0.0); var o7b = vec4<f32>(0.0);

    var pn0 = load_p(wg.y, h0, js, je, lid);
    var pn1 = load_p(wg.y, h0, js, je, lid + 256u);
    var vn0 = load_v(b, js, je, lid);
    var vn1 = load_v(b, js, je, lid + 256u);
    var vn2 = load_v(b, js, je, lid + 512u);
    var vn3 = load_v(b, js, je, lid + 768u);
    for (var j0 = js; j0 < je; j0 += VR) {
        workgroupBarrier();   // the last chunk's reads of p_s / v_s are done
        store_p(lid, pn0);
        store_p(lid + 256u, pn1);
        store_v(lid, vn0);
        store_v(lid + 256u, vn1);
        store_v(lid + 512u, vn2);
        store_v(lid + 768u, vn3);
        workgroupBarrier();   // P and V chunks complete
        if (j0 + VR < je) {
            pn0 = load_p(wg.y, h0, j0 + VR, je, lid);
            pn1 = load_p(wg.y, h0, j0 + VR, je, lid + 256u);
            vn0 = load_v(b, j0 + VR, je, lid);
            vn1 = load_v(b, j0 + VR, je, lid + 256u);
            vn2 = load_v(b, j0 + VR, je, lid + 512u);
            vn3 = load_v(b, j0 + VR, je, lid + 768u);
        }
        if (owns_dims) {   // (no barrier inside: the branch may diverge)
            for (var r = 0u; r < VR; r++) {
                let pa = p_s[r * 8u + hg * 2u];        // heads 8·hg ..+3
                let pb = p_s[r * 8u + hg * 2u + 1u];   // heads 8·hg+4 ..+7
                var va: vec4<f32>;
                var vb: vec4<f32>;
                if (ROWS_F16) {
                    let wv = v_s[r * (KV / 8u) + dg];
                    va = vec4<f32>(unpack2x16float(wv.x), unpack2x16float(wv.y));
                    vb = vec4<f32>(unpack2x16float(wv.z), unpack2x16float(wv.w));
                } else {
                    va = bitcast<vec4<f32>>(v_s[r * (KV / 4u) + dg]);
                    vb = bitcast<vec4<f32>>(v_s[r * (KV / 4u) + KV / 8u + dg]);
                }
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

    if (owns_dims) {
        let slot = wg.z * params.batch + wg.y;   // (slice, sequence) of the partial
        store_head(slot, b, h0, hg * 8u, dg, o0a, o0b);
        store_head(slot, b, h0, hg * 8u + 1u, dg, o1a, o1b);
        store_head(slot, b, h0, hg * 8u + 2u, dg, o2a, o2b);
        store_head(slot, b, h0, hg * 8u + 3u, dg, o3a, o3b);
        store_head(slot, b, h0, hg * 8u + 4u, dg, o4a, o4b);
        store_head(slot, b, h0, hg * 8u + 5u, dg, o5a, o5b);
        store_head(slot, b, h0, hg * 8u + 6u, dg, o6a, o6b);
        store_head(slot, b, h0, hg * 8u + 7u, dg, o7a, o7b);
    }
}

// Store one head's 8 output dims of the slice (normalised over the slice); dim group 0 also
// stores the slice's lse (−inf for a slice without a valid id). With one slice the result is
// final: it goes straight to o_lat and lse, and `reduce` is not recorded.
fn store_head(slot: u32, b: u32, h0: u32, hl: u32, dg: u32, oa: vec4<f32>, ob: vec4<f32>) {
    let h = h0 + hl;
    if (h >= params.heads) { return; }
    let l = l_s[hl];
    let slice_lse = select(neg_inf(), m_s[hl] + log(l), l > 0.0);
    let ia = select(dg, 2u * dg, ROWS_F16);            // vec4 index of oa within the head
    let ib = select(KV / 8u + dg, 2u * dg + 1u, ROWS_F16);
    if (params.splits == 1u) {
        let base = (b * params.heads + h) * (KV / 4u);
        o_lat[base + ia] = oa;
        o_lat[base + ib] = ob;
        if (dg == 0u) { lse[b * params.heads + h] = slice_lse; }
    } else {
        let base = (slot * params.heads + h) * (KV / 4u);
        partials[base + ia] = oa;
        partials[base + ib] = ob;
        if (dg == 0u) { part_lse[slot * params.heads + h] = slice_lse; }
    }
}

// P chunk: VR ids × HB heads; idx = head · VR + row (consecutive threads read consecutive ids).
// Ids at or past `je` (the slice's end) give p = 0.
fn load_p(bl: u32, h0: u32, j0: u32, je: u32, idx: u32) -> f32 {
    let hl = idx / VR;
    let j = j0 + idx % VR;
    if (hl >= HB || h0 + hl >= params.heads || j >= je) { return 0.0; }
    let m = m_s[hl];
    let s = scratch[(bl * params.heads + h0 + hl) * params.topk + j];
    if (s == neg_inf()) { return 0.0; }   // also covers m = −inf (then every s is −inf)
    return exp(s - m) / l_s[hl];
}

fn store_p(idx: u32, p: f32) {
    let hl = idx / VR;
    if (hl >= HB) { return; }
    let r = idx % VR;
    p_s[r * 8u + hl / 4u][hl % 4u] = p;
}

fn v_vecs() -> u32 { return select(KV / 4u, KV / 8u, ROWS_F16); }   // vec4<u32> of c_kv per row

// V chunk: VR rows × the c_kv words; idx = row · v_vecs() + part (a straight copy).
fn load_v(b: u32, j0: u32, je: u32, idx: u32) -> vec4<u32> {
    let r = idx / v_vecs();
    let j = j0 + r;
    if (r >= VR || j >= je) { return vec4<u32>(0u); }
    let id = ids[b * params.topk + j];
    if (id < 0i) { return vec4<u32>(0u); }
    return rows[(u32(id) + seq[2u * b]) * row_words() / 4u + idx % v_vecs()];
}

fn store_v(idx: u32, v: vec4<u32>) {
    if (idx >= VR * v_vecs()) { return; }
    v_s[idx] = v;
}

// ============================================================================ reduce

// o_lat[b0 + ·] = the slices merged by their lse, one thread per vec4, slices in order.
@compute @workgroup_size(256)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * 256u;
    let n = params.batch * params.heads * (KV / 4u);   // vec4s per slice
    if (e >= n) { return; }
    let row = e / (KV / 4u);                            // (sequence in dispatch, head)
    let rows_per_slice = params.batch * params.heads;
    var mx = neg_inf();
    for (var sl = 0u; sl < params.splits; sl++) { mx = max(mx, part_lse[sl * rows_per_slice + row]); }
    var o = vec4<f32>(0.0);
    var wsum = 0.0;
    if (mx != neg_inf()) {
        for (var sl = 0u; sl < params.splits; sl++) {
            let lz = part_lse[sl * rows_per_slice + row];
            if (lz != neg_inf()) {
                let wz = exp(lz - mx);
                o += wz * partials[sl * n + e];
                wsum += wz;
            }
        }
        o /= wsum;
    }
    o_lat[params.b0 * params.heads * (KV / 4u) + e] = o;
    if (e % (KV / 4u) == 0u) {
        lse[params.b0 * params.heads + row] = select(neg_inf(), mx + log(wsum), wsum > 0.0);
    }
}
