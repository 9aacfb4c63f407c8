//! What a decode run is asked to do: [`EngineOptions`] and its validation, and [`Mode`].

use crate::cache::{PoolSize, TransferPath};
use crate::config::{MAX_CONTEXT, RunConfig};
use crate::error::{Error, Result};
use crate::limits;
use std::fmt;

/// Where the latent cache lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Mode {
    Resident,
    Offload,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Resident => "resident",
            Mode::Offload => "offload",
        })
    }
}

/// What one layer's step runs between the top-k and the end of sparse MLA (offload, zero-copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LayerSchedule {
    /// Indexer → top-k → resolve → gather → sparse MLA, each over the whole batch: every missed
    /// row's bus time is exposed.
    Serial,
    /// ESS's dual attention on one queue: after the resolve, each sequence's ids are ordered
    /// hits first (`kernels::DaOrder`); one sparse MLA `scores` dispatch scores the tiles of hits
    /// while its first workgroups gather the misses; a second scores the rest, then `attend`.
    /// Needs the coop sparse MLA to overlap (elsewhere: the gather, then sparse MLA over the
    /// reordered ids). The attention sums in another order: outputs within a stated tolerance of
    /// serial's, not bit for bit.
    Da,
    /// ESS's dual-batch overlap in `n` chunks of the batch (2: the paper's DBA). Chunk by chunk:
    /// its indexer, top-k and resolve; the previous chunk's gather runs inside this chunk's
    /// indexer dispatch (its first workgroups gather while the rest score keys). Only the last
    /// chunk's gather is left in the open. Needs the coop indexer to overlap (elsewhere the
    /// gather is a second dispatch). Outputs bit for bit serial's.
    Dba(u32),
}

impl LayerSchedule {
    /// `serial` (or `none`), `da`, `dba` (2 chunks), `dba:N` (N = 1 ..= 64 chunks).
    pub fn parse(s: &str) -> Result<LayerSchedule> {
        let t = s.trim();
        let bad = || {
            Error::config(
                "overlap",
                limits::shown(s),
                "none, da, dba, dba:N (N = 1 ..= 64 chunks) or layerwise:FILE",
            )
        };
        match t {
            "none" | "serial" => Ok(LayerSchedule::Serial),
            "da" => Ok(LayerSchedule::Da),
            "dba" => Ok(LayerSchedule::Dba(2)),
            _ => match t.strip_prefix("dba:") {
                Some(n) => {
                    let n = n.trim().parse::<u32>().map_err(|_| bad())?;
                    limits::in_range("overlap chunks", n as u64, 1, MAX_CHUNKS as u64)?;
                    Ok(LayerSchedule::Dba(n))
                }
                None => Err(bad()),
            },
        }
    }

    /// Chunks of the batch (1 but for DBA).
    pub fn chunks(self) -> u32 {
        match self {
            LayerSchedule::Dba(n) => n,
            _ => 1,
        }
    }
}

impl fmt::Display for LayerSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerSchedule::Serial => f.write_str("none"),
            LayerSchedule::Da => f.write_str("da"),
            LayerSchedule::Dba(n) => write!(f, "dba:{n}"),
        }
    }
}

/// How a step's transfers overlap its compute (`--overlap`; not the step-to-step overlap of the
/// selections, [`EngineOptions::track_overlap`]; docs/PERF.md "Overlap in the engine").
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum TransferOverlap {
    /// One schedule for every layer.
    All(LayerSchedule),
    /// One per layer, chosen from a miss profile by [`crate::engine::choose_schedule`].
    Layerwise(Vec<LayerSchedule>),
}

impl TransferOverlap {
    pub const NONE: TransferOverlap = TransferOverlap::All(LayerSchedule::Serial);

    /// `layer`'s schedule.
    pub fn schedule(&self, layer: u32) -> LayerSchedule {
        match self {
            TransferOverlap::All(s) => *s,
            TransferOverlap::Layerwise(per_layer) => per_layer
                .get(layer as usize)
                .copied()
                .unwrap_or(LayerSchedule::Serial),
        }
    }

    /// Chunks of `layer`'s selection and fetch (1: not DBA).
    pub fn chunks(&self, layer: u32) -> u32 {
        self.schedule(layer).chunks()
    }

    /// One schedule for every layer (`layerwise` takes a profile and is made by the caller).
    pub fn parse(s: &str) -> Result<TransferOverlap> {
        LayerSchedule::parse(s).map(TransferOverlap::All)
    }
}

impl fmt::Display for TransferOverlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferOverlap::All(s) => s.fmt(f),
            TransferOverlap::Layerwise(c) => {
                let c: Vec<String> = c.iter().map(|n| n.to_string()).collect();
                write!(f, "layerwise ({})", c.join(","))
            }
        }
    }
}

/// Most chunks an overlapped step splits a batch into.
pub const MAX_CHUNKS: u32 = 64;

#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// The model and the run's layers, batch and cache storage (any dtype per cache).
    pub run: RunConfig,
    /// Context of each sequence before decoding (ragged); `run.batch` of them.
    pub contexts: Vec<u32>,
    pub steps: u32,
    pub mode: Mode,
    pub pool: PoolSize,
    pub transfer: TransferPath,
    /// Step-to-step similarity of the indexer queries, 0 ..= 1.
    pub locality: f32,
    /// Per-layer ρ (overrides `locality` when not empty; one per layer): see [`crate::locality`].
    pub layer_locality: Vec<f32>,
    /// Keep every layer's top-k of every step (and warm-up window) as a [`crate::trace::Trace`].
    pub record_trace: bool,
    /// Prefill windows whose top-k seed the pools (LRU warm-up); 0 = off.
    pub warmup_windows: u32,
    pub seed: u64,
    /// Measure the step-to-step overlap of every layer's top-k, on the GPU (read at the end).
    pub track_overlap: bool,
    /// Put GPU timestamps around the stages of every `time_every`-th step, counted back from
    /// the last (1 = every step; GPU times are the mean over the timed steps). On the H200 a
    /// timestamped step of the main job takes 0.13 ms more wall time than an untimed one (the
    /// timestamps sit between the stages' passes), so sampling keeps the measurement from
    /// slowing what it measures.
    pub time_every: u32,
    /// Fingerprint every layer's `o_lat` and `lse` at every step on the GPU (64-bit digests,
    /// read at the end): how two runs are compared bit for bit without reading their outputs.
    pub digest_outputs: bool,
    /// How transfers overlap compute (offload mode).
    pub transfer_overlap: TransferOverlap,
    /// Leave the misses' gathers out of every step (the same schedule with no bus traffic):
    /// the baseline of the exposed transfer time (`figures overlap`). The outputs are wrong.
    pub omit_gathers: bool,
    /// The step's inputs come from this model, whose weights and activations the memory plan
    /// counts at each batch: [`super::Engine::new`] builds them ([`crate::model::step::ModelInputs`]
    /// over hashed contexts of `contexts`: a real decode step over rows it did not compute;
    /// what `decode`, `sweep` and the figures run with `--model` or `--builtin`), or
    /// `model::generate` gives them to [`super::Engine::with_inputs`] (its prompts' prefill).
    /// `run` must be the model's ([`crate::model::generate::run_config`]). `None`: the synthetic
    /// queries.
    pub model: Option<ModelRef>,
}

/// A model's weights for the process (leaked once: every engine of a run shares them) and how
/// they are described in reports.
#[derive(Clone)]
pub struct ModelRef {
    pub weights: &'static crate::reference::model::ModelWeights,
    pub what: String,
}

impl std::fmt::Debug for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelRef({})", self.what)
    }
}

impl EngineOptions {
    /// A run of `run` over `contexts` with every other switch at its plainest: one step,
    /// resident, the CLI's default pool (20% of the capacity) on the zero-copy path, no
    /// locality (independent queries), no warm-up, seed 0, nothing recorded, every step timed,
    /// no transfer overlap, synthetic queries. Set what a run needs with struct update syntax:
    /// `EngineOptions { steps: 8, ..EngineOptions::new(run, contexts) }`.
    pub fn new(run: RunConfig, contexts: Vec<u32>) -> EngineOptions {
        EngineOptions {
            run,
            contexts,
            steps: 1,
            mode: Mode::Resident,
            pool: PoolSize::Ratio(0.2),
            transfer: TransferPath::ZeroCopy,
            locality: 0.0,
            layer_locality: Vec::new(),
            record_trace: false,
            warmup_windows: 0,
            seed: 0,
            track_overlap: false,
            time_every: 1,
            digest_outputs: false,
            transfer_overlap: TransferOverlap::NONE,
            omit_gathers: false,
            model: None,
        }
    }

    /// Tokens each sequence can hold: its longest context plus the steps (saturating: `validate`
    /// refuses anything past [`MAX_CONTEXT`]), rounded up to a multiple of 4 for FP8 keys (the
    /// FP8 key cache keeps its scales after all its keys' values, and a cache of whole vec4s of
    /// scales is one the kernels can read to the end whatever the sequence groups).
    pub fn capacity(&self) -> u32 {
        let longest = self.contexts.iter().copied().max().unwrap_or(0);
        let cap = longest.saturating_add(self.steps);
        match self.run.key_dtype {
            crate::config::Dtype::Fp8 => cap.saturating_add(3) / 4 * 4,
            _ => cap,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.run.validate()?;
        if self.contexts.len() != self.run.batch as usize {
            return Err(Error::config(
                "contexts",
                self.contexts.len(),
                format!("one per sequence ({})", self.run.batch),
            ));
        }
        for &c in &self.contexts {
            limits::in_range("context", c as u64, 1, MAX_CONTEXT as u64)?;
        }
        limits::in_range("steps", self.steps as u64, 1, limits::MAX_STEPS as u64)?;
        let longest = self.contexts.iter().copied().max().unwrap_or(0) as u64;
        if longest + self.steps as u64 > MAX_CONTEXT as u64 {
            return Err(Error::config(
                "context + steps",
                format!(
                    "{longest} + {} = {}",
                    self.steps,
                    longest + self.steps as u64
                ),
                format!("≤ {MAX_CONTEXT} (every sequence holds its context and the new tokens)"),
            ));
        }
        limits::in_range(
            "time-every",
            self.time_every as u64,
            1,
            limits::MAX_STEPS as u64,
        )?;
        limits::in_range(
            "warmup",
            self.warmup_windows as u64,
            0,
            limits::MAX_WARMUP as u64,
        )?;
        limits::unit("locality", self.locality as f64)?;
        if !self.layer_locality.is_empty() && self.layer_locality.len() != self.run.layers as usize
        {
            return Err(Error::config(
                "locality profile",
                format!("{} values", self.layer_locality.len()),
                format!("one per layer ({})", self.run.layers),
            ));
        }
        for &r in &self.layer_locality {
            limits::unit("locality profile value", r as f64)?;
        }
        if self.mode == Mode::Offload {
            self.pool.slots(self.capacity(), self.run.model.topk)?;
        }
        for l in 0..self.run.layers {
            limits::in_range(
                "overlap chunks",
                self.transfer_overlap.chunks(l) as u64,
                1,
                MAX_CHUNKS as u64,
            )?;
        }
        let da =
            (0..self.run.layers).any(|l| self.transfer_overlap.schedule(l) == LayerSchedule::Da);
        if da && self.run.sparse_mla_shape().validate().is_err() {
            return Err(Error::config(
                "overlap",
                "da",
                "none or dba: DA needs the tuned sparse MLA, whose RoPE dims are in 32s",
            ));
        }
        if let TransferOverlap::Layerwise(c) = &self.transfer_overlap {
            if c.len() != self.run.layers as usize {
                return Err(Error::config(
                    "layer-wise overlap",
                    format!("{} layers", c.len()),
                    format!("one per layer ({})", self.run.layers),
                ));
            }
        }
        Ok(())
    }
}
