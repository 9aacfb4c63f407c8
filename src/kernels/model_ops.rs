//! DeepSeek-V3.2's per-token operations (issue 15): RMSNorm, LayerNorm, RoPE in both layouts
//! and the Hadamard rotation. Shader: `shaders/model_ops.wgsl`. References:
//! [`crate::reference::model`].

use super::{Dispatch, dispatch_one};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::reference::model::RopeLayout;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    heads: u32,
    d: u32,
    stride: u32,
    off: u32,
    eps: f32,
    mode: u32,
}

impl Params {
    /// The parameters of an op over the heads `at`.
    fn over(at: Heads) -> Self {
        Params {
            rows: at.rows,
            n: at.n,
            heads: at.heads,
            d: at.d,
            stride: at.stride,
            off: at.off,
            ..Default::default()
        }
    }
}

/// Longest Hadamard rotation the shader's workgroup memory holds.
pub const MAX_HADAMARD: u32 = 1024;

#[derive(Debug)]
pub struct ModelOps {
    rms_norm: wgpu::ComputePipeline,
    layer_norm: wgpu::ComputePipeline,
    rope: [wgpu::ComputePipeline; 2],
    hadamard: wgpu::ComputePipeline,
    act_quant: wgpu::ComputePipeline,
    swiglu: wgpu::ComputePipeline,
    argmax: wgpu::ComputePipeline,
    route: wgpu::ComputePipeline,
    linear: wgpu::ComputePipeline,
    head_linear: wgpu::ComputePipeline,
    expert_up: wgpu::ComputePipeline,
    expert_down: wgpu::ComputePipeline,
    add: wgpu::ComputePipeline,
    embed: wgpu::ComputePipeline,
    round_to: wgpu::ComputePipeline,
    /// The tiled linear layers and grouped experts (version 2 of `linear`, `expert_up`,
    /// `expert_down`), which the model runs.
    pub gemm: super::ModelGemm,
}

/// A per-head strided product ([`ModelOps::head_linear`]): for each row r, head h, j < `o`:
/// `y[r·yr + h·yh + yo + j] = Σ_{i < k} x[r·xr + h·xh + xo + i] · w[wb + h·wh + j·wo + i·wk]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct HeadLinear {
    pub rows: u32,
    pub heads: u32,
    pub k: u32,
    pub o: u32,
    pub xr: u32,
    pub xh: u32,
    pub xo: u32,
    pub wb: u32,
    pub wh: u32,
    pub wo: u32,
    pub wk: u32,
    pub yr: u32,
    pub yh: u32,
    pub yo: u32,
    pub _pad: [u32; 2],
}

impl HeadLinear {
    /// MLA's absorbed W_UK for `rows` rows of `heads` queries `[q_nope ‖ q_pe]` (`nope` +
    /// `rope` a head) into rows of `heads` × (`kv` + `rope`) whose first `kv` of a head are
    /// q_nope · W_UK, from `kv_b_proj` as stored (`[heads · (nope + v), kv]`).
    pub fn mla_uk(rows: u32, heads: u32, (nope, rope, v, kv): (u32, u32, u32, u32)) -> Self {
        HeadLinear {
            rows,
            heads,
            k: nope,
            o: kv,
            xr: heads * (nope + rope),
            xh: nope + rope,
            wh: (nope + v) * kv,
            wo: 1,
            wk: kv,
            yr: heads * (kv + rope),
            yh: kv + rope,
            ..Default::default()
        }
    }

    /// MLA's W_UV for `rows` rows of `heads` × `kv` (sparse MLA's o_lat) into rows of
    /// `heads` × `v`: each head's o_lat · W_UVᵀ, from `kv_b_proj` as stored.
    pub fn mla_uv(rows: u32, heads: u32, (nope, v, kv): (u32, u32, u32)) -> Self {
        HeadLinear {
            rows,
            heads,
            k: kv,
            o: v,
            xr: heads * kv,
            xh: kv,
            wb: nope * kv,
            wh: (nope + v) * kv,
            wo: kv,
            wk: 1,
            yr: heads * v,
            yh: v,
            ..Default::default()
        }
    }
}

/// The MoE router's shape ([`ModelOps::route`]).
#[derive(Clone, Copy, Debug)]
pub struct Routing {
    pub experts: u32,
    pub groups: u32,
    pub topk_group: u32,
    pub top_k: u32,
    pub scaling: f32,
}

/// Most routed experts the router's workgroup memory holds (DeepSeek-V3.2 has 256).
pub const MAX_EXPERTS: u32 = 1024;

/// Where rotated heads are in a `[rows, n]` buffer: `heads` heads a row, `stride` values apart,
/// each `d` values (RoPE: from value `off` of the head).
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub rows: u32,
    pub n: u32,
    pub heads: u32,
    pub stride: u32,
    pub off: u32,
    pub d: u32,
}

/// A dispatch over `rows` rows of `n` values (the parameters the row kernels read).
fn over_rows(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[(u32, &wgpu::Buffer)],
    rows: u32,
    n: u32,
    workgroups: [u32; 3],
) -> Dispatch {
    let params = Params {
        rows,
        n,
        ..Default::default()
    };
    dispatch_one(ctx, pipeline, "model_ops", &params, buffers, workgroups)
}

fn row_grid(rows: u32) -> [u32; 3] {
    [rows.min(65535), rows.div_ceil(65535), 1]
}

impl ModelOps {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let src = crate::shaders::MODEL_OPS;
        let p = |entry: &str, c: &[(&str, f64)]| {
            ctx.pipeline(&format!("model_ops {entry}"), src, entry, c)
        };
        Ok(ModelOps {
            rms_norm: p("rms_norm", &[])?,
            layer_norm: p("layer_norm", &[])?,
            rope: [
                p("rope", &[("INTERLEAVED", 1.0)])?,
                p("rope", &[("INTERLEAVED", 0.0)])?,
            ],
            hadamard: p("hadamard", &[])?,
            act_quant: p("act_quant", &[])?,
            swiglu: p("swiglu", &[])?,
            argmax: p("argmax", &[])?,
            route: p("route", &[])?,
            linear: p("linear", &[])?,
            head_linear: p("head_linear", &[])?,
            expert_up: p("expert_up", &[])?,
            expert_down: p("expert_down", &[])?,
            add: p("add", &[])?,
            embed: p("embed", &[])?,
            round_to: p("round_to", &[])?,
            gemm: super::ModelGemm::new(ctx)?,
        })
    }

    /// `y = norm(x)` over rows of `n`: RMSNorm, or LayerNorm with `bias`.
    #[allow(clippy::too_many_arguments)]
    pub fn norm(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
        rows: u32,
        n: u32,
        eps: f32,
    ) -> Dispatch {
        let params = Params {
            rows,
            n,
            eps,
            ..Default::default()
        };
        let (pipeline, buffers) = match bias {
            Some(b) => (&self.layer_norm, vec![(1, x), (2, weight), (3, b), (4, y)]),
            None => (&self.rms_norm, vec![(1, x), (2, weight), (4, y)]),
        };
        dispatch_one(ctx, pipeline, "norm", &params, &buffers, row_grid(rows))
    }

    /// RoPE in place on `x`'s heads `at`, row r at position `positions[r]` (u32), by the
    /// `(cos, sin)` table [`rope_table`] made for those positions.
    pub fn rope(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        table: &wgpu::Buffer,
        positions: &wgpu::Buffer,
        at: Heads,
        layout: RopeLayout,
    ) -> Result<Dispatch> {
        if !at.d.is_multiple_of(2) || at.off + at.d > at.stride.max(at.d) {
            return Err(Error::config("rope dims", at.d, "even, inside the head"));
        }
        let params = Params::over(at);
        let threads = at.rows as u64 * at.heads as u64 * (at.d / 2) as u64;
        let grid = super::grid_2d(threads.div_ceil(256) as u32);
        let pipeline = &self.rope[(layout == RopeLayout::NeoX) as usize];
        let buffers = [(1, x), (2, table), (3, positions)];
        Ok(dispatch_one(ctx, pipeline, "rope", &params, &buffers, grid))
    }

    /// `x`'s heads `at` in place as a cache of `dtype` stores them: f16 (nearest even, as
    /// shaders/fill.wgsl packs f16 rows), bf16 for FP8 (the FP8 format keeps k_pe as bf16; its
    /// quantised values are act_quant's, exact already), nothing for f32.
    pub fn round_to(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        at: Heads,
        dtype: crate::config::Dtype,
    ) -> Option<Dispatch> {
        let mode = match dtype {
            crate::config::Dtype::F32 => return None,
            crate::config::Dtype::Fp8 => 1,
            crate::config::Dtype::F16 => 2,
        };
        let params = Params {
            mode,
            ..Params::over(at)
        };
        let threads = at.rows as u64 * at.heads as u64 * at.d as u64;
        let grid = super::grid_2d(threads.div_ceil(256) as u32);
        Some(dispatch_one(
            ctx,
            &self.round_to,
            "round_to",
            &params,
            &[(1, x)],
            grid,
        ))
    }

    /// The Hadamard rotation in place on `x`'s heads `at` (d a power of two ≤ 1024).
    pub fn hadamard(&self, ctx: &GpuContext, x: &wgpu::Buffer, at: Heads) -> Result<Dispatch> {
        if !at.d.is_power_of_two() || at.d > MAX_HADAMARD {
            return Err(Error::config(
                "hadamard length",
                at.d,
                format!("a power of two ≤ {MAX_HADAMARD}"),
            ));
        }
        let params = Params {
            rows: at.rows,
            n: at.n,
            heads: at.heads,
            d: at.d,
            stride: at.stride,
            ..Default::default()
        };
        let grid = row_grid(at.rows * at.heads);
        Ok(dispatch_one(
            ctx,
            &self.hadamard,
            "hadamard",
            &params,
            &[(1, x)],
            grid,
        ))
    }

    /// DeepSeek's `act_quant` round trip in place on `[rows, n]` (blocks of 128 along a row, the
    /// last may be shorter): what an FP8 cache holds and what an FP8 linear layer sees.
    pub fn act_quant(&self, ctx: &GpuContext, x: &wgpu::Buffer, rows: u32, n: u32) -> Dispatch {
        let grid = [n.div_ceil(128), rows, 1];
        over_rows(ctx, &self.act_quant, &[(1, x)], rows, n, grid)
    }

    /// `y[r, i] = silu(x[r, i]) · x[r, n + i]` for rows of `[gate ‖ up]` (2n values) into
    /// `[rows, n]`.
    pub fn swiglu(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        rows: u32,
        n: u32,
    ) -> Dispatch {
        let grid = super::grid_2d((rows as u64 * n as u64).div_ceil(256) as u32);
        over_rows(ctx, &self.swiglu, &[(1, x), (4, y)], rows, n, grid)
    }

    /// `y[r]` (u32) = the index of the largest of row r of `[rows, n]` (the lowest on a tie):
    /// greedy decoding.
    pub fn argmax(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        rows: u32,
        n: u32,
    ) -> Dispatch {
        over_rows(
            ctx,
            &self.argmax,
            &[(1, x), (4, y)],
            rows,
            n,
            row_grid(rows),
        )
    }

    /// `y [rows, out] = x [rows, in] · weightᵀ` for an f32 weight `[out, in]` (the checkpoint's
    /// layout): the naive kernel (version 1: one thread an output, its weight row read once a
    /// row), f32 sums. The model runs [`super::ModelGemm::linear`].
    #[allow(clippy::too_many_arguments)]
    pub fn linear(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        y: &wgpu::Buffer,
        rows: u32,
        inputs: u32,
        outputs: u32,
    ) -> Dispatch {
        let params = Params {
            rows,
            n: inputs,
            d: outputs,
            ..Default::default()
        };
        let grid = super::grid_2d((rows as u64 * outputs as u64).div_ceil(256) as u32);
        let buffers = [(1, x), (2, weight), (4, y)];
        dispatch_one(ctx, &self.linear, "linear", &params, &buffers, grid)
    }

    /// The per-head strided product `hl` of `x` by `w` into `y` (f32; see [`HeadLinear`]).
    pub fn head_linear(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        y: &wgpu::Buffer,
        hl: &HeadLinear,
    ) -> Result<Dispatch> {
        let table = ctx.upload("head_linear", std::slice::from_ref(hl))?;
        let threads = hl.rows as u64 * hl.heads as u64 * hl.o as u64;
        let grid = super::grid_2d(threads.div_ceil(256) as u32);
        let buffers = [(1, x), (2, w), (4, y), (5, &table)];
        let mut d = dispatch_one(
            ctx,
            &self.head_linear,
            "head_linear",
            &Params::default(),
            &buffers,
            grid,
        );
        d.keep(table);
        Ok(d)
    }

    /// An expert kernel's dispatch: `threads` threads, the shape in the parameters.
    fn experts(
        &self,
        ctx: &GpuContext,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[(u32, &wgpu::Buffer)],
        rows: u32,
        (k, hidden, inter): (u32, u32, u32),
        threads: u64,
    ) -> Dispatch {
        let params = Params {
            rows,
            n: hidden,
            heads: k,
            d: inter,
            ..Default::default()
        };
        let grid = super::grid_2d(threads.div_ceil(256) as u32);
        dispatch_one(ctx, pipeline, "experts", &params, buffers, grid)
    }

    /// The routed experts' first half for `rows` tokens: `act [rows, k, inter]` = SwiGLU of
    /// each token's `x [rows, hidden]` through the gate and up weights (`[experts, inter,
    /// hidden]` each) of the expert `routes` ([`ModelOps::route`]'s `[rows, k]` output) chose.
    /// Version 1 (each token's experts read for it alone); the model runs
    /// [`super::ModelGemm::experts`].
    #[allow(clippy::too_many_arguments)]
    pub fn expert_up(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        gate: &wgpu::Buffer,
        up: &wgpu::Buffer,
        routes: &wgpu::Buffer,
        act: &wgpu::Buffer,
        rows: u32,
        (k, hidden, inter): (u32, u32, u32),
    ) -> Dispatch {
        let threads = rows as u64 * k as u64 * inter as u64;
        let buffers = [(1, x), (2, gate), (3, up), (4, act), (6, routes)];
        self.experts(
            ctx,
            &self.expert_up,
            &buffers,
            rows,
            (k, hidden, inter),
            threads,
        )
    }

    /// The routed experts' second half: `y [rows, hidden]` = Σ_j weight_j · down_{e_j} ·
    /// act[r, j] (down weights `[experts, hidden, inter]`).
    #[allow(clippy::too_many_arguments)]
    pub fn expert_down(
        &self,
        ctx: &GpuContext,
        act: &wgpu::Buffer,
        down: &wgpu::Buffer,
        routes: &wgpu::Buffer,
        y: &wgpu::Buffer,
        rows: u32,
        (k, hidden, inter): (u32, u32, u32),
    ) -> Dispatch {
        let threads = rows as u64 * hidden as u64;
        let buffers = [(1, act), (2, down), (4, y), (6, routes)];
        self.experts(
            ctx,
            &self.expert_down,
            &buffers,
            rows,
            (k, hidden, inter),
            threads,
        )
    }

    /// `x += y` over `n` values (a residual).
    pub fn add(&self, ctx: &GpuContext, x: &wgpu::Buffer, y: &wgpu::Buffer, n: u32) -> Dispatch {
        let grid = super::grid_2d(n.div_ceil(256));
        over_rows(ctx, &self.add, &[(1, x), (3, y)], 1, n, grid)
    }

    /// `y [rows, n]` = the rows of `table [vocab, n]` that `tokens` (u32) name;
    /// `table` holds the rows `first .. first + count` of the whole table (a vocabulary past
    /// one storage binding is several tables): tokens outside them are left to the others.
    #[allow(clippy::too_many_arguments)]
    pub fn embed(
        &self,
        ctx: &GpuContext,
        (table, first, count): (&wgpu::Buffer, u32, u32),
        tokens: &wgpu::Buffer,
        y: &wgpu::Buffer,
        rows: u32,
        n: u32,
    ) -> Dispatch {
        let grid = super::grid_2d((rows as u64 * n as u64).div_ceil(256) as u32);
        let params = Params {
            rows,
            n,
            off: first,
            d: count,
            ..Default::default()
        };
        let buffers = [(2, table), (3, tokens), (4, y)];
        dispatch_one(ctx, &self.embed, "embed", &params, &buffers, grid)
    }

    /// The MoE router (sigmoid, noaux_tc; `reference::model::route`) of `rows` tokens from their
    /// gate logits `[rows, experts]` and the correction bias `[experts]`: `out` `[rows, top_k,
    /// 2]` = (expert as u32 bits, weight), best first.
    #[allow(clippy::too_many_arguments)]
    pub fn route(
        &self,
        ctx: &GpuContext,
        logits: &wgpu::Buffer,
        bias: &wgpu::Buffer,
        out: &wgpu::Buffer,
        rows: u32,
        r: Routing,
    ) -> Result<Dispatch> {
        let ok = r.experts <= MAX_EXPERTS
            && r.groups >= 1
            && r.groups <= 256
            && r.experts.is_multiple_of(r.groups)
            && r.experts / r.groups >= 2
            && (1..=r.groups).contains(&r.topk_group)
            && (1..=r.topk_group * (r.experts / r.groups)).contains(&r.top_k);
        if !ok {
            return Err(Error::config(
                "routing",
                format!("{r:?}"),
                format!(
                    "≤ {MAX_EXPERTS} experts in ≤ 256 groups of ≥ 2, 1 ..= groups kept, 1 ..= \
                     kept experts chosen"
                ),
            ));
        }
        let params = Params {
            rows,
            n: r.experts,
            heads: r.topk_group,
            d: r.top_k,
            stride: r.groups,
            eps: r.scaling,
            ..Default::default()
        };
        let buffers = [(1, logits), (2, bias), (4, out)];
        Ok(dispatch_one(
            ctx,
            &self.route,
            "route",
            &params,
            &buffers,
            row_grid(rows),
        ))
    }
}

/// RoPE's `(cos, sin)` pairs for positions `0 .. positions`, `inv_freq.len()` each, computed in
/// f64 (`HfConfig::rope_inv_freqs`) and stored as f32.
pub fn rope_table(inv_freq: &[f64], positions: u32) -> Vec<f32> {
    (0..positions)
        .flat_map(|p| {
            inv_freq.iter().flat_map(move |&f| {
                let (s, c) = (p as f64 * f).sin_cos();
                [c as f32, s as f32]
            })
        })
        .collect()
}
