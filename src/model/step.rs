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

use super::gpu::{Decoder, ModelGpu, Parts, padded_ids};
use super::layer::{LayerRows, Projected};
use crate::config::RunConfig;
use crate::engine::inputs::{NewestAt, Queries, RowKind, RowTarget, StepInputs, Synthetic};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::fill::{FillRange, FillRows, FillSource};
use crate::kernels::model_gemm::LinearShape;
use crate::kernels::model_ops::rope_table;
use crate::kernels::{Dispatch, Fill};
use crate::reference::model::ModelWeights;

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
    /// `[layer][b][position]` the routed experts, best first (empty for a dense layer).
    experts: Vec<Vec<Vec<Vec<u32>>>>,
}

/// What a prompt's prefill chose, per loaded layer: each position's selections and routed
/// experts (none for a dense layer), best first.
pub struct PromptChoices {
    pub selections: Vec<Vec<Vec<i32>>>,
    pub experts: Vec<Vec<Vec<u32>>>,
}

/// A handle on the model's kept buffers that stays with the caller when [`ModelInputs`] moves
/// into the engine: what each step's routers chose.
pub struct ModelProbe {
    parts: Parts,
    batch: u32,
}

impl ModelProbe {
    /// Each loaded layer's routed experts of the last step's rows `[B][top_k]`, best first
    /// (`None` for a dense layer).
    pub fn step_experts(&self, ctx: &GpuContext) -> Result<Vec<Option<Vec<Vec<u32>>>>> {
        let m = self.parts.on(ctx);
        let w = self.parts.w;
        w.layers
            .clone()
            .map(|l| match w.config.is_moe(l) {
                true => m.experts(l, self.batch).map(Some),
                false => Ok(None),
            })
            .collect()
    }
}

/// The model's weights and per-step buffers, as the engine's [`StepInputs`].
pub struct ModelInputs {
    /// The weights on the CPU (for the process: `Box::leak` them once, as both modes' engines
    /// share them), and [`ModelGpu`]'s kernels, uploaded weights and cache dtype.
    w: &'static ModelWeights,
    parts: Parts,
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
            key_rows: RowKind::IndexerKey.stored(run),
            latent_rows: RowKind::Latent.stored(run),
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
            parts: Parts {
                w,
                ops: m.ops,
                uploaded: m.uploaded,
                stored: run.latent_dtype,
            },
        };
        let first: Vec<u32> = match prefill {
            Prefill::Prompts(prompts) => me.prefill(ctx, &prompts)?,
            Prefill::Synthetic { token, seed } => {
                me.synthetic = Some(Synthetic::new(ctx, run, vec![0f32; nl as usize], seed)?);
                vec![token; b as usize]
            }
        };
        ctx.write(&me.tokens, 0, bytemuck::cast_slice(&first));
        Ok(me)
    }

    /// What sequence `b`'s prompt chose in the prefill (prompts only).
    pub fn prompt_choices(&self, b: usize) -> Option<PromptChoices> {
        let p = self.prompts.as_ref()?;
        Some(PromptChoices {
            selections: p.selections.iter().map(|l| l[b].clone()).collect(),
            experts: p.experts.iter().map(|l| l[b].clone()).collect(),
        })
    }

    /// A handle on what each step's routers choose, for after the inputs moved into the engine.
    pub fn probe(&self) -> ModelProbe {
        ModelProbe {
            parts: self.parts.clone(),
            batch: self.batch,
        }
    }

    /// The model's GPU pieces over this context.
    fn gpu<'b>(&self, ctx: &'b GpuContext) -> ModelGpu<'b> {
        self.parts.on(ctx)
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
        let mut experts = vec![Vec::new(); nl];
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
                experts[l].push(std::mem::take(&mut d.experts[l]));
            }
            ctx.submit(enc);
        }
        ctx.check()?;
        self.prompts = Some(PromptRows {
            longest,
            keys,
            rows,
            selections,
            experts,
        });
        Ok(first)
    }

    /// Engine layer `l`'s work before attention (see the module docs) into `q`: the
    /// residual stream's RMSNorm, then [`LayerRows::projections`].
    fn before_attention(&self, ctx: &GpuContext, l: u32, q: &Queries) -> Result<Vec<Dispatch>> {
        let (m, b) = (self.gpu(ctx), self.batch);
        let layer = LayerRows {
            m: &m,
            ml: self.w.layers.start + l,
            rows: b,
        };
        let hsz = self.w.config.hidden_size;
        let mut list = Vec::new();
        if l == 0 {
            list.extend(m.embed(&self.tokens, &self.h, b)?);
        }
        // x, and x as the FP8 linear layers read it (q_a, kv_a, wk share one rounding)
        let x_in = buf(ctx, "x in", b, hsz)?;
        let norm_w = layer.weight("input_layernorm.weight")?;
        list.push(layer.norm((&self.h, &norm_w, None, &self.x), hsz));
        let quants = layer.is_fp8("self_attn.q_a_proj.weight") as usize;
        list.extend(layer.norm_quantised((&self.h, &norm_w, &x_in), hsz, quants));
        let out = Projected {
            q: &q.q,
            q_i: &q.q_i,
            w: &q.w,
            key: &self.new_key[l as usize],
            row: &self.new_row[l as usize],
        };
        list.extend(layer.projections((&self.x, &x_in), (&self.table, &self.pos), &out)?);
        Ok(list)
    }

    /// Engine layer `l`'s work after attention (see the module docs), from `o_lat`: W_UV,
    /// `o_proj` and the residual, the feed-forward block on the RMSNorm of the residual
    /// stream and its residual; after the last layer the head and the argmax.
    fn after(&self, ctx: &GpuContext, l: u32, o_lat: &wgpu::Buffer) -> Result<Vec<Dispatch>> {
        let (m, b) = (self.gpu(ctx), self.batch);
        let layer = LayerRows {
            m: &m,
            ml: self.w.layers.start + l,
            rows: b,
        };
        let c = &self.w.config;
        let (ops, hsz) = (&m.ops, c.hidden_size);
        let attn = buf(ctx, "attention", b, hsz)?;
        let mut list = layer.output(o_lat, &attn)?;
        list.push(ops.add(ctx, &self.h, &attn, b * hsz));
        let norm_w = layer.weight("post_attention_layernorm.weight")?;
        list.push(layer.norm((&self.h, &norm_w, None, &self.x), hsz));
        let x_in = buf(ctx, "ffn in", b, hsz)?;
        let quants = layer.ffn_is_fp8() as usize;
        list.extend(layer.norm_quantised((&self.h, &norm_w, &x_in), hsz, quants));
        let y = buf(ctx, "ffn out", b, hsz)?;
        list.extend(layer.ffn((&self.x, &x_in), &y)?);
        list.push(ops.add(ctx, &self.h, &y, b * hsz));
        if l + 1 == self.w.layers.len() as u32 {
            let norm = m.weight("model.norm.weight")?;
            let eps = c.rms_norm_eps as f32;
            list.push(ops.norm(ctx, &self.h, &norm, None, &self.x, b, hsz, eps));
            let shape = LinearShape::plain(b, hsz, c.vocab_size);
            let head = self.w.lm_head_name();
            list.extend(m.linear_by_name((&self.x, head, &self.logits), shape)?);
            list.push(ops.argmax(ctx, &self.logits, &self.tokens, b, c.vocab_size));
        }
        Ok(list)
    }

    fn rows_of(&self, kind: RowKind) -> FillRows {
        match kind {
            RowKind::IndexerKey => self.key_rows,
            RowKind::Latent => self.latent_rows,
        }
    }
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
    // the model rounds what it caches to one dtype (ModelGpu::stored)
    if run.key_dtype != run.latent_dtype {
        return Err(Error::config(
            "key_dtype",
            run.key_dtype,
            format!(
                "{}, the latent cache's (the model's caches share a dtype)",
                run.latent_dtype
            ),
        ));
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
        let sel = &p.selections[layer as usize];
        let shortest = sel.iter().map(Vec::len).min().unwrap_or(0);
        let n = (windows as usize).min(shortest);
        (0..n)
            .map(|i| {
                // window i: each sequence's position len − n + i, oldest first
                let rows: Vec<&[i32]> = sel.iter().map(|s| &s[s.len() - n + i][..]).collect();
                let ids = padded_ids(&rows, self.w.config.index_topk);
                ctx.upload("warm-up window", &ids)
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}
