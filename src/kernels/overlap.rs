//! Step-to-step top-k overlap per sequence, accumulated on the GPU.
//! Shader: `shaders/overlap.wgsl`. Reference: [`crate::reference::topk_overlap`].

use super::{Dispatch, dispatch};
use crate::error::Result;
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    capacity: u32,
    b0: u32,
    _pad: u32,
}

#[derive(Debug)]
pub struct Overlap {
    pipeline: wgpu::ComputePipeline,
}

/// Buffers of one overlap dispatch over sequences `b0 .. b0 + batch`.
pub struct OverlapArgs<'a> {
    /// `[1]` u32: the step number t (from 1).
    pub clock: &'a wgpu::Buffer,
    /// `[B, k]` i32 this step's top-k.
    pub topk_indices: &'a wgpu::Buffer,
    /// `[B, capacity]` u32, zero at the start: the last step that selected each token.
    pub marks: &'a wgpu::Buffer,
    /// `[B]` f32, zero at the start: Σ over steps ≥ 2 of |K_{t−1} ∩ K_t| / max(|K_t|, 1).
    pub overlap_sum: &'a wgpu::Buffer,
    pub k: u32,
    pub capacity: u32,
    pub b0: u32,
    pub batch: u32,
}

impl Overlap {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let pipeline = ctx.pipeline("overlap", crate::shaders::OVERLAP, "main", &[])?;
        Ok(Overlap { pipeline })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &OverlapArgs) -> Dispatch {
        let params = Params {
            k: a.k,
            capacity: a.capacity,
            b0: a.b0,
            _pad: 0,
        };
        dispatch(
            ctx,
            &self.pipeline,
            "overlap",
            &params,
            &[a.clock, a.topk_indices, a.marks, a.overlap_sum],
            [a.batch, 1, 1],
        )
    }
}
