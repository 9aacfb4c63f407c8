//! The lightning indexer over FP8 keys, as DeepSeek-V3.2's `fp8_index` computes it (issue 13,
//! version 1): `index_score[b, s] = k_s · Σ_h (w[b, h] · q_s[b, h]) · ReLU(q̂[b, h] · k̂_s)`, the
//! keys in the production layout ([`crate::reference::fp8::pack_index_key`]: D e4m3 bytes and
//! one f32 scale), the queries quantised per head in the kernel as the model does.
//! Shader: `shaders/indexer_fp8.wgsl` (+ `lib/fp8.wgsl`). Reference:
//! [`crate::reference::fp8::fp8_index_score`] on [`crate::reference::fp8::quantize_rows`]'s
//! queries.

use super::indexer::{IndexerArgs, KEYS_PER_WG, Params};
use super::{Dispatch, dispatch};
use crate::error::Result;
use crate::gpu::GpuContext;

/// What the FP8 indexer can be built for: `heads` 1 ..= 64, `dim` 16 ..= 128 in 16s (one scale a
/// head and a key: the model's 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexerFp8Shape {
    pub heads: u32,
    pub dim: u32,
}

impl IndexerFp8Shape {
    pub fn validate(&self) -> Result<()> {
        crate::config::check(self.heads, "index_heads", 1, 64, 1)?;
        crate::config::check(self.dim, "index_head_dim (fp8 keys)", 16, 128, 16)
    }

    /// Bytes of a packed key ([`crate::reference::fp8::index_key_bytes`]).
    pub fn key_bytes(&self) -> u64 {
        crate::reference::fp8::index_key_bytes(self.dim as usize) as u64
    }
}

#[derive(Debug)]
pub struct IndexerFp8 {
    pipeline: wgpu::ComputePipeline,
    pub shape: IndexerFp8Shape,
}

impl IndexerFp8 {
    pub fn new(ctx: &GpuContext, shape: &IndexerFp8Shape) -> Result<Self> {
        shape.validate()?;
        let pipeline = ctx.pipeline("indexer_fp8", crate::shaders::INDEXER_FP8, "main", &[])?;
        Ok(IndexerFp8 {
            pipeline,
            shape: *shape,
        })
    }

    /// The dispatch over `a`'s sequences; `a.keys` holds packed keys.
    pub fn bind(&self, ctx: &GpuContext, a: &IndexerArgs) -> Dispatch {
        let params = Params::new(self.shape.heads, self.shape.dim, a);
        let grid = [a.max_len.div_ceil(KEYS_PER_WG), a.batch, 1];
        dispatch(
            ctx,
            &self.pipeline,
            "indexer_fp8",
            &params,
            &[a.q, a.w, a.keys, a.seq, a.scores],
            grid,
        )
    }

    /// FLOPs of one call: a multiply-add per (head, dim, key), plus ReLU·w and the head sum (as
    /// [`super::Indexer::flops`]).
    pub fn flops(&self, total_keys: u64) -> u64 {
        total_keys * self.shape.heads as u64 * (2 * self.shape.dim as u64 + 3)
    }

    /// Bytes one call must move at least: every packed key once, every score written once.
    pub fn bytes(&self, total_keys: u64) -> u64 {
        total_keys * (self.shape.key_bytes() + 4)
    }
}
