// fill.wgsl — synthetic cache rows, written by the GPU wherever they belong.
//
//   row(layer, b, token)[d] = uniform[-1, 1) from hash(salt, layer, b, token, d), stored as f16,
//                             f32, or FP8 (quantised here, lib/fp8_pack.wgsl, as the model's
//                             new_token quantises its latent row and indexer key)
//
// Without trained weights, the engine's prefill and each decode step's new token need indexer
// keys and latent rows. This shader makes them from a hash, so the same (salt, layer, b, token)
// always gives the same bytes: the resident cache and the offloaded host store receive identical
// rows, which is what lets the two modes be compared bit for bit. It writes directly into the
// destination — device cache, host store (zero-copy, over the bus) or a staging row buffer.
//
// Mapping: workgroup (x, y) = (u32 words x·256 .., sequence b0 + y).
//   main:   sequence b writes rows dest[base_b + i] = row(layer, b, start_b + i) for i < count_b
//           (table `fill`): prefill.
//   newest: sequence b writes its newest token's row, token T_b − 1 from the sequence table, at
//           dest row first_row_b + T_b − 1 (a cache) or at row b (`batch_rows`, one row per
//           sequence): each decode step, bound once, nothing for the CPU to write.
//   main_fp8, newest_fp8: the same rows in the FP8 layout, a workgroup of 128 threads a row
//           (x = row i of the sequence's range; newest: one workgroup a sequence). Latent rows
//           are packed rows (lib/fp8.wgsl); keys go into the FP8 key cache of R = `key_rows`
//           keys (lib/indexer_io.wgsl: values at row · D, the scale at R · D + row).
//
// With `from_src` the values are not hashed but read from `src` (f32, `width` a row): the row of
// (b, token) is src row b · src_seq + token · src_tok. That is how the model's own rows (issue
// 15: its prefill's, and each step's new token's) reach every cache in every dtype by the same
// code as the synthetic ones.

struct Params {
    words: u32,    // u32 words per row (f16: 2 values each; f32: 1; FP8: the packed row's)
    salt: u32,     // what kind of row (keys, latent) and the run's seed
    layer: u32,
    b0: u32,       // first sequence of this dispatch
    scale: f32,    // values are uniform in [-scale, scale)
    batch_rows: u32,   // newest: 1 = row b of a [B, row] buffer, 0 = the sequence's cache row
    f32_values: u32,   // main, newest: 1 = f32 values, 0 = f16 pairs
    kv: u32,       // FP8: values quantised (a latent row's c_kv, a key's D)
    rope: u32,     // FP8: values kept as bf16 (a latent row's k_pe; keys: 0)
    slots: u32,    // FP8: scale slots
    key_rows: u32, // FP8: 0 = packed latent rows; else the key cache's R
    from_src: u32, // 1 = values from `src`, 0 = from the hash
    src_seq: u32,  // from_src: src rows a sequence apart
    src_tok: u32,  // from_src: src rows a token apart (0: one row per sequence)
    width: u32,    // from_src: values a src row
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> fill: array<vec4<u32>>;      // [B] (dest base row, start token, count, _)
@group(0) @binding(2) var<storage, read_write> dest: array<u32>;       // rows of `words` u32
@group(0) @binding(3) var<storage, read> seq: array<u32>;              // newest: [B, 2] (first row, T_b)
@group(0) @binding(4) var<storage, read> src: array<f32>;              // from_src: the rows' values

// hash(): shaders/lib/hash.wgsl, composed in front of this file.

fn value(layer: u32, b: u32, token: u32, d: u32) -> f32 {
    if (params.from_src == 1u) {
        return src[(b * params.src_seq + token * params.src_tok) * params.width + d];
    }
    let h = hash(hash(hash(hash(params.salt ^ layer) ^ b) ^ token) ^ d);
    return (f32(h >> 8u) / 16777216.0 * 2.0 - 1.0) * params.scale;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.y;
    let f = fill[b];
    let e = wg.x * 256u + lid;
    let i = e / params.words;
    if (i >= f.z) { return; }
    let w = e % params.words;
    dest[(f.x + i) * params.words + w] = word(b, f.y + i, w);
}

// Word w of token `token`'s row of sequence b: two f16 values, or one f32.
fn word(b: u32, token: u32, w: u32) -> u32 {
    if (params.f32_values == 1u) { return bitcast<u32>(value(params.layer, b, token, w)); }
    let lo = value(params.layer, b, token, 2u * w);
    let hi = value(params.layer, b, token, 2u * w + 1u);
    return pack_f16(lo, hi);   // lib/f16_round.wgsl: nearest even on every driver
}

@compute @workgroup_size(256)
fn newest(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.y;
    let w = wg.x * 256u + lid;
    if (w >= params.words) { return; }
    let token = seq[2u * b + 1u] - 1u;
    let row = select(seq[2u * b] + token, b, params.batch_rows == 1u);
    dest[row * params.words + w] = word(b, token, w);
}

// ---- FP8 (lib/fp8_pack.wgsl's hooks: the source is (sequence, token), the destination a row)

fn fp8_src(src: vec2<u32>, i: u32) -> f32 { return value(params.layer, src.x, src.y, i); }

fn fp8_dst(row: u32, w: u32, word: u32) {
    dest[fp8_word_at(row, w, params.words, params.kv, params.key_rows)] = word;   // lib/fp8.wgsl
}

@compute @workgroup_size(128)
fn main_fp8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.y;
    let f = fill[b];
    let i = wg.x;
    if (i >= f.z) { return; }   // uniform across the workgroup
    fp8_pack(lid, vec2<u32>(b, f.y + i), f.x + i, params.kv, params.slots, params.rope);
}

@compute @workgroup_size(128)
fn newest_fp8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.y;
    let token = seq[2u * b + 1u] - 1u;
    let row = select(seq[2u * b] + token, b, params.batch_rows == 1u);
    fp8_pack(lid, vec2<u32>(b, token), row, params.kv, params.slots, params.rope);
}
