// model_gemm_coop.wgsl — the model's FP8 linear layers on the tensor cores (cooperative
// matrices, 16 × 16 × 16, f16 operands, f32 accumulation): DeepSeek's FP8 GEMM as
// DeepGEMM computes it. Composed in front of lib/fp8.wgsl and model_gemm.wgsl, whose parameters,
// bindings, `reduce` and tile rows (`src`) it shares.
//
//   linear_coop    as model_gemm.wgsl's `linear`, for an FP8 weight (K a multiple of 4)
//   expert_coop    one FP8 weight of the routed experts over model_gemm.wgsl's tiles of grouped
//                  pairs (`group`, `expert_tile`): y[p, o] = x[row of p] · W_e[o] for each pair
//                  p of expert e's tile; with SWIGLU, y[p, o] = silu(y[p, o]) · that sum (the
//                  up weight's dispatch after the gate's), so gate, up, SwiGLU and down are
//                  three dispatches a binding of experts where the FMA kernels take two
//
// Numerics. An FP8 weight's inputs come through act_quant, so a 128-block of a row of x holds
// e4m3 values times one power of two, and the weight is e4m3 bytes times one f32 scale a
// 128 × 128 block. Both the e4m3 values and the scaled inputs below (4 significant bits, ≥ 2^-9
// and < 512 in magnitude, since act_quant's scale is at least 2^-8 of the block's largest) are
// f16 numbers, so the tensor cores see the operands exactly:
//   A[r, k] = x[r, k] / t[r, b]   t = 2^(⌊log2 max_b |x[r, ·]|⌋ − 8), a power of two per row and
//                                 128-block b, from the block's largest magnitude
//   B[n, k] = the weight's e4m3 value
// Each 128-block's product Σ_k A·B (exact products, f32 sums on the tensor cores) is taken out
// of its fragment and promoted into f32 registers times t[r, b] · scale[n / 128, b], as DeepGEMM
// promotes its FP8 blocks. What differs from the f32 FMA kernel is the order of the f32 sums
// (tests/kernels.rs measures it). Inputs that did not come through act_quant are rounded to f16
// after the same scaling (relative 2^-11). A block's products never involve other rows, so a
// row's result is the same in any batch.
//
// Mapping: a workgroup computes CTM = 32 rows × CTN = 64 outputs, a 128-block of K a stage:
// 8 subgroups of 32, subgroup s the fragment of rows 16 (s / 4) and outputs 16 (s % 4). A
// block's raw inputs (x's 16 values and the weight's 8 words a thread) are loaded into registers
// while the block before multiplies; then each row's largest |x| (workgroup atomics), t, the f16
// tiles, 8 products a subgroup, and the promotion through a 16 × 16 staging slot. Linear layers
// put the row tiles on grid x, so workgroups that run together share weight columns.

enable f16;
enable wgpu_cooperative_matrix;

const CTM: u32 = 32u;
const CTN: u32 = 64u;
const QB: u32 = 128u;          // the FP8 block: K a stage
const CPAD: u32 = QB + 8u;     // f16 row stride of the tiles: rows start in different banks

// A tile's bounds reach `coop_tile` through workgroup memory: the tensor-core operations must sit
// in control flow naga can prove uniform, which a function argument is not.
struct Job {
    kb: u32,   // K of the tile: [kb, ke), kb a multiple of 128
    ke: u32,
    xr: u32,   // x's row stride
    wb: u32,   // the weight's first byte (params.wb: a weight that starts inside its buffer)
    sb: u32,   // the weight's first scale
    n0: u32,   // the tile's first output
}
var<workgroup> job: Job;

var<workgroup> a16: array<f16, 4352>;      // [CTM][CPAD]: x / t
var<workgroup> w16: array<f16, 8704>;      // [CTN][CPAD]: the weight's e4m3 values (column-major B)
var<workgroup> slot: array<f32, 2048>;     // 8 subgroups × a 16 × 16 staging slot
var<workgroup> amax: array<atomic<u32>, 32>;   // |x| bits, the largest of each row's block
var<workgroup> row_t: array<f32, 32>;          // t of each row for the block being multiplied

// One block's raw inputs in a thread's registers: x's row lid / 8, values 16 (lid % 8) .. + 16
// of the block; the weight's words e = lid + 256q (row e / 32, bytes 4 (e % 32) .. + 4).
struct Raw {
    x: array<f32, 16>,
    w: array<u32, 8>,
}

fn fetch_raw(lid: u32, k0: u32, kend: u32, xr: u32, wb: u32, n0: u32) -> Raw {
    var raw: Raw;
    let r = src[lid / 8u];
    for (var q = 0u; q < 16u; q++) {
        let kk = k0 + 16u * (lid % 8u) + q;
        var v = 0.0;
        if (r != NONE && kk < kend) { v = x[r * xr + kk]; }
        raw.x[q] = v;
    }
    for (var q = 0u; q < 8u; q++) {
        let e = lid + 256u * q;
        let j = e / 32u;
        let kw = k0 + 4u * (e % 32u);
        var a = 0u;
        if (n0 + j < params.n && kw < kend) { a = w[(wb + (n0 + j) * params.k + kw) / 4u]; }
        raw.w[q] = a;
    }
    return raw;
}

// t of each tile row from the block's values in the registers (the row's largest |x|, then
// 2^(its exponent − 8); 2^-126 at the least, 1 for a block of zeros), then the f16 tiles: x / t
// and the weight's bytes as values.
fn stage(lid: u32, raw: Raw) {
    if (lid < CTM) { atomicStore(&amax[lid], 0u); }
    workgroupBarrier();
    var m = 0.0;
    for (var q = 0u; q < 16u; q++) { m = max(m, abs(raw.x[q])); }
    atomicMax(&amax[lid / 8u], bitcast<u32>(m));
    workgroupBarrier();
    if (lid < CTM) {
        let ex = (atomicLoad(&amax[lid]) >> 23u) & 0xffu;
        row_t[lid] = select(1.0, bitcast<f32>((max(ex, 9u) - 8u) << 23u), ex != 0u);
    }
    workgroupBarrier();
    let row = lid / 8u;
    let t = row_t[row];
    for (var q = 0u; q < 16u; q++) { a16[row * CPAD + 16u * (lid % 8u) + q] = f16(raw.x[q] / t); }
    for (var q = 0u; q < 8u; q++) {
        let e = lid + 256u * q;
        let at = (e / 32u) * CPAD + 4u * (e % 32u);
        let v = vec4<f16>(e4m3x4_values(raw.w[q]));   // exact: e4m3 values are f16 numbers
        w16[at] = v.x; w16[at + 1u] = v.y; w16[at + 2u] = v.z; w16[at + 3u] = v.w;
    }
}

// The tile `job` describes: a thread's 8 elements e = lane + 32i of its subgroup's fragment
// (row 16 (s / 4) + e / 16, output 16 (s % 4) + e % 16), summed over the job's K.
fn coop_tile(lid: u32) -> array<f32, 8> {
    let jb = workgroupUniformLoad(&job);
    let kb = jb.kb;
    let ke = jb.ke;
    let s = lid / 32u;
    let lane = lid % 32u;
    let col0 = jb.n0 + 16u * (s % 4u);
    var acc: array<f32, 8>;
    var raw = fetch_raw(lid, kb, ke, jb.xr, jb.wb, jb.n0);
    for (var k0 = kb; k0 < ke; k0 += QB) {
        stage(lid, raw);
        workgroupBarrier();   // tiles staged before the fragments are loaded
        if (k0 + QB < ke) { raw = fetch_raw(lid, k0 + QB, ke, jb.xr, jb.wb, jb.n0); }
        var f = coop_mat16x16<f32, C>();
        for (var kk = 0u; kk < QB; kk += 16u) {
            // indices bound to lets in the block of their use: naga 30's SPIR-V writer panics on
            // inline ones and on lets of an enclosing block
            let pa = 16u * (s / 4u) * CPAD + kk;
            let pb = 16u * (s % 4u) * CPAD + kk;
            let a = coopLoadT<coop_mat16x16<f16, A>>(&a16[pa], CPAD);
            let b = coopLoad<coop_mat16x16<f16, B>>(&w16[pb], CPAD);
            f = coopMultiplyAdd(a, b, f);
        }
        let sl = s * 256u;
        let st = 16u;
        coopStoreT(f, &slot[sl], st);
        workgroupBarrier();   // the fragment in its slot (and every tile read) before promoting
        let blk = k0 / QB;
        for (var i = 0u; i < 8u; i++) {
            let e = lane + 32u * i;
            let o = col0 + e % 16u;
            var ws = 0.0;
            if (o < params.n) { ws = scales_w[jb.sb + ((params.row0 + o) / QB) * params.kblocks + blk]; }
            acc[i] = fma(slot[sl + e], row_t[16u * (s / 4u) + e / 16u] * ws, acc[i]);
        }
        workgroupBarrier();   // slots and t read before the next block overwrites them
    }
    return acc;
}

@compute @workgroup_size(256)
fn linear_coop(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m0 = wg.x * CTM;
    let n0 = wg.y * CTN;
    let sp = wg.z;
    if (lid < CTM) {
        let r = m0 + lid;
        src[lid] = select(NONE, r, r < params.m);
    }
    if (lid == 0u) {
        let kb = sp * params.k_chunk;
        job = Job(kb, min(params.k, kb + params.k_chunk), params.xr, params.wb, 0u, n0);
    }
    let acc = coop_tile(lid);   // (its first load of `job` is a barrier)
    let s = lid / 32u;
    for (var i = 0u; i < 8u; i++) {
        let e = lid % 32u + 32u * i;
        let r = m0 + 16u * (s / 4u) + e / 16u;
        let o = n0 + 16u * (s % 4u) + e % 16u;
        if (r < params.m && o < params.n) {
            if (params.splits == 1u) {
                y[r * params.yr + params.yo + o] = acc[i];
            } else {
                y[(sp * params.m + r) * params.n + o] = acc[i];
            }
        }
    }
}

// Where expert_coop's x rows are: the pairs' own (down: the activations) or their tokens'
// (gate and up: the layer's input).
override X_IS_PAIR: bool = false;
// expert_coop's output: the sums (false), or SwiGLU of the sums already there (the gate's) and
// these (the up weight's).
override SWIGLU: bool = false;

@compute @workgroup_size(256)
fn expert_coop(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // tile wg.x of the grouped pairs (`src`, `dst`), for the experts this dispatch binds (e is
    // uniform: the tile's, read by workgroupUniformLoad)
    let e = expert_tile(wg.x, lid, X_IS_PAIR);
    if (e == NONE || e < params.expert_base || e >= params.expert_base + params.expert_count) {
        return;
    }
    let n0 = wg.y * CTN;
    if (lid == 0u) {
        // expert e's bytes [n, k] and scales [⌈n / 128⌉, kblocks], after the experts before it
        let local = e - params.expert_base;
        let sb = local * ((params.n + QB - 1u) / QB) * params.kblocks;
        job = Job(0u, params.k, params.k, local * params.n * params.k, sb, n0);
    }
    let acc = coop_tile(lid);   // (its first load of `job` is a barrier)
    let s = lid / 32u;
    for (var i = 0u; i < 8u; i++) {
        let el = lid % 32u + 32u * i;
        let p = dst[16u * (s / 4u) + el / 16u];
        let o = n0 + 16u * (s % 4u) + el % 16u;
        if (p != NONE && o < params.n) {
            var v = acc[i];
            if (SWIGLU) {
                let g = y[p * params.n + o];
                v = g / (1.0 + exp(-g)) * v;
            }
            y[p * params.n + o] = v;
        }
    }
}
