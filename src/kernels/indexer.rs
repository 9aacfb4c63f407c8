//! Lightning indexer: `index_score[b, s] = Σ_j w[b, j] · ReLU(q[b, j, :] · k_b[s, :])`.
//! Shaders: `shaders/indexer.wgsl` (the f32 FMA units) and `shaders/indexer_coop.wgsl` (the
//! tensor cores, f16 keys, q rounded to f16). Reference: [`crate::reference::indexer`].
//!
//! FP8 keys (issue 13) are the model's own indexer, DeepSeek's `fp8_index`: `index_score[b, s] =
//! k_s · Σ_j (w[b, j] · q_s[b, j]) · ReLU(q̂[b, j, :] · k̂_s)`, q quantised per head (ue8m0) before
//! the kernel as the model does, over the FP8 key cache ([`crate::reference::fp8::pack_index_cache`]: R · D e4m3
//! bytes, then R f32 scales): both kernels with `KEYS_FP8` (version 1: `indexer_fp8.wgsl`,
//! [`super::IndexerNaive`]). Reference:
//! [`crate::reference::fp8::fp8_index_score`], equal to the indexer on the dequantised values.

use super::{Dispatch, dispatch};
use crate::config::Dtype;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, MatrixPath};

/// Keys per workgroup of the FMA kernels (KEYS_PER_WG in `indexer.wgsl`, `indexer_fp8.wgsl`,
/// `indexer_naive.wgsl`).
pub const KEYS_PER_WG: u32 = 256;
/// Keys per workgroup of the coop kernel (KEYS_PER_WG in `indexer_coop.wgsl`).
pub const COOP_KEYS_PER_WG: u32 = 128;

/// The uniform both indexer kernels (tuned and version 1) read.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Params {
    heads: u32,
    dim: u32,
    b0: u32,
    score_stride: u32,
    key_rows: u32,
    q_rows: u32,
    _pad: [u32; 2],
}

impl Params {
    /// The uniform of a dispatch over `a`'s sequences with keys stored as `dtype`. FP8: the key
    /// cache's keys and the query cache's rows are counted from the buffers' sizes (which may
    /// carry < 16 bytes of padding).
    pub(super) fn new(heads: u32, dim: u32, dtype: Dtype, a: &IndexerArgs) -> Self {
        let row_bytes = dtype.key_bytes(dim);
        let rows = |buf: &wgpu::Buffer| match dtype {
            Dtype::Fp8 => (buf.size() / row_bytes) as u32,
            _ => 0,
        };
        Params {
            heads,
            dim,
            b0: a.b0,
            score_stride: a.score_stride,
            key_rows: rows(a.keys),
            q_rows: rows(a.q),
            _pad: [0; 2],
        }
    }
}

/// The workgroup memory of `indexer_coop.wgsl`: Q [64][40] and K [128][40] f16, 8 × 256 f32 of
/// epilogue staging and 64 f32 weights.
const COOP_WORKGROUP_BYTES: u32 = (64 * 40 + 128 * 40) * 2 + 8 * 256 * 4 + 64 * 4;

/// The uniform-like table of a gather fused into the coop indexer's dispatch
/// (`shaders/lib/gather.wgsl`); all zero for a plain dispatch.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GatherParams {
    row_vecs: u32,
    k: u32,
    slots: u32,
    capacity: u32,
    gb0: u32,
    per_seq: u32,
    pub(crate) gather_wgs: u32,
    tiles: u32,
    index_wgs: u32,
    host_b0: u32,
    _pad: [u32; 2],
}

/// Gather workgroups of a fused dispatch, in all: a quarter of an H200's SMs (each holds at
/// most two of this pipeline's workgroups, so every gathering one halves an SM for the indexer).
pub const FUSED_GATHER_WORKGROUPS: u32 = 32;

/// A zero-copy gather to run inside an indexer dispatch ([`Indexer::bind_with_gather`]): the
/// missed rows of sequences `b0 .. b0 + batch` (one host-store group), as `transfer.wgsl`'s
/// gather moves them. It must share no buffer with the indexer's work.
pub struct FusedGather<'a> {
    /// `[B, k]` (token, slot) and `[B]` (misses, hits) from the resolve.
    pub copies: &'a wgpu::Buffer,
    pub counts: &'a wgpu::Buffer,
    /// The host-store group holding these sequences (`capacity` rows each), and the group's
    /// first sequence (≤ `b0`).
    pub host: &'a wgpu::Buffer,
    pub host_b0: u32,
    /// `[B, slots]` rows: one layer's pool.
    pub pool: &'a wgpu::Buffer,
    pub row_bytes: u64,
    pub k: u32,
    pub slots: u32,
    pub capacity: u32,
    pub b0: u32,
    pub batch: u32,
}

impl FusedGather<'_> {
    /// `lib/gather.wgsl`'s table for a dispatch whose other job has `tiles` workgroups a
    /// sequence and `work_wgs` in all. Few gather workgroups, each striding over many rows:
    /// every workgroup of the dispatch holds a slot the other job could use (in the indexer, one
    /// per 256 vec4s of k rows hid 2–7% on the H200, 128 in all 4–11%).
    pub(crate) fn table(&self, tiles: u32, work_wgs: u32) -> GatherParams {
        let row_vecs = (self.row_bytes / 16) as u32;
        let per_seq = FUSED_GATHER_WORKGROUPS
            .div_ceil(self.batch.max(1))
            .clamp(1, (self.k * row_vecs).div_ceil(256).max(1));
        GatherParams {
            row_vecs,
            k: self.k,
            slots: self.slots,
            capacity: self.capacity,
            gb0: self.b0,
            per_seq,
            gather_wgs: per_seq * self.batch,
            tiles,
            index_wgs: work_wgs,
            host_b0: self.host_b0,
            _pad: [0; 2],
        }
    }
}

/// What a plain coop dispatch binds where a fused gather would go: a zero table and two small
/// buffers (read-only and read-write ones cannot be the same buffer in one dispatch).
#[derive(Debug)]
struct NoGather {
    params: wgpu::Buffer,
    read: wgpu::Buffer,
    write: wgpu::Buffer,
    /// The pipeline with `FUSED` (the plain one compiles the gather out), compiled by the first
    /// [`Indexer::bind_with_gather`]: most indexers never fuse a gather.
    fused: std::sync::OnceLock<wgpu::ComputePipeline>,
}

#[derive(Debug)]
pub struct Indexer {
    pipeline: wgpu::ComputePipeline,
    no_gather: Option<NoGather>,
    /// The kernel's: `Fma` (`indexer.wgsl`), or `Coop` (`indexer_coop.wgsl`: f16 keys with q
    /// rounded to f16, or FP8 keys).
    pub path: MatrixPath,
    pub heads: u32,
    pub dim: u32,
    pub dtype: Dtype,
}

/// Buffers of one indexer dispatch over sequences `b0 .. b0 + batch`.
pub struct IndexerArgs<'a> {
    /// `[B, H, D]` f32 queries q_I; with FP8 keys, the queries quantised as the model does (one
    /// ue8m0 scale a head) into the FP8 key cache's layout
    /// ([`crate::reference::fp8::pack_index_cache`] of the `[B · H, D]` rows; on the GPU
    /// [`crate::kernels::Fp8Quant`] with [`crate::kernels::fp8_quant::Fp8RowShape::key_cache`]).
    pub q: &'a wgpu::Buffer,
    /// `[B, H]` f32 head weights (scales folded in).
    pub w: &'a wgpu::Buffer,
    /// Key rows `[rows, D]` in `dtype` (f16 packed in u32 pairs, f32, or the FP8 key cache).
    pub keys: &'a wgpu::Buffer,
    /// `[B, 2]` u32: (first key row of sequence b in `keys`, T_b).
    pub seq: &'a wgpu::Buffer,
    /// `[B, score_stride]` f32 output; only `s < T_b` is written.
    pub scores: &'a wgpu::Buffer,
    pub b0: u32,
    pub batch: u32,
    /// The largest T_b among the sequences (sizes the grid).
    pub max_len: u32,
    pub score_stride: u32,
}

/// What the indexer can be built for: `heads` (H_I) 8 ..= 64 in eights (a thread owns 8 heads),
/// `dim` (d_I) 32 ..= 1024 in 32s (the f16 chunk; FP8 keys: ≤ 128, one scale a key), keys
/// stored as `dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexerShape {
    pub heads: u32,
    pub dim: u32,
    pub dtype: Dtype,
}

impl IndexerShape {
    pub fn validate(&self) -> Result<()> {
        crate::config::check(self.heads, "index_heads", 8, 64, 8)?;
        match self.dtype {
            Dtype::Fp8 => crate::config::check(self.dim, "index_head_dim (fp8 keys)", 32, 128, 32),
            _ => crate::config::check(self.dim, "index_head_dim", 32, 1024, 32),
        }
    }

    /// Bytes of one key.
    pub fn key_bytes(&self) -> u64 {
        self.dtype.key_bytes(self.dim)
    }
}

impl Indexer {
    /// The indexer of `shape` on the context's matrix path (f32 keys on the FMA units:
    /// `kernels::rows_path`).
    pub fn new(ctx: &GpuContext, shape: &IndexerShape) -> Result<Self> {
        let path = super::rows_path(ctx, shape.dtype, COOP_WORKGROUP_BYTES);
        Self::with(ctx, shape, path)
    }

    /// The kernel of a given path (for tests and benchmarks): an error where the context or the
    /// shape cannot take it.
    pub fn with(ctx: &GpuContext, shape: &IndexerShape, path: MatrixPath) -> Result<Self> {
        shape.validate()?;
        let IndexerShape { heads, dim, dtype } = *shape;
        let fp8 = dtype == Dtype::Fp8;
        let pipeline = match path {
            // FP8 keys are staged as f16 pairs
            MatrixPath::Fma => ctx.pipeline(
                "indexer",
                crate::shaders::INDEXER,
                "main",
                &[
                    ("KEYS_F16", (dtype != Dtype::F32) as u32 as f64),
                    ("KEYS_FP8", fp8 as u32 as f64),
                ],
            )?,
            MatrixPath::Coop => {
                let (what, field) = ("the coop indexer", "coop indexer keys");
                super::require_coop_rows(ctx, what, COOP_WORKGROUP_BYTES, field, dtype)?;
                coop_pipeline(ctx, dtype, false)?
            }
        };
        let no_gather = match path {
            MatrixPath::Coop => Some(NoGather {
                params: ctx.upload("no gather", &[GatherParams::default()])?,
                read: ctx.storage("no gather (read)", 16)?,
                write: ctx.storage("no gather (write)", 16)?,
                fused: std::sync::OnceLock::new(),
            }),
            MatrixPath::Fma => None,
        };
        Ok(Indexer {
            pipeline,
            no_gather,
            path,
            heads,
            dim,
            dtype,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &IndexerArgs) -> Dispatch {
        let params = Params::new(self.heads, self.dim, self.dtype, a);
        let grid = [self.tiles(a.max_len), a.batch, 1];
        let io = [a.q, a.w, a.keys, a.seq, a.scores];
        match &self.no_gather {
            // the coop kernel's bindings of a fused gather, idle
            Some(n) => {
                let g = [&n.params, &n.read, &n.read, &n.read, &n.write];
                self.coop_dispatch(ctx, &self.pipeline, &params, &io, &g, grid)
            }
            None => dispatch(ctx, &self.pipeline, "indexer", &params, &io, grid),
        }
    }

    /// The coop kernel's dispatch with a zero-copy gather in it (`shaders/indexer_gather.wgsl`):
    /// the first workgroups gather `g`'s missed rows, the rest run the indexer of `a`, so the bus
    /// and the SMs work at once. The two must touch different sequences.
    pub fn bind_with_gather(
        &self,
        ctx: &GpuContext,
        a: &IndexerArgs,
        g: &FusedGather,
    ) -> Result<Dispatch> {
        let Some(n) = &self.no_gather else {
            return Err(Error::config(
                "indexer kernel with a fused gather",
                self.path,
                "coop",
            ));
        };
        let tiles = self.tiles(a.max_len);
        let table = g.table(tiles, tiles * a.batch);
        let table_buf = ctx.upload("fused gather", &[table])?;
        let params = Params::new(self.heads, self.dim, self.dtype, a);
        let io = [a.q, a.w, a.keys, a.seq, a.scores];
        let gather = [&table_buf, g.copies, g.counts, g.host, g.pool];
        let grid = super::grid_2d(table.gather_wgs + table.index_wgs);
        let fused = match n.fused.get() {
            Some(p) => p,
            None => {
                let p = coop_pipeline(ctx, self.dtype, true)?;
                n.fused.get_or_init(|| p)
            }
        };
        let mut d = self.coop_dispatch(ctx, fused, &params, &io, &gather, grid);
        d.keep(table_buf);
        Ok(d)
    }

    /// The coop kernel's dispatch of `pipeline` (plain or fused): the indexer's buffers `io`,
    /// then the gather's.
    fn coop_dispatch(
        &self,
        ctx: &GpuContext,
        pipeline: &wgpu::ComputePipeline,
        params: &Params,
        io: &[&wgpu::Buffer; 5],
        gather: &[&wgpu::Buffer; 5],
        grid: [u32; 3],
    ) -> Dispatch {
        let buffers: Vec<(u32, &wgpu::Buffer)> = io
            .iter()
            .chain(gather)
            .enumerate()
            .map(|(i, b)| (i as u32 + 1, *b))
            .collect();
        super::dispatch_steps(
            ctx,
            "indexer",
            params,
            &[super::StepSpec {
                pipeline,
                buffers: &buffers,
                workgroups: grid,
            }],
        )
    }

    /// Workgroups a sequence of `len` keys takes (the grid's x): the kernel's tiles.
    pub fn tiles(&self, len: u32) -> u32 {
        len.div_ceil(self.keys_per_workgroup())
    }

    /// Keys a workgroup of this kernel takes.
    pub fn keys_per_workgroup(&self) -> u32 {
        match self.path {
            MatrixPath::Fma => KEYS_PER_WG,
            MatrixPath::Coop => COOP_KEYS_PER_WG,
        }
    }

    /// FLOPs of one call: a multiply-add per (head, dim, key), plus ReLU·w and the head sum.
    pub fn flops(&self, total_keys: u64) -> u64 {
        total_keys * self.heads as u64 * (2 * self.dim as u64 + 3)
    }

    /// Bytes one call must move at least: every key once, every score written once.
    pub fn bytes(&self, total_keys: u64) -> u64 {
        total_keys * (self.key_bytes() + 4)
    }

    /// Bytes of one key.
    pub fn key_bytes(&self) -> u64 {
        self.dtype.key_bytes(self.dim)
    }
}

/// The coop kernel's pipeline for keys stored as `dtype`; with `fused`, the gather
/// (`indexer_gather.wgsl`) compiled in.
fn coop_pipeline(ctx: &GpuContext, dtype: Dtype, fused: bool) -> Result<wgpu::ComputePipeline> {
    let label = if fused {
        "indexer_coop fused"
    } else {
        "indexer_coop"
    };
    let constants = [
        ("KEYS_FP8", (dtype == Dtype::Fp8) as u32 as f64),
        ("FUSED", fused as u32 as f64),
    ];
    ctx.pipeline(label, crate::shaders::INDEXER_COOP, "main", &constants)
}
