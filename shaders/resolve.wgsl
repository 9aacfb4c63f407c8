// resolve.wgsl — the LRU staging pool on the GPU: top-k token ids → pool slot ids, for every
// sequence of a batch in one dispatch, with no CPU round trip.
//
// The policy is src/reference/lru.rs (the oracle this shader is tested against), for a pool of
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
//      the lower slot), and a bitonic sort by (last use, slot) — lib/select.wgsl, shared with
//      topk.wgsl (this file gives it the candidates, `select_key`, and the order);
//   c. each thread walks its segment again, giving its r-th miss the r-th victim.
//
// Left out: pools over MAX_SLOTS slots, k over MAX_K.

override WG: u32 = 256u;

const MAX_SLOTS: u32 = 16384u;

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
var<workgroup> totals: vec2<u32>;
var<private> sb: u32;                          // this sequence's slot_state base

fn is_used(s: u32) -> bool {
    return (atomicLoad(&used[s / 32u]) & (1u << (s % 32u))) != 0u;
}

// lib/select.wgsl hooks: the unused regular slots are the candidates, keyed by last use; the
// smallest win; the victims are ordered by (last use, slot) ascending.
fn select_key(s: u32) -> vec2<u32> {
    return vec2<u32>(u32(slot_state[sb + s].y), u32(!is_used(s)));
}

fn select_largest() -> bool {
    return false;
}

fn sorts_before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka < kb || (ka == kb && ia <= ib);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let K = params.k;
    let P = params.slots;
    let R = P - 1u;                       // regular slots; P − 1 is reserved
    let t = i32(clock.x);
    let b = params.b0 + wg.x;
    let newest = i32(seq[2u * b + 1u]) - 1;
    sb = b * P;
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
        let chosen = radix_select(lid, R, m);
        compact(lid, R, chosen.x, chosen.y, false);
        bitonic_sort(lid, m, PAD);
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
