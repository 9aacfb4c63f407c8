// lib/mla_rows.wgsl — the rows sparse MLA reads, read-only, and no gather in its dispatches
// (sparse_mla_da.wgsl is the unit with a gather: there the rows are read-write).

@group(0) @binding(4) var<storage, read> rows: array<vec4<u32>>;       // [R, DQ] = c_kv ‖ k_pe

fn da_gather(id: u32, lid: u32) {}
