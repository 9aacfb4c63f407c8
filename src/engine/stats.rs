//! What a run measures: the stages a step is timed by, GPU time per stage, wall time, cache
//! counters and the step-to-step overlap of the selections. Plain data, no GPU.

use crate::cache::CacheCounters;
use std::ops::{Index, IndexMut};

/// The stages of one layer of a decode step, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Stage {
    /// The next token's inputs: queries moved on, its indexer key and latent row written where
    /// they live.
    NewToken,
    /// Offload: the new latent row into the pool's reserved slot and the host store.
    WriteBack,
    /// Lightning indexer over every cached key.
    Indexer,
    /// Top-k of the index scores → `topk_indices`.
    TopK,
    /// Offload: top-k token ids → pool slot ids, evictions and a copy list (GPU LRU).
    Resolve,
    /// Offload: the missed rows host → pool.
    Gather,
    /// Offload with `--overlap`: indexer, top-k, resolve and gather of the batch's chunks,
    /// interleaved (one pass; the four stages above are then empty).
    Overlapped,
    /// Sparse MLA over the rows the ids name → `o_lat`, `lse`.
    SparseMla,
    /// The model's work after attention (`--model`): the output projection and residual, the
    /// feed-forward block (dense or MoE), and after the last layer the head and the next
    /// tokens. (Its work before attention, the projections of the new token, is `new_token`.)
    Ffn,
}

impl Stage {
    pub const COUNT: usize = 9;
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::NewToken,
        Stage::WriteBack,
        Stage::Indexer,
        Stage::TopK,
        Stage::Resolve,
        Stage::Gather,
        Stage::Overlapped,
        Stage::SparseMla,
        Stage::Ffn,
    ];

    /// The name used in tables, CSV columns and JSON keys.
    pub fn name(self) -> &'static str {
        match self {
            Stage::NewToken => "new_token",
            Stage::WriteBack => "write_back",
            Stage::Indexer => "indexer",
            Stage::TopK => "topk",
            Stage::Resolve => "resolve",
            Stage::Gather => "gather",
            Stage::Overlapped => "overlapped",
            Stage::SparseMla => "sparse_mla",
            Stage::Ffn => "ffn",
        }
    }

    /// Timer mark of this stage in `layer`: marks are numbered layer by layer.
    pub fn mark(self, layer: u32) -> u32 {
        layer * Stage::COUNT as u32 + self as u32
    }
}

/// A value per stage (seconds, milliseconds per step, …).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimes(pub [f64; Stage::COUNT]);

impl StageTimes {
    pub fn total(&self) -> f64 {
        self.0.iter().sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Stage, f64)> + '_ {
        Stage::ALL.iter().map(|&s| (s, self[s]))
    }

    /// Every value times `f`.
    pub fn scaled(&self, f: f64) -> StageTimes {
        StageTimes(self.0.map(|x| x * f))
    }
}

impl Index<Stage> for StageTimes {
    type Output = f64;
    fn index(&self, s: Stage) -> &f64 {
        &self.0[s as usize]
    }
}

impl IndexMut<Stage> for StageTimes {
    fn index_mut(&mut self, s: Stage) -> &mut f64 {
        &mut self.0[s as usize]
    }
}

/// Serialised as `{ "new_token": …, "write_back": …, … }`.
impl serde::Serialize for StageTimes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(Stage::COUNT))?;
        for (stage, v) in self.iter() {
            m.serialize_entry(stage.name(), &v)?;
        }
        m.end()
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub steps: u32,
    /// Steps that carried timestamps (every [`super::EngineOptions::time_every`]-th step).
    pub timed_steps: u32,
    /// GPU seconds per stage, summed over layers and the timed steps (timestamps around each
    /// stage's pass).
    pub stage_s: StageTimes,
    /// Wall-clock seconds from the first step's start until its results were all back.
    pub wall_s: f64,
    /// GPU seconds from each timed step's first timestamp to its last: the stages and the gaps
    /// between them (barriers, dispatch latency), which `stage_s` does not see.
    pub span_s: f64,
    /// CPU seconds spent recording and submitting steps (waits for readbacks excluded).
    pub host_s: f64,
    /// Per layer, summed over steps (offload).
    pub counters: Vec<CacheCounters>,
    /// Per layer: Σ over steps ≥ 2 of the mean (over sequences) |K_{t−1} ∩ K_t| / |K_t|.
    pub overlap_sum: Vec<f64>,
    pub overlap_steps: u32,
    /// The passes of the last timed step, from GPU timestamps (the paper's Fig. 6 for this
    /// engine's schedule): `figures timeline` draws them.
    pub timeline: Vec<TimelineBar>,
}

/// One stage's pass of one layer in a timed step: seconds from the step's first timestamp.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TimelineBar {
    pub layer: u32,
    pub stage: Stage,
    pub begin_s: f64,
    pub end_s: f64,
}

impl Stats {
    /// GPU seconds of a step, all stages (the mean over the timed steps).
    pub fn gpu_s_per_step(&self) -> f64 {
        self.stage_s.total() / self.timed_steps as f64
    }

    /// GPU span of a step (the mean over the timed steps).
    pub fn span_s_per_step(&self) -> f64 {
        self.span_s / self.timed_steps as f64
    }

    /// GPU seconds per stage of a step (the mean over the timed steps).
    pub fn stage_s_per_step(&self) -> StageTimes {
        self.stage_s.scaled(1.0 / self.timed_steps.max(1) as f64)
    }

    pub fn overlap(&self) -> Vec<f64> {
        self.overlap_sum
            .iter()
            .map(|s| {
                if self.overlap_steps == 0 {
                    f64::NAN
                } else {
                    s / self.overlap_steps as f64
                }
            })
            .collect()
    }
}
