//! One step of the synthetic indexer queries' random walk, on the GPU.
//! Shader: `shaders/walk.wgsl`. Reference: [`crate::reference::walk_step`].

use super::{Dispatch, dispatch};
use crate::error::Result;
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    layer: u32,
    salt: u32,
    rho: f32,
    keep: f32,
    _pad: [u32; 3],
}

#[derive(Debug)]
pub struct Walk {
    pipeline: wgpu::ComputePipeline,
}

/// `q` `[n]` f32 moved one step with correlation `rho`, noise from (salt, layer, `clock[1]`).
pub struct WalkArgs<'a> {
    pub clock: &'a wgpu::Buffer,
    pub q: &'a wgpu::Buffer,
    pub n: u32,
    pub layer: u32,
    pub salt: u32,
    pub rho: f32,
}

impl Walk {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let pipeline = ctx.pipeline("walk", crate::shaders::WALK, "main", &[])?;
        Ok(Walk { pipeline })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &WalkArgs) -> Dispatch {
        let params = Params {
            n: a.n,
            layer: a.layer,
            salt: a.salt,
            rho: a.rho,
            keep: (1.0 - a.rho * a.rho).max(0.0).sqrt(),
            _pad: [0; 3],
        };
        dispatch(
            ctx,
            &self.pipeline,
            "walk",
            &params,
            &[a.clock, a.q],
            super::grid_2d(a.n.div_ceil(256)),
        )
    }
}
