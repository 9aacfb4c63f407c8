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
// candidates (`select_key`: a row's scores as order-preserving keys), lib/topk_order.wgsl the
// order (shared with topk_split.wgsl, the multi-workgroup select of long rows).
//
// Left out: k > 2048 (the candidates must fit workgroup memory), NaN scores (they order as
// the largest or smallest values by their sign bit; the indexer never makes them).

var<private> row_base: u32;   // this workgroup's row of `scores`

// lib/select.wgsl's candidate hook: every score of the row (the order, select_largest and
// sorts_before, is lib/topk_order.wgsl's)
fn select_key(i: u32) -> vec2<u32> {
    return vec2<u32>(order_key(scores[row_base + i]), 1u);
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
