// fill.wgsl — synthetic cache rows, written by the GPU wherever they belong.
//
//   row(layer, b, token)[d] = uniform[-1, 1) from hash(salt, layer, b, token, d), stored as f16
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

struct Params {
    words: u32,    // u32 words per row (2 f16 each)
    salt: u32,     // what kind of row (keys, latent) and the run's seed
    layer: u32,
    b0: u32,       // first sequence of this dispatch
    scale: f32,    // values are uniform in [-scale, scale)
    batch_rows: u32,   // newest: 1 = row b of a [B, row] buffer, 0 = the sequence's cache row
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> fill: array<vec4<u32>>;      // [B] (dest base row, start token, count, _)
@group(0) @binding(2) var<storage, read_write> dest: array<u32>;       // rows of `words` u32
@group(0) @binding(3) var<storage, read> seq: array<u32>;              // newest: [B, 2] (first row, T_b)

// hash(): shaders/lib/hash.wgsl, composed in front of this file.

fn value(layer: u32, b: u32, token: u32, d: u32) -> f32 {
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
    let token = f.y + i;
    let lo = value(params.layer, b, token, 2u * w);
    let hi = value(params.layer, b, token, 2u * w + 1u);
    dest[(f.x + i) * params.words + w] = pack2x16float(vec2<f32>(lo, hi));
}

@compute @workgroup_size(256)
fn newest(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.y;
    let w = wg.x * 256u + lid;
    if (w >= params.words) { return; }
    let token = seq[2u * b + 1u] - 1u;
    let row = select(seq[2u * b] + token, b, params.batch_rows == 1u);
    let lo = value(params.layer, b, token, 2u * w);
    let hi = value(params.layer, b, token, 2u * w + 1u);
    dest[row * params.words + w] = pack2x16float(vec2<f32>(lo, hi));
}
