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
//   (hg·8 ..) × 8 keys (kg·4 .. +4 and 128 + kg·4 .. +4), i.e. 64 f32 accumulators held as 16
//   named vec4 registers (a private array indexed in a loop may be left in local memory by the
//   driver, at ~1/50 the speed). The reduction dimension D is streamed through workgroup memory
//   DC dims at a time: q_s[d][h] (f32) and k_s[word][key], transposed so the inner loop reads
//   vec4s (8 heads = 2 vec4, broadcast across a warp; 4 keys = 1 vec4, contiguous across a warp).
//   f16 keys stay packed in workgroup memory (one u32 = two dims): half the traffic and twice the
//   dims per chunk (DC = 32) of the f32 path (DC = 16). Chunk c+DC is loaded into registers while
//   chunk c is computed (software pipelining), so global-memory latency hides behind arithmetic.
//   After the loop, ReLU · w and a sum over the H/8 head groups through workgroup memory.
//
// Storage: keys are rows of D values, f16 packed two per u32 (KEYS_F16, no SHADER_F16 needed)
// or f32 bit patterns; sequence b's rows start at row seq[2b] of the bound key buffer, and it has
// seq[2b+1] = T_b of them. Accumulation is f32.
//
// FP8 keys (KEYS_FP8, with KEYS_F16: the staging format): the model's `fp8_index`, as
// indexer_coop.wgsl computes it, over the FP8 key cache and FP8 queries (lib/indexer_io.wgsl):
// q̂ staged as its e4m3 values (f32), the keys' e4m3 values converted to f16 pairs as they are
// staged (exact, unscaled), w · q_s in the epilogue and the key's scale last.
//
// Left out: the Hadamard rotation and RoPE (the caller produces k_I and q_I).

override KEYS_F16: bool = true;
override KEYS_FP8: bool = false;
override DC: u32 = select(16u, 32u, KEYS_F16);   // dims per chunk = 16 u32 words per key

const WG: u32 = 256u;
const KEYS_PER_WG: u32 = 256u;
const WORDS: u32 = 16u;                            // u32 words per key per chunk

// (the uniform and the bindings: lib/indexer_io.wgsl)

var<workgroup> q_s: array<vec4<f32>, 512>;   // [DC][H / 4]; after the loop: [H/8][256 keys / 4] head sums
var<workgroup> k_s: array<vec4<u32>, 1024>;  // [WORDS][KEYS_PER_WG / 4]   (24 KiB in all: FP8's
                                              // per-head scales live in registers, since one
                                              // more byte here halves the workgroups per SM)

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
    let computes = lid < H * 4u;

    // acc_i_a: head hg·8+i, keys kg·4 ..+3;  acc_i_b: head hg·8+i, keys 128 + kg·4 ..+3
    var acc0a = vec4<f32>(0.0); var acc0b = vec4<f32>(0.0);
    var acc1a = vec4<f32>(0.0); var acc1b = vec4<f32>(0.0);
    var acc2a = vec4<f32>(0.0); var acc2b = vec4<f32>(0.0);
    var acc3a = vec4<f32>(0.0); var acc3b = vec4<f32>(0.0);
    var acc4a = vec4<f32>(0.0); var acc4b = vec4<f32>(0.0);
    var acc5a = vec4<f32>(0.0); var acc5b = vec4<f32>(0.0);
    var acc6a = vec4<f32>(0.0); var acc6b = vec4<f32>(0.0);
    var acc7a = vec4<f32>(0.0); var acc7b = vec4<f32>(0.0);

    var wqa = vec4<f32>(0.0);   // FP8: w · q_s of heads hg·8 ..+3 and hg·8+4 ..+7
    var wqb = vec4<f32>(0.0);
    if (KEYS_FP8 & computes) {
        let r = b * H + hg * 8u;
        wqa = vec4<f32>(w[r] * q_scale(r), w[r + 1u] * q_scale(r + 1u), w[r + 2u] * q_scale(r + 2u), w[r + 3u] * q_scale(r + 3u));
        wqb = vec4<f32>(w[r + 4u] * q_scale(r + 4u), w[r + 5u] * q_scale(r + 5u), w[r + 6u] * q_scale(r + 6u), w[r + 7u] * q_scale(r + 7u));
    }
    var q_next0 = load_q(b, 0u, lid);
    var q_next1 = load_q(b, 0u, lid + 256u);
    var k_next0 = load_k(row0, T, s0, 0u, lid);
    var k_next1 = load_k(row0, T, s0, 0u, lid + 256u);
    var k_next2 = load_k(row0, T, s0, 0u, lid + 512u);
    var k_next3 = load_k(row0, T, s0, 0u, lid + 768u);
    for (var c = 0u; c < D; c += DC) {
        workgroupBarrier();   // everyone is done reading the last chunk before it is overwritten
        store_q(lid, q_next0);
        store_q(lid + 256u, q_next1);
        store_k(lid, k_next0);
        store_k(lid + 256u, k_next1);
        store_k(lid + 512u, k_next2);
        store_k(lid + 768u, k_next3);
        workgroupBarrier();   // q_s and k_s are complete before anyone reads them
        if (c + DC < D) {
            q_next0 = load_q(b, c + DC, lid);
            q_next1 = load_q(b, c + DC, lid + 256u);
            k_next0 = load_k(row0, T, s0, c + DC, lid);
            k_next1 = load_k(row0, T, s0, c + DC, lid + 256u);
            k_next2 = load_k(row0, T, s0, c + DC, lid + 512u);
            k_next3 = load_k(row0, T, s0, c + DC, lid + 768u);
        }
        if (computes) {   // (no barrier inside: the branch may diverge)
            for (var wd = 0u; wd < WORDS; wd++) {
                let pa = k_s[wd * 64u + kg];         // keys kg·4 ..+3
                let pb = k_s[wd * 64u + 32u + kg];   // keys 128 + kg·4 ..+3
                // f16: word wd holds dims 2·wd and 2·wd+1; f32: word wd is dim wd.
                var ka: vec4<f32>;
                var kb: vec4<f32>;
                var ka2: vec4<f32>;
                var kb2: vec4<f32>;
                if (KEYS_F16) {   // lib/f16.wgsl
                    let ua = unpack_pairs(pa);
                    let ub = unpack_pairs(pb);
                    ka = ua[0];
                    ka2 = ua[1];
                    kb = ub[0];
                    kb2 = ub[1];
                } else {
                    ka = bitcast<vec4<f32>>(pa);
                    kb = bitcast<vec4<f32>>(pb);
                }
                let d = select(wd, 2u * wd, KEYS_F16);
                var qa = q_s[d * h4 + hg * 2u];        // heads hg·8 ..+3 at dim d
                var qb = q_s[d * h4 + hg * 2u + 1u];   // heads hg·8+4 ..+7
                acc0a = fma(vec4<f32>(qa.x), ka, acc0a); acc0b = fma(vec4<f32>(qa.x), kb, acc0b);
                acc1a = fma(vec4<f32>(qa.y), ka, acc1a); acc1b = fma(vec4<f32>(qa.y), kb, acc1b);
                acc2a = fma(vec4<f32>(qa.z), ka, acc2a); acc2b = fma(vec4<f32>(qa.z), kb, acc2b);
                acc3a = fma(vec4<f32>(qa.w), ka, acc3a); acc3b = fma(vec4<f32>(qa.w), kb, acc3b);
                acc4a = fma(vec4<f32>(qb.x), ka, acc4a); acc4b = fma(vec4<f32>(qb.x), kb, acc4b);
                acc5a = fma(vec4<f32>(qb.y), ka, acc5a); acc5b = fma(vec4<f32>(qb.y), kb, acc5b);
                acc6a = fma(vec4<f32>(qb.z), ka, acc6a); acc6b = fma(vec4<f32>(qb.z), kb, acc6b);
                acc7a = fma(vec4<f32>(qb.w), ka, acc7a); acc7b = fma(vec4<f32>(qb.w), kb, acc7b);
                if (KEYS_F16) {   // the word's second dim
                    qa = q_s[(d + 1u) * h4 + hg * 2u];
                    qb = q_s[(d + 1u) * h4 + hg * 2u + 1u];
                    acc0a = fma(vec4<f32>(qa.x), ka2, acc0a); acc0b = fma(vec4<f32>(qa.x), kb2, acc0b);
                    acc1a = fma(vec4<f32>(qa.y), ka2, acc1a); acc1b = fma(vec4<f32>(qa.y), kb2, acc1b);
                    acc2a = fma(vec4<f32>(qa.z), ka2, acc2a); acc2b = fma(vec4<f32>(qa.z), kb2, acc2b);
                    acc3a = fma(vec4<f32>(qa.w), ka2, acc3a); acc3b = fma(vec4<f32>(qa.w), kb2, acc3b);
                    acc4a = fma(vec4<f32>(qb.x), ka2, acc4a); acc4b = fma(vec4<f32>(qb.x), kb2, acc4b);
                    acc5a = fma(vec4<f32>(qb.y), ka2, acc5a); acc5b = fma(vec4<f32>(qb.y), kb2, acc5b);
                    acc6a = fma(vec4<f32>(qb.z), ka2, acc6a); acc6b = fma(vec4<f32>(qb.z), kb2, acc6b);
                    acc7a = fma(vec4<f32>(qb.w), ka2, acc7a); acc7b = fma(vec4<f32>(qb.w), kb2, acc7b);
                }
            }
        }
    }

    // ReLU, weight, and sum this thread's 8 heads; then sum the H/8 head groups.
    workgroupBarrier();   // the last chunk's reads of q_s are done: it now holds the head sums
    if (computes) {
        let z = vec4<f32>(0.0);
        let wb = b * H + hg * 8u;
        var sum_a = hw(wb, wqa.x) * max(acc0a, z);
        var sum_b = hw(wb, wqa.x) * max(acc0b, z);
        sum_a = fma(vec4<f32>(hw(wb + 1u, wqa.y)), max(acc1a, z), sum_a); sum_b = fma(vec4<f32>(hw(wb + 1u, wqa.y)), max(acc1b, z), sum_b);
        sum_a = fma(vec4<f32>(hw(wb + 2u, wqa.z)), max(acc2a, z), sum_a); sum_b = fma(vec4<f32>(hw(wb + 2u, wqa.z)), max(acc2b, z), sum_b);
        sum_a = fma(vec4<f32>(hw(wb + 3u, wqa.w)), max(acc3a, z), sum_a); sum_b = fma(vec4<f32>(hw(wb + 3u, wqa.w)), max(acc3b, z), sum_b);
        sum_a = fma(vec4<f32>(hw(wb + 4u, wqb.x)), max(acc4a, z), sum_a); sum_b = fma(vec4<f32>(hw(wb + 4u, wqb.x)), max(acc4b, z), sum_b);
        sum_a = fma(vec4<f32>(hw(wb + 5u, wqb.y)), max(acc5a, z), sum_a); sum_b = fma(vec4<f32>(hw(wb + 5u, wqb.y)), max(acc5b, z), sum_b);
        sum_a = fma(vec4<f32>(hw(wb + 6u, wqb.z)), max(acc6a, z), sum_a); sum_b = fma(vec4<f32>(hw(wb + 6u, wqb.z)), max(acc6b, z), sum_b);
        sum_a = fma(vec4<f32>(hw(wb + 7u, wqb.w)), max(acc7a, z), sum_a); sum_b = fma(vec4<f32>(hw(wb + 7u, wqb.w)), max(acc7b, z), sum_b);
        q_s[hg * 64u + kg] = sum_a;
        q_s[hg * 64u + 32u + kg] = sum_b;
    }
    workgroupBarrier();   // all head-group partials are in q_s
    let key = lid;        // one key per thread
    let s = s0 + key;
    if (s < T) {
        var total = 0.0;
        for (var g = 0u; g < H / 8u; g++) { total += q_s[g * 64u + key / 4u][key % 4u]; }
        if (KEYS_FP8) {   // times the key's scale, after its values
            let si = params.key_rows * (params.dim / 4u) + row0 + s;
            total *= bitcast<f32>(keys[si / 4u][si % 4u]);
        }
        scores[b * params.score_stride + s] = total;
    }
}

// Head weight i of w (the epilogue's: loaded where it is used), or for FP8 keys w · q_s.
fn hw(i: u32, fp8_weight: f32) -> f32 {
    if (KEYS_FP8) { return fp8_weight; }
    return w[i];
}


// ---- chunk loaders (global → registers) and storers (registers → workgroup memory).

// q chunk: H heads × DC dims as vec4s; idx = part · H + head, so consecutive threads store
// consecutive heads (no bank conflicts).
fn load_q(b: u32, c: u32, idx: u32) -> vec4<f32> {
    let H = params.heads;
    if (idx >= H * (DC / 4u)) { return vec4<f32>(0.0); }
    if (KEYS_FP8) {   // the 4 dims' e4m3 bytes (one word), decoded by store_q
        let word = q_word(((b * H + idx % H) * params.dim + c) / 4u + idx / H);
        return vec4<f32>(bitcast<f32>(word), 0.0, 0.0, 0.0);
    }
    return q[((b * H + idx % H) * params.dim + c) / 4u + idx / H];
}

fn store_q(idx: u32, v_in: vec4<f32>) {
    let H = params.heads;
    if (idx >= H * (DC / 4u)) { return; }
    let h = idx % H;
    var v = v_in;
    if (KEYS_FP8) { v = e4m3x4_values(bitcast<u32>(v_in.x)); }   // q̂'s values (lib/fp8.wgsl)
    let d = (idx / H) * 4u;
    let h4 = H / 4u;
    q_s[d * h4 + h / 4u][h % 4u] = v.x;
    q_s[(d + 1u) * h4 + h / 4u][h % 4u] = v.y;
    q_s[(d + 2u) * h4 + h / 4u][h % 4u] = v.z;
    q_s[(d + 3u) * h4 + h / 4u][h % 4u] = v.w;
}

// key chunk: 256 keys × 16 words (32 f16 dims or 16 f32 dims) = 4 vec4<u32> per key;
// idx = part · 256 + key, so consecutive threads store consecutive keys. Keys past T read zero.
fn load_k(row0: u32, T: u32, s0: u32, c: u32, idx: u32) -> vec4<u32> {
    let key = idx % KEYS_PER_WG;
    if (s0 + key >= T) { return vec4<u32>(0u); }
    if (KEYS_FP8) {   // 8 e4m3 values (two words) of the part's dims, raw; store_k converts them
        let part = idx / KEYS_PER_WG;
        let v = keys[((row0 + s0 + key) * params.dim + c) / 16u + part / 2u];
        return select(vec4<u32>(v.x, v.y, 0u, 0u), vec4<u32>(v.z, v.w, 0u, 0u), part % 2u == 1u);
    }
    let words = select(params.dim, params.dim / 2u, KEYS_F16);   // u32 words per key row
    return keys[((row0 + s0 + key) * words + select(c, c / 2u, KEYS_F16)) / 4u + idx / KEYS_PER_WG];
}

fn store_k(idx: u32, v_in: vec4<u32>) {
    var v = v_in;
    if (KEYS_FP8) {   // 8 e4m3 values as 4 f16 pairs (exact, unscaled)
        let a = e4m3x4_values(v_in.x);
        let c = e4m3x4_values(v_in.y);
        v = vec4<u32>(pack2x16float(a.xy), pack2x16float(a.zw), pack2x16float(c.xy), pack2x16float(c.zw));
    }
    let key = idx % KEYS_PER_WG;
    let wd = (idx / KEYS_PER_WG) * 4u;
    let col = key / 4u;
    let lane = key % 4u;
    k_s[wd * 64u + col][lane] = v.x;
    k_s[(wd + 1u) * 64u + col][lane] = v.y;
    k_s[(wd + 2u) * 64u + col][lane] = v.z;
    k_s[(wd + 3u) * 64u + col][lane] = v.w;
}
