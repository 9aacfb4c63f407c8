//! What a decode run is asked to do: [`EngineOptions`] and its validation, and [`Mode`].

use crate::cache::{PoolSize, TransferPath};
use crate::config::{Dtype, MAX_CONTEXT, RunConfig};
use crate::error::{Error, Result};
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

#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// The model and the run's layers, batch and cache storage; `dtype` must be f16 (the
    /// generated cache is f16).
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
}

impl EngineOptions {
    /// Tokens each sequence can hold: its longest context plus the steps.
    pub fn capacity(&self) -> u32 {
        self.contexts.iter().copied().max().unwrap_or(0) + self.steps
    }

    pub fn validate(&self) -> Result<()> {
        self.run.validate()?;
        if self.run.dtype != Dtype::F16 {
            return Err(Error::config(
                "dtype",
                self.run.dtype,
                "f16 (the engine generates an f16 cache)",
            ));
        }
        if self.contexts.len() != self.run.batch as usize {
            return Err(Error::config(
                "contexts",
                self.contexts.len(),
                format!("one per sequence ({})", self.run.batch),
            ));
        }
        if let Some(&c) = self.contexts.iter().find(|&&c| c == 0) {
            return Err(Error::config("context", c, "≥ 1"));
        }
        if self.capacity() > MAX_CONTEXT {
            return Err(Error::config(
                "context + steps",
                self.capacity(),
                format!("≤ {MAX_CONTEXT}"),
            ));
        }
        if self.steps == 0 {
            return Err(Error::config("steps", 0, "≥ 1"));
        }
        if self.time_every == 0 {
            return Err(Error::config("time-every", 0, "≥ 1"));
        }
        if !(0.0..=1.0).contains(&self.locality) {
            return Err(Error::config("locality", self.locality, "0 ..= 1"));
        }
        if !self.layer_locality.is_empty() && self.layer_locality.len() != self.run.layers as usize
        {
            return Err(Error::config(
                "locality profile",
                format!("{} values", self.layer_locality.len()),
                format!("one per layer ({})", self.run.layers),
            ));
        }
        if let Some(r) = self
            .layer_locality
            .iter()
            .find(|r| !(0.0..=1.0).contains(*r))
        {
            return Err(Error::config("locality profile value", r, "0 ..= 1"));
        }
        if self.mode == Mode::Offload {
            self.pool.slots(self.capacity(), self.run.model.topk)?;
        }
        Ok(())
    }
}
