// indexer_fp8.wgsl — the lightning indexer over FP8 keys, as DeepSeek-V3.2's `fp8_index`
// computes it (version 1 of the FP8 indexer: straightforward, not tuned; read it first):
//
//   index_score[b, s] = k_s · Σ_h (w[b, h] · q_s[b, h]) · ReLU( Σ_d q̂[b, h, d] · k̂_s[d] )
//
// Keys and queries are FP8 caches in the layout of lib/indexer_io.wgsl
// (reference::fp8::pack_index_cache): rows of D e4m3 bytes, then one f32 scale a row (132 bytes a
// key at D = 128); the queries are quantised before this kernel as the model does, one ue8m0 scale
// a head (reference::fp8::quantize_rows). The products of two e4m3 values are exact in f32, the
// sums are f32. One scale a key and a head, so D ≤ 128 (the model's 128).
//
// Mapping: workgroup (x, y) = (256 keys, sequence b0 + y), 256 threads. The sequence's H ≤ 64
// query rows are copied into workgroup memory first. Then thread t owns key s0 + t: it walks the
// key's words, decodes 4 values a word and adds them into one dot product per head (a private
// array of H ≤ 64 accumulators, which a driver may keep in local memory: the tuned kernels,
// indexer.wgsl and indexer_coop.wgsl with KEYS_FP8, stage tiles instead).

struct Params {
    heads: u32,         // H ≤ 64
    dim: u32,           // D ≤ 128, a multiple of 16
    b0: u32,            // first sequence of this dispatch
    score_stride: u32,  // row stride of `scores`
    key_rows: u32,      // R, the keys in the cache (its scales start at word R · D / 4)
    q_rows: u32,        // the query rows in `q` (their scales start at word q_rows · D / 4)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<u32>;            // [B · H, D / 4] e4m3 words, then [B · H] scales
@group(0) @binding(2) var<storage, read> w: array<f32>;            // [B, H]
@group(0) @binding(3) var<storage, read> keys: array<u32>;         // [R, D / 4] e4m3 words, then [R] scales
@group(0) @binding(4) var<storage, read> seq: array<u32>;          // [B, 2] = (first row, T_b)
@group(0) @binding(5) var<storage, read_write> scores: array<f32>; // [B, score_stride]

const KEYS_PER_WG: u32 = 256u;

var<workgroup> qw_s: array<u32, 2048>;   // [H][D / 4] the quantised queries, 4 e4m3 a word
var<workgroup> qs_s: array<f32, 64>;     // w · q_s per head

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let H = params.heads;
    let D = params.dim;
    let words = D / 4u;
    let b = params.b0 + wg.y;
    let row0 = seq[2u * b];
    let T = seq[2u * b + 1u];
    let s0 = wg.x * KEYS_PER_WG;
    if (s0 >= T) { return; }   // uniform across the workgroup

    // ---- the sequence's query rows and w · q_s into workgroup memory
    for (var i = lid; i < H * words; i += 256u) { qw_s[i] = q[b * H * words + i]; }
    if (lid < H) { qs_s[lid] = w[b * H + lid] * bitcast<f32>(q[params.q_rows * words + b * H + lid]); }
    workgroupBarrier();   // the queries staged before any key uses them

    // ---- one key a thread
    let s = s0 + lid;
    if (s >= T) { return; }   // (no barrier below)
    let ka = (row0 + s) * words;
    var acc: array<f32, 64>;   // q̂_j · k̂ per head j
    for (var j = 0u; j < H; j++) { acc[j] = 0.0; }
    for (var i = 0u; i < words; i++) {
        let k4 = e4m3x4_values(keys[ka + i]);
        for (var j = 0u; j < H; j++) {
            acc[j] += dot(e4m3x4_values(qw_s[j * words + i]), k4);
        }
    }
    var total = 0.0;
    for (var j = 0u; j < H; j++) { total += qs_s[j] * max(acc[j], 0.0); }
    scores[b * params.score_stride + s] = bitcast<f32>(keys[params.key_rows * words + row0 + s]) * total;
}
