//! Every unit of WGSL the GPU compiles, composed at compile time from the files in `shaders/`.
//!
//! WGSL has no `#include`. A unit is a kernel file with the library files it uses (`shaders/lib/`)
//! concatenated in front of it by `concat!(include_str!(…))`; WGSL module scope ignores
//! declaration order, so a library function may also call a hook the kernel defines. Every byte
//! the GPU compiles is in a `.wgsl` file; nothing is templated. `tests/shaders.rs` validates each
//! unit with naga and runs naga's SPIR-V writer over it, without an adapter.

macro_rules! unit {
    ($($file:literal),+) => {
        concat!($(include_str!(concat!("../shaders/", $file))),+)
    };
}

pub const FILL: &str = unit!("lib/hash.wgsl", "fill.wgsl");
pub const DIGEST: &str = unit!("lib/hash.wgsl", "digest.wgsl");
pub const OVERLAP: &str = unit!("overlap.wgsl");
pub const WALK: &str = unit!("lib/hash.wgsl", "walk.wgsl");
pub const INDEXER: &str = unit!("indexer.wgsl");
pub const INDEXER_NAIVE: &str = unit!("indexer_naive.wgsl");
pub const TOPK: &str = unit!("lib/select.wgsl", "topk.wgsl");
pub const SPARSE_MLA: &str = unit!("sparse_mla.wgsl");
pub const SPARSE_MLA_NAIVE: &str = unit!("sparse_mla_naive.wgsl");
pub const LSE_MERGE: &str = unit!("lse_merge.wgsl");
pub const RESOLVE: &str = unit!("lib/select.wgsl", "resolve.wgsl");
pub const TRANSFER: &str = unit!("transfer.wgsl");
pub const PROBE: &str = unit!("probe.wgsl");

/// Every unit by name, with the files it is made of (for the naga test and the docs).
pub const UNITS: &[(&str, &str, &[&str])] = &[
    ("fill", FILL, &["lib/hash.wgsl", "fill.wgsl"]),
    ("digest", DIGEST, &["lib/hash.wgsl", "digest.wgsl"]),
    ("overlap", OVERLAP, &["overlap.wgsl"]),
    ("walk", WALK, &["lib/hash.wgsl", "walk.wgsl"]),
    ("indexer", INDEXER, &["indexer.wgsl"]),
    ("indexer_naive", INDEXER_NAIVE, &["indexer_naive.wgsl"]),
    ("topk", TOPK, &["lib/select.wgsl", "topk.wgsl"]),
    ("sparse_mla", SPARSE_MLA, &["sparse_mla.wgsl"]),
    (
        "sparse_mla_naive",
        SPARSE_MLA_NAIVE,
        &["sparse_mla_naive.wgsl"],
    ),
    ("lse_merge", LSE_MERGE, &["lse_merge.wgsl"]),
    ("resolve", RESOLVE, &["lib/select.wgsl", "resolve.wgsl"]),
    ("transfer", TRANSFER, &["transfer.wgsl"]),
    ("probe", PROBE, &["probe.wgsl"]),
];
