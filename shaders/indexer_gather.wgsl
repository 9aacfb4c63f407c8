// indexer_gather.wgsl — a zero-copy gather inside the coop indexer's dispatch (issue 14's
// mechanism: on one wgpu queue, the bus and the SMs work at once only inside one dispatch, whose
// workgroups specialise; ../shared/design/GPU.md measured 74–100% of the shorter job hidden).
// indexer_coop.wgsl's `main` gives its first gather_wgs workgroups to gather_wg:
//
//   workgroups 0 .. gather_wgs − 1:      lib/gather.wgsl's gather_wg (its bindings are here)
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

@group(0) @binding(6) var<storage, read> gp: GatherParams;
@group(0) @binding(7) var<storage, read> g_copies: array<vec2<u32>>;       // [B, k] (token, slot)
@group(0) @binding(8) var<storage, read> g_counts: array<vec2<u32>>;       // [B] (misses, hits)
@group(0) @binding(9) var<storage, read> g_host: array<vec4<u32>>;         // host group [n, capacity, row]
@group(0) @binding(10) var<storage, read_write> g_pool: array<vec4<u32>>;  // [B, P, row]

fn g_put(at: u32, v: vec4<u32>) { g_pool[at] = v; }
