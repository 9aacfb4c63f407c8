// indexer_naive.wgsl — the lightning indexer, version 1: the equation as a loop.
//
//   index_score[b, s] = Σ_j w[b, j] · ReLU( q[b, j, :] · k_b[s, :] )      s ∈ [0, T_b)
//
// One thread per (sequence, key): it walks the H heads and D dims itself, reading q and the key
// straight from storage. No workgroup memory, no barriers, no tiling. This is the kernel to read
// first: `indexer.wgsl` computes the same sums as a tiled GEMM (docs/PERF.md, version 1 → 2)
// (the measured ratio is in docs/PERF.md). Same bindings and storage formats as `indexer.wgsl`.
// Reference: `reference::indexer`.
//
// Mapping: workgroup (x, y) = (keys 256x .., sequence b0 + y), one thread per key.

override KEYS_F16: bool = true;

struct Params {
    heads: u32,
    dim: u32,
    b0: u32,
    score_stride: u32,
    _key_rows: u32,   // (FP8 keys only: not read here)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;             // [B, H, D]
@group(0) @binding(2) var<storage, read> w: array<f32>;             // [B, H]
@group(0) @binding(3) var<storage, read> keys: array<u32>;          // [rows, D] f16 pairs or f32 bits
@group(0) @binding(4) var<storage, read> seq: array<u32>;           // [B, 2] = (first row, T_b)
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;  // [B, score_stride]

// dim d of key row r
fn key(r: u32, d: u32) -> f32 {
    let D = params.dim;
    if (KEYS_F16) {
        return unpack2x16float(keys[(r * D + d) / 2u])[d % 2u];
    }
    return bitcast<f32>(keys[r * D + d]);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.y;
    let s = wg.x * 256u + lid;
    if (s >= seq[2u * b + 1u]) { return; }
    let r = seq[2u * b] + s;
    let H = params.heads;
    let D = params.dim;
    var score = 0.0;
    for (var j = 0u; j < H; j++) {
        var dot = 0.0;
        for (var d = 0u; d < D; d++) {
            dot += q[(b * H + j) * D + d] * key(r, d);
        }
        score += w[b * H + j] * max(dot, 0.0);
    }
    scores[b * params.score_stride + s] = score;
}
