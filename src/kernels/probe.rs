//! Probe kernels for the roofline: memory copy bandwidth and f32 FMA rate.
//! Shader: `shaders/probe.wgsl`.

use super::{Dispatch, dispatch};
use crate::error::Result;
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

#[derive(Debug)]
pub struct Probe {
    copy: wgpu::ComputePipeline,
    fma: wgpu::ComputePipeline,
}

impl Probe {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let src = crate::shaders::PROBE;
        Ok(Probe {
            copy: ctx.pipeline("probe copy", src, "copy", &[])?,
            fma: ctx.pipeline("probe fma", src, "fma_rate", &[])?,
        })
    }

    /// Copy `src` to `dst` (equal sizes, multiple of 16 bytes) with a grid-stride loop.
    pub fn copy(
        &self,
        ctx: &GpuContext,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        workgroups: u32,
    ) -> Dispatch {
        let n = (src.size().min(dst.size()) / 16) as u32;
        dispatch(
            ctx,
            &self.copy,
            "probe copy",
            &Params { n, _pad: [0; 3] },
            &[src, dst],
            [workgroups, 1, 1],
        )
    }

    /// `workgroups · 256` threads, each `2 · 64 · iters` FLOPs. `dst` must hold one vec4 per thread.
    pub fn fma(
        &self,
        ctx: &GpuContext,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        workgroups: u32,
        iters: u32,
    ) -> Dispatch {
        dispatch(
            ctx,
            &self.fma,
            "probe fma",
            &Params {
                n: iters,
                _pad: [0; 3],
            },
            &[src, dst],
            [workgroups, 1, 1],
        )
    }
}
