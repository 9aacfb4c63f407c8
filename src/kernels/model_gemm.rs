//! The model's linear layers as tiled f32 GEMMs (`shaders/model_gemm.wgsl`): each weight read
//! once for a tile of 32 rows, K split where N alone leaves the GPU idle, and the routed experts
//! grouped by expert so that an expert's weights are read once for up to 32 of its tokens.
//! Results are those of `model_ops.wgsl`'s version-1 kernels bit for bit where K is not split,
//! and never depend on the batch (see the shader). Reference: `reference::model`'s `linear` and
//! `mlp` (through `tests/kernels.rs`).

use super::{Dispatch, StepSpec, dispatch_steps};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    xr: u32,
    yr: u32,
    yo: u32,
    k_chunk: u32,
    splits: u32,
    top_k: u32,
    experts: u32,
    expert_base: u32,
    expert_count: u32,
}

/// A tile's rows and outputs, and the K step (the shader's TM, TN, TK).
const TM: u32 = 32;
const TN: u32 = 64;
const TK: u32 = 32;
/// Split K until one row of tiles has this many workgroups (two per SM of a 132-SM H200), in
/// slices of at least `MIN_CHUNK` inputs.
const SPLIT_TARGET_WORKGROUPS: u32 = 264;
const MIN_CHUNK: u32 = 256;

/// `y[r·yr + yo + o] = Σ_k x[r·xr + k] · w[o, k]` for r < rows, o < n, k < k (w `[n, k]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: u32,
    pub k: u32,
    pub n: u32,
    pub xr: u32,
    pub yr: u32,
    pub yo: u32,
}

impl LinearShape {
    /// Contiguous `x [rows, k]` and `y [rows, n]`.
    pub fn plain(rows: u32, k: u32, n: u32) -> Self {
        LinearShape {
            rows,
            k,
            n,
            xr: k,
            yr: n,
            yo: 0,
        }
    }

    /// (slices of K, inputs a slice): from N and K only, so a row's sums are the same in any
    /// batch.
    pub fn splits(&self) -> (u32, u32) {
        let tiles = self.n.div_ceil(TN);
        let most = self.k.div_ceil(MIN_CHUNK).max(1);
        let want = SPLIT_TARGET_WORKGROUPS.div_ceil(tiles).clamp(1, most);
        let chunk = self.k.div_ceil(want).div_ceil(TK) * TK;
        (self.k.div_ceil(chunk), chunk)
    }

    /// Bytes of the split scratch this linear layer needs (0 where K is not split).
    pub fn scratch_bytes(&self) -> u64 {
        match self.splits().0 {
            1 => 0,
            s => s as u64 * self.rows as u64 * self.n as u64 * 4,
        }
    }
}

/// The routed experts of `rows` tokens: `top_k` of `experts` each, of width `inter` over
/// `hidden`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertShape {
    pub rows: u32,
    pub top_k: u32,
    pub experts: u32,
    pub hidden: u32,
    pub inter: u32,
}

impl ExpertShape {
    fn pairs(&self) -> u32 {
        self.rows * self.top_k
    }

    /// Tiles of ≤ 32 pairs of one expert: at most ⌈pairs / 32⌉ + experts.
    fn most_tiles(&self) -> u32 {
        self.pairs().div_ceil(TM) + self.experts
    }

    /// u32 words of the grouping buffer (`group`'s output).
    pub fn group_words(&self) -> u64 {
        2 * self.experts as u64 + self.pairs() as u64 + 1 + 2 * self.most_tiles() as u64
    }
}

#[derive(Debug)]
pub struct ModelGemm {
    linear: wgpu::ComputePipeline,
    reduce: wgpu::ComputePipeline,
    group: wgpu::ComputePipeline,
    expert_up: wgpu::ComputePipeline,
    expert_down: wgpu::ComputePipeline,
    combine: wgpu::ComputePipeline,
}

/// The weights of experts `first .. first + count` (`[count, inter, hidden]` gate and up,
/// `[count, hidden, inter]` down): a layer's experts past one storage binding are several.
pub struct ExpertChunk<'a> {
    pub first: u32,
    pub count: u32,
    pub gate: &'a wgpu::Buffer,
    pub up: &'a wgpu::Buffer,
    pub down: &'a wgpu::Buffer,
}

/// The buffers of the grouped experts: the grouping (`ExpertShape::group_words` u32), the
/// activations `act [pairs, inter]` and the pairs' outputs `part [pairs, hidden]`, f32.
pub struct ExpertScratch<'a> {
    pub groups: &'a wgpu::Buffer,
    pub act: &'a wgpu::Buffer,
    pub part: &'a wgpu::Buffer,
}

impl ModelGemm {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let p = |entry: &str| {
            ctx.pipeline(
                &format!("model_gemm {entry}"),
                crate::shaders::MODEL_GEMM,
                entry,
                &[],
            )
        };
        Ok(ModelGemm {
            linear: p("linear")?,
            reduce: p("reduce")?,
            group: p("group")?,
            expert_up: p("expert_up")?,
            expert_down: p("expert_down")?,
            combine: p("combine")?,
        })
    }

    /// The linear layer `shape` of `x` by `w` into `y`; where K is split, its slices' sums go
    /// through `scratch` (at least [`LinearShape::scratch_bytes`]).
    pub fn linear(
        &self,
        ctx: &GpuContext,
        (x, w, y): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        shape: &LinearShape,
        scratch: Option<&wgpu::Buffer>,
    ) -> Result<Dispatch> {
        let (splits, k_chunk) = shape.splits();
        let params = Params {
            m: shape.rows,
            n: shape.n,
            k: shape.k,
            xr: shape.xr,
            yr: shape.yr,
            yo: shape.yo,
            k_chunk,
            splits,
            ..Default::default()
        };
        let grid = [shape.n.div_ceil(TN), shape.rows.div_ceil(TM), splits];
        if splits == 1 {
            let buffers = [(1, x), (2, w), (3, y), (4, w)];
            let step = StepSpec {
                pipeline: &self.linear,
                buffers: &buffers,
                workgroups: grid,
            };
            return Ok(dispatch_steps(ctx, "linear", &params, &[step]));
        }
        let part = match scratch {
            Some(s) if s.size() >= shape.scratch_bytes() => s,
            _ => {
                return Err(Error::config(
                    "linear split scratch",
                    scratch.map_or(0, |s| s.size()),
                    format!("≥ {} bytes", shape.scratch_bytes()),
                ));
            }
        };
        let first = [(1, x), (2, w), (3, part), (4, w)];
        let sum = [(3, y), (7, part)];
        let values = shape.rows as u64 * shape.n as u64;
        let steps = [
            StepSpec {
                pipeline: &self.linear,
                buffers: &first,
                workgroups: grid,
            },
            StepSpec {
                pipeline: &self.reduce,
                buffers: &sum,
                workgroups: super::grid_2d(values.div_ceil(256) as u32),
            },
        ];
        Ok(dispatch_steps(ctx, "linear", &params, &steps))
    }

    /// The routed experts of `shape.rows` tokens, grouped by expert, into `y [rows, hidden]`:
    /// `routes` (`ModelOps::route`'s output) grouped, then each expert's tiles of tokens
    /// through its gate and up weights into SwiGLU activations, then `between` (act_quant of
    /// the activations where the down weights are FP8), then through the down weights,
    /// combined with the routes' weights in slot order. The weights come in `chunks` (one a
    /// storage binding), each dispatched over the tiles of its experts.
    #[allow(clippy::too_many_arguments)]
    pub fn experts(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        chunks: &[ExpertChunk],
        routes: &wgpu::Buffer,
        y: &wgpu::Buffer,
        shape: &ExpertShape,
        scratch: &ExpertScratch,
        between: Option<Dispatch>,
    ) -> Vec<Dispatch> {
        let params = |n, k, chunk: Option<&ExpertChunk>| Params {
            m: shape.rows,
            n,
            k,
            top_k: shape.top_k,
            experts: shape.experts,
            expert_base: chunk.map_or(0, |c| c.first),
            expert_count: chunk.map_or(0, |c| c.count),
            ..Default::default()
        };
        let tiles = shape.most_tiles();
        let g = scratch.groups;
        let one = |label: &str, p: Params, pipeline, buffers: &[(u32, &wgpu::Buffer)], grid| {
            let step = StepSpec {
                pipeline,
                buffers,
                workgroups: grid,
            };
            dispatch_steps(ctx, label, &p, &[step])
        };
        let (hsz, inter) = (shape.hidden, shape.inter);
        let mut out = vec![one(
            "experts group",
            params(inter, hsz, None),
            &self.group,
            &[(5, routes), (6, g)],
            [1, 1, 1],
        )];
        for c in chunks {
            let bufs = [(1, x), (2, c.gate), (3, scratch.act), (4, c.up), (6, g)];
            let grid = [inter.div_ceil(TN), tiles, 1];
            let p = params(inter, hsz, Some(c));
            out.push(one("experts up", p, &self.expert_up, &bufs, grid));
        }
        out.extend(between);
        for c in chunks {
            let bufs = [
                (1, scratch.act),
                (2, c.down),
                (3, scratch.part),
                (4, c.down),
                (6, g),
            ];
            let grid = [hsz.div_ceil(TN), tiles, 1];
            let p = params(hsz, inter, Some(c));
            out.push(one("experts down", p, &self.expert_down, &bufs, grid));
        }
        let values = shape.rows as u64 * hsz as u64;
        out.push(one(
            "experts combine",
            params(hsz, inter, None),
            &self.combine,
            &[(3, y), (5, routes), (7, scratch.part)],
            super::grid_2d(values.div_ceil(256) as u32),
        ));
        out
    }
}
