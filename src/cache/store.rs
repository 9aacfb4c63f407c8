//! The host store, the GPU staging pool, and one step of the offloaded cache.
//!
//! ```text
//!  host store (every token, every layer)          GPU, per layer
//!  ─────────────────────────────────────          ──────────────────────────────────────────────
//!  zero-copy: host-RAM storage buffers   ──gather──►  pool [B, P, row]   ◄─ slot ids ─ resolve
//!  (or process memory: CPU packs misses ──scatter─►   (slot P−1 = newest token)        ▲
//!   into one staging upload)                          LRU tables [B, P], [B, T]        │ top-k
//!                                        ◄─write_back─ newest row (zero-copy)
//! ```
//!
//! One fetch = resolve (GPU, no CPU round trip) + gather of the misses by the chosen path:
//! - `zero-copy`: one gather shader per host-store group reads the missed rows straight from host
//!   RAM into their slots (FlashTrans). Recorded into the caller's encoder: nothing waits.
//! - `staging`: the CPU reads the copy list, packs the rows from process memory, uploads them
//!   once, and a scatter shader puts them in their slots (one round trip).
//! - `per-row`: the CPU reads the copy list and issues one buffer copy per row (the naive baseline
//!   the paper measured at ~0.8 GB/s).
//!
//! All three leave the same bytes in the pool (tested).

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTimer, block_on, timed_pass};
use crate::kernels::indexer::FusedGather;
use crate::kernels::resolve::{ResolveArgs, ResolveShape};
use crate::kernels::transfer::{TransferArgs, WriteBackArgs};
use crate::kernels::{Dispatch, Resolve, Transfer};
use std::fmt;

/// How missed rows move host → device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum TransferPath {
    ZeroCopy,
    Staging,
    PerRow,
}

impl std::str::FromStr for TransferPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zero-copy" => Ok(TransferPath::ZeroCopy),
            "staging" => Ok(TransferPath::Staging),
            "per-row" => Ok(TransferPath::PerRow),
            _ => Err(Error::config("transfer", s, "zero-copy, staging, per-row")),
        }
    }
}

impl fmt::Display for TransferPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransferPath::ZeroCopy => "zero-copy",
            TransferPath::Staging => "staging",
            TransferPath::PerRow => "per-row",
        })
    }
}

/// Pool size per (layer, sequence): a slot count, or a *sparse memory ratio* = pool / full
/// latent cache of the sequence (the paper's knob; 1.0 = no offload).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolSize {
    Slots(u32),
    Ratio(f64),
    /// The ratio's pool, raised to the smallest pool (top-k + 1) where the context is too
    /// short for the ratio to reach it (`generate`'s pools: a prompt may be shorter than the
    /// top-k).
    RatioOrSmallest(f64),
}

impl PoolSize {
    /// Slots for a sequence of `capacity` tokens; at least `topk + 1` (one reserved for the newest
    /// token), else a configuration error that shows the arithmetic.
    pub fn slots(self, capacity: u32, topk: u32) -> Result<u32> {
        let slots = match self {
            PoolSize::Slots(n) => n,
            PoolSize::Ratio(r) | PoolSize::RatioOrSmallest(r) if r > 0.0 && r <= 1.0 => {
                let ratio = (r * capacity as f64).ceil() as u32;
                match self {
                    PoolSize::RatioOrSmallest(_) => ratio.max(topk.saturating_add(1)),
                    _ => ratio,
                }
            }
            PoolSize::Ratio(r) | PoolSize::RatioOrSmallest(r) => {
                return Err(Error::config("sparse_memory_ratio", r, "(0, 1]"));
            }
        };
        let what = match self {
            PoolSize::Slots(_) => format!("{slots}"),
            PoolSize::Ratio(r) | PoolSize::RatioOrSmallest(r) => {
                format!("{slots} (ratio {r} × context {capacity})")
            }
        };
        crate::kernels::resolve::check_slots(slots, topk, &what)?;
        Ok(slots)
    }
}

/// Sizes of an offloaded cache.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CacheShape {
    pub layers: u32,
    pub batch: u32,
    /// Tokens per sequence the host store and token table hold.
    pub capacity: u32,
    /// Pool slots per (layer, sequence), slot P−1 reserved.
    pub slots: u32,
    /// Bytes per latent row (a multiple of 16).
    pub row_bytes: u64,
    pub topk: u32,
}

/// Hits, misses and bytes moved: per layer and step, or summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub rows_h2d: u64,
    pub bytes_h2d: u64,
    pub rows_d2h: u64,
    pub bytes_d2h: u64,
}

impl std::ops::AddAssign for CacheCounters {
    fn add_assign(&mut self, o: Self) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.rows_h2d += o.rows_h2d;
        self.bytes_h2d += o.bytes_h2d;
        self.rows_d2h += o.rows_d2h;
        self.bytes_d2h += o.bytes_d2h;
    }
}

impl CacheCounters {
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }
}

/// Every sequence's latent rows for every layer, in host memory.
pub struct HostStore {
    shape: CacheShape,
    /// Sequences per host buffer (the binding limit decides).
    seqs_per_group: u32,
    kind: HostKind,
}

enum HostKind {
    /// `[layer][group]` host-RAM storage buffers `[n, capacity, row]` (zero-copy).
    Buffers(Vec<Vec<wgpu::Buffer>>),
    /// `[layer]` process memory `[B, capacity, row]`.
    Memory(Vec<Vec<u8>>),
}

impl HostStore {
    /// Host-RAM GPU buffers when `zero_copy` (needs [`GpuContext::mappable`]), else process memory.
    pub fn new(ctx: &GpuContext, shape: &CacheShape, zero_copy: bool) -> Result<Self> {
        let seq_bytes = shape.capacity as u64 * shape.row_bytes;
        let kind = if zero_copy {
            if seq_bytes > ctx.max_binding() {
                return Err(Error::Unsupported {
                    what: "one sequence's latent rows in one binding".into(),
                    need: format!("{seq_bytes} bytes"),
                    have: format!("max storage binding {}", ctx.max_binding()),
                });
            }
            let per = (ctx.max_binding() / seq_bytes).min(shape.batch as u64) as u32;
            let mut layers = Vec::new();
            for l in 0..shape.layers {
                let mut groups = Vec::new();
                let mut b0 = 0;
                while b0 < shape.batch {
                    let n = per.min(shape.batch - b0);
                    groups.push(ctx.host_buffer(
                        &format!("host store layer {l} seqs {b0}.."),
                        n as u64 * seq_bytes,
                    )?);
                    b0 += n;
                }
                layers.push(groups);
            }
            HostKind::Buffers(layers)
        } else {
            // process memory, reserved fallibly: a store larger than the host can give is an
            // error naming its size, not an abort
            let per_layer = shape.batch as u64 * seq_bytes;
            let mut layers = Vec::new();
            for _ in 0..shape.layers {
                let mut rows: Vec<u8> = Vec::new();
                let n = usize::try_from(per_layer).ok();
                if n.is_none_or(|n| rows.try_reserve_exact(n).is_err()) {
                    return Err(Error::config(
                        "host store",
                        format!(
                            "{} layers × {:.1} MiB",
                            shape.layers,
                            per_layer as f64 / 1048576.0
                        ),
                        "what the host can allocate (reduce the batch, the context or the layers)",
                    ));
                }
                rows.resize(per_layer as usize, 0);
                layers.push(rows);
            }
            HostKind::Memory(layers)
        };
        let seqs_per_group = match &kind {
            HostKind::Buffers(_) => (ctx.max_binding() / seq_bytes).min(shape.batch as u64) as u32,
            HostKind::Memory(_) => shape.batch,
        };
        Ok(HostStore {
            shape: shape.clone(),
            seqs_per_group,
            kind,
        })
    }

    pub fn is_zero_copy(&self) -> bool {
        matches!(self.kind, HostKind::Buffers(_))
    }

    pub fn describe(&self) -> String {
        match &self.kind {
            HostKind::Buffers(l) => format!(
                "host-RAM GPU buffers (MAP_READ | STORAGE), {} per layer, zero-copy access by shaders",
                l.first().map_or(0, Vec::len)
            ),
            HostKind::Memory(_) => "process memory (rows moved by the CPU)".into(),
        }
    }

    /// Bytes held in host memory.
    pub fn bytes(&self) -> u64 {
        self.shape.layers as u64
            * self.shape.batch as u64
            * self.shape.capacity as u64
            * self.shape.row_bytes
    }

    /// (first sequence, sequences) of each host group.
    pub fn groups(&self) -> Vec<(u32, u32)> {
        (0..self.shape.batch)
            .step_by(self.seqs_per_group as usize)
            .map(|b0| (b0, self.seqs_per_group.min(self.shape.batch - b0)))
            .collect()
    }

    /// The host group (first sequence, sequences) holding sequence `b`.
    pub fn group_of(&self, b: u32) -> (u32, u32) {
        let b0 = b / self.seqs_per_group * self.seqs_per_group;
        (b0, self.seqs_per_group.min(self.shape.batch - b0))
    }

    fn offset(&self, b: u32, token: u32) -> u64 {
        let local = b % self.seqs_per_group;
        (local as u64 * self.shape.capacity as u64 + token as u64) * self.shape.row_bytes
    }

    fn check_range(&self, layer: u32, b: u32, token: u32, rows: u64) -> Result<()> {
        if layer >= self.shape.layers
            || b >= self.shape.batch
            || token as u64 + rows > self.shape.capacity as u64
        {
            return Err(Error::config(
                "host store range",
                format!(
                    "layer {layer}, sequence {b}, tokens {token}..{}",
                    token as u64 + rows
                ),
                format!(
                    "{} layers, {} sequences, {} tokens",
                    self.shape.layers, self.shape.batch, self.shape.capacity
                ),
            ));
        }
        Ok(())
    }

    /// The host buffer holding sequence `b` of `layer` (zero-copy stores only).
    pub fn buffer(&self, layer: u32, b: u32) -> Option<&wgpu::Buffer> {
        match &self.kind {
            HostKind::Buffers(l) => Some(&l[layer as usize][(b / self.seqs_per_group) as usize]),
            HostKind::Memory(_) => None,
        }
    }

    /// Write whole rows from the CPU, starting at `token` (e.g. a prefill's latent rows).
    pub fn write(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
        b: u32,
        token: u32,
        bytes: &[u8],
    ) -> Result<()> {
        let rows = bytes.len() as u64 / self.shape.row_bytes;
        self.check_range(layer, b, token, rows)?;
        let off = self.offset(b, token);
        match &mut self.kind {
            HostKind::Buffers(_) => {
                ctx.write(self.buffer(layer, b).expect("zero-copy store"), off, bytes)
            }
            HostKind::Memory(m) => {
                let off =
                    (b as u64 * self.shape.capacity as u64 + token as u64) * self.shape.row_bytes;
                m[layer as usize][off as usize..][..bytes.len()].copy_from_slice(bytes);
            }
        }
        Ok(())
    }

    /// Read `rows` rows of sequence `b`, `layer`, starting at `token`.
    pub fn read(
        &self,
        ctx: &GpuContext,
        layer: u32,
        b: u32,
        token: u32,
        rows: u32,
    ) -> Result<Vec<u8>> {
        self.check_range(layer, b, token, rows as u64)?;
        let len = rows as u64 * self.shape.row_bytes;
        match &self.kind {
            HostKind::Buffers(_) => ctx.read_host(
                self.buffer(layer, b).expect("zero-copy store"),
                self.offset(b, token),
                len,
            ),
            HostKind::Memory(m) => {
                let off =
                    (b as u64 * self.shape.capacity as u64 + token as u64) * self.shape.row_bytes;
                Ok(m[layer as usize][off as usize..][..len as usize].to_vec())
            }
        }
    }
}

/// Per layer on the GPU: the pool rows, the LRU tables, and one step's resolve outputs.
struct LayerPool {
    pool: wgpu::Buffer,       // [B, P, row]
    slot_state: wgpu::Buffer, // [B, P] (token, last use)
    token_slot: wgpu::Buffer, // [B, capacity]
    slot_ids: wgpu::Buffer,   // [B, k]
    copies: wgpu::Buffer,     // [B, k] (token, slot)
    counts: wgpu::Buffer,     // [B] (misses, hits)
}

/// One step's new latent rows: `rows` `[B, row]`, the sequence table `seq` `[B, 2]` (_, T_b) whose
/// T_b − 1 is each row's token, and those tokens on the CPU (`newest`, for a process-memory store).
#[derive(Clone, Copy)]
pub struct NewRows<'a> {
    pub rows: &'a wgpu::Buffer,
    pub seq: &'a wgpu::Buffer,
    pub newest: &'a [u32],
}

/// Which transfer dispatches and copies have been recorded, by path: what actually ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PathUse {
    /// Zero-copy gather dispatches.
    pub gathers: u64,
    /// Staging uploads + scatter dispatches.
    pub scatters: u64,
    /// Single-row buffer copies (per-row path).
    pub row_copies: u64,
}

/// One layer's fetch and write-back, bound once to the buffers they read and write.
pub struct LayerDispatches {
    resolve: Dispatch,
    /// Zero-copy: one gather per host-store group. Staging: one scatter. Per-row: none.
    gather: Vec<Dispatch>,
    /// Zero-copy store: one write_back per host-store group; process memory: one pool_newest.
    write_back: Vec<Dispatch>,
}

/// What [`OffloadCache::record_in_pass`] records after the selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Resolve and gather.
    All,
    /// The resolve alone (the gathers left out: the engine's `omit_gathers`).
    ResolveOnly,
    /// Neither (the selection fetched chunk by chunk).
    Nothing,
}

/// The offloaded latent cache of a batch: host store, GPU pools, resolve and transfers.
///
/// A decode step records, per layer: [`OffloadCache::record_write_back`], then (after the top-k)
/// [`OffloadCache::record_resolve`] and [`OffloadCache::record_gather`]. Nothing here submits.
/// The CPU paths need the GPU's results before they can go on: where
/// [`OffloadCache::gather_needs_sync`] or [`OffloadCache::write_back_needs_sync`] say so, the
/// caller submits what it recorded first (the engine does).
pub struct OffloadCache {
    pub shape: CacheShape,
    /// The path in use (may differ from the one asked for: see `fallback`).
    pub path: TransferPath,
    /// Why the asked-for path was replaced, if it was.
    pub fallback: Option<String>,
    pub host: HostStore,
    layers: Vec<LayerPool>,
    resolve: Resolve,
    transfer: Transfer,
    /// Counters summed per layer since creation (warm-up excluded).
    pub counters: Vec<CacheCounters>,
    /// What the transfers actually recorded.
    pub path_use: PathUse,
    staging: Option<wgpu::Buffer>,
    /// Resolve's step number, the same for every layer's tables ([`OffloadCache::next_step`]).
    step: u32,
    clock: wgpu::Buffer,
}

impl OffloadCache {
    pub fn new(ctx: &GpuContext, shape: &CacheShape, path: TransferPath) -> Result<Self> {
        let (path, fallback) = match path {
            TransferPath::ZeroCopy if !ctx.mappable => (
                TransferPath::Staging,
                Some(
                    "the adapter lacks MAPPABLE_PRIMARY_BUFFERS: zero-copy replaced by staging"
                        .to_string(),
                ),
            ),
            p => (p, None),
        };
        let zero_copy_store = ctx.mappable && path != TransferPath::Staging;
        let host = HostStore::new(ctx, shape, zero_copy_store)?;
        let resolve = Resolve::new(
            ctx,
            &ResolveShape {
                k: shape.topk,
                slots: shape.slots,
                capacity: shape.capacity,
            },
        )?;
        let transfer = Transfer::new(
            ctx,
            shape.row_bytes,
            shape.topk,
            shape.slots,
            shape.capacity,
        )?;
        let (b, p, k) = (shape.batch as u64, shape.slots as u64, shape.topk as u64);
        let mut layers = Vec::new();
        for l in 0..shape.layers {
            let slot_state = ctx.storage(&format!("slot_state {l}"), b * p * 8)?;
            let init: Vec<[i32; 2]> = vec![[-1, 0]; (b * p) as usize];
            ctx.write(&slot_state, 0, bytemuck::cast_slice(&init));
            let token_slot =
                ctx.storage(&format!("token_slot {l}"), b * shape.capacity as u64 * 4)?;
            ctx.fill(&token_slot, u32::MAX);
            layers.push(LayerPool {
                pool: ctx.storage(&format!("pool {l}"), b * p * shape.row_bytes)?,
                slot_state,
                token_slot,
                slot_ids: ctx.storage(&format!("slot_ids {l}"), b * k * 4)?,
                copies: ctx.storage(&format!("copies {l}"), b * k * 8)?,
                counts: ctx.storage(&format!("counts {l}"), b * 8)?,
            });
        }
        let staging = match path {
            TransferPath::Staging => Some(ctx.storage("staging", b * k * shape.row_bytes)?),
            _ => None,
        };
        Ok(OffloadCache {
            shape: shape.clone(),
            path,
            fallback,
            host,
            layers,
            resolve,
            transfer,
            counters: vec![CacheCounters::default(); shape.layers as usize],
            path_use: PathUse::default(),
            staging,
            step: 0,
            clock: Resolve::clock(ctx, 0),
        })
    }

    /// The pool of `layer` `[B, P, row]`: sparse MLA reads it with the slot ids and a sequence
    /// table whose first rows are [`OffloadCache::pool_first_rows`].
    pub fn pool(&self, layer: u32) -> &wgpu::Buffer {
        &self.layers[layer as usize].pool
    }

    /// `[B, k]` slot ids of the last fetch of `layer`.
    pub fn slot_ids(&self, layer: u32) -> &wgpu::Buffer {
        &self.layers[layer as usize].slot_ids
    }

    /// `[B, k]` (token, slot) copy list of the last resolve of `layer`: its first `counts[b].0`
    /// entries are sequence b's misses.
    pub fn copies(&self, layer: u32) -> &wgpu::Buffer {
        &self.layers[layer as usize].copies
    }

    /// `[B]` (misses, hits) of the last resolve of `layer`: copy it into a readback, then
    /// [`OffloadCache::add_counts`].
    pub fn counts(&self, layer: u32) -> &wgpu::Buffer {
        &self.layers[layer as usize].counts
    }

    /// First pool row of each sequence (b · P).
    pub fn pool_first_rows(&self) -> Vec<u32> {
        (0..self.shape.batch)
            .map(|b| b * self.shape.slots)
            .collect()
    }

    /// Bytes held on the GPU: pools, LRU tables, resolve outputs, staging.
    pub fn device_bytes(&self) -> u64 {
        let per_layer: u64 = {
            let l = &self.layers[0];
            [
                &l.pool,
                &l.slot_state,
                &l.token_slot,
                &l.slot_ids,
                &l.copies,
                &l.counts,
            ]
            .iter()
            .map(|b| b.size())
            .sum()
        };
        per_layer * self.shape.layers as u64 + self.staging.as_ref().map_or(0, |s| s.size())
    }

    /// Bytes of the pools alone (the "sparse memory pool").
    pub fn pool_bytes(&self) -> u64 {
        self.shape.layers as u64 * self.layers[0].pool.size()
    }

    /// `layer`'s fetch (resolve of `topk_indices` `[B, k]` + the transfer of its misses) and
    /// write-back of `new_rows` `[B, row]`, bound to these buffers. `seq`: `[B, 2]` (_, T_b).
    /// Built once and recorded every step.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        layer: u32,
        topk_indices: &wgpu::Buffer,
        seq: &wgpu::Buffer,
        new_rows: &wgpu::Buffer,
    ) -> LayerDispatches {
        let l = &self.layers[layer as usize];
        let batch = self.shape.batch;
        let resolve = self.bind_resolve(ctx, layer, topk_indices, seq, (0, batch));
        let targs = TransferArgs {
            copies: &l.copies,
            counts: &l.counts,
            pool: &l.pool,
            b0: 0,
            batch,
        };
        let gather = match (self.path, &self.staging) {
            (TransferPath::ZeroCopy, _) => self
                .host
                .groups()
                .into_iter()
                .map(|g| self.bind_gather(ctx, layer, g).expect("zero-copy store"))
                .collect(),
            (TransferPath::Staging, Some(staging)) => {
                vec![self.transfer.scatter(ctx, &targs, staging)]
            }
            _ => Vec::new(),
        };
        let write_back = |host: Option<&wgpu::Buffer>, b0, n| {
            let args = WriteBackArgs {
                pool: &l.pool,
                new_rows,
                seq,
                host,
                b0,
                batch: n,
            };
            self.transfer.write_back(ctx, &args)
        };
        let write_back = if self.host.is_zero_copy() {
            self.host
                .groups()
                .into_iter()
                .map(|(b0, n)| write_back(self.host.buffer(layer, b0), b0, n))
                .collect()
        } else {
            vec![write_back(None, 0, batch)]
        };
        LayerDispatches {
            resolve,
            gather,
            write_back,
        }
    }

    /// The resolve of sequences `b0 .. b0 + n` of `layer` alone (a chunk of the engine's
    /// overlapped schedule), bound once.
    pub fn bind_resolve(
        &self,
        ctx: &GpuContext,
        layer: u32,
        topk_indices: &wgpu::Buffer,
        seq: &wgpu::Buffer,
        (b0, n): (u32, u32),
    ) -> Dispatch {
        let l = &self.layers[layer as usize];
        self.resolve.bind(
            ctx,
            &ResolveArgs {
                topk_indices,
                seq,
                slot_state: &l.slot_state,
                token_slot: &l.token_slot,
                slot_ids: &l.slot_ids,
                copies: &l.copies,
                counts: &l.counts,
                clock: &self.clock,
                b0,
                batch: n,
            },
        )
    }

    /// The zero-copy gather of sequences `b0 .. b0 + n` of `layer` (inside one host-store
    /// group), bound once. `None` where the path is not zero-copy: the CPU paths wait between
    /// the resolve and the transfer.
    pub fn bind_gather(
        &self,
        ctx: &GpuContext,
        layer: u32,
        (b0, n): (u32, u32),
    ) -> Option<Dispatch> {
        if self.path != TransferPath::ZeroCopy {
            return None;
        }
        let l = &self.layers[layer as usize];
        let targs = TransferArgs {
            copies: &l.copies,
            counts: &l.counts,
            pool: &l.pool,
            b0,
            batch: n,
        };
        let host = self.host.buffer(layer, b0)?;
        Some(
            self.transfer
                .gather(ctx, &targs, host, self.host.group_of(b0).0),
        )
    }

    /// The zero-copy gather of sequences `b0 .. b0 + n` of `layer` (inside one host-store group)
    /// as [`Indexer::bind_with_gather`](crate::kernels::Indexer::bind_with_gather) takes it:
    /// run inside another chunk's indexer dispatch. `None` where the path is not zero-copy.
    pub fn fused_gather(&self, layer: u32, (b0, n): (u32, u32)) -> Option<FusedGather<'_>> {
        if self.path != TransferPath::ZeroCopy {
            return None;
        }
        let l = &self.layers[layer as usize];
        Some(FusedGather {
            copies: &l.copies,
            counts: &l.counts,
            host: self.host.buffer(layer, b0)?,
            host_b0: self.host.group_of(b0).0,
            pool: &l.pool,
            row_bytes: self.shape.row_bytes,
            k: self.shape.topk,
            slots: self.shape.slots,
            capacity: self.shape.capacity,
            b0,
            batch: n,
        })
    }

    /// The write-back needs the CPU: the host store is process memory, so the CPU copies the new
    /// rows after the GPU wrote them ([`OffloadCache::write_back_cpu`]).
    pub fn write_back_needs_sync(&self) -> bool {
        !self.host.is_zero_copy()
    }

    /// The transfer needs the CPU: staging and per-row read the copy list the resolve wrote.
    pub fn gather_needs_sync(&self) -> bool {
        self.path != TransferPath::ZeroCopy
    }

    /// The newest row of every sequence into its pool's reserved slot and (zero-copy store)
    /// written back into the host store, by the GPU.
    pub fn record_write_back(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        layer: u32,
        d: &LayerDispatches,
        timer: Option<(&GpuTimer, u32)>,
    ) {
        let mut pass = timed_pass(enc, timer);
        d.write_back.iter().for_each(|w| w.record(&mut pass));
        self.count_write_back(layer);
    }

    fn count_write_back(&mut self, layer: u32) {
        let c = &mut self.counters[layer as usize];
        c.rows_d2h += self.shape.batch as u64;
        c.bytes_d2h += self.shape.batch as u64 * self.shape.row_bytes;
    }

    /// The whole fetch and write-back of `layer` needs no CPU: zero-copy store and path.
    pub fn gpu_only(&self) -> bool {
        !self.write_back_needs_sync() && !self.gather_needs_sync()
    }

    /// `layer`'s write-back, resolve and gather recorded into `pass`, around `between`
    /// (what runs after the write-back and before the resolve: the selection). Only where
    /// [`OffloadCache::gpu_only`]; the engine uses it for its untimed steps, which it records in
    /// one pass.
    ///
    /// `fetch` says which of its own resolve and gather follow `between` (none where `between`
    /// fetched itself: the engine's chunks).
    pub fn record_in_pass(
        &mut self,
        pass: &mut wgpu::ComputePass,
        layer: u32,
        d: &LayerDispatches,
        between: impl FnOnce(&mut wgpu::ComputePass),
        fetch: Fetch,
    ) {
        debug_assert!(self.gpu_only());
        d.write_back.iter().for_each(|w| w.record(pass));
        self.count_write_back(layer);
        between(pass);
        if fetch != Fetch::Nothing {
            d.resolve.record(pass);
        }
        if fetch == Fetch::All {
            d.gather.iter().for_each(|g| g.record(pass));
            self.count_gathers(d.gather.len());
        }
    }

    /// `n` zero-copy gather dispatches recorded (into [`OffloadCache::path_use`]).
    pub fn count_gathers(&mut self, n: usize) {
        self.path_use.gathers += n as u64;
    }

    /// Process-memory store: copy the new rows (already written by the GPU and submitted) into
    /// the host store at each sequence's newest token.
    pub async fn write_back_cpu(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
        new: &NewRows<'_>,
    ) -> Result<()> {
        let rb = self.shape.row_bytes as usize;
        let rows: Vec<u8> = ctx.read_async(new.rows).await?;
        for (b, &t) in new.newest.iter().enumerate() {
            self.host
                .write(ctx, layer, b as u32, t, &rows[b * rb..][..rb])?;
        }
        Ok(())
    }

    /// Number the next resolves (of every layer) one step later than the last: once per decode
    /// step, before its submit. Recency in the pools is ordered by these numbers.
    pub fn next_step(&mut self, ctx: &GpuContext) {
        self.step += 1;
        Resolve::set_step(ctx, &self.clock, self.step);
    }

    /// Resolve `layer`'s top-k into slot ids, evictions and a copy list, on the GPU, at the step
    /// number [`OffloadCache::next_step`] set.
    pub fn record_resolve(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        d: &LayerDispatches,
        timer: Option<(&GpuTimer, u32)>,
    ) {
        d.resolve.record(&mut timed_pass(enc, timer));
    }

    /// Bring `layer`'s misses into the pool by the cache's path. Zero-copy records one gather
    /// per host-store group and waits for nothing; staging and per-row read the copy list, so
    /// the resolve must have been submitted ([`OffloadCache::gather_needs_sync`]).
    pub async fn record_gather(
        &mut self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        layer: u32,
        d: &LayerDispatches,
        timer: Option<(&GpuTimer, u32)>,
    ) -> Result<()> {
        if self.path == TransferPath::ZeroCopy {
            let mut pass = timed_pass(enc, timer);
            d.gather.iter().for_each(|g| g.record(&mut pass));
            self.path_use.gathers += d.gather.len() as u64;
            return Ok(());
        }
        let l = &self.layers[layer as usize];
        let copies: Vec<[u32; 2]> = ctx.read_async(&l.copies).await?;
        let counts: Vec<[u32; 2]> = ctx.read_async(&l.counts).await?;
        let (k, rb) = (self.shape.topk as usize, self.shape.row_bytes);
        if self.path == TransferPath::Staging {
            // pack each sequence's missed rows back to back, upload them in one write
            let staging = self.staging.as_ref().expect("staging buffer");
            let mut packed = Vec::new();
            for b in 0..self.shape.batch as usize {
                packed.clear();
                for c in &copies[b * k..][..counts[b][0] as usize] {
                    packed.extend_from_slice(self.host.read_local(layer, b as u32, c[0])?);
                }
                ctx.write(staging, (b * k) as u64 * rb, &packed);
            }
            let mut pass = timed_pass(enc, timer);
            d.gather.iter().for_each(|g| g.record(&mut pass));
            self.path_use.scatters += d.gather.len() as u64;
            return Ok(());
        }
        for b in 0..self.shape.batch as usize {
            for c in &copies[b * k..][..counts[b][0] as usize] {
                let dst = ((b as u64) * self.shape.slots as u64 + c[1] as u64) * rb;
                match self.host.buffer(layer, b as u32) {
                    Some(host) => enc.copy_buffer_to_buffer(
                        host,
                        self.host.offset(b as u32, c[0]),
                        &l.pool,
                        dst,
                        rb,
                    ),
                    None => ctx.write(&l.pool, dst, self.host.read_local(layer, b as u32, c[0])?),
                }
                self.path_use.row_copies += 1;
            }
        }
        Ok(())
    }

    /// Add one resolve's `[B]` (misses, hits) of `layer` to the counters; returns them.
    pub fn add_counts(&mut self, layer: u32, counts: &[[u32; 2]]) -> CacheCounters {
        let misses: u64 = counts.iter().map(|c| c[0] as u64).sum();
        let step = CacheCounters {
            hits: counts.iter().map(|c| c[1] as u64).sum(),
            misses,
            rows_h2d: misses,
            bytes_h2d: misses * self.shape.row_bytes,
            ..Default::default()
        };
        self.counters[layer as usize] += step;
        step
    }

    /// Resolve `topk_indices` `[B, k]` for `layer` and bring the misses into the pool, now:
    /// records, submits and waits. Returns this fetch's counters (also added to `counters`).
    /// The engine records instead ([`OffloadCache::bind`]); this is for warm-up and tests.
    pub fn fetch(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
        topk_indices: &wgpu::Buffer,
        seq: &wgpu::Buffer,
    ) -> Result<CacheCounters> {
        block_on("fetch", self.fetch_async(ctx, layer, topk_indices, seq))
    }

    /// [`OffloadCache::fetch`] without blocking (a browser page).
    pub async fn fetch_async(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
        topk_indices: &wgpu::Buffer,
        seq: &wgpu::Buffer,
    ) -> Result<CacheCounters> {
        let unused = ctx.storage("no new rows", 16)?;
        let d = self.bind(ctx, layer, topk_indices, seq, &unused);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.next_step(ctx);
        self.record_resolve(&mut enc, &d, None);
        if self.gather_needs_sync() {
            ctx.submit(enc);
            enc = ctx.device.create_command_encoder(&Default::default());
        }
        self.record_gather(ctx, &mut enc, layer, &d, None).await?;
        ctx.submit(enc);
        let counts: Vec<[u32; 2]> = ctx.read_async(self.counts(layer)).await?;
        Ok(self.add_counts(layer, &counts))
    }

    /// Write the newest rows of `layer` back, now: records, submits and waits.
    pub fn write_back(&mut self, ctx: &GpuContext, layer: u32, new: &NewRows) -> Result<()> {
        let unused = ctx.storage("no top-k", 16)?;
        let d = self.bind(ctx, layer, &unused, new.seq, new.rows);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.record_write_back(&mut enc, layer, &d, None);
        ctx.submit(enc);
        if self.write_back_needs_sync() {
            block_on("write_back", self.write_back_cpu(ctx, layer, new))?;
        }
        ctx.check()
    }

    /// The GPU LRU tables of `layer`, sequence `b`: (slot → (token, last use)), (token → slot).
    pub fn tables(
        &self,
        ctx: &GpuContext,
        layer: u32,
        b: u32,
    ) -> Result<(Vec<[i32; 2]>, Vec<i32>)> {
        let l = &self.layers[layer as usize];
        let state: Vec<[i32; 2]> = ctx.read(&l.slot_state)?;
        let tok: Vec<i32> = ctx.read(&l.token_slot)?;
        let (p, cap) = (self.shape.slots as usize, self.shape.capacity as usize);
        Ok((
            state[b as usize * p..][..p].to_vec(),
            tok[b as usize * cap..][..cap].to_vec(),
        ))
    }

    /// How full `layer`'s pools are: (slots holding a row, slots) over the whole batch, read
    /// from the GPU LRU's slot table.
    pub async fn occupancy(&self, ctx: &GpuContext, layer: u32) -> Result<(u64, u64)> {
        let state: Vec<[i32; 2]> = ctx
            .read_async(&self.layers[layer as usize].slot_state)
            .await?;
        let filled = state.iter().filter(|s| s[0] >= 0).count() as u64;
        Ok((filled, state.len() as u64))
    }

    /// LRU warm-up (the paper's LRU-Warmup): seed `layer`'s pools with the top-k ids of the last
    /// prefill windows, oldest window first, as if they were decode steps. Returns their counters,
    /// which are not counted as decode traffic.
    pub async fn warm(
        &mut self,
        ctx: &GpuContext,
        layer: u32,
        windows: &[wgpu::Buffer],
        seq: &wgpu::Buffer,
    ) -> Result<CacheCounters> {
        let mut total = CacheCounters::default();
        let before = self.counters[layer as usize];
        for w in windows {
            total += self.fetch_async(ctx, layer, w, seq).await?;
        }
        self.counters[layer as usize] = before;
        Ok(total)
    }
}

impl HostStore {
    /// One row of sequence `b` at `token`, for the CPU paths (process memory: a slice; host
    /// buffers: a mapped read).
    fn read_local(&self, layer: u32, b: u32, token: u32) -> Result<&[u8]> {
        match &self.kind {
            HostKind::Memory(m) => {
                let off =
                    (b as u64 * self.shape.capacity as u64 + token as u64) * self.shape.row_bytes;
                Ok(&m[layer as usize][off as usize..][..self.shape.row_bytes as usize])
            }
            HostKind::Buffers(_) => Err(Error::Gpu(
                "read_local on a host-buffer store (staging uses process memory)".into(),
            )),
        }
    }
}
