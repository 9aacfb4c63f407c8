//! DeepSeek-V3.2 checkpoints in the Hugging Face layout (issue 15, its first part): the config
//! ([`config::HfConfig`]), a checked, memory-mapped checkpoint ([`checkpoint::Checkpoint`]), and
//! random checkpoints in the same layout ([`init`]); on the GPU, so far, one layer's lightning
//! indexer from the checkpoint's weights ([`gpu`]).

pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod gpu;
pub mod init;
pub mod step;

pub use checkpoint::Checkpoint;
pub use config::HfConfig;
