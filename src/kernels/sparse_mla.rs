//! Sparse MLA decode, absorbed (MQA) mode: every head attends to the same k latent rows.
//! Shader: `shaders/sparse_mla.wgsl`. Reference: [`crate::reference::sparse_mla`].

use super::{Dispatch, dispatch};
use crate::config::{Config, Dtype};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// Heads per workgroup (HB in the shader).
pub const HEADS_PER_WG: u32 = 32;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    heads: u32,
    topk: u32,
    b0: u32,
    softmax_scale: f32,
}

#[derive(Debug)]
pub struct SparseMla {
    pipeline: wgpu::ComputePipeline,
    pub heads: u32,
    pub kv: u32,
    pub rope: u32,
    pub topk: u32,
    pub dtype: Dtype,
    pub softmax_scale: f32,
}

pub struct SparseMlaArgs<'a> {
    /// `[B, H, KV + ROPE]` f32: q_abs ‖ q_pe.
    pub q: &'a wgpu::Buffer,
    /// `[B, topk]` i32 ids, -1 = none; id i of sequence b reads row `seq[2b] + i`.
    pub ids: &'a wgpu::Buffer,
    /// `[B, 2]` u32: (first row of sequence b in `rows`, unused).
    pub seq: &'a wgpu::Buffer,
    /// `[R, KV + ROPE]` latent rows c_kv ‖ k_pe in `dtype`.
    pub rows: &'a wgpu::Buffer,
    /// `[B, H, KV]` f32 output.
    pub o_lat: &'a wgpu::Buffer,
    /// `[B, H]` f32 output.
    pub lse: &'a wgpu::Buffer,
    pub b0: u32,
    pub batch: u32,
}

impl SparseMla {
    pub fn new(ctx: &GpuContext, cfg: &Config) -> Result<Self> {
        let (kv, rope) = (cfg.kv_lora_rank, cfg.qk_rope_head_dim);
        if kv == 0 || !kv.is_multiple_of(64) || kv > 512 {
            return Err(Error::config(
                "kv_lora_rank",
                kv,
                "64 ..= 512, a multiple of 64",
            ));
        }
        if !rope.is_multiple_of(32) {
            return Err(Error::config("qk_rope_head_dim", rope, "a multiple of 32"));
        }
        let pipeline = ctx.pipeline(
            "sparse_mla",
            include_str!("../../shaders/sparse_mla.wgsl"),
            "main",
            &[
                ("KV", kv as f64),
                ("ROPE", rope as f64),
                ("ROWS_F16", (cfg.dtype == Dtype::F16) as u32 as f64),
            ],
        )?;
        Ok(SparseMla {
            pipeline,
            heads: cfg.heads,
            kv,
            rope,
            topk: cfg.topk,
            dtype: cfg.dtype,
            softmax_scale: cfg.softmax_scale(),
        })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &SparseMlaArgs) -> Dispatch {
        let params = Params {
            heads: self.heads,
            topk: self.topk,
            b0: a.b0,
            softmax_scale: self.softmax_scale,
        };
        let grid = [self.heads.div_ceil(HEADS_PER_WG), a.batch, 1];
        dispatch(
            ctx,
            &self.pipeline,
            "sparse_mla",
            &params,
            &[a.q, a.ids, a.seq, a.rows, a.o_lat, a.lse],
            grid,
        )
    }

    /// FLOPs per sequence: per (head, row) a (KV+ROPE)-dot and a KV-wide accumulate.
    pub fn flops(&self, batch: u64) -> u64 {
        batch * self.heads as u64 * self.topk as u64 * 2 * (2 * self.kv as u64 + self.rope as u64)
    }

    /// Bytes at least: every selected row once per sequence, q in, o_lat and lse out.
    pub fn bytes(&self, batch: u64) -> u64 {
        let dq = (self.kv + self.rope) as u64;
        batch
            * (self.topk as u64 * (dq * self.dtype.bytes() + 4)
                + self.heads as u64 * (dq * 4 + self.kv as u64 * 4 + 4))
    }
}
