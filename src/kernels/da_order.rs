//! ESS's DA on one queue: each sequence's slot ids ordered hits first, then misses, then −1
//! (each kind in top-k order), and how many hits lead, for [`super::SparseMla::bind_da`].
//! Shader: `shaders/da_order.wgsl`. Reference: [`crate::reference::da_order`].

use super::{Dispatch, dispatch};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    slots: u32,
    b0: u32,
    _pad: u32,
}

/// Largest k and pool the shader's one workgroup a sequence takes (8 ids a thread; a bitmap of
/// 512 words): the top-k kernel's and the resolve's limits.
pub const MAX_K: u32 = 2048;
pub const MAX_SLOTS: u32 = 16_384;

#[derive(Debug)]
pub struct DaOrder {
    pipeline: wgpu::ComputePipeline,
}

/// Buffers of one dispatch over sequences `b0 .. b0 + batch`.
pub struct DaOrderArgs<'a> {
    /// `[B, k]` i32 slot ids (−1: none), `[B, k]` (token, slot) copies and `[B]` (misses, hits)
    /// from the resolve.
    pub slot_ids: &'a wgpu::Buffer,
    pub copies: &'a wgpu::Buffer,
    pub counts: &'a wgpu::Buffer,
    /// `[B, k]` i32 out: the ids reordered.
    pub da_ids: &'a wgpu::Buffer,
    /// `[B, 2]` u32 out: (first pool row b · slots, hits leading).
    pub da_seq: &'a wgpu::Buffer,
    pub k: u32,
    pub slots: u32,
    pub b0: u32,
    pub batch: u32,
}

impl DaOrder {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let pipeline = ctx.pipeline("da_order", crate::shaders::DA_ORDER, "order", &[])?;
        Ok(DaOrder { pipeline })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &DaOrderArgs) -> Result<Dispatch> {
        if a.k > MAX_K || a.slots > MAX_SLOTS {
            return Err(Error::config(
                "DA order",
                format!("k {} and {} slots", a.k, a.slots),
                format!("k ≤ {MAX_K}, slots ≤ {MAX_SLOTS}"),
            ));
        }
        let params = Params {
            k: a.k,
            slots: a.slots,
            b0: a.b0,
            _pad: 0,
        };
        Ok(dispatch(
            ctx,
            &self.pipeline,
            "da_order",
            &params,
            &[a.slot_ids, a.copies, a.counts, a.da_ids, a.da_seq],
            [a.batch, 1, 1],
        ))
    }
}
