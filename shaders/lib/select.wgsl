// lib/select.wgsl — the n best of a workgroup's candidates, in order, in workgroup memory.
//
// Shared by topk.wgsl (the k largest index scores of a row) and resolve.wgsl (the m least
// recently used free slots of a pool). Three steps, each called by every thread of the workgroup
// from uniform control flow:
//   radix_select   the exact n-th best key: four passes of an 8-bit histogram, most significant
//                  digit first, narrow down `thr` and `need_eq` (how many keys equal to thr are
//                  among the n best: the lowest-index ones);
//   compact        thread t owns the contiguous segment [t·seg, (t+1)·seg) of candidates; it
//                  counts its keys better than thr and equal to it, a workgroup scan turns the
//                  counts into positions, and a second walk writes the chosen (key, index) pairs
//                  in index order into cand_key / cand_idx (which sends ties to the lower index);
//   bitonic_sort   the ≤ MAX_K chosen pairs into the kernel's order.
//
// Hooks the kernel defines (WGSL module scope ignores declaration order):
//   override WG: u32                                   threads per workgroup, a power of two
//   fn select_key(i: u32) -> vec2<u32>                 candidate i: (key, 1), or (_, 0) if none
//   fn select_largest() -> bool                        true: the largest keys; false: smallest
//   fn sorts_before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool   the final order, non-strict
//
// Composed in front of the kernel by `src/shaders.rs`.

const MAX_K: u32 = 2048u;
const PAD: u32 = 0xffffffffu;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> scan: array<vec2<u32>, 1024>;
var<workgroup> cand_key: array<u32, MAX_K>;
var<workgroup> cand_idx: array<u32, MAX_K>;
var<workgroup> select_state: vec2<u32>;         // (prefix of thr so far, still needed in it)

// Exclusive prefix sums of one vec2 per thread; returns this thread's.
fn scan_exclusive(lid: u32, mine: vec2<u32>) -> vec2<u32> {
    scan[lid] = mine;
    workgroupBarrier();   // all inputs in before neighbours are read
    for (var off = 1u; off < WG; off <<= 1u) {
        var add = vec2<u32>(0u);
        if (lid >= off) { add = scan[lid - off]; }
        workgroupBarrier();   // everyone read before anyone writes this round
        scan[lid] += add;
        workgroupBarrier();   // this round written before the next reads
    }
    return scan[lid] - mine;
}

// `a` is a better key than `b`.
fn better(a: u32, b: u32) -> bool {
    // (parenthesised: `a < b, a > b` would parse as a template list)
    return select((a < b), (a > b), select_largest());
}

// The n-th best key among candidates 0 .. count (1 ≤ n ≤ their number): (thr, need_eq).
fn radix_select(lid: u32, count: u32, n: u32) -> vec2<u32> {
    var state = vec2<u32>(0u, n);
    for (var digit_pass = 0u; digit_pass < 4u; digit_pass++) {
        let shift = 24u - 8u * digit_pass;
        let high_mask = select(~((1u << (shift + 8u)) - 1u), 0u, digit_pass == 0u);
        for (var i = lid; i < 256u; i += WG) { atomicStore(&hist[i], 0u); }
        workgroupBarrier();   // histogram cleared before anyone counts
        for (var i = lid; i < count; i += WG) {
            let c = select_key(i);
            if (c.y != 0u && (c.x & high_mask) == state.x) {
                atomicAdd(&hist[(c.x >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();   // histogram complete before it is walked
        if (lid == 0u) {
            var prefix = state.x;
            var remaining = state.y;
            for (var step = 0u; step < 256u; step++) {   // best digit first
                let d = select(step, 255u - step, select_largest());
                let c = atomicLoad(&hist[d]);
                if (remaining <= c) {
                    prefix |= d << shift;
                    break;
                }
                remaining -= c;
            }
            select_state = vec2<u32>(prefix, remaining);
        }
        // broadcast the narrowed prefix (this load is also a barrier)
        state = workgroupUniformLoad(&select_state);
    }
    return state;
}

// The candidates better than `thr` and the first `need_eq` equal to it (every candidate with
// `all`) into cand_key / cand_idx, in index order.
fn compact(lid: u32, count: u32, thr: u32, need_eq: u32, all: bool) {
    let seg = (count + WG - 1u) / WG;
    let lo = min(lid * seg, count);
    let hi = min(lo + seg, count);
    var counts = vec2<u32>(0u);
    for (var i = lo; i < hi; i++) {
        let c = select_key(i);
        if (c.y != 0u) {
            counts += vec2<u32>(u32(all || better(c.x, thr)), u32(!all && c.x == thr));
        }
    }
    let first = scan_exclusive(lid, counts);
    var gt_before = first.x;
    var eq_before = first.y;
    for (var i = lo; i < hi; i++) {
        let c = select_key(i);
        if (c.y == 0u) { continue; }
        if (all || better(c.x, thr)) {
            cand_key[gt_before + min(eq_before, need_eq)] = c.x;
            cand_idx[gt_before + min(eq_before, need_eq)] = i;
            gt_before++;
        } else if (c.x == thr) {
            if (eq_before < need_eq) {
                cand_key[gt_before + eq_before] = c.x;
                cand_idx[gt_before + eq_before] = i;
            }
            eq_before++;
        }
    }
}

// Sort cand_key / cand_idx [0 .. count) by `sorts_before`: padded to the next power of two
// with (pad_key, PAD), which must sort after every real entry.
fn bitonic_sort(lid: u32, count: u32, pad_key: u32) {
    var n = 1u;
    while (n < count) { n <<= 1u; }
    for (var i = count + lid; i < n; i += WG) {
        cand_key[i] = pad_key;
        cand_idx[i] = PAD;
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
                let forward = (i & size) == 0u;
                if (sorts_before(ka, ia, kb, ib) != forward) {
                    cand_key[i] = kb;
                    cand_idx[i] = ib;
                    cand_key[j] = ka;
                    cand_idx[j] = ia;
                }
            }
            workgroupBarrier();   // this compare-exchange round done before the next
        }
    }
}
