// da_order.wgsl — ESS's DA on one queue needs each sequence's slot ids ordered hits first (in
// top-k order), then misses (in top-k order), then the −1s, and how many hits lead: sparse MLA's
// `scores` scores the tiles of hits while the misses are gathered (sparse_mla_coop.wgsl, PHASE).
// A miss is a slot in the sequence's copy list (resolve.wgsl), marked in a bitmap of the pool's
// slots. One workgroup a sequence; thread t owns ids t·8 .. t·8 + 7 (k ≤ 2048), so a scan of
// the threads' counts gives every id its place and the order within each kind is kept.
//
//   da_ids[b, ·]  = hits ‖ misses ‖ −1s          da_seq[b] = (b · slots, hits)

struct Params {
    k: u32,        // ids per sequence (≤ 2048)
    slots: u32,    // pool slots per sequence (≤ 16,384)
    b0: u32,       // first sequence of the dispatch
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> slot_ids: array<i32>;        // [B, k] (−1: none)
@group(0) @binding(2) var<storage, read> copies: array<vec2<u32>>;    // [B, k] (token, slot)
@group(0) @binding(3) var<storage, read> counts: array<vec2<u32>>;    // [B] (misses, hits)
@group(0) @binding(4) var<storage, read_write> da_ids: array<i32>;    // [B, k]
@group(0) @binding(5) var<storage, read_write> da_seq: array<u32>;    // [B, 2]

const WG: u32 = 256u;
const PER: u32 = 8u;             // ids a thread
const WORDS: u32 = 512u;         // bitmap words: 16,384 slots
const HIT: u32 = 0u;
const MISS: u32 = 1u;
const NONE: u32 = 2u;

var<workgroup> missed: array<atomic<u32>, WORDS>;
var<workgroup> sums: array<u32, WG>;   // (hits | misses << 16) scanned over the threads

@compute @workgroup_size(256)
fn order(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.x;
    let k = params.k;
    for (var w = lid; w < WORDS; w += WG) { atomicStore(&missed[w], 0u); }
    workgroupBarrier();
    let m = counts[b].x;
    for (var r = lid; r < m; r += WG) {
        let s = copies[b * k + r].y;
        atomicOr(&missed[s / 32u], 1u << (s % 32u));
    }
    workgroupBarrier();
    var kind: array<u32, PER>;
    var id: array<i32, PER>;
    var nh = 0u;
    var nm = 0u;
    for (var e = 0u; e < PER; e++) {
        let j = lid * PER + e;
        var c = NONE;
        var v = -1i;
        if (j < k) {
            v = slot_ids[b * k + j];
            if (v >= 0i) {
                let s = u32(v);
                let bit = (atomicLoad(&missed[s / 32u]) >> (s % 32u)) & 1u;
                c = select(HIT, MISS, bit == 1u);
            }
        }
        kind[e] = c;
        id[e] = v;
        nh += u32(c == HIT);
        nm += u32(c == MISS);
    }
    // inclusive scan of the packed counts (each ≤ 2048 < 2^16)
    sums[lid] = nh | (nm << 16u);
    workgroupBarrier();
    for (var off = 1u; off < WG; off <<= 1u) {
        var add = 0u;
        if (lid >= off) { add = sums[lid - off]; }
        workgroupBarrier();
        sums[lid] += add;
        workgroupBarrier();
    }
    let total = sums[WG - 1u];
    let hits = total & 0xffffu;
    let misses = total >> 16u;
    var h = (sums[lid] & 0xffffu) - nh;            // hits before this thread's ids
    var mi = hits + (sums[lid] >> 16u) - nm;       // where its first miss goes
    let before = min(lid * PER, k);                // ids before this thread's
    var nn = hits + misses + before - (h + mi - hits);   // where its first −1 goes
    for (var e = 0u; e < PER; e++) {
        if (lid * PER + e >= k) { break; }
        var at = nn;
        if (kind[e] == HIT) { at = h; h++; }
        else if (kind[e] == MISS) { at = mi; mi++; }
        else { nn++; }
        da_ids[b * k + at] = id[e];
    }
    if (lid == 0u) {
        da_seq[2u * b] = b * params.slots;
        da_seq[2u * b + 1u] = hits;
    }
}
