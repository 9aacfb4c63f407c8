//! Probe kernels for the roofline: memory copy bandwidth, f32 FMA rate and, on the coop matrix
//! path, the tensor cores' f16 → f32 rate. Shaders: `shaders/probe.wgsl`, `shaders/probe_coop.wgsl`.

use super::{Dispatch, dispatch};
use crate::error::Result;
use crate::gpu::{GpuContext, MatrixPath};

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
    /// Only on the coop matrix path.
    coop: Option<wgpu::ComputePipeline>,
}

/// FLOPs of one trip of the coop probe's loop in one subgroup: 8 products of 16 × 16 × 16.
pub const COOP_FLOPS_PER_TRIP: f64 = 8.0 * 2.0 * 4096.0;

impl Probe {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let src = crate::shaders::PROBE;
        let coop = match ctx.matrix {
            MatrixPath::Coop => {
                Some(ctx.pipeline("probe coop", crate::shaders::PROBE_COOP, "coop_rate", &[])?)
            }
            MatrixPath::Fma => None,
        };
        Ok(Probe {
            copy: ctx.pipeline("probe copy", src, "copy", &[])?,
            fma: ctx.pipeline("probe fma", src, "fma_rate", &[])?,
            coop,
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
        probe(ctx, &self.copy, "probe copy", src, dst, workgroups, n)
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
        probe(ctx, &self.fma, "probe fma", src, dst, workgroups, iters)
    }

    /// `workgroups · 8` subgroups, each [`COOP_FLOPS_PER_TRIP`] · `iters` FLOPs on the tensor
    /// cores; `None` off the coop path. `src` holds at least 64 vec4, `dst` one per thread.
    pub fn coop(
        &self,
        ctx: &GpuContext,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        workgroups: u32,
        iters: u32,
    ) -> Option<Dispatch> {
        let pipeline = self.coop.as_ref()?;
        Some(probe(
            ctx,
            pipeline,
            "probe coop",
            src,
            dst,
            workgroups,
            iters,
        ))
    }
}

/// One probe: `n` in the parameters, `src` and `dst` bound, a 1-D grid.
fn probe(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    workgroups: u32,
    n: u32,
) -> Dispatch {
    let params = Params { n, _pad: [0; 3] };
    dispatch(
        ctx,
        pipeline,
        label,
        &params,
        &[src, dst],
        [workgroups, 1, 1],
    )
}
