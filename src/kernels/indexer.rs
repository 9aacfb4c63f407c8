//! Lightning indexer: `index_score[b, s] = Σ_j w[b, j] · ReLU(q[b, j, :] · k_b[s, :])`.
//! Shader: `shaders/indexer.wgsl`. Reference: [`crate::reference::indexer`].

use super::{Dispatch, dispatch};
use crate::config::Dtype;
use crate::error::Result;
use crate::gpu::GpuContext;

/// Keys per workgroup (KEYS_PER_WG in the shader).
pub const KEYS_PER_WG: u32 = 256;

/// The uniform both indexer kernels (tuned and version 1) read.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Params {
    heads: u32,
    dim: u32,
    b0: u32,
    score_stride: u32,
}

impl Params {
    pub(super) fn new(heads: u32, dim: u32, a: &IndexerArgs) -> Self {
        Params {
            heads,
            dim,
            b0: a.b0,
            score_stride: a.score_stride,
        }
    }
}

#[derive(Debug)]
pub struct Indexer {
    pipeline: wgpu::ComputePipeline,
    pub heads: u32,
    pub dim: u32,
    pub dtype: Dtype,
}

/// Buffers of one indexer dispatch over sequences `b0 .. b0 + batch`.
pub struct IndexerArgs<'a> {
    /// `[B, H, D]` f32 queries q_I.
    pub q: &'a wgpu::Buffer,
    /// `[B, H]` f32 head weights (scales folded in).
    pub w: &'a wgpu::Buffer,
    /// Key rows `[rows, D]` in `dtype` (f16 packed in u32 pairs, or f32).
    pub keys: &'a wgpu::Buffer,
    /// `[B, 2]` u32: (first key row of sequence b in `keys`, T_b).
    pub seq: &'a wgpu::Buffer,
    /// `[B, score_stride]` f32 output; only `s < T_b` is written.
    pub scores: &'a wgpu::Buffer,
    pub b0: u32,
    pub batch: u32,
    /// The largest T_b among the sequences (sizes the grid).
    pub max_len: u32,
    pub score_stride: u32,
}

/// What the indexer can be built for: `heads` (H_I) 8 ..= 64 in eights (a thread owns 8 heads),
/// `dim` (d_I) 32 ..= 1024 in 32s (the f16 chunk), keys stored as `dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexerShape {
    pub heads: u32,
    pub dim: u32,
    pub dtype: Dtype,
}

impl IndexerShape {
    pub fn validate(&self) -> Result<()> {
        crate::config::check(self.heads, "index_heads", 8, 64, 8)?;
        crate::config::check(self.dim, "index_head_dim", 32, 1024, 32)
    }
}

impl Indexer {
    pub fn new(ctx: &GpuContext, shape: &IndexerShape) -> Result<Self> {
        shape.validate()?;
        let IndexerShape { heads, dim, dtype } = *shape;
        let pipeline = ctx.pipeline(
            "indexer",
            crate::shaders::INDEXER,
            "main",
            &[("KEYS_F16", (dtype == Dtype::F16) as u32 as f64)],
        )?;
        Ok(Indexer {
            pipeline,
            heads,
            dim,
            dtype,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &IndexerArgs) -> Dispatch {
        let params = Params::new(self.heads, self.dim, a);
        let grid = [a.max_len.div_ceil(KEYS_PER_WG), a.batch, 1];
        dispatch(
            ctx,
            &self.pipeline,
            "indexer",
            &params,
            &[a.q, a.w, a.keys, a.seq, a.scores],
            grid,
        )
    }

    /// FLOPs of one call: a multiply-add per (head, dim, key), plus ReLU·w and the head sum.
    pub fn flops(&self, total_keys: u64) -> u64 {
        total_keys * self.heads as u64 * (2 * self.dim as u64 + 3)
    }

    /// Bytes one call must move at least: every key once, every score written once.
    pub fn bytes(&self, total_keys: u64) -> u64 {
        total_keys * (self.dim as u64 * self.dtype.bytes() + 4)
    }
}
