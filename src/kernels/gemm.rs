//! The GEMM family: `C = A · B (+ C)` with f16 operands (from f16 or f32 buffers), f32
//! accumulation, strided batches, any transposes, any M, N, K (tails included).
//! Shaders: `shaders/gemm/gemm_coop.wgsl` (cooperative matrices, the tensor cores, any layout),
//! `shaders/gemm/gemm_coop_f16.wgsl` (the tensor cores' fast path for contiguous f16 operands,
//! [`GemmKernel::CoopF16`]) and `shaders/gemm/gemm_fma.wgsl` (the f32 FMA units); the first and
//! last share `shaders/gemm/common.wgsl`, all share `shaders/gemm/params.wgsl` (the uniform
//! that `Params` here mirrors), and split K adds `shaders/gemm/gemm_reduce.wgsl`.
//! Reference: [`crate::reference::gemm`]. The path is the context's ([`GpuContext::matrix`]).

use super::{Dispatch, StepSpec, dispatch, dispatch_steps};
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
    k_chunk: u32,
    batches: u32,
    splits: u32,
    c_rows: u32,
    c_cols: u32,
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

    /// Whether [`GemmKernel::CoopF16`] can take this shape: f16 operands, A row-major, B
    /// `[N, K]` or `[K, N]` contiguous along K or N, every row (and batch) starting on a quad of
    /// 8 f16, and K (for `[K, N]`, N) a multiple of 8 so a quad is all in bounds or all out.
    pub fn fits_coop_f16(&self) -> bool {
        let quad = |x: u32| x.is_multiple_of(8);
        let batches = |l: &Layout| self.batch == 1 || quad(l.batch);
        let (a, b) = (&self.a, &self.b);
        let a_ok = a.dtype == Dtype::F16 && a.col == 1 && quad(a.row) && batches(a);
        let b_nk = b.row == 1 && quad(b.col);
        let b_kn = b.col == 1 && quad(b.row) && quad(self.n);
        a_ok && quad(self.k) && b.dtype == Dtype::F16 && batches(b) && (b_nk || b_kn)
    }

    /// 2·M·N·K per batch: a multiply and an add per product.
    pub fn flops(&self) -> u64 {
        2 * self.batch as u64 * self.m as u64 * self.n as u64 * self.k as u64
    }
}

/// The kernels of the family. [`Gemm::on`] takes `CoopF16` on the coop path wherever the shape
/// allows it ([`GemmShape::fits_coop_f16`]), `Coop` elsewhere, and `Fma` on the fma path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// The f32 FMA units; any layout, f16 or f32 operands. Tile 64 × 64.
    Fma,
    /// Cooperative matrices; any layout, f16 or f32 operands. Tile 64 × 64.
    Coop,
    /// Cooperative matrices; contiguous f16 operands in whole quads of 8. Tile 128 × 256, the
    /// next K tile prefetched.
    CoopF16,
}

impl GemmKernel {
    pub fn name(self) -> &'static str {
        match self {
            GemmKernel::Fma => "fma",
            GemmKernel::Coop => "coop",
            GemmKernel::CoopF16 => "coop-f16",
        }
    }

    /// The C tile of one workgroup (rows, columns).
    fn tile(self) -> (u32, u32) {
        match self {
            GemmKernel::Fma | GemmKernel::Coop => (64, 64),
            GemmKernel::CoopF16 => (128, 256),
        }
    }
}

#[derive(Debug)]
pub struct Gemm {
    pipeline: wgpu::ComputePipeline,
    /// The split-K sum (`shaders/gemm/gemm_reduce.wgsl`), where K is split.
    reduce: Option<wgpu::ComputePipeline>,
    pub path: MatrixPath,
    pub kernel: GemmKernel,
    pub shape: GemmShape,
    /// How many slices K is cut into (1: none), each `k_chunk` long but the last.
    pub splits: u32,
    pub k_chunk: u32,
}

/// The workgroup memory of `gemm_coop_f16.wgsl` (A [128][40] and B [256][40] f16, padded rows,
/// and 8 × 256 f32 of epilogue staging): more than the 32 KiB `GpuContext` guarantees, so an
/// adapter with less takes the `Coop` kernel.
const COOP_F16_WORKGROUP_BYTES: u32 = (128 * 40 + 256 * 40) * 2 + 8 * 256 * 4;
/// The K step of `gemm_coop_f16.wgsl` (`TK`): splits are whole steps.
const COOP_F16_TK: u32 = 32;

/// Split K until the grid has this many workgroups: one per SM of a 132-SM H200 (a skinny decode
/// GEMM, M = 64 × N = 1536, has 6 tiles of 128 × 256). Measured on the H200 against 264, 528
/// and 1056 (docs/PERF.md): every split adds a prologue, a 16-fragment epilogue and scratch
/// traffic, so the fewest splits that fill the GPU once won at 17 of the 20 decode shapes
/// (measured before splits stored their fragments directly; not re-measured since).
const SPLIT_TARGET_WORKGROUPS: u32 = 132;
/// The split-K scratch stays under this size (it is `splits · batch · M · N` f32, M and N padded
/// to whole 128 × 256 tiles).
const SPLIT_SCRATCH_MAX: u64 = 256 << 20;

/// The rows and columns of one slice of the split-K scratch: M and N padded to whole tiles, so
/// the kernel stores whole fragments without bounds.
fn split_scratch(shape: &GemmShape) -> (u32, u32) {
    let (tm, tn) = GemmKernel::CoopF16.tile();
    (shape.m.div_ceil(tm) * tm, shape.n.div_ceil(tn) * tn)
}

/// (splits, k_chunk) for the coop-f16 kernel: enough splits of whole 32-deep K tiles to fill the
/// GPU, none where the tile grid already does.
fn split_k(shape: &GemmShape) -> (u32, u32) {
    let (tm, tn) = GemmKernel::CoopF16.tile();
    let tiles = shape.n.div_ceil(tn) * shape.m.div_ceil(tm) * shape.batch;
    let k_tiles = shape.k.div_ceil(COOP_F16_TK);
    let (rows, cols) = split_scratch(shape);
    let c = shape.batch as u64 * rows as u64 * cols as u64 * 4;
    let most = (SPLIT_SCRATCH_MAX / c).clamp(1, 64) as u32;
    let want = SPLIT_TARGET_WORKGROUPS.div_ceil(tiles);
    let want = want.min(k_tiles).min(most).min(65535 / shape.batch).max(1);
    let k_chunk = k_tiles.div_ceil(want) * COOP_F16_TK;
    (shape.k.div_ceil(k_chunk), k_chunk)
}

/// The buffers of one GEMM: `a`, `b` as the shape's layouts say, `c` `[batch, M, N]` f32.
pub struct GemmArgs<'a> {
    pub a: &'a wgpu::Buffer,
    pub b: &'a wgpu::Buffer,
    pub c: &'a wgpu::Buffer,
}

impl Gemm {
    /// The GEMM of `shape` on the context's matrix path.
    pub fn new(ctx: &GpuContext, shape: &GemmShape) -> Result<Self> {
        Self::on(ctx, shape, ctx.matrix)
    }

    /// On a given path: `Coop` where the context has cooperative matrices, else an error.
    pub fn on(ctx: &GpuContext, shape: &GemmShape, path: MatrixPath) -> Result<Self> {
        let kernel = match path {
            MatrixPath::Fma => GemmKernel::Fma,
            MatrixPath::Coop
                if super::coop_fits(ctx, COOP_F16_WORKGROUP_BYTES) && shape.fits_coop_f16() =>
            {
                GemmKernel::CoopF16
            }
            MatrixPath::Coop => GemmKernel::Coop,
        };
        Self::with(ctx, shape, kernel)
    }

    /// A given kernel of the family (for benchmarks and tests): an error where the context lacks
    /// cooperative matrices for a coop kernel, or the shape does not fit `CoopF16`.
    pub fn with(ctx: &GpuContext, shape: &GemmShape, kernel: GemmKernel) -> Result<Self> {
        shape.validate()?;
        let path = match kernel {
            GemmKernel::Fma => MatrixPath::Fma,
            GemmKernel::Coop | GemmKernel::CoopF16 => MatrixPath::Coop,
        };
        if kernel == GemmKernel::CoopF16 && !shape.fits_coop_f16() {
            return Err(Error::config(
                "gemm kernel",
                kernel.name(),
                "f16 operands, A row-major, B contiguous along K or N, rows on quads of 8",
            ));
        }
        match kernel {
            GemmKernel::CoopF16 => {
                super::require_coop(ctx, "the coop-f16 GEMM", COOP_F16_WORKGROUP_BYTES)?
            }
            GemmKernel::Coop => super::require_coop(ctx, "the coop GEMM", 0)?,
            GemmKernel::Fma => {}
        }
        let f16 = |l: &Layout| (l.dtype == Dtype::F16) as u32 as f64;
        let operands = [("A_F16", f16(&shape.a)), ("B_F16", f16(&shape.b))];
        let b_nk = [("B_NK", (shape.b.row == 1) as u32 as f64)];
        let (label, source, constants): (_, _, &[(&str, f64)]) = match kernel {
            GemmKernel::Coop => ("gemm_coop", crate::shaders::GEMM_COOP, &operands),
            GemmKernel::Fma => ("gemm_fma", crate::shaders::GEMM_FMA, &operands),
            GemmKernel::CoopF16 => ("gemm_coop_f16", crate::shaders::GEMM_COOP_F16, &b_nk),
        };
        let pipeline = ctx.pipeline(label, source, "main", constants)?;
        let (splits, k_chunk) = match kernel {
            GemmKernel::CoopF16 => split_k(shape),
            _ => (1, shape.k),
        };
        let reduce = match splits {
            1 => None,
            _ => Some(ctx.pipeline("gemm_reduce", crate::shaders::GEMM_REDUCE, "main", &[])?),
        };
        Ok(Gemm {
            pipeline,
            reduce,
            path,
            kernel,
            shape: *shape,
            splits,
            k_chunk,
        })
    }

    /// The same GEMM with K in one piece (for tests and benchmarks of the split).
    pub fn unsplit(self) -> Self {
        Gemm {
            reduce: None,
            splits: 1,
            k_chunk: self.shape.k,
            ..self
        }
    }

    /// The dispatch of this GEMM on `args` (with split K, it owns its scratch).
    pub fn bind(&self, ctx: &GpuContext, args: &GemmArgs) -> Result<Dispatch> {
        let s = &self.shape;
        let (c_rows, c_cols) = split_scratch(s);
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
            k_chunk: self.k_chunk,
            batches: s.batch,
            splits: self.splits,
            c_rows,
            c_cols,
            _pad: [0; 2],
        };
        let (tm, tn) = self.kernel.tile();
        let grid = [s.n.div_ceil(tn), s.m.div_ceil(tm), s.batch * self.splits];
        let Some(reduce) = &self.reduce else {
            let buffers = [args.a, args.b, args.c];
            return Ok(dispatch(
                ctx,
                &self.pipeline,
                "gemm",
                &params,
                &buffers,
                grid,
            ));
        };
        let c = s.batch as u64 * s.m as u64 * s.n as u64;
        let slice = s.batch as u64 * c_rows as u64 * c_cols as u64;
        let scratch = ctx.storage("gemm split-k", self.splits as u64 * slice * 4)?;
        let sum_grid = [c.div_ceil(256).min(65535) as u32, 1, 1];
        Ok(dispatch_steps(
            ctx,
            "gemm",
            &params,
            &[
                StepSpec {
                    pipeline: &self.pipeline,
                    buffers: &[(1, args.a), (2, args.b), (3, &scratch)],
                    workgroups: grid,
                },
                StepSpec {
                    pipeline: reduce,
                    buffers: &[(1, &scratch), (2, args.c)],
                    workgroups: sum_grid,
                },
            ],
        ))
    }
}
