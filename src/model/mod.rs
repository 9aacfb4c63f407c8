//! DeepSeek-V3.2 from checkpoints in the Hugging Face layout (issue 15): the config
//! ([`config::HfConfig`]), a checked, memory-mapped checkpoint ([`checkpoint::Checkpoint`]),
//! random checkpoints in the same layout and random models in memory ([`init`]); the forward
//! on the GPU ([`gpu`]), the model as the engine's step inputs ([`step`]), greedy generation
//! through the engine in either mode ([`generate`]), and a generation's dump ([`dump`]).

pub mod checkpoint;
pub mod config;
pub mod dump;
pub mod generate;
pub mod gpu;
pub mod init;
mod layer;
pub mod step;

pub use checkpoint::Checkpoint;
pub use config::HfConfig;
