// lib/indexer_io.wgsl — the uniform and the bindings of the two tuned indexer kernels,
// indexer.wgsl (f32 FMA units) and indexer_coop.wgsl (tensor cores): the same buffers and
// dispatch, so `kernels::Indexer` binds either the same way.
//
// FP8 keys (KEYS_FP8) are a key cache of R keys: R · D e4m3 bytes (key r's at r · D), then R f32
// scales, as DeepGEMM's fp8_mqa_logits takes them (k_fp8 [R, D], k_scale [R]): 4 + D bytes a key
// (132 at v32), the values 16-byte aligned for vector loads. The queries then come quantised the
// same way, as the model quantises them before its fp8_index (act_quant, one ue8m0 scale a
// head): `q` holds the B · H query rows of all sequences in that layout (q_rows of them).

struct Params {
    heads: u32,         // H, a multiple of 8, ≤ 64
    dim: u32,           // D, a multiple of 32 (the chunk of both kernels in f16 keys)
    b0: u32,            // first sequence of this dispatch (global index into q, w, seq, scores)
    score_stride: u32,  // row stride of `scores`, ≥ max T_b
    key_rows: u32,      // FP8 keys: R, the keys in the cache (its scales start at word R · D / 4)
    q_rows: u32,        // FP8 keys: the query rows in `q` (B · H; their scales start at word q_rows · D / 4)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;      // [B, H, D] (FP8 keys: the FP8 query cache)
@group(0) @binding(2) var<storage, read> w: array<f32>;            // [B, H]
@group(0) @binding(3) var<storage, read> keys: array<vec4<u32>>;   // [rows, D] (f16 pairs, f32 or FP8)
@group(0) @binding(4) var<storage, read> seq: array<u32>;          // [B, 2] = (first row, T_b)
@group(0) @binding(5) var<storage, read_write> scores: array<f32>; // [B, score_stride]

// FP8 keys: word i of the FP8 query cache (e4m3 bytes or a scale's bits).
fn q_word(i: u32) -> u32 { return bitcast<u32>(q[i / 4u][i % 4u]); }

// FP8 keys: the scale of query row r (sequence b's head h: r = b · H + h).
fn q_scale(r: u32) -> f32 { return bitcast<f32>(q_word(params.q_rows * (params.dim / 4u) + r)); }
