// topk.wgsl — exact per-row top-k of the index scores, sorted.
//
//   topk_indices[b] = TopK_s( index_score[b, s], min(k, T_b) )
//
// Order: higher score first, ties to the lower token index. T_b < k gives T_b valid entries
// then -1. The result is fully determined by the scores, so runs are reproducible.
//
// Mapping: one workgroup of WG threads per row b. Three phases, all in one dispatch:
//   1. radix select (skipped when T_b ≤ k): scores → order-preserving u32 keys; four passes of an
//      8-bit histogram (most significant digit first) narrow down `thr`, the exact k-th largest
//      key, and `need_eq`, how many keys equal to `thr` belong to the top k (the lowest-index ones).
//   2. ordered compaction: thread t owns the contiguous segment [t·seg, (t+1)·seg); it counts its
//      keys > thr and == thr, a workgroup scan turns the counts into output positions, and a
//      second walk writes the selected (key, index) pairs in index order into workgroup memory.
//      Walking in index order is what sends ties to the lower index.
//   3. bitonic sort of the ≤ MAX_K candidates by (key desc, index asc), then write indices.
//
// Left out: k > 2048 (the candidates must fit workgroup memory), NaN scores (they order as
// the largest or smallest values by their sign bit; the indexer never makes them).

override WG: u32 = 256u;   // threads per workgroup, a power of two ≤ 1024

const MAX_K: u32 = 2048u;
const PAD_IDX: u32 = 0xffffffffu;

struct Params {
    k: u32,             // selected per row, 1 ..= MAX_K
    score_stride: u32,  // row stride of `scores`
    b0: u32,            // first row of this dispatch
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> scores: array<f32>;            // [B, score_stride]
@group(0) @binding(2) var<storage, read> seq: array<u32>;               // [B, 2] = (first row, T_b)
@group(0) @binding(3) var<storage, read_write> topk_indices: array<i32>; // [B, k]

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> scan: array<vec2<u32>, 1024>;   // (count > thr, count == thr) per thread
var<workgroup> cand_key: array<u32, MAX_K>;
var<workgroup> cand_idx: array<u32, MAX_K>;
var<workgroup> select_state: vec2<u32>;         // (prefix of thr so far, still needed in it)

// Monotone map f32 → u32: a > b as floats ⇔ key(a) > key(b) as integers.
fn order_key(x: f32) -> u32 {
    let u = bitcast<u32>(x);
    return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

// True when (ka, ia) must come before (kb, ib) in the output.
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.x;
    let T = seq[2u * b + 1u];
    let k = params.k;
    let base = b * params.score_stride;
    let n_sel = min(k, T);
    let select_all = T <= k;

    // ---- 1. radix select: thr = the n_sel-th largest key, need_eq = how many == thr to take.
    var thr = 0u;
    var need_eq = 0u;
    if (!select_all) {
        var state = vec2<u32>(0u, n_sel);
        for (var digit_pass = 0u; digit_pass < 4u; digit_pass++) {
            let shift = 24u - 8u * digit_pass;
            let high_mask = select(~((1u << (shift + 8u)) - 1u), 0u, digit_pass == 0u);
            for (var i = lid; i < 256u; i += WG) { atomicStore(&hist[i], 0u); }
            workgroupBarrier();   // histogram cleared before anyone counts
            for (var i = lid; i < T; i += WG) {
                let key = order_key(scores[base + i]);
                if ((key & high_mask) == state.x) {
                    atomicAdd(&hist[(key >> shift) & 255u], 1u);
                }
            }
            workgroupBarrier();   // histogram complete before it is walked
            if (lid == 0u) {
                var prefix = state.x;
                var remaining = state.y;
                for (var d = 255i; d >= 0i; d--) {
                    let c = atomicLoad(&hist[u32(d)]);
                    if (remaining <= c) {
                        prefix |= u32(d) << shift;
                        break;
                    }
                    remaining -= c;
                }
                select_state = vec2<u32>(prefix, remaining);
            }
            // Broadcast the narrowed prefix (this load is also a barrier).
            state = workgroupUniformLoad(&select_state);
        }
        thr = state.x;
        need_eq = state.y;
    }

    // ---- 2. ordered compaction of the selected (key, index) pairs into workgroup memory.
    let seg = (T + WG - 1u) / WG;
    let lo = min(lid * seg, T);
    let hi = min(lo + seg, T);
    var counts = vec2<u32>(0u);
    for (var i = lo; i < hi; i++) {
        let key = order_key(scores[base + i]);
        counts += vec2<u32>(u32(select_all || key > thr), u32(!select_all && key == thr));
    }
    scan[lid] = counts;
    workgroupBarrier();   // all counts are in before the scan reads neighbours
    for (var off = 1u; off < WG; off <<= 1u) {
        var add = vec2<u32>(0u);
        if (lid >= off) { add = scan[lid - off]; }
        workgroupBarrier();   // everyone read before anyone writes this round
        scan[lid] += add;
        workgroupBarrier();   // this round written before the next reads
    }
    var gt_before = scan[lid].x - counts.x;   // exclusive prefix
    var eq_before = scan[lid].y - counts.y;
    for (var i = lo; i < hi; i++) {
        let key = order_key(scores[base + i]);
        if (select_all || key > thr) {
            cand_key[gt_before + min(eq_before, need_eq)] = key;
            cand_idx[gt_before + min(eq_before, need_eq)] = i;
            gt_before++;
        } else if (key == thr) {
            if (eq_before < need_eq) {
                cand_key[gt_before + eq_before] = key;
                cand_idx[gt_before + eq_before] = i;
            }
            eq_before++;
        }
    }

    // ---- 3. bitonic sort of n = next power of two ≥ n_sel entries, padded to sort last.
    var n = 1u;
    while (n < n_sel) { n <<= 1u; }
    for (var i = n_sel + lid; i < n; i += WG) {
        cand_key[i] = 0u;
        cand_idx[i] = PAD_IDX;
    }
    workgroupBarrier();   // candidates and padding written before sorting
    for (var size = 2u; size <= n; size <<= 1u) {
        for (var stride = size / 2u; stride > 0u; stride >>= 1u) {
            for (var t = lid; t < n / 2u; t += WG) {
                let i = 2u * stride * (t / stride) + t % stride;
                let j = i + stride;
                let ka = cand_key[i];
                let ia = cand_idx[i];
                let kb = cand_key[j];
                let ib = cand_idx[j];
                let in_order = before(ka, ia, kb, ib) || (ka == kb && ia == ib);
                let forward = (i & size) == 0u;
                if (in_order != forward) {
                    cand_key[i] = kb;
                    cand_idx[i] = ib;
                    cand_key[j] = ka;
                    cand_idx[j] = ia;
                }
            }
            workgroupBarrier();   // this compare-exchange round done before the next
        }
    }
    for (var j = lid; j < k; j += WG) {
        topk_indices[b * k + j] = select(-1i, i32(cand_idx[j]), j < n_sel);
    }
}
