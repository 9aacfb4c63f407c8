//! The GEMM family at the decoder layer's shapes, timed against the roofline of the units each
//! kernel multiplies on (`bench kernels` and `examples/05_gemm.rs`).

use super::{Ceilings, KernelTiming, row, time_pass};
use crate::Dtype;
use crate::error::Result;
use crate::gpu::{GpuContext, MatrixPath};
use crate::kernels::Gemm;
use crate::kernels::gemm::{GemmArgs, GemmKernel, GemmShape, Layout};

/// (M, N, K) of the decoder layer's projections for decode rows M = 1, 16, 64, 256 against the
/// weights `[out, in]`: q down 7168 → 1536, q up 1536 → 24576, kv down 7168 → 576, o 16384 →
/// 7168, and an MoE expert's 7168 → 2048 (the shapes of `docs/bench/torch_peer.py`).
pub fn decoder_shapes() -> Vec<(u32, u32, u32)> {
    [1, 16, 64, 256]
        .into_iter()
        .flat_map(|m| {
            [
                (m, 1536, 7168),
                (m, 24576, 1536),
                (m, 576, 7168),
                (m, 7168, 16384),
                (m, 2048, 7168),
            ]
        })
        .collect()
}

/// The kernels of the family the context can run, fastest first.
pub fn kernels(ctx: &GpuContext) -> Vec<GemmKernel> {
    match ctx.matrix {
        MatrixPath::Coop => vec![GemmKernel::CoopF16, GemmKernel::Coop, GemmKernel::Fma],
        MatrixPath::Fma => vec![GemmKernel::Fma],
    }
}

/// Whether [`time_gemm`]'s buffers for `(M, N, K)` (A and W f16, C f32) each fit one storage
/// binding of the context (lavapipe's 128 MiB holds no C of 8192²).
pub fn fits(ctx: &GpuContext, (m, n, k): (u32, u32, u32)) -> bool {
    let (m, n, k) = (m as u64, n as u64, k as u64);
    [m * k * 2, k * n * 2, m * n * 4]
        .iter()
        .all(|&bytes| bytes <= ctx.max_binding())
}

/// Time `C[M, N] = A[M, K] · W[N, K]ᵀ` (f16 operands, f32 C) with `kernel`, on constant inputs
/// (A = 1, W = 0.5) so the result is checked exactly: C = K / 2 everywhere. Returns the row of
/// the report (bytes: A and W read once, C written once) and whether C was exact.
pub fn time_gemm(
    ctx: &GpuContext,
    kernel: GemmKernel,
    (m, n, k): (u32, u32, u32),
    c: &Ceilings,
    reps: u32,
) -> Result<(KernelTiming, bool)> {
    let shape = GemmShape {
        m,
        n,
        k,
        batch: 1,
        a: Layout::row_major(Dtype::F16, m, k),
        b: Layout::transposed(Dtype::F16, k, n),
        accumulate: false,
    };
    let gemm = Gemm::with(ctx, &shape, kernel)?;
    let a = ctx.storage("a", m as u64 * k as u64 * 2)?;
    let b = ctx.storage("b", k as u64 * n as u64 * 2)?;
    let out = ctx.storage("c", m as u64 * n as u64 * 4)?;
    ctx.fill(&a, 0x3c00_3c00); // 1.0 in f16 pairs
    ctx.fill(&b, 0x3800_3800); // 0.5
    let d = gemm.bind(
        ctx,
        &GemmArgs {
            a: &a,
            b: &b,
            c: &out,
        },
    )?;
    let t = time_pass(ctx, &[&d], reps)?;
    let got: Vec<f32> = ctx.read(&out)?;
    let exact = got.iter().all(|&x| x == 0.5 * k as f32);
    let bytes = (m as u64 * k as u64 + k as u64 * n as u64) * 2 + m as u64 * n as u64 * 4;
    let name = format!("gemm {n}x{k} {}", kernel.name());
    Ok((
        row(&name, m, 0, t, bytes, shape.flops(), c, gemm.path),
        exact,
    ))
}
