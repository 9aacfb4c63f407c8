// indexer_gather.wgsl — a zero-copy gather inside the coop indexer's dispatch (issue 14's
// mechanism: on one wgpu queue, the bus and the SMs work at once only inside one dispatch, whose
// workgroups specialise; ../shared/design/GPU.md measured 74–100% of the shorter job hidden).
// indexer_coop.wgsl's `main` gives its first gather_wgs workgroups to gather_wg:
//
//   workgroups 0 .. gather_wgs − 1:      transfer.wgsl's `gather` for sequences gb0 .. gb0 + gbatch:
//                                         pool[b, slot] ← host[b, token] per (token, slot) of b's
//                                         copy list, `per_seq` workgroups a sequence striding over
//                                         its missed rows' vec4s
//   workgroups gather_wgs .. + tiles · batch: the indexer's tiles
//
// (A separate entry point calling the indexer as a function is what one would write; naga 30's
// uniformity analysis treats a function's arguments as non-uniform and refuses the tile's
// cooperative-matrix operations under control flow that depends on them.)
//
// The gather comes first so its host loads are in flight while the indexer's workgroups fill
// the rest of the GPU. The two jobs share no buffer (the engine gathers one half of a batch while
// the indexer runs on the other: ESS's DBA). Linear workgroup id = x + y · (grid x): the host
// folds the grid past 65,535.

struct GatherParams {
    row_vecs: u32,     // vec4s per row
    k: u32,            // copy-list stride per sequence
    slots: u32,        // pool rows per sequence
    capacity: u32,     // host rows per sequence
    gb0: u32,          // first sequence (global index) of the gather
    per_seq: u32,      // gather workgroups per sequence
    gather_wgs: u32,   // gather workgroups in all (gbatch · per_seq)
    tiles: u32,        // indexer tiles per sequence (grid x of its own dispatch)
    index_wgs: u32,    // indexer workgroups in all (tiles · batch)
    host_b0: u32,      // first sequence of the host-store group g_host holds (≤ gb0)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(6) var<storage, read> gp: GatherParams;
@group(0) @binding(7) var<storage, read> g_copies: array<vec2<u32>>;       // [B, k] (token, slot)
@group(0) @binding(8) var<storage, read> g_counts: array<vec2<u32>>;       // [B] (misses, hits)
@group(0) @binding(9) var<storage, read> g_host: array<vec4<u32>>;         // host group [n, capacity, row]
@group(0) @binding(10) var<storage, read_write> g_pool: array<vec4<u32>>;  // [B, P, row]

// Gather workgroup `id` (< gather_wgs): its share of its sequence's missed rows, four vec4s a
// thread in flight at a time (a few workgroups must keep the bus busy: each one holds a slot the
// indexer's tiles could use).
fn gather_wg(id: u32, lid: u32) {
    let sl = id / gp.per_seq;   // the sequence within the gather
    let b = gp.gb0 + sl;
    let hb = b - gp.host_b0;    // … within its host-store group
    let n = g_counts[b].x * gp.row_vecs;
    let stride = gp.per_seq * 256u;
    for (var e0 = (id % gp.per_seq) * 256u + lid; e0 < n; e0 += 4u * stride) {
        var v: array<vec4<u32>, 4>;
        var at: array<u32, 4>;
        for (var i = 0u; i < 4u; i++) {   // the loads first, then the stores
            let e = e0 + i * stride;
            if (e < n) {
                let c = g_copies[b * gp.k + e / gp.row_vecs];
                let part = e % gp.row_vecs;
                v[i] = g_host[(hb * gp.capacity + c.x) * gp.row_vecs + part];
                at[i] = (b * gp.slots + c.y) * gp.row_vecs + part;
            }
        }
        for (var i = 0u; i < 4u; i++) {
            if (e0 + i * stride < n) { g_pool[at[i]] = v[i]; }
        }
    }
}
