// lib/mla.wgsl — what the sparse MLA kernels share: the row layout, the uniform and bindings of
// the three steps, the ids → rows map, where each score tile's softmax statistics live, and the
// fold of a slice's statistics from its tiles'. Composed in front of sparse_mla.wgsl (f32 FMA
// units) and sparse_mla_coop.wgsl (tensor cores), which write the same scratch the same way, so
// `reduce` and the slices' arithmetic are one.

override KV: u32 = 512u;          // kv_lora_rank, a multiple of 64, ≤ 512
override ROPE: u32 = 64u;         // qk_rope_head_dim, a multiple of 32
override ROWS_F16: bool = true;   // rows are f16 pairs packed in u32 (else f32 bit patterns)
// Rows in the FP8 layout (lib/fp8.wgsl, reference::fp8::pack_latent_row: 656 B at v32),
// dequantised into f16 as they are staged (fp8_stage8), so the host sets ROWS_F16 too: the
// staged rows are f16 pairs and the products read them as such.
override ROWS_FP8: bool = false;
override DQ: u32 = KV + ROPE;     // dims of one row / one query
const RT: u32 = 64u;              // ids per score tile (softmax statistics, attend's slices)
const AT: u32 = 256u;             // attend: threads per workgroup
const HB: u32 = 64u;              // attend: heads per workgroup (and half the KV dims)

struct Params {
    heads: u32,          // H (any; workgroups mask heads ≥ H)
    topk: u32,           // ids per sequence
    b0: u32,             // first sequence of this dispatch
    softmax_scale: f32,
    batch: u32,          // sequences in this dispatch
    splits: u32,         // slices of the k ids in `attend`
    // Always 0. Added to the inner loops' constant bounds so that the driver cannot unroll them
    // completely: fully unrolled, NVIDIA's compiler keeps more values live (`scores`: 168
    // registers a thread instead of 128), which halves the workgroups per SM and costs 30%.
    zero: u32,
    // sparse_mla_coop.wgsl's `scores` with PHASE 1 (DA): workgroups that gather before the tiles
    gather_wgs: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;          // [B, H, DQ] = q_abs ‖ q_pe
@group(0) @binding(2) var<storage, read> ids: array<i32>;              // [B, topk], -1 = none
@group(0) @binding(3) var<storage, read> seq: array<u32>;              // [B, 2] = (first row, _)
// binding 4, `rows` [R, DQ] = c_kv ‖ k_pe: lib/mla_rows.wgsl (read-only) or sparse_mla_da.wgsl
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;    // [batch, H, topk] scores,
                                                                      // then [batch, H, tiles, 2] tile stats
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>; // [splits, batch, H, KV]
@group(0) @binding(7) var<storage, read_write> part_lse: array<f32>;   // [splits, batch, H]
@group(0) @binding(8) var<storage, read_write> o_lat: array<vec4<f32>>; // [B, H, KV]
@group(0) @binding(9) var<storage, read_write> lse: array<f32>;        // [B, H]

// −inf from a runtime value: `bitcast<f32>(0xff800000u)` alone is a constant expression, and
// WGSL refuses a constant that is not finite (Chromium's compiler enforces it; naga does not)
fn neg_inf() -> f32 { var bits = 0xff800000u; return bitcast<f32>(bits); }
fn row_words() -> u32 {   // u32 words per row (a multiple of 4 in every format)
    if (ROWS_FP8) { return fp8_row_words(KV, fp8_latent_slots(KV), ROPE); }
    return select(DQ, DQ / 2u, ROWS_F16);
}

// ---- FP8 rows: 8 dims at a time, fetched raw (fp8_fetch8: one vec4 load, the scale from a
// second) and dequantised when they are staged (fp8_stage8), so the loads of the next chunk
// stay in flight while this one is computed.

// Dims c .. c + 7 (c a multiple of 8) of absolute row `row`, raw: for c < KV (c_kv) the two words
// of e4m3 bytes, the block's scale and 0; else (k_pe) four words of bf16 pairs.
fn fp8_fetch8(row: u32, c: u32) -> vec4<u32> {
    let base = row * (row_words() / 4u);   // rows are whole vec4s
    if (c < KV) {
        let v = rows[base + c / 16u];
        let s = fp8_scale_word(base, c);
        if ((c / 8u) % 2u == 0u) { return vec4<u32>(v.x, v.y, s, 0u); }
        return vec4<u32>(v.z, v.w, s, 0u);
    }
    return rows[fp8_rope_vec(base, c)];
}

// Of the FP8 row whose first vec4 is `base`: the scale word of c_kv dim d (d < KV), and the vec4
// holding k_pe dim d (d ≥ KV; 8 bf16 a vec4).
fn fp8_scale_word(base: u32, d: u32) -> u32 {
    return rows[base + (KV / 4u + d / BLOCK) / 4u][(d / BLOCK) % 4u];
}

fn fp8_rope_vec(base: u32, d: u32) -> u32 {
    return base + (KV / 4u + fp8_latent_slots(KV)) / 4u + (d - KV) / 8u;
}

// fp8_fetch8's words as the 8 dims' f16 pairs: e4m3 value · scale (c_kv), or the bf16 value. The
// f32 → f16 conversion is exact when the value is an f16: for a block with a scale in 2^-15 ..
// 2^7 (largest magnitude 0.0069 .. 57,344), and for k_pe values in ±65,504 of at most 2^-24's
// resolution; the tests' and the engine's rows are.
fn fp8_stage8(raw: vec4<u32>, c_kv: bool) -> vec4<u32> {
    if (c_kv) {
        let s = bitcast<f32>(raw.z);
        let a = e4m3x4_values(raw.x) * s;
        let b = e4m3x4_values(raw.y) * s;
        return vec4<u32>(pack2x16float(a.xy), pack2x16float(a.zw), pack2x16float(b.xy), pack2x16float(b.zw));
    }
    var out = vec4<u32>(0u);
    for (var i = 0u; i < 4u; i++) {
        out[i] = pack2x16float(vec2<f32>(bf16_value(raw[i]), bf16_value(raw[i] >> 16u)));
    }
    return out;
}

// Absolute row of id j of sequence b, or −1 (id −1, or j past k).
fn row_of(b: u32, j: u32) -> i32 {
    if (j >= params.topk) { return -1i; }
    let id = ids[b * params.topk + j];
    return select(-1i, id + i32(seq[2u * b]), id >= 0i);
}

// Score tiles per sequence (RT ids each).
fn tiles() -> u32 { return (params.topk + RT - 1u) / RT; }

// Where tile t's (max, sum) of head h of the dispatch's sequence bl is: after all the scores.
fn stats_at(bl: u32, h: u32, t: u32) -> u32 {
    return params.batch * params.heads * params.topk + 2u * ((bl * params.heads + h) * tiles() + t);
}

// Slice z's ids (js, je) of a sequence: slices are whole score tiles (RT ids), so the tiles'
// statistics add up to the slice's; a trailing slice may be empty (js = je = k).
fn slice_ids(z: u32) -> vec2<u32> {
    let K = params.topk;
    let per_split = ((K + params.splits - 1u) / params.splits + RT - 1u) / RT * RT;
    let js = min(z * per_split, K);
    return vec2<u32>(js, min(js + per_split, K));
}

// ---- attend's softmax statistics of a slice (ids js .. je of head group h0 of the dispatch's
// sequence bl)

var<workgroup> red_m: array<f32, AT>;         // [HB][4] partial maxima
var<workgroup> red_l: array<f32, AT>;         // [HB][4] partial sums
var<workgroup> m_s: array<f32, HB>;           // max score per head
var<workgroup> l_s: array<f32, HB>;           // Σ exp(score − max) per head
var<workgroup> il_s: array<f32, HB>;          // 1 / l_s (0 for a head without a valid id)

// The slice's (max, Σ exp(score − max)) per head into m_s, l_s (and 1 / l into il_s), folded
// from its tiles' statistics: thread (sh, sp) folds tiles t0+sp, t0+sp+4, … of head sh. Every
// thread of the workgroup calls it (it has barriers). sparse_mla_coop.wgsl's `attend` calls it;
// sparse_mla.wgsl's writes the same fold out (the call cost that kernel 3% on the H200).
fn slice_stats(bl: u32, h0: u32, js: u32, je: u32, lid: u32) {
    let H = params.heads;
    let sh = lid / 4u;
    let sp = lid % 4u;
    var m = neg_inf();
    var l = 0.0;
    if (h0 + sh < H && js < je) {   // (an empty slice at the end starts at k, inside a tile)
        for (var t = js / RT + sp; t * RT < je; t += 4u) {
            let at = stats_at(bl, h0 + sh, t);
            let tm = scratch[at];
            if (tm != neg_inf()) {
                let m_new = max(m, tm);
                l = l * exp(m - m_new) + scratch[at + 1u] * exp(tm - m_new);
                m = m_new;
            }
        }
    }
    red_m[lid] = m;
    red_l[lid] = l;
    workgroupBarrier();   // all partial (max, sum) pairs visible
    if (sp == 0u) {
        var mm = neg_inf();
        for (var i = 0u; i < 4u; i++) { mm = max(mm, red_m[sh * 4u + i]); }
        var ll = 0.0;
        if (mm != neg_inf()) {
            for (var i = 0u; i < 4u; i++) {
                let mi = red_m[sh * 4u + i];
                if (mi != neg_inf()) { ll += red_l[sh * 4u + i] * exp(mi - mm); }
            }
        }
        m_s[sh] = mm;
        l_s[sh] = ll;
        il_s[sh] = select(0.0, 1.0 / ll, ll > 0.0);
    }
    workgroupBarrier();   // m_s and l_s final before probabilities are formed
}
