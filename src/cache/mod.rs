//! The offloaded latent cache (the ESS design, BRIEF.md §3): host store, GPU pools and tables,
//! resolve and transfers. The policy they implement is defined in plain Rust by the oracle
//! [`crate::reference::LruPool`].

pub mod store;

pub use store::{
    CacheCounters, CacheShape, Fetch, HostStore, LayerDispatches, NewRows, OffloadCache, PathUse,
    PoolSize, TransferPath,
};
