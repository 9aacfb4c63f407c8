//! The GEMM family: `C = A · B (+ C)` with f16 operands (from f16 or f32 buffers), f32
//! accumulation, strided batches, any transposes, any M, N, K (tails included).
//! Shaders: `shaders/gemm/gemm_coop.wgsl` (cooperative matrices, the tensor cores) and
//! `shaders/gemm/gemm_fma.wgsl` (the f32 FMA units), sharing `shaders/gemm/common.wgsl`.
//! Reference: [`crate::reference::gemm`]. The path is the context's ([`GpuContext::matrix`]).

use super::{Dispatch, dispatch};
use crate::config::Dtype;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, MatrixPath};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,
    a_rs: u32,
    a_cs: u32,
    a_bs: u32,
    b_ks: u32,
    b_ns: u32,
    b_bs: u32,
    _pad: [u32; 2],
}

/// How an operand is laid out: element (row r, column c) of batch b is at `b·batch + r·row +
/// c·col` (in elements) of its buffer, stored as `dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub dtype: Dtype,
    pub row: u32,
    pub col: u32,
    pub batch: u32,
}

impl Layout {
    /// Row-major `[batch, rows, cols]`, contiguous.
    pub fn row_major(dtype: Dtype, rows: u32, cols: u32) -> Self {
        Layout {
            dtype,
            row: cols,
            col: 1,
            batch: rows * cols,
        }
    }

    /// The transpose of a row-major `[batch, cols, rows]` (a weight stored `[out, in]`, read as
    /// `[in, out]`).
    pub fn transposed(dtype: Dtype, rows: u32, cols: u32) -> Self {
        Layout {
            dtype,
            row: 1,
            col: rows,
            batch: rows * cols,
        }
    }
}

/// What one GEMM computes: `C[batch, M, N] (+)= A[batch, M, K] · B[batch, K, N]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
    pub a: Layout,
    pub b: Layout,
    /// Add to C instead of overwriting it.
    pub accumulate: bool,
}

impl GemmShape {
    /// M, N, K at least 1; batches up to the grid's 65,535; every element index within u32.
    pub fn validate(&self) -> Result<()> {
        crate::limits::in_range("gemm m", self.m as u64, 1, 1 << 24)?;
        crate::limits::in_range("gemm n", self.n as u64, 1, 1 << 24)?;
        crate::limits::in_range("gemm k", self.k as u64, 1, 1 << 24)?;
        crate::limits::in_range("gemm batch", self.batch as u64, 1, 65535)?;
        let last = |l: &Layout, rows: u32, cols: u32| {
            (self.batch as u64 - 1) * l.batch as u64
                + (rows as u64 - 1) * l.row as u64
                + (cols as u64 - 1) * l.col as u64
        };
        let c = self.batch as u64 * self.m as u64 * self.n as u64;
        for (what, e) in [
            ("gemm A", last(&self.a, self.m, self.k)),
            ("gemm B", last(&self.b, self.k, self.n)),
            ("gemm C", c),
        ] {
            if e >= u32::MAX as u64 {
                return Err(Error::config(what, e, "elements indexed within u32"));
            }
        }
        Ok(())
    }

    /// 2·M·N·K per batch: a multiply and an add per product.
    pub fn flops(&self) -> u64 {
        2 * self.batch as u64 * self.m as u64 * self.n as u64 * self.k as u64
    }
}

#[derive(Debug)]
pub struct Gemm {
    pipeline: wgpu::ComputePipeline,
    pub path: MatrixPath,
    pub shape: GemmShape,
}

/// The buffers of one GEMM: `a`, `b` as the shape's layouts say, `c` `[batch, M, N]` f32.
pub struct GemmArgs<'a> {
    pub a: &'a wgpu::Buffer,
    pub b: &'a wgpu::Buffer,
    pub c: &'a wgpu::Buffer,
}

/// The C tile of a workgroup in both kernels.
const TILE: u32 = 64;

impl Gemm {
    /// The GEMM of `shape` on the context's matrix path.
    pub fn new(ctx: &GpuContext, shape: &GemmShape) -> Result<Self> {
        Self::on(ctx, shape, ctx.matrix)
    }

    /// On a given path: `Coop` where the context has cooperative matrices, else an error.
    pub fn on(ctx: &GpuContext, shape: &GemmShape, path: MatrixPath) -> Result<Self> {
        shape.validate()?;
        if path == MatrixPath::Coop && ctx.matrix != MatrixPath::Coop {
            return Err(Error::Unsupported {
                what: "the coop GEMM".into(),
                need: "a context on the coop matrix path".into(),
                have: ctx.report.matrix.clone(),
            });
        }
        let (label, source) = match path {
            MatrixPath::Coop => ("gemm_coop", crate::shaders::GEMM_COOP),
            MatrixPath::Fma => ("gemm_fma", crate::shaders::GEMM_FMA),
        };
        let f16 = |l: &Layout| (l.dtype == Dtype::F16) as u32 as f64;
        let constants = [("A_F16", f16(&shape.a)), ("B_F16", f16(&shape.b))];
        let pipeline = ctx.pipeline(label, source, "main", &constants)?;
        Ok(Gemm {
            pipeline,
            path,
            shape: *shape,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, args: &GemmArgs) -> Dispatch {
        let s = &self.shape;
        let params = Params {
            m: s.m,
            n: s.n,
            k: s.k,
            accumulate: s.accumulate as u32,
            a_rs: s.a.row,
            a_cs: s.a.col,
            a_bs: s.a.batch,
            b_ks: s.b.row,
            b_ns: s.b.col,
            b_bs: s.b.batch,
            _pad: [0; 2],
        };
        let grid = [s.n.div_ceil(TILE), s.m.div_ceil(TILE), s.batch];
        dispatch(
            ctx,
            &self.pipeline,
            "gemm",
            &params,
            &[args.a, args.b, args.c],
            grid,
        )
    }
}
