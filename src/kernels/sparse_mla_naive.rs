//! Sparse MLA decode, version 1: one workgroup per (sequence, head), online softmax over the
//! selected rows. Shader: `shaders/sparse_mla_naive.wgsl`. Reference:
//! [`crate::reference::sparse_mla`]. Read this one before the tuned [`super::SparseMla`].

use super::sparse_mla::SparseMlaShape;
use super::{Dispatch, dispatch};
use crate::config::Dtype;
use crate::error::Result;
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    heads: u32,
    kv: u32,
    rope: u32,
    k: u32,
    b0: u32,
    scale: f32,
    _pad: [u32; 2],
}

#[derive(Debug)]
pub struct SparseMlaNaive {
    pipeline: wgpu::ComputePipeline,
    params: Params,
}

/// Buffers of one dispatch over sequences `b0 .. b0 + batch` (as [`super::sparse_mla::SparseMlaArgs`],
/// without the working space the tuned kernel needs).
pub struct SparseMlaNaiveArgs<'a> {
    /// `[B, H, KV + ROPE]` f32: q_abs ‖ q_pe.
    pub q: &'a wgpu::Buffer,
    /// `[B, k]` i32 ids, −1 = none; id i of sequence b reads row `seq[2b] + i`.
    pub ids: &'a wgpu::Buffer,
    /// `[B, 2]` u32: (first row of sequence b in `rows`, unused).
    pub seq: &'a wgpu::Buffer,
    /// `[R, KV + ROPE]` latent rows c_kv ‖ k_pe (or `[R, row bytes]` packed FP8 rows).
    pub rows: &'a wgpu::Buffer,
    /// `[B, H, KV]` f32 output.
    pub o_lat: &'a wgpu::Buffer,
    /// `[B, H]` f32 output.
    pub lse: &'a wgpu::Buffer,
    pub b0: u32,
    pub batch: u32,
}

impl SparseMlaNaive {
    /// The tuned kernel's shapes (KV ≤ 512: 8 dims a thread × 64 threads) and any even number
    /// of RoPE dims ([`SparseMlaShape::validate_naive`]), rows in `shape.dtype` (FP8 rows
    /// dequantised as they are read).
    pub fn new(ctx: &GpuContext, shape: &SparseMlaShape) -> Result<Self> {
        shape.validate_naive()?;
        let (kv, rope) = (shape.kv, shape.rope);
        let pipeline = ctx.pipeline(
            "sparse_mla_naive",
            crate::shaders::SPARSE_MLA_NAIVE,
            "main",
            &[
                ("ROWS_F16", (shape.dtype == Dtype::F16) as u32 as f64),
                ("ROWS_FP8", (shape.dtype == Dtype::Fp8) as u32 as f64),
            ],
        )?;
        Ok(SparseMlaNaive {
            pipeline,
            params: Params {
                heads: shape.heads,
                kv,
                rope,
                k: shape.topk,
                b0: 0,
                scale: shape.softmax_scale,
                _pad: [0; 2],
            },
        })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &SparseMlaNaiveArgs) -> Dispatch {
        let params = Params {
            b0: a.b0,
            ..self.params
        };
        dispatch(
            ctx,
            &self.pipeline,
            "sparse_mla_naive",
            &params,
            &[a.q, a.ids, a.seq, a.rows, a.o_lat, a.lse],
            [self.params.heads, a.batch, 1],
        )
    }
}
