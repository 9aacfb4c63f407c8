//! The decode engine: a batch of sequences through L layers, in **resident** mode (the whole latent
//! cache on the GPU) or **offload** mode (host store + LRU staging pool). One decode step:
//!
//! ```text
//!  for each layer, all sequences at once, one command buffer (zero-copy path: no CPU round trip):
//!    new_token   the new token's indexer key → keys; its latent row → resident cache | new rows
//!    write_back  (offload) the new latent row → pool slot P−1 and the host store (zero-copy)
//!    indexer     q_I, w, keys (T_b each)      → index_score [B, T]
//!    topk        index_score                  → topk_indices [B, k]          (token ids)
//!    resolve     (offload) token ids          → slot ids, copy list          (GPU LRU)
//!    gather      (offload) copy list          → pool rows, from host RAM     (zero-copy)
//!    sparse_mla  the rows the ids name        → o_lat [B, H, KV], lse [B, H]
//!  then, into one host-mapped buffer: timestamps, resolve counts (and top-k ids for a trace)
//! ```
//!
//! With `--overlap` ([`TransferOverlap`], [`LayerSchedule`]) a layer's gather runs inside a
//! dispatch that computes: `dba:N` runs the indexer … gather chunk by chunk over the batch's
//! sequences, each chunk's gather inside the next chunk's indexer dispatch (the same bits);
//! `da` orders the ids hits first and gathers the misses inside sparse MLA's scoring of the
//! hits (within the kernel's tolerance). docs/PERF.md "Overlap in the engine".
//!
//! **Bind once, record many.** Every dispatch of a step, with its bind groups, is built when the
//! engine is made; kernels come from the context's pipeline cache (nothing compiles per engine).
//! What changes from step to step — sequence lengths, the step number, the queries — reaches
//! the shaders through `queue.write_buffer` into buffers that already exist. A step is one
//! submit and no wait: its readback is mapped asynchronously ([`readback`]) and read when the
//! CPU is a few steps ahead or at [`Engine::finish`]. The CPU transfer paths (staging, per-row,
//! a process-memory host store) are the exception: they must see the GPU's copy list or rows,
//! so the engine submits and waits where the cache says so.
//!
//! Both modes run the same sparse MLA kernel over the same ids in the same order on rows with the
//! same bytes ([`inputs::Synthetic`]), so their outputs are bit-identical; `tests/engine.rs`
//! checks it, and checks one layer against the CPU reference.

pub mod chunks;
pub mod inputs;
mod options;
mod plan;
pub mod readback;
mod stats;

pub use chunks::choose_schedule;
pub use inputs::{StepInputs, Synthetic};
pub use options::{EngineOptions, LayerSchedule, MAX_CHUNKS, Mode, ModelRef, TransferOverlap};
pub use plan::MemoryPlan;
pub use stats::{Stage, StageTimes, Stats, TimelineBar};

use crate::cache::{
    CacheCounters, CacheShape, Fetch, LayerDispatches, NewRows, OffloadCache, PoolSize,
};
use crate::clock::Instant;
use crate::error::{Error, Result};
use crate::gpu::block_on;
use crate::gpu::{GpuContext, GpuTimer, timed_pass};
use crate::kernels::da_order::DaOrderArgs;
use crate::kernels::digest::DigestArgs;
use crate::kernels::fill::FillRange;
use crate::kernels::fp8_quant::Fp8RowShape;
use crate::kernels::indexer::IndexerArgs;
use crate::kernels::overlap::OverlapArgs;
use crate::kernels::sparse_mla::{AnySparseMla, SparseMlaArgs, SparseMlaScratch};
use crate::kernels::topk::{TopKArgs, TopKScratch};
use crate::kernels::{DaOrder, Digest, Dispatch, Fp8Quant, Indexer, Overlap, TopK};
use inputs::{NewestAt, Queries, RowKind, RowTarget};
use readback::ReadbackRing;

/// Steps the CPU may run ahead of the readbacks it has read.
const READBACK_DEPTH: usize = 3;

/// One layer's device buffers.
struct Layer {
    keys: Vec<wgpu::Buffer>,   // per group [n, cap] keys (key_dtype)
    latent: Vec<wgpu::Buffer>, // per group [n, cap] latent rows (latent_dtype; resident)
    queries: Queries,
    /// FP8 keys: the indexer queries quantised per head, `[B · H_I]` rows in the FP8 key cache's
    /// layout (what the indexer reads instead of `queries.q_i`).
    q_fp8: Option<wgpu::Buffer>,
    topk_indices: wgpu::Buffer, // [B, k] i32
    o_lat: wgpu::Buffer,        // [B, H, KV] f32
    lse: wgpu::Buffer,          // [B, H] f32
}

/// One layer's dispatches, bound once.
struct LayerWork {
    /// The inputs' move to the next token's queries, then its key and row.
    next_queries: Vec<Dispatch>,
    new_token: Vec<Dispatch>,
    indexer: Vec<Dispatch>,
    topk: Dispatch,
    cache: Option<LayerDispatches>,
    sparse_mla: Vec<Dispatch>,
    /// Step-to-step overlap and output digests (untimed; only when asked for).
    observe: Vec<Dispatch>,
    /// The overlapped selection and fetch (`--overlap` with more than one chunk, offload,
    /// zero-copy): what runs instead of `indexer`, `topk` and the cache's resolve and gather.
    chunked: Option<ChunkedWork>,
    /// DA (`--overlap da`, offload, zero-copy): what runs instead of the gather and `sparse_mla`.
    da: Option<DaWork>,
    /// The inputs' work on the attention output (the model's; none for synthetic inputs).
    after: Vec<Dispatch>,
}

/// One layer's DA ([`LayerSchedule::Da`]): after the serial selection and resolve, the ids
/// ordered hits first; then, per host-store group, the coop sparse MLA's two dispatches (the
/// misses gathered inside the first), or elsewhere the gathers and then sparse MLA over the
/// ordered ids.
struct DaWork {
    order: Dispatch,
    attend: Vec<Dispatch>,
    /// Gather dispatches among them, fused ones included.
    gathers: usize,
}

/// One layer's selection and fetch in chunks of the batch ([`TransferOverlap`]): chunk by
/// chunk its indexer, top-k and resolve, the previous chunk's gather inside (or beside) its
/// indexer, then the last chunk's gather.
struct ChunkedWork {
    chunks: Vec<ChunkWork>,
    /// The last chunk's gather, the one left in the open (none with `omit_gathers`).
    last_gather: Option<Dispatch>,
}

struct ChunkWork {
    /// Its indexer; from the second chunk on, with the coop indexer, the previous chunk's
    /// gather runs in its first workgroups.
    indexer: Dispatch,
    /// A plain indexer's grid follows the longest sequence (`update_grids`); a fused one was
    /// bound for the capacity (the tiles past a sequence's end return at once).
    follows_lengths: bool,
    /// The previous chunk's gather as a dispatch of its own, where it could not be fused.
    gather_beside: Option<Dispatch>,
    topk: Dispatch,
    resolve: Dispatch,
    sequences: u32,
}

/// Per layer `[B, capacity]` marks and `[B]` sums of [`crate::kernels::Overlap`].
struct OverlapBuffers {
    marks: Vec<wgpu::Buffer>,
    sums: Vec<wgpu::Buffer>,
}

/// What a step's readback holds, besides its bytes.
struct Submitted {
    step: u32,
    lens: Vec<u32>,
    /// The step carried timestamps (see [`EngineOptions::time_every`]).
    timed: bool,
}

/// Byte offsets of one step's readback.
#[derive(Clone, Copy)]
struct ReadbackLayout {
    timer: u64,
    counts: u64,
    topk: u64,
    size: u64,
}

/// A batch being decoded.
pub struct Engine {
    pub opts: EngineOptions,
    pub plan: MemoryPlan,
    inputs: Box<dyn StepInputs>,
    layers: Vec<Layer>,
    work: Vec<LayerWork>,
    /// Sequence groups (first, count) sharing one keys / latent buffer (binding limit).
    groups: Vec<(u32, u32)>,
    /// The indexer, one for all layers (its grids follow the longest sequence: `update_grids`).
    indexer: Indexer,
    /// FP8 keys: the quantiser of each layer's moved indexer queries.
    q_quant: Option<Fp8Quant>,
    /// `[B, 2]` (first row of b in its group's buffer, T_b), rewritten every step.
    seq: wgpu::Buffer,
    /// `[4]` u32: (step number from 1, query moves from 1, _, _), rewritten every step.
    clock: wgpu::Buffer,
    /// Query moves so far (warm-up windows and steps).
    moves: u32,
    scores: wgpu::Buffer,
    scratch: SparseMlaScratch,
    /// The top-k kernel, and its split kernel's working space where rows are long enough to
    /// take it (one for all layers: their steps run in order).
    topk: TopK,
    topk_scratch: Option<TopKScratch>,
    new_rows: Option<wgpu::Buffer>,
    pub cache: Option<OffloadCache>,
    /// Offload: `[B, 2]` (first pool row b·P, _) for sparse MLA; fixed for the engine's life.
    pool_seq: Option<wgpu::Buffer>,
    /// DA layers: the ids ordered hits first `[B, k]` and `[B, 2]` (b·P, hits), rewritten by
    /// each such layer's step (layers run in order).
    da: Option<(DaOrder, wgpu::Buffer, wgpu::Buffer)>,
    overlap: Option<OverlapBuffers>,
    /// `[L, 2, 2]` u32: the (o_lat, lse) digests of each layer, summed over steps.
    digests: Option<wgpu::Buffer>,
    lens: Vec<u32>,
    /// Steps submitted (the readbacks may lag behind: see `stats.steps`).
    submitted: u32,
    timer: Option<GpuTimer>,
    layout: ReadbackLayout,
    readback: ReadbackRing<Submitted>,
    /// When the steps not yet finished began.
    running_since: Option<Instant>,
    pub stats: Stats,
    /// The recorded selections (with `record_trace`).
    pub trace: Option<crate::trace::Trace>,
}

impl Engine {
    /// Check the options, allocate (after checking the plan against `budget`), prefill, warm up.
    pub fn new(ctx: &GpuContext, opts: &EngineOptions, budget: u64) -> Result<Self> {
        block_on("Engine::new", Self::new_async(ctx, opts, budget))
    }

    /// [`Engine::new`] without blocking: how a browser page makes one (the prefill and the
    /// warm-up read from the GPU on the staging path).
    pub async fn new_async(ctx: &GpuContext, opts: &EngineOptions, budget: u64) -> Result<Self> {
        opts.validate()?;
        if let Some(m) = &opts.model {
            use crate::model::step::{ModelInputs, Prefill};
            // the plan (weights included) before the weights are uploaded
            MemoryPlan::new(opts, opts.run.batch)?.check(budget)?;
            let prefill = Prefill::Synthetic {
                token: 1,
                seed: opts.seed,
            };
            let inputs = ModelInputs::new(ctx, m.weights, &opts.run, opts.capacity(), prefill)?;
            return Self::with_inputs_async(ctx, opts, budget, Box::new(inputs)).await;
        }
        let rho = (0..opts.run.layers)
            .map(|l| {
                opts.layer_locality
                    .get(l as usize)
                    .copied()
                    .unwrap_or(opts.locality)
            })
            .collect();
        let inputs = Box::new(Synthetic::new(ctx, &opts.run, rho, opts.seed)?);
        Self::with_inputs_async(ctx, opts, budget, inputs).await
    }

    /// As [`Engine::new`], with the step inputs given.
    pub fn with_inputs(
        ctx: &GpuContext,
        opts: &EngineOptions,
        budget: u64,
        inputs: Box<dyn StepInputs>,
    ) -> Result<Self> {
        block_on(
            "Engine::with_inputs",
            Self::with_inputs_async(ctx, opts, budget, inputs),
        )
    }

    /// [`Engine::with_inputs`] without blocking.
    pub async fn with_inputs_async(
        ctx: &GpuContext,
        opts: &EngineOptions,
        budget: u64,
        mut inputs: Box<dyn StepInputs>,
    ) -> Result<Self> {
        opts.validate()?;
        let m = &opts.run;
        let plan = MemoryPlan::new(opts, m.batch)?;
        plan.check(budget)?;
        let (b, cap, nl) = (m.batch, opts.capacity(), m.layers);
        let groups = sequence_groups(ctx, opts)?;
        let layers = (0..nl)
            .map(|l| Layer::new(ctx, opts, &groups, l, inputs.queries(ctx, l)?))
            .collect::<Result<Vec<_>>>()?;
        let indexer = Indexer::new(ctx, &m.indexer_shape())?;
        let q_quant = match m.key_dtype {
            crate::config::Dtype::Fp8 => {
                let shape = Fp8RowShape::key_cache(m.model.index_head_dim);
                Some(Fp8Quant::new(ctx, &shape)?)
            }
            _ => None,
        };
        let sparse_mla = AnySparseMla::new(ctx, &m.sparse_mla_shape())?;
        // one scratch for the whole batch: the same split-k in both modes, whatever the groups
        let scratch = sparse_mla.scratch(ctx, b)?;
        let topk = TopK::new(ctx, &m.topk_shape())?;
        let topk_scratch = match topk.segments(b, cap) {
            1 => None,
            _ => Some(topk.scratch(ctx, b, cap)?),
        };
        let cache = match opts.mode {
            Mode::Resident => None,
            Mode::Offload => {
                let shape = CacheShape {
                    layers: nl,
                    batch: b,
                    capacity: cap,
                    slots: opts.pool.slots(cap, m.model.topk)?,
                    row_bytes: m.row_bytes(),
                    topk: m.model.topk,
                };
                Some(OffloadCache::new(ctx, &shape, opts.transfer)?)
            }
        };
        let pool_seq = match &cache {
            Some(c) => {
                let t: Vec<u32> = c.pool_first_rows().iter().flat_map(|&r| [r, 0]).collect();
                Some(ctx.upload("pool seq", &t)?)
            }
            None => None,
        };
        let any_da = (0..nl).any(|l| opts.transfer_overlap.schedule(l) == LayerSchedule::Da);
        let da = match (&cache, any_da) {
            (Some(_), true) => {
                let k = m.model.topk as u64;
                Some((
                    DaOrder::new(ctx)?,
                    ctx.storage("da ids", b as u64 * k * 4)?,
                    ctx.storage("da seq", b as u64 * 8)?,
                ))
            }
            _ => None,
        };
        let new_rows = match opts.mode {
            Mode::Offload => Some(ctx.storage("new rows", b as u64 * m.row_bytes())?),
            Mode::Resident => None,
        };
        let overlap = match opts.track_overlap {
            true => Some(OverlapBuffers::new(ctx, nl, b, cap)?),
            false => None,
        };
        let digests = if opts.digest_outputs {
            let d = ctx.storage("output digests", nl as u64 * 16)?;
            ctx.fill(&d, 0);
            Some(d)
        } else {
            None
        };
        let timer = GpuTimer::new(ctx, nl * Stage::COUNT as u32);
        let layout = ReadbackLayout::new(opts, timer.as_ref(), cache.is_some());
        let mut engine = Engine {
            opts: opts.clone(),
            plan,
            inputs: Box::new(NoInputs),
            layers,
            work: Vec::new(),
            indexer,
            q_quant,
            groups,
            seq: ctx.storage("seq", b as u64 * 8)?,
            clock: ctx.storage("clock", 16)?,
            moves: 0,
            scores: ctx.storage("index scores", b as u64 * cap as u64 * 4)?,
            scratch,
            topk,
            topk_scratch,
            new_rows,
            cache,
            pool_seq,
            da,
            overlap,
            digests,
            lens: opts.contexts.clone(),
            submitted: 0,
            timer,
            layout,
            readback: ReadbackRing::new(ctx, layout.size, READBACK_DEPTH),
            running_since: None,
            trace: opts
                .record_trace
                .then(|| crate::trace::Trace::new(m.layers, m.batch, m.model.topk, cap)),
            stats: Stats {
                counters: vec![CacheCounters::default(); nl as usize],
                overlap_sum: vec![0.0; nl as usize],
                ..Default::default()
            },
        };
        engine.write_seq(ctx);
        engine.work = (0..nl)
            .map(|l| engine.bind_layer(ctx, inputs.as_mut(), l, &sparse_mla))
            .collect::<Result<_>>()?;
        engine.inputs = inputs;
        engine.prefill(ctx).await?;
        engine.warm_up(ctx).await?;
        Ok(engine)
    }

    /// Every dispatch of `layer`'s step, bound to the engine's buffers.
    fn bind_layer(
        &self,
        ctx: &GpuContext,
        inputs: &mut dyn StepInputs,
        l: u32,
        sparse_mla: &AnySparseMla,
    ) -> Result<LayerWork> {
        let m = &self.opts.run;
        let (b, cap) = (m.batch, self.opts.capacity());
        let layer = &self.layers[l as usize];
        let mut next_queries = inputs.next_queries(ctx, l, &layer.queries, &self.clock)?;
        // FP8 keys: the moved queries quantised as the model quantises them for its fp8_index
        let q_i = match (&layer.q_fp8, &self.q_quant) {
            (Some(q8), Some(quant)) => {
                let rows = b * m.model.index_heads;
                next_queries.push(quant.bind(ctx, &layer.queries.q_i, q8, rows)?);
                q8
            }
            _ => &layer.queries.q_i,
        };
        let mut new_token = Vec::new();
        for t in self.device_row_targets(l) {
            new_token.extend(inputs.newest_rows(ctx, &t, NewestAt::CacheRow, l, &self.seq)?);
        }
        if let Some(new_rows) = &self.new_rows {
            let t = RowTarget {
                buffer: new_rows,
                kind: RowKind::Latent,
                b0: 0,
                n: b,
            };
            new_token.extend(inputs.newest_rows(ctx, &t, NewestAt::BatchRow, l, &self.seq)?);
        }
        let indexer = self
            .groups
            .iter()
            .enumerate()
            .map(|(g, &r)| {
                let args = self.indexer_args(l, q_i, g, r, self.max_len());
                self.indexer.bind(ctx, &args)
            })
            .collect();
        let topk = self.bind_topk(ctx, l, (0, b))?;
        let cache = match (&self.cache, &self.new_rows) {
            (Some(c), Some(new_rows)) => {
                Some(c.bind(ctx, l, &layer.topk_indices, &self.seq, new_rows))
            }
            _ => None,
        };
        let da = self.bind_da(ctx, l, sparse_mla)?;
        let sparse_mla = match (&self.cache, &self.pool_seq) {
            (Some(c), Some(pool_seq)) => vec![sparse_mla.bind(
                ctx,
                &SparseMlaArgs {
                    q: &layer.queries.q,
                    ids: c.slot_ids(l),
                    seq: pool_seq,
                    rows: c.pool(l),
                    scratch: &self.scratch,
                    o_lat: &layer.o_lat,
                    lse: &layer.lse,
                    b0: 0,
                    batch: b,
                },
            )],
            _ => self
                .groups
                .iter()
                .enumerate()
                .map(|(g, &(b0, n))| {
                    sparse_mla.bind(
                        ctx,
                        &SparseMlaArgs {
                            q: &layer.queries.q,
                            ids: &layer.topk_indices,
                            seq: &self.seq,
                            rows: &layer.latent[g],
                            scratch: &self.scratch,
                            o_lat: &layer.o_lat,
                            lse: &layer.lse,
                            b0,
                            batch: n,
                        },
                    )
                })
                .collect(),
        };
        let mut observe = Vec::new();
        if let Some(o) = &self.overlap {
            observe.push(Overlap::new(ctx)?.bind(
                ctx,
                &OverlapArgs {
                    clock: &self.clock,
                    topk_indices: &layer.topk_indices,
                    marks: &o.marks[l as usize],
                    overlap_sum: &o.sums[l as usize],
                    k: m.model.topk,
                    capacity: cap,
                    b0: 0,
                    batch: b,
                },
            ));
        }
        if let Some(d) = &self.digests {
            // o_lat into slot 2l, lse into 2l + 1, one dispatch
            observe.push(Digest::new(ctx)?.bind(
                ctx,
                &DigestArgs {
                    clock: &self.clock,
                    data: &layer.o_lat,
                    words: (layer.o_lat.size() / 4) as u32,
                    data2: &layer.lse,
                    words2: (layer.lse.size() / 4) as u32,
                    digest: d,
                    slot: 2 * l,
                    salt: 0x5eed_0000 ^ (2 * l),
                },
            ));
        }
        let chunked = self.bind_chunks(ctx, l, q_i)?;
        let after = inputs.after_attention(ctx, l, &layer.o_lat)?;
        Ok(LayerWork {
            after,
            next_queries,
            new_token,
            indexer,
            topk,
            cache,
            sparse_mla,
            observe,
            chunked,
            da,
        })
    }

    /// `layer`'s DA work, where the options ask for DA and the cache moves rows on the GPU alone.
    fn bind_da(
        &self,
        ctx: &GpuContext,
        l: u32,
        sparse_mla: &AnySparseMla,
    ) -> Result<Option<DaWork>> {
        let (Some(cache), Some((order, da_ids, da_seq))) = (&self.cache, &self.da) else {
            return Ok(None);
        };
        if !cache.gpu_only() || self.opts.transfer_overlap.schedule(l) != LayerSchedule::Da {
            return Ok(None);
        }
        let sparse_mla = sparse_mla
            .tuned()
            .expect("EngineOptions::validate refuses DA where the tuned sparse MLA cannot run");
        let (m, layer) = (&self.opts.run, &self.layers[l as usize]);
        let order = order.bind(
            ctx,
            &DaOrderArgs {
                slot_ids: cache.slot_ids(l),
                copies: cache.copies(l),
                counts: cache.counts(l),
                da_ids,
                da_seq,
                k: m.model.topk,
                slots: cache.shape.slots,
                b0: 0,
                batch: m.batch,
            },
        )?;
        let args = |b0, batch| SparseMlaArgs {
            q: &layer.queries.q,
            ids: da_ids,
            seq: da_seq,
            rows: cache.pool(l),
            scratch: &self.scratch,
            o_lat: &layer.o_lat,
            lse: &layer.lse,
            b0,
            batch,
        };
        let (mut attend, mut gathers) = (Vec::new(), 0);
        let fuse = sparse_mla.path == crate::gpu::MatrixPath::Coop;
        for (b0, n) in cache.host.groups() {
            let mut g = cache.fused_gather(l, (b0, n)).expect("zero-copy");
            if self.opts.omit_gathers {
                g.batch = 0;
            }
            gathers += !self.opts.omit_gathers as usize;
            match fuse {
                true => attend.extend(sparse_mla.bind_da(ctx, &args(b0, n), &g)?),
                false if !self.opts.omit_gathers => {
                    attend.push(cache.bind_gather(ctx, l, (b0, n)).expect("zero-copy"));
                }
                false => {}
            }
        }
        if !fuse {
            attend.push(sparse_mla.bind(ctx, &args(0, m.batch)));
        }
        Ok(Some(DaWork {
            order,
            attend,
            gathers,
        }))
    }

    /// The top-k of sequences `b0 .. b0 + n` of `layer`, split as the whole batch's is (so a
    /// chunk selects what the whole batch would, in the same order).
    fn bind_topk(&self, ctx: &GpuContext, l: u32, (b0, n): (u32, u32)) -> Result<Dispatch> {
        let args = TopKArgs {
            scratch: self.topk_scratch.as_ref(),
            scores: &self.scores,
            seq: &self.seq,
            topk_indices: &self.layers[l as usize].topk_indices,
            b0,
            batch: n,
            score_stride: self.opts.capacity(),
        };
        self.topk.bind_as_part_of(ctx, &args, self.opts.run.batch)
    }

    /// The indexer's buffers for sequences `b0 .. b0 + n` of `layer` (inside key group `g`).
    fn indexer_args<'a>(
        &'a self,
        l: u32,
        q_i: &'a wgpu::Buffer,
        g: usize,
        (b0, n): (u32, u32),
        max_len: u32,
    ) -> IndexerArgs<'a> {
        let layer = &self.layers[l as usize];
        IndexerArgs {
            q: q_i,
            w: &layer.queries.w,
            keys: &layer.keys[g],
            seq: &self.seq,
            scores: &self.scores,
            b0,
            batch: n,
            max_len,
            score_stride: self.opts.capacity(),
        }
    }

    /// `layer`'s chunked selection and fetch, where the options ask for more than one chunk and
    /// the cache moves rows on the GPU alone (zero-copy); `None` runs the serial stages.
    fn bind_chunks(
        &self,
        ctx: &GpuContext,
        l: u32,
        q_i: &wgpu::Buffer,
    ) -> Result<Option<ChunkedWork>> {
        let (m, cap) = (&self.opts.run, self.opts.capacity());
        let n = self.opts.transfer_overlap.chunks(l);
        let Some(cache) = self.cache.as_ref().filter(|c| c.gpu_only()) else {
            return Ok(None);
        };
        if n <= 1 {
            return Ok(None);
        }
        let layer = &self.layers[l as usize];
        let host_groups = cache.host.groups();
        let ranges = chunks::chunk_ranges(m.batch, n, &[&self.groups, &host_groups]);
        let key_group = |b0: u32| {
            self.groups
                .iter()
                .position(|&(g0, gn)| b0 >= g0 && b0 < g0 + gn)
        };
        let fuse = !self.opts.omit_gathers && self.indexer.path == crate::gpu::MatrixPath::Coop;
        let mut out = Vec::new();
        for (i, &(b0, bn)) in ranges.iter().enumerate() {
            let g = key_group(b0).expect("a chunk inside a key group");
            let args = |max_len| self.indexer_args(l, q_i, g, (b0, bn), max_len);
            let prev = i.checked_sub(1).map(|p| ranges[p]);
            let (indexer, follows_lengths, gather_beside) =
                match (prev.filter(|_| !self.opts.omit_gathers), fuse) {
                    (Some(r), true) => {
                        let fg = cache.fused_gather(l, r).expect("zero-copy");
                        (
                            self.indexer.bind_with_gather(ctx, &args(cap), &fg)?,
                            false,
                            None,
                        )
                    }
                    (Some(r), false) => (
                        self.indexer.bind(ctx, &args(self.max_len())),
                        true,
                        cache.bind_gather(ctx, l, r),
                    ),
                    (None, _) => (self.indexer.bind(ctx, &args(self.max_len())), true, None),
                };
            let topk = self.bind_topk(ctx, l, (b0, bn))?;
            let resolve = cache.bind_resolve(ctx, l, &layer.topk_indices, &self.seq, (b0, bn));
            out.push(ChunkWork {
                indexer,
                follows_lengths,
                gather_beside,
                topk,
                resolve,
                sequences: bn,
            });
        }
        let last_gather = match self.opts.omit_gathers {
            true => None,
            false => ranges.last().and_then(|&r| cache.bind_gather(ctx, l, r)),
        };
        Ok(Some(ChunkedWork {
            chunks: out,
            last_gather,
        }))
    }

    /// The device buffers that receive `layer`'s rows, per sequence group: the indexer keys, and
    /// in resident mode the latent cache.
    fn device_row_targets(&self, layer: u32) -> Vec<RowTarget<'_>> {
        let l = &self.layers[layer as usize];
        let mut targets = Vec::new();
        for (g, &(b0, n)) in self.groups.iter().enumerate() {
            let target = |buffer, kind| RowTarget {
                buffer,
                kind,
                b0,
                n,
            };
            targets.push(target(&l.keys[g], RowKind::IndexerKey));
            if let Some(latent) = l.latent.get(g) {
                targets.push(target(latent, RowKind::Latent));
            }
        }
        targets
    }

    /// The longest sequence now.
    fn max_len(&self) -> u32 {
        self.lens.iter().copied().max().unwrap_or(0)
    }

    /// `[B, 2]` (first row of b in its group's buffer, T_b) for the current lengths: indexer,
    /// top-k, resident sparse MLA, resolve and write-back read it.
    fn write_seq(&self, ctx: &GpuContext) {
        let (cap, per_group) = (self.opts.capacity(), self.groups[0].1);
        let t: Vec<u32> = (0..self.lens.len() as u32)
            .flat_map(|b| [(b % per_group) * cap, self.lens[b as usize]])
            .collect();
        ctx.write(&self.seq, 0, bytemuck::cast_slice(&t));
    }

    /// Write every layer's indexer keys and latent rows for the prefill contexts: keys and the
    /// resident cache on the device; in offload mode the latent rows go straight into the host
    /// store (zero-copy write by the shader) or, for a process-memory store, through a readback.
    async fn prefill(&mut self, ctx: &GpuContext) -> Result<()> {
        let m = &self.opts.run;
        let cap = self.opts.capacity();
        let whole = |b0: u32, n: u32, stride: u32| -> Vec<FillRange> {
            (b0..b0 + n)
                .map(|b| FillRange {
                    base: (b - b0) * stride,
                    start: 0,
                    count: self.lens[b as usize],
                })
                .collect()
        };
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        for l in 0..m.layers {
            let mut dispatches = Vec::new();
            for t in self.device_row_targets(l) {
                dispatches.extend(self.inputs.rows(ctx, &t, l, &whole(t.b0, t.n, cap))?);
            }
            if let Some(cache) = &self.cache {
                if cache.host.is_zero_copy() {
                    for (b0, n) in cache.host.groups() {
                        let t = RowTarget {
                            buffer: cache.host.buffer(l, b0).expect("zero-copy store"),
                            kind: RowKind::Latent,
                            b0,
                            n,
                        };
                        dispatches.extend(self.inputs.rows(ctx, &t, l, &whole(b0, n, cap))?);
                    }
                }
            }
            let mut pass = enc.begin_compute_pass(&Default::default());
            dispatches.iter().for_each(|d| d.record(&mut pass));
        }
        ctx.submit(enc);
        ctx.check()?;
        // process-memory host store: generate each sequence's rows on the device, copy them over
        let memory_store = self.cache.as_ref().is_some_and(|c| !c.host.is_zero_copy());
        if memory_store {
            for l in 0..m.layers {
                for b in 0..m.batch {
                    let len = self.lens[b as usize];
                    let tmp = ctx.storage("prefill rows", len as u64 * m.row_bytes())?;
                    let t = RowTarget {
                        buffer: &tmp,
                        kind: RowKind::Latent,
                        b0: b,
                        n: 1,
                    };
                    let ds = self.inputs.rows(ctx, &t, l, &whole(b, 1, len))?;
                    ctx.run_pass(None, |p| ds.iter().for_each(|d| d.record(p)))?;
                    let bytes: Vec<u8> = ctx.read_async(&tmp).await?;
                    let host = &mut self.cache.as_mut().expect("offload cache").host;
                    host.write(
                        ctx,
                        l,
                        b,
                        0,
                        &bytes[..(len as u64 * m.row_bytes()) as usize],
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Indexer + top-k of `layer` into its `topk_indices`, for the current queries and lengths.
    fn record_selection(&self, enc: &mut wgpu::CommandEncoder, l: usize, timer: Option<&GpuTimer>) {
        let w = &self.work[l];
        let mark = |s: Stage| timer.map(|t| (t, s.mark(l as u32)));
        {
            let mut pass = timed_pass(enc, mark(Stage::Indexer));
            w.indexer.iter().for_each(|d| d.record(&mut pass));
        }
        w.topk.record(&mut timed_pass(enc, mark(Stage::TopK)));
    }

    /// Grids that follow the longest sequence.
    fn update_grids(&mut self) {
        let x = self.indexer.tiles(self.max_len());
        for w in &mut self.work {
            for (d, &(_, n)) in w.indexer.iter_mut().zip(&self.groups) {
                d.set_grid([x, n, 1]);
            }
            let chunks = w.chunked.iter_mut().flat_map(|c| &mut c.chunks);
            for c in chunks.filter(|c| c.follows_lengths) {
                c.indexer.set_grid([x, c.sequences, 1]);
            }
        }
    }

    /// LRU warm-up from the top-k of the last prefill windows (offload). Both modes advance the
    /// query process the same way, so their decode steps see the same queries.
    async fn warm_up(&mut self, ctx: &GpuContext) -> Result<()> {
        let (nl, w) = (self.opts.run.layers as usize, self.opts.warmup_windows);
        let bytes = self.opts.run.batch as u64 * self.opts.run.model.topk as u64 * 4;
        let mut windows: Vec<Vec<wgpu::Buffer>> = vec![Vec::new(); nl];
        self.update_grids();
        let given = (0..nl as u32)
            .map(|l| self.inputs.warmup_windows(ctx, l, w))
            .collect::<Result<Option<Vec<_>>>>()?;
        let own_windows = match given {
            Some(g) => {
                windows = g;
                0
            }
            None => w,
        };
        for _ in 0..own_windows {
            // the window's selections use the prefill lengths (no new token); both modes move
            // their queries the same way
            self.advance_inputs(ctx);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for w in &self.work {
                    w.next_queries.iter().for_each(|d| d.record(&mut pass));
                }
            }
            if self.cache.is_none() {
                ctx.submit(enc);
                continue;
            }
            for (l, win) in windows.iter_mut().enumerate() {
                let out = ctx.storage("warm-up window", bytes)?;
                self.record_selection(&mut enc, l, None);
                enc.copy_buffer_to_buffer(&self.layers[l].topk_indices, 0, &out, 0, bytes);
                win.push(out);
            }
            ctx.submit(enc);
        }
        if let Some(trace) = &mut self.trace {
            for (l, win) in windows.iter().enumerate() {
                for w in win {
                    trace.push_selection(
                        crate::trace::Kind::Warmup,
                        0,
                        l as u32,
                        &self.lens,
                        &ctx.read_async::<i32>(w).await?,
                    );
                }
            }
        }
        if let Some(cache) = &mut self.cache {
            for (l, win) in windows.iter().enumerate() {
                if !win.is_empty() {
                    cache.warm(ctx, l as u32, win, &self.seq).await?;
                }
            }
        }
        ctx.check()
    }

    /// Number the next move of the inputs (the layers' `next_queries` dispatches make it in the
    /// submit that follows).
    fn advance_inputs(&mut self, ctx: &GpuContext) {
        self.moves += 1;
        let clock = [self.submitted, self.moves, 0, 0];
        ctx.write(&self.clock, 0, bytemuck::cast_slice(&clock));
    }

    /// One decode step of every sequence through every layer: recorded and submitted, not
    /// waited for. [`Engine::finish`] (or [`Engine::outputs`]) waits for the steps in flight.
    pub fn step(&mut self, ctx: &GpuContext) -> Result<()> {
        block_on("Engine::step", self.step_async(ctx))
    }

    /// [`Engine::step`] without blocking: in a browser it yields to the page's event loop where
    /// the step must see the GPU's results (the staging path's copy lists, the process-memory
    /// write-back, a full readback ring).
    pub async fn step_async(&mut self, ctx: &GpuContext) -> Result<()> {
        self.running_since.get_or_insert_with(Instant::now);
        let (done, _) = self.readback.next_buffer(ctx).await?;
        if let Some((s, bytes)) = done {
            self.absorb(&s, &bytes)?;
        }
        let recording = Instant::now();
        for len in self.lens.iter_mut() {
            *len += 1;
        }
        self.inputs.begin_step(ctx, &self.lens);
        self.submitted += 1;
        self.advance_inputs(ctx);
        self.write_seq(ctx);
        self.update_grids();
        if let Some(cache) = &mut self.cache {
            cache.next_step(ctx);
        }
        // timed steps are counted back from the last, which is always timed
        let every = self.opts.time_every.max(1);
        let to_go = self.opts.steps.saturating_sub(self.submitted);
        let timed = self.timer.is_some() && to_go.is_multiple_of(every);
        // the timer is taken out for the step (the passes borrow it while `self` is mutated)
        let owned_timer = self.timer.take();
        let timer = owned_timer.as_ref().filter(|_| timed);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        let gpu_only = self.cache.as_ref().is_none_or(|c| c.gpu_only());
        if timer.is_none() && gpu_only {
            self.record_step_in_one_pass(&mut enc);
        } else {
            enc = self.record_step_by_stage(ctx, enc, timer).await?;
        }
        // this step's readback: timestamps, counts, top-k ids, in one buffer
        let (_, dest) = self.readback.next_buffer(ctx).await?;
        let lay = self.layout;
        if let Some(t) = timer {
            t.record_copy(&mut enc, dest, lay.timer);
        }
        let b = self.opts.run.batch as u64;
        for l in 0..self.opts.run.layers {
            if let Some(cache) = &self.cache {
                let off = lay.counts + l as u64 * b * 8;
                enc.copy_buffer_to_buffer(cache.counts(l), 0, dest, off, b * 8);
            }
            if self.trace.is_some() {
                let bytes = self.layers[l as usize].topk_indices.size();
                let off = lay.topk + l as u64 * bytes;
                enc.copy_buffer_to_buffer(
                    &self.layers[l as usize].topk_indices,
                    0,
                    dest,
                    off,
                    bytes,
                );
            }
        }
        self.timer = owned_timer;
        let index = ctx.submit(enc);
        self.readback.submitted(
            index,
            Submitted {
                step: self.submitted,
                lens: self.lens.clone(),
                timed,
            },
        );
        ctx.poll();
        self.stats.host_s += recording.elapsed_s();
        ctx.errors()
    }

    /// An untimed step whose every stage runs on the GPU: all of it in one compute pass (wgpu
    /// still orders the dispatches that depend on each other), which costs the CPU less to
    /// record than a pass per stage.
    fn record_step_in_one_pass(&mut self, enc: &mut wgpu::CommandEncoder) {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for (l, w) in self.work.iter().enumerate() {
            w.next_queries
                .iter()
                .chain(&w.new_token)
                .for_each(|d| d.record(&mut pass));
            let selection = |pass: &mut wgpu::ComputePass| match &w.chunked {
                Some(c) => c.record(pass),
                None => {
                    w.indexer.iter().for_each(|d| d.record(pass));
                    w.topk.record(pass);
                }
            };
            let fetch = match (&w.chunked, self.opts.omit_gathers || w.da.is_some()) {
                (Some(_), _) => Fetch::Nothing,
                (None, true) => Fetch::ResolveOnly,
                (None, false) => Fetch::All,
            };
            match (&mut self.cache, &w.cache) {
                (Some(cache), Some(d)) => {
                    cache.record_in_pass(&mut pass, l as u32, d, selection, fetch);
                    cache.count_gathers(w.chunked.as_ref().map_or(0, |c| c.gathers()));
                    cache.count_gathers(w.da.as_ref().map_or(0, |d| d.gathers));
                }
                _ => selection(&mut pass),
            }
            match &w.da {
                Some(da) => da.record(&mut pass),
                None => w.sparse_mla.iter().for_each(|d| d.record(&mut pass)),
            }
            w.after.iter().for_each(|d| d.record(&mut pass));
            w.observe.iter().for_each(|d| d.record(&mut pass));
        }
    }

    /// A step with a compute pass per stage (timestamped when `timer` is given), submitting
    /// where a CPU path must see the GPU's results. Returns the encoder to go on with.
    async fn record_step_by_stage(
        &mut self,
        ctx: &GpuContext,
        mut enc: wgpu::CommandEncoder,
        timer: Option<&GpuTimer>,
    ) -> Result<wgpu::CommandEncoder> {
        let newest: Vec<u32> = self.lens.iter().map(|&t| t - 1).collect();
        for l in 0..self.opts.run.layers {
            let li = l as usize;
            let mark = |s: Stage| timer.map(|t| (t, s.mark(l)));
            {
                let mut pass = timed_pass(&mut enc, mark(Stage::NewToken));
                let w = &self.work[li];
                w.next_queries
                    .iter()
                    .chain(&w.new_token)
                    .for_each(|d| d.record(&mut pass));
            }
            if let (Some(cache), Some(d)) = (&mut self.cache, &self.work[li].cache) {
                cache.record_write_back(&mut enc, l, d, mark(Stage::WriteBack));
                if cache.write_back_needs_sync() {
                    enc = resubmit(ctx, enc);
                    let new = NewRows {
                        rows: self.new_rows.as_ref().expect("offload new rows"),
                        seq: &self.seq,
                        newest: &newest,
                    };
                    cache.write_back_cpu(ctx, l, &new).await?;
                }
            }
            if let (Some(c), Some(cache)) = (&self.work[li].chunked, &mut self.cache) {
                c.record(&mut timed_pass(&mut enc, mark(Stage::Overlapped)));
                cache.count_gathers(c.gathers());
            } else {
                self.record_selection(&mut enc, li, timer);
                if let (Some(cache), Some(d)) = (&mut self.cache, &self.work[li].cache) {
                    cache.record_resolve(&mut enc, d, mark(Stage::Resolve));
                    if cache.gather_needs_sync() {
                        enc = resubmit(ctx, enc);
                    }
                    if !self.opts.omit_gathers && self.work[li].da.is_none() {
                        cache
                            .record_gather(ctx, &mut enc, l, d, mark(Stage::Gather))
                            .await?;
                    }
                }
            }
            let w = &self.work[li];
            match (&w.da, &mut self.cache) {
                (Some(da), Some(cache)) => {
                    da.record(&mut timed_pass(&mut enc, mark(Stage::Overlapped)));
                    cache.count_gathers(da.gathers);
                }
                _ => {
                    let mut pass = timed_pass(&mut enc, mark(Stage::SparseMla));
                    w.sparse_mla.iter().for_each(|d| d.record(&mut pass));
                }
            }
            if !w.after.is_empty() {
                let mut pass = timed_pass(&mut enc, mark(Stage::Ffn));
                w.after.iter().for_each(|d| d.record(&mut pass));
            }
            if !w.observe.is_empty() {
                let mut pass = enc.begin_compute_pass(&Default::default());
                w.observe.iter().for_each(|d| d.record(&mut pass));
            }
        }
        Ok(enc)
    }

    /// Wait for every step in flight, take in its readback, and stop the wall clock.
    pub fn finish(&mut self, ctx: &GpuContext) -> Result<()> {
        block_on("Engine::finish", self.finish_async(ctx))
    }

    /// [`Engine::finish`] without blocking.
    pub async fn finish_async(&mut self, ctx: &GpuContext) -> Result<()> {
        for (s, bytes) in self.readback.drain(ctx).await? {
            self.absorb(&s, &bytes)?;
        }
        if let Some(t0) = self.running_since.take() {
            self.stats.wall_s += t0.elapsed_s();
        }
        if let Some(o) = &self.overlap {
            let b = self.opts.run.batch as f64;
            for (l, sums) in o.sums.iter().enumerate() {
                let s: Vec<f32> = ctx.read_async(sums).await?;
                self.stats.overlap_sum[l] = s.iter().map(|&x| x as f64).sum::<f64>() / b;
            }
            self.stats.overlap_steps = self.stats.steps.saturating_sub(1);
        }
        Ok(())
    }

    /// Take one step's readback into the stats, the cache counters and the trace.
    fn absorb(&mut self, s: &Submitted, bytes: &[u8]) -> Result<()> {
        let lay = self.layout;
        if let (Some(t), true) = (&self.timer, s.timed) {
            self.stats.timed_steps += 1;
            let ticks: Vec<u64> =
                bytemuck::pod_collect_to_vec(&bytes[lay.timer as usize..lay.counts as usize]);
            for (i, secs) in t.seconds(&ticks).into_iter().enumerate() {
                self.stats.stage_s.0[i % Stage::COUNT] += secs;
            }
            self.stats.span_s += t.span(&ticks);
            self.stats.timeline = t
                .intervals(&ticks)
                .into_iter()
                .enumerate()
                .filter_map(|(i, iv)| {
                    iv.map(|(begin_s, end_s)| TimelineBar {
                        layer: (i / Stage::COUNT) as u32,
                        stage: Stage::ALL[i % Stage::COUNT],
                        begin_s,
                        end_s,
                    })
                })
                .collect();
        }
        let b = self.opts.run.batch as usize;
        let k = self.opts.run.model.topk as usize;
        for l in 0..self.opts.run.layers {
            if let Some(cache) = &mut self.cache {
                let off = lay.counts as usize + l as usize * b * 8;
                let counts: Vec<[u32; 2]> = bytemuck::pod_collect_to_vec(&bytes[off..][..b * 8]);
                cache.add_counts(l, &counts);
            }
            if let Some(trace) = &mut self.trace {
                let off = lay.topk as usize + l as usize * b * k * 4;
                let ids: Vec<i32> = bytemuck::pod_collect_to_vec(&bytes[off..][..b * k * 4]);
                trace.push_selection(crate::trace::Kind::Step, s.step, l, &s.lens, &ids);
            }
        }
        if let Some(cache) = &self.cache {
            self.stats.counters = cache.counters.clone();
        }
        self.stats.steps += 1;
        Ok(())
    }

    /// Bits of `o_lat` and `lse` of `layer` after the last step (waits for it).
    pub fn outputs(&mut self, ctx: &GpuContext, layer: u32) -> Result<(Vec<u32>, Vec<u32>)> {
        block_on("Engine::outputs", self.outputs_async(ctx, layer))
    }

    /// [`Engine::outputs`] without blocking.
    pub async fn outputs_async(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        self.finish_async(ctx).await?;
        let l = &self.layers[layer as usize];
        Ok((
            ctx.read_async(&l.o_lat).await?,
            ctx.read_async(&l.lse).await?,
        ))
    }

    /// Every layer's (o_lat, lse) 64-bit digests summed over the steps so far (with
    /// `digest_outputs`): `[L]` of `[o_lat lane 0, lane 1, lse lane 0, lane 1]`.
    pub fn digests(&mut self, ctx: &GpuContext) -> Result<Option<Vec<[u32; 4]>>> {
        block_on("Engine::digests", self.digests_async(ctx))
    }

    /// [`Engine::digests`] without blocking.
    pub async fn digests_async(&mut self, ctx: &GpuContext) -> Result<Option<Vec<[u32; 4]>>> {
        self.finish_async(ctx).await?;
        match &self.digests {
            Some(d) => Ok(Some(ctx.read_async(d).await?)),
            None => Ok(None),
        }
    }

    /// Layer `layer`'s inputs and outputs after the last step, to recompute them on the CPU:
    /// (q `[B, H, KV + rope]` f32, topk_indices `[B, k]`, the latent row of every selected
    /// token, o_lat, lse). Rows come from where this mode keeps them (resident cache, or the
    /// host store for offload), so they check the cache as well as the kernel.
    pub fn layer_snapshot(&mut self, ctx: &GpuContext, layer: u32) -> Result<LayerSnapshot> {
        self.finish(ctx)?;
        let m = &self.opts.run;
        let l = &self.layers[layer as usize];
        let q: Vec<f32> = ctx.read(&l.queries.q)?;
        let topk_indices: Vec<i32> = ctx.read(&l.topk_indices)?;
        let (k, rb) = (m.model.topk as usize, m.row_bytes() as usize);
        let cap = self.opts.capacity() as u64;
        let per_group = self.groups[0].1;
        let mut rows = vec![0u8; m.batch as usize * k * rb];
        let latent: Vec<Vec<u8>> = l
            .latent
            .iter()
            .map(|buf| ctx.read(buf))
            .collect::<Result<_>>()?;
        for b in 0..m.batch as usize {
            for (i, &t) in topk_indices[b * k..][..k].iter().enumerate() {
                if t < 0 {
                    continue;
                }
                let dst = &mut rows[(b * k + i) * rb..][..rb];
                match &self.cache {
                    Some(c) => {
                        dst.copy_from_slice(&c.host.read(ctx, layer, b as u32, t as u32, 1)?)
                    }
                    None => {
                        let g = b / per_group as usize;
                        let row = (b as u64 % per_group as u64) * cap + t as u64;
                        dst.copy_from_slice(&latent[g][row as usize * rb..][..rb]);
                    }
                }
            }
        }
        let (o_lat, lse) = (ctx.read(&l.o_lat)?, ctx.read(&l.lse)?);
        // the indexer's inputs: the queries, and each sequence's keys (the values they stand for)
        let q_i: Vec<f32> = ctx.read(&l.queries.q_i)?;
        let w: Vec<f32> = ctx.read(&l.queries.w)?;
        let keys = self.cached_keys(ctx, layer, 0..m.batch)?;
        Ok(LayerSnapshot {
            q,
            topk_indices,
            rows,
            o_lat,
            lse,
            q_i,
            w,
            keys,
        })
    }

    /// The indexer keys of sequences `seqs` in layer `layer` after the last step finished,
    /// `[T_b, D_I]` each, as the values they stand for (FP8 dequantised): each sequence
    /// group's buffer read once.
    fn cached_keys(
        &self,
        ctx: &GpuContext,
        layer: u32,
        seqs: std::ops::Range<u32>,
    ) -> Result<Vec<Vec<f32>>> {
        let m = &self.opts.run;
        let dim = m.model.index_head_dim as usize;
        let layout = crate::workload::RowLayout::Key { dim };
        let mut out = Vec::new();
        for (g, &(b0, n)) in self.groups.iter().enumerate() {
            let wanted = seqs.start.max(b0)..seqs.end.min(b0 + n);
            if wanted.is_empty() {
                continue;
            }
            let bytes = ctx.read(&self.layers[layer as usize].keys[g])?;
            let values = crate::workload::values_of(&bytes, m.key_dtype, layout);
            for b in wanted {
                let first = (b - b0) as usize * self.opts.capacity() as usize;
                out.push(values[first * dim..][..self.lens[b as usize] as usize * dim].to_vec());
            }
        }
        Ok(out)
    }

    /// Sequence `b`'s cached rows of layer `layer` after the last step, read where this mode
    /// keeps them (the resident cache, or the host store for offload), as the values they
    /// stand for (FP8 dequantised): the latent rows `[T_b, KV + rope]` and the indexer keys
    /// `[T_b, D_I]`.
    pub fn cached_rows(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
        b: u32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.finish(ctx)?;
        let m = &self.opts.run;
        let (len, rb) = (self.lens[b as usize], m.row_bytes() as usize);
        let bytes = match &self.cache {
            Some(c) => c.host.read(ctx, layer, b, 0, len)?,
            None => {
                let per_group = self.groups[0].1;
                let l = &self.layers[layer as usize];
                let all: Vec<u8> = ctx.read(&l.latent[(b / per_group) as usize])?;
                let first = (b % per_group) as usize * self.opts.capacity() as usize;
                all[first * rb..][..len as usize * rb].to_vec()
            }
        };
        let layout = crate::workload::RowLayout::Latent {
            kv: m.model.kv_lora_rank as usize,
            rope: m.model.qk_rope_head_dim as usize,
        };
        let latent = crate::workload::values_of(&bytes, m.latent_dtype, layout);
        let keys = self.cached_keys(ctx, layer, b..b + 1)?.pop();
        Ok((latent, keys.expect("one sequence's keys")))
    }

    /// Tokens decoded per second of GPU time (all stages; NaN without timestamps).
    pub fn tokens_per_gpu_s(&self) -> f64 {
        self.opts.run.batch as f64 / self.stats.gpu_s_per_step()
    }

    /// Tokens decoded per second of wall-clock time.
    pub fn tokens_per_wall_s(&self) -> f64 {
        self.stats.steps as f64 * self.opts.run.batch as f64 / self.stats.wall_s
    }

    /// Device bytes the engine holds (as planned).
    pub fn device_bytes(&self) -> u64 {
        self.plan.total()
    }

    /// Device bytes of every storage buffer the engine actually allocated (the plan's check).
    pub fn allocated_bytes(&self) -> u64 {
        let mut bufs: Vec<&wgpu::Buffer> = vec![&self.seq, &self.clock, &self.scores];
        bufs.extend([
            &self.scratch.scores,
            &self.scratch.partials,
            &self.scratch.part_lse,
        ]);
        bufs.extend(self.topk_scratch.iter().flat_map(|t| t.buffers()));
        for l in &self.layers {
            bufs.extend(l.keys.iter().chain(&l.latent));
            bufs.extend(&l.q_fp8);
            bufs.extend([
                &l.queries.q_i,
                &l.queries.w,
                &l.queries.q,
                &l.topk_indices,
                &l.o_lat,
                &l.lse,
            ]);
        }
        bufs.extend(
            self.new_rows
                .iter()
                .chain(&self.pool_seq)
                .chain(&self.digests),
        );
        if let Some(o) = &self.overlap {
            bufs.extend(o.marks.iter().chain(&o.sums));
        }
        bufs.iter().map(|b| b.size()).sum::<u64>()
            + self.cache.as_ref().map_or(0, |c| c.device_bytes())
    }
}

/// Bytes of a layer's FP8 indexer queries: `B · H_I` rows of the key cache's layout, padded to
/// 16 bytes (the memory plan counts them).
pub(crate) fn fp8_query_bytes(m: &crate::config::RunConfig) -> u64 {
    (m.batch as u64 * m.model.index_heads as u64 * m.key_bytes()).next_multiple_of(16)
}

/// Sequence groups (first, count) sharing one keys / latent buffer: as many sequences as one
/// storage binding holds.
fn sequence_groups(ctx: &GpuContext, opts: &EngineOptions) -> Result<Vec<(u32, u32)>> {
    let (m, b, cap) = (&opts.run, opts.run.batch, opts.capacity());
    let row = match opts.mode {
        Mode::Resident => m.row_bytes(),
        Mode::Offload => 0,
    };
    let seq_bytes = cap as u64 * m.key_bytes().max(row);
    if seq_bytes > ctx.max_binding() {
        return Err(Error::Unsupported {
            what: "one sequence's cache in one storage binding".into(),
            need: format!("{seq_bytes} bytes"),
            have: format!("{}", ctx.max_binding()),
        });
    }
    let per_group = (ctx.max_binding() / seq_bytes).min(b as u64) as u32;
    Ok((0..b)
        .step_by(per_group as usize)
        .map(|b0| (b0, per_group.min(b - b0)))
        .collect())
}

impl Layer {
    /// Layer `l`'s buffers: keys (and the resident latent cache) per sequence group, the
    /// selection and the outputs; `queries` from the inputs.
    fn new(
        ctx: &GpuContext,
        opts: &EngineOptions,
        groups: &[(u32, u32)],
        l: u32,
        queries: Queries,
    ) -> Result<Self> {
        let (m, b, cap) = (&opts.run, opts.run.batch as u64, opts.capacity() as u64);
        let group_buffers = |what: &str, bytes_per_seq: u64| -> Result<Vec<wgpu::Buffer>> {
            groups
                .iter()
                .map(|&(b0, n)| {
                    let label = format!("{what} layer {l} seqs {b0}..");
                    ctx.storage(&label, n as u64 * bytes_per_seq)
                })
                .collect()
        };
        let (h, kv) = (m.model.heads as u64, m.model.kv_lora_rank as u64);
        Ok(Layer {
            keys: group_buffers("keys", cap * m.key_bytes())?,
            latent: match opts.mode {
                Mode::Resident => group_buffers("latent", cap * m.row_bytes())?,
                Mode::Offload => Vec::new(),
            },
            queries,
            q_fp8: match m.key_dtype {
                crate::config::Dtype::Fp8 => Some(ctx.storage("q_I fp8", fp8_query_bytes(m))?),
                _ => None,
            },
            topk_indices: ctx.storage("topk_indices", b * m.model.topk as u64 * 4)?,
            o_lat: ctx.storage("o_lat", b * h * kv * 4)?,
            lse: ctx.storage("lse", b * h * 4)?,
        })
    }
}

impl DaWork {
    fn record(&self, pass: &mut wgpu::ComputePass) {
        self.order.record(pass);
        self.attend.iter().for_each(|d| d.record(pass));
    }
}

impl ChunkedWork {
    /// Chunk by chunk: its indexer (the previous chunk's gather inside or beside it), top-k and
    /// resolve; then the last chunk's gather. One pass: wgpu orders what depends on what.
    fn record(&self, pass: &mut wgpu::ComputePass) {
        for c in &self.chunks {
            c.indexer.record(pass);
            if let Some(g) = &c.gather_beside {
                g.record(pass);
            }
            c.topk.record(pass);
            c.resolve.record(pass);
        }
        if let Some(g) = &self.last_gather {
            g.record(pass);
        }
    }

    /// Gather dispatches of a step, fused ones included.
    fn gathers(&self) -> usize {
        let fused = self.chunks.iter().filter(|c| !c.follows_lengths).count();
        let beside = self
            .chunks
            .iter()
            .filter(|c| c.gather_beside.is_some())
            .count();
        fused + beside + self.last_gather.is_some() as usize
    }
}

impl OverlapBuffers {
    /// Zeroed marks `[B, capacity]` and sums `[B]` for each of `layers`.
    fn new(ctx: &GpuContext, layers: u32, batch: u32, capacity: u32) -> Result<Self> {
        let zeros = |what: &str, bytes: u64| -> Result<wgpu::Buffer> {
            let buf = ctx.storage(what, bytes)?;
            ctx.fill(&buf, 0);
            Ok(buf)
        };
        let (b, cap) = (batch as u64, capacity as u64);
        Ok(OverlapBuffers {
            marks: (0..layers)
                .map(|_| zeros("overlap marks", b * cap * 4))
                .collect::<Result<_>>()?,
            sums: (0..layers)
                .map(|_| zeros("overlap sums", b * 4))
                .collect::<Result<_>>()?,
        })
    }
}

impl ReadbackLayout {
    /// Timestamps (if timed), then per layer the resolve counts (offload), then per layer the
    /// top-k ids (traces).
    fn new(opts: &EngineOptions, timer: Option<&GpuTimer>, counts: bool) -> Self {
        let (b, layers) = (opts.run.batch as u64, opts.run.layers as u64);
        let timer_bytes = timer.map_or(0, |t| t.bytes());
        let counts_bytes = if counts { b * 8 } else { 0 };
        let topk_bytes = if opts.record_trace {
            b * opts.run.model.topk as u64 * 4
        } else {
            0
        };
        ReadbackLayout {
            timer: 0,
            counts: timer_bytes,
            topk: timer_bytes + layers * counts_bytes,
            size: timer_bytes + layers * (counts_bytes + topk_bytes),
        }
    }
}

/// One layer's inputs and outputs after a step (see [`Engine::layer_snapshot`]).
pub struct LayerSnapshot {
    /// `[B, H, KV + rope]` f32.
    pub q: Vec<f32>,
    /// `[B, k]` token ids (−1 = none).
    pub topk_indices: Vec<i32>,
    /// `[B, k, row]` bytes: the latent row of each selected token (zeros where none).
    pub rows: Vec<u8>,
    /// `[B, H, KV]` f32 bits.
    pub o_lat: Vec<f32>,
    /// `[B, H]` f32.
    pub lse: Vec<f32>,
    /// `[B, H_I, D_I]` the indexer's f32 queries (FP8 keys: before their quantisation).
    pub q_i: Vec<f32>,
    /// `[B, H_I]` the indexer's head weights.
    pub w: Vec<f32>,
    /// Per sequence `[T_b, D_I]`: the values its indexer keys stand for.
    pub keys: Vec<Vec<f32>>,
}

/// Submit what `enc` holds and start a new encoder (for a CPU path that must see the GPU's work).
fn resubmit(ctx: &GpuContext, enc: wgpu::CommandEncoder) -> wgpu::CommandEncoder {
    ctx.submit(enc);
    ctx.device.create_command_encoder(&Default::default())
}

/// Stand-in while the real inputs bind the engine's dispatches.
struct NoInputs;

impl StepInputs for NoInputs {
    fn queries(&mut self, _: &GpuContext, _: u32) -> Result<Queries> {
        Err(Error::Gpu("no step inputs".into()))
    }
    fn next_queries(
        &mut self,
        _: &GpuContext,
        _: u32,
        _: &Queries,
        _: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        Err(Error::Gpu("no step inputs".into()))
    }
    fn rows(
        &self,
        _: &GpuContext,
        _: &RowTarget,
        _: u32,
        _: &[FillRange],
    ) -> Result<Vec<Dispatch>> {
        Err(Error::Gpu("no step inputs".into()))
    }
    fn newest_rows(
        &mut self,
        _: &GpuContext,
        _: &RowTarget,
        _: NewestAt,
        _: u32,
        _: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        Err(Error::Gpu("no step inputs".into()))
    }
}

/// A recorded run at one context: its trace and measured per-layer overlap.
pub struct Recording {
    pub context: u32,
    pub trace: crate::trace::Trace,
    pub overlap: Vec<f64>,
}

/// Decode `base.steps` steps at `context` (all sequences) in offload mode, recording every
/// layer's selections. The pool size does not change the selections (they depend only on the
/// queries and keys); a ratio of 0.2 is used.
pub fn record(ctx: &GpuContext, base: &EngineOptions, context: u32) -> Result<Recording> {
    let m = &base.run;
    let cap = context + base.steps;
    let slots = PoolSize::Ratio(0.2)
        .slots(cap, m.model.topk)
        .unwrap_or(m.model.topk + 1)
        .max(m.model.topk + 1);
    let opts = EngineOptions {
        contexts: vec![context; m.batch as usize],
        mode: Mode::Offload,
        pool: PoolSize::Slots(slots),
        record_trace: true,
        track_overlap: true,
        ..base.clone()
    };
    let mut e = Engine::new(ctx, &opts, u64::MAX)?;
    for _ in 0..opts.steps {
        e.step(ctx)?;
    }
    e.finish(ctx)?;
    Ok(Recording {
        context,
        overlap: e.stats.overlap(),
        trace: e.trace.take().expect("recording"),
    })
}
