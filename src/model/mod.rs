//! DeepSeek-V3.2 checkpoints in the Hugging Face layout (issue 15, its first part): the config
//! ([`config::HfConfig`]), a checked, memory-mapped checkpoint ([`checkpoint::Checkpoint`]), and
//! random checkpoints in the same layout ([`init`]). The forward on the GPU is not built yet.

pub mod checkpoint;
pub mod config;
pub mod init;

pub use checkpoint::Checkpoint;
pub use config::HfConfig;
