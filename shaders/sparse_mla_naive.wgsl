// sparse_mla_naive.wgsl — sparse MLA decode, version 1: one workgroup per (sequence, head),
// online softmax over the selected rows.
//
//   score_j = (q_abs · c_kv[s_j] + q_pe · k_pe[s_j]) · softmax_scale    s_j = row of id j
//   m, l, acc   running max, Σ exp(score − m) and Σ exp(score − m) · c_kv, over j in order:
//       m' = max(m, score_j);  l = l·e^(m−m') + e^(score_j−m');  acc = acc·e^(m−m') + e^(score_j−m')·c_kv
//   o_lat = acc / l;   lse = m + log l        (no valid id: o_lat = 0, lse = −inf)
//
// The 64 threads of a workgroup split the dims: each computes part of the dot product (summed
// through workgroup memory) and owns KV/64 of the output dims. Rows are read through `ids`
// exactly as in `sparse_mla.wgsl` (id i of sequence b is row seq[2b] + i; −1 is skipped), so
// both modes of the engine could run it. This is the kernel to read first: `sparse_mla.wgsl`
// splits the same work into a scores GEMM, a flash-decoding attend over slices and a reduce,
// (the measured ratio is in docs/PERF.md). Reference: `reference::sparse_mla`.
//
// Mapping: workgroup (x, y) = (head, sequence b0 + y), 64 threads; KV ≤ 512 (8 dims a thread).

override ROWS_F16: bool = true;
override ROWS_FP8: bool = false;   // rows in the FP8 layout (lib/fp8.wgsl; ROWS_F16 is then unused)

const WG: u32 = 64u;

struct Params {
    heads: u32,
    kv: u32,        // KV (c_kv dims), ≤ 512
    rope: u32,      // ROPE (k_pe dims)
    k: u32,         // ids per sequence
    b0: u32,
    scale: f32,     // softmax_scale
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;             // [B, H, KV + ROPE]
@group(0) @binding(2) var<storage, read> ids: array<i32>;           // [B, k]
@group(0) @binding(3) var<storage, read> seq: array<u32>;           // [B, 2] = (first row, _)
@group(0) @binding(4) var<storage, read> rows: array<u32>;          // [R, KV + ROPE] f16 pairs, f32 bits or FP8 rows
@group(0) @binding(5) var<storage, read_write> o_lat: array<f32>;   // [B, H, KV]
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;     // [B, H]

var<workgroup> partial: array<f32, WG>;

// dim d of row r
fn row(r: u32, d: u32) -> f32 {
    let DQ = params.kv + params.rope;
    if (ROWS_FP8) {
        let slots = fp8_latent_slots(params.kv);
        let at = r * fp8_row_words(params.kv, slots, params.rope);
        let ix = fp8_row_at(params.kv, slots, d);
        return fp8_row_value(params.kv, d, rows[at + ix.x], rows[at + ix.y]);
    }
    if (ROWS_F16) {
        return unpack2x16float(rows[(r * DQ + d) / 2u])[d % 2u];
    }
    return bitcast<f32>(rows[r * DQ + d]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let b = params.b0 + wg.y;
    let KV = params.kv;
    let DQ = KV + params.rope;
    let qb = (b * params.heads + h) * DQ;
    var m = neg_inf();   // −inf
    var l = 0.0;
    var acc: array<f32, 8>;              // dims lid, lid + 64, … of c_kv
    for (var c = 0u; c < 8u; c++) { acc[c] = 0.0; }
    for (var j = 0u; j < params.k; j++) {
        let id = ids[b * params.k + j];
        // an invalid id reads row 0 and weighs nothing: no branch around the barriers
        let r = seq[2u * b] + u32(max(id, 0));
        var dot = 0.0;
        for (var d = lid; d < DQ; d += WG) {
            dot += q[qb + d] * row(r, d);
        }
        partial[lid] = dot;
        // tree sum: each halving reads what the other half wrote in the round before
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            workgroupBarrier();
            if (lid < s) { partial[lid] += partial[lid + s]; }
        }
        workgroupBarrier(); // partial[0] is the whole dot product
        let score = partial[0] * params.scale;
        workgroupBarrier(); // everyone has read partial[0] before the next row overwrites it
        if (id >= 0) {
            let m_new = max(m, score);
            let keep = exp(m - m_new);
            let p = exp(score - m_new);
            l = l * keep + p;
            for (var c = 0u; c < 8u; c++) {
                let d = lid + c * WG;
                if (d < KV) { acc[c] = acc[c] * keep + p * row(r, d); }
            }
            m = m_new;
        }
    }
    let out = (b * params.heads + h) * KV;
    for (var c = 0u; c < 8u; c++) {
        let d = lid + c * WG;
        if (d < KV) { o_lat[out + d] = select(acc[c] / l, 0.0, l == 0.0); }
    }
    if (lid == 0u) {
        lse[b * params.heads + h] = select(m + log(l), neg_inf(), l == 0.0);
    }
}

// −inf from a runtime value: `bitcast<f32>(0xff800000u)` alone is a constant expression, and
// WGSL refuses a constant that is not finite (Chromium's compiler enforces it; naga does not)
fn neg_inf() -> f32 { var bits = 0xff800000u; return bitcast<f32>(bits); }
