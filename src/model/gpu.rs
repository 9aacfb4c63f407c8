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

use super::layer::{LayerRows, Projected};
use crate::config::Dtype;
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::kernels::indexer::{IndexerArgs, IndexerShape};
use crate::kernels::model_gemm::{LinearShape, Weight};
use crate::kernels::model_ops::rope_table;
use crate::kernels::sparse_mla::SparseMlaShape;
use crate::kernels::sparse_mla_naive::SparseMlaNaiveArgs;
use crate::kernels::topk::{TopKArgs, TopKShape};
use crate::kernels::{Dispatch, Indexer, ModelOps, SparseMlaNaive, TopK};
use crate::reference::model::{Fp8Tensor, ModelWeights};
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
    /// What the caches store (the engine's cache dtype): the rows and keys a layer makes are
    /// rounded to it where they are made ([`ModelOps::round_to`]), so that a prompt's
    /// attention reads what decode steps read from the engine's caches.
    pub(super) stored: Dtype,
    /// The most bytes one weight buffer holds (the context's storage binding limit): a larger
    /// weight, a layer's experts or the vocabulary, is bound in pieces.
    pub(super) binding: u64,
    /// FP8 weights stay FP8 on the GPU (bytes and block scales, dequantised as the kernels read
    /// them); false: uploaded as f32 (tests compare the two).
    pub(super) fp8_weights: bool,
}

/// A weight (or a piece of one) on the GPU, as [`Weight`] binds it.
pub(super) enum GpuWeight {
    F32(wgpu::Buffer),
    Fp8 {
        bytes: wgpu::Buffer,
        scales: wgpu::Buffer,
        row0: u32,
    },
}

impl GpuWeight {
    pub fn bound(&self) -> Weight<'_> {
        match self {
            GpuWeight::F32(b) => Weight::F32(b),
            GpuWeight::Fp8 {
                bytes,
                scales,
                row0,
            } => Weight::Fp8 {
                bytes,
                scales,
                row0: *row0,
            },
        }
    }
}

/// What a [`ModelGpu`] is made of besides the context: kept by whoever outlives one borrow of
/// the context (the engine's step inputs), and made into a `ModelGpu` again with [`Parts::on`].
#[derive(Clone)]
pub(super) struct Parts {
    pub w: &'static ModelWeights,
    pub ops: Rc<ModelOps>,
    pub uploaded: Rc<RefCell<HashMap<String, wgpu::Buffer>>>,
    pub stored: Dtype,
}

impl Parts {
    /// The model's GPU pieces over `ctx`.
    pub fn on<'b>(&self, ctx: &'b GpuContext) -> ModelGpu<'b> {
        ModelGpu {
            ctx,
            w: self.w,
            ops: self.ops.clone(),
            uploaded: self.uploaded.clone(),
            stored: self.stored,
            binding: ctx.max_binding(),
            fp8_weights: true,
        }
    }
}

impl<'a> ModelGpu<'a> {
    /// The model with caches that store f32 (exactly what the reference caches).
    pub fn new(ctx: &'a GpuContext, w: &'a ModelWeights) -> Result<Self> {
        Ok(ModelGpu {
            ctx,
            w,
            ops: Rc::new(ModelOps::new(ctx)?),
            uploaded: Rc::default(),
            stored: Dtype::F32,
            binding: ctx.max_binding(),
            fp8_weights: true,
        })
    }

    /// The same model with its FP8 weights uploaded as f32 (what the kernels dequantise them
    /// to, for tests).
    pub fn with_f32_weights(self) -> Self {
        ModelGpu {
            fp8_weights: false,
            ..self
        }
    }

    /// The same model with weights bound in pieces of at most `bytes` (tests of the pieces on
    /// a small model; the context's binding limit is the default).
    pub fn with_binding(self, bytes: u64) -> Self {
        ModelGpu {
            binding: bytes.min(self.ctx.max_binding()),
            ..self
        }
    }

    /// Tensor `name` of the checkpoint as a GPU buffer.
    pub(super) fn weight(&self, name: &str) -> Result<wgpu::Buffer> {
        self.derived(name, || self.w.tensor(name).to_vec())
    }

    /// The `n × n` identity (the strided copies' weight).
    pub(super) fn identity(&self, n: u32) -> Result<wgpu::Buffer> {
        self.derived(&format!("identity {n}"), || {
            (0..n * n).map(|i| (i / n == i % n) as u32 as f32).collect()
        })
    }

    /// Where layer `l`'s router writes its choices for `rows` rows, `[rows, top_k, 2]` (expert
    /// as u32 bits, weight): one buffer per layer and row count, kept so that what a step or a
    /// prompt chose can be read after it ran ([`ModelGpu::experts`]).
    pub(super) fn routes(&self, l: u32, rows: u32) -> Result<wgpu::Buffer> {
        let k = self.w.config.num_experts_per_tok;
        self.derived(&format!("routes of layer {l}, {rows} rows"), || {
            vec![0f32; rows as usize * k as usize * 2]
        })
    }

    /// The experts layer `l`'s router last chose for `rows` rows, best first.
    pub(super) fn experts(&self, l: u32, rows: u32) -> Result<Vec<Vec<u32>>> {
        let k = self.w.config.num_experts_per_tok as usize;
        let r: Vec<u32> = self.ctx.read(&self.routes(l, rows)?)?;
        Ok(r.chunks(2 * k)
            .map(|row| row.iter().step_by(2).copied().collect())
            .collect())
    }

    /// The linear layer `shape` of `x` by the f32 weight `w` into `y` (the tiled kernel, its
    /// split scratch shared by every linear layer over the same rows).
    pub(super) fn linear(
        &self,
        (x, w, y): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        shape: LinearShape,
    ) -> Result<Dispatch> {
        self.linear_bound((x, Weight::F32(w), y), shape)
    }

    /// [`ModelGpu::linear`] of a weight as bound (f32, or FP8 bytes and scales).
    fn linear_bound(
        &self,
        (x, w, y): (&wgpu::Buffer, Weight, &wgpu::Buffer),
        shape: LinearShape,
    ) -> Result<Dispatch> {
        let scratch = match shape.scratch_bytes() {
            0 => None,
            _ => Some(self.split_scratch(shape.rows)?),
        };
        self.ops
            .gemm
            .linear(self.ctx, (x, w, y), &shape, scratch.as_ref())
    }

    /// The linear layer `shape` of `x` by the checkpoint's weight `name` (`[shape.n,
    /// shape.k]`) into `y`: one dispatch, or one per piece of the weight where it is larger
    /// than a storage binding (each piece a range of its output rows, written at its columns).
    /// FP8 weights stay FP8.
    pub(super) fn linear_by_name(
        &self,
        (x, name, y): (&wgpu::Buffer, &str, &wgpu::Buffer),
        shape: LinearShape,
    ) -> Result<Vec<Dispatch>> {
        self.weight_rows(name, shape.k)?
            .into_iter()
            .map(|(first, count, w)| {
                let piece = LinearShape {
                    n: count,
                    yo: shape.yo + first,
                    ..shape
                };
                self.linear_bound((x, w.bound(), y), piece)
            })
            .collect()
    }

    /// FP8 weight `name`, where it is one and stays FP8 on the GPU.
    fn fp8(&self, name: &str) -> Option<&Fp8Tensor> {
        self.w.fp8_tensor(name).filter(|_| self.fp8_weights)
    }

    /// The rows (`k` values each) of weight `name` as buffers of at most one storage binding:
    /// (first row, rows, the piece); the whole weight where it fits.
    pub(super) fn weight_rows(&self, name: &str, k: u32) -> Result<Vec<(u32, u32, GpuWeight)>> {
        let n = (self.w.elements(name) / k as usize) as u32;
        let fp8 = self.fp8(name);
        let per = self.rows_per_binding(k as u64 * if fp8.is_some() { 1 } else { 4 }, n);
        let rows = |first: u32, count: u32| (first * k) as usize..((first + count) * k) as usize;
        (0..n)
            .step_by(per as usize)
            .map(|first| {
                let count = per.min(n - first);
                let key = format!("{name} rows {first}..{}", first + count);
                let piece = match fp8 {
                    Some(f) => GpuWeight::Fp8 {
                        bytes: self.derived_bytes(&key, || f.bytes[rows(first, count)].to_vec())?,
                        scales: self.derived(&format!("{name} scales"), || f.scales.clone())?,
                        row0: first,
                    },
                    None if per >= n => GpuWeight::F32(self.weight(name)?),
                    None => {
                        let t = &self.w.tensor(name)[rows(first, count)];
                        GpuWeight::F32(self.derived(&key, || t.to_vec())?)
                    }
                };
                Ok((first, count, piece))
            })
            .collect()
    }

    /// How many items of `bytes` each (at most `n`, at least 1) one storage binding holds.
    fn rows_per_binding(&self, bytes: u64, n: u32) -> u32 {
        (self.binding / bytes.max(1)).clamp(1, n.max(1) as u64) as u32
    }

    /// The embedding of `tokens` (u32, `rows` of them) into `y` `[rows, hidden]`: one dispatch
    /// per piece of the table (a vocabulary past one storage binding is several), f32.
    pub(super) fn embed(
        &self,
        tokens: &wgpu::Buffer,
        y: &wgpu::Buffer,
        rows: u32,
    ) -> Result<Vec<Dispatch>> {
        let (table, hsz) = ("model.embed_tokens.weight", self.w.config.hidden_size);
        self.weight_rows(table, hsz)?
            .into_iter()
            .map(|(first, count, piece)| match piece {
                GpuWeight::F32(t) => {
                    let ops = &self.ops;
                    Ok(ops.embed(self.ctx, (&t, first, count), tokens, y, rows, hsz))
                }
                // the checkpoint's check allows FP8 for linear weights only
                GpuWeight::Fp8 { .. } => Err(crate::Error::config(
                    table,
                    "FP8",
                    "bf16, f16 or f32 (an embedding, not a linear weight)",
                )),
            })
            .collect()
    }

    /// Layer `l`'s routed experts' weights, concatenated `[experts, …]` per projection, in
    /// pieces of as many whole experts as one storage binding holds: (first, count, gate, up,
    /// down). FP8 experts stay FP8 (each expert's scales after the one before).
    pub(super) fn expert_chunks(&self, l: u32) -> Result<Vec<(u32, u32, [GpuWeight; 3])>> {
        let c = &self.w.config;
        let (e, each) = (
            c.n_routed_experts,
            c.moe_intermediate_size as u64 * c.hidden_size as u64,
        );
        let of = |i: u32, name: &str| format!("model.layers.{l}.mlp.experts.{i}.{name}");
        let fp8 = self.fp8(&of(0, "gate_proj.weight")).is_some();
        let per = self.rows_per_binding(each * if fp8 { 1 } else { 4 }, e);
        (0..e)
            .step_by(per as usize)
            .map(|first| {
                let count = per.min(e - first);
                let part = |name: &str| -> Result<GpuWeight> {
                    let key = format!(
                        "model.layers.{l}.mlp.experts.{first}..{}.{name}",
                        first + count
                    );
                    let experts = first..first + count;
                    if fp8 {
                        let f = |i| self.fp8(&of(i, name)).expect("a layer's experts alike");
                        return Ok(GpuWeight::Fp8 {
                            bytes: self.derived_bytes(&key, || {
                                experts.clone().flat_map(|i| f(i).bytes.clone()).collect()
                            })?,
                            scales: self.derived(&format!("{key} scales"), || {
                                experts.clone().flat_map(|i| f(i).scales.clone()).collect()
                            })?,
                            row0: 0,
                        });
                    }
                    Ok(GpuWeight::F32(self.derived(&key, || {
                        experts
                            .clone()
                            .flat_map(|i| self.w.tensor(&of(i, name)).to_vec())
                            .collect()
                    })?))
                };
                let bufs = [
                    part("gate_proj.weight")?,
                    part("up_proj.weight")?,
                    part("down_proj.weight")?,
                ];
                Ok((first, count, bufs))
            })
            .collect()
    }

    /// The split scratch of every linear layer over `rows` rows: as large as the largest needs.
    fn split_scratch(&self, rows: u32) -> Result<wgpu::Buffer> {
        let most = linear_shapes(&self.w.config, rows)
            .iter()
            .map(LinearShape::scratch_bytes)
            .max()
            .unwrap_or(0);
        self.derived(&format!("linear split scratch, {rows} rows"), || {
            vec![0f32; most as usize / 4]
        })
    }

    /// The buffer of the values `make` gives, made and uploaded once under `key` (a weight, or
    /// one derived from weights: scaled, concatenated, an identity).
    pub(super) fn derived(
        &self,
        key: &str,
        make: impl FnOnce() -> Vec<f32>,
    ) -> Result<wgpu::Buffer> {
        self.uploaded_once(key, make)
    }

    /// [`ModelGpu::derived`] of bytes (FP8 weights).
    fn derived_bytes(&self, key: &str, make: impl FnOnce() -> Vec<u8>) -> Result<wgpu::Buffer> {
        self.uploaded_once(key, make)
    }

    /// Bytes of every buffer this model holds: weights, what it derives from them, the
    /// scratch and routes it keeps (what `generate::model_bytes` plans for, besides the
    /// activations).
    pub fn held_bytes(&self) -> u64 {
        self.uploaded.borrow().values().map(|b| b.size()).sum()
    }

    /// The buffer `make`'s values fill, made and uploaded once under `key`.
    fn uploaded_once<T: bytemuck::Pod>(
        &self,
        key: &str,
        make: impl FnOnce() -> Vec<T>,
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

/// Every linear product of a layer (and the head) for `rows` rows: [`linear_layers`], and MLA's
/// per-head W_UV and W_UK.
pub fn linear_shapes(c: &crate::model::HfConfig, rows: u32) -> Vec<LinearShape> {
    let mut all: Vec<LinearShape> = linear_layers(c)
        .iter()
        .map(|&(k, n)| LinearShape::plain(rows, k, n))
        .collect();
    let (nope, v, kv) = (c.qk_nope_head_dim, c.v_head_dim, c.kv_lora_rank);
    let (heads, rope) = (c.num_attention_heads, c.qk_rope_head_dim);
    all.push(LinearShape::mla_uv(rows, heads, (nope, v, kv)));
    all.push(LinearShape::mla_uk(rows, heads, (nope, rope, kv)));
    all
}

/// Every linear layer of the model as (inputs, outputs): the attention and indexer
/// projections, the router, the dense and shared MLPs (gate and up, down) and the head.
pub fn linear_layers(c: &crate::model::HfConfig) -> Vec<(u32, u32)> {
    let (hsz, ql, heads) = (c.hidden_size, c.q_lora_rank, c.num_attention_heads);
    let (qs, ms) = (
        c.qk_nope_head_dim + c.qk_rope_head_dim,
        c.kv_lora_rank + c.qk_rope_head_dim,
    );
    let shared = c.n_shared_experts * c.moe_intermediate_size;
    vec![
        (hsz, ql),
        (ql, heads * qs),
        (hsz, ms),
        (ql, c.index_n_heads * c.index_head_dim),
        (hsz, c.index_head_dim),
        (hsz, c.index_n_heads),
        (heads * c.v_head_dim, hsz),
        (hsz, c.n_routed_experts),
        (hsz, c.intermediate_size),
        (c.intermediate_size, hsz),
        (hsz, shared),
        (shared, hsz),
        (hsz, c.vocab_size),
    ]
}

/// One layer over a prompt on the GPU: its rows' projections run once
/// ([`LayerRows::projections`] from their normed input), then its lightning indexer and its
/// attention over the caches.
pub struct PromptLayer<'a> {
    layer: LayerRows<'a>,
    /// What the projections made: sparse MLA's queries, the indexer's queries and head weights,
    /// the rows' keys and latent rows.
    q: wgpu::Buffer,
    q_i: wgpu::Buffer,
    w: wgpu::Buffer,
    key: wgpu::Buffer,
    row: wgpu::Buffer,
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
        let (ctx, c) = (m.ctx, &m.w.config);
        let layer = LayerRows { m, ml: l, rows: t };
        let buf = |what: &str, n: u32| ctx.storage(what, t as u64 * n as u64 * 4);
        let row = c.kv_lora_rank + c.qk_rope_head_dim;
        let me = PromptLayer {
            q: buf("q for sparse MLA", c.num_attention_heads * row)?,
            q_i: buf("q_I", c.index_n_heads * c.index_head_dim)?,
            w: buf("w", c.index_n_heads)?,
            key: buf("keys", c.index_head_dim)?,
            row: buf("rows", row)?,
            layer,
            start,
        };
        let fp8 = me.layer.is_fp8("self_attn.q_a_proj.weight");
        let x_in = m.input(x, fp8, t, c.hidden_size)?;
        let table = ctx.upload("rope table", &rope_table(&m.w.inv_freq(), start + t))?;
        let pos = ctx.upload("positions", &(start..start + t).collect::<Vec<u32>>())?;
        let out = Projected {
            q: &me.q,
            q_i: &me.q_i,
            w: &me.w,
            key: &me.key,
            row: &me.row,
        };
        m.run(me.layer.projections((x, &x_in), (&table, &pos), &out)?)?;
        Ok(me)
    }

    fn buf(&self, what: &str, n: u32) -> Result<wgpu::Buffer> {
        self.layer
            .m
            .ctx
            .storage(what, self.layer.rows as u64 * n as u64 * 4)
    }

    /// The t rows of `src` (`n` values each) into `cache` at the rows' positions.
    fn store(&self, src: &wgpu::Buffer, cache: &wgpu::Buffer, n: u32) -> Result<()> {
        let ctx = self.layer.m.ctx;
        let bytes = self.layer.rows as u64 * n as u64 * 4;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, 0, cache, self.start as u64 * n as u64 * 4, bytes);
        ctx.submit(enc);
        ctx.check()
    }

    /// The positions the layer's indexer selects for each row i (at position start + i, over
    /// the positions 0 ..= start + i): `[t][min(k, start + i + 1)]`, best first. The rows'
    /// keys go into `cache` at their positions.
    pub fn indexer_selections(&self, cache: &LayerCache) -> Result<Vec<Vec<i32>>> {
        let (ctx, c, t) = (self.layer.m.ctx, &self.layer.m.w.config, self.layer.rows);
        let (ih, id) = (c.index_n_heads, c.index_head_dim);
        self.store(&self.key, &cache.index_k, id)?;
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
                q: &self.q_i,
                w: &self.w,
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
        self.layer.m.run(vec![idx, topk.bind(ctx, &args)?])?;
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
        let (m, t) = (self.layer.m, self.layer.rows);
        let (ctx, c) = (m.ctx, &m.w.config);
        let (heads, kv) = (c.num_attention_heads, c.kv_lora_rank);
        self.store(&self.row, &cache.rows, kv + c.qk_rope_head_dim)?;
        // sparse MLA: row i over its selected positions
        let ids = ctx.upload("ids", &padded_ids(selections, c.index_topk))?;
        let seq = ctx.upload("seq", &vec![0u32; 2 * t as usize])?;
        let shape = SparseMlaShape {
            heads,
            kv,
            rope: c.qk_rope_head_dim,
            topk: c.index_topk,
            dtype: Dtype::F32,
            softmax_scale: c.softmax_scale() as f32,
        };
        let mla = SparseMlaNaive::new(ctx, &shape)?;
        let (o_lat, lse) = (self.buf("o_lat", heads * kv)?, self.buf("lse", heads)?);
        let attn = self.buf("attention", c.hidden_size)?;
        let mut list = vec![mla.bind(
            ctx,
            &SparseMlaNaiveArgs {
                q: &self.q,
                ids: &ids,
                seq: &seq,
                rows: &cache.rows,
                o_lat: &o_lat,
                lse: &lse,
                b0: 0,
                batch: t,
            },
        )];
        list.extend(self.layer.output(&o_lat, &attn)?);
        m.run(list)?;
        Ok(attn)
    }
}

/// Selections as `[rows, k]` i32 ids, each row −1 padded to k (what the top-k writes).
pub(super) fn padded_ids<S: AsRef<[i32]>>(selections: &[S], k: u32) -> Vec<i32> {
    selections
        .iter()
        .flat_map(|s| {
            let s = s.as_ref();
            (0..k as usize).map(move |j| s.get(j).copied().unwrap_or(-1))
        })
        .collect()
}

/// Layer `l`'s feed-forward block on the GPU for rows `x` `[T, hidden]` (its normed input):
/// SwiGLU for a dense layer; for an MoE layer the router (the gate in f32 on plain x, as
/// DeepSeek's `Gate`), the chosen experts (`expert_up`, `expert_down`) and the shared expert,
/// added on the GPU. FP8 weights read their inputs through `act_quant`. `[T, hidden]`.
pub fn ffn(m: &ModelGpu, l: u32, xb: &wgpu::Buffer, t: u32) -> Result<wgpu::Buffer> {
    let layer = LayerRows { m, ml: l, rows: t };
    let hsz = m.w.config.hidden_size;
    let x_in = m.input(xb, layer.ffn_is_fp8(), t, hsz)?;
    let y = m.ctx.storage("ffn out", t as u64 * hsz as u64 * 4)?;
    m.run(layer.ffn((xb, &x_in), &y)?)?;
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
    /// Each loaded layer's routed experts of every position run so far, best first (none for
    /// a dense layer).
    pub experts: Vec<Vec<Vec<u32>>>,
    len: u32,
    capacity: u32,
}

impl<'a> Decoder<'a> {
    /// [`ModelGpu::held_bytes`] of its model.
    pub fn held_bytes(&self) -> u64 {
        self.m.held_bytes()
    }

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
            experts: vec![Vec::new(); m.w.layers.len()],
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
        let ids = ctx.upload("tokens", tokens)?;
        m.run(m.embed(&ids, &h, t)?)?;
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
            if c.is_moe(l) {
                self.experts[li].extend(m.experts(l, t)?);
            }
            m.run(vec![ops.add(ctx, &h, &f, t * hsz)])?;
        }
        let norm = m.weight("model.norm.weight")?;
        let logits = buf("logits", c.vocab_size)?;
        let mut list = vec![ops.norm(ctx, &h, &norm, None, &x, t, hsz, eps)];
        let shape = LinearShape::plain(t, hsz, c.vocab_size);
        list.extend(m.linear_by_name((&x, w.lm_head_name(), &logits), shape)?);
        m.run(list)?;
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
