//! A 64-bit fingerprint of a buffer's bits, summed over steps (order-independent).
//! Shader: `shaders/digest.wgsl`. Reference: [`crate::reference::digest`].

use super::{Dispatch, dispatch};
use crate::error::Result;
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    words: u32,
    slot: u32,
    salt: u32,
    words2: u32,
}

#[derive(Debug)]
pub struct Digest {
    pipeline: wgpu::ComputePipeline,
}

/// Two digests in one dispatch: `data`'s first `words` u32 words into slot `slot` of `digest`
/// `[slots, 2]` u32 (with `salt`), and `data2`'s `words2` into slot `slot + 1` (with `salt + 1`),
/// at the step number in `clock[0]`.
pub struct DigestArgs<'a> {
    pub clock: &'a wgpu::Buffer,
    pub data: &'a wgpu::Buffer,
    pub words: u32,
    pub data2: &'a wgpu::Buffer,
    pub words2: u32,
    pub digest: &'a wgpu::Buffer,
    pub slot: u32,
    pub salt: u32,
}

impl Digest {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let pipeline = ctx.pipeline("digest", crate::shaders::DIGEST, "main", &[])?;
        Ok(Digest { pipeline })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &DigestArgs) -> Dispatch {
        let params = Params {
            words: a.words,
            slot: a.slot,
            salt: a.salt,
            words2: a.words2,
        };
        dispatch(
            ctx,
            &self.pipeline,
            "digest",
            &params,
            &[a.clock, a.data, a.digest, a.data2],
            super::grid_2d(a.words.div_ceil(256) + a.words2.div_ceil(256)),
        )
    }
}
