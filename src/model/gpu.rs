//! The model on the GPU (issue 15), naive f32 kernels for tiny models, each piece held to
//! `reference::model` by `tests/model.rs`:
//!
//! - [`PromptLayer`]: a layer's lightning indexer and sparse MLA from a checkpoint's weights, over
//!   rows at any positions with causal selection (each row a sequence of its own over the
//!   shared keys), built from [`ModelOps`], the indexer (f32 keys), the top-k and the version-1
//!   sparse MLA (any even RoPE width);
//! - [`ffn`]: a layer's feed-forward block (dense SwiGLU, or the router, the chosen experts and
//!   the shared expert);
//! - [`Decoder`]: the whole forward, prefill and decode over caches of its own ([`generate`],
//!   [`prefill_logits`]).
//!
//! [`ModelGpu`] holds what they share: the kernels and each weight uploaded once. The model in
//! the engine (batches, the offloaded cache) is [`super::step`], built from the same kernels.

use crate::config::Dtype;
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::kernels::indexer::{IndexerArgs, IndexerShape};
use crate::kernels::model_ops::{HeadLinear, Heads, rope_table};
use crate::kernels::sparse_mla::SparseMlaShape;
use crate::kernels::sparse_mla_naive::SparseMlaNaiveArgs;
use crate::kernels::topk::{TopKArgs, TopKShape};
use crate::kernels::{Dispatch, Indexer, ModelOps, SparseMlaNaive, TopK};
use crate::reference::model::{ModelWeights, RopeLayout};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// What the model's GPU pieces share: the context, the weights (as f32 on the CPU), the
/// per-token kernels, and every weight buffer, uploaded the first time it is asked for (a
/// decode step must not upload the model again).
pub struct ModelGpu<'a> {
    pub ctx: &'a GpuContext,
    pub w: &'a ModelWeights,
    pub(super) ops: Rc<ModelOps>,
    pub(super) uploaded: Rc<RefCell<HashMap<String, wgpu::Buffer>>>,
}

impl<'a> ModelGpu<'a> {
    pub fn new(ctx: &'a GpuContext, w: &'a ModelWeights) -> Result<Self> {
        Ok(ModelGpu {
            ctx,
            w,
            ops: Rc::new(ModelOps::new(ctx)?),
            uploaded: Rc::default(),
        })
    }

    /// Tensor `name` of the checkpoint as a GPU buffer.
    pub(super) fn weight(&self, name: &str) -> Result<wgpu::Buffer> {
        self.derived(name, || self.w.tensor(name).to_vec())
    }

    /// The buffer of the values `make` gives, made and uploaded once under `key` (a weight, or
    /// one derived from weights: scaled, concatenated, an identity).
    /// The `n × n` identity (the strided copies' weight).
    pub(super) fn identity(&self, n: u32) -> Result<wgpu::Buffer> {
        self.derived(&format!("identity {n}"), || {
            (0..n * n).map(|i| (i / n == i % n) as u32 as f32).collect()
        })
    }

    pub(super) fn derived(
        &self,
        key: &str,
        make: impl FnOnce() -> Vec<f32>,
    ) -> Result<wgpu::Buffer> {
        if let Some(b) = self.uploaded.borrow().get(key) {
            return Ok(b.clone());
        }
        let b = self.ctx.upload(key, &make())?;
        self.uploaded
            .borrow_mut()
            .insert(key.to_string(), b.clone());
        Ok(b)
    }

    fn run(&self, steps: Vec<Dispatch>) -> Result<()> {
        self.ctx
            .run_pass(None, |p| steps.iter().for_each(|d| d.record(p)))
    }

    /// What a linear layer reads of `x` (`[rows, n]`): x itself, or where its weight is FP8 a
    /// copy through `act_quant` (DeepSeek's `linear`).
    fn input(&self, x: &wgpu::Buffer, fp8: bool, rows: u32, n: u32) -> Result<wgpu::Buffer> {
        if !fp8 {
            return Ok(x.clone());
        }
        let copy = self.ctx.storage("fp8 input", x.size())?;
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(x, 0, &copy, 0, x.size());
        self.ctx.submit(enc);
        self.run(vec![self.ops.act_quant(self.ctx, &copy, rows, n)])?;
        Ok(copy)
    }
}

/// One layer over a prompt on the GPU: its normed input rows `x` `[T, hidden]` uploaded, the
/// query latent `qr` computed, the inputs of FP8 linear layers through `act_quant`.
pub struct PromptLayer<'a> {
    m: &'a ModelGpu<'a>,
    ctx: &'a GpuContext,
    w: &'a ModelWeights,
    ops: &'a ModelOps,
    p: String,
    t: u32,
    /// x, and what the layer's linear layers read of x and of qr (FP8 weights: the round
    /// trip; `weights_proj`, never FP8, reads x).
    x: wgpu::Buffer,
    x_in: wgpu::Buffer,
    qr_in: wgpu::Buffer,
    table: wgpu::Buffer,
    pos: wgpu::Buffer,
    /// The rows' first position: they attend to positions 0 .. start + t of the caches.
    start: u32,
}

/// One layer's caches on the GPU, `capacity` positions: the indexer keys `[cap, index_head_dim]`
/// (after the FP8 round trip) and the attention rows `[cap, kv_lora_rank + rope]` (the latent
/// after the FP8 round trip ‖ the rope'd key part), f32.
pub struct LayerCache {
    pub index_k: wgpu::Buffer,
    pub rows: wgpu::Buffer,
}

impl LayerCache {
    pub fn new(ctx: &GpuContext, w: &ModelWeights, capacity: u32) -> Result<Self> {
        let c = &w.config;
        let cap = capacity as u64;
        Ok(LayerCache {
            index_k: ctx.storage("index keys", cap * c.index_head_dim as u64 * 4)?,
            rows: ctx.storage(
                "latent rows",
                cap * (c.kv_lora_rank + c.qk_rope_head_dim) as u64 * 4,
            )?,
        })
    }
}

impl<'a> PromptLayer<'a> {
    /// Layer `l` over the `t` rows of `x` `[t, hidden]` (its normed input, on the GPU) at
    /// positions `start ..`.
    pub fn new(
        m: &'a ModelGpu<'a>,
        l: u32,
        x: &wgpu::Buffer,
        (t, start): (u32, u32),
    ) -> Result<Self> {
        let (ctx, w) = (m.ctx, m.w);
        let c = &w.config;
        let (hsz, ql) = (c.hidden_size, c.q_lora_rank);
        let mut me = PromptLayer {
            m,
            ctx,
            w,
            ops: &m.ops,
            p: format!("model.layers.{l}."),
            t,
            x: x.clone(),
            x_in: x.clone(),
            qr_in: ctx.storage("qr", t as u64 * ql as u64 * 4)?,
            table: ctx.upload("rope table", &rope_table(&w.inv_freq(), start + t))?,
            pos: ctx.upload("positions", &(start..start + t).collect::<Vec<u32>>())?,
            start,
        };
        me.x_in = me.input(&me.x, "self_attn.q_a_proj.weight", hsz)?;
        let qa = me.buf("q_a", ql)?;
        let qr = me.qr_in.clone();
        me.run(vec![
            me.linear(&me.x_in, "self_attn.q_a_proj.weight", &qa, hsz, ql)?,
            me.norm(&qa, "self_attn.q_a_layernorm.weight", None, &qr, ql)?,
        ])?;
        me.qr_in = me.input(&qr, "self_attn.q_b_proj.weight", ql)?;
        Ok(me)
    }

    fn buf(&self, what: &str, n: u32) -> Result<wgpu::Buffer> {
        self.ctx.storage(what, self.t as u64 * n as u64 * 4)
    }

    /// This layer's weight `name`.
    fn weight(&self, name: &str) -> Result<wgpu::Buffer> {
        self.m.weight(&format!("{}{name}", self.p))
    }

    /// What this layer's linear layer `name` reads of `x` (`[T, n]`).
    fn input(&self, x: &wgpu::Buffer, name: &str, n: u32) -> Result<wgpu::Buffer> {
        let fp8 = self.w.is_fp8(&format!("{}{name}", self.p));
        self.m.input(x, fp8, self.t, n)
    }

    fn linear(
        &self,
        x: &wgpu::Buffer,
        name: &str,
        y: &wgpu::Buffer,
        n: u32,
        o: u32,
    ) -> Result<Dispatch> {
        let weight = self.weight(name)?;
        Ok(self.ops.linear(self.ctx, x, &weight, y, self.t, n, o))
    }

    fn norm(
        &self,
        x: &wgpu::Buffer,
        name: &str,
        bias: Option<&str>,
        y: &wgpu::Buffer,
        n: u32,
    ) -> Result<Dispatch> {
        let c = &self.w.config;
        let weight = self.weight(name)?;
        let b = bias.map(|b| self.weight(b)).transpose()?;
        let eps = if b.is_some() {
            1e-6
        } else {
            c.rms_norm_eps as f32
        };
        Ok(self
            .ops
            .norm(self.ctx, x, &weight, b.as_ref(), y, self.t, n, eps))
    }

    /// The t rows of `src` (`n` values each) into `cache` at the rows' positions.
    fn store(&self, src: &wgpu::Buffer, cache: &wgpu::Buffer, n: u32) -> Result<()> {
        let bytes = self.t as u64 * n as u64 * 4;
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, 0, cache, self.start as u64 * n as u64 * 4, bytes);
        self.ctx.submit(enc);
        self.ctx.check()
    }

    fn run(&self, steps: Vec<Dispatch>) -> Result<()> {
        self.m.run(steps)
    }

    /// Rows `[T, n]` whose heads `heads` of `d` values (`stride` apart, from value `off`) RoPE
    /// rotates.
    fn heads(&self, heads: u32, stride: u32, off: u32, d: u32) -> Heads {
        Heads {
            rows: self.t,
            n: heads * stride,
            heads,
            stride,
            off,
            d,
        }
    }

    /// The positions the layer's indexer selects for each row i (at position start + i, over
    /// the positions 0 ..= start + i): `[t][min(k, start + i + 1)]`, best first. The rows'
    /// keys go into `cache` at their positions.
    pub fn indexer_selections(&self, cache: &LayerCache) -> Result<Vec<Vec<i32>>> {
        let (ctx, c, t) = (self.ctx, &self.w.config, self.t);
        let (hsz, ql) = (c.hidden_size, c.q_lora_rank);
        let (ih, id, rd) = (c.index_n_heads, c.index_head_dim, c.qk_rope_head_dim);
        let (q, k, kn, wts) = (
            self.buf("q", ih * id)?,
            self.buf("k", id)?,
            self.buf("k normed", id)?,
            self.buf("w", ih)?,
        );
        // weights_proj with its scales folded in: · H^-1/2 · d^-1/2 (the q scale is inside the
        // dequantised q)
        let s = ((ih as f64).powf(-0.5) * (id as f64).powf(-0.5)) as f32;
        let wp = format!("{}self_attn.indexer.weights_proj.weight", self.p);
        let wpb = self.m.derived(&format!("{wp} (scaled)"), || {
            self.w.tensor(&wp).iter().map(|&v| v * s).collect()
        })?;
        let rope = |x, heads| {
            self.ops
                .rope(ctx, x, &self.table, &self.pos, heads, RopeLayout::NeoX)
        };
        let qr_in = self.input(&self.qr_in, "self_attn.indexer.wq_b.weight", ql)?;
        let plain_w = self.ops.linear(ctx, &self.x, &wpb, &wts, t, hsz, ih);
        self.run(vec![
            self.linear(&qr_in, "self_attn.indexer.wq_b.weight", &q, ql, ih * id)?,
            rope(&q, self.heads(ih, id, 0, rd))?,
            self.ops.hadamard(ctx, &q, self.heads(ih, id, 0, id))?,
            self.ops.act_quant(ctx, &q, t * ih, id),
            self.linear(&self.x_in, "self_attn.indexer.wk.weight", &k, hsz, id)?,
            self.norm(
                &k,
                "self_attn.indexer.k_norm.weight",
                Some("self_attn.indexer.k_norm.bias"),
                &kn,
                id,
            )?,
            rope(&kn, self.heads(1, id, 0, rd))?,
            self.ops.hadamard(ctx, &kn, self.heads(1, id, 0, id))?,
            self.ops.act_quant(ctx, &kn, t, id),
            plain_w,
        ])?;
        self.store(&kn, &cache.index_k, id)?;
        // row i is a sequence of its own over the keys 0 ..= start + i
        let (start, len) = (self.start, self.start + t);
        let seq: Vec<u32> = (0..t).flat_map(|i| [0, start + i + 1]).collect();
        let seq = ctx.upload("seq", &seq)?;
        let scores = self.buf("index scores", len)?;
        let shape = IndexerShape {
            heads: ih,
            dim: id,
            dtype: Dtype::F32,
        };
        let indexer = Indexer::new(ctx, &shape)?;
        let idx = indexer.bind(
            ctx,
            &IndexerArgs {
                q: &q,
                w: &wts,
                keys: &cache.index_k,
                seq: &seq,
                scores: &scores,
                b0: 0,
                batch: t,
                max_len: len,
                score_stride: len,
            },
        );
        let topk = TopK::new(ctx, &TopKShape { k: c.index_topk })?;
        let ids = ctx.storage("topk", t as u64 * c.index_topk as u64 * 4)?;
        let args = TopKArgs {
            scratch: None,
            scores: &scores,
            seq: &seq,
            topk_indices: &ids,
            b0: 0,
            batch: t,
            score_stride: len,
        };
        self.run(vec![idx, topk.bind(ctx, &args)?])?;
        let got: Vec<i32> = ctx.read(&ids)?;
        let k = c.index_topk as usize;
        Ok(got
            .chunks(k)
            .enumerate()
            .map(|(i, r)| r[..k.min(self.start as usize + i + 1)].to_vec())
            .collect())
    }

    /// The layer's attention output `[T, hidden]` (before the residual) with row t attending
    /// to `selections[t]`: MLA absorbed, its latent through `act_quant` as cached, the
    /// version-1 sparse MLA over f32 rows.
    /// The rows' latent rows go into `cache` at their positions; they attend to the cache.
    pub fn attention(&self, selections: &[Vec<i32>], cache: &LayerCache) -> Result<wgpu::Buffer> {
        let (ctx, c, t) = (self.ctx, &self.w.config, self.t);
        let (hsz, ql, heads) = (c.hidden_size, c.q_lora_rank, c.num_attention_heads);
        let (nope, rd, v, kv) = (
            c.qk_nope_head_dim,
            c.qk_rope_head_dim,
            c.v_head_dim,
            c.kv_lora_rank,
        );
        let (q, kva) = (
            self.buf("q", heads * (nope + rd))?,
            self.buf("kv_a", kv + rd)?,
        );
        let (latent, qm, rows) = (
            self.buf("latent", kv)?,
            self.buf("q for sparse MLA", heads * (kv + rd))?,
            self.buf("rows", kv + rd)?,
        );
        let rope = |x, at| {
            self.ops
                .rope(ctx, x, &self.table, &self.pos, at, RopeLayout::Interleaved)
        };
        let wkv_b = self.weight("self_attn.kv_b_proj.weight")?;
        // a strided copy: `cols` values of each head of x into each head of y
        let copy = |x, xs, y, ys, hs, cols| {
            let hl = strided_copy(t, hs, cols, xs, ys);
            self.ops
                .head_linear(ctx, x, &self.m.identity(cols)?, y, &hl)
        };
        let (qs, ms) = (nope + rd, kv + rd);
        let (q_abs, out) = absorbed(c, t);
        // the latent part of each kv + rope row, copied out for its RMSNorm
        let kva_latent = self.buf("kv_a latent", kv)?;
        self.run(vec![
            self.linear(&self.qr_in, "self_attn.q_b_proj.weight", &q, ql, heads * qs)?,
            rope(&q, self.heads(heads, qs, nope, rd))?,
            self.ops.head_linear(ctx, &q, &wkv_b, &qm, &q_abs)?,
            copy(
                &q,
                (heads * qs, qs, nope),
                &qm,
                (heads * ms, ms, kv),
                heads,
                rd,
            )?,
            self.linear(
                &self.x_in,
                "self_attn.kv_a_proj_with_mqa.weight",
                &kva,
                hsz,
                ms,
            )?,
            copy(&kva, (ms, 0, 0), &kva_latent, (kv, 0, 0), 1, kv)?,
            rope(&kva, self.heads(1, ms, kv, rd))?,
        ])?;
        self.run(vec![
            self.norm(
                &kva_latent,
                "self_attn.kv_a_layernorm.weight",
                None,
                &latent,
                kv,
            )?,
            self.ops.act_quant(ctx, &latent, t, kv),
        ])?;
        self.run(vec![
            copy(&latent, (kv, 0, 0), &rows, (ms, 0, 0), 1, kv)?,
            copy(&kva, (ms, 0, kv), &rows, (ms, 0, kv), 1, rd)?,
        ])?;
        self.store(&rows, &cache.rows, ms)?;
        // sparse MLA: row i over its selected positions (−1 padded to k)
        let k = c.index_topk;
        let ids: Vec<i32> = selections
            .iter()
            .flat_map(|s| (0..k as usize).map(move |j| s.get(j).copied().unwrap_or(-1)))
            .collect();
        let ids = ctx.upload("ids", &ids)?;
        let seq = ctx.upload("seq", &vec![0u32; 2 * t as usize])?;
        let shape = SparseMlaShape {
            heads,
            kv,
            rope: rd,
            topk: k,
            dtype: Dtype::F32,
            softmax_scale: c.softmax_scale() as f32,
        };
        let mla = SparseMlaNaive::new(ctx, &shape)?;
        let (o_lat, lse) = (self.buf("o_lat", heads * kv)?, self.buf("lse", heads)?);
        let o = self.buf("o", heads * v)?;
        self.run(vec![
            mla.bind(
                ctx,
                &SparseMlaNaiveArgs {
                    q: &qm,
                    ids: &ids,
                    seq: &seq,
                    rows: &cache.rows,
                    o_lat: &o_lat,
                    lse: &lse,
                    b0: 0,
                    batch: t,
                },
            ),
            self.ops.head_linear(ctx, &o_lat, &wkv_b, &o, &out)?,
        ])?;
        let o_in = self.input(&o, "self_attn.o_proj.weight", heads * v)?;
        let attn = self.buf("attention", hsz)?;
        self.run(vec![self.linear(
            &o_in,
            "self_attn.o_proj.weight",
            &attn,
            heads * v,
            hsz,
        )?])?;
        Ok(attn)
    }
}

/// MLA's absorbed decode path as per-head products over `rows` rows, `kv_b_proj` as stored
/// (`[heads · (nope + v), kv]`): W_UK on each head's q_nope (`[rows, heads, nope + rope]`) into
/// the first KV values of each head's sparse-MLA query (`[rows, heads, kv + rope]`), and W_UV on
/// each head's o_lat (`[rows, heads, kv]`) into `[rows, heads, v]`.
pub(super) fn absorbed(c: &crate::model::HfConfig, rows: u32) -> (HeadLinear, HeadLinear) {
    let (heads, nope, rd, v, kv) = (
        c.num_attention_heads,
        c.qk_nope_head_dim,
        c.qk_rope_head_dim,
        c.v_head_dim,
        c.kv_lora_rank,
    );
    let (qs, ms) = (nope + rd, kv + rd);
    let uk = HeadLinear {
        rows,
        heads,
        k: nope,
        o: kv,
        xr: heads * qs,
        xh: qs,
        wh: (nope + v) * kv,
        wo: 1,
        wk: kv,
        yr: heads * ms,
        yh: ms,
        ..Default::default()
    };
    let uv = HeadLinear {
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
    };
    (uk, uv)
}

/// A strided copy through an identity of `cols`: `cols` values of each of `heads` heads of x
/// into y, each side's (row, head, first value) strides given.
pub(super) fn strided_copy(
    rows: u32,
    heads: u32,
    cols: u32,
    (xr, xh, xo): (u32, u32, u32),
    (yr, yh, yo): (u32, u32, u32),
) -> HeadLinear {
    HeadLinear {
        rows,
        heads,
        k: cols,
        o: cols,
        xr,
        xh,
        xo,
        wo: cols,
        wk: 1,
        yr,
        yh,
        yo,
        ..Default::default()
    }
}

/// Layer `l`'s feed-forward block on the GPU for rows `x` `[T, hidden]` (its normed input):
/// SwiGLU for a dense layer; for an MoE layer the router (the gate in f32 on plain x, as
/// DeepSeek's `Gate`), the chosen experts (`expert_up`, `expert_down`) and the shared expert,
/// added on the GPU. FP8 weights read their inputs through `act_quant`. `[T, hidden]`.
pub fn ffn(m: &ModelGpu, l: u32, xb: &wgpu::Buffer, t: u32) -> Result<wgpu::Buffer> {
    use crate::kernels::model_ops::Routing;
    let (ctx, w, ops) = (m.ctx, m.w, &m.ops);
    let c = &w.config;
    let (hsz, p) = (c.hidden_size, format!("model.layers.{l}."));
    let buf = |what: &str, n: u64| ctx.storage(what, t as u64 * n * 4);
    // the FP8 round trip where the block's weights are FP8 (all are, or none)
    let fp8 = w.is_fp8(&format!(
        "{p}{}",
        if c.is_moe(l) {
            "mlp.shared_experts.down_proj.weight"
        } else {
            "mlp.down_proj.weight"
        }
    ));
    let x_in = m.input(xb, fp8, t, hsz)?;
    // SwiGLU through `{at}.{gate,up,down}_proj` of width `inter`
    let mlp = |at: &str, inter: u32| -> Result<wgpu::Buffer> {
        let gu = buf("gate | up", 2 * inter as u64)?;
        let half = |yo| HeadLinear {
            rows: t,
            heads: 1,
            k: hsz,
            o: inter,
            xr: hsz,
            wo: hsz,
            wk: 1,
            yr: 2 * inter,
            yo,
            ..Default::default()
        };
        let up = |name: &str| m.weight(&format!("{p}{at}.{name}"));
        let (g, u, d) = (
            up("gate_proj.weight")?,
            up("up_proj.weight")?,
            up("down_proj.weight")?,
        );
        let a = buf("act", inter as u64)?;
        m.run(vec![
            ops.head_linear(ctx, &x_in, &g, &gu, &half(0))?,
            ops.head_linear(ctx, &x_in, &u, &gu, &half(inter))?,
            ops.swiglu(ctx, &gu, &a, t, inter),
        ])?;
        let a_in = m.input(&a, fp8, t, inter)?;
        let y = buf("mlp out", hsz as u64)?;
        m.run(vec![ops.linear(ctx, &a_in, &d, &y, t, inter, hsz)])?;
        Ok(y)
    };
    if !c.is_moe(l) {
        return mlp("mlp", c.intermediate_size);
    }
    let (e, k, inter) = (
        c.n_routed_experts,
        c.num_experts_per_tok,
        c.moe_intermediate_size,
    );
    let gate = m.weight(&format!("{p}mlp.gate.weight"))?;
    let bias = m.weight(&format!("{p}mlp.gate.e_score_correction_bias"))?;
    let logits = buf("gate logits", e as u64)?;
    let routes = buf("routes", 2 * k as u64)?;
    let routing = Routing {
        experts: e,
        groups: c.n_group,
        topk_group: c.topk_group,
        top_k: k,
        scaling: c.routed_scaling_factor as f32,
    };
    m.run(vec![
        ops.linear(ctx, xb, &gate, &logits, t, hsz, e),
        ops.route(ctx, &logits, &bias, &routes, t, routing)?,
    ])?;
    // every expert's weight `name`, concatenated `[experts, …]`
    let all = |name: &str| {
        m.derived(&format!("{p}mlp.experts.*.{name}"), || {
            (0..e)
                .flat_map(|i| w.tensor(&format!("{p}mlp.experts.{i}.{name}")).to_vec())
                .collect()
        })
    };
    let (g, u, d) = (
        all("gate_proj.weight")?,
        all("up_proj.weight")?,
        all("down_proj.weight")?,
    );
    let act = buf("expert act", (k * inter) as u64)?;
    let shape = (k, hsz, inter);
    m.run(vec![
        ops.expert_up(ctx, &x_in, &g, &u, &routes, &act, t, shape),
    ])?;
    let act_in = m.input(&act, fp8, t * k, inter)?;
    let y = buf("experts out", hsz as u64)?;
    m.run(vec![
        ops.expert_down(ctx, &act_in, &d, &routes, &y, t, shape),
    ])?;
    if c.n_shared_experts > 0 {
        let shared = mlp("mlp.shared_experts", c.n_shared_experts * inter)?;
        m.run(vec![ops.add(ctx, &y, &shared, t * hsz)])?;
    }
    Ok(y)
}

/// A sequence decoded on the GPU with its caches (every loaded layer's [`LayerCache`]): each
/// [`Decoder::forward`] runs tokens at the next positions through the whole model, their rows
/// appended to the caches, and returns their logits. A prompt and then one token at a time is
/// prefill then decode; the two give the same logits as one prefill over everything.
pub struct Decoder<'a> {
    m: ModelGpu<'a>,
    /// Each loaded layer's caches.
    pub caches: Vec<LayerCache>,
    /// Each loaded layer's selections of every position run so far, best first.
    pub selections: Vec<Vec<Vec<i32>>>,
    len: u32,
    capacity: u32,
}

impl<'a> Decoder<'a> {
    pub fn new(ctx: &'a GpuContext, w: &'a ModelWeights, capacity: u32) -> Result<Self> {
        Self::with_model(ModelGpu::new(ctx, w)?, capacity)
    }

    /// A decoder over the kernels and weights `m` holds.
    pub fn with_model(m: ModelGpu<'a>, capacity: u32) -> Result<Self> {
        let caches =
            m.w.layers
                .clone()
                .map(|_| LayerCache::new(m.ctx, m.w, capacity))
                .collect::<Result<_>>()?;
        Ok(Decoder {
            selections: vec![Vec::new(); m.w.layers.len()],
            m,
            caches,
            len: 0,
            capacity,
        })
    }

    /// Positions cached so far.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The logits `[n, vocab]` of `tokens` at positions `len .. len + n` (causal, over the
    /// cached positions too): the embedding, each loaded layer's attention (its indexer's
    /// selections read back and bound again: the one round trip through the CPU) and
    /// feed-forward with their residuals, the final norm and the head. Naive f32 kernels:
    /// tiny models.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let m = &self.m;
        let (ctx, w, ops) = (m.ctx, m.w, &m.ops);
        let c = &w.config;
        let (t, hsz, eps) = (tokens.len() as u32, c.hidden_size, c.rms_norm_eps as f32);
        if self.len + t > self.capacity {
            return Err(crate::Error::config(
                "decode length",
                self.len + t,
                format!("≤ the decoder's capacity {}", self.capacity),
            ));
        }
        let buf = |what: &str, n: u32| ctx.storage(what, t as u64 * n as u64 * 4);
        let (h, x) = (buf("h", hsz)?, buf("x", hsz)?);
        let emb = m.weight("model.embed_tokens.weight")?;
        let ids = ctx.upload("tokens", tokens)?;
        m.run(vec![ops.embed(ctx, &emb, &ids, &h, t, hsz)])?;
        for (li, l) in w.layers.clone().enumerate() {
            let p = format!("model.layers.{l}.");
            let norm = m.weight(&format!("{p}input_layernorm.weight"))?;
            m.run(vec![ops.norm(ctx, &h, &norm, None, &x, t, hsz, eps)])?;
            let cache = &self.caches[li];
            let layer = PromptLayer::new(m, l, &x, (t, self.len))?;
            let selections = layer.indexer_selections(cache)?;
            let attn = layer.attention(&selections, cache)?;
            self.selections[li].extend(selections);
            let norm = m.weight(&format!("{p}post_attention_layernorm.weight"))?;
            m.run(vec![
                ops.add(ctx, &h, &attn, t * hsz),
                ops.norm(ctx, &h, &norm, None, &x, t, hsz, eps),
            ])?;
            let f = ffn(m, l, &x, t)?;
            m.run(vec![ops.add(ctx, &h, &f, t * hsz)])?;
        }
        let norm = m.weight("model.norm.weight")?;
        let head = m.weight(match c.tie_word_embeddings {
            true => "model.embed_tokens.weight",
            false => "lm_head.weight",
        })?;
        let logits = buf("logits", c.vocab_size)?;
        m.run(vec![
            ops.norm(ctx, &h, &norm, None, &x, t, hsz, eps),
            ops.linear(ctx, &x, &head, &logits, t, hsz, c.vocab_size),
        ])?;
        self.len += t;
        ctx.read(&logits)
    }
}

/// The logits `[T, vocab]` of every position of `tokens` (a prompt, causal): one
/// [`Decoder::forward`] over a fresh decoder.
pub fn prefill_logits(ctx: &GpuContext, w: &ModelWeights, tokens: &[u32]) -> Result<Vec<f32>> {
    Decoder::new(ctx, w, tokens.len() as u32)?.forward(tokens)
}

/// Greedy generation on the GPU: the prompt in one prefill, then one decode step a token over
/// the caches (the last token chosen is not run). Returns the `new_tokens` tokens.
pub fn generate(
    ctx: &GpuContext,
    w: &ModelWeights,
    prompt: &[u32],
    new_tokens: usize,
) -> Result<Vec<u32>> {
    let vocab = w.config.vocab_size as usize;
    let mut d = Decoder::new(ctx, w, (prompt.len() + new_tokens) as u32)?;
    let mut logits = d.forward(prompt)?;
    let mut out = Vec::new();
    for i in 0..new_tokens {
        let next = crate::reference::model::argmax(&logits[logits.len() - vocab..]);
        out.push(next);
        if i + 1 < new_tokens {
            logits = d.forward(&[next])?;
        }
    }
    Ok(out)
}

/// Greedy generation on the GPU by prefill alone: each new token from the logits of a fresh
/// prefill over everything so far (quadratic in the length: the cross-check of [`generate`]).
pub fn generate_by_prefill(
    ctx: &GpuContext,
    w: &ModelWeights,
    prompt: &[u32],
    new_tokens: usize,
) -> Result<Vec<u32>> {
    let vocab = w.config.vocab_size as usize;
    let mut seq = prompt.to_vec();
    for _ in 0..new_tokens {
        let logits = prefill_logits(ctx, w, &seq)?;
        seq.push(crate::reference::model::argmax(
            &logits[logits.len() - vocab..],
        ));
    }
    Ok(seq[prompt.len()..].to_vec())
}
