// digest.wgsl — a 64-bit fingerprint of a buffer's bits, summed over the steps of a run.
//
//   digest[slot] += Σ_i ( hash(hash(hash(x_i ^ salt) ^ i) ^ step),
//                         hash(hash(hash(x_i ^ ~salt) + i·0x9e3779b9) ^ (step·0x85ebca6b)) )
//
// with wrapping u32 sums (two lanes: 64 bits). Each element's bits, its index and the step go
// through the hash, so a single changed bit anywhere changes the sum except with probability
// ~2^-64, and the sum does not depend on the order in which workgroups add. The decode job uses
// it to compare two modes' `o_lat` and `lse` at every layer and step without reading them back:
// each mode runs alone at full speed and the digests are read once at the end.
// Reference: `reference::digest` (the same bits).
//
// Two buffers go into one dispatch (`o_lat` and `lse`: one barrier fewer per layer): word i of
// the pair is data[i] for i < words, else data2[i − words], each into its own slot (slot,
// slot + 1); a workgroup's words all come from one of them (`words` is padded to 256 by the grid:
// the second buffer starts at workgroup ⌈words / 256⌉).
//
// Mapping: one thread per u32 word; the workgroup sums its 256 hashes in workgroup memory (tree),
// then one thread adds them to the slot with two atomics.

struct Params {
    words: u32,   // words in `data`
    slot: u32,    // which (lane 0, lane 1) pair of `digest` `data` adds to; `data2` adds to slot + 1
    salt: u32,    // `data`'s; `data2`'s is salt + 1
    words2: u32,  // words in `data2`
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> clock: array<u32>;                 // [0] = step number
@group(0) @binding(2) var<storage, read> data: array<u32>;
@group(0) @binding(3) var<storage, read_write> digest: array<atomic<u32>>;  // [slots, 2]
@group(0) @binding(4) var<storage, read> data2: array<u32>;

var<workgroup> part: array<vec2<u32>, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let w = wg.x + wg.y * nwg.x;
    let first_groups = (params.words + 255u) / 256u;
    let second = w >= first_groups;                      // uniform across the workgroup
    let i = select(w * 256u + lid, (w - first_groups) * 256u + lid, second);
    let n = select(params.words, params.words2, second);
    let salt = params.salt + u32(second);
    let slot = params.slot + u32(second);
    var h = vec2<u32>(0u, 0u);
    if (i < n) {
        var x: u32;
        if (second) { x = data2[i]; } else { x = data[i]; }
        let step = clock[0];
        h.x = hash(hash(hash(x ^ salt) ^ i) ^ step);
        h.y = hash(hash(hash(x ^ ~salt) + i * 0x9e3779b9u) ^ (step * 0x85ebca6bu));
    }
    part[lid] = h;
    // each halving reads what the other half wrote in the previous round
    for (var s = 128u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) { part[lid] += part[lid + s]; }
    }
    if (lid == 0u) {
        atomicAdd(&digest[2u * slot], part[0].x);
        atomicAdd(&digest[2u * slot + 1u], part[0].y);
    }
}
