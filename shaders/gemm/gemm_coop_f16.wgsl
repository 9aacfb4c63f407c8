// gemm_coop_f16.wgsl — the GEMM on the tensor cores, version 2: the fast path for contiguous f16
// operands, the layout of a model's projections. A is row-major f16 [batch, M, K]; B is f16,
// either a weight stored [N, K] (PyTorch's [out, in]; B_NK) or row-major [K, N]; C row-major f32.
// The host takes this kernel only when every row of A and B starts on a whole quad of 8 f16
// (16 bytes), so tiles are copied as vec4<u32> and a quad is either all in bounds or all out.
//
// Mapping: workgroup (x, y, z) = (256 columns of C, 128 rows, batch z), 256 threads = 8
// subgroups of 32 (the host requires a subgroup size of 32); subgroup s owns the 64 × 64 block
// (s / 4, s % 4) as 4 × 4 accumulator fragments of 16 × 16. K is streamed 32 at a time through
// workgroup memory (A [128 × 32], B [256 × 32] or [32 × 256], zero past M, N, K), and the next
// tile is fetched into registers while the current one multiplies (the prefetch that took the
// first probe from 179 to 230 TFLOP/s, ../shared/design/GPU.md). The epilogue writes each
// fragment through a 16 × 16 staging slot of its subgroup, bounded, with accumulation.
// Split K (skinny decode shapes, whose tile grid alone would leave most of the GPU idle): grid z
// is split · batches + batch, each split sums K in [split · k_chunk, + k_chunk) and writes its own
// slice of a scratch [splits · batches, c_rows, c_cols] (M, N padded to whole tiles) that
// gemm_reduce.wgsl sums into C.
// The parameters are gemm/params.wgsl's; the operands are bound as quads here.

enable f16;
enable wgpu_cooperative_matrix;

override B_NK: bool = true;   // B stored [N, K] (else [K, N])

@group(0) @binding(1) var<storage, read> a: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TM: u32 = 128u;
const TN: u32 = 256u;
const TK: u32 = 32u;
// Row strides in workgroup memory, padded by 8 f16 (16 bytes) so the rows a fragment load
// reads start in different banks.
const PAD: u32 = 8u;
const SA: u32 = TK + PAD;     // a_s: [TM][SA]
const SBK: u32 = TK + PAD;    // b_s with B_NK: [TN][SBK]
const SBN: u32 = TN + PAD;    // b_s else: [TK][SBN]

var<workgroup> a_s: array<f16, 5120>;    // [TM][SA] row-major
var<workgroup> b_s: array<f16, 10240>;   // B_NK: [TN][SBK] (column j of B contiguous); else [TK][SBN]
var<workgroup> c_s: array<f32, 2048>;   // 8 subgroups × a 16 × 16 staging slot

// quad (8 f16 from element `e`, a multiple of 8) of the row-major f16 A (else B), or zeros
fn quad(from_a: bool, ok: bool, e: u32) -> vec4<u32> {
    if (!ok) { return vec4<u32>(0u); }
    if (from_a) { return a[e / 8u]; }
    return b[e / 8u];
}

// the 8 f16 of a quad into a_s (else b_s) at `at`
fn put(to_a: bool, at: u32, q: vec4<u32>) {
    for (var w = 0u; w < 4u; w++) {
        let h = vec2<f16>(unpack2x16float(q[w]));   // exact: every f16 is an f32
        if (to_a) {
            a_s[at + 2u * w] = h[0];
            a_s[at + 2u * w + 1u] = h[1];
        } else {
            b_s[at + 2u * w] = h[0];
            b_s[at + 2u * w + 1u] = h[1];
        }
    }
}

// A's quad `e` (of 512 in a tile: row e / 4, k quad e % 4) of the tile at k0, zero from ke on
fn fetch_a(bt: u32, m0: u32, k0: u32, ke: u32, e: u32) -> vec4<u32> {
    let row = m0 + e / 4u;
    let kk = k0 + 8u * (e % 4u);
    return quad(true, row < params.m && kk < ke, bt * params.a_bs + row * params.a_rs + kk);
}

// B's quad `e` (of 1024 in a tile) of the tile at k0: B_NK, column e / 4 and k quad e % 4;
// else row e / 32 and column quad e % 32
fn fetch_b(bt: u32, n0: u32, k0: u32, ke: u32, e: u32) -> vec4<u32> {
    if (B_NK) {
        let col = n0 + e / 4u;
        let kk = k0 + 8u * (e % 4u);
        return quad(false, col < params.n && kk < ke, bt * params.b_bs + col * params.b_ns + kk);
    }
    let kk = k0 + e / 32u;
    let col = n0 + 8u * (e % 32u);
    return quad(false, col < params.n && kk < ke, bt * params.b_bs + kk * params.b_ks + col);
}

// where B's quad `e` goes in b_s
fn b_at(e: u32) -> u32 {
    if (B_NK) { return (e / 4u) * SBK + 8u * (e % 4u); }
    return (e / 32u) * SBN + 8u * (e % 32u);
}

// a fragment staged in the subgroup's slot, written to C[z, fi.., fj..] within bounds (the
// unsplit epilogue: a split stores its fragments straight into the scratch)
fn flush(z: u32, slot: u32, lane: u32, fi: u32, fj: u32) {
    let acc = params.accumulate != 0u;
    for (var e = lane; e < 256u; e += 32u) {
        let i = fi + e / 16u;
        let j = fj + e % 16u;
        if (i < params.m && j < params.n) {
            let o = (z * params.m + i) * params.n + j;
            c[o] = select(0.0, c[o], acc) + c_s[slot + e];
        }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wg.z;
    let bt = z % params.batches;
    let kb = (z / params.batches) * params.k_chunk;   // this split's K
    let ke = min(params.k, kb + params.k_chunk);
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    let s = lid / 32u;
    let lane = lid % 32u;
    let r0 = (s / 4u) * 64u;   // the subgroup's block: rows r0 .. r0+64, columns c0 .. c0+64
    let c0 = (s % 4u) * 64u;
    var c00 = coop_mat16x16<f32, C>(); var c01 = coop_mat16x16<f32, C>();
    var c02 = coop_mat16x16<f32, C>(); var c03 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>(); var c11 = coop_mat16x16<f32, C>();
    var c12 = coop_mat16x16<f32, C>(); var c13 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>(); var c21 = coop_mat16x16<f32, C>();
    var c22 = coop_mat16x16<f32, C>(); var c23 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>(); var c31 = coop_mat16x16<f32, C>();
    var c32 = coop_mat16x16<f32, C>(); var c33 = coop_mat16x16<f32, C>();
    // the first tile in registers: 2 quads of A and 4 of B a thread
    var qa0 = fetch_a(bt, m0, kb, ke, lid);
    var qa1 = fetch_a(bt, m0, kb, ke, lid + 256u);
    var qb0 = fetch_b(bt, n0, kb, ke, lid);
    var qb1 = fetch_b(bt, n0, kb, ke, lid + 256u);
    var qb2 = fetch_b(bt, n0, kb, ke, lid + 512u);
    var qb3 = fetch_b(bt, n0, kb, ke, lid + 768u);
    for (var k0 = kb; k0 < ke; k0 += TK) {
        put(true, (lid / 4u) * SA + 8u * (lid % 4u), qa0);
        put(true, ((lid + 256u) / 4u) * SA + 8u * (lid % 4u), qa1);
        put(false, b_at(lid), qb0);
        put(false, b_at(lid + 256u), qb1);
        put(false, b_at(lid + 512u), qb2);
        put(false, b_at(lid + 768u), qb3);
        workgroupBarrier();   // tiles staged before the fragments are loaded
        // the next tile's loads are in flight while this one multiplies
        let k1 = k0 + TK;
        qa0 = fetch_a(bt, m0, k1, ke, lid);
        qa1 = fetch_a(bt, m0, k1, ke, lid + 256u);
        qb0 = fetch_b(bt, n0, k1, ke, lid);
        qb1 = fetch_b(bt, n0, k1, ke, lid + 256u);
        qb2 = fetch_b(bt, n0, k1, ke, lid + 512u);
        qb3 = fetch_b(bt, n0, k1, ke, lid + 768u);
        for (var kk = 0u; kk < TK; kk += 16u) {
            let ia0 = r0 * SA + kk;
            let ia1 = (r0 + 16u) * SA + kk;
            let ia2 = (r0 + 32u) * SA + kk;
            let ia3 = (r0 + 48u) * SA + kk;
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a_s[ia0], SA);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a_s[ia1], SA);
            let a2 = coopLoadT<coop_mat16x16<f16, A>>(&a_s[ia2], SA);
            let a3 = coopLoadT<coop_mat16x16<f16, A>>(&a_s[ia3], SA);
            var b0: coop_mat16x16<f16, B>;
            var b1: coop_mat16x16<f16, B>;
            var b2: coop_mat16x16<f16, B>;
            var b3: coop_mat16x16<f16, B>;
            if (B_NK) {
                let ib0 = c0 * SBK + kk;
                let ib1 = (c0 + 16u) * SBK + kk;
                let ib2 = (c0 + 32u) * SBK + kk;
                let ib3 = (c0 + 48u) * SBK + kk;
                b0 = coopLoad<coop_mat16x16<f16, B>>(&b_s[ib0], SBK);
                b1 = coopLoad<coop_mat16x16<f16, B>>(&b_s[ib1], SBK);
                b2 = coopLoad<coop_mat16x16<f16, B>>(&b_s[ib2], SBK);
                b3 = coopLoad<coop_mat16x16<f16, B>>(&b_s[ib3], SBK);
            } else {
                let ib0 = kk * SBN + c0;
                let ib1 = kk * SBN + c0 + 16u;
                let ib2 = kk * SBN + c0 + 32u;
                let ib3 = kk * SBN + c0 + 48u;
                b0 = coopLoadT<coop_mat16x16<f16, B>>(&b_s[ib0], SBN);
                b1 = coopLoadT<coop_mat16x16<f16, B>>(&b_s[ib1], SBN);
                b2 = coopLoadT<coop_mat16x16<f16, B>>(&b_s[ib2], SBN);
                b3 = coopLoadT<coop_mat16x16<f16, B>>(&b_s[ib3], SBN);
            }
            c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02); c03 = coopMultiplyAdd(a0, b3, c03);
            c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12); c13 = coopMultiplyAdd(a1, b3, c13);
            c20 = coopMultiplyAdd(a2, b0, c20); c21 = coopMultiplyAdd(a2, b1, c21);
            c22 = coopMultiplyAdd(a2, b2, c22); c23 = coopMultiplyAdd(a2, b3, c23);
            c30 = coopMultiplyAdd(a3, b0, c30); c31 = coopMultiplyAdd(a3, b1, c31);
            c32 = coopMultiplyAdd(a3, b2, c32); c33 = coopMultiplyAdd(a3, b3, c33);
        }
        workgroupBarrier();   // fragments read before the next tiles overwrite them
    }
    if (params.splits > 1u) {
        // split K: the scratch is padded to whole tiles ([splits · batches, c_rows, c_cols]), so
        // every fragment lies inside it and is stored straight from registers, no staging and
        // no barriers; fragment rows wholly past M are skipped (gemm_reduce.wgsl reads M × N)
        // (written out fragment by fragment, here and below: the kernel keeps its accumulators
        // in named variables, not arrays of cooperative matrices or function arguments)
        let cs = params.c_cols;
        let base = (z * params.c_rows + m0 + r0) * cs + n0 + c0;
        if (m0 + r0 < params.m) {
            let o00 = base;
            let o01 = base + 16u;
            let o02 = base + 32u;
            let o03 = base + 48u;
            coopStoreT(c00, &c[o00], cs);
            coopStoreT(c01, &c[o01], cs);
            coopStoreT(c02, &c[o02], cs);
            coopStoreT(c03, &c[o03], cs);
        }
        if (m0 + r0 + 16u < params.m) {
            let o10 = base + 16u * cs;
            let o11 = base + 16u * cs + 16u;
            let o12 = base + 16u * cs + 32u;
            let o13 = base + 16u * cs + 48u;
            coopStoreT(c10, &c[o10], cs);
            coopStoreT(c11, &c[o11], cs);
            coopStoreT(c12, &c[o12], cs);
            coopStoreT(c13, &c[o13], cs);
        }
        if (m0 + r0 + 32u < params.m) {
            let o20 = base + 32u * cs;
            let o21 = base + 32u * cs + 16u;
            let o22 = base + 32u * cs + 32u;
            let o23 = base + 32u * cs + 48u;
            coopStoreT(c20, &c[o20], cs);
            coopStoreT(c21, &c[o21], cs);
            coopStoreT(c22, &c[o22], cs);
            coopStoreT(c23, &c[o23], cs);
        }
        if (m0 + r0 + 48u < params.m) {
            let o30 = base + 48u * cs;
            let o31 = base + 48u * cs + 16u;
            let o32 = base + 48u * cs + 32u;
            let o33 = base + 48u * cs + 48u;
            coopStoreT(c30, &c[o30], cs);
            coopStoreT(c31, &c[o31], cs);
            coopStoreT(c32, &c[o32], cs);
            coopStoreT(c33, &c[o33], cs);
        }
    } else {
        // no split: each fragment through the subgroup's slot (index and stride bound to lets:
        // naga 30's SPIR-V writer panics on inline ones)
        let slot = s * 256u;
        let st = 16u;
        let fi = m0 + r0;
        let fj = n0 + c0;
        coopStoreT(c00, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi, fj); workgroupBarrier();
        coopStoreT(c01, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi, fj + 16u); workgroupBarrier();
        coopStoreT(c02, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi, fj + 32u); workgroupBarrier();
        coopStoreT(c03, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi, fj + 48u); workgroupBarrier();
        coopStoreT(c10, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 16u, fj); workgroupBarrier();
        coopStoreT(c11, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 16u, fj + 16u); workgroupBarrier();
        coopStoreT(c12, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 16u, fj + 32u); workgroupBarrier();
        coopStoreT(c13, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 16u, fj + 48u); workgroupBarrier();
        coopStoreT(c20, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 32u, fj); workgroupBarrier();
        coopStoreT(c21, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 32u, fj + 16u); workgroupBarrier();
        coopStoreT(c22, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 32u, fj + 32u); workgroupBarrier();
        coopStoreT(c23, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 32u, fj + 48u); workgroupBarrier();
        coopStoreT(c30, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 48u, fj); workgroupBarrier();
        coopStoreT(c31, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 48u, fj + 16u); workgroupBarrier();
        coopStoreT(c32, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 48u, fj + 32u); workgroupBarrier();
        coopStoreT(c33, &c_s[slot], st); workgroupBarrier(); flush(z, slot, lane, fi + 48u, fj + 48u); workgroupBarrier();
    }
}
