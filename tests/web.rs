//! The browser suite (issue 17, started): the indexer, top-k and sparse MLA in a WebGPU page
//! against their CPU references, read back without blocking. Built for wasm32 only and run headless in Chromium (docs/WEB.md):
//!
//!     CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=120 \
//!         cargo test --target wasm32-unknown-unknown --test web
//!
//! (with `.cargo/config.toml`'s runner, wasm-bindgen-test-runner, and `webdriver.json`'s
//! flags). On native targets the file is empty; `read_async` is tested natively in kernels.rs.
#![cfg(target_arch = "wasm32")]

use ess_wgpu::compare::compare;
use ess_wgpu::gpu::MatrixPath;
use ess_wgpu::kernels::indexer::IndexerShape;
use ess_wgpu::kernels::sparse_mla::ScoresTile;
use ess_wgpu::kernels::topk::{TopKShape, TopKSplit};
use ess_wgpu::kernels::{Indexer, SparseMla, TopK};
use ess_wgpu::problems::{INDEXER_TOL, IndexerProblem, SparseMlaProblem, TopKProblem};
use ess_wgpu::{Dtype, GpuContext, RunConfig};
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// A fresh seed each run (the page has no clock of std's: JavaScript's).
fn seed() -> u64 {
    js_sys::Date::now() as u64
}

/// The indexer (FMA path, the browser's) against its reference on ragged lengths around the
/// 256-key tile, f16 / f32 / FP8 keys, outputs poisoned first (as tests/kernels.rs natively).
#[wasm_bindgen_test]
async fn indexer_matches_reference_in_the_browser() {
    let ctx = GpuContext::new_async().await.expect("a WebGPU adapter");
    console_log!("{} ({})", ctx.report.name, ctx.report.backend);
    let s = seed();
    for (i, &(heads, dim, dtype)) in [
        (8, 32, Dtype::F16),
        (24, 96, Dtype::F32),
        (40, 96, Dtype::Fp8),
    ]
    .iter()
    .enumerate()
    {
        let shape = IndexerShape {
            heads: heads as u32,
            dim: dim as u32,
            dtype,
        };
        let p = IndexerProblem::random(heads, dim, dtype, &[0, 1, 255, 257, 33], s + i as u64);
        let kernel = Indexer::with(&ctx, &shape, MatrixPath::Fma).expect("the FMA indexer");
        let scores = p
            .dispatch_with(&ctx, |a| Ok(vec![kernel.bind(&ctx, a)]), None)
            .expect("dispatched");
        let got: Vec<f32> = ctx.read_async(&scores).await.expect("read back");
        let (atol, rtol) = INDEXER_TOL;
        let err = compare(
            "index_score",
            &got,
            &p.reference_for(MatrixPath::Fma),
            atol,
            rtol,
        )
        .unwrap_or_else(|e| panic!("seed {s}: {heads}x{dim} {dtype}: {e}"));
        console_log!("indexer {heads}x{dim} {dtype}: max err {err:e} (seed {s})");
    }
}

/// Top-k (one workgroup a row, and rows split into segments) against its reference, ties
/// included: the ids must be the reference's exactly.
#[wasm_bindgen_test]
async fn topk_matches_reference_in_the_browser() {
    let ctx = GpuContext::new_async().await.expect("a WebGPU adapter");
    let s = seed();
    for (i, &k) in [1usize, 100, 2048].iter().enumerate() {
        let mut kernel = TopK::new(&ctx, &TopKShape { k: k as u32 }).expect("top-k");
        let lens = [0, 1, k.saturating_sub(1), k + 1, 1000, 5003];
        for distinct in [0u64, 3] {
            let p = TopKProblem::random(k, &lens, distinct, s + i as u64 * 10 + distinct);
            let want = p.reference();
            for split in [TopKSplit::Never, TopKSplit::Segments(3)] {
                kernel.split = split;
                let out = p.dispatch(&ctx, &kernel, None).expect("dispatched");
                let got = p.ids_of(ctx.read_async(&out).await.expect("read back"));
                assert!(
                    got == want,
                    "seed {s}: k {k}, distinct {distinct}, {split:?}: ids differ"
                );
            }
        }
    }
}

/// Sparse MLA (FMA path, both scores tiles) against its reference: heads below and above one
/// workgroup, k not a multiple of the 64-row tile, invalid ids, f16 and f32 rows.
#[wasm_bindgen_test]
async fn sparse_mla_matches_reference_in_the_browser() {
    let ctx = GpuContext::new_async().await.expect("a WebGPU adapter");
    let s = seed();
    let tiny = RunConfig::tiny()
        .with_overrides(&["batch=3", "topk=77"])
        .unwrap();
    let wide = RunConfig::small()
        .with_overrides(&["heads=40", "batch=2", "topk=130"])
        .unwrap();
    let wide32 = RunConfig {
        latent_dtype: Dtype::F32,
        ..wide.clone()
    };
    for (i, (cfg, rows, invalid)) in [(tiny, 500, 0.1), (wide, 1000, 0.05), (wide32, 257, 0.0)]
        .into_iter()
        .enumerate()
    {
        let p = SparseMlaProblem::random(&cfg, rows, invalid, &[], s + i as u64);
        for tile in [ScoresTile::Wide, ScoresTile::Narrow] {
            let mut kernel =
                SparseMla::with(&ctx, &cfg.sparse_mla_shape(), MatrixPath::Fma).expect("kernel");
            kernel.scores_tile = tile;
            let (o_buf, lse_buf) = p.dispatch(&ctx, &kernel, None).expect("dispatched");
            let o_lat: Vec<f32> = ctx.read_async(&o_buf).await.expect("read back");
            let lse = p.lse_of(ctx.read_async(&lse_buf).await.expect("read back"));
            let (eo, el) = p
                .check(MatrixPath::Fma, &o_lat, &lse)
                .unwrap_or_else(|e| panic!("seed {s}: {cfg}, {tile:?}: {e}"));
            console_log!("sparse_mla {cfg}, {tile:?}: max err o_lat {eo:e}, lse {el:e}");
        }
    }
}

/// Every unit of WGSL (`shaders::UNITS`) through the browser's own compiler (Tint, stricter
/// than naga: constant expressions, uniformity): the ones it refuses, and why, printed; the test
/// holds the list to the units that need what the browser lacks.
#[wasm_bindgen_test]
async fn every_shader_unit_compiles_in_the_browser() {
    let ctx = GpuContext::new_async().await.expect("a WebGPU adapter");
    let mut refused = Vec::new();
    for &(name, source, _) in ess_wgpu::shaders::UNITS {
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let _module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        if let Some(e) = scope.pop().await {
            let first = e
                .to_string()
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ");
            console_log!("refused {name}: {first}");
            refused.push(name);
        }
    }
    console_log!(
        "{} units, refused: {refused:?}",
        ess_wgpu::shaders::UNITS.len()
    );
    // the cooperative-matrix units (`enable wgpu_cooperative_matrix;`, tensor cores): the
    // browser has no such extension, and the FMA path stands in for each
    let coop: Vec<&str> = ess_wgpu::shaders::UNITS
        .iter()
        .map(|u| u.0)
        .filter(|n| n.contains("coop"))
        .collect();
    assert_eq!(refused, coop);
}

/// One engine run per mode in the page (the tiny preset, ragged contexts, a pool small enough to
/// miss, timestamped and untimed steps): the offload cache runs on the staging path (no mappable
/// storage buffers in a browser) with its host store in the page's memory, and both modes give
/// bit-identical o_lat and lse at every layer and step (GPU digests of every step and the last
/// step's outputs), as `decode` checks natively.
#[wasm_bindgen_test]
async fn engine_modes_are_bit_identical_in_the_browser() {
    use ess_wgpu::cache::PoolSize;
    use ess_wgpu::engine::{EngineOptions, Mode};
    let ctx = GpuContext::new_async().await.expect("a WebGPU adapter");
    let s = seed();
    let contexts = vec![300, 517, 129];
    let mut run = RunConfig::tiny();
    run.batch = contexts.len() as u32;
    let opts = EngineOptions {
        steps: 6,
        pool: PoolSize::Slots(30),
        locality: 0.9,
        warmup_windows: 2,
        seed: s,
        time_every: 2,
        ..EngineOptions::new(run, contexts)
    };
    let modes = [Mode::Resident, Mode::Offload];
    let report = ess_wgpu::decode::decode_async(&ctx, &opts, &modes, true, 1 << 30, |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("seed {s}: {e}"));
    console_log!("{report}");
    assert_eq!(report.identical, Some(true), "seed {s}: the modes differ");
    let offload = &report.modes[1];
    let cache = offload.cache.as_deref().unwrap_or_default();
    assert!(cache.starts_with("staging path"), "{cache}");
    let c = offload.stats.counters[0];
    assert!(c.misses > 0 && c.hits > 0, "seed {s}: {c:?}");
    assert_eq!(offload.stats.steps, 6);
}
