//! The lightning indexer, version 1: one thread per (sequence, key), the equation as a loop.
//! Shader: `shaders/indexer_naive.wgsl`. Reference: [`crate::reference::indexer`]. Same
//! arguments as the tuned [`super::Indexer`]; read this one first.

use super::indexer::{IndexerArgs, IndexerShape, Params};
use super::{Dispatch, dispatch};
use crate::config::Dtype;
use crate::error::Result;
use crate::gpu::GpuContext;

#[derive(Debug)]
pub struct IndexerNaive {
    pipeline: wgpu::ComputePipeline,
    pub heads: u32,
    pub dim: u32,
}

impl IndexerNaive {
    /// The tuned kernel's shapes (it could take more: any head count, any even width), f16 or
    /// f32 keys (the FP8 indexer's version 1 is `shaders/indexer_fp8.wgsl`, [`super::Indexer`]'s
    /// FMA kernel for FP8 keys).
    pub fn new(ctx: &GpuContext, shape: &IndexerShape) -> Result<Self> {
        shape.validate()?;
        let IndexerShape { heads, dim, dtype } = *shape;
        if dtype == Dtype::Fp8 {
            return Err(crate::error::Error::config(
                "version-1 indexer keys",
                dtype,
                "f16, f32",
            ));
        }
        let pipeline = ctx.pipeline(
            "indexer_naive",
            crate::shaders::INDEXER_NAIVE,
            "main",
            &[("KEYS_F16", (dtype == Dtype::F16) as u32 as f64)],
        )?;
        Ok(IndexerNaive {
            pipeline,
            heads,
            dim,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &IndexerArgs) -> Dispatch {
        let params = Params::new(self.heads, self.dim, 1, a);
        dispatch(
            ctx,
            &self.pipeline,
            "indexer_naive",
            &params,
            &[a.q, a.w, a.keys, a.seq, a.scores],
            [a.max_len.div_ceil(256), a.batch, 1],
        )
    }
}
