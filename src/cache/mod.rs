//! The offloaded latent cache (the ESS design, BRIEF.md §3): the policy in plain Rust ([`lru`]),
//! the GPU tables and transfers built on it.

pub mod lru;
pub mod store;

pub use lru::{LruPool, Resolved};
pub use store::{
    CacheCounters, CacheShape, HostStore, LayerDispatches, NewRows, OffloadCache, PathUse,
    PoolSize, TransferPath,
};
