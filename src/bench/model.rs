//! `bench model`: the model's linear layers (issue 15) at a checkpoint config's shapes for decode
//! batches, each kernel against the roofline of the f32 FMA units and the measured copy
//! bandwidth: the tiled linear layers (f32 and FP8 weights, the latter on the tensor cores
//! where the adapter has them) and grouped experts (`ModelGemm`, version 2) beside the
//! version-1 kernels they replace, and the per-head products (W_UV on the tiles; `head_linear`,
//! version 1: MLA's absorbed W_UK and W_UV). Inputs are random; results are not checked
//! here (`tests/kernels.rs` and `tests/model.rs` do).

use super::{Ceilings, KernelTiming, row, time_pass};
use crate::error::Result;
use crate::gpu::{GpuContext, MatrixPath};
use crate::kernels::ModelOps;
use crate::kernels::model_gemm::{ExpertChunk, ExpertScratch, ExpertShape, LinearShape, Weight};
use crate::kernels::model_ops::HeadLinear;
use crate::model::HfConfig;

/// A buffer of `n` f32 values, filled with small numbers (`fill`'s bit pattern: 2^-6).
fn values(ctx: &GpuContext, what: &str, n: u64) -> Result<wgpu::Buffer> {
    let b = ctx.storage(what, n * 4)?;
    ctx.fill(&b, 0x3c80_0000);
    Ok(b)
}

/// Whether every buffer of `n` f32 values fits one storage binding.
fn fits(ctx: &GpuContext, sizes: &[u64]) -> bool {
    sizes.iter().all(|&n| n * 4 <= ctx.max_binding())
}

/// Time `dispatches` (one pass) for batch `m`: the report's row against the roofline of the
/// units of `path` (the f32 FMA units, or the tensor cores for FP8 weights where the context
/// has them).
fn timed(
    ctx: &GpuContext,
    (name, m): (String, u32),
    dispatches: &[&crate::kernels::Dispatch],
    (bytes, flops): (u64, u64),
    ceilings: &Ceilings,
    reps: u32,
    path: MatrixPath,
) -> Result<KernelTiming> {
    let t = time_pass(ctx, dispatches, reps)?;
    Ok(row(&name, m, 0, t, bytes, flops, ceilings, path))
}

/// The units an FP8 weight of `k` inputs multiplies on, and how the bench names them.
fn fp8_units(ops: &ModelOps, w: &Weight, k: u32) -> (MatrixPath, &'static str) {
    match ops.gemm.on_tensor_cores(w, k) {
        true => (MatrixPath::Coop, "tensor cores"),
        false => (MatrixPath::Fma, "fma"),
    }
}

/// An FP8 weight of `bytes` e4m3 values (0.5 and 1.0) and `blocks` scales, for timing.
fn fp8_weight(ctx: &GpuContext, bytes: u64, blocks: u64) -> Result<(wgpu::Buffer, wgpu::Buffer)> {
    let e4m3 = ctx.storage("e4m3", bytes)?;
    ctx.fill(&e4m3, 0x3038_3038);
    Ok((e4m3, values(ctx, "scales", blocks)?))
}

/// Time the model's linear layers of config `c` for each decode batch in `batches`.
pub fn run(
    ctx: &GpuContext,
    c: &HfConfig,
    batches: &[u32],
    ceilings: &Ceilings,
    reps: u32,
    mut progress: impl FnMut(&str),
) -> Result<Vec<KernelTiming>> {
    let ops = ModelOps::new(ctx)?;
    let mut out = Vec::new();
    for &m in batches {
        progress(&format!("model linear layers, batch {m}"));
        for (k, n) in crate::model::gpu::linear_layers(c) {
            if n == 0 || k == 0 || !fits(ctx, &[k as u64 * n as u64, m as u64 * n as u64]) {
                continue;
            }
            let shape = LinearShape::plain(m, k, n);
            let (x, w, y) = (
                values(ctx, "x", m as u64 * k as u64)?,
                values(ctx, "w", k as u64 * n as u64)?,
                values(ctx, "y", m as u64 * n as u64)?,
            );
            let scratch = ctx.storage("split", shape.scratch_bytes().max(4))?;
            let bytes = 4 * (k as u64 * n as u64 + m as u64 * (k + n) as u64);
            let flops = 2 * m as u64 * n as u64 * k as u64;
            let d = ops
                .gemm
                .linear(ctx, (&x, Weight::F32(&w), &y), &shape, Some(&scratch))?;
            let name = format!("linear {k}→{n} ({} slices)", shape.splits().0);
            out.push(timed(
                ctx,
                (name, m),
                &[&d],
                (bytes, flops),
                ceilings,
                reps,
                MatrixPath::Fma,
            )?);
            // the same layer with FP8 weights (e4m3 bytes, a scale a 128 × 128 block)
            let blocks = n.div_ceil(128) as u64 * k.div_ceil(128) as u64;
            let (e4m3, scales) = fp8_weight(ctx, k as u64 * n as u64, blocks)?;
            let fp8 = Weight::Fp8 {
                bytes: &e4m3,
                scales: &scales,
                row0: 0,
            };
            let d = ops
                .gemm
                .linear(ctx, (&x, fp8, &y), &shape, Some(&scratch))?;
            let fp8_bytes = k as u64 * n as u64 + 4 * (blocks + m as u64 * (k + n) as u64);
            let (path, units) = fp8_units(&ops, &fp8, k);
            let name = format!("linear fp8 {k}→{n} ({units})");
            out.push(timed(
                ctx,
                (name, m),
                &[&d],
                (fp8_bytes, flops),
                ceilings,
                reps,
                path,
            )?);
            let v1 = ops.linear(ctx, &x, &w, &y, m, k, n);
            let name = format!("linear v1 {k}→{n}");
            out.push(timed(
                ctx,
                (name, m),
                &[&v1],
                (bytes, flops),
                ceilings,
                reps,
                MatrixPath::Fma,
            )?);
        }
        out.extend(experts(ctx, &ops, c, m, ceilings, reps)?);
        out.extend(head_products(ctx, &ops, c, m, ceilings, reps)?);
    }
    Ok(out)
}

/// The routed experts of `m` tokens, grouped (version 2) and one token at a time (version 1),
/// routes spread evenly over the experts.
fn experts(
    ctx: &GpuContext,
    ops: &ModelOps,
    c: &HfConfig,
    m: u32,
    ceilings: &Ceilings,
    reps: u32,
) -> Result<Vec<KernelTiming>> {
    let (e, top_k, hsz, inter) = (
        c.n_routed_experts,
        c.num_experts_per_tok,
        c.hidden_size,
        c.moe_intermediate_size,
    );
    let per = e as u64 * inter as u64 * hsz as u64;
    let pairs = m as u64 * top_k as u64;
    if e == 0 || !fits(ctx, &[pairs * hsz as u64]) {
        return Ok(Vec::new());
    }
    // token r's slot j: expert (r · top_k + j) mod E, weight 1 / top_k
    let routes: Vec<u32> = (0..pairs as u32)
        .flat_map(|p| [p % e, (1.0 / top_k as f32).to_bits()])
        .collect();
    let routes = ctx.upload("routes", &routes)?;
    let x = values(ctx, "x", m as u64 * hsz as u64)?;
    let shape = ExpertShape {
        rows: m,
        top_k,
        experts: e,
        hidden: hsz,
        inter,
    };
    let (groups, act, part, y) = (
        values(ctx, "groups", shape.group_words())?,
        values(ctx, "act", pairs * inter as u64)?,
        values(ctx, "part", pairs * hsz as u64)?,
        values(ctx, "y", m as u64 * hsz as u64)?,
    );
    let scratch = ExpertScratch {
        groups: &groups,
        act: &act,
        part: &part,
    };
    let mut out = Vec::new();
    // f32 weights where an expert layer's fit one binding (not v32's 256 experts)
    if fits(ctx, &[per]) {
        let (g, u, d) = (
            values(ctx, "gate", per)?,
            values(ctx, "up", per)?,
            values(ctx, "down", per)?,
        );
        out.extend(f32_experts(
            ctx,
            ops,
            (&x, &routes, &y),
            (&g, &u, &d),
            &shape,
            &scratch,
            ceilings,
            reps,
        )?);
    }
    // the same experts with FP8 weights (each expert's scales after the one before), in pieces
    // of whole experts a storage binding each, act_quant between up and down as the model runs
    // them
    let bound = (ctx.max_binding() / (inter as u64 * hsz as u64)).min(e as u64) as u32;
    if bound == 0 {
        return Ok(out);
    }
    let blocks =
        |n: u32, k: u32, count: u32| count as u64 * n.div_ceil(128) as u64 * k.div_ceil(128) as u64;
    let mut pieces = Vec::new();
    for first in (0..e).step_by(bound as usize) {
        let count = bound.min(e - first);
        let bytes = count as u64 * inter as u64 * hsz as u64;
        pieces.push((
            first,
            count,
            fp8_weight(ctx, bytes, blocks(inter, hsz, count))?,
            fp8_weight(ctx, bytes, blocks(inter, hsz, count))?,
            fp8_weight(ctx, bytes, blocks(hsz, inter, count))?,
        ));
    }
    let chunks: Vec<ExpertChunk> = pieces
        .iter()
        .map(|(first, count, g, u, d)| ExpertChunk {
            first: *first,
            count: *count,
            gate: Weight::fp8(g),
            up: Weight::fp8(u),
            down: Weight::fp8(d),
        })
        .collect();
    let between = ops.act_quant(ctx, &act, pairs as u32, inter);
    let list = ops.gemm.experts(
        ctx,
        &x,
        &chunks,
        &routes,
        &y,
        &shape,
        &scratch,
        Some(between),
    );
    let refs: Vec<_> = list.iter().collect();
    let (path, units) = match ops.gemm.experts_on_tensor_cores(&chunks, &shape) {
        true => (MatrixPath::Coop, "tensor cores"),
        false => (MatrixPath::Fma, "fma"),
    };
    let name = format!("experts fp8 {top_k} of {e} ({units})");
    // the weights of the experts chosen, read once; the tokens' inputs and outputs
    let chosen = pairs.min(e as u64);
    let flops = 2 * pairs * 3 * inter as u64 * hsz as u64;
    let fp8_bytes = chosen * 3 * inter as u64 * hsz as u64 + 8 * m as u64 * hsz as u64;
    out.push(timed(
        ctx,
        (name, m),
        &refs,
        (fp8_bytes, flops),
        ceilings,
        reps,
        path,
    )?);
    Ok(out)
}

/// The routed experts with f32 weights `(g, u, d)`: grouped (version 2), each of its steps
/// alone, and one token at a time (version 1).
#[allow(clippy::too_many_arguments)]
fn f32_experts(
    ctx: &GpuContext,
    ops: &ModelOps,
    (x, routes, y): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    (g, u, d): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    shape: &ExpertShape,
    scratch: &ExpertScratch,
    ceilings: &Ceilings,
    reps: u32,
) -> Result<Vec<KernelTiming>> {
    let (m, top_k, e, hsz, inter) = (
        shape.rows,
        shape.top_k,
        shape.experts,
        shape.hidden,
        shape.inter,
    );
    let pairs = m as u64 * top_k as u64;
    let chosen = pairs.min(e as u64);
    let bytes = 4 * (chosen * 3 * inter as u64 * hsz as u64 + 2 * m as u64 * hsz as u64);
    let flops = 2 * pairs * 3 * inter as u64 * hsz as u64;
    let chunks = [ExpertChunk {
        first: 0,
        count: e,
        gate: Weight::F32(g),
        up: Weight::F32(u),
        down: Weight::F32(d),
    }];
    let list = ops
        .gemm
        .experts(ctx, x, &chunks, routes, y, shape, scratch, None);
    let refs: Vec<_> = list.iter().collect();
    let name = format!("experts {top_k} of {e}, {hsz}→{inter}→{hsz}");
    let mut out = vec![timed(
        ctx,
        (name, m),
        &refs,
        (bytes, flops),
        ceilings,
        reps,
        MatrixPath::Fma,
    )?];
    // each step alone (their inputs are what the whole run left)
    let names = ["group", "up", "down", "combine"];
    let steps: Vec<_> = list.iter().flat_map(|d| d.steps()).collect();
    for (step, what) in steps.iter().zip(names) {
        let name = format!("  experts: {what}");
        out.push(timed(
            ctx,
            (name, m),
            &[step],
            (0, 0),
            ceilings,
            reps,
            MatrixPath::Fma,
        )?);
    }
    let dims = (top_k, hsz, inter);
    let v1 = [
        ops.expert_up(ctx, x, g, u, routes, scratch.act, m, dims),
        ops.expert_down(ctx, scratch.act, d, routes, y, m, dims),
    ];
    let name = format!("experts v1 {top_k} of {e}");
    out.push(timed(
        ctx,
        (name, m),
        &[&v1[0], &v1[1]],
        (bytes, flops),
        ceilings,
        reps,
        MatrixPath::Fma,
    )?);
    Ok(out)
}

/// MLA's per-head products for `m` rows, on the tiles (`LinearShape::mla_uk`, `mla_uv`: what the
/// model runs) and version 1's `head_linear`: the absorbed W_UK (q_nope · W_UK, 128 → 512 a
/// head) and W_UV (o_lat · W_UVᵀ, 512 → 128 a head), from kv_b_proj.
fn head_products(
    ctx: &GpuContext,
    ops: &ModelOps,
    c: &HfConfig,
    m: u32,
    ceilings: &Ceilings,
    reps: u32,
) -> Result<Vec<KernelTiming>> {
    let (heads, nope, v, kv) = (
        c.num_attention_heads,
        c.qk_nope_head_dim,
        c.v_head_dim,
        c.kv_lora_rank,
    );
    let wkv = heads as u64 * (nope + v) as u64 * kv as u64;
    let widest = (kv + c.qk_rope_head_dim).max(nope + c.qk_rope_head_dim) as u64;
    let x = values(ctx, "x", m as u64 * heads as u64 * widest)?;
    let (w, y) = (
        values(ctx, "kv_b", wkv)?,
        values(ctx, "y", m as u64 * heads as u64 * widest)?,
    );
    let rope = c.qk_rope_head_dim;
    let uk = HeadLinear::mla_uk(m, heads, (nope, rope, v, kv));
    let uv = HeadLinear::mla_uv(m, heads, (nope, v, kv));
    let mut out = Vec::new();
    // W_UK (from its transposed copy; `w` stands in) and W_UV on the tiles, one product a head,
    // as the model runs them
    let weights = heads as u64 * kv as u64 * nope as u64;
    for (name, shape) in [
        (
            "W_UK absorbed",
            LinearShape::mla_uk(m, heads, (nope, rope, kv)),
        ),
        ("W_UV", LinearShape::mla_uv(m, heads, (nope, v, kv))),
    ] {
        let scratch = ctx.storage("split", shape.scratch_bytes().max(4))?;
        let d = ops
            .gemm
            .linear(ctx, (&x, Weight::F32(&w), &y), &shape, Some(&scratch))?;
        let bytes = 4 * (weights + m as u64 * heads as u64 * (shape.k + shape.n) as u64);
        let name = format!("{name} tiles ({} slices)", shape.splits().0);
        out.push(timed(
            ctx,
            (name, m),
            &[&d],
            (bytes, 2 * m as u64 * weights),
            ceilings,
            reps,
            MatrixPath::Fma,
        )?);
    }
    for (name, hl, o) in [("W_UK absorbed", uk, kv), ("W_UV", uv, v)] {
        let d = ops.head_linear(ctx, &x, &w, &y, &hl)?;
        let weights = heads as u64 * hl.k as u64 * o as u64;
        let bytes = 4 * (weights + m as u64 * heads as u64 * (hl.k + o) as u64);
        let flops = 2 * m as u64 * weights;
        let name = format!("head_linear v1 {name}");
        out.push(timed(
            ctx,
            (name, m),
            &[&d],
            (bytes, flops),
            ceilings,
            reps,
            MatrixPath::Fma,
        )?);
    }
    Ok(out)
}
