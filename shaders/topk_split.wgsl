// topk_split.wgsl — exact per-row top-k of long rows, each row over several workgroups.
//
// The same result as topk.wgsl, bit for bit (the k largest scores of each row, by score
// descending, ties to the lower token index, -1 past T_b), for rows too long for one workgroup
// to walk fast: topk.wgsl reads a 128K row six times with one workgroup (one SM); here the
// passes over the row are spread over `segments` workgroups a row. Four steps, recorded back to
// back in one pass:
//
// `histogram` grid (segments, rows), 256 threads: a 4096-bin histogram of the top 12 bits of the
//            keys of the workgroup's segment of the row, in workgroup memory, then added into
//            the row's histogram (`hist_g`, which `bin` leaves zeroed for the next call).
// `bin`      grid (rows), WG threads: walks the row's histogram from the top bin down to `tb`,
//            the bin that holds the k-th largest key: every key in a higher bin is selected
//            (fewer than k of them), the ones in `tb` are candidates. Rows with T_b ≤ k select
//            everything (tb = -1). Zeroes the histogram behind it.
// `collect`  grid (segments, rows), 256 threads: the segment's selected token indices into the
//            row's `sure` list and its candidates into its `maybe` list, each workgroup
//            reserving its range with one atomic add a list (the lists are not in index order).
// `finish`   grid (rows), WG threads: the exact threshold among the candidates (lib/select.wgsl's
//            radix select on their keys; then, among those equal to it, on their indices, which
//            sends ties to the lower index without an ordered list), the selected pairs into
//            workgroup memory, the bitonic sort, the indices out.
//
// Scratch, per row of the dispatch: hist_g [4096] u32, state [4] (tb, sure count, maybe
// count, _), sure [k] u32, maybe [score_stride] u32 (a row may have all its keys in one bin).

@group(0) @binding(4) var<storage, read_write> hist_g: array<atomic<u32>>;  // [rows, 4096]
@group(0) @binding(5) var<storage, read_write> state: array<atomic<u32>>;   // [rows, 4]
@group(0) @binding(6) var<storage, read_write> sure: array<u32>;            // [rows, k]
@group(0) @binding(7) var<storage, read_write> maybe: array<u32>;           // [rows, score_stride]

const BINS: u32 = 4096u;
const BIN_SHIFT: u32 = 20u;   // a key's bin: its top 12 bits
const SEG_WG: u32 = 256u;     // threads of `hist` and `collect`

var<private> row_base: u32;   // this workgroup's row of `scores`
var<private> row_list: u32;   // this workgroup's `maybe` list
var<private> mode: u32;       // what select_key returns: 0 candidates' keys, 1 their indices
var<private> thr_key: u32;    // mode 1: the candidates counted are those with this key

fn key_at(i: u32) -> u32 { return order_key(scores[row_base + i]); }

// lib/select.wgsl's candidate hook: candidate i of the row's `maybe` list, by key (mode 0), or
// by index among those whose key is thr_key (mode 1: the largest ~index is the lowest index)
fn select_key(i: u32) -> vec2<u32> {
    let idx = maybe[row_list + i];
    let key = key_at(idx);
    if (mode == 0u) { return vec2<u32>(key, 1u); }
    return vec2<u32>(~idx, u32(key == thr_key));
}

// Tokens lo .. hi of row b's segment `x` (of params.segments).
fn segment(x: u32, T: u32) -> vec2<u32> {
    let len = (T + params.segments - 1u) / params.segments;
    let lo = min(x * len, T);
    return vec2<u32>(lo, min(lo + len, T));
}

// ============================================================================ histogram

var<workgroup> whist: array<atomic<u32>, BINS>;

@compute @workgroup_size(SEG_WG)
fn histogram(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bl = wg.y;
    let b = params.b0 + bl;
    let T = seq[2u * b + 1u];
    if (T <= params.k) { return; }   // uniform: `bin` selects the whole row
    row_base = b * params.score_stride;
    let r = segment(wg.x, T);
    for (var i = lid; i < BINS; i += SEG_WG) { atomicStore(&whist[i], 0u); }
    workgroupBarrier();   // cleared before anyone counts
    for (var i = r.x + lid; i < r.y; i += SEG_WG) {
        atomicAdd(&whist[key_at(i) >> BIN_SHIFT], 1u);
    }
    workgroupBarrier();   // counted before the bins are added to the row's
    for (var i = lid; i < BINS; i += SEG_WG) {
        let c = atomicLoad(&whist[i]);
        if (c != 0u) { atomicAdd(&hist_g[bl * BINS + i], c); }
    }
}

// ============================================================================ bin

@compute @workgroup_size(WG)
fn bin(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bl = wg.x;
    let T = seq[2u * (params.b0 + bl) + 1u];
    let k = params.k;
    let at = bl * 4u;
    if (T <= k) {   // uniform: everything is selected, nothing was counted
        if (lid == 0u) {
            atomicStore(&state[at], bitcast<u32>(-1i));
            atomicStore(&state[at + 1u], 0u);
            atomicStore(&state[at + 2u], 0u);
        }
        return;
    }
    // thread t owns bins g·t .. g·t + g − 1 counted from the top (bin BINS − 1 − j for j-th)
    let g = BINS / WG;
    var mine = 0u;
    for (var j = lid * g; j < lid * g + g; j++) { mine += atomicLoad(&hist_g[bl * BINS + BINS - 1u - j]); }
    let above = scan_exclusive(lid, vec2<u32>(mine, 0u)).x;   // keys in higher bins than mine
    if (above < k && above + mine >= k) {   // the k-th largest key is in one of my bins
        var acc = above;
        for (var j = lid * g; j < lid * g + g; j++) {
            let c = atomicLoad(&hist_g[bl * BINS + BINS - 1u - j]);
            if (acc + c >= k) {
                atomicStore(&state[at], BINS - 1u - j);
                break;
            }
            acc += c;
        }
        atomicStore(&state[at + 1u], 0u);
        atomicStore(&state[at + 2u], 0u);
    }
    // leave the histogram zeroed for the next call (each thread its own bins, read above)
    for (var j = lid * g; j < lid * g + g; j++) { atomicStore(&hist_g[bl * BINS + BINS - 1u - j], 0u); }
}

// ============================================================================ collect

var<workgroup> n_sure: atomic<u32>;
var<workgroup> n_maybe: atomic<u32>;
var<workgroup> base: vec2<u32>;   // this workgroup's first position in sure, maybe

@compute @workgroup_size(SEG_WG)
fn collect(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bl = wg.y;
    let b = params.b0 + bl;
    let T = seq[2u * b + 1u];
    row_base = b * params.score_stride;
    let tb = bitcast<i32>(atomicLoad(&state[bl * 4u]));
    let r = segment(wg.x, T);
    if (lid == 0u) {
        atomicStore(&n_sure, 0u);
        atomicStore(&n_maybe, 0u);
    }
    workgroupBarrier();   // counters cleared
    for (var i = r.x + lid; i < r.y; i += SEG_WG) {
        let bn = i32(key_at(i) >> BIN_SHIFT);
        if (bn > tb) { atomicAdd(&n_sure, 1u); } else if (bn == tb) { atomicAdd(&n_maybe, 1u); }
    }
    workgroupBarrier();   // counted before the ranges are reserved
    if (lid == 0u) {
        base = vec2<u32>(atomicAdd(&state[bl * 4u + 1u], atomicLoad(&n_sure)),
                         atomicAdd(&state[bl * 4u + 2u], atomicLoad(&n_maybe)));
        atomicStore(&n_sure, 0u);
        atomicStore(&n_maybe, 0u);
    }
    let at = workgroupUniformLoad(&base);   // (a barrier too)
    for (var i = r.x + lid; i < r.y; i += SEG_WG) {
        let bn = i32(key_at(i) >> BIN_SHIFT);
        if (bn > tb) {
            sure[bl * params.k + at.x + atomicAdd(&n_sure, 1u)] = i;
        } else if (bn == tb) {
            maybe[bl * params.score_stride + at.y + atomicAdd(&n_maybe, 1u)] = i;
        }
    }
}

// ============================================================================ finish

var<workgroup> n_out: atomic<u32>;
var<workgroup> finish_counts: vec3<u32>;   // (T, sure, candidates) of the row

@compute @workgroup_size(WG)
fn finish(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bl = wg.x;
    let b = params.b0 + bl;
    // the row's counts broadcast through workgroup memory: WGSL's uniformity rules take values
    // read from storage as varying, and the selection below has barriers (Chromium's compiler
    // enforces the rules; naga does not)
    if (lid == 0u) {
        finish_counts = vec3<u32>(
            seq[2u * b + 1u],
            atomicLoad(&state[bl * 4u + 1u]),
            atomicLoad(&state[bl * 4u + 2u]),
        );
    }
    let counts = workgroupUniformLoad(&finish_counts);
    let T = counts.x;
    let k = params.k;
    row_base = b * params.score_stride;
    row_list = bl * params.score_stride;
    let n_sel = min(k, T);
    let n_sure = counts.y;
    let n_maybe = counts.z;
    let need = n_sel - n_sure;   // from the candidates (0 where T ≤ k: all are sure)
    // the need-th largest candidate key, and among the candidates equal to it the need_eq-th
    // lowest index: the selected candidates are those above (key, index) = (thr, idx_thr)
    var thr = 0u;
    var idx_thr = 0u;
    if (need > 0u) {   // uniform
        mode = 0u;
        let chosen = radix_select(lid, n_maybe, need);
        thr = chosen.x;
        mode = 1u;
        thr_key = thr;
        idx_thr = ~radix_select(lid, n_maybe, chosen.y).x;
    }
    if (lid == 0u) { atomicStore(&n_out, 0u); }
    workgroupBarrier();   // the counter cleared
    for (var i = lid; i < n_sure; i += WG) {
        let idx = sure[bl * k + i];
        let at = atomicAdd(&n_out, 1u);
        cand_key[at] = key_at(idx);
        cand_idx[at] = idx;
    }
    if (need > 0u) {
        for (var i = lid; i < n_maybe; i += WG) {
            let idx = maybe[row_list + i];
            let key = key_at(idx);
            if (key > thr || (key == thr && idx <= idx_thr)) {
                let at = atomicAdd(&n_out, 1u);
                cand_key[at] = key;
                cand_idx[at] = idx;
            }
        }
    }
    // (bitonic_sort's first barrier orders these writes before the sort)
    bitonic_sort(lid, n_sel, 0u);
    for (var j = lid; j < k; j += WG) {
        topk_indices[b * k + j] = select(-1i, i32(cand_idx[j]), j < n_sel);
    }
}
