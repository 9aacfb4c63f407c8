//! The lightning indexer, version 1: one thread per (sequence, key), the equation as a loop.
//! Shaders: `shaders/indexer_naive.wgsl`, and `shaders/indexer_fp8.wgsl` for FP8 keys. Reference: [`crate::reference::indexer`]. Same
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
    dtype: Dtype,
}

impl IndexerNaive {
    /// The tuned kernel's shapes (it could take more: any head count, any even width); FP8 keys
    /// run `shaders/indexer_fp8.wgsl`, the FP8 indexer's version 1.
    pub fn new(ctx: &GpuContext, shape: &IndexerShape) -> Result<Self> {
        shape.validate()?;
        let IndexerShape { heads, dim, dtype } = *shape;
        let pipeline = match dtype {
            Dtype::Fp8 => ctx.pipeline("indexer_fp8", crate::shaders::INDEXER_FP8, "main", &[])?,
            _ => ctx.pipeline(
                "indexer_naive",
                crate::shaders::INDEXER_NAIVE,
                "main",
                &[("KEYS_F16", (dtype == Dtype::F16) as u32 as f64)],
            )?,
        };
        Ok(IndexerNaive {
            pipeline,
            heads,
            dim,
            dtype,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &IndexerArgs) -> Dispatch {
        let params = Params::new(self.heads, self.dim, self.dtype, a);
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
