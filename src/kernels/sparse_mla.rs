//! Sparse MLA decode, absorbed (MQA) mode: every head attends to the same k latent rows.
//! Shaders: `shaders/sparse_mla.wgsl` (the f32 FMA units: entry points `scores`,
//! `scores_narrow`, `attend`, `reduce`) and `shaders/sparse_mla_coop.wgsl` (the tensor cores,
//! f16 rows: `scores`, `attend`; its slices merged by the former's `reduce`), both on
//! `shaders/lib/mla.wgsl`; a call's steps are recorded as one dispatch.
//! Reference: [`crate::reference::sparse_mla`].

use super::{Dispatch, StepSpec, dispatch_steps};
use crate::config::Dtype;
use crate::error::Result;
use crate::gpu::{GpuContext, MatrixPath};

/// `scores`: heads and ids per workgroup (HT, RW in the shader).
pub const SCORE_HEADS_PER_WG: u32 = 64;
pub const SCORE_IDS_PER_WG: u32 = 256;
/// `scores_narrow`: heads and ids per workgroup (NHT, RT in the shader).
pub const NARROW_HEADS_PER_WG: u32 = 128;
pub const NARROW_IDS_PER_WG: u32 = 64;
/// `scores` runs when its grid has at least this many workgroups (about one wave of two per SM
/// on a 132-SM GPU); smaller grids (batch 1, few heads) use `scores_narrow`, which has four
/// times as many. On the H100 at v32: batch 16 wide 161 µs vs narrow 190 µs; batch 1 wide
/// 89 µs vs narrow 59 µs.
pub const SCORES_WIDE_MIN_WORKGROUPS: u32 = 256;
/// Ids per score tile: `scores` writes each tile's softmax statistics, `attend`'s slices are
/// whole tiles (RT in the shader).
pub const SCORE_TILE_IDS: u32 = 64;
/// `attend`: heads per workgroup (HB in the shader).
pub const ATTEND_HEADS_PER_WG: u32 = 64;
/// `attend`: workgroups per head group, each taking its share of the KV dims (the shader's
/// `dz`). Halves of the latent let a workgroup hold 64 heads and 16-row chunks in the same
/// registers as 32 heads × all dims × 8 rows: twice the FMAs per barrier and per load. (The
/// shader is written for halves: `dz = wg.x % 2`, `VW = VV / 2`.)
pub const ATTEND_DIM_SPLITS: u32 = 2;
/// `attend` splits the k ids of a sequence into slices until about this many workgroups run:
/// one wave on a 132-SM GPU at two workgroups per SM (what its 124 registers a thread allow).
/// At v32, batch 64 that is one slice, so `reduce` is skipped; batch 16 gets 4 slices, batch 1
/// the most (32).
pub const ATTEND_TARGET_WORKGROUPS: u32 = 256;
/// …but never into slices of fewer ids than this.
pub const ATTEND_MIN_IDS_PER_SLICE: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    heads: u32,
    topk: u32,
    b0: u32,
    softmax_scale: f32,
    batch: u32,
    splits: u32,
    /// Always 0: keeps the driver from unrolling the inner loops completely (see the shader).
    zero: u32,
    /// `scores` with PHASE 1 ([`SparseMla::bind_da`]): its gathering workgroups; else 0.
    gather_wgs: u32,
}

/// The coop kernel's constants; `phase`: its `scores`' PHASE (sparse_mla_coop.wgsl).
fn coop_constants(shape: &SparseMlaShape, phase: u32) -> [(&'static str, f64); 4] {
    [
        ("KV", shape.kv as f64),
        ("ROPE", shape.rope as f64),
        ("ROWS_FP8", (shape.dtype == Dtype::Fp8) as u32 as f64),
        ("PHASE", phase as f64),
    ]
}

/// Which `scores` tile a dispatch uses ([`SCORES_WIDE_MIN_WORKGROUPS`] decides under `Auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoresTile {
    Auto,
    /// 64 heads × 256 ids a workgroup (`scores`).
    Wide,
    /// 128 heads × 64 ids a workgroup (`scores_narrow`).
    Narrow,
}

/// The workgroup memory of `sparse_mla_coop.wgsl`'s larger step (`scores`: Q [64][40] and rows
/// [256][40] f16, 256 row ids, 8 × 256 f32 of staging; `attend` needs 32.5 KiB).
const COOP_WORKGROUP_BYTES: u32 = (64 * 40 + 256 * 40) * 2 + 256 * 4 + 8 * 256 * 4;

#[derive(Debug)]
pub struct SparseMla {
    /// The `scores` tile; `Auto` unless a test or benchmark pins one (the fma kernel's: the coop
    /// kernel has one tile).
    pub scores_tile: ScoresTile,
    /// The kernel's: `Fma` (`sparse_mla.wgsl`; f16, f32 or FP8 rows), or `Coop`
    /// (`sparse_mla_coop.wgsl`; f16 or FP8 rows, q and P rounded to f16).
    pub path: MatrixPath,
    scores: wgpu::ComputePipeline,
    /// The fma kernel's narrow tile (none on the coop kernel).
    scores_narrow: Option<wgpu::ComputePipeline>,
    attend: wgpu::ComputePipeline,
    reduce: wgpu::ComputePipeline,
    /// The coop kernel's DA `scores` (PHASE 1 with the gather, PHASE 2), compiled by the first
    /// [`SparseMla::bind_da`].
    da: std::sync::OnceLock<[wgpu::ComputePipeline; 2]>,
    /// What it was built for.
    pub shape: SparseMlaShape,
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
    /// Working space for `batch` sequences ([`SparseMla::scratch`]).
    pub scratch: &'a SparseMlaScratch,
    /// `[B, H, KV]` f32 output.
    pub o_lat: &'a wgpu::Buffer,
    /// `[B, H]` f32 output.
    pub lse: &'a wgpu::Buffer,
    pub b0: u32,
    pub batch: u32,
}

/// Working space of one dispatch: the scores and the slices' partial outputs.
pub struct SparseMlaScratch {
    /// `[batch, H, topk]` f32 scores, then `[batch, H, ⌈topk / 64⌉, 2]` each score tile's
    /// softmax statistics (max, Σ exp(score − max)), from `scores` to `attend`.
    pub scores: wgpu::Buffer,
    /// `[splits, batch, H, KV]` f32: each slice's normalised output.
    pub partials: wgpu::Buffer,
    /// `[splits, batch, H]` f32: each slice's lse.
    pub part_lse: wgpu::Buffer,
    pub batch: u32,
    pub splits: u32,
}

/// What sparse MLA can be built for: `heads` 1 ..= 1024, latent `kv` 64 ..= 512 in 64s (a
/// thread's 8 dims × 8 per half row), `rope` 0 ..= 256 in 32s (the f16 chunk), `topk` ids as
/// the top-k kernel allows, rows stored as `dtype`, scores scaled by `softmax_scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SparseMlaShape {
    pub heads: u32,
    pub kv: u32,
    pub rope: u32,
    pub topk: u32,
    pub dtype: Dtype,
    pub softmax_scale: f32,
}

impl SparseMlaShape {
    /// The tuned kernels' shapes: RoPE dims in 32s (their staging chunks).
    pub fn validate(&self) -> Result<()> {
        self.validate_with_rope_step(32)
    }

    /// The version-1 kernel's shapes ([`super::SparseMlaNaive`]): any even number of RoPE dims
    /// (it reads a dim at a time; f16 rows are pairs), e.g. 16 in `model init --config tiny`.
    pub fn validate_naive(&self) -> Result<()> {
        self.validate_with_rope_step(2)
    }

    fn validate_with_rope_step(&self, step: u32) -> Result<()> {
        crate::config::check(self.heads, "heads", 1, 1024, 1)?;
        crate::config::check(self.kv, "kv_lora_rank", 64, 512, 64)?;
        crate::config::check(self.rope, "qk_rope_head_dim", 0, 256, step)?;
        super::topk::TopKShape { k: self.topk }.validate()
    }

    /// Bytes of one latent row (656 for v32's FP8 rows).
    pub fn row_bytes(&self) -> u64 {
        self.dtype.row_bytes(self.kv, self.rope)
    }
}

impl SparseMla {
    /// Sparse MLA of `shape` on the context's matrix path (f32 rows on the FMA units:
    /// `kernels::rows_path`).
    pub fn new(ctx: &GpuContext, shape: &SparseMlaShape) -> Result<Self> {
        let path = super::rows_path(ctx, shape.dtype, COOP_WORKGROUP_BYTES);
        Self::with(ctx, shape, path)
    }

    /// The kernel of a given path (for tests and benchmarks): an error where the context or the
    /// shape cannot take it.
    pub fn with(ctx: &GpuContext, shape: &SparseMlaShape, path: MatrixPath) -> Result<Self> {
        shape.validate()?;
        if path == MatrixPath::Coop {
            let (what, field) = ("the coop sparse MLA", "coop sparse MLA rows");
            super::require_coop_rows(ctx, what, COOP_WORKGROUP_BYTES, field, shape.dtype)?;
        }
        let (kv, rope) = (shape.kv, shape.rope);
        let src = crate::shaders::SPARSE_MLA;
        let constants = [
            ("KV", kv as f64),
            ("ROPE", rope as f64),
            // FP8 rows are staged as f16 (lib/mla.wgsl)
            ("ROWS_F16", (shape.dtype != Dtype::F32) as u32 as f64),
            ("ROWS_FP8", (shape.dtype == Dtype::Fp8) as u32 as f64),
            (
                "PART_HEADS",
                !shape.heads.is_multiple_of(ATTEND_HEADS_PER_WG) as u32 as f64,
            ),
        ];
        let reduce = ctx.pipeline("sparse_mla reduce", src, "reduce", &constants)?;
        if path == MatrixPath::Fma {
            return Ok(SparseMla {
                scores_tile: ScoresTile::Auto,
                path,
                scores: ctx.pipeline("sparse_mla scores", src, "scores", &constants)?,
                scores_narrow: Some(ctx.pipeline(
                    "sparse_mla scores_narrow",
                    src,
                    "scores_narrow",
                    &constants,
                )?),
                attend: ctx.pipeline("sparse_mla attend", src, "attend", &constants)?,
                reduce,
                da: Default::default(),
                shape: *shape,
            });
        }
        let coop = crate::shaders::SPARSE_MLA_COOP;
        let constants = coop_constants(shape, 0);
        Ok(SparseMla {
            scores_tile: ScoresTile::Wide,
            path,
            scores: ctx.pipeline("sparse_mla_coop scores", coop, "scores", &constants)?,
            scores_narrow: None,
            attend: ctx.pipeline("sparse_mla_coop attend", coop, "attend", &constants)?,
            reduce,
            da: Default::default(),
            shape: *shape,
        })
    }

    /// Slices of the k ids per sequence in `attend`: enough for about
    /// [`ATTEND_TARGET_WORKGROUPS`] workgroups, a power of two, each slice ≥ 64 ids (a slice is
    /// made of whole 64-id score tiles, so a trailing slice may be empty). Depends only on the
    /// batch and the shape, so a run's results do not depend on anything else.
    pub fn splits(&self, batch: u32) -> u32 {
        splits_for(self.shape.heads, self.shape.topk, batch)
    }

    /// Whether a dispatch of `batch` sequences runs the wide `scores` tile (else `scores_narrow`).
    pub fn wide_scores(&self, batch: u32) -> bool {
        if self.scores_narrow.is_none() {
            return true;
        }
        match self.scores_tile {
            ScoresTile::Auto => {
                self.wide_grid(batch).iter().product::<u32>() >= SCORES_WIDE_MIN_WORKGROUPS
            }
            ScoresTile::Wide => true,
            ScoresTile::Narrow => false,
        }
    }

    /// The wide `scores` tile's grid for `batch` sequences.
    fn wide_grid(&self, batch: u32) -> [u32; 3] {
        [
            self.shape.topk.div_ceil(SCORE_IDS_PER_WG),
            self.shape.heads.div_ceil(SCORE_HEADS_PER_WG),
            batch,
        ]
    }

    /// Bytes of working space for `batch` sequences.
    pub fn scratch_bytes(&self, batch: u32) -> u64 {
        scratch_bytes_for(self.shape.heads, self.shape.topk, self.shape.kv, batch)
    }

    pub fn scratch(&self, ctx: &GpuContext, batch: u32) -> Result<SparseMlaScratch> {
        let splits = self.splits(batch);
        let (b, h) = (batch as u64, self.shape.heads as u64);
        Ok(SparseMlaScratch {
            scores: ctx.storage(
                "sparse_mla scores",
                b * h * (self.shape.topk + 2 * self.shape.topk.div_ceil(SCORE_TILE_IDS)) as u64 * 4,
            )?,
            partials: ctx.storage(
                "sparse_mla partials",
                splits as u64 * b * h * self.shape.kv as u64 * 4,
            )?,
            part_lse: ctx.storage("sparse_mla part_lse", splits as u64 * b * h * 4)?,
            batch,
            splits,
        })
    }

    /// `a.scratch` must have been made for at least `a.batch` sequences.
    pub fn bind(&self, ctx: &GpuContext, a: &SparseMlaArgs) -> Dispatch {
        self.bind_steps(ctx, a, None)
    }

    /// ESS's DA on one queue (the coop kernel): two dispatches over ids ordered hits first, with
    /// `a.seq[2b + 1]` hits leading (`kernels::DaOrder` makes both). The first scores the tiles
    /// of hits while its first workgroups gather `g`'s misses from host memory into `a.rows`
    /// (`g.pool`: sparse_mla_da.wgsl); the second scores the other tiles, then attends (and
    /// reduces) as [`SparseMla::bind`] does. Ids in another order than the top-k's: the sums
    /// run in another order than [`SparseMla::bind`]'s over the same ids.
    pub fn bind_da(
        &self,
        ctx: &GpuContext,
        a: &SparseMlaArgs,
        g: &super::indexer::FusedGather,
    ) -> Result<[Dispatch; 2]> {
        if self.path != MatrixPath::Coop {
            return Err(crate::Error::config(
                "sparse MLA with a fused gather",
                self.path,
                "coop",
            ));
        }
        let [gathering, rest] = match self.da.get() {
            Some(p) => p,
            None => {
                let pipeline = |src, phase| {
                    let c = coop_constants(&self.shape, phase);
                    ctx.pipeline(&format!("sparse_mla da phase {phase}"), src, "scores", &c)
                };
                let p = [
                    pipeline(crate::shaders::SPARSE_MLA_DA, 1)?,
                    pipeline(crate::shaders::SPARSE_MLA_COOP, 2)?,
                ];
                self.da.get_or_init(|| p)
            }
        };
        let grid = self.wide_grid(a.batch);
        let table = g.table(grid[0], grid.iter().product());
        let table_buf = ctx.upload("fused gather", &[table])?;
        let params = Params {
            gather_wgs: table.gather_wgs,
            ..self.params(a)
        };
        let buffers = [
            (1, a.q),
            (2, a.ids),
            (3, a.seq),
            (4, a.rows),
            (5, &a.scratch.scores),
            (10, &table_buf),
            (11, g.copies),
            (12, g.counts),
            (13, g.host),
        ];
        let step = StepSpec {
            pipeline: gathering,
            buffers: &buffers,
            workgroups: super::grid_2d(table.gather_wgs + grid.iter().product::<u32>()),
        };
        let mut first = dispatch_steps(ctx, "sparse_mla da", &params, &[step]);
        first.keep(table_buf);
        Ok([first, self.bind_steps(ctx, a, Some(rest))])
    }

    fn params(&self, a: &SparseMlaArgs) -> Params {
        Params {
            heads: self.shape.heads,
            topk: self.shape.topk,
            b0: a.b0,
            softmax_scale: self.shape.softmax_scale,
            batch: a.batch,
            splits: a.scratch.splits,
            zero: 0,
            gather_wgs: 0,
        }
    }

    /// [`SparseMla::bind`]'s steps, with another (wide-gridded) `scores` pipeline if given.
    fn bind_steps(
        &self,
        ctx: &GpuContext,
        a: &SparseMlaArgs,
        scores_as: Option<&wgpu::ComputePipeline>,
    ) -> Dispatch {
        assert!(
            a.scratch.batch >= a.batch,
            "scratch made for {} sequences, dispatch has {}",
            a.scratch.batch,
            a.batch
        );
        let splits = a.scratch.splits;
        let params = self.params(a);
        let (scores, score_grid) = match &self.scores_narrow {
            Some(narrow) if !self.wide_scores(a.batch) => {
                let grid = [
                    self.shape.topk.div_ceil(NARROW_IDS_PER_WG),
                    self.shape.heads.div_ceil(NARROW_HEADS_PER_WG),
                    a.batch,
                ];
                (narrow, grid)
            }
            _ => (&self.scores, self.wide_grid(a.batch)),
        };
        let scores = scores_as.unwrap_or(scores);
        let attend_grid = [
            ATTEND_DIM_SPLITS * self.shape.heads.div_ceil(ATTEND_HEADS_PER_WG),
            a.batch,
            splits,
        ];
        let vec4s = (a.batch as u64 * self.shape.heads as u64 * self.shape.kv as u64 / 4)
            .div_ceil(256) as u32;
        let reduce_grid = if vec4s <= 65535 {
            [vec4s, 1, 1]
        } else {
            [65535, vec4s.div_ceil(65535), 1]
        };
        let scratch = a.scratch;
        let steps = [
            StepSpec {
                pipeline: scores,
                buffers: &[
                    (1, a.q),
                    (2, a.ids),
                    (3, a.seq),
                    (4, a.rows),
                    (5, &scratch.scores),
                ],
                workgroups: score_grid,
            },
            StepSpec {
                pipeline: &self.attend,
                buffers: &[
                    (2, a.ids),
                    (3, a.seq),
                    (4, a.rows),
                    (5, &scratch.scores),
                    (6, &scratch.partials),
                    (7, &scratch.part_lse),
                    (8, a.o_lat),
                    (9, a.lse),
                ],
                workgroups: attend_grid,
            },
            StepSpec {
                pipeline: &self.reduce,
                buffers: &[
                    (6, &scratch.partials),
                    (7, &scratch.part_lse),
                    (8, a.o_lat),
                    (9, a.lse),
                ],
                workgroups: reduce_grid,
            },
        ];
        // One slice: `attend` writes the final result and there is nothing to reduce.
        let recorded = if splits == 1 { 2 } else { 3 };
        dispatch_steps(ctx, "sparse_mla", &params, &steps[..recorded])
    }

    /// FLOPs per call: per (sequence, head, row) a (KV+ROPE)-dot and a KV-wide accumulate.
    pub fn flops(&self, batch: u64) -> u64 {
        batch
            * self.shape.heads as u64
            * self.shape.topk as u64
            * 2
            * (2 * self.shape.kv as u64 + self.shape.rope as u64)
    }

    /// FLOPs of the `scores` step alone (the (KV+ROPE)-dots); `attend` does the rest.
    pub fn score_flops(&self, batch: u64) -> u64 {
        batch
            * self.shape.heads as u64
            * self.shape.topk as u64
            * 2
            * (self.shape.kv + self.shape.rope) as u64
    }

    /// Bytes at least: every selected row once per sequence, q in, o_lat and lse out. (The
    /// scores' round trip through `scratch` is the implementation's, not the problem's.)
    pub fn bytes(&self, batch: u64) -> u64 {
        let dq = (self.shape.kv + self.shape.rope) as u64;
        let per_seq_rows = self.shape.topk as u64 * (self.shape.row_bytes() + 4);
        let per_seq_heads = self.shape.heads as u64 * (dq * 4 + self.shape.kv as u64 * 4 + 4);
        batch * (per_seq_rows + per_seq_heads)
    }
}

/// [`SparseMla::splits`] for given dims, without a device.
pub fn splits_for(heads: u32, topk: u32, batch: u32) -> u32 {
    let groups = ATTEND_DIM_SPLITS * heads.div_ceil(ATTEND_HEADS_PER_WG) * batch.max(1);
    let want = ATTEND_TARGET_WORKGROUPS
        .div_ceil(groups)
        .next_power_of_two();
    want.min((topk / ATTEND_MIN_IDS_PER_SLICE).max(1))
}

/// [`SparseMla::scratch_bytes`] for given dims, without a device.
pub fn scratch_bytes_for(heads: u32, topk: u32, kv: u32, batch: u32) -> u64 {
    let splits = splits_for(heads, topk, batch) as u64;
    let tiles = topk.div_ceil(SCORE_TILE_IDS) as u64;
    batch as u64 * heads as u64 * (topk as u64 + splits * (kv as u64 + 1) + 2 * tiles) * 4
}

/// The sparse MLA a run's shape takes: the tuned kernel ([`SparseMla`]), or the version-1 kernel
/// ([`super::SparseMlaNaive`]) where the tuned one cannot take the shape (RoPE dims not in 32s,
/// as in `model init --config tiny`). Both bind the same arguments; the naive one needs no
/// working space and has no DA form.
pub enum AnySparseMla {
    Tuned(SparseMla),
    Naive(super::SparseMlaNaive),
}

impl AnySparseMla {
    pub fn new(ctx: &GpuContext, shape: &SparseMlaShape) -> Result<Self> {
        match shape.validate() {
            Ok(()) => Ok(AnySparseMla::Tuned(SparseMla::new(ctx, shape)?)),
            Err(e) => match shape.validate_naive() {
                Ok(()) => Ok(AnySparseMla::Naive(super::SparseMlaNaive::new(ctx, shape)?)),
                Err(_) => Err(e),
            },
        }
    }

    /// The tuned kernel, where it is the one.
    pub fn tuned(&self) -> Option<&SparseMla> {
        match self {
            AnySparseMla::Tuned(k) => Some(k),
            AnySparseMla::Naive(_) => None,
        }
    }

    /// Working space for `batch` sequences (the naive kernel's: none, four bytes each).
    pub fn scratch(&self, ctx: &GpuContext, batch: u32) -> Result<SparseMlaScratch> {
        match self {
            AnySparseMla::Tuned(k) => k.scratch(ctx, batch),
            AnySparseMla::Naive(_) => Ok(SparseMlaScratch {
                scores: ctx.storage("no scores", 4)?,
                partials: ctx.storage("no partials", 4)?,
                part_lse: ctx.storage("no part_lse", 4)?,
                batch,
                splits: 1,
            }),
        }
    }

    pub fn bind(&self, ctx: &GpuContext, a: &SparseMlaArgs) -> Dispatch {
        match self {
            AnySparseMla::Tuned(k) => k.bind(ctx, a),
            AnySparseMla::Naive(k) => k.bind(
                ctx,
                &super::sparse_mla_naive::SparseMlaNaiveArgs {
                    q: a.q,
                    ids: a.ids,
                    seq: a.seq,
                    rows: a.rows,
                    o_lat: a.o_lat,
                    lse: a.lse,
                    b0: a.b0,
                    batch: a.batch,
                },
            ),
        }
    }
}
