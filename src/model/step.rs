//! The model as the engine's step inputs (issue 15): [`ModelInputs`] makes a decode step of
//! [`crate::engine::Engine`] DeepSeek-V3.2's, for a batch of sequences, in either mode, with
//! every transfer path and overlap schedule, bound once like the rest of the step:
//!
//! ```text
//!   new_token  (layer 0: embed the tokens)  RMSNorm → q_a → RMSNorm → q_b → RoPE (interleaved)
//!              → W_UK absorbed ‖ q_pe = the queries; kv_a → RMSNorm → act_quant ‖ RoPE'd k_pe
//!              = the new latent row; wq_b → RoPE (NeoX) → Hadamard → act_quant = q_I;
//!              wk → LayerNorm → RoPE → Hadamard → act_quant = the new key; weights_proj = w
//!              (every row written where the engine keeps it, in its dtype: shaders/fill.wgsl)
//!   indexer · top-k · resolve · gather · sparse MLA   (the engine's, unchanged)
//!   ffn        W_UV → o_proj → residual → RMSNorm → dense SwiGLU, or router → experts
//!              + shared expert → residual; after the last layer: RMSNorm → lm_head → argmax
//!              = the next tokens, which the next step embeds
//! ```
//!
//! Each op is [`super::gpu`]'s (`ModelOps`, naive f32, FP8 linear layers reading their inputs
//! through `act_quant`), so a step computes what [`super::gpu::Decoder`] computes for one token
//! of each sequence. The prompts' caches come from a [`Decoder`] prefill per sequence (their
//! rows copied into the engine's caches and host store by the same fill as the new tokens');
//! or, for contexts too long to prefill with naive kernels, from the synthetic rows
//! ([`Prefill::Synthetic`]: a decode step of the real model over a hashed context, which costs
//! what a real one costs but whose tokens mean nothing).

use super::gpu::{Decoder, ModelGpu, absorbed, strided_copy};
use crate::config::RunConfig;
use crate::engine::inputs::{NewestAt, Queries, RowKind, RowTarget, StepInputs, Synthetic};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::ModelOps;
use crate::kernels::fill::{FillRange, FillRows, FillSource};
use crate::kernels::model_ops::{HeadLinear, Heads, Routing, rope_table};
use crate::kernels::{Dispatch, Fill};
use crate::reference::model::{ModelWeights, RopeLayout};
use crate::workload::RowLayout;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Where the contexts' cached rows come from.
pub enum Prefill {
    /// Each sequence's prompt, run through the model (a [`Decoder`] prefill on the GPU).
    Prompts(Vec<Vec<u32>>),
    /// Hashed rows of the engine's context lengths (as the synthetic inputs make them, `seed`),
    /// and `token` as every sequence's first token: the real model's decode step over a
    /// context it did not compute.
    Synthetic { token: u32, seed: u64 },
}

/// What the prompts' prefill left: per layer the rows of every sequence `[B, P, width]` (P the
/// longest prompt), and the selections of every prompt position.
struct PromptRows {
    longest: u32,
    keys: Vec<wgpu::Buffer>,
    rows: Vec<wgpu::Buffer>,
    /// `[layer][b][position]` the positions selected, best first.
    selections: Vec<Vec<Vec<Vec<i32>>>>,
}

/// The model's weights and per-step buffers, as the engine's [`StepInputs`].
pub struct ModelInputs {
    /// The weights on the CPU (for the process: `Box::leak` them once, as both modes' engines
    /// share them), and [`ModelGpu`]'s kernels and uploaded weights.
    w: &'static ModelWeights,
    ops: Rc<ModelOps>,
    uploaded: Rc<RefCell<HashMap<String, wgpu::Buffer>>>,
    fill: Fill,
    key_rows: FillRows,
    latent_rows: FillRows,
    batch: u32,
    /// `[B]` u32: each sequence's next token (the prefill's choice, then each step's argmax).
    pub tokens: wgpu::Buffer,
    /// `[B, vocab]` f32: the logits of the last step run.
    pub logits: wgpu::Buffer,
    /// The prefill's logits of each prompt's last position `[B][vocab]` (prompts only).
    pub first_logits: Vec<Vec<f32>>,
    /// `[B]` u32: the position of each sequence's newest token (written by `begin_step`).
    pos: wgpu::Buffer,
    /// RoPE's (cos, sin) for every position the engine can reach.
    table: wgpu::Buffer,
    /// `[B, hidden]`: the residual stream, and a layer's normed input.
    h: wgpu::Buffer,
    x: wgpu::Buffer,
    /// Per engine layer: the new token's key `[B, D_I]` and latent row `[B, KV + rope]`, f32.
    new_key: Vec<wgpu::Buffer>,
    new_row: Vec<wgpu::Buffer>,
    prompts: Option<PromptRows>,
    synthetic: Option<Synthetic>,
}

/// A buffer of `rows × n` f32 values.
fn buf(ctx: &GpuContext, what: &str, rows: u32, n: u32) -> Result<wgpu::Buffer> {
    ctx.storage(what, rows as u64 * n as u64 * 4)
}

impl ModelInputs {
    /// The model `w` (its loaded layers are the engine's layers 0 ..) for the engine run `run`
    /// (its batch, cache dtypes) whose caches hold `capacity` tokens a sequence. With
    /// [`Prefill::Prompts`] the prompts run here; the engine's contexts must be their lengths.
    pub fn new(
        ctx: &GpuContext,
        w: &'static ModelWeights,
        run: &RunConfig,
        capacity: u32,
        prefill: Prefill,
    ) -> Result<Self> {
        let c = w.config.clone();
        let b = run.batch;
        check_run(w, run)?;
        let m = ModelGpu::new(ctx, w)?;
        let nl = w.layers.len() as u32;
        let width = c.kv_lora_rank + c.qk_rope_head_dim;
        let new_key = (0..nl)
            .map(|_| buf(ctx, "new key", b, c.index_head_dim))
            .collect::<Result<_>>()?;
        let new_row = (0..nl)
            .map(|_| buf(ctx, "new row", b, width))
            .collect::<Result<_>>()?;
        let mut me = ModelInputs {
            fill: Fill::new(ctx)?,
            key_rows: FillRows {
                dtype: run.key_dtype,
                layout: RowLayout::Key {
                    dim: c.index_head_dim as usize,
                },
            },
            latent_rows: FillRows {
                dtype: run.latent_dtype,
                layout: RowLayout::Latent {
                    kv: c.kv_lora_rank as usize,
                    rope: c.qk_rope_head_dim as usize,
                },
            },
            batch: b,
            tokens: ctx.storage("tokens", b as u64 * 4)?,
            logits: buf(ctx, "logits", b, c.vocab_size)?,
            first_logits: Vec::new(),
            pos: ctx.storage("positions", b as u64 * 4)?,
            table: ctx.upload("rope table", &rope_table(&w.inv_freq(), capacity))?,
            h: buf(ctx, "h", b, c.hidden_size)?,
            x: buf(ctx, "x", b, c.hidden_size)?,
            new_key,
            new_row,
            prompts: None,
            synthetic: None,
            w,
            ops: m.ops,
            uploaded: m.uploaded,
        };
        let first: Vec<u32> = match prefill {
            Prefill::Prompts(prompts) => me.prefill(ctx, &prompts)?,
            Prefill::Synthetic { token, seed } => {
                me.synthetic = Some(Synthetic::new(ctx, run, vec![0.0; nl as usize], seed)?);
                vec![token; b as usize]
            }
        };
        ctx.write(&me.tokens, 0, bytemuck::cast_slice(&first));
        Ok(me)
    }

    /// The model's GPU pieces over this context.
    fn gpu<'b>(&self, ctx: &'b GpuContext) -> ModelGpu<'b> {
        ModelGpu {
            ctx,
            w: self.w,
            ops: self.ops.clone(),
            uploaded: self.uploaded.clone(),
        }
    }

    /// Run each prompt through the model; keep its rows, selections and last logits. Returns
    /// the first tokens.
    fn prefill(&mut self, ctx: &GpuContext, prompts: &[Vec<u32>]) -> Result<Vec<u32>> {
        let (w, b) = (self.w, self.batch);
        let c = &w.config;
        if prompts.len() != b as usize || prompts.iter().any(|p| p.is_empty()) {
            return Err(Error::config(
                "prompts",
                prompts.len(),
                format!("{b} (the batch), none empty"),
            ));
        }
        let longest = prompts.iter().map(|p| p.len() as u32).max().unwrap_or(1);
        let nl = w.layers.len();
        let width = c.kv_lora_rank + c.qk_rope_head_dim;
        let keys: Vec<_> = (0..nl)
            .map(|_| buf(ctx, "prompt keys", b * longest, c.index_head_dim))
            .collect::<Result<_>>()?;
        let rows: Vec<_> = (0..nl)
            .map(|_| buf(ctx, "prompt rows", b * longest, width))
            .collect::<Result<_>>()?;
        let mut selections = vec![Vec::new(); nl];
        let mut first = Vec::new();
        let vocab = c.vocab_size as usize;
        for (i, p) in prompts.iter().enumerate() {
            let mut d = Decoder::with_model(self.gpu(ctx), p.len() as u32)?;
            let logits = d.forward(p)?;
            let last = logits[logits.len() - vocab..].to_vec();
            first.push(crate::reference::model::argmax(&last));
            self.first_logits.push(last);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            let at = |n: u32| (i as u64 * longest as u64) * n as u64 * 4;
            let len = p.len() as u64;
            for (l, cache) in d.caches.iter().enumerate() {
                let (kb, rb) = (c.index_head_dim as u64 * 4, width as u64 * 4);
                enc.copy_buffer_to_buffer(
                    &cache.index_k,
                    0,
                    &keys[l],
                    at(c.index_head_dim),
                    len * kb,
                );
                enc.copy_buffer_to_buffer(&cache.rows, 0, &rows[l], at(width), len * rb);
                selections[l].push(std::mem::take(&mut d.selections[l]));
            }
            ctx.submit(enc);
        }
        ctx.check()?;
        self.prompts = Some(PromptRows {
            longest,
            keys,
            rows,
            selections,
        });
        Ok(first)
    }

    /// Layer `l`'s weight `name` (`model.layers.{l}.` + name).
    fn weight(&self, ctx: &GpuContext, l: u32, name: &str) -> Result<wgpu::Buffer> {
        self.gpu(ctx).weight(&layer_name(l, name))
    }

    fn is_fp8(&self, l: u32, name: &str) -> bool {
        self.w.is_fp8(&layer_name(l, name))
    }

    /// `y = x · W_name` over the batch's rows.
    fn linear(
        &self,
        ctx: &GpuContext,
        l: u32,
        (x, name, y): (&wgpu::Buffer, &str, &wgpu::Buffer),
        n: u32,
        o: u32,
    ) -> Result<Dispatch> {
        let w = self.weight(ctx, l, name)?;
        Ok(self.ops.linear(ctx, x, &w, y, self.batch, n, o))
    }

    /// RMSNorm (or LayerNorm with a bias) of the batch's rows of `n`.
    fn norm(
        &self,
        ctx: &GpuContext,
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
            None => self.w.config.rms_norm_eps as f32,
        };
        self.ops.norm(ctx, x, weight, bias, y, self.batch, n, eps)
    }

    /// `dst = norm(src)`, then `act_quant` in place `quants` times: what an FP8 linear layer
    /// reads (the plain copy where `quants` is 0). [`super::gpu`] copies and quantises; writing
    /// the norm again is the copy here, so a step stays one bound list.
    #[allow(clippy::too_many_arguments)]
    fn norm_quantised(
        &self,
        ctx: &GpuContext,
        (src, weight, dst): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        n: u32,
        quants: usize,
    ) -> Vec<Dispatch> {
        let mut out = vec![self.norm(ctx, (src, weight, None, dst), n)];
        for _ in 0..quants {
            out.push(self.ops.act_quant(ctx, dst, self.batch, n));
        }
        out
    }

    /// Heads of `d` values `stride` apart from `off`, in the batch's rows.
    fn heads(&self, heads: u32, stride: u32, off: u32, d: u32) -> Heads {
        Heads {
            rows: self.batch,
            n: heads * stride,
            heads,
            stride,
            off,
            d,
        }
    }

    /// Layer `l`'s work before attention (see the module docs) into `q`.
    fn before_attention(&self, ctx: &GpuContext, l: u32, q: &Queries) -> Result<Vec<Dispatch>> {
        let (w, ops, b) = (self.w, &self.ops, self.batch);
        let c = &w.config;
        let ml = w.layers.start + l;
        let (hsz, ql, heads) = (c.hidden_size, c.q_lora_rank, c.num_attention_heads);
        let (nope, rd, kv) = (c.qk_nope_head_dim, c.qk_rope_head_dim, c.kv_lora_rank);
        let (ih, id) = (c.index_n_heads, c.index_head_dim);
        let (qs, ms) = (nope + rd, kv + rd);
        let fp8 = |name: &str| self.is_fp8(ml, name) as usize;
        let mut out = Vec::new();
        if l == 0 {
            let emb = self.gpu(ctx).weight("model.embed_tokens.weight")?;
            out.push(ops.embed(ctx, &emb, &self.tokens, &self.h, b, hsz));
        }
        // x, and x as the FP8 linear layers read it (q_a, kv_a, wk share one rounding)
        let x_in = buf(ctx, "x in", b, hsz)?;
        let norm_w = self.weight(ctx, ml, "input_layernorm.weight")?;
        out.push(self.norm(ctx, (&self.h, &norm_w, None, &self.x), hsz));
        out.extend(self.norm_quantised(
            ctx,
            (&self.h, &norm_w, &x_in),
            hsz,
            fp8("self_attn.q_a_proj.weight"),
        ));
        // the query latent: as q_b reads it, and as the indexer's wq_b reads that
        let qa = buf(ctx, "q_a", b, ql)?;
        out.push(self.linear(ctx, ml, (&x_in, "self_attn.q_a_proj.weight", &qa), hsz, ql)?);
        let qa_norm = self.weight(ctx, ml, "self_attn.q_a_layernorm.weight")?;
        let (qr, qr_i) = (buf(ctx, "qr", b, ql)?, buf(ctx, "qr (indexer)", b, ql)?);
        let q_b = fp8("self_attn.q_b_proj.weight");
        out.extend(self.norm_quantised(ctx, (&qa, &qa_norm, &qr), ql, q_b));
        let wq_b = q_b + fp8("self_attn.indexer.wq_b.weight");
        out.extend(self.norm_quantised(ctx, (&qa, &qa_norm, &qr_i), ql, wq_b));
        // MLA's queries, absorbed: q_nope · W_UK ‖ q_pe
        let qf = buf(ctx, "q", b, heads * qs)?;
        out.push(self.linear(
            ctx,
            ml,
            (&qr, "self_attn.q_b_proj.weight", &qf),
            ql,
            heads * qs,
        )?);
        let rope =
            |x: &wgpu::Buffer, at, layout| ops.rope(ctx, x, &self.table, &self.pos, at, layout);
        out.push(rope(
            &qf,
            self.heads(heads, qs, nope, rd),
            RopeLayout::Interleaved,
        )?);
        let wkv_b = self.weight(ctx, ml, "self_attn.kv_b_proj.weight")?;
        let (q_abs, _) = absorbed(c, b);
        out.push(ops.head_linear(ctx, &qf, &wkv_b, &q.q, &q_abs)?);
        let m = self.gpu(ctx);
        let copy = |x, xs, y, ys, hs, cols| -> Result<Dispatch> {
            let hl = strided_copy(b, hs, cols, xs, ys);
            ops.head_linear(ctx, x, &m.identity(cols)?, y, &hl)
        };
        out.push(copy(
            &qf,
            (heads * qs, qs, nope),
            &q.q,
            (heads * ms, ms, kv),
            heads,
            rd,
        )?);
        // the new latent row: act_quant(RMSNorm(c_kv)) ‖ RoPE(k_pe)
        let kva = buf(ctx, "kv_a", b, ms)?;
        let name = "self_attn.kv_a_proj_with_mqa.weight";
        out.push(self.linear(ctx, ml, (&x_in, name, &kva), hsz, ms)?);
        let (kva_latent, latent) = (buf(ctx, "kv_a latent", b, kv)?, buf(ctx, "latent", b, kv)?);
        out.push(copy(&kva, (ms, 0, 0), &kva_latent, (kv, 0, 0), 1, kv)?);
        out.push(rope(
            &kva,
            self.heads(1, ms, kv, rd),
            RopeLayout::Interleaved,
        )?);
        let kv_norm = self.weight(ctx, ml, "self_attn.kv_a_layernorm.weight")?;
        out.push(self.norm(ctx, (&kva_latent, &kv_norm, None, &latent), kv));
        out.push(ops.act_quant(ctx, &latent, b, kv));
        let row = &self.new_row[l as usize];
        out.push(copy(&latent, (kv, 0, 0), row, (ms, 0, 0), 1, kv)?);
        out.push(copy(&kva, (ms, 0, kv), row, (ms, 0, kv), 1, rd)?);
        // the indexer: q_I, the new key, the head weights (· H^-1/2 · d^-1/2 folded in)
        let name = "self_attn.indexer.wq_b.weight";
        out.push(self.linear(ctx, ml, (&qr_i, name, &q.q_i), ql, ih * id)?);
        out.push(rope(&q.q_i, self.heads(ih, id, 0, rd), RopeLayout::NeoX)?);
        out.push(ops.hadamard(ctx, &q.q_i, self.heads(ih, id, 0, id))?);
        out.push(ops.act_quant(ctx, &q.q_i, b * ih, id));
        let (k, key) = (buf(ctx, "k", b, id)?, &self.new_key[l as usize]);
        out.push(self.linear(ctx, ml, (&x_in, "self_attn.indexer.wk.weight", &k), hsz, id)?);
        let (kn_w, kn_b) = (
            self.weight(ctx, ml, "self_attn.indexer.k_norm.weight")?,
            self.weight(ctx, ml, "self_attn.indexer.k_norm.bias")?,
        );
        out.push(self.norm(ctx, (&k, &kn_w, Some(&kn_b), key), id));
        out.push(rope(key, self.heads(1, id, 0, rd), RopeLayout::NeoX)?);
        out.push(ops.hadamard(ctx, key, self.heads(1, id, 0, id))?);
        out.push(ops.act_quant(ctx, key, b, id));
        let s = ((ih as f64).powf(-0.5) * (id as f64).powf(-0.5)) as f32;
        let wp = layer_name(ml, "self_attn.indexer.weights_proj.weight");
        let wpb = m.derived(&format!("{wp} (scaled)"), || {
            w.tensor(&wp).iter().map(|&v| v * s).collect()
        })?;
        out.push(ops.linear(ctx, &self.x, &wpb, &q.w, b, hsz, ih));
        Ok(out)
    }

    /// Layer `l`'s work after attention (see the module docs), from `o_lat`.
    fn after(&self, ctx: &GpuContext, l: u32, o_lat: &wgpu::Buffer) -> Result<Vec<Dispatch>> {
        let (w, ops, b) = (self.w, &self.ops, self.batch);
        let c = &w.config;
        let ml = w.layers.start + l;
        let (hsz, heads, v) = (c.hidden_size, c.num_attention_heads, c.v_head_dim);
        let eps = c.rms_norm_eps as f32;
        let fp8 = |name: &str| self.is_fp8(ml, name);
        let mut out = Vec::new();
        // W_UV, o_proj, the residual
        let o = buf(ctx, "o", b, heads * v)?;
        let wkv_b = self.weight(ctx, ml, "self_attn.kv_b_proj.weight")?;
        let (_, uv) = absorbed(c, b);
        out.push(ops.head_linear(ctx, o_lat, &wkv_b, &o, &uv)?);
        if fp8("self_attn.o_proj.weight") {
            out.push(ops.act_quant(ctx, &o, b, heads * v));
        }
        let attn = buf(ctx, "attention", b, hsz)?;
        out.push(self.linear(
            ctx,
            ml,
            (&o, "self_attn.o_proj.weight", &attn),
            heads * v,
            hsz,
        )?);
        out.push(ops.add(ctx, &self.h, &attn, b * hsz));
        // the feed-forward block on RMSNorm(h), and its residual
        let norm_w = self.weight(ctx, ml, "post_attention_layernorm.weight")?;
        out.push(self.norm(ctx, (&self.h, &norm_w, None, &self.x), hsz));
        let down = match c.is_moe(ml) {
            true => "mlp.shared_experts.down_proj.weight",
            false => "mlp.down_proj.weight",
        };
        let quant = fp8(down) as usize;
        let x_in = buf(ctx, "ffn in", b, hsz)?;
        out.extend(self.norm_quantised(ctx, (&self.h, &norm_w, &x_in), hsz, quant));
        let y = buf(ctx, "ffn out", b, hsz)?;
        if c.is_moe(ml) {
            out.extend(self.moe(ctx, ml, (&x_in, &y), quant == 1)?);
        } else {
            out.extend(self.mlp(ctx, ml, "mlp", c.intermediate_size, (&x_in, &y), quant == 1)?);
        }
        out.push(ops.add(ctx, &self.h, &y, b * hsz));
        if l + 1 == w.layers.len() as u32 {
            let m = self.gpu(ctx);
            let norm = m.weight("model.norm.weight")?;
            let head = m.weight(match c.tie_word_embeddings {
                true => "model.embed_tokens.weight",
                false => "lm_head.weight",
            })?;
            out.push(ops.norm(ctx, &self.h, &norm, None, &self.x, b, hsz, eps));
            out.push(ops.linear(ctx, &self.x, &head, &self.logits, b, hsz, c.vocab_size));
            out.push(ops.argmax(ctx, &self.logits, &self.tokens, b, c.vocab_size));
        }
        Ok(out)
    }

    /// SwiGLU through `{at}.{gate,up,down}_proj` of width `inter` from `x_in` into `y`.
    fn mlp(
        &self,
        ctx: &GpuContext,
        ml: u32,
        at: &str,
        inter: u32,
        (x_in, y): (&wgpu::Buffer, &wgpu::Buffer),
        fp8: bool,
    ) -> Result<Vec<Dispatch>> {
        let (ops, b, hsz) = (&self.ops, self.batch, self.w.config.hidden_size);
        let gu = buf(ctx, "gate | up", b, 2 * inter)?;
        let half = |yo| HeadLinear {
            rows: b,
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
        let g = self.weight(ctx, ml, &format!("{at}.gate_proj.weight"))?;
        let u = self.weight(ctx, ml, &format!("{at}.up_proj.weight"))?;
        let a = buf(ctx, "act", b, inter)?;
        let mut out = vec![
            ops.head_linear(ctx, x_in, &g, &gu, &half(0))?,
            ops.head_linear(ctx, x_in, &u, &gu, &half(inter))?,
            ops.swiglu(ctx, &gu, &a, b, inter),
        ];
        if fp8 {
            out.push(ops.act_quant(ctx, &a, b, inter));
        }
        let name = format!("{at}.down_proj.weight");
        out.push(self.linear(ctx, ml, (&a, &name, y), inter, hsz)?);
        Ok(out)
    }

    /// The router (on plain x), the chosen experts and the shared expert, into `y`.
    fn moe(
        &self,
        ctx: &GpuContext,
        ml: u32,
        (x_in, y): (&wgpu::Buffer, &wgpu::Buffer),
        fp8: bool,
    ) -> Result<Vec<Dispatch>> {
        let (w, ops, b) = (self.w, &self.ops, self.batch);
        let c = &w.config;
        let (e, k, inter, hsz) = (
            c.n_routed_experts,
            c.num_experts_per_tok,
            c.moe_intermediate_size,
            c.hidden_size,
        );
        let gate = self.weight(ctx, ml, "mlp.gate.weight")?;
        let bias = self.weight(ctx, ml, "mlp.gate.e_score_correction_bias")?;
        let (logits, routes) = (
            buf(ctx, "gate logits", b, e)?,
            buf(ctx, "routes", b, 2 * k)?,
        );
        let routing = Routing {
            experts: e,
            groups: c.n_group,
            topk_group: c.topk_group,
            top_k: k,
            scaling: c.routed_scaling_factor as f32,
        };
        let m = self.gpu(ctx);
        let p = layer_name(ml, "");
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
        let act = buf(ctx, "expert act", b, k * inter)?;
        let shape = (k, hsz, inter);
        let mut out = vec![
            ops.linear(ctx, &self.x, &gate, &logits, b, hsz, e),
            ops.route(ctx, &logits, &bias, &routes, b, routing)?,
            ops.expert_up(ctx, x_in, &g, &u, &routes, &act, b, shape),
        ];
        if fp8 {
            out.push(ops.act_quant(ctx, &act, b * k, inter));
        }
        out.push(ops.expert_down(ctx, &act, &d, &routes, y, b, shape));
        if c.n_shared_experts > 0 {
            let shared = buf(ctx, "shared expert", b, hsz)?;
            let width = c.n_shared_experts * inter;
            let at = "mlp.shared_experts";
            out.extend(self.mlp(ctx, ml, at, width, (x_in, &shared), fp8)?);
            out.push(ops.add(ctx, y, &shared, b * hsz));
        }
        Ok(out)
    }

    fn rows_of(&self, kind: RowKind) -> FillRows {
        match kind {
            RowKind::IndexerKey => self.key_rows,
            RowKind::Latent => self.latent_rows,
        }
    }
}

/// `model.layers.{l}.{name}`.
fn layer_name(l: u32, name: &str) -> String {
    format!("model.layers.{l}.{name}")
}

/// The engine run must be this model's: its dims, its layers, its softmax scale.
fn check_run(w: &ModelWeights, run: &RunConfig) -> Result<()> {
    let (c, m) = (&w.config, &run.model);
    let pairs = [
        ("heads", m.heads, c.num_attention_heads),
        ("kv_lora_rank", m.kv_lora_rank, c.kv_lora_rank),
        ("qk_rope_head_dim", m.qk_rope_head_dim, c.qk_rope_head_dim),
        ("qk_nope_head_dim", m.qk_nope_head_dim, c.qk_nope_head_dim),
        ("index_heads", m.index_heads, c.index_n_heads),
        ("index_head_dim", m.index_head_dim, c.index_head_dim),
        ("topk", m.topk, c.index_topk),
        ("layers", run.layers, w.layers.len() as u32),
    ];
    for (field, got, want) in pairs {
        if got != want {
            return Err(Error::config(field, got, format!("{want}, the model's")));
        }
    }
    Ok(())
}

impl StepInputs for ModelInputs {
    fn queries(&mut self, ctx: &GpuContext, _layer: u32) -> Result<Queries> {
        let c = &self.w.config;
        let b = self.batch;
        let row = c.kv_lora_rank + c.qk_rope_head_dim;
        Ok(Queries {
            q_i: buf(ctx, "q_I", b, c.index_n_heads * c.index_head_dim)?,
            w: buf(ctx, "w", b, c.index_n_heads)?,
            q: buf(ctx, "q", b, c.num_attention_heads * row)?,
        })
    }

    fn next_queries(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
        queries: &Queries,
        _clock: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        self.before_attention(ctx, layer, queries)
    }

    fn rows(
        &self,
        ctx: &GpuContext,
        target: &RowTarget,
        layer: u32,
        ranges: &[FillRange],
    ) -> Result<Vec<Dispatch>> {
        if let Some(s) = &self.synthetic {
            return s.rows(ctx, target, layer, ranges);
        }
        let p = self.prompts.as_ref().expect("prompts or synthetic rows");
        let src = FillSource {
            buffer: match target.kind {
                RowKind::IndexerKey => &p.keys[layer as usize],
                RowKind::Latent => &p.rows[layer as usize],
            },
            seq_rows: p.longest,
            token_rows: 1,
        };
        let rows = self.rows_of(target.kind);
        let fill = (0, layer, 1.0);
        self.fill.bind_from(
            ctx,
            target.buffer,
            rows,
            Some(&src),
            fill,
            target.b0,
            ranges,
        )
    }

    fn newest_rows(
        &mut self,
        ctx: &GpuContext,
        target: &RowTarget,
        at: NewestAt,
        layer: u32,
        seq: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let src = FillSource {
            buffer: match target.kind {
                RowKind::IndexerKey => &self.new_key[layer as usize],
                RowKind::Latent => &self.new_row[layer as usize],
            },
            seq_rows: 1,
            token_rows: 0,
        };
        Ok(vec![self.fill.bind_newest_from(
            ctx,
            target.buffer,
            seq,
            self.rows_of(target.kind),
            Some(&src),
            (0, layer),
            target.b0,
            target.n,
            at == NewestAt::BatchRow,
        )])
    }

    fn begin_step(&mut self, ctx: &GpuContext, lens: &[u32]) {
        let pos: Vec<u32> = lens.iter().map(|&t| t - 1).collect();
        ctx.write(&self.pos, 0, bytemuck::cast_slice(&pos));
    }

    fn after_attention(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
        o_lat: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        self.after(ctx, layer, o_lat)
    }

    fn warmup_windows(
        &self,
        ctx: &GpuContext,
        layer: u32,
        windows: u32,
    ) -> Result<Option<Vec<wgpu::Buffer>>> {
        let Some(p) = &self.prompts else {
            // a hashed context has no selections of its own: the pool starts cold
            return Ok(Some(Vec::new()));
        };
        let k = self.w.config.index_topk as usize;
        let sel = &p.selections[layer as usize];
        let shortest = sel.iter().map(Vec::len).min().unwrap_or(0);
        let n = (windows as usize).min(shortest);
        (0..n)
            .map(|i| {
                // window i: each sequence's position len − n + i, oldest first
                let ids: Vec<i32> = sel
                    .iter()
                    .flat_map(|s| {
                        let row = &s[s.len() - n + i];
                        (0..k).map(move |j| row.get(j).copied().unwrap_or(-1))
                    })
                    .collect();
                ctx.upload("warm-up window", &ids)
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}
