// lib/gather.wgsl — a zero-copy gather that runs in the first workgroups of another kernel's
// dispatch (issue 14: on one wgpu queue the bus and the SMs only work at once inside one
// dispatch, whose workgroups specialise; ../shared/design/GPU.md measured 74–100% of the shorter
// job hidden). transfer.wgsl's `gather` for sequences gb0 .. gb0 + gbatch: pool[b, slot] ←
// host[b, token] per (token, slot) of b's copy list, `per_seq` workgroups a sequence striding over
// its missed rows' vec4s. The includer declares `gp`, `g_copies`, `g_counts` and `g_host`, and
// `g_put(at, v)`, which stores vec4 `at` of the pool (indexer_gather.wgsl, sparse_mla_da.wgsl).

struct GatherParams {
    row_vecs: u32,     // vec4s per row
    k: u32,            // copy-list stride per sequence
    slots: u32,        // pool rows per sequence
    capacity: u32,     // host rows per sequence
    gb0: u32,          // first sequence (global index) of the gather
    per_seq: u32,      // gather workgroups per sequence
    gather_wgs: u32,   // gather workgroups in all (gbatch · per_seq)
    tiles: u32,        // the other job's tiles per sequence (the indexer's grid x)
    index_wgs: u32,    // the other job's workgroups in all
    host_b0: u32,      // first sequence of the host-store group g_host holds (≤ gb0)
    _pad1: u32,
    _pad2: u32,
}

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
            if (e0 + i * stride < n) { g_put(at[i], v[i]); }
        }
    }
}
