// overlap.wgsl — how much of each sequence's top-k the previous step had selected too.
//
//   overlap_sum[b] += |K_{t−1} ∩ K_t| / max(|K_t|, 1)        (for steps t ≥ 2)
//
// K_t = the valid (≥ 0) token ids of sequence b's top-k at step t. The paper's temporal-locality
// observation, measured on the GPU without reading the selections back: `marks[b, token]` holds
// the last step that selected `token`; an atomic exchange writes this step's number and returns
// the previous one, which says whether step t − 1 selected it too (ids of one row are distinct).
// Steps are numbered from 1 and `marks` starts at 0. Reference: `reference::topk_overlap`.
//
// Mapping: one workgroup per sequence; threads stride over its k ids and count in workgroup
// atomics; one thread adds the ratio. Nothing else writes overlap_sum[b], so the sum is exact
// f32 arithmetic in step order.

struct Params {
    k: u32,
    capacity: u32,   // tokens per sequence in `marks`
    b0: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> clock: array<u32>;                 // [0] = step number t
@group(0) @binding(2) var<storage, read> topk_indices: array<i32>;          // [B, k]
@group(0) @binding(3) var<storage, read_write> marks: array<atomic<u32>>;   // [B, capacity]
@group(0) @binding(4) var<storage, read_write> overlap_sum: array<f32>;     // [B]

var<workgroup> common_ids: atomic<u32>;
var<workgroup> valid_ids: atomic<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wg.x;
    let step = clock[0];
    if (lid == 0u) {
        atomicStore(&common_ids, 0u);
        atomicStore(&valid_ids, 0u);
    }
    workgroupBarrier(); // the counters are zero before anyone adds
    for (var i = lid; i < params.k; i += 256u) {
        let t = topk_indices[b * params.k + i];
        if (t >= 0 && u32(t) < params.capacity) {
            atomicAdd(&valid_ids, 1u);
            let last = atomicExchange(&marks[b * params.capacity + u32(t)], step);
            if (last + 1u == step) { atomicAdd(&common_ids, 1u); }
        }
    }
    workgroupBarrier(); // every id counted
    if (lid == 0u && step > 1u) {
        let valid = max(atomicLoad(&valid_ids), 1u);
        overlap_sum[b] += f32(atomicLoad(&common_ids)) / f32(valid);
    }
}
