//! Where a decode step's inputs come from: the queries of every layer, and the indexer key and
//! latent row each token adds to the caches.
//!
//! [`StepInputs`] is what the engine asks for; [`Synthetic`] is today's implementation (the
//! model's weights will be another): rows are generated on the GPU by `shaders/fill.wgsl` from a
//! hash of (seed, layer, sequence, token), so every mode receives identical bytes, and the
//! indexer queries follow a random walk with temporal locality, also on the GPU
//! (`shaders/walk.wgsl`): `q ← ρ·q + √(1−ρ²)·noise`, ρ per layer (1 = identical top-k sets,
//! 0 = independent).

use crate::config::Config;
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::kernels::fill::FillRange;
use crate::kernels::walk::WalkArgs;
use crate::kernels::{Dispatch, Fill, Walk};
use crate::workload::Rng;

/// One layer's query buffers (f32), written by the inputs and read by the kernels.
pub struct Queries {
    /// `[B, H_I, D_I]` indexer queries q_I.
    pub q_i: wgpu::Buffer,
    /// `[B, H_I]` indexer head weights.
    pub w: wgpu::Buffer,
    /// `[B, H, KV + rope]` sparse MLA queries (absorbed: q_abs ‖ q_pe).
    pub q: wgpu::Buffer,
}

/// The two kinds of cache rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// Indexer keys `[D_I]`.
    IndexerKey,
    /// MLA latent rows `[KV + rope]` (c_kv ‖ k_pe).
    Latent,
}

/// Where sequence b's row of a token goes in a target buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Row `(b mod per_group) · capacity + token`: a cache of every token, sequences in groups
    /// of `per_group` per buffer (the storage-binding limit), `capacity` rows each.
    Cache { capacity: u32, per_group: u32 },
    /// Row `b` of a `[B, row]` buffer: one row per sequence (the newest only).
    Newest,
}

/// A buffer that receives rows of one kind for sequences `b0 .. b0 + n`.
#[derive(Clone, Copy)]
pub struct RowTarget<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub kind: RowKind,
    pub b0: u32,
    pub n: u32,
    pub place: Place,
}

/// What the engine needs from a source of inputs.
pub trait StepInputs {
    /// Layer `layer`'s query buffers, holding the first step's queries.
    fn queries(&mut self, ctx: &GpuContext, layer: u32) -> Result<Queries>;
    /// Move on to the next token: point what [`StepInputs::newest_rows`] writes at token
    /// `lens[b] − 1` of each sequence (CPU side, before the step's submit).
    fn advance(&mut self, ctx: &GpuContext, lens: &[u32]);
    /// Dispatches that move `layer`'s queries on to the next token, bound once and recorded
    /// first in every step (and warm-up window); `clock[1]` numbers the moves.
    fn next_queries(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
        queries: &Queries,
        clock: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>>;
    /// Dispatches writing the rows of tokens `ranges[i]` of sequence `target.b0 + i` (prefill).
    fn rows(
        &self,
        ctx: &GpuContext,
        target: &RowTarget,
        layer: u32,
        ranges: &[FillRange],
    ) -> Result<Vec<Dispatch>>;
    /// Dispatches writing each sequence's newest row into `target`: bound once, recorded every
    /// step (they follow [`StepInputs::advance`]).
    fn newest_rows(&mut self, ctx: &GpuContext, target: &RowTarget, layer: u32)
    -> Result<Dispatch>;
    /// Device bytes the inputs hold besides the [`Queries`] (tables and the like).
    fn device_bytes(&self) -> u64;
}

const SALT_KEYS: u32 = 0x6b65_7973;
const SALT_LATENT: u32 = 0x6c61_7465;
const SALT_WALK: u32 = 0x7761_6c6b;

/// Hash-generated rows and random-walk queries (see the module docs).
pub struct Synthetic {
    fill: Fill,
    seed: u64,
    rng: Rng,
    /// ρ of each layer.
    rho: Vec<f32>,
    key_words: u32,
    row_words: u32,
    batch: usize,
    index_heads: usize,
    index_dim: usize,
    heads: usize,
    row_dim: usize,
    /// Fill tables `[B]` (base row, token, 1, _) of the newest rows, one per [`Place`].
    newest: Vec<(Place, wgpu::Buffer)>,
}

impl Synthetic {
    pub fn new(ctx: &GpuContext, model: &Config, rho: Vec<f32>, seed: u64) -> Result<Self> {
        Ok(Synthetic {
            fill: Fill::new(ctx)?,
            seed,
            rng: Rng::new(seed),
            rho,
            key_words: model.index_head_dim / 2,
            row_words: model.row_dim() / 2,
            batch: model.batch as usize,
            index_heads: model.index_heads as usize,
            index_dim: model.index_head_dim as usize,
            heads: model.heads as usize,
            row_dim: model.row_dim() as usize,
            newest: Vec::new(),
        })
    }

    fn words_and_salt(&self, kind: RowKind) -> (u32, u32) {
        match kind {
            RowKind::IndexerKey => (self.key_words, SALT_KEYS ^ self.seed as u32),
            RowKind::Latent => (self.row_words, SALT_LATENT ^ self.seed as u32),
        }
    }
}

/// Uniform noise of unit variance.
const UNIT: f32 = 1.732_050_8;

impl StepInputs for Synthetic {
    fn queries(&mut self, ctx: &GpuContext, _layer: u32) -> Result<Queries> {
        let (b, hi, di) = (self.batch, self.index_heads, self.index_dim);
        let rng = &mut self.rng;
        let q_i: Vec<f32> = (0..b * hi * di).map(|_| rng.range(-UNIT, UNIT)).collect();
        let w: Vec<f32> = (0..b * hi)
            .map(|_| rng.range(0.5, 1.5) / ((hi * di) as f32).sqrt())
            .collect();
        let q: Vec<f32> = (0..b * self.heads * self.row_dim)
            .map(|_| rng.range(-0.5, 0.5))
            .collect();
        Ok(Queries {
            q_i: ctx.upload("q_I", &q_i)?,
            w: ctx.upload("w", &w)?,
            q: ctx.upload("q", &q)?,
        })
    }

    fn next_queries(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
        queries: &Queries,
        clock: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let args = WalkArgs {
            clock,
            q: &queries.q_i,
            n: (queries.q_i.size() / 4) as u32,
            layer,
            salt: SALT_WALK ^ self.seed as u32,
            rho: self.rho[layer as usize],
        };
        Ok(vec![Walk::new(ctx)?.bind(ctx, &args)])
    }

    fn advance(&mut self, ctx: &GpuContext, lens: &[u32]) {
        for (place, table) in &self.newest {
            let rows: Vec<[u32; 4]> = (0..lens.len() as u32)
                .map(|b| {
                    let token = lens[b as usize] - 1;
                    let base = match *place {
                        Place::Cache {
                            capacity,
                            per_group,
                        } => (b % per_group) * capacity + token,
                        Place::Newest => b,
                    };
                    [base, token, 1, 0]
                })
                .collect();
            ctx.write(table, 0, bytemuck::cast_slice(&rows));
        }
    }

    fn rows(
        &self,
        ctx: &GpuContext,
        target: &RowTarget,
        layer: u32,
        ranges: &[FillRange],
    ) -> Result<Vec<Dispatch>> {
        let (words, salt) = self.words_and_salt(target.kind);
        self.fill.bind(
            ctx,
            target.buffer,
            words,
            salt,
            layer,
            1.0,
            target.b0,
            ranges,
        )
    }

    fn newest_rows(
        &mut self,
        ctx: &GpuContext,
        target: &RowTarget,
        layer: u32,
    ) -> Result<Dispatch> {
        let table = match self.newest.iter().find(|(p, _)| *p == target.place) {
            Some((_, t)) => t.clone(),
            None => {
                let t = ctx.storage("newest rows table", self.batch as u64 * 16)?;
                self.newest.push((target.place, t.clone()));
                t
            }
        };
        let (words, salt) = self.words_and_salt(target.kind);
        Ok(self.fill.bind_table(
            ctx,
            target.buffer,
            &table,
            words,
            salt,
            layer,
            target.b0,
            target.n,
        ))
    }

    fn device_bytes(&self) -> u64 {
        self.newest.iter().map(|(_, t)| t.size()).sum()
    }
}
