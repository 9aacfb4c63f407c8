//! Every unit of WGSL the GPU compiles, composed at compile time from the files in `shaders/`.
//!
//! WGSL has no `#include`. A unit is a kernel file with the library files it uses (`shaders/lib/`)
//! concatenated in front of it by `concat!(include_str!(…))`; WGSL module scope ignores
//! declaration order, so a library function may also call a hook the kernel defines. Every byte
//! the GPU compiles is in a `.wgsl` file; nothing is templated. `tests/shaders.rs` validates each
//! unit with naga and runs naga's SPIR-V writer over it, without an adapter.

/// Defines each unit as a `&str` const and lists them all, with their files, in [`UNITS`].
macro_rules! units {
    ($($name:ident = $label:literal: [$($file:literal),+];)*) => {
        $(
            #[doc = concat!("The `", $label, "` unit: ", $("`shaders/", $file, "` "),+)]
            pub const $name: &str = concat!($(include_str!(concat!("../shaders/", $file))),+);
        )*
        /// Every unit by name, with the files it is made of (for the naga test and the docs).
        pub const UNITS: &[(&str, &str, &[&str])] = &[$(($label, $name, &[$($file),+])),*];
    };
}

units! {
    FILL = "fill": ["lib/hash.wgsl", "lib/fp8.wgsl", "lib/f16_round.wgsl", "fill.wgsl", "lib/fp8_pack.wgsl"];
    DIGEST = "digest": ["lib/hash.wgsl", "digest.wgsl"];
    OVERLAP = "overlap": ["overlap.wgsl"];
    FP8_QUANT = "fp8_quant": ["lib/fp8.wgsl", "fp8_quant.wgsl", "lib/fp8_pack.wgsl"];
    WALK = "walk": ["lib/hash.wgsl", "walk.wgsl"];
    INDEXER = "indexer": ["lib/f16.wgsl", "lib/fp8.wgsl", "lib/indexer_io.wgsl", "indexer.wgsl"];
    INDEXER_COOP = "indexer_coop": ["indexer_coop.wgsl", "lib/fp8.wgsl", "lib/indexer_io.wgsl", "indexer_gather.wgsl", "lib/gather.wgsl"];
    INDEXER_FP8 = "indexer_fp8": ["lib/fp8.wgsl", "indexer_fp8.wgsl"];
    INDEXER_NAIVE = "indexer_naive": ["indexer_naive.wgsl"];
    TOPK = "topk": ["lib/select.wgsl", "lib/topk_order.wgsl", "topk.wgsl"];
    TOPK_SPLIT = "topk_split": ["lib/select.wgsl", "lib/topk_order.wgsl", "topk_split.wgsl"];
    SPARSE_MLA = "sparse_mla": ["lib/f16.wgsl", "lib/fp8.wgsl", "lib/mla.wgsl", "lib/mla_rows.wgsl", "sparse_mla.wgsl"];
    SPARSE_MLA_COOP = "sparse_mla_coop": ["sparse_mla_coop.wgsl", "lib/fp8.wgsl", "lib/mla.wgsl", "lib/mla_rows.wgsl"];
    SPARSE_MLA_DA = "sparse_mla_coop_da": ["sparse_mla_coop.wgsl", "lib/fp8.wgsl", "lib/mla.wgsl", "sparse_mla_da.wgsl", "lib/gather.wgsl"];
    DA_ORDER = "da_order": ["da_order.wgsl"];
    SPARSE_MLA_NAIVE = "sparse_mla_naive": ["lib/fp8.wgsl", "sparse_mla_naive.wgsl"];
    LSE_MERGE = "lse_merge": ["lse_merge.wgsl"];
    MODEL_OPS = "model_ops": ["lib/fp8.wgsl", "lib/f16_round.wgsl", "model_ops.wgsl"];
    MODEL_GEMM = "model_gemm": ["lib/fp8.wgsl", "model_gemm.wgsl"];
    MODEL_GEMM_COOP = "model_gemm_coop": ["model_gemm_coop.wgsl", "lib/fp8.wgsl", "model_gemm.wgsl"];
    RESOLVE = "resolve": ["lib/select.wgsl", "resolve.wgsl"];
    TRANSFER = "transfer": ["transfer.wgsl"];
    PROBE = "probe": ["probe.wgsl"];
    PROBE_COOP = "probe_coop": ["probe_coop.wgsl", "probe.wgsl"];
    GEMM_FMA = "gemm_fma": ["gemm/params.wgsl", "gemm/common.wgsl", "gemm/gemm_fma.wgsl"];
    GEMM_COOP = "gemm_coop": ["gemm/gemm_coop.wgsl", "gemm/params.wgsl", "gemm/common.wgsl"];
    GEMM_COOP_F16 = "gemm_coop_f16": ["gemm/gemm_coop_f16.wgsl", "gemm/params.wgsl"];
    GEMM_REDUCE = "gemm_reduce": ["gemm/params.wgsl", "gemm/gemm_reduce.wgsl"];
}
