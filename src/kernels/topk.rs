//! Exact per-row top-k, sorted by (score desc, index asc), `-1` past `T_b`.
//! Shader: `shaders/topk.wgsl`. Reference: [`crate::reference::topk`].

use super::{Dispatch, dispatch};
use crate::error::Result;
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    score_stride: u32,
    b0: u32,
    _pad: u32,
}

#[derive(Debug)]
pub struct TopK {
    pipeline: wgpu::ComputePipeline,
    pub k: u32,
    /// Threads per workgroup (one workgroup per row).
    pub workgroup_size: u32,
}

pub struct TopKArgs<'a> {
    /// `[B, score_stride]` f32.
    pub scores: &'a wgpu::Buffer,
    /// `[B, 2]` u32: (first key row, T_b); only T_b is read.
    pub seq: &'a wgpu::Buffer,
    /// `[B, k]` i32 output.
    pub topk_indices: &'a wgpu::Buffer,
    pub b0: u32,
    pub batch: u32,
    pub score_stride: u32,
}

/// Largest k the top-k kernel sorts in workgroup memory.
pub const MAX_TOPK: u32 = 2048;

/// What the top-k kernel can be built for: k ids per row, `1 ..= MAX_TOPK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopKShape {
    pub k: u32,
}

impl TopKShape {
    pub fn validate(&self) -> Result<()> {
        crate::config::check(self.k, "topk", 1, MAX_TOPK, 1)
    }
}

impl TopK {
    pub fn new(ctx: &GpuContext, shape: &TopKShape) -> Result<Self> {
        shape.validate()?;
        let k = shape.k;
        let workgroup_size = ctx.max_invocations.min(1024);
        let pipeline = ctx.pipeline(
            "topk",
            crate::shaders::TOPK,
            "main",
            &[("WG", workgroup_size as f64)],
        )?;
        Ok(TopK {
            pipeline,
            k,
            workgroup_size,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &TopKArgs) -> Dispatch {
        let params = Params {
            k: self.k,
            score_stride: a.score_stride,
            b0: a.b0,
            _pad: 0,
        };
        dispatch(
            ctx,
            &self.pipeline,
            "topk",
            &params,
            &[a.scores, a.seq, a.topk_indices],
            [a.batch, 1, 1],
        )
    }

    /// Bytes one call must move at least: every score read once, k indices written.
    pub fn bytes(&self, total_scores: u64, rows: u64) -> u64 {
        total_scores * 4 + rows * self.k as u64 * 4
    }
}
