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
// The three steps are lib/select.wgsl's (shared with resolve.wgsl); this file gives them the
// candidates (`select_key`: a row's scores as order-preserving keys) and the order.
//
// Left out: k > 2048 (the candidates must fit workgroup memory), NaN scores (they order as
// the largest or smallest values by their sign bit; the indexer never makes them).

override WG: u32 = 256u;   // threads per workgroup, a power of two ≤ 1024

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

var<private> row_base: u32;   // this workgroup's row of `scores`

// Monotone map f32 → u32: a > b as floats ⇔ key(a) > key(b) as integers.
fn order_key(x: f32) -> u32 {
    let u = bitcast<u32>(x);
    return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

// lib/select.wgsl hooks: every score of the row is a candidate; the largest keys win; the output
// is by key descending, then index ascending.
fn select_key(i: u32) -> vec2<u32> {
    return vec2<u32>(order_key(scores[row_base + i]), 1u);
}

fn select_largest() -> bool {
    return true;
}

fn sorts_before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia <= ib);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.x;
    let T = seq[2u * b + 1u];
    let k = params.k;
    row_base = b * params.score_stride;
    let n_sel = min(k, T);
    let select_all = T <= k;

    // 1. radix select: thr = the n_sel-th largest key, need_eq = how many == thr to take
    var chosen = vec2<u32>(0u);
    if (!select_all) {
        chosen = radix_select(lid, T, n_sel);
    }
    // 2. ordered compaction of the selected (key, index) pairs into workgroup memory
    compact(lid, T, chosen.x, chosen.y, select_all);
    // 3. bitonic sort, padding (key 0, index PAD) last
    bitonic_sort(lid, n_sel, 0u);
    for (var j = lid; j < k; j += WG) {
        topk_indices[b * k + j] = select(-1i, i32(cand_idx[j]), j < n_sel);
    }
}
