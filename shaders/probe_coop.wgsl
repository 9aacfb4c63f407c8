// probe_coop.wgsl — the tensor cores' ceiling for the roofline of the coop kernels: each
// subgroup runs 8 independent chains of 16 × 16 × 16 f16 → f32 cooperative-matrix products,
// params.n products a chain, from fragments in workgroup memory, so memory traffic stays nil.
//
//   rate = 2 · 16³ · 8 · n · subgroups / time
//
// The operands come from `src` (the compiler cannot fold them), each accumulator is stored and
// summed at the end, and the sum is written only if it equals a value it cannot reach.
// Composed in front of probe.wgsl (its parameters and bindings; the unit holds all three probes).

enable f16;
enable wgpu_cooperative_matrix;

var<workgroup> frag_a: array<f16, 256>;
var<workgroup> frag_b: array<f16, 256>;
var<workgroup> frag_c: array<f32, 2048>;   // 8 subgroups × a 16 × 16 slot

@compute @workgroup_size(256)
fn coop_rate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let w = src[lid % 64u];
    frag_a[lid] = f16(f32(w.x & 0xffu) * 1e-3);
    frag_b[lid] = f16(f32(w.y & 0xffu) * 1e-3);
    workgroupBarrier();   // the fragments' data in place before the loads
    let at = 0u;
    let st = 16u;
    let a = coopLoadT<coop_mat16x16<f16, A>>(&frag_a[at], st);
    let b = coopLoadT<coop_mat16x16<f16, B>>(&frag_b[at], st);
    var c0 = coop_mat16x16<f32, C>(); var c1 = coop_mat16x16<f32, C>();
    var c2 = coop_mat16x16<f32, C>(); var c3 = coop_mat16x16<f32, C>();
    var c4 = coop_mat16x16<f32, C>(); var c5 = coop_mat16x16<f32, C>();
    var c6 = coop_mat16x16<f32, C>(); var c7 = coop_mat16x16<f32, C>();
    for (var it = 0u; it < params.n; it++) {
        c0 = coopMultiplyAdd(a, b, c0); c1 = coopMultiplyAdd(a, b, c1);
        c2 = coopMultiplyAdd(a, b, c2); c3 = coopMultiplyAdd(a, b, c3);
        c4 = coopMultiplyAdd(a, b, c4); c5 = coopMultiplyAdd(a, b, c5);
        c6 = coopMultiplyAdd(a, b, c6); c7 = coopMultiplyAdd(a, b, c7);
    }
    // every chain stored and summed, one at a time through the subgroup's slot
    let slot = (lid / 32u) * 256u;
    let lane = lid % 32u;
    var sum = 0.0;
    coopStoreT(c0, &frag_c[slot], st); workgroupBarrier(); sum += frag_c[slot + lane]; workgroupBarrier();
    coopStoreT(c1, &frag_c[slot], st); workgroupBarrier(); sum += frag_c[slot + lane]; workgroupBarrier();
    coopStoreT(c2, &frag_c[slot], st); workgroupBarrier(); sum += frag_c[slot + lane]; workgroupBarrier();
    coopStoreT(c3, &frag_c[slot], st); workgroupBarrier(); sum += frag_c[slot + lane]; workgroupBarrier();
    coopStoreT(c4, &frag_c[slot], st); workgroupBarrier(); sum += frag_c[slot + lane]; workgroupBarrier();
    coopStoreT(c5, &frag_c[slot], st); workgroupBarrier(); sum += frag_c[slot + lane]; workgroupBarrier();
    coopStoreT(c6, &frag_c[slot], st); workgroupBarrier(); sum += frag_c[slot + lane]; workgroupBarrier();
    coopStoreT(c7, &frag_c[slot], st); workgroupBarrier(); sum += frag_c[slot + lane];
    if (sum == -1.0) {
        dst[gid.x] = src[0];
    }
}
