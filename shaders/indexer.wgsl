// indexer.wgsl — the DeepSeek-V3.2 lightning indexer, one decode step.
//
//   index_score[b, s] = Σ_j w[b, j] · ReLU( q[b, j, :] · k_b[s, :] )      s ∈ [0, T_b)
//
// for every sequence b of a batch, each over its own key cache of T_b tokens (ragged lengths
// in one dispatch). Softmax-free, so it is a small GEMM [H × D] · [D × T_b] with a ReLU and a
// weighted head sum fused at the end. The scales of the model (H^-1/2 · D^-1/2) are folded into w
// by the caller.
//
// Mapping: workgroup (x, y) = (tile of KEYS_PER_WG = 256 keys, sequence b0 + y).
//   WG = H/8 · 32 threads; thread (hg, kg) owns 8 heads (hg·8 ..) × 8 keys (kg·4 .. +4 and
//   128 + kg·4 .. +4), i.e. 64 f32 accumulators. The reduction dimension D is streamed through
//   workgroup memory DC = 16 dims at a time: q_s[d][h] and k_s[d][key], transposed so that the
//   inner loop reads vec4s (8 heads = 2 vec4, broadcast across a warp; 8 keys = 2 vec4,
//   contiguous across a warp). After the loop, ReLU · w and a sum over the H/8 head groups through
//   workgroup memory.
//
// Storage: keys are rows of D values, f16 packed two per u32 (KEYS_F16, no SHADER_F16 needed)
// or f32 bit patterns; sequence b's rows start at row seq[2b] of the bound key buffer, and it has
// seq[2b+1] = T_b of them. Accumulation is f32.
//
// Left out: FP8 keys, the Hadamard rotation and RoPE (the caller produces k_I and q_I).

override KEYS_F16: bool = true;
override WG: u32 = 256u;          // = (H / 8) · 32, set by the Rust wrapper

const DC: u32 = 16u;              // dims per chunk
const KEYS_PER_WG: u32 = 256u;
const MAX_H: u32 = 64u;

struct Params {
    heads: u32,         // H, a multiple of 8, ≤ 64
    dim: u32,           // D, a multiple of 16
    b0: u32,            // first sequence of this dispatch (global index into q, w, seq, scores)
    score_stride: u32,  // row stride of `scores`, ≥ max T_b
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;      // [B, H, D]
@group(0) @binding(2) var<storage, read> w: array<f32>;            // [B, H]
@group(0) @binding(3) var<storage, read> keys: array<vec4<u32>>;   // [rows, D] (f16 pairs or f32)
@group(0) @binding(4) var<storage, read> seq: array<u32>;          // [B, 2] = (first row, T_b)
@group(0) @binding(5) var<storage, read_write> scores: array<f32>; // [B, score_stride]

var<workgroup> q_s: array<vec4<f32>, 256>;   // [DC][MAX_H / 4]
var<workgroup> k_s: array<vec4<f32>, 1024>;  // [DC][KEYS_PER_WG / 4]
var<workgroup> red: array<f32, 2048>;        // [H/8][KEYS_PER_WG] partial head sums (28 KiB in all)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let H = params.heads;
    let D = params.dim;
    let b = params.b0 + wg.y;
    let row0 = seq[2u * b];
    let T = seq[2u * b + 1u];
    let s0 = wg.x * KEYS_PER_WG;
    if (s0 >= T) { return; }   // uniform across the workgroup: no barrier is skipped by some only

    let hg = lid / 32u;        // head group: heads hg·8 .. hg·8+7
    let kg = lid % 32u;        // key group: keys kg·4 .. +3 and 128 + kg·4 .. +3
    let h4 = H / 4u;           // vec4s of heads per dim in q_s
    let words = select(D, D / 2u, KEYS_F16);        // u32 words per key row
    let chunk_vecs = select(4u, 2u, KEYS_F16);      // vec4<u32> per key per chunk

    var acc: array<array<f32, 8>, 8>;               // [head i][key j]
    for (var i = 0u; i < 8u; i++) { for (var j = 0u; j < 8u; j++) { acc[i][j] = 0.0; } }

    for (var c = 0u; c < D; c += DC) {
        // q chunk: q_s[d][h] for H heads × 16 dims, read as one vec4 per (head, 4 dims).
        for (var idx = lid; idx < H * 4u; idx += WG) {
            let h = idx / 4u;
            let part = idx % 4u;
            let v = q[((b * H + h) * D + c) / 4u + part];
            let col = h / 4u;
            let lane = h % 4u;
            for (var j = 0u; j < 4u; j++) {
                q_s[(part * 4u + j) * h4 + col][lane] = v[j];
            }
        }
        // key chunk: k_s[d][key] for 256 keys × 16 dims; keys past T_b read as zero.
        for (var idx = lid; idx < KEYS_PER_WG * chunk_vecs; idx += WG) {
            let key = idx / chunk_vecs;
            let part = idx % chunk_vecs;
            let s = s0 + key;
            var v = vec4<u32>(0u);
            if (s < T) {
                v = keys[((row0 + s) * words + select(c, c / 2u, KEYS_F16)) / 4u + part];
            }
            let col = key / 4u;
            let lane = key % 4u;
            if (KEYS_F16) {
                for (var j = 0u; j < 4u; j++) {
                    let pair = unpack2x16float(v[j]);
                    let d = part * 8u + 2u * j;
                    k_s[d * 64u + col][lane] = pair.x;
                    k_s[(d + 1u) * 64u + col][lane] = pair.y;
                }
            } else {
                for (var j = 0u; j < 4u; j++) {
                    k_s[(part * 4u + j) * 64u + col][lane] = bitcast<f32>(v[j]);
                }
            }
        }
        workgroupBarrier();   // q_s and k_s are complete before anyone reads them

        for (var d = 0u; d < DC; d++) {
            let qa = q_s[d * h4 + hg * 2u];
            let qb = q_s[d * h4 + hg * 2u + 1u];
            let ka = k_s[d * 64u + kg];
            let kb = k_s[d * 64u + 32u + kg];
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(qa[i], ka[j], acc[i][j]);
                    acc[i][4u + j] = fma(qa[i], kb[j], acc[i][4u + j]);
                    acc[4u + i][j] = fma(qb[i], ka[j], acc[4u + i][j]);
                    acc[4u + i][4u + j] = fma(qb[i], kb[j], acc[4u + i][4u + j]);
                }
            }
        }
        workgroupBarrier();   // everyone is done reading before the next chunk overwrites
    }

    // ReLU, weight, and sum this thread's 8 heads; then sum the H/8 head groups.
    var part_sum: array<f32, 8>;
    for (var j = 0u; j < 8u; j++) { part_sum[j] = 0.0; }
    for (var i = 0u; i < 8u; i++) {
        let wi = w[b * H + hg * 8u + i];
        for (var j = 0u; j < 8u; j++) {
            part_sum[j] = fma(wi, max(acc[i][j], 0.0), part_sum[j]);
        }
    }
    for (var j = 0u; j < 4u; j++) {
        red[hg * KEYS_PER_WG + kg * 4u + j] = part_sum[j];
        red[hg * KEYS_PER_WG + 128u + kg * 4u + j] = part_sum[4u + j];
    }
    workgroupBarrier();       // all head-group partials are in `red`
    for (var key = lid; key < KEYS_PER_WG; key += WG) {
        let s = s0 + key;
        if (s < T) {
            var total = 0.0;
            for (var g = 0u; g < H / 8u; g++) { total += red[g * KEYS_PER_WG + key]; }
            scores[b * params.score_stride + s] = total;
        }
    }
}
