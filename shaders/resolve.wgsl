// resolve.wgsl — the LRU staging pool on the GPU: top-k token ids → pool slot ids, for every
// sequence of a batch in one dispatch, with no CPU round trip.
//
// The policy is src/cache/lru.rs (the oracle this shader is tested against), for a pool of
// P slots per sequence where slot P−1 is reserved for the newest token:
//   1. -1 stays -1; the newest token maps to the reserved slot (a hit);
//   2. a token already in a slot is a hit; its slot is used at this step;
//   3. the misses, in top-k order, take the victims: the slots not used at this step, ordered by
//      (last use, slot index) ascending (empty slots have last use 0); the i-th miss takes the
//      i-th victim and evicts its token;
//   4. every used slot's last use becomes this step's number;
//   5. copies = (token, slot) per miss in top-k order; counts = (misses, hits).
//
// Mapping: one workgroup of WG threads per sequence.
//   a. each thread classifies a contiguous segment of the k ids (hits mark a bitmask of used
//      slots); a workgroup scan of (misses, hits) gives each thread its first miss rank;
//   b. victims: an exact radix select (4 × 8-bit histograms) of the m-th smallest last-use step
//      among unused slots, an ordered compaction of the chosen slots (in slot order, so ties go to
//      the lower slot), and a bitonic sort by (last use, slot) — the same machinery as topk.wgsl;
//   c. each thread walks its segment again, giving its r-th miss the r-th victim.
//
// Left out: pools over MAX_SLOTS slots, k over MAX_K.

override WG: u32 = 256u;

const MAX_K: u32 = 2048u;
const MAX_SLOTS: u32 = 16384u;
const PAD: u32 = 0xffffffffu;

struct Params {
    k: u32,          // ids per sequence
    slots: u32,      // P per sequence (≥ 2; slot P−1 reserved)
    capacity: u32,   // tokens per sequence the token → slot table covers
    b0: u32,         // first sequence of this dispatch
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> topk_indices: array<i32>;      // [B, k] token ids
@group(0) @binding(2) var<storage, read> seq: array<u32>;               // [B, 2] = (_, T_b); newest = T_b − 1
@group(0) @binding(3) var<storage, read_write> slot_state: array<vec2<i32>>; // [B, P] = (token or −1, last use)
@group(0) @binding(4) var<storage, read_write> token_slot: array<i32>;  // [B, capacity] slot or −1
@group(0) @binding(5) var<storage, read_write> slot_ids: array<i32>;    // [B, k] output
@group(0) @binding(6) var<storage, read_write> copies: array<vec2<u32>>; // [B, k] (token, slot) per miss
@group(0) @binding(7) var<storage, read_write> counts: array<vec2<u32>>; // [B] (misses, hits)
// x = this step's number (≥ 1, larger than every earlier step's on these tables). Its own small
// uniform, written once per step for all layers, so the bound dispatch stays as it is.
@group(0) @binding(8) var<uniform> clock: vec4<u32>;

var<workgroup> used: array<atomic<u32>, 512>;  // bitmask over MAX_SLOTS slots
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> scan: array<vec2<u32>, 1024>;
var<workgroup> cand_key: array<u32, MAX_K>;
var<workgroup> cand_idx: array<u32, MAX_K>;
var<workgroup> select_state: vec2<u32>;
var<workgroup> totals: vec2<u32>;

fn is_used(s: u32) -> bool {
    return (atomicLoad(&used[s / 32u]) & (1u << (s % 32u))) != 0u;
}

// Exclusive prefix sums of one vec2 per thread, in place; returns this thread's exclusive sum.
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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let K = params.k;
    let P = params.slots;
    let R = P - 1u;                       // regular slots; P − 1 is reserved
    let t = i32(clock.x);
    let b = params.b0 + wg.x;
    let newest = i32(seq[2u * b + 1u]) - 1;
    let sb = b * P;                       // this sequence's slot_state base
    let tb = b * params.capacity;         // this sequence's token_slot base

    for (var i = lid; i < (P + 31u) / 32u; i += WG) { atomicStore(&used[i], 0u); }
    workgroupBarrier();   // bitmask cleared before hits mark it

    // ---- a. classify; hits are final now. Misses are marked -2 until step c.
    let seg = (K + WG - 1u) / WG;
    let lo = min(lid * seg, K);
    let hi = min(lo + seg, K);
    var mine = vec2<u32>(0u);             // (misses, hits) in my segment
    for (var j = lo; j < hi; j++) {
        let id = topk_indices[b * K + j];
        var slot = -1;
        if (id == newest && id >= 0) {
            slot = i32(R);
            mine.y += 1u;
        } else if (id >= 0) {
            slot = token_slot[tb + u32(id)];
            if (slot >= 0) {
                atomicOr(&used[u32(slot) / 32u], 1u << (u32(slot) % 32u));
                slot_state[sb + u32(slot)].y = t;
                mine.y += 1u;
            } else {
                slot = -2;
                mine.x += 1u;
            }
        }
        slot_ids[b * K + j] = slot;
    }
    let before = scan_exclusive(lid, mine);
    if (lid == WG - 1u) { totals = before + mine; }
    let total = workgroupUniformLoad(&totals);   // (misses, hits) of the sequence; also a barrier
    let m = total.x;

    // ---- b. victims: the m unused regular slots with the smallest (last use, slot)
    if (m > 0u) {
        var st = vec2<u32>(0u, m);        // (prefix of the threshold so far, still needed in it)
        for (var digit_pass = 0u; digit_pass < 4u; digit_pass++) {
            let shift = 24u - 8u * digit_pass;
            let high_mask = select(~((1u << (shift + 8u)) - 1u), 0u, digit_pass == 0u);
            for (var i = lid; i < 256u; i += WG) { atomicStore(&hist[i], 0u); }
            workgroupBarrier();   // histogram cleared before anyone counts
            for (var s = lid; s < R; s += WG) {
                let key = u32(slot_state[sb + s].y);
                if (!is_used(s) && (key & high_mask) == st.x) {
                    atomicAdd(&hist[(key >> shift) & 255u], 1u);
                }
            }
            workgroupBarrier();   // histogram complete before it is walked
            if (lid == 0u) {
                var prefix = st.x;
                var remaining = st.y;
                for (var d = 0u; d < 256u; d++) {   // smallest first
                    let c = atomicLoad(&hist[d]);
                    if (remaining <= c) {
                        prefix |= d << shift;
                        break;
                    }
                    remaining -= c;
                }
                select_state = vec2<u32>(prefix, remaining);
            }
            st = workgroupUniformLoad(&select_state);   // broadcast (also a barrier)
        }
        let thr = st.x;
        let need_eq = st.y;

        // ordered compaction of the chosen slots, in slot order
        let sseg = (R + WG - 1u) / WG;
        let slo = min(lid * sseg, R);
        let shi = min(slo + sseg, R);
        var cnt = vec2<u32>(0u);          // (last use < thr, == thr) among my unused slots
        for (var s = slo; s < shi; s++) {
            if (!is_used(s)) {
                let key = u32(slot_state[sb + s].y);
                cnt += vec2<u32>(u32(key < thr), u32(key == thr));
            }
        }
        let cb = scan_exclusive(lid, cnt);
        var lt_before = cb.x;
        var eq_before = cb.y;
        for (var s = slo; s < shi; s++) {
            if (!is_used(s)) {
                let key = u32(slot_state[sb + s].y);
                if (key < thr) {
                    let pos = lt_before + min(eq_before, need_eq);
                    cand_key[pos] = key;
                    cand_idx[pos] = s;
                    lt_before++;
                } else if (key == thr) {
                    if (eq_before < need_eq) {
                        cand_key[lt_before + eq_before] = key;
                        cand_idx[lt_before + eq_before] = s;
                    }
                    eq_before++;
                }
            }
        }
        // bitonic sort of the m victims by (last use, slot) ascending
        var n = 1u;
        while (n < m) { n <<= 1u; }
        for (var i = m + lid; i < n; i += WG) {
            cand_key[i] = PAD;
            cand_idx[i] = PAD;
        }
        workgroupBarrier();   // candidates and padding written before sorting
        for (var size = 2u; size <= n; size <<= 1u) {
            for (var stride = size / 2u; stride > 0u; stride >>= 1u) {
                for (var x = lid; x < n / 2u; x += WG) {
                    let i = 2u * stride * (x / stride) + x % stride;
                    let j = i + stride;
                    let ka = cand_key[i];
                    let ia = cand_idx[i];
                    let kb = cand_key[j];
                    let ib = cand_idx[j];
                    let in_order = ka < kb || (ka == kb && ia <= ib);
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
    }
    storageBarrier();     // hits' table writes done before misses touch the tables
    workgroupBarrier();

    // ---- c. the r-th miss (in top-k order) takes the r-th victim
    var rank = before.x;
    for (var j = lo; j < hi; j++) {
        if (slot_ids[b * K + j] == -2) {
            let id = u32(topk_indices[b * K + j]);
            let victim = cand_idx[rank];
            let old = slot_state[sb + victim].x;
            if (old >= 0) { token_slot[tb + u32(old)] = -1; }
            slot_state[sb + victim] = vec2<i32>(i32(id), t);
            token_slot[tb + id] = i32(victim);
            slot_ids[b * K + j] = i32(victim);
            copies[b * K + rank] = vec2<u32>(id, victim);
            rank++;
        }
    }
    if (lid == 0u) { counts[b] = total; }
}
