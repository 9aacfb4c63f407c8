// indexer.wgsl — the DeepSeek-V3.2 lightning indexer, one decode step.
//
//   index_score[b, s] = Σ_j w[b, j] · ReLU( q[b, j, :] · k_b[s, :] )      s ∈ [0, T_b)
//
// for every sequence b of a batch, each over its own key cache of T_b tokens (ragged lengths
// in one dispatch). Softmax-free, so it is a small GEMM [H × D] · [D × T_b] with a ReLU and a
// weighted head sum fused at the end. The scales of the model (H^-1/2 · D^-1/2) are folded into w
// by the caller.
//
// Mapping: workgroup (x, y) = (tile of KEYS_PER_WG = 256 keys, sequence b0 + y), 256 threads.
//   The first H/8 · 32 threads compute (the rest only help load): thread (hg, kg) owns 8 heads
//   (hg·8 ..) × 8 keys (kg·4 .. +4 and
//   128 + kg·4 .. +4), i.e. 64 f32 accumulators held as 16 named vec4 registers (a private
//   array indexed in a loop may be left in local memory by the driver, at ~1/50 the speed). The reduction dimension D is streamed through
//   workgroup memory DC = 16 dims at a time: q_s[d][h] and k_s[d][key], transposed so that the
//   inner loop reads vec4s (8 heads = 2 vec4, broadcast across a warp; 8 keys = 2 vec4,
//   contiguous across a warp). Chunk c+DC is loaded into registers while chunk c is computed
//   (software pipelining), so global-memory latency hides behind arithmetic. After the loop,
//   ReLU · w and a sum over the H/8 head groups through workgroup memory.
//
// Storage: keys are rows of D values, f16 packed two per u32 (KEYS_F16, no SHADER_F16 needed)
// or f32 bit patterns; sequence b's rows start at row seq[2b] of the bound key buffer, and it has
// seq[2b+1] = T_b of them. Accumulation is f32.
//
// Left out: FP8 keys, the Hadamard rotation and RoPE (the caller produces k_I and q_I).

override KEYS_F16: bool = true;
const WG: u32 = 256u;

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
var<workgroup> red_v: array<vec4<f32>, 512>; // [H/8][KEYS_PER_WG / 4] partial head sums (28 KiB in all)

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

    // acc_i_a: head hg·8+i, keys kg·4 ..+3;  acc_i_b: head hg·8+i, keys 128 + kg·4 ..+3
    var acc0a = vec4<f32>(0.0); var acc0b = vec4<f32>(0.0);
    var acc1a = vec4<f32>(0.0); var acc1b = vec4<f32>(0.0);
    var acc2a = vec4<f32>(0.0); var acc2b = vec4<f32>(0.0);
    var acc3a = vec4<f32>(0.0); var acc3b = vec4<f32>(0.0);
    var acc4a = vec4<f32>(0.0); var acc4b = vec4<f32>(0.0);
    var acc5a = vec4<f32>(0.0); var acc5b = vec4<f32>(0.0);
    var acc6a = vec4<f32>(0.0); var acc6b = vec4<f32>(0.0);
    var acc7a = vec4<f32>(0.0); var acc7b = vec4<f32>(0.0);

    let computes = lid < H * 4u;
    var q_next = load_q(b, lid, 0u);
    var k_next0 = load_k(row0, T, s0, 0u, lid);
    var k_next1 = load_k(row0, T, s0, 0u, lid + 256u);
    var k_next2 = load_k(row0, T, s0, 0u, lid + 512u);
    var k_next3 = load_k(row0, T, s0, 0u, lid + 768u);
    for (var c = 0u; c < D; c += DC) {
        workgroupBarrier();   // everyone is done reading the last chunk before it is overwritten
        store_q(lid, q_next);
        store_k(lid, k_next0);
        store_k(lid + 256u, k_next1);
        store_k(lid + 512u, k_next2);
        store_k(lid + 768u, k_next3);
        workgroupBarrier();   // q_s and k_s are complete before anyone reads them
        if (c + DC < D) {
            q_next = load_q(b, lid, c + DC);
            k_next0 = load_k(row0, T, s0, c + DC, lid);
            k_next1 = load_k(row0, T, s0, c + DC, lid + 256u);
            k_next2 = load_k(row0, T, s0, c + DC, lid + 512u);
            k_next3 = load_k(row0, T, s0, c + DC, lid + 768u);
        }
        if (computes) {   // (no barrier inside: the branch may diverge)
            for (var d = 0u; d < DC; d++) {
                let qa = q_s[d * h4 + hg * 2u];
                let qb = q_s[d * h4 + hg * 2u + 1u];
                let ka = k_s[d * 64u + kg];
                let kb = k_s[d * 64u + 32u + kg];
                acc0a = fma(vec4<f32>(qa.x), ka, acc0a); acc0b = fma(vec4<f32>(qa.x), kb, acc0b);
                acc1a = fma(vec4<f32>(qa.y), ka, acc1a); acc1b = fma(vec4<f32>(qa.y), kb, acc1b);
                acc2a = fma(vec4<f32>(qa.z), ka, acc2a); acc2b = fma(vec4<f32>(qa.z), kb, acc2b);
                acc3a = fma(vec4<f32>(qa.w), ka, acc3a); acc3b = fma(vec4<f32>(qa.w), kb, acc3b);
                acc4a = fma(vec4<f32>(qb.x), ka, acc4a); acc4b = fma(vec4<f32>(qb.x), kb, acc4b);
                acc5a = fma(vec4<f32>(qb.y), ka, acc5a); acc5b = fma(vec4<f32>(qb.y), kb, acc5b);
                acc6a = fma(vec4<f32>(qb.z), ka, acc6a); acc6b = fma(vec4<f32>(qb.z), kb, acc6b);
                acc7a = fma(vec4<f32>(qb.w), ka, acc7a); acc7b = fma(vec4<f32>(qb.w), kb, acc7b);
            }
        }
    }

    // ReLU, weight, and sum this thread's 8 heads; then sum the H/8 head groups.
    if (computes) {
        let wb = b * H + hg * 8u;
        let z = vec4<f32>(0.0);
        var sum_a = w[wb] * max(acc0a, z);
        var sum_b = w[wb] * max(acc0b, z);
        sum_a = fma(vec4<f32>(w[wb + 1u]), max(acc1a, z), sum_a); sum_b = fma(vec4<f32>(w[wb + 1u]), max(acc1b, z), sum_b);
        sum_a = fma(vec4<f32>(w[wb + 2u]), max(acc2a, z), sum_a); sum_b = fma(vec4<f32>(w[wb + 2u]), max(acc2b, z), sum_b);
        sum_a = fma(vec4<f32>(w[wb + 3u]), max(acc3a, z), sum_a); sum_b = fma(vec4<f32>(w[wb + 3u]), max(acc3b, z), sum_b);
        sum_a = fma(vec4<f32>(w[wb + 4u]), max(acc4a, z), sum_a); sum_b = fma(vec4<f32>(w[wb + 4u]), max(acc4b, z), sum_b);
        sum_a = fma(vec4<f32>(w[wb + 5u]), max(acc5a, z), sum_a); sum_b = fma(vec4<f32>(w[wb + 5u]), max(acc5b, z), sum_b);
        sum_a = fma(vec4<f32>(w[wb + 6u]), max(acc6a, z), sum_a); sum_b = fma(vec4<f32>(w[wb + 6u]), max(acc6b, z), sum_b);
        sum_a = fma(vec4<f32>(w[wb + 7u]), max(acc7a, z), sum_a); sum_b = fma(vec4<f32>(w[wb + 7u]), max(acc7b, z), sum_b);
        red_v[hg * 64u + kg] = sum_a;
        red_v[hg * 64u + 32u + kg] = sum_b;
    }
    workgroupBarrier();       // all head-group partials are in `red`
    for (var key = lid; key < KEYS_PER_WG; key += WG) {
        let s = s0 + key;
        if (s < T) {
            var total = 0.0;
            for (var g = 0u; g < H / 8u; g++) { total += red_v[g * 64u + key / 4u][key % 4u]; }
            scores[b * params.score_stride + s] = total;
        }
    }
}

// ---- chunk loaders (global → registers) and storers (registers → workgroup memory).

fn chunk_vecs() -> u32 { return select(4u, 2u, KEYS_F16); }   // vec4<u32> per key per chunk

// q chunk: H heads × DC dims, one vec4 per (head, 4 dims); idx = head · 4 + part.
fn load_q(b: u32, idx: u32, c: u32) -> vec4<f32> {
    if (idx >= params.heads * 4u) { return vec4<f32>(0.0); }
    return q[((b * params.heads + idx / 4u) * params.dim + c) / 4u + idx % 4u];
}

fn store_q(idx: u32, v: vec4<f32>) {
    if (idx >= params.heads * 4u) { return; }
    let h = idx / 4u;
    let part = idx % 4u;
    let h4 = params.heads / 4u;
    let col = h / 4u;
    let lane = h % 4u;
    q_s[(part * 4u) * h4 + col][lane] = v.x;
    q_s[(part * 4u + 1u) * h4 + col][lane] = v.y;
    q_s[(part * 4u + 2u) * h4 + col][lane] = v.z;
    q_s[(part * 4u + 3u) * h4 + col][lane] = v.w;
}

// key chunk: 256 keys × DC dims; idx = key · chunk_vecs() + part; keys past T read as zero.
fn load_k(row0: u32, T: u32, s0: u32, c: u32, idx: u32) -> vec4<u32> {
    let key = idx / chunk_vecs();
    if (key >= KEYS_PER_WG || s0 + key >= T) { return vec4<u32>(0u); }
    let words = select(params.dim, params.dim / 2u, KEYS_F16);   // u32 words per key row
    return keys[((row0 + s0 + key) * words + select(c, c / 2u, KEYS_F16)) / 4u + idx % chunk_vecs()];
}

fn store_k(idx: u32, v: vec4<u32>) {
    let key = idx / chunk_vecs();
    if (key >= KEYS_PER_WG) { return; }
    let part = idx % chunk_vecs();
    let col = key / 4u;
    let lane = key % 4u;
    if (KEYS_F16) {
        let d = part * 8u;
        let p0 = unpack2x16float(v.x);
        let p1 = unpack2x16float(v.y);
        let p2 = unpack2x16float(v.z);
        let p3 = unpack2x16float(v.w);
        k_s[d * 64u + col][lane] = p0.x;
        k_s[(d + 1u) * 64u + col][lane] = p0.y;
        k_s[(d + 2u) * 64u + col][lane] = p1.x;
        k_s[(d + 3u) * 64u + col][lane] = p1.y;
        k_s[(d + 4u) * 64u + col][lane] = p2.x;
        k_s[(d + 5u) * 64u + col][lane] = p2.y;
        k_s[(d + 6u) * 64u + col][lane] = p3.x;
        k_s[(d + 7u) * 64u + col][lane] = p3.y;
    } else {
        let f = bitcast<vec4<f32>>(v);
        let d = part * 4u;
        k_s[d * 64u + col][lane] = f.x;
        k_s[(d + 1u) * 64u + col][lane] = f.y;
        k_s[(d + 2u) * 64u + col][lane] = f.z;
        k_s[(d + 3u) * 64u + col][lane] = f.w;
    }
}
