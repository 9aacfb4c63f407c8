//! The model's linear layers as tiled f32 GEMMs (`shaders/model_gemm.wgsl`): each weight read
//! once for a tile of 32 rows, K split where N alone leaves the GPU idle, and the routed experts
//! grouped by expert so that an expert's weights are read once for up to 32 of its tokens.
//! Results are those of `model_ops.wgsl`'s version-1 kernels bit for bit where K is not split,
//! and never depend on the batch (see the shader). Linear layers with FP8 weights go to the
//! tensor cores where the context has them (`shaders/model_gemm_coop.wgsl`: DeepSeek's FP8 GEMM,
//! operands exact in f16, each 128-block promoted with its scales in f32), and so do the routed
//! experts' FP8 weights, over the same grouped tiles; f32 weights stay on the FMA units.
//! Reference: `reference::model`'s `linear` and `mlp` (through `tests/kernels.rs`).

use super::{Dispatch, StepSpec, dispatch_one, dispatch_steps};
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
    row0: u32,
    kblocks: u32,
    heads: u32,
    xh: u32,
    wb: u32,
    wh: u32,
    wr: u32,
    yh: u32,
}

/// A weight `[N, K]` as the kernels bind it: f32 values, or e4m3 bytes (four a word) with one
/// f32 scale a 128 × 128 block (`scales` `[⌈N'/128⌉, ⌈K/128⌉]` of the whole weight N', whose
/// row `row0` is the buffer's first: a piece of a larger weight). Experts' FP8 weights put
/// each expert's scales after the one before.
#[derive(Clone, Copy)]
pub enum Weight<'a> {
    F32(&'a wgpu::Buffer),
    Fp8 {
        bytes: &'a wgpu::Buffer,
        scales: &'a wgpu::Buffer,
        row0: u32,
    },
}

impl<'a> Weight<'a> {
    /// A whole FP8 weight (its first row the weight's first): bytes and scales as a pair.
    pub fn fp8((bytes, scales): &'a (wgpu::Buffer, wgpu::Buffer)) -> Self {
        Weight::Fp8 {
            bytes,
            scales,
            row0: 0,
        }
    }

    fn buffer(&self) -> &'a wgpu::Buffer {
        match *self {
            Weight::F32(b) => b,
            Weight::Fp8 { bytes, .. } => bytes,
        }
    }

    /// Its scales, or `none` (a placeholder the f32 kernels bind and never read).
    fn scales(&self, none: &'a wgpu::Buffer) -> &'a wgpu::Buffer {
        match *self {
            Weight::F32(_) => none,
            Weight::Fp8 { scales, .. } => scales,
        }
    }

    fn is_fp8(&self) -> bool {
        matches!(self, Weight::Fp8 { .. })
    }

    fn row0(&self) -> u32 {
        match *self {
            Weight::F32(_) => 0,
            Weight::Fp8 { row0, .. } => row0,
        }
    }
}

/// A tile's rows and outputs (the shader's TM, TN; its K step is 32).
const TM: u32 = 32;
const TN: u32 = 64;
/// The FP8 block: slices of K are whole blocks (the tensor-core kernel promotes a block at a time).
const QB: u32 = 128;
/// The tensor-core kernel's tile: rows and outputs (`CTM`, `CTN` of the shader).
const CTM: u32 = 32;
const CTN: u32 = 64;
/// Workgroup memory of the tensor-core kernels (their f16 tiles, staging slots, block scales,
/// and model_gemm.wgsl's tile rows: `src`, and for the experts `dst` and `tile_at`, a vec4).
const COOP_WORKGROUP_BYTES: u32 =
    (32 + 64) * 136 * 2 + 8 * 256 * 4 + 2 * 32 * 4 + 24 + 264 + 32 * 4 + 16;
/// The tensor-core kernel streams K a block at a time and keeps more workgroups busy: split K
/// until a row of its tiles has this many (eight per SM of a 132-SM H200).
const COOP_SPLIT_TARGET_WORKGROUPS: u32 = 1056;
/// Split K until one row of tiles has this many workgroups (two per SM of a 132-SM H200), in
/// slices of at least `MIN_CHUNK` inputs.
const SPLIT_TARGET_WORKGROUPS: u32 = 264;
const MIN_CHUNK: u32 = 256;

/// `y[r·yr + yo + h·yh + o] = Σ_k x[r·xr + h·xh + k] · w[wb + h·wh + o·wr + k]` for r < rows,
/// o < n, k < k and each of `heads` products h (one, but for MLA's per-head products); w's
/// offsets count its elements (bytes for FP8, whose scales follow `Weight::Fp8`'s `row0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: u32,
    pub k: u32,
    pub n: u32,
    pub xr: u32,
    pub yr: u32,
    pub yo: u32,
    pub heads: u32,
    pub xh: u32,
    pub wb: u32,
    pub wh: u32,
    pub wr: u32,
    pub yh: u32,
}

impl LinearShape {
    /// Contiguous `x [rows, k]` and `y [rows, n]`, w `[n, k]`.
    pub fn plain(rows: u32, k: u32, n: u32) -> Self {
        LinearShape {
            rows,
            k,
            n,
            xr: k,
            yr: n,
            yo: 0,
            heads: 1,
            xh: 0,
            wb: 0,
            wh: 0,
            wr: k,
            yh: 0,
        }
    }

    /// MLA's W_UV for `rows` rows of `heads` × `kv` (sparse MLA's o_lat) into rows of
    /// `heads` × `v`: each head's o_lat · W_UVᵀ, W_UV the head's last `v` rows of `kv_b_proj`
    /// as stored (`[heads · (nope + v), kv]`). What `ModelOps::head_linear` computes with
    /// `HeadLinear::mla_uv`, on the tiles.
    pub fn mla_uv(rows: u32, heads: u32, (nope, v, kv): (u32, u32, u32)) -> Self {
        LinearShape {
            xr: heads * kv,
            yr: heads * v,
            heads,
            xh: kv,
            wb: nope * kv,
            wh: (nope + v) * kv,
            wr: kv,
            yh: v,
            ..LinearShape::plain(rows, kv, v)
        }
    }

    /// MLA's absorbed W_UK for `rows` rows of `heads` queries `[q_nope ‖ q_pe]` (`nope` + `rope`
    /// a head) into rows of `heads` × (`kv` + `rope`) whose first `kv` of a head are q_nope ·
    /// W_UK: what `HeadLinear::mla_uk` computes, on the tiles, from W_UK transposed per head
    /// (`[heads, kv, nope]`, [`w_uk_transposed`]).
    pub fn mla_uk(rows: u32, heads: u32, (nope, rope, kv): (u32, u32, u32)) -> Self {
        LinearShape {
            xr: heads * (nope + rope),
            yr: heads * (kv + rope),
            heads,
            xh: nope + rope,
            wh: kv * nope,
            yh: kv + rope,
            ..LinearShape::plain(rows, nope, kv)
        }
    }

    /// Whether this is one product of a weight of rows K apart (what the tensor-core kernel
    /// takes; it may start inside its buffer).
    fn single(&self) -> bool {
        self.heads == 1 && self.wr == self.k
    }

    /// (slices of K, inputs a slice) on the FMA units: from N and K only, so a row's sums are
    /// the same in any batch.
    pub fn splits(&self) -> (u32, u32) {
        self.splits_on(false)
    }

    /// (slices of K, inputs a slice) on the tensor cores (`tensor_cores`) or the FMA units;
    /// slices are whole FP8 blocks.
    pub fn splits_on(&self, tensor_cores: bool) -> (u32, u32) {
        let (tiles, target) = match tensor_cores {
            true => (self.n.div_ceil(CTN), COOP_SPLIT_TARGET_WORKGROUPS),
            false => (self.n.div_ceil(TN), SPLIT_TARGET_WORKGROUPS),
        };
        let most = self.k.div_ceil(MIN_CHUNK).max(1);
        let want = target.div_ceil(tiles).clamp(1, most);
        let chunk = self.k.div_ceil(want).div_ceil(QB) * QB;
        (self.k.div_ceil(chunk), chunk)
    }

    /// Bytes of the split scratch this linear layer needs on either units (0 where K is split
    /// on neither).
    pub fn scratch_bytes(&self) -> u64 {
        match self.splits_on(false).0.max(self.splits_on(true).0) {
            1 => 0,
            s => s as u64 * self.heads as u64 * self.rows as u64 * self.n as u64 * 4,
        }
    }
}

/// Each head's W_UK of `kv_b_proj` as stored (`[heads · (nope + v), kv]`: a head's first `nope`
/// rows), transposed into `[heads, kv, nope]`: the weight [`LinearShape::mla_uk`] reads.
pub fn w_uk_transposed(
    kv_b: &[f32],
    heads: usize,
    (nope, v, kv): (usize, usize, usize),
) -> Vec<f32> {
    let mut out = vec![0f32; heads * kv * nope];
    for h in 0..heads {
        for i in 0..nope {
            let row = &kv_b[(h * (nope + v) + i) * kv..][..kv];
            for (c, &value) in row.iter().enumerate() {
                out[(h * kv + c) * nope + i] = value;
            }
        }
    }
    out
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

/// The kernels; `linear`, `expert_up` and `expert_down` for f32 weights `[0]` and FP8 `[1]`.
#[derive(Debug)]
pub struct ModelGemm {
    linear: [wgpu::ComputePipeline; 2],
    reduce: wgpu::ComputePipeline,
    group: wgpu::ComputePipeline,
    expert_up: [wgpu::ComputePipeline; 2],
    expert_down: [wgpu::ComputePipeline; 2],
    combine: wgpu::ComputePipeline,
    /// The tensor-core kernels for FP8 weights, where the context has cooperative matrices.
    coop: Option<CoopGemm>,
    /// What f32 kernels bind where FP8 ones read scales.
    no_scales: wgpu::Buffer,
}

/// `model_gemm_coop.wgsl`'s pipelines: the linear layers, and the routed experts' gate, up
/// (SwiGLU of the gate's sums and its own) and down.
#[derive(Debug)]
struct CoopGemm {
    linear: wgpu::ComputePipeline,
    gate: wgpu::ComputePipeline,
    up: wgpu::ComputePipeline,
    down: wgpu::ComputePipeline,
}

/// The weights of experts `first .. first + count` (`[count, inter, hidden]` gate and up,
/// `[count, hidden, inter]` down): a layer's experts past one storage binding are several.
pub struct ExpertChunk<'a> {
    pub first: u32,
    pub count: u32,
    pub gate: Weight<'a>,
    pub up: Weight<'a>,
    pub down: Weight<'a>,
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
        let with = |entry: &str, c: &[(&str, f64)]| {
            ctx.pipeline(
                &format!("model_gemm {entry}"),
                crate::shaders::MODEL_GEMM,
                entry,
                c,
            )
        };
        let p = |entry: &str| with(entry, &[]);
        let both = |entry: &str| -> Result<[wgpu::ComputePipeline; 2]> {
            Ok([
                with(entry, &[("W_FP8", 0.0)])?,
                with(entry, &[("W_FP8", 1.0)])?,
            ])
        };
        let coop = match super::coop_fits(ctx, COOP_WORKGROUP_BYTES) {
            false => None,
            true => {
                let coop = |what: &str, entry: &str, c: &[(&str, f64)]| {
                    ctx.pipeline(
                        &format!("model_gemm_coop {what}"),
                        crate::shaders::MODEL_GEMM_COOP,
                        entry,
                        c,
                    )
                };
                let expert = |what: &str, pair: bool, swiglu: bool| {
                    let c = [
                        ("X_IS_PAIR", pair as u8 as f64),
                        ("SWIGLU", swiglu as u8 as f64),
                    ];
                    coop(what, "expert_coop", &c)
                };
                Some(CoopGemm {
                    linear: coop("linear_coop", "linear_coop", &[])?,
                    gate: expert("experts gate", false, false)?,
                    up: expert("experts up", false, true)?,
                    down: expert("experts down", true, false)?,
                })
            }
        };
        Ok(ModelGemm {
            coop,
            linear: both("linear")?,
            reduce: p("reduce")?,
            group: p("group")?,
            expert_up: both("expert_up")?,
            expert_down: both("expert_down")?,
            combine: p("combine")?,
            no_scales: ctx.storage("no scales", 4)?,
        })
    }

    /// Whether a linear layer's weight with `k` inputs multiplies on the tensor cores: FP8, K
    /// whole words of bytes, and a context with cooperative matrices.
    pub fn on_tensor_cores(&self, weight: &Weight, k: u32) -> bool {
        self.coop.is_some() && weight.is_fp8() && k.is_multiple_of(4)
    }

    /// Whether the routed experts of `shape` in `chunks` multiply on the tensor cores: every
    /// weight FP8, hidden and intermediate widths whole words of bytes, and a context with
    /// cooperative matrices.
    pub fn experts_on_tensor_cores(&self, chunks: &[ExpertChunk], shape: &ExpertShape) -> bool {
        let (hsz, inter) = (shape.hidden, shape.inter);
        self.coop.is_some()
            && chunks.iter().all(|c| {
                self.on_tensor_cores(&c.gate, hsz)
                    && self.on_tensor_cores(&c.up, hsz)
                    && self.on_tensor_cores(&c.down, inter)
            })
    }

    /// The linear layer `shape` of `x` by `w` into `y`; where K is split, its slices' sums go
    /// through `scratch` (at least [`LinearShape::scratch_bytes`]).
    pub fn linear(
        &self,
        ctx: &GpuContext,
        (x, weight, y): (&wgpu::Buffer, Weight, &wgpu::Buffer),
        shape: &LinearShape,
        scratch: Option<&wgpu::Buffer>,
    ) -> Result<Dispatch> {
        let on_cores = self.on_tensor_cores(&weight, shape.k) && shape.single();
        let (splits, k_chunk) = shape.splits_on(on_cores);
        let params = Params {
            m: shape.rows,
            n: shape.n,
            k: shape.k,
            xr: shape.xr,
            yr: shape.yr,
            yo: shape.yo,
            k_chunk,
            splits,
            row0: weight.row0(),
            kblocks: shape.k.div_ceil(128),
            heads: shape.heads,
            xh: shape.xh,
            wb: shape.wb,
            wh: shape.wh,
            wr: shape.wr,
            yh: shape.yh,
            ..Default::default()
        };
        let (w, scales) = (weight.buffer(), weight.scales(&self.no_scales));
        let (pipeline, grid) = match &self.coop {
            Some(c) if on_cores => (
                &c.linear,
                [shape.rows.div_ceil(CTM), shape.n.div_ceil(CTN), splits],
            ),
            _ => (
                &self.linear[weight.is_fp8() as usize],
                [
                    shape.n.div_ceil(TN),
                    shape.rows.div_ceil(TM),
                    splits * shape.heads,
                ],
            ),
        };
        // the bindings of the product into `out` (the tensor-core kernel reads no second weight)
        let bound = |out| -> Vec<(u32, &wgpu::Buffer)> {
            match on_cores {
                true => vec![(1, x), (2, w), (3, out), (8, scales)],
                false => vec![(1, x), (2, w), (3, out), (4, w), (8, scales), (9, scales)],
            }
        };
        if splits == 1 {
            return Ok(dispatch_one(
                ctx,
                pipeline,
                "linear",
                &params,
                &bound(y),
                grid,
            ));
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
        let first = bound(part);
        let sum = [(3, y), (7, part)];
        let values = shape.heads as u64 * shape.rows as u64 * shape.n as u64;
        let steps = [
            StepSpec {
                pipeline,
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
        let params = |n, k: u32, chunk: Option<&ExpertChunk>| Params {
            m: shape.rows,
            n,
            k,
            top_k: shape.top_k,
            experts: shape.experts,
            expert_base: chunk.map_or(0, |c| c.first),
            expert_count: chunk.map_or(0, |c| c.count),
            kblocks: k.div_ceil(128),
            wr: k,
            ..Default::default()
        };
        let none = &self.no_scales;
        let tiles = shape.most_tiles();
        let g = scratch.groups;
        let (hsz, inter) = (shape.hidden, shape.inter);
        let mut out = vec![dispatch_one(
            ctx,
            &self.group,
            "experts group",
            &params(inter, hsz, None),
            &[(5, routes), (6, g)],
            [1, 1, 1],
        )];
        let coop = match self.experts_on_tensor_cores(chunks, shape) {
            true => self.coop.as_ref(),
            false => None,
        };
        for c in chunks {
            if let Some(k) = coop {
                // the gate's sums into act, then SwiGLU of them and the up weight's
                let p = params(inter, hsz, Some(c));
                let grid = [tiles, inter.div_ceil(CTN), 1];
                for (pipeline, what, w) in [
                    (&k.gate, "experts gate", &c.gate),
                    (&k.up, "experts up", &c.up),
                ] {
                    let bufs = [
                        (1, x),
                        (2, w.buffer()),
                        (3, scratch.act),
                        (6, g),
                        (8, w.scales(none)),
                    ];
                    out.push(dispatch_one(ctx, pipeline, what, &p, &bufs, grid));
                }
                continue;
            }
            let (gs, us) = (c.gate.scales(none), c.up.scales(none));
            let (gw, uw) = (c.gate.buffer(), c.up.buffer());
            let bufs = [
                (1, x),
                (2, gw),
                (3, scratch.act),
                (4, uw),
                (6, g),
                (8, gs),
                (9, us),
            ];
            let grid = [inter.div_ceil(TN), tiles, 1];
            let p = params(inter, hsz, Some(c));
            let pipeline = &self.expert_up[c.gate.is_fp8() as usize];
            out.push(dispatch_one(ctx, pipeline, "experts up", &p, &bufs, grid));
        }
        out.extend(between);
        for c in chunks {
            let (dw, ds) = (c.down.buffer(), c.down.scales(none));
            let part = scratch.part;
            let p = params(hsz, inter, Some(c));
            if let Some(k) = coop {
                let bufs = [(1, scratch.act), (2, dw), (3, part), (6, g), (8, ds)];
                let grid = [tiles, hsz.div_ceil(CTN), 1];
                out.push(dispatch_one(ctx, &k.down, "experts down", &p, &bufs, grid));
                continue;
            }
            let bufs = [
                (1, scratch.act),
                (2, dw),
                (3, part),
                (4, dw),
                (6, g),
                (8, ds),
                (9, ds),
            ];
            let grid = [hsz.div_ceil(TN), tiles, 1];
            let pipeline = &self.expert_down[c.down.is_fp8() as usize];
            out.push(dispatch_one(ctx, pipeline, "experts down", &p, &bufs, grid));
        }
        let values = shape.rows as u64 * hsz as u64;
        out.push(dispatch_one(
            ctx,
            &self.combine,
            "experts combine",
            &params(hsz, inter, None),
            &[(3, y), (5, routes), (7, scratch.part)],
            super::grid_2d(values.div_ceil(256) as u32),
        ));
        out
    }
}
