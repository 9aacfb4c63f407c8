// gemm/common.wgsl — what the fma and version-1 coop GEMM kernels share: the operand bindings and
// their loads (f16 pairs or f32 words, any strides), composed after gemm/params.wgsl and in front
// of gemm_fma.wgsl and gemm_coop.wgsl.
//
//   C[b, i, j] = (accumulate ? C[b, i, j] : 0) + Σ_k A[b, i, k] · B[b, k, j]
//
// A[b, i, k] is element  b·a_bs + i·a_rs + k·a_cs  of `a`; B[b, k, j] is  b·b_bs + k·b_ks + j·b_ns
// of `b` (a weight stored [out, in] as PyTorch does is B with b_ks = 1, b_ns = in). C is
// row-major [batch, M, N]. Operands are rounded to f16 (the tensor cores' input type) in both
// kernels, so they differ only in how they sum; accumulation is f32.

override A_F16: bool = true;   // `a` holds f16 pairs (else f32 words)
override B_F16: bool = true;

@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;   // [batch, M, N]

// An f32 rounded to f16's 11 significant bits, to nearest even (the reference's rounding).
// Not pack2x16float: its rounding mode is the driver's (NVIDIA's differs from lavapipe's, by an
// f16 ulp). Exact for values in f16's normal range; subnormals and overflow are not reproduced.
fn round_f16(x: f32) -> f32 {
    let u = bitcast<u32>(x);
    let even = (u >> 13u) & 1u;
    return bitcast<f32>((u + 0xfffu + even) & 0xffffe000u);
}

// element e of an f16-pair or f32 buffer, as f32 rounded to f16
fn word_value(w: u32, e: u32, is_f16: bool) -> f32 {
    if (is_f16) {
        return unpack2x16float(w)[e % 2u];
    }
    // an f32 operand rounded to f16, as the tensor cores' f16 inputs are
    return round_f16(bitcast<f32>(w));
}

// A[bt, i, kk], 0 outside M × K
fn load_a(bt: u32, i: u32, kk: u32) -> f32 {
    if (i >= params.m || kk >= params.k) { return 0.0; }
    let e = bt * params.a_bs + i * params.a_rs + kk * params.a_cs;
    return word_value(a[select(e, e / 2u, A_F16)], e, A_F16);
}

// B[bt, kk, j], 0 outside K × N
fn load_b(bt: u32, kk: u32, j: u32) -> f32 {
    if (kk >= params.k || j >= params.n) { return 0.0; }
    let e = bt * params.b_bs + kk * params.b_ks + j * params.b_ns;
    return word_value(b[select(e, e / 2u, B_F16)], e, B_F16);
}

// the result of C[bt, i, j] (inside M × N)
fn store_c(bt: u32, i: u32, j: u32, v: f32) {
    let idx = (bt * params.m + i) * params.n + j;
    c[idx] = select(v, c[idx] + v, params.accumulate == 1u);
}
