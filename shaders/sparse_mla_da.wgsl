// sparse_mla_da.wgsl — ESS's DA on one wgpu queue: sparse_mla_coop.wgsl's `scores` with PHASE 1
// gives its first `params.gather_wgs` workgroups to lib/gather.wgsl's zero-copy gather of the
// missed rows, while the rest score the tiles made only of hits (the ids are ordered hits first:
// da_order.wgsl). The gather writes the pool the scores read, other rows of it, so the pool is
// bound once, read-write (a buffer cannot be read-only and read-write in one dispatch).

@group(0) @binding(4) var<storage, read_write> rows: array<vec4<u32>>;  // [R, DQ]: the pool
@group(0) @binding(10) var<storage, read> gp: GatherParams;
@group(0) @binding(11) var<storage, read> g_copies: array<vec2<u32>>;    // [B, k] (token, slot)
@group(0) @binding(12) var<storage, read> g_counts: array<vec2<u32>>;    // [B] (misses, hits)
@group(0) @binding(13) var<storage, read> g_host: array<vec4<u32>>;      // host group [n, capacity, row]

fn g_put(at: u32, v: vec4<u32>) { rows[at] = v; }

fn da_gather(id: u32, lid: u32) { gather_wg(id, lid); }
