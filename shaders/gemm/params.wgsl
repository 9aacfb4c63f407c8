// gemm/params.wgsl — the uniform parameters every GEMM step shares (one buffer for the product and
// the split-K sum), composed into each GEMM unit; mirrored by `Params` in src/kernels/gemm.rs.
//
// A[b, i, k] is element  b·a_bs + i·a_rs + k·a_cs  of `a`; B[b, k, j] is  b·b_bs + k·b_ks + j·b_ns
// of `b`; C is row-major [batch, M, N].

struct Params {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,   // 1: add to C; 0: overwrite it
    a_rs: u32,
    a_cs: u32,
    a_bs: u32,
    b_ks: u32,
    b_ns: u32,
    b_bs: u32,
    k_chunk: u32,      // split K (gemm_coop_f16.wgsl): K of one split, a multiple of 32
    batches: u32,
    splits: u32,       // 1: K whole
    c_rows: u32,       // split K: the scratch's rows and columns, M and N padded to whole tiles
    c_cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
