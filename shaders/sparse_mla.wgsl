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
// Three steps, recorded back to back in one pass (`scores` or `scores_narrow`, then `attend`,
// then `reduce` when there are several slices):
//
// `scores`  workgroup (x, y, z) = (256 ids 256x.., heads 64y.., sequence b0 + z), 256 threads: the
//           indexer's tile. A GEMM tile S[64 heads × 256 rows] over the KV+ROPE dims, streamed 16
//           u32 words at a time (32 f16 dims, kept packed in workgroup memory, or 16 f32 dims):
//           q_s[d][h], r_s[word][row]. Thread (hg, kg) owns 8 heads × 8 rows = 16 vec4 registers;
//           per word it reads 2–4 vec4 of q (broadcast in a warp) and 2 of rows for 64–128 FMAs.
//           Thread t loads row 256x + t in every chunk (its row index stays in a register), and
//           the next chunk is loaded into registers while this one is computed. Writes the scores
//           to `scratch` [batch, H, k] (−inf where the id is −1) and, after them, each 64-id
//           tile's softmax statistics per head, (max, Σ exp(score − max)) [batch, H, tiles],
//           folded from the threads' partials through r_s, one tile at a time.
// `scores_narrow`  the same for grids too small to fill the GPU with `scores` (batch 1, the
//           small preset's 16 heads): 128 heads × 64 ids a workgroup, 8 heads × 4 ids a thread.
// `attend`  workgroup (x, y, z) = (heads 64(x/2).. × half x%2 of the KV dims, sequence b0 + y,
//           slice z of the k ids), 256 threads. Flash-decoding over slices of whole score tiles:
//           the slice's softmax statistics are the fold of its tiles' (a few values per head, not
//           a pass over the scores), then the slice's O[64 heads × KV/2] = softmax(S) · V with
//           V = that half of the rows' c_kv, streamed VR = 16 rows at a time; thread (hg, dg)
//           owns 8 heads × 8 dims as 16 vec4 registers (a warp: one head group, so P reads are
//           broadcasts, and contiguous V). Half rows rather than whole ones let the workgroup
//           take twice the heads and twice the rows per chunk for the same prefetch registers:
//           1024 FMAs a thread between barriers instead of 512 (691 → 653 µs on the H100).
//           Writes the slice's normalised O and its lse; with one slice, o_lat and lse
//           themselves. Slices (split-k) give small batches enough workgroups.
// `reduce`  (only with several slices) one thread per vec4 of o_lat: merges the slices by their
//           lse, in slice order —
//           o = Σ_z e^(lse_z − M) o_z / Σ_z e^(lse_z − M), lse = M + log Σ_z e^(lse_z − M) —
//           the identity of lse_merge.wgsl, for any number of parts.
// Accumulators are named vec4 registers, never private arrays indexed in loops (a driver may keep
// those in local memory, at a fraction of the speed). Every barrier says why it is there.
// Two limits set the shapes, both measured on an H100 (docs/PERF.md): workgroup memory stays at
// or under 24 KiB (the driver gives an SM 48 KiB of it, so one byte more halves the workgroups
// per SM), and registers at or under 128 a thread (the same halving); the inner loops' bounds
// carry `params.zero` so that the driver's full unrolling cannot push them over.
//
// FP8 rows (ROWS_FP8, lib/mla.wgsl): fetched raw and dequantised into f16 pairs as they are
// staged, so everything after the staging is the f16 kernel. Ids ≥ the number of rows are not
// checked (robust access makes them read junk).

override VV: u32 = select(KV / 4u, KV / 8u, ROWS_F16);   // vec4<u32> of c_kv per row

const HT: u32 = 64u;              // scores: heads per workgroup
const NHT: u32 = 128u;            // scores_narrow: heads per workgroup (RT ids)
const RW: u32 = 256u;             // scores: ids per workgroup
const SW: u32 = 16u;              // scores: u32 words per row per chunk
override DC: u32 = select(SW, 2u * SW, ROWS_F16);   // scores: dims per chunk (32 f16, 16 f32)
const VR: u32 = 16u;              // attend: rows per V chunk (8 KiB f16, 16 KiB f32), 4 ids of P a thread
const_assert VR * HB == 4u * AT;
// attend: V chunk vec4s per thread, rounded up (f16 rows: 2; f32: 4)
override VW: u32 = VV / 2u;      // attend: vec4<u32> of a half row of c_kv
override VPT: u32 = (VR * VW + AT - 1u) / AT;
override PART_HEADS: bool = true;   // attend: H is not a multiple of HB (set by the host)


// ============================================================================ scores

var<workgroup> q_s: array<vec4<f32>, DC * HT / 4u>;   // [DC][HT / 4]
var<workgroup> r_s: array<vec4<u32>, SW * RW / 4u>;   // [SW][RW / 4]; after the loop: tile statistics
                                              // (24 KiB in all: the most that keeps 2 per SM)

@compute @workgroup_size(256)
fn scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.z;
    let j0 = wg.x * RW;
    let h0 = wg.y * HT;
    let hg = lid / 32u;   // heads h0 + 8·hg ..+7
    let kg = lid % 32u;   // ids j0 + 4·kg ..+3 (a) and j0 + 128 + 4·kg ..+3 (b)
    // Thread lid loads row j0 + lid in every chunk: its absolute row index, or −1.
    let my_row = row_of(b, j0 + lid);

    var a0 = vec4<f32>(0.0); var c0 = vec4<f32>(0.0);   // a_i, c_i: head 8·hg+i, ids a, b
    var a1 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var c4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0); var c5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0); var c6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0); var c7 = vec4<f32>(0.0);

    var qn0 = load_q(b, h0, 0u, lid, HT);
    var qn1 = load_q(b, h0, 0u, lid + 256u, HT);
    var rn0 = load_r(my_row, 0u, 0u);
    var rn1 = load_r(my_row, 0u, 1u);
    var rn2: vec4<u32>;
    var rn3: vec4<u32>;
    rn2 = load_r(my_row, 0u, 2u);
    rn3 = load_r(my_row, 0u, 3u);
    for (var c = 0u; c < DQ; c += DC) {
        workgroupBarrier();   // the last chunk's reads of q_s / r_s are done
        store_q(lid, qn0);
        store_q(lid + 256u, qn1);
        store_r(lid, 0u, staged(rn0, c));
        store_r(lid, 1u, staged(rn1, c));
        store_r(lid, 2u, staged(rn2, c));
        store_r(lid, 3u, staged(rn3, c));
        workgroupBarrier();   // q_s and r_s complete before the dot products read them
        if (c + DC < DQ) {
            qn0 = load_q(b, h0, c + DC, lid, HT);
            qn1 = load_q(b, h0, c + DC, lid + 256u, HT);
            rn0 = load_r(my_row, c + DC, 0u);
            rn1 = load_r(my_row, c + DC, 1u);
            rn2 = load_r(my_row, c + DC, 2u);
            rn3 = load_r(my_row, c + DC, 3u);
        }
        for (var wd = 0u; wd < SW + params.zero; wd++) {   // (see Params.zero)
            let pa = r_s[wd * 64u + kg];         // ids a at word wd
            let pb = r_s[wd * 64u + 32u + kg];   // ids b
            var ra: vec4<f32>;   // ids a at dim d
            var rb: vec4<f32>;   // ids b at dim d
            var ra2: vec4<f32>;  // … at dim d + 1 (f16 only)
            var rb2: vec4<f32>;
            if (ROWS_F16) {   // lib/f16.wgsl
                let ua = unpack_pairs(pa);
                let ub = unpack_pairs(pb);
                ra = ua[0];
                ra2 = ua[1];
                rb = ub[0];
                rb2 = ub[1];
            } else {
                ra = bitcast<vec4<f32>>(pa);
                rb = bitcast<vec4<f32>>(pb);
            }
            let d = select(wd, 2u * wd, ROWS_F16);
            var qa = q_s[d * 16u + hg * 2u];        // heads 8·hg ..+3 (broadcast in a warp)
            var qb = q_s[d * 16u + hg * 2u + 1u];   // heads 8·hg+4 ..+7
            a0 = fma(vec4<f32>(qa.x), ra, a0); c0 = fma(vec4<f32>(qa.x), rb, c0);
            a1 = fma(vec4<f32>(qa.y), ra, a1); c1 = fma(vec4<f32>(qa.y), rb, c1);
            a2 = fma(vec4<f32>(qa.z), ra, a2); c2 = fma(vec4<f32>(qa.z), rb, c2);
            a3 = fma(vec4<f32>(qa.w), ra, a3); c3 = fma(vec4<f32>(qa.w), rb, c3);
            a4 = fma(vec4<f32>(qb.x), ra, a4); c4 = fma(vec4<f32>(qb.x), rb, c4);
            a5 = fma(vec4<f32>(qb.y), ra, a5); c5 = fma(vec4<f32>(qb.y), rb, c5);
            a6 = fma(vec4<f32>(qb.z), ra, a6); c6 = fma(vec4<f32>(qb.z), rb, c6);
            a7 = fma(vec4<f32>(qb.w), ra, a7); c7 = fma(vec4<f32>(qb.w), rb, c7);
            if (ROWS_F16) {   // the word's second dim
                qa = q_s[(d + 1u) * 16u + hg * 2u];
                qb = q_s[(d + 1u) * 16u + hg * 2u + 1u];
                a0 = fma(vec4<f32>(qa.x), ra2, a0); c0 = fma(vec4<f32>(qa.x), rb2, c0);
                a1 = fma(vec4<f32>(qa.y), ra2, a1); c1 = fma(vec4<f32>(qa.y), rb2, c1);
                a2 = fma(vec4<f32>(qa.z), ra2, a2); c2 = fma(vec4<f32>(qa.z), rb2, c2);
                a3 = fma(vec4<f32>(qa.w), ra2, a3); c3 = fma(vec4<f32>(qa.w), rb2, c3);
                a4 = fma(vec4<f32>(qb.x), ra2, a4); c4 = fma(vec4<f32>(qb.x), rb2, c4);
                a5 = fma(vec4<f32>(qb.y), ra2, a5); c5 = fma(vec4<f32>(qb.y), rb2, c5);
                a6 = fma(vec4<f32>(qb.z), ra2, a6); c6 = fma(vec4<f32>(qb.z), rb2, c6);
                a7 = fma(vec4<f32>(qb.w), ra2, a7); c7 = fma(vec4<f32>(qb.w), rb2, c7);
            }
        }
    }

    // Scores out, and each 64-id tile's softmax statistics per head, (max, Σ exp(s − max)), for
    // `attend`. A thread's ids a lie in tile 4·x + kg/16, ids b in tile 4·x + 2 + kg/16; each
    // (tile, head) has 16 partials (kg mod 16), folded through r_s one tile at a time.
    let h = h0 + hg * 8u;
    let hl = hg * 8u;
    let ja = j0 + kg * 4u;
    let jb = ja + 128u;
    let va = valid4(b, ja);
    let vb = valid4(b, jb);
    for (var t = 0u; t < 4u; t++) {   // tile 4·x + t
        workgroupBarrier();   // r_s is free: the dot products' (or the last fold's) reads are done
        if (t < 2u && kg / 16u == t) {
            store8(wg.z, h, ja, hl, kg, va, a0, a1, a2, a3, a4, a5, a6, a7);
        }
        if (t >= 2u && kg / 16u == t - 2u) {
            store8(wg.z, h, jb, hl, kg, vb, c0, c1, c2, c3, c4, c5, c6, c7);
        }
        workgroupBarrier();   // the tile's partials are complete
        fold_stats(wg.z, h0, 4u * wg.x + t, lid);
    }
}

// store_scores for the thread's 8 heads.
fn store8(bl: u32, h: u32, j: u32, hl: u32, kg: u32, valid: vec4<bool>, s0: vec4<f32>,
          s1: vec4<f32>, s2: vec4<f32>, s3: vec4<f32>, s4: vec4<f32>, s5: vec4<f32>,
          s6: vec4<f32>, s7: vec4<f32>) {
    store_scores(bl, h, j, hl, kg, valid, s0);
    store_scores(bl, h + 1u, j, hl + 1u, kg, valid, s1);
    store_scores(bl, h + 2u, j, hl + 2u, kg, valid, s2);
    store_scores(bl, h + 3u, j, hl + 3u, kg, valid, s3);
    store_scores(bl, h + 4u, j, hl + 4u, kg, valid, s4);
    store_scores(bl, h + 5u, j, hl + 5u, kg, valid, s5);
    store_scores(bl, h + 6u, j, hl + 6u, kg, valid, s6);
    store_scores(bl, h + 7u, j, hl + 7u, kg, valid, s7);
}


// Which of ids j .. j+3 of sequence b are real (not −1, not past k).
fn valid4(b: u32, j: u32) -> vec4<bool> {
    return vec4<bool>(row_of(b, j) >= 0i, row_of(b, j + 1u) >= 0i, row_of(b, j + 2u) >= 0i,
                      row_of(b, j + 3u) >= 0i);
}


// The statistics scratch in r_s: partial i (of 16) of local head hl of the tile being folded:
// the max at float hl · 16 + i, the sum 1024 floats later.
fn stat_set(i: u32, v: f32) { r_s[i / 4u][i % 4u] = bitcast<u32>(v); }
fn stat_get(i: u32) -> f32 { return bitcast<f32>(r_s[i / 4u][i % 4u]); }

// Scale and store one head's scores for ids j .. j+3 (−inf where not valid), and put their
// (max, Σ exp(s − max)) at partial kg mod 16 of local head hl.
fn store_scores(bl: u32, h: u32, j: u32, hl: u32, kg: u32, valid: vec4<bool>, acc: vec4<f32>) {
    let v = select(vec4<f32>(neg_inf()), acc * params.softmax_scale, valid);
    let ml = partial_stats(v);
    let at = hl * 16u + kg % 16u;
    stat_set(at, ml.x);
    stat_set(1024u + at, ml.y);
    put_scores(bl, h, j, v);
}

// (max, Σ exp(s − max)) of four scores (−inf ones add nothing; all −inf gives (−inf, 0)).
fn partial_stats(v: vec4<f32>) -> vec2<f32> {
    let m = max(max(v.x, v.y), max(v.z, v.w));
    var l = 0.0;
    if (m != neg_inf()) { l = exp(v.x - m) + exp(v.y - m) + exp(v.z - m) + exp(v.w - m); }
    return vec2<f32>(m, l);
}

// Scores of ids j .. j+3 (those below k) of head h into `scratch`; nothing for heads ≥ H.
fn put_scores(bl: u32, h: u32, j: u32, v: vec4<f32>) {
    let K = params.topk;
    if (h >= params.heads) { return; }
    let base = (bl * params.heads + h) * K;   // scores are per sequence of the dispatch
    if (j < K) { scratch[base + j] = v.x; }
    if (j + 1u < K) { scratch[base + j + 1u] = v.y; }
    if (j + 2u < K) { scratch[base + j + 2u] = v.z; }
    if (j + 3u < K) { scratch[base + j + 3u] = v.w; }
}

// Fold the 16 partials of tile t (one thread per head) into `scratch`.
fn fold_stats(bl: u32, h0: u32, t: u32, lid: u32) {
    let hl = lid;
    if (hl >= HT || h0 + hl >= params.heads || t >= tiles()) { return; }
    let base = hl * 16u;
    var m = neg_inf();
    for (var i = 0u; i < 16u; i++) { m = max(m, stat_get(base + i)); }
    var l = 0.0;
    if (m != neg_inf()) {
        for (var i = 0u; i < 16u; i++) {
            let mi = stat_get(base + i);
            if (mi != neg_inf()) { l += stat_get(1024u + base + i) * exp(mi - m); }
        }
    }
    let st = stats_at(bl, h0 + hl, t);
    scratch[st] = m;
    scratch[st + 1u] = l;
}

// q chunk of a tile of `ht` heads: ht heads × DC dims as vec4s; idx = part · ht + head
// (consecutive threads store consecutive heads: no bank conflicts). Heads ≥ H load zeros.
fn load_q(b: u32, h0: u32, c: u32, idx: u32, ht: u32) -> vec4<f32> {
    let h = h0 + idx % ht;
    if (idx >= ht * (DC / 4u) || h >= params.heads) { return vec4<f32>(0.0); }
    return q[((b * params.heads + h) * DQ + c) / 4u + idx / ht];
}

fn store_q(idx: u32, v: vec4<f32>) {
    if (idx >= HT * (DC / 4u)) { return; }
    let h = idx % HT;
    let d = (idx / HT) * 4u;
    q_s[d * 16u + h / 4u][h % 4u] = v.x;
    q_s[(d + 1u) * 16u + h / 4u][h % 4u] = v.y;
    q_s[(d + 2u) * 16u + h / 4u][h % 4u] = v.z;
    q_s[(d + 3u) * 16u + h / 4u][h % 4u] = v.w;
}

// Part `part` (of 4) of chunk c of a row: 16 u32 words = 4 vec4 per row (zeros for −1); FP8
// rows: the part's 8 dims raw (lib/mla.wgsl's fp8_fetch8).
fn load_r(row: i32, c: u32, part: u32) -> vec4<u32> {
    if (row < 0i) { return vec4<u32>(0u); }
    if (ROWS_FP8) { return fp8_fetch8(u32(row), c + 8u * part); }
    return rows[(u32(row) * row_words() + select(c, c / 2u, ROWS_F16)) / 4u + part];
}

// A part of chunk c as it is staged: as loaded, or FP8 rows dequantised (lib/mla.wgsl).
fn staged(v: vec4<u32>, c: u32) -> vec4<u32> {
    if (ROWS_FP8) { return fp8_stage8(v, c < KV); }
    return v;
}

// Row `r`'s part into r_s[word][row], transposed (consecutive threads: consecutive words).
fn store_r(r: u32, part: u32, v: vec4<u32>) {
    let wd = part * 4u;
    r_s[wd * 64u + r / 4u][r % 4u] = v.x;
    r_s[(wd + 1u) * 64u + r / 4u][r % 4u] = v.y;
    r_s[(wd + 2u) * 64u + r / 4u][r % 4u] = v.z;
    r_s[(wd + 3u) * 64u + r / 4u][r % 4u] = v.w;
}

// ============================================================================ scores_narrow

// `scores` for small grids (batch 1, or few heads): a tile of 128 heads × 64 ids, 8 heads × 4
// ids a thread, four times the workgroups of `scores` for the same batch. Same outputs.

var<workgroup> nq_s: array<vec4<f32>, 1024>;   // [DC][NHT / 4]
var<workgroup> nr_s: array<vec4<u32>, 256>;    // [SW][RT / 4]
var<workgroup> nids_s: array<i32, RT>;         // absolute row ids of the tile, -1 = none

@compute @workgroup_size(256)
fn scores_narrow(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let K = params.topk;
    let b = params.b0 + wg.z;
    let j0 = wg.x * RT;
    let h0 = wg.y * NHT;
    let hg = lid / 16u;   // heads h0 + 8·hg ..+7
    let rg = lid % 16u;   // tile rows 4·rg ..+3

    if (lid < RT) {
        let id = select(-1i, ids[b * K + j0 + lid], j0 + lid < K);
        nids_s[lid] = select(-1i, id + i32(seq[2u * b]), id >= 0i);
    }
    workgroupBarrier();   // nids_s visible before the first prefetch reads it

    var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);   // acc_i: head 8·hg+i, 4 rows
    var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0); var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0); var acc7 = vec4<f32>(0.0);

    var qn0 = load_q(b, h0, 0u, lid, NHT);
    var qn1 = load_q(b, h0, 0u, lid + 256u, NHT);
    var qn2 = load_q(b, h0, 0u, lid + 512u, NHT);
    var qn3 = load_q(b, h0, 0u, lid + 768u, NHT);
    var rn = nload_r(0u, lid);
    for (var c = 0u; c < DQ; c += DC) {
        workgroupBarrier();   // the last chunk's reads of nq_s / nr_s are done
        nstore_q(lid, qn0);
        nstore_q(lid + 256u, qn1);
        nstore_q(lid + 512u, qn2);
        nstore_q(lid + 768u, qn3);
        nstore_r(lid, staged(rn, c));
        workgroupBarrier();   // nq_s and nr_s complete before the dot products read them
        if (c + DC < DQ) {
            qn0 = load_q(b, h0, c + DC, lid, NHT);
            qn1 = load_q(b, h0, c + DC, lid + 256u, NHT);
            qn2 = load_q(b, h0, c + DC, lid + 512u, NHT);
            qn3 = load_q(b, h0, c + DC, lid + 768u, NHT);
            rn = nload_r(c + DC, lid);
        }
        for (var wd = 0u; wd < SW + params.zero; wd++) {   // (see Params.zero)
            let pr = nr_s[wd * 16u + rg];
            var r0: vec4<f32>;   // rows 4·rg ..+3 at dim d
            var r1: vec4<f32>;   // … at dim d + 1 (f16 only)
            if (ROWS_F16) {   // lib/f16.wgsl
                let u = unpack_pairs(pr);
                r0 = u[0];
                r1 = u[1];
            } else {
                r0 = bitcast<vec4<f32>>(pr);
            }
            let d = select(wd, 2u * wd, ROWS_F16);
            var qa = nq_s[d * 32u + hg * 2u];        // heads 8·hg ..+3
            var qb = nq_s[d * 32u + hg * 2u + 1u];   // heads 8·hg+4 ..+7
            acc0 = fma(vec4<f32>(qa.x), r0, acc0); acc1 = fma(vec4<f32>(qa.y), r0, acc1);
            acc2 = fma(vec4<f32>(qa.z), r0, acc2); acc3 = fma(vec4<f32>(qa.w), r0, acc3);
            acc4 = fma(vec4<f32>(qb.x), r0, acc4); acc5 = fma(vec4<f32>(qb.y), r0, acc5);
            acc6 = fma(vec4<f32>(qb.z), r0, acc6); acc7 = fma(vec4<f32>(qb.w), r0, acc7);
            if (ROWS_F16) {
                qa = nq_s[(d + 1u) * 32u + hg * 2u];
                qb = nq_s[(d + 1u) * 32u + hg * 2u + 1u];
                acc0 = fma(vec4<f32>(qa.x), r1, acc0); acc1 = fma(vec4<f32>(qa.y), r1, acc1);
                acc2 = fma(vec4<f32>(qa.z), r1, acc2); acc3 = fma(vec4<f32>(qa.w), r1, acc3);
                acc4 = fma(vec4<f32>(qb.x), r1, acc4); acc5 = fma(vec4<f32>(qb.y), r1, acc5);
                acc6 = fma(vec4<f32>(qb.z), r1, acc6); acc7 = fma(vec4<f32>(qb.w), r1, acc7);
            }
        }
    }
    workgroupBarrier();   // every thread is done reading nq_s: it now holds the tile statistics
    let h = h0 + hg * 8u;
    let jt = j0 + rg * 4u;
    nstore_scores(wg.z, h, jt, hg * 8u, rg, acc0);
    nstore_scores(wg.z, h + 1u, jt, hg * 8u + 1u, rg, acc1);
    nstore_scores(wg.z, h + 2u, jt, hg * 8u + 2u, rg, acc2);
    nstore_scores(wg.z, h + 3u, jt, hg * 8u + 3u, rg, acc3);
    nstore_scores(wg.z, h + 4u, jt, hg * 8u + 4u, rg, acc4);
    nstore_scores(wg.z, h + 5u, jt, hg * 8u + 5u, rg, acc5);
    nstore_scores(wg.z, h + 6u, jt, hg * 8u + 6u, rg, acc6);
    nstore_scores(wg.z, h + 7u, jt, hg * 8u + 7u, rg, acc7);
    workgroupBarrier();   // all 16 partial statistics of every head are in nq_s
    // The tile's softmax statistics per head, (max, Σ exp(score − max)), for `attend`: thread
    // `lid` < NHT folds the 16 partials of head h0 + lid, in order.
    let hl = lid;
    if (hl < NHT && h0 + hl < params.heads) {
        var m = neg_inf();
        for (var i = 0u; i < 16u; i++) { m = max(m, nstat_get(hl * 16u + i)); }
        var l = 0.0;
        if (m != neg_inf()) {
            for (var i = 0u; i < 16u; i++) {
                let mi = nstat_get(hl * 16u + i);
                if (mi != neg_inf()) { l += nstat_get(2048u + hl * 16u + i) * exp(mi - m); }
            }
        }
        let st = stats_at(wg.z, h0 + hl, wg.x);
        scratch[st] = m;
        scratch[st + 1u] = l;
    }
}

// The statistics scratch aliases nq_s after the last chunk: float i of [max: NHT × 16 | sum: NHT × 16].
fn nstat_set(i: u32, v: f32) { nq_s[i / 4u][i % 4u] = v; }
fn nstat_get(i: u32) -> f32 { return nq_s[i / 4u][i % 4u]; }

// Scale and store one head's scores for ids j .. j+3 (−inf for an id of −1 or past k), and put
// their (max, Σ exp(s − max)) at partial rg of local head hl in the statistics scratch.
fn nstore_scores(bl: u32, h: u32, j: u32, hl: u32, rg: u32, acc: vec4<f32>) {
    let K = params.topk;
    let r = j % RT;
    let s = acc * params.softmax_scale;
    let v = vec4<f32>(
        select(neg_inf(), s.x, j < K && nids_s[r] >= 0i),
        select(neg_inf(), s.y, j + 1u < K && nids_s[r + 1u] >= 0i),
        select(neg_inf(), s.z, j + 2u < K && nids_s[r + 2u] >= 0i),
        select(neg_inf(), s.w, j + 3u < K && nids_s[r + 3u] >= 0i));
    let ml = partial_stats(v);
    nstat_set(hl * 16u + rg, ml.x);
    nstat_set(2048u + hl * 16u + rg, ml.y);
    put_scores(bl, h, j, v);
}

fn nstore_q(idx: u32, v: vec4<f32>) {
    if (idx >= NHT * (DC / 4u)) { return; }
    let h = idx % NHT;
    let d = (idx / NHT) * 4u;
    nq_s[d * 32u + h / 4u][h % 4u] = v.x;
    nq_s[(d + 1u) * 32u + h / 4u][h % 4u] = v.y;
    nq_s[(d + 2u) * 32u + h / 4u][h % 4u] = v.z;
    nq_s[(d + 3u) * 32u + h / 4u][h % 4u] = v.w;
}

// row chunk: RT rows × 16 words = 4 vec4<u32> per row; idx = part · RT + row.
fn nload_r(c: u32, idx: u32) -> vec4<u32> {
    return load_r(nids_s[idx % RT], c, idx / RT);
}

fn nstore_r(idx: u32, v: vec4<u32>) {
    let r = idx % RT;
    let wd = (idx / RT) * 4u;
    nr_s[wd * 16u + r / 4u][r % 4u] = v.x;
    nr_s[(wd + 1u) * 16u + r / 4u][r % 4u] = v.y;
    nr_s[(wd + 2u) * 16u + r / 4u][r % 4u] = v.z;
    nr_s[(wd + 3u) * 16u + r / 4u][r % 4u] = v.w;
}

// ============================================================================ attend

var<workgroup> v_s: array<vec4<u32>, VR * VW>;   // [VR][VW]: half rows, f16 pairs or f32 bits (8 KiB f16, 16 KiB f32)
var<workgroup> p_s: array<vec4<f32>, VR * HB / 4u>;   // [VR][HB / 4] probabilities of the chunk

@compute @workgroup_size(AT)
fn attend(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let K = params.topk;
    let H = params.heads;
    let b = params.b0 + wg.y;
    let h0 = (wg.x / 2u) * HB;
    let dz = wg.x % 2u;                          // which half of the KV dims
    let slice = slice_ids(wg.z);
    let js = slice.x;                            // this slice: ids js .. je
    let je = slice.y;

    // ---- softmax statistics of the slice from the tiles' (max, sum): thread (sh, sp) folds
    // tiles t0+sp, t0+sp+4, … of head sh. (lib/mla.wgsl's slice_stats computes the same for
    // sparse_mla_coop.wgsl; called here instead of written out, it made this kernel 3% slower on
    // the H200, 650 against 631 µs at v32 batch 64, in two runs of one lease: docs/PERF.md.)
    {
        let sh = lid / 4u;
        let sp = lid % 4u;
        var m = neg_inf();
        var l = 0.0;
        if (h0 + sh < H && js < je) {   // (an empty slice at the end starts at k, inside a tile)
            for (var t = js / RT + sp; t * RT < je; t += 4u) {
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
            for (var i = 0u; i < 4u; i++) { mm = max(mm, red_m[sh * 4u + i]); }
            var ll = 0.0;
            if (mm != neg_inf()) {
                for (var i = 0u; i < 4u; i++) {
                    let mi = red_m[sh * 4u + i];
                    if (mi != neg_inf()) { ll += red_l[sh * 4u + i] * exp(mi - mm); }
                }
            }
            m_s[sh] = mm;
            l_s[sh] = ll;
            il_s[sh] = select(0.0, 1.0 / ll, ll > 0.0);
        }
        workgroupBarrier();   // m_s and l_s final before probabilities are formed
    }

    // ---- O = P · V over this workgroup's half of the dims
    let hg = lid / 32u;   // heads h0 + 8·hg ..+7 (one head group a warp: P reads broadcast)
    let dg = lid % 32u;   // dims of the half: f16 8·dg ..+7; f32 4·dg ..+3 and KV/4 + 4·dg ..+3
    // Warps without a head skip the products (warp-uniform). Tested only where H is not a multiple
    // of HB: on the H100 the test in the v32 kernel costs 7% even though it never fails. (`&` and
    // `|`, not `&&` and `||`: naga turns those into branches, which the driver does not fold.)
    let owns_dims = (dg < KV / 16u) & (!PART_HEADS | (h0 + 8u * hg < H));
    var o0a = vec4<f32>(0.0); var o0b = vec4<f32>(0.0);
    var o1a = vec4<f32>(0.0); var o1b = vec4<f32>(0.0);
    var o2a = vec4<f32>(0.0); var o2b = vec4<f32>(0.0);
    var o3a = vec4<f32>(0.0); var o3b = vec4<f32>(0.0);
    var o4a = vec4<f32>(0.0); var o4b = vec4<f32>(0.0);
    var o5a = vec4<f32>(0.0); var o5b = vec4<f32>(0.0);
    var o6a = vec4<f32>(0.0); var o6b = vec4<f32>(0.0);
    var o7a = vec4<f32>(0.0); var o7b = vec4<f32>(0.0);

    // P chunk: VR × HB values, 4 consecutive ids of one head a thread. V chunk: VR half rows of
    // VW vec4s, VPT (≤ 4) a thread; parts 2 and 3 only where VPT > 2 (a branch on a constant).
    // Everything for chunk j0 + VR is loaded into registers while chunk j0 is computed, and the
    // row ids run one chunk further ahead, so a row load never waits on its id's load.
    let first = i32(seq[2u * b]);   // b's first row
    let pp = p_part(wg.y, h0, lid);
    var pn = load_p4(pp, js, je);
    var rw0 = v_row(b, first, js, je, lid); var rw1 = v_row(b, first, js, je, lid + AT);
    var rw2 = -1i; var rw3 = -1i;
    if (VPT > 2u) { rw2 = v_row(b, first, js, je, lid + 2u * AT); rw3 = v_row(b, first, js, je, lid + 3u * AT); }
    var vn0 = load_v_at(rw0, dz, lid);
    var vn1 = load_v_at(rw1, dz, lid + AT);
    var vn2 = vec4<u32>(0u); var vn3 = vec4<u32>(0u);
    if (VPT > 2u) { vn2 = load_v_at(rw2, dz, lid + 2u * AT); vn3 = load_v_at(rw3, dz, lid + 3u * AT); }
    rw0 = v_row(b, first, js + VR, je, lid); rw1 = v_row(b, first, js + VR, je, lid + AT);
    if (VPT > 2u) { rw2 = v_row(b, first, js + VR, je, lid + 2u * AT); rw3 = v_row(b, first, js + VR, je, lid + 3u * AT); }
    for (var j0 = js; j0 < je; j0 += VR) {
        workgroupBarrier();   // the last chunk's reads of p_s / v_s are done
        store_p4(lid, pn);
        store_v(lid, vn0);
        store_v(lid + AT, vn1);
        if (VPT > 2u) { store_v(lid + 2u * AT, vn2); store_v(lid + 3u * AT, vn3); }
        workgroupBarrier();   // P and V chunks complete
        if (j0 + VR < je) {
            pn = load_p4(pp, j0 + VR, je);
            vn0 = load_v_at(rw0, dz, lid);
            vn1 = load_v_at(rw1, dz, lid + AT);
            rw0 = v_row(b, first, j0 + 2u * VR, je, lid); rw1 = v_row(b, first, j0 + 2u * VR, je, lid + AT);
            if (VPT > 2u) {
                vn2 = load_v_at(rw2, dz, lid + 2u * AT);
                vn3 = load_v_at(rw3, dz, lid + 3u * AT);
                rw2 = v_row(b, first, j0 + 2u * VR, je, lid + 2u * AT);
                rw3 = v_row(b, first, j0 + 2u * VR, je, lid + 3u * AT);
            }
        }
        if (owns_dims) {   // (no barrier inside: the branch may diverge)
            for (var r = 0u; r < VR + params.zero; r++) {   // (see Params.zero)
                let pa = p_s[r * (HB / 4u) + hg * 2u];        // heads 8·hg ..+3
                let pb = p_s[r * (HB / 4u) + hg * 2u + 1u];   // heads 8·hg+4 ..+7
                var va: vec4<f32>;
                var vb: vec4<f32>;
                if (ROWS_F16) {   // lib/f16.wgsl
                    let v8 = unpack_row8(v_s[r * VW + dg]);
                    va = v8[0];
                    vb = v8[1];
                } else {
                    va = bitcast<vec4<f32>>(v_s[r * VW + dg]);
                    vb = bitcast<vec4<f32>>(v_s[r * VW + VW / 2u + dg]);
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
        store_head(slot, b, h0, hg * 8u, dz, dg, o0a, o0b);
        store_head(slot, b, h0, hg * 8u + 1u, dz, dg, o1a, o1b);
        store_head(slot, b, h0, hg * 8u + 2u, dz, dg, o2a, o2b);
        store_head(slot, b, h0, hg * 8u + 3u, dz, dg, o3a, o3b);
        store_head(slot, b, h0, hg * 8u + 4u, dz, dg, o4a, o4b);
        store_head(slot, b, h0, hg * 8u + 5u, dz, dg, o5a, o5b);
        store_head(slot, b, h0, hg * 8u + 6u, dz, dg, o6a, o6b);
        store_head(slot, b, h0, hg * 8u + 7u, dz, dg, o7a, o7b);
    }
}

// Store one head's 8 output dims of the slice (normalised over the slice); the first thread of
// the first half also stores the slice's lse (−inf for a slice without a valid id). With one
// slice the result is final: it goes straight to o_lat and lse, and `reduce` is not recorded.
fn store_head(slot: u32, b: u32, h0: u32, hl: u32, dz: u32, dg: u32, oa: vec4<f32>, ob: vec4<f32>) {
    let h = h0 + hl;
    if (h >= params.heads) { return; }
    let l = l_s[hl];
    let slice_lse = select(neg_inf(), m_s[hl] + log(l), l > 0.0);
    let ia = dz * (KV / 8u) + select(dg, 2u * dg, ROWS_F16);   // vec4 index of oa within the head
    let ib = ia + select(KV / 16u, 1u, ROWS_F16);
    let first = dz == 0u && dg == 0u;
    if (params.splits == 1u) {
        let base = (b * params.heads + h) * (KV / 4u);
        o_lat[base + ia] = oa;
        o_lat[base + ib] = ob;
        if (first) { lse[b * params.heads + h] = slice_lse; }
    } else {
        let base = (slot * params.heads + h) * (KV / 4u);
        partials[base + ia] = oa;
        partials[base + ib] = ob;
        if (first) { part_lse[slot * params.heads + h] = slice_lse; }
    }
}

// What thread `idx` needs, chunk after chunk, to form its part of P: ids 4·(idx % (VR / 4)) ..+3
// of each chunk, head idx / (VR / 4) (a warp reads 8 heads × VR ids). Read once, before the loop.
// Every thread has a part: VR · HB = 4 · AT (the const_assert), so idx / (VR / 4) < HB.
struct PPart {
    at: u32,      // scratch index of the head's score at the part's first id of chunk 0
    j: u32,       // the part's first id within a chunk
    m: f32,       // the head's max score over the slice
    inv_l: f32,   // 1 / Σ exp(score − max)
    ok: bool,     // the head exists (h < H)
}

fn p_part(bl: u32, h0: u32, idx: u32) -> PPart {
    let hl = idx / (VR / 4u);
    let j = 4u * (idx % (VR / 4u));
    let at = (bl * params.heads + h0 + hl) * params.topk + j;
    return PPart(at, j, m_s[hl], il_s[hl], h0 + hl < params.heads);
}

// The part's 4 probabilities in the chunk starting at id j0: zero at or past `je` (the slice's
// end), for ids of −1 and for heads ≥ H.
fn load_p4(pp: PPart, j0: u32, je: u32) -> vec4<f32> {
    if (!pp.ok) { return vec4<f32>(0.0); }
    var s = vec4<f32>(neg_inf());
    if (j0 + VR <= je) {   // a whole chunk (uniform): no bounds to check
        s = vec4<f32>(scratch[pp.at + j0], scratch[pp.at + j0 + 1u], scratch[pp.at + j0 + 2u],
                      scratch[pp.at + j0 + 3u]);
    } else {
        for (var c = 0u; c < 4u; c++) {
            if (j0 + pp.j + c < je) { s[c] = scratch[pp.at + j0 + c]; }
        }
    }
    // ids of −1 (score −inf) give 0: by select, since m may be −inf too (then exp gives NaN)
    return select(exp(s - pp.m) * pp.inv_l, vec4<f32>(0.0), s == vec4<f32>(neg_inf()));
}

fn store_p4(idx: u32, p: vec4<f32>) {
    let hl = idx / (VR / 4u);
    let r = 4u * (idx % (VR / 4u));
    p_s[r * (HB / 4u) + hl / 4u][hl % 4u] = p.x;
    p_s[(r + 1u) * (HB / 4u) + hl / 4u][hl % 4u] = p.y;
    p_s[(r + 2u) * (HB / 4u) + hl / 4u][hl % 4u] = p.z;
    p_s[(r + 3u) * (HB / 4u) + hl / 4u][hl % 4u] = p.w;
}

// The absolute row behind part `idx` of the V chunk starting at id j0 (−1: id −1 or past je);
// `first` is sequence b's first row.
fn v_row(b: u32, first: i32, j0: u32, je: u32, idx: u32) -> i32 {
    let r = idx / VW;
    let j = j0 + r;
    if (r >= VR || j >= je) { return -1i; }
    let id = ids[b * params.topk + j];
    return select(-1i, id + first, id >= 0i);
}

// V chunk part `idx` (row · VW + vec4 of the half row): a straight copy of half dz of `row`'s
// c_kv (FP8 rows: its 8 dims raw, dequantised by store_v).
fn load_v_at(row: i32, dz: u32, idx: u32) -> vec4<u32> {
    if (row < 0i) { return vec4<u32>(0u); }
    if (ROWS_FP8) { return fp8_fetch8(u32(row), dz * (KV / 2u) + 8u * (idx % VW)); }
    return rows[u32(row) * row_words() / 4u + dz * VW + idx % VW];
}

fn store_v(idx: u32, v: vec4<u32>) {
    if (idx >= VR * VW) { return; }
    if (ROWS_FP8) { v_s[idx] = fp8_stage8(v, true); return; }
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
