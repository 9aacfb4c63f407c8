//! # ess-wgpu
//!
//! DeepSeek-V3.2-style sparse attention decode — lightning indexer, top-k selection, sparse MLA —
//! in WGSL compute shaders on wgpu, with a CPU reference for every kernel. The MLA latent cache is
//! built to live in host memory behind a GPU-side LRU staging pool (the ESS design,
//! arXiv 2512.10576).
//!
//! Rooms, top to bottom (nothing imports upward): [`gpu`] (context, buffers, timing) →
//! [`kernels`] (one type per shader) → [`bench`]; [`reference`], [`workload`] and [`compare`]
//! never see wgpu.

pub mod bench;
pub mod cache;
pub mod compare;
pub mod config;
pub mod decode;
pub mod engine;
pub mod error;
pub mod figures;
pub mod gpu;
pub mod kernels;
pub mod locality;
pub mod problems;
pub mod reference;
pub mod shaders;
pub mod svg;
pub mod trace;
pub mod workload;

pub use config::{Dtype, ModelConfig, RunConfig};
pub use error::{Error, Result};
pub use gpu::GpuContext;
