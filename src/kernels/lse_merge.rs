//! Merge two partial attention results over disjoint id sets by their log-sum-exp.
//! Shader: `shaders/lse_merge.wgsl`. Reference: [`crate::reference::lse_merge`].

use super::{Dispatch, dispatch};
use crate::error::Result;
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    _pad: [u32; 2],
}

#[derive(Debug)]
pub struct LseMerge {
    pipeline: wgpu::ComputePipeline,
}

/// `o0, o1, o`: `[rows, dim]` f32; `lse0, lse1, lse`: `[rows]` f32, rows = B·H.
pub struct LseMergeArgs<'a> {
    pub o0: &'a wgpu::Buffer,
    pub lse0: &'a wgpu::Buffer,
    pub o1: &'a wgpu::Buffer,
    pub lse1: &'a wgpu::Buffer,
    pub o: &'a wgpu::Buffer,
    pub lse: &'a wgpu::Buffer,
    pub rows: u32,
    pub dim: u32,
}

impl LseMerge {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let pipeline = ctx.pipeline("lse_merge", crate::shaders::LSE_MERGE, "main", &[])?;
        Ok(LseMerge { pipeline })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &LseMergeArgs) -> Dispatch {
        let params = Params {
            rows: a.rows,
            dim: a.dim,
            _pad: [0; 2],
        };
        let groups = (a.rows as u64 * a.dim as u64).div_ceil(256) as u32;
        let grid = super::grid_2d(groups);
        dispatch(
            ctx,
            &self.pipeline,
            "lse_merge",
            &params,
            &[a.o0, a.lse0, a.o1, a.lse1, a.o, a.lse],
            grid,
        )
    }
}
