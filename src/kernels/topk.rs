//! Exact per-row top-k, sorted by (score desc, index asc), `-1` past `T_b`.
//! Shaders: `shaders/topk.wgsl` (a row a workgroup) and `shaders/topk_split.wgsl` (long rows
//! over several workgroups: `histogram`, `bin`, `collect`, `finish`), on `lib/select.wgsl` and
//! `lib/topk_order.wgsl`; both give the same indices. Reference: [`crate::reference::topk`].

use super::{Dispatch, StepSpec, dispatch, dispatch_steps};
use crate::error::Result;
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    score_stride: u32,
    b0: u32,
    segments: u32,
}

/// Rows at least this long (the score stride, which bounds every T_b) go to the split kernel.
/// On the H200 at batch 64, k 2048 (docs/PERF.md): one workgroup a row takes 98 µs at 32K and
/// 274 µs at 128K, because 64 rows keep 64 of 132 SMs busy; the split kernel spreads the passes.
pub const SPLIT_MIN_LEN: u32 = 32 << 10;
/// The split kernel cuts rows until about this many workgroups run (four per SM of an H200)…
pub const SPLIT_TARGET_WORKGROUPS: u32 = 528;
/// …into segments of at least this many scores.
pub const SPLIT_MIN_SEGMENT: u32 = 4096;
/// Bins of the split kernel's first histogram (BINS in the shader: the top 12 bits of a key).
const SPLIT_BINS: u64 = 4096;

impl TopKScratch {
    /// Its buffers (for an owner that counts what it allocated).
    pub fn buffers(&self) -> [&wgpu::Buffer; 4] {
        [&self.hist, &self.state, &self.sure, &self.maybe]
    }
}

/// The split kernel's workgroups a row: about [`SPLIT_TARGET_WORKGROUPS`] in all, segments of
/// at least [`SPLIT_MIN_SEGMENT`] scores, at least 2.
pub fn split_segments(batch: u32, score_stride: u32) -> u32 {
    SPLIT_TARGET_WORKGROUPS
        .div_ceil(batch.max(1))
        .min(score_stride / SPLIT_MIN_SEGMENT)
        .max(2)
}

/// Bytes of the split kernel's working space an engine of `batch` rows of `score_stride` needs
/// under `Auto` (0 where rows are too short to split).
pub fn scratch_bytes_for(k: u32, batch: u32, score_stride: u32) -> u64 {
    if score_stride < SPLIT_MIN_LEN {
        return 0;
    }
    scratch_sizes(k, batch, score_stride).iter().sum()
}

/// Bytes of the split kernel's four scratch buffers for `batch` rows of `score_stride` scores:
/// the histograms `[batch, 4096]`, the states `[batch, 4]`, the sure `[batch, k]` and candidate
/// `[batch, score_stride]` index lists, all u32.
fn scratch_sizes(k: u32, batch: u32, score_stride: u32) -> [u64; 4] {
    let b = batch as u64;
    [
        b * SPLIT_BINS * 4,
        b * 16,
        b * k as u64 * 4,
        b * score_stride as u64 * 4,
    ]
}

/// Which kernel [`TopK::bind`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopKSplit {
    /// The split kernel for rows of [`SPLIT_MIN_LEN`] or more, else one workgroup a row.
    Auto,
    /// One workgroup a row (`topk.wgsl`).
    Never,
    /// The split kernel with this many workgroups a row.
    Segments(u32),
}

#[derive(Debug)]
pub struct TopK {
    pipeline: wgpu::ComputePipeline,
    /// `topk_split.wgsl`: histogram, bin, collect, finish.
    split_steps: [wgpu::ComputePipeline; 4],
    pub k: u32,
    /// Threads per workgroup (one workgroup per row; `bin` and `finish` of the split kernel).
    pub workgroup_size: u32,
    /// `Auto` unless a test or benchmark pins a kernel.
    pub split: TopKSplit,
}

/// Working space of the split kernel for `batch` rows of `score_stride` scores.
pub struct TopKScratch {
    /// `[batch, 4096]` u32 histograms (left zeroed by every call).
    hist: wgpu::Buffer,
    /// `[batch, 4]` u32: the threshold bin, the sure and maybe counts.
    state: wgpu::Buffer,
    /// `[batch, k]` u32 selected indices, `[batch, score_stride]` candidate indices.
    sure: wgpu::Buffer,
    maybe: wgpu::Buffer,
    pub batch: u32,
    pub score_stride: u32,
}

pub struct TopKArgs<'a> {
    /// The split kernel's working space ([`TopK::scratch`]); `None`: the dispatch makes its own
    /// where it needs one.
    pub scratch: Option<&'a TopKScratch>,
    /// `[B, score_stride]` f32.
    pub scores: &'a wgpu::Buffer,
    /// `[B, 2]` u32: (first key row, T_b); only T_b is read.
    pub seq: &'a wgpu::Buffer,
    /// `[B, k]` i32 output.
    pub topk_indices: &'a wgpu::Buffer,
    pub b0: u32,
    pub batch: u32,
    pub score_stride: u32,
}

/// Largest k the top-k kernel sorts in workgroup memory.
pub const MAX_TOPK: u32 = 2048;

/// What the top-k kernel can be built for: k ids per row, `1 ..= MAX_TOPK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopKShape {
    pub k: u32,
}

impl TopKShape {
    pub fn validate(&self) -> Result<()> {
        crate::config::check(self.k, "topk", 1, MAX_TOPK, 1)
    }
}

impl TopK {
    pub fn new(ctx: &GpuContext, shape: &TopKShape) -> Result<Self> {
        shape.validate()?;
        let k = shape.k;
        let workgroup_size = ctx.max_invocations.min(1024);
        let wg = [("WG", workgroup_size as f64)];
        let pipeline = ctx.pipeline("topk", crate::shaders::TOPK, "main", &wg)?;
        let step = |entry| ctx.pipeline("topk_split", crate::shaders::TOPK_SPLIT, entry, &wg);
        let split_steps = [
            step("histogram")?,
            step("bin")?,
            step("collect")?,
            step("finish")?,
        ];
        Ok(TopK {
            pipeline,
            split_steps,
            k,
            workgroup_size,
            split: TopKSplit::Auto,
        })
    }

    /// Workgroups a row for `batch` rows of `score_stride` scores (1: the one-workgroup kernel).
    pub fn segments(&self, batch: u32, score_stride: u32) -> u32 {
        match self.split {
            TopKSplit::Never => 1,
            TopKSplit::Segments(n) => n.max(1),
            TopKSplit::Auto if score_stride < SPLIT_MIN_LEN => 1,
            TopKSplit::Auto => split_segments(batch, score_stride),
        }
    }

    /// The split kernel's working space for `batch` rows of `score_stride` scores.
    pub fn scratch(&self, ctx: &GpuContext, batch: u32, score_stride: u32) -> Result<TopKScratch> {
        let [hist, state, sure, maybe] = scratch_sizes(self.k, batch, score_stride);
        Ok(TopKScratch {
            hist: ctx.storage("topk hist", hist)?,
            state: ctx.storage("topk state", state)?,
            sure: ctx.storage("topk sure", sure)?,
            maybe: ctx.storage("topk maybe", maybe)?,
            batch,
            score_stride,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &TopKArgs) -> Result<Dispatch> {
        self.bind_as_part_of(ctx, a, a.batch)
    }

    /// As [`TopK::bind`], for rows `a.b0 ..` of a batch of `whole` rows: split as the whole
    /// batch's dispatch is, so a batch selected in parts gives the ids, in the same order, of
    /// the batch selected at once (the engine's overlap chunks).
    pub fn bind_as_part_of(&self, ctx: &GpuContext, a: &TopKArgs, whole: u32) -> Result<Dispatch> {
        let segments = self.segments(whole.max(a.batch), a.score_stride);
        let params = Params {
            k: self.k,
            score_stride: a.score_stride,
            b0: a.b0,
            segments,
        };
        if segments == 1 {
            return Ok(dispatch(
                ctx,
                &self.pipeline,
                "topk",
                &params,
                &[a.scores, a.seq, a.topk_indices],
                [a.batch, 1, 1],
            ));
        }
        let owned;
        let scratch = match a.scratch {
            Some(s) => {
                assert!(
                    s.batch >= a.batch && s.score_stride >= a.score_stride,
                    "top-k scratch made for {} rows of {}, dispatch has {} of {}",
                    s.batch,
                    s.score_stride,
                    a.batch,
                    a.score_stride
                );
                s
            }
            None => {
                owned = self.scratch(ctx, a.batch, a.score_stride)?;
                &owned
            }
        };
        let [histogram, bin, collect, finish] = &self.split_steps;
        let (rows, segs) = ([a.batch, 1, 1], [segments, a.batch, 1]);
        let s = scratch;
        Ok(dispatch_steps(
            ctx,
            "topk_split",
            &params,
            &[
                StepSpec {
                    pipeline: histogram,
                    buffers: &[(1, a.scores), (2, a.seq), (4, &s.hist)],
                    workgroups: segs,
                },
                StepSpec {
                    pipeline: bin,
                    buffers: &[(2, a.seq), (4, &s.hist), (5, &s.state)],
                    workgroups: rows,
                },
                StepSpec {
                    pipeline: collect,
                    buffers: &[
                        (1, a.scores),
                        (2, a.seq),
                        (5, &s.state),
                        (6, &s.sure),
                        (7, &s.maybe),
                    ],
                    workgroups: segs,
                },
                StepSpec {
                    pipeline: finish,
                    buffers: &[
                        (1, a.scores),
                        (2, a.seq),
                        (3, a.topk_indices),
                        (5, &s.state),
                        (6, &s.sure),
                        (7, &s.maybe),
                    ],
                    workgroups: rows,
                },
            ],
        ))
    }

    /// Bytes one call must move at least: every score read once, k indices written.
    pub fn bytes(&self, total_scores: u64, rows: u64) -> u64 {
        total_scores * 4 + rows * self.k as u64 * 4
    }
}
