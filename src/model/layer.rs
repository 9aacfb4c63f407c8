//! One decoder layer's work on the GPU as lists of dispatches over `rows` rows, bound once:
//! what [`super::gpu::PromptLayer`] and [`super::gpu::ffn`] run for a prompt, and what
//! [`super::step::ModelInputs`] records in every engine step. Attention itself (the indexer's
//! scores, the top-k, sparse MLA) is the caller's; everything around it is here, once:
//!
//! - [`LayerRows::projections`]: from the layer's normed input, MLA's absorbed queries, the new
//!   latent row, the indexer's queries, key and head weights;
//! - [`LayerRows::output`]: W_UV and `o_proj` on sparse MLA's output;
//! - [`LayerRows::ffn`]: the dense SwiGLU, or the router, the chosen experts and the shared
//!   expert.
//!
//! FP8 linear layers read their inputs through `act_quant` (DeepSeek's `linear`): a buffer
//! only a linear layer reads is quantised in place, one that is read elsewhere too is written
//! twice (a norm run again is the copy, so the list stays bindable once).

use super::gpu::ModelGpu;
use crate::config::Dtype;
use crate::error::Result;
use crate::kernels::Dispatch;
use crate::kernels::model_gemm::{
    ExpertChunk, ExpertScratch, ExpertShape, LinearShape, w_uk_transposed,
};
use crate::kernels::model_ops::{HeadLinear, Heads, Routing};
use crate::reference::model::RopeLayout;

/// Layer `ml` (the checkpoint's numbering) of the model `m` holds, over `rows` rows.
pub(super) struct LayerRows<'m> {
    pub m: &'m ModelGpu<'m>,
    pub ml: u32,
    pub rows: u32,
}

/// Where [`LayerRows::projections`] leaves what attention reads, f32 each.
pub(super) struct Projected<'b> {
    /// `[rows, H, KV + rope]`: q_nope · W_UK ‖ q_pe, sparse MLA's queries.
    pub q: &'b wgpu::Buffer,
    /// `[rows, H_I · D_I]`: the indexer's queries, through `act_quant`.
    pub q_i: &'b wgpu::Buffer,
    /// `[rows, H_I]`: the indexer's head weights, `· H_I^-1/2 · D_I^-1/2` folded in.
    pub w: &'b wgpu::Buffer,
    /// `[rows, D_I]`: the rows' indexer keys, through `act_quant`.
    pub key: &'b wgpu::Buffer,
    /// `[rows, KV + rope]`: the rows' latent rows, act_quant(RMSNorm(c_kv)) ‖ RoPE(k_pe).
    pub row: &'b wgpu::Buffer,
}

impl<'m> LayerRows<'m> {
    /// A buffer of `rows × n` f32 values.
    fn buf(&self, what: &str, n: u32) -> Result<wgpu::Buffer> {
        self.m.ctx.storage(what, self.rows as u64 * n as u64 * 4)
    }

    /// This layer's weight `name` (`model.layers.{ml}.` + name).
    pub fn weight(&self, name: &str) -> Result<wgpu::Buffer> {
        self.m.weight(&self.name(name))
    }

    fn name(&self, name: &str) -> String {
        format!("model.layers.{}.{name}", self.ml)
    }

    /// Whether this layer's linear weight `name` is FP8 (its inputs then go through act_quant).
    pub fn is_fp8(&self, name: &str) -> bool {
        self.m.w.is_fp8(&self.name(name))
    }

    /// Whether the feed-forward block's weights are FP8 (all are, or none).
    pub fn ffn_is_fp8(&self) -> bool {
        self.is_fp8(match self.m.w.config.is_moe(self.ml) {
            true => "mlp.shared_experts.down_proj.weight",
            false => "mlp.down_proj.weight",
        })
    }

    /// `y = x · W_name` over the rows.
    fn linear(
        &self,
        (x, name, y): (&wgpu::Buffer, &str, &wgpu::Buffer),
        n: u32,
        o: u32,
    ) -> Result<Vec<Dispatch>> {
        let name = self.name(name);
        self.m
            .linear_by_name((x, &name, y), LinearShape::plain(self.rows, n, o))
    }

    /// RMSNorm (or LayerNorm with a bias, eps 1e-6) of the rows of `n`.
    pub fn norm(
        &self,
        (x, weight, bias, y): (
            &wgpu::Buffer,
            &wgpu::Buffer,
            Option<&wgpu::Buffer>,
            &wgpu::Buffer,
        ),
        n: u32,
    ) -> Dispatch {
        let eps = match bias {
            Some(_) => 1e-6,
            None => self.m.w.config.rms_norm_eps as f32,
        };
        let ctx = self.m.ctx;
        self.m.ops.norm(ctx, x, weight, bias, y, self.rows, n, eps)
    }

    /// `dst = RMSNorm(src)`, then `act_quant` in place `quants` times: a copy of the norm as
    /// an FP8 linear layer reads it (the plain copy where `quants` is 0).
    pub fn norm_quantised(
        &self,
        (src, weight, dst): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        n: u32,
        quants: usize,
    ) -> Vec<Dispatch> {
        let mut out = vec![self.norm((src, weight, None, dst), n)];
        for _ in 0..quants {
            out.push(self.m.ops.act_quant(self.m.ctx, dst, self.rows, n));
        }
        out
    }

    /// Heads of `d` values `stride` apart from `off`, in the rows.
    fn heads(&self, heads: u32, stride: u32, off: u32, d: u32) -> Heads {
        Heads {
            rows: self.rows,
            n: heads * stride,
            heads,
            stride,
            off,
            d,
        }
    }

    /// A strided copy: `cols` values of each of `hs` heads of x into y, each side's (row,
    /// head, first value) strides given (a per-head product with the identity).
    fn copy(
        &self,
        x: &wgpu::Buffer,
        (xr, xh, xo): (u32, u32, u32),
        y: &wgpu::Buffer,
        (yr, yh, yo): (u32, u32, u32),
        hs: u32,
        cols: u32,
    ) -> Result<Dispatch> {
        let hl = HeadLinear {
            rows: self.rows,
            heads: hs,
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
        };
        let eye = self.m.identity(cols)?;
        self.m.ops.head_linear(self.m.ctx, x, &eye, y, &hl)
    }

    /// From the rows' normed input `x` and `x_in` (x as the FP8 linear layers read it), the
    /// rows at positions `pos` (u32) of RoPE's (cos, sin) `table`: everything attention reads,
    /// into `out`.
    pub fn projections(
        &self,
        (x, x_in): (&wgpu::Buffer, &wgpu::Buffer),
        (table, pos): (&wgpu::Buffer, &wgpu::Buffer),
        out: &Projected,
    ) -> Result<Vec<Dispatch>> {
        let (m, b) = (self.m, self.rows);
        let (ctx, ops, c) = (m.ctx, &m.ops, &m.w.config);
        let (hsz, ql, heads) = (c.hidden_size, c.q_lora_rank, c.num_attention_heads);
        let (nope, rd, v, kv) = (
            c.qk_nope_head_dim,
            c.qk_rope_head_dim,
            c.v_head_dim,
            c.kv_lora_rank,
        );
        let (ih, id) = (c.index_n_heads, c.index_head_dim);
        let (qs, ms) = (nope + rd, kv + rd);
        let fp8 = |name: &str| self.is_fp8(name) as usize;
        let rope = |x: &wgpu::Buffer, at, layout| ops.rope(ctx, x, table, pos, at, layout);
        let mut list = Vec::new();
        // the query latent: as q_b reads it, and as the indexer's wq_b reads that
        let qa = self.buf("q_a", ql)?;
        list.extend(self.linear((x_in, "self_attn.q_a_proj.weight", &qa), hsz, ql)?);
        let qa_norm = self.weight("self_attn.q_a_layernorm.weight")?;
        let (qr, qr_i) = (self.buf("qr", ql)?, self.buf("qr (indexer)", ql)?);
        let q_b = fp8("self_attn.q_b_proj.weight");
        list.extend(self.norm_quantised((&qa, &qa_norm, &qr), ql, q_b));
        let wq_b = q_b + fp8("self_attn.indexer.wq_b.weight");
        list.extend(self.norm_quantised((&qa, &qa_norm, &qr_i), ql, wq_b));
        // MLA's queries, absorbed: q_nope · W_UK ‖ q_pe
        let qf = self.buf("q", heads * qs)?;
        list.extend(self.linear((&qr, "self_attn.q_b_proj.weight", &qf), ql, heads * qs)?);
        let at = self.heads(heads, qs, nope, rd);
        list.push(rope(&qf, at, RopeLayout::Interleaved)?);
        let wkv_b = self.name("self_attn.kv_b_proj.weight");
        let w_uk = m.derived(&format!("{wkv_b}: W_UK transposed"), || {
            let dims = (nope as usize, v as usize, kv as usize);
            w_uk_transposed(m.w.tensor(&wkv_b), heads as usize, dims)
        })?;
        let uk = LinearShape::mla_uk(b, heads, (nope, rd, kv));
        list.push(m.linear((&qf, &w_uk, out.q), uk)?);
        let (from, to) = ((heads * qs, qs, nope), (heads * ms, ms, kv));
        list.push(self.copy(&qf, from, out.q, to, heads, rd)?);
        // the new latent row: act_quant(RMSNorm(c_kv)) ‖ RoPE(k_pe)
        let kva = self.buf("kv_a", ms)?;
        let name = "self_attn.kv_a_proj_with_mqa.weight";
        list.extend(self.linear((x_in, name, &kva), hsz, ms)?);
        let (kva_latent, latent) = (self.buf("kv_a latent", kv)?, self.buf("latent", kv)?);
        list.push(self.copy(&kva, (ms, 0, 0), &kva_latent, (kv, 0, 0), 1, kv)?);
        list.push(rope(
            &kva,
            self.heads(1, ms, kv, rd),
            RopeLayout::Interleaved,
        )?);
        let kv_norm = self.weight("self_attn.kv_a_layernorm.weight")?;
        list.push(self.norm((&kva_latent, &kv_norm, None, &latent), kv));
        list.push(ops.act_quant(ctx, &latent, b, kv));
        list.push(self.copy(&latent, (kv, 0, 0), out.row, (ms, 0, 0), 1, kv)?);
        list.push(self.copy(&kva, (ms, 0, kv), out.row, (ms, 0, kv), 1, rd)?);
        // the indexer: q_I, the new key, the head weights (· H^-1/2 · d^-1/2 folded in; the q
        // scale is inside the dequantised q)
        let name = "self_attn.indexer.wq_b.weight";
        list.extend(self.linear((&qr_i, name, out.q_i), ql, ih * id)?);
        list.push(rope(out.q_i, self.heads(ih, id, 0, rd), RopeLayout::NeoX)?);
        list.push(ops.hadamard(ctx, out.q_i, self.heads(ih, id, 0, id))?);
        list.push(ops.act_quant(ctx, out.q_i, b * ih, id));
        let k = self.buf("k", id)?;
        list.extend(self.linear((x_in, "self_attn.indexer.wk.weight", &k), hsz, id)?);
        let (kn_w, kn_b) = (
            self.weight("self_attn.indexer.k_norm.weight")?,
            self.weight("self_attn.indexer.k_norm.bias")?,
        );
        list.push(self.norm((&k, &kn_w, Some(&kn_b), out.key), id));
        list.push(rope(out.key, self.heads(1, id, 0, rd), RopeLayout::NeoX)?);
        list.push(ops.hadamard(ctx, out.key, self.heads(1, id, 0, id))?);
        list.push(ops.act_quant(ctx, out.key, b, id));
        // the row and the key as the caches store them, so that attention over a prompt reads
        // what decode steps read from the engine's caches: f16 everything, FP8 k_pe as bf16
        let (stored, f16) = (m.stored, m.stored == Dtype::F16);
        let first = if f16 { 0 } else { kv };
        list.extend(ops.round_to(ctx, out.row, self.heads(1, ms, first, ms - first), stored));
        if f16 {
            list.extend(ops.round_to(ctx, out.key, self.heads(1, id, 0, id), stored));
        }
        let s = ((ih as f64).powf(-0.5) * (id as f64).powf(-0.5)) as f32;
        let wp = self.name("self_attn.indexer.weights_proj.weight");
        let wpb = m.derived(&format!("{wp} (scaled)"), || {
            m.w.tensor(&wp).iter().map(|&v| v * s).collect()
        })?;
        list.push(m.linear((x, &wpb, out.w), LinearShape::plain(b, hsz, ih))?);
        Ok(list)
    }

    /// Sparse MLA's output `o_lat` `[rows, H, KV]` through W_UV (each head's o_lat · W_UVᵀ)
    /// and `o_proj` into `attn` `[rows, hidden]`.
    pub fn output(&self, o_lat: &wgpu::Buffer, attn: &wgpu::Buffer) -> Result<Vec<Dispatch>> {
        let (m, b) = (self.m, self.rows);
        let (ctx, ops, c) = (m.ctx, &m.ops, &m.w.config);
        let (heads, nope, v, kv) = (
            c.num_attention_heads,
            c.qk_nope_head_dim,
            c.v_head_dim,
            c.kv_lora_rank,
        );
        let o = self.buf("o", heads * v)?;
        let wkv_b = self.weight("self_attn.kv_b_proj.weight")?;
        let uv = LinearShape::mla_uv(b, heads, (nope, v, kv));
        let mut list = vec![m.linear((o_lat, &wkv_b, &o), uv)?];
        if self.is_fp8("self_attn.o_proj.weight") {
            list.push(ops.act_quant(ctx, &o, b, heads * v));
        }
        let name = "self_attn.o_proj.weight";
        list.extend(self.linear((&o, name, attn), heads * v, c.hidden_size)?);
        Ok(list)
    }

    /// The feed-forward block from the rows' normed input `x` and `x_in` (x as its FP8 layers
    /// read it: [`LayerRows::ffn_is_fp8`]) into `y` `[rows, hidden]`: SwiGLU for a dense
    /// layer; for an MoE layer the router (the gate in f32 on plain x, as DeepSeek's `Gate`),
    /// the chosen experts and the shared expert, added.
    pub fn ffn(
        &self,
        (x, x_in): (&wgpu::Buffer, &wgpu::Buffer),
        y: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let c = &self.m.w.config;
        if !c.is_moe(self.ml) {
            return self.mlp("mlp", c.intermediate_size, (x_in, y));
        }
        let (m, b) = (self.m, self.rows);
        let (ctx, ops) = (m.ctx, &m.ops);
        let (e, k, inter, hsz) = (
            c.n_routed_experts,
            c.num_experts_per_tok,
            c.moe_intermediate_size,
            c.hidden_size,
        );
        let gate = self.weight("mlp.gate.weight")?;
        let bias = self.weight("mlp.gate.e_score_correction_bias")?;
        let (logits, routes) = (self.buf("gate logits", e)?, m.routes(self.ml, b)?);
        let routing = Routing {
            experts: e,
            groups: c.n_group,
            topk_group: c.topk_group,
            top_k: k,
            scaling: c.routed_scaling_factor as f32,
        };
        // every expert's weights, concatenated per projection in pieces of a binding
        let pieces = m.expert_chunks(self.ml)?;
        let chunks: Vec<ExpertChunk> = pieces
            .iter()
            .map(|(first, count, [gate, up, down])| ExpertChunk {
                first: *first,
                count: *count,
                gate: gate.bound(),
                up: up.bound(),
                down: down.bound(),
            })
            .collect();
        let shape = ExpertShape {
            rows: b,
            top_k: k,
            experts: e,
            hidden: hsz,
            inter,
        };
        // the grouping and the pairs' outputs are shared by the layers over these rows
        let (groups, part) = (
            m.derived(&format!("expert groups, {b} rows"), || {
                vec![0f32; shape.group_words() as usize]
            })?,
            m.derived(&format!("expert outputs, {b} rows"), || {
                vec![0f32; (b * k) as usize * hsz as usize]
            })?,
        );
        let act = self.buf("expert act", k * inter)?;
        let scratch = ExpertScratch {
            groups: &groups,
            act: &act,
            part: &part,
        };
        let quant = self
            .ffn_is_fp8()
            .then(|| ops.act_quant(ctx, &act, b * k, inter));
        let mut list = vec![
            m.linear((x, &gate, &logits), LinearShape::plain(b, hsz, e))?,
            ops.route(ctx, &logits, &bias, &routes, b, routing)?,
        ];
        list.extend(
            ops.gemm
                .experts(ctx, x_in, &chunks, &routes, y, &shape, &scratch, quant),
        );
        if c.n_shared_experts > 0 {
            let shared = self.buf("shared expert", hsz)?;
            let width = c.n_shared_experts * inter;
            list.extend(self.mlp("mlp.shared_experts", width, (x_in, &shared))?);
            list.push(ops.add(ctx, y, &shared, b * hsz));
        }
        Ok(list)
    }

    /// SwiGLU through `{at}.{gate,up,down}_proj` of width `inter` from `x_in` into `y`.
    fn mlp(
        &self,
        at: &str,
        inter: u32,
        (x_in, y): (&wgpu::Buffer, &wgpu::Buffer),
    ) -> Result<Vec<Dispatch>> {
        let (m, b, hsz) = (self.m, self.rows, self.m.w.config.hidden_size);
        let (ctx, ops) = (m.ctx, &m.ops);
        let gu = self.buf("gate | up", 2 * inter)?;
        // gate and up side by side in [gate ‖ up] rows
        let half = |yo| LinearShape {
            yr: 2 * inter,
            yo,
            ..LinearShape::plain(b, hsz, inter)
        };
        let (g, u) = (
            self.name(&format!("{at}.gate_proj.weight")),
            self.name(&format!("{at}.up_proj.weight")),
        );
        let a = self.buf("act", inter)?;
        let mut list = m.linear_by_name((x_in, &g, &gu), half(0))?;
        list.extend(m.linear_by_name((x_in, &u, &gu), half(inter))?);
        list.push(ops.swiglu(ctx, &gu, &a, b, inter));
        if self.ffn_is_fp8() {
            list.push(ops.act_quant(ctx, &a, b, inter));
        }
        let name = format!("{at}.down_proj.weight");
        list.extend(self.linear((&a, &name, y), inter, hsz)?);
        Ok(list)
    }
}
