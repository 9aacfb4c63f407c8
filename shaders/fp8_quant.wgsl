// fp8_quant.wgsl — rows of f32 values into DeepSeek-V3.2's FP8 cache layout, byte for byte what
// reference::fp8::pack_latent_row (and pack_index_key: rope 0) makes with ScaleRule::Ue8m0
// (entry point `main`; the packing is lib/fp8_pack.wgsl's, the bit-level e4m3 and bf16
// lib/fp8.wgsl's), and back (`dequant`).
//
//   row in:  x[0 .. KV) ‖ x[KV .. KV + ROPE)   (f32)
//   row out: the packed row (lib/fp8_pack.wgsl)
//
// Rows go one after another, or (cache_rows > 0: keys, and the FP8 indexer's queries) into the
// FP8 key cache of lib/indexer_io.wgsl. Mapping: one workgroup of 128 threads per row (grid
// folded past 65,535).

struct Params {
    rows: u32,
    kv: u32,          // values quantised, a multiple of 4
    rope: u32,        // values kept as bf16, even
    slots: u32,       // f32 scale slots (lib/fp8.wgsl: ⌈kv / 128⌉, latent rows round up to 4)
    row_words: u32,   // u32 words of an output row: kv / 4 + slots + rope / 2
    cache_rows: u32,  // 0: rows one after another; else the FP8 key cache of that many rows
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;          // [rows, kv + rope]
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;    // [rows, row_words]


fn fp8_src(src_at: vec2<u32>, i: u32) -> f32 { return src[src_at.x + i]; }
fn fp8_dst(row: u32, w: u32, word: u32) {
    packed[fp8_word_at(row, w, params.row_words, params.kv, params.cache_rows)] = word;   // lib/fp8.wgsl
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= params.rows) { return; }   // uniform across the workgroup
    let p = params;
    fp8_pack(lid, vec2<u32>(row * (p.kv + p.rope), 0u), row, p.kv, p.slots, p.rope);
}

// The inverse, for tests and readers: packed rows back to f32 values, `e4m3 value · s_b` (lib/fp8.wgsl's e4m3x4_values, the decoder every kernel reads FP8 with)
// and the bf16 values, one thread per value.
@group(0) @binding(3) var<storage, read_write> values: array<f32>;   // [rows, kv + rope]

@compute @workgroup_size(256)
fn dequant(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let width = params.kv + params.rope;
    let e = gid.x + gid.y * nwg.x * 256u;
    if (e >= params.rows * width) { return; }
    let row = e / width;
    let d = e % width;
    let ix = fp8_row_at(params.kv, params.slots, d);   // lib/fp8.wgsl
    let p = params;
    let word = packed[fp8_word_at(row, ix.x, p.row_words, p.kv, p.cache_rows)];
    let scale = packed[fp8_word_at(row, ix.y, p.row_words, p.kv, p.cache_rows)];
    values[e] = fp8_row_value(p.kv, d, word, scale);
}
