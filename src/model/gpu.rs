//! The model on the GPU, its first piece (issue 15): one layer's lightning indexer from a
//! checkpoint's weights, over a prompt's positions with causal selection, built from
//! [`ModelOps`] (the naive f32 linear, norms, NeoX RoPE, Hadamard, the FP8 round trip), the
//! indexer (f32 keys) and the top-k, every step on the GPU. `tests/model.rs` holds it to
//! `reference::model`'s selections. The rest of the forward (MLA, MoE, the engine) is not built.

use crate::config::Dtype;
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::kernels::indexer::{IndexerArgs, IndexerShape};
use crate::kernels::model_ops::{Heads, rope_table};
use crate::kernels::topk::{TopKArgs, TopKShape};
use crate::kernels::{Dispatch, Indexer, ModelOps, TopK};
use crate::reference::model::{ModelWeights, RopeLayout};

/// The positions layer `l`'s indexer selects for each of `x`'s rows (the layer's normed hidden
/// states of a prompt, `[T, hidden]`; row t attends to positions 0 ..= t): `[T][min(k, t + 1)]`,
/// best first, as `reference::model` orders them.
pub fn indexer_selections(
    ctx: &GpuContext,
    w: &ModelWeights,
    l: u32,
    x: &[f32],
) -> Result<Vec<Vec<i32>>> {
    let c = &w.config;
    let (hsz, ql, ih, id, rd) = (
        c.hidden_size,
        c.q_lora_rank,
        c.index_n_heads,
        c.index_head_dim,
        c.qk_rope_head_dim,
    );
    let t = (x.len() / hsz as usize) as u32;
    let ops = ModelOps::new(ctx)?;
    let p = format!("model.layers.{l}.");
    let up = |name: &str| ctx.upload(name, w.tensor(&format!("{p}{name}")));
    // weights_proj with its scales folded in: · H^-1/2 · d^-1/2 (the q scale is inside the
    // dequantised q)
    let s = ((ih as f64).powf(-0.5) * (id as f64).powf(-0.5)) as f32;
    let wp: Vec<f32> = w
        .tensor(&format!("{p}self_attn.indexer.weights_proj.weight"))
        .iter()
        .map(|&v| v * s)
        .collect();
    let (wqa, qnorm, wqb, wk, knw, knb) = (
        up("self_attn.q_a_proj.weight")?,
        up("self_attn.q_a_layernorm.weight")?,
        up("self_attn.indexer.wq_b.weight")?,
        up("self_attn.indexer.wk.weight")?,
        up("self_attn.indexer.k_norm.weight")?,
        up("self_attn.indexer.k_norm.bias")?,
    );
    let wpb = ctx.upload("weights_proj", &wp)?;
    let buf = |what: &str, n: u32| ctx.storage(what, t as u64 * n as u64 * 4);
    let (xb, xq) = (ctx.upload("x", x)?, buf("x (fp8 round trip)", hsz)?);
    let (qa, qr, qrq) = (buf("q_a", ql)?, buf("qr", ql)?, buf("qr (fp8)", ql)?);
    let (q, k, kn, wts) = (
        buf("q", ih * id)?,
        buf("k", id)?,
        buf("k normed", id)?,
        buf("w", ih)?,
    );
    let table = ctx.upload("rope table", &rope_table(&w.inv_freq(), t))?;
    let positions: Vec<u32> = (0..t).collect();
    let pos = ctx.upload("positions", &positions)?;
    // what each linear layer reads: its input through act_quant where its weight is FP8
    let input = |name: &str, copy: &wgpu::Buffer, n: u32| -> Option<Dispatch> {
        w.is_fp8(&format!("{p}{name}"))
            .then(|| ops.act_quant(ctx, copy, t, n))
    };
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&xb, 0, &xq, 0, xb.size());
    let x_fp8 = input("self_attn.q_a_proj.weight", &xq, hsz);
    let x_in = if x_fp8.is_some() { &xq } else { &xb };
    let mut passes: Vec<Vec<Dispatch>> = vec![
        x_fp8.into_iter().collect(),
        vec![ops.linear(ctx, x_in, &wqa, &qa, t, hsz, ql)],
        vec![ops.norm(ctx, &qa, &qnorm, None, &qr, t, ql, c.rms_norm_eps as f32)],
    ];
    for d in passes.drain(..) {
        let mut pass = enc.begin_compute_pass(&Default::default());
        d.iter().for_each(|d| d.record(&mut pass));
    }
    enc.copy_buffer_to_buffer(&qr, 0, &qrq, 0, qr.size());
    let qr_fp8 = input("self_attn.indexer.wq_b.weight", &qrq, ql);
    let qr_in = if qr_fp8.is_some() { &qrq } else { &qr };
    let heads = |rows: u32, heads: u32, d: u32| Heads {
        rows,
        n: heads * id,
        heads,
        stride: id,
        off: 0,
        d,
    };
    let steps: Vec<Dispatch> = qr_fp8
        .into_iter()
        .chain([
            ops.linear(ctx, qr_in, &wqb, &q, t, ql, ih * id),
            ops.rope(ctx, &q, &table, &pos, heads(t, ih, rd), RopeLayout::NeoX)?,
            ops.hadamard(ctx, &q, heads(t, ih, id))?,
            ops.act_quant(ctx, &q, t * ih, id),
            ops.linear(ctx, x_in, &wk, &k, t, hsz, id),
            ops.norm(ctx, &k, &knw, Some(&knb), &kn, t, id, 1e-6),
            ops.rope(ctx, &kn, &table, &pos, heads(t, 1, rd), RopeLayout::NeoX)?,
            ops.hadamard(ctx, &kn, heads(t, 1, id))?,
            ops.act_quant(ctx, &kn, t, id),
            ops.linear(ctx, &xb, &wpb, &wts, t, hsz, ih),
        ])
        .collect();
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        steps.iter().for_each(|d| d.record(&mut pass));
    }
    ctx.submit(enc);
    ctx.check()?;
    // query t is a sequence of its own over keys 0 ..= t
    let seq: Vec<u32> = (0..t).flat_map(|i| [0, i + 1]).collect();
    let seq = ctx.upload("seq", &seq)?;
    let scores = buf("index scores", t)?;
    let indexer = Indexer::new(
        ctx,
        &IndexerShape {
            heads: ih,
            dim: id,
            dtype: Dtype::F32,
        },
    )?;
    let idx = indexer.bind(
        ctx,
        &IndexerArgs {
            q: &q,
            w: &wts,
            keys: &kn,
            seq: &seq,
            scores: &scores,
            b0: 0,
            batch: t,
            max_len: t,
            score_stride: t,
        },
    );
    let topk = TopK::new(ctx, &TopKShape { k: c.index_topk })?;
    let ids = ctx.storage("topk", t as u64 * c.index_topk as u64 * 4)?;
    let sel = topk.bind(
        ctx,
        &TopKArgs {
            scratch: None,
            scores: &scores,
            seq: &seq,
            topk_indices: &ids,
            b0: 0,
            batch: t,
            score_stride: t,
        },
    )?;
    ctx.run_pass(None, |p| {
        idx.record(p);
        sel.record(p);
    })?;
    let got: Vec<i32> = ctx.read(&ids)?;
    Ok(got
        .chunks(c.index_topk as usize)
        .enumerate()
        .map(|(i, r)| r[..(c.index_topk as usize).min(i + 1)].to_vec())
        .collect())
}
