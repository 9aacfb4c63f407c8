// gemm_coop.wgsl — the GEMM on the tensor cores: cooperative matrices, 16 × 16 × 16 f16 → f32.
//
// Mapping: workgroup (x, y, z) = (64 columns of C, 64 rows, batch z), 128 threads = 4 subgroups
// of 32 (the host requires a subgroup size of 32); subgroup s owns the 32 × 32 quadrant
// (s / 2, s % 2) of the tile as 2 × 2 accumulator fragments. K is streamed 32 at a time: the
// threads stage the A tile [64 × 32] and the B tile [32 × 64] as f16 in workgroup memory, zero-
// padded past M, N, K (tails need no special case), and each subgroup multiplies 2 × 2 × 2
// fragments. The accumulators go through workgroup memory once at the end, so the writes to C
// are bounded and can accumulate. Version 1: no prefetch, no swizzle (docs/PERF.md).
// Parameters and loads: gemm/common.wgsl.

enable f16;
enable wgpu_cooperative_matrix;

const T: u32 = 64u;
const TK: u32 = 32u;

var<workgroup> a_s: array<f16, 2048>;   // [T rows][TK] row-major
var<workgroup> b_s: array<f16, 2048>;   // [TK][T cols] row-major
var<workgroup> c_s: array<f32, 4096>;   // [T][T] row-major, the epilogue

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bt = wg.z;
    let m0 = wg.y * T;
    let n0 = wg.x * T;
    let s = lid / 32u;              // subgroup
    let r0 = (s / 2u) * 32u;        // its quadrant's first row and column in the tile
    let c0 = (s % 2u) * 32u;
    var acc00 = coop_mat16x16<f32, C>();
    var acc01 = coop_mat16x16<f32, C>();
    var acc10 = coop_mat16x16<f32, C>();
    var acc11 = coop_mat16x16<f32, C>();
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        for (var e = lid; e < T * TK; e += 128u) {
            a_s[e] = f16(load_a(bt, m0 + e / TK, k0 + e % TK));
            b_s[e] = f16(load_b(bt, k0 + e / T, n0 + e % T));
        }
        workgroupBarrier();   // tiles staged before the fragments are loaded
        for (var kk = 0u; kk < TK; kk += 16u) {
            let ia0 = r0 * TK + kk;
            let ia1 = (r0 + 16u) * TK + kk;
            let ib0 = kk * T + c0;
            let ib1 = kk * T + c0 + 16u;
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a_s[ia0], TK);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a_s[ia1], TK);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&b_s[ib0], T);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&b_s[ib1], T);
            acc00 = coopMultiplyAdd(a0, b0, acc00);
            acc01 = coopMultiplyAdd(a0, b1, acc01);
            acc10 = coopMultiplyAdd(a1, b0, acc10);
            acc11 = coopMultiplyAdd(a1, b1, acc11);
        }
        workgroupBarrier();   // fragments read before the next tiles overwrite them
    }
    // (index and stride bound to lets first: naga 30's SPIR-V writer panics on inline ones)
    let i00 = r0 * T + c0;
    let i01 = r0 * T + c0 + 16u;
    let i10 = (r0 + 16u) * T + c0;
    let i11 = (r0 + 16u) * T + c0 + 16u;
    let stride = T;
    coopStoreT(acc00, &c_s[i00], stride);
    coopStoreT(acc01, &c_s[i01], stride);
    coopStoreT(acc10, &c_s[i10], stride);
    coopStoreT(acc11, &c_s[i11], stride);
    workgroupBarrier();   // the whole tile in workgroup memory before the bounded writes
    for (var e = lid; e < T * T; e += 128u) {
        let i = m0 + e / T;
        let j = n0 + e % T;
        if (i < params.m && j < params.n) { store_c(bt, i, j, c_s[e]); }
    }
}
