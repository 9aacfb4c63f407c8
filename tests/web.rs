//! The browser suite (issue 17, started): the kernels in a WebGPU page, read back without
//! blocking. Built for wasm32 only and run headless in Chromium (docs/WEB.md):
//!
//!     CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=120 \
//!         cargo test --target wasm32-unknown-unknown --test web
//!
//! (with `.cargo/config.toml`'s runner, wasm-bindgen-test-runner, and `webdriver.json`'s
//! flags). On native targets the file is empty; `read_async` is tested natively in kernels.rs.
#![cfg(target_arch = "wasm32")]

use ess_wgpu::compare::compare;
use ess_wgpu::gpu::MatrixPath;
use ess_wgpu::kernels::Indexer;
use ess_wgpu::kernels::indexer::IndexerShape;
use ess_wgpu::problems::{INDEXER_TOL, IndexerProblem};
use ess_wgpu::{Dtype, GpuContext};
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
