//! # ess-wgpu
//!
//! DeepSeek-V3.2-style sparse attention decode — lightning indexer, top-k selection, sparse MLA —
//! in WGSL compute shaders on wgpu, with a CPU reference for every kernel. The MLA latent cache is
//! built to live in host memory behind a GPU-side LRU staging pool (the ESS design,
//! arXiv 2512.10576).
//!
//! Rooms, top to bottom (docs/ARCHITECTURE.md draws them with their arrows):
//!
//! ```text
//!  decode, figures, locality, bench      measurements and reports (each report owns its Display)
//!        │
//!  engine (inputs, readback, plan)       a batch being decoded: bound once, one readback a step
//!        │
//!  cache                                 host store, GPU pools, resolve, gather, write-back
//!        │
//!  kernels (+ their Shapes) ─ shaders    one type per WGSL unit; units composed from shaders/
//!        │
//!  gpu                                   context, pipeline cache, submit / wait, timer
//!
//!  pure, no wgpu: reference (+ the LRU oracle), workload, trace, svg, compare, config, clock
//! ```
//!
//! The command line (`src/cli/`) sits on top and is the only room that knows terminals and files.

pub mod bench;
pub mod cache;
pub mod clock;
pub mod compare;
pub mod config;
pub mod decode;
pub mod engine;
pub mod error;
pub mod figures;
pub mod gpu;
pub mod kernels;
pub mod limits;
pub mod locality;
pub mod model;
pub mod problems;
pub mod reference;
pub mod serve;
pub mod shaders;
pub mod sim;
pub mod svg;
pub mod trace;
pub mod workload;

pub use config::{Dtype, ModelConfig, RunConfig};
pub use error::{Error, Result};
pub use gpu::GpuContext;
