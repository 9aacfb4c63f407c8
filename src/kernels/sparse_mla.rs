//! Sparse MLA decode, absorbed (MQA) mode: every head attends to the same k latent rows.
//! Shader: `shaders/sparse_mla.wgsl` (entry points `scores` then `attend`, one dispatch).
//! Reference: [`crate::reference::sparse_mla`].

use super::{Dispatch, StepSpec, dispatch_steps};
use crate::config::{Config, Dtype};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// `scores`: heads and ids per workgroup (HT, RT in the shader).
pub const SCORE_HEADS_PER_WG: u32 = 128;
pub const SCORE_IDS_PER_WG: u32 = 64;
/// `attend`: heads per workgroup (HB in the shader).
pub const ATTEND_HEADS_PER_WG: u32 = 32;

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
    scores: wgpu::ComputePipeline,
    attend: wgpu::ComputePipeline,
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
    /// `[B, H, topk]` f32 working space for the scores ([`SparseMla::scratch_bytes`]).
    pub scratch: &'a wgpu::Buffer,
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
            return Err(Error::config("kv_lora_rank", kv, "64 ..= 512, a multiple of 64"));
        }
        if !rope.is_multiple_of(32) {
            return Err(Error::config("qk_rope_head_dim", rope, "a multiple of 32"));
        }
        let src = include_str!("../../shaders/sparse_mla.wgsl");
        let constants = [
            ("KV", kv as f64),
            ("ROPE", rope as f64),
            ("ROWS_F16", (cfg.dtype == Dtype::F16) as u32 as f64),
        ];
        Ok(SparseMla {
            scores: ctx.pipeline("sparse_mla scores", src, "scores", &constants)?,
            attend: ctx.pipeline("sparse_mla attend", src, "attend", &constants)?,
            heads: cfg.heads,
            kv,
            rope,
            topk: cfg.topk,
            dtype: cfg.dtype,
            softmax_scale: cfg.softmax_scale(),
        })
    }

    /// Bytes of the `scratch` buffer for `batch` sequences.
    pub fn scratch_bytes(&self, batch: u32) -> u64 {
        batch as u64 * self.heads as u64 * self.topk as u64 * 4
    }

    pub fn bind(&self, ctx: &GpuContext, a: &SparseMlaArgs) -> Dispatch {
        let params = Params {
            heads: self.heads,
            topk: self.topk,
            b0: a.b0,
            softmax_scale: self.softmax_scale,
        };
        let score_grid = [
            self.topk.div_ceil(SCORE_IDS_PER_WG),
            self.heads.div_ceil(SCORE_HEADS_PER_WG),
            a.batch,
        ];
        let attend_grid = [self.heads.div_ceil(ATTEND_HEADS_PER_WG), a.batch, 1];
        dispatch_steps(
            ctx,
            "sparse_mla",
            &params,
            &[
                StepSpec {
                    pipeline: &self.scores,
                    buffers: &[(1, a.q), (2, a.ids), (3, a.seq), (4, a.rows), (5, a.scratch)],
                    workgroups: score_grid,
                },
                StepSpec {
                    pipeline: &self.attend,
                    buffers: &[(2, a.ids), (3, a.seq), (4, a.rows), (5, a.scratch), (6, a.o_lat), (7, a.lse)],
                    workgroups: attend_grid,
                },
            ],
        )
    }

    /// FLOPs per call: per (sequence, head, row) a (KV+ROPE)-dot and a KV-wide accumulate.
    pub fn flops(&self, batch: u64) -> u64 {
        batch * self.heads as u64 * self.topk as u64 * 2 * (2 * self.kv as u64 + self.rope as u64)
    }

    /// Bytes at least: every selected row once per sequence, q in, o_lat and lse out. (The
    /// scores' round trip through `scratch` is the implementation's, not the problem's.)
    pub fn bytes(&self, batch: u64) -> u64 {
        let dq = (self.kv + self.rope) as u64;
        let per_seq_rows = self.topk as u64 * (dq * self.dtype.bytes() + 4);
        let per_seq_heads = self.heads as u64 * (dq * 4 + self.kv as u64 * 4 + 4);
        batch * (per_seq_rows + per_seq_heads)
    }
}
