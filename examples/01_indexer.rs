//! 01 — the lightning indexer, version 1 and the tuned kernel.
//!
//! `index_score[b, s] = Σ_j w[b, j] · ReLU(q[b, j, :] · k_b[s, :])` for a ragged batch, on the
//! default adapter. First `indexer_naive.wgsl` (one thread per key, the equation as a loop), then
//! `indexer.wgsl` (a tiled GEMM, docs/PERF.md), each compared with the plain-Rust reference.
//!
//!     cargo run --release --example 01_indexer

use ess_wgpu::compare::compare;
use ess_wgpu::gpu::GpuTimer;
use ess_wgpu::kernels::{Indexer, IndexerNaive};
use ess_wgpu::problems::{INDEXER_TOL, IndexerProblem};
use ess_wgpu::{GpuContext, RunConfig};

fn main() -> ess_wgpu::Result<()> {
    let ctx = GpuContext::new()?;
    println!("{}", ctx.report);
    let cfg = RunConfig::small();
    let lens = [4096, 1000, 2500, 17]; // ragged: one dispatch covers all four sequences
    let (heads, dim) = (cfg.model.index_heads, cfg.model.index_head_dim);
    println!(
        "indexer: {heads} heads x {dim} dims, {} keys, contexts {lens:?}",
        cfg.key_dtype
    );
    let problem = IndexerProblem::random(heads as usize, dim as usize, cfg.key_dtype, &lens, 1);
    let want = problem.reference();
    let (atol, rtol) = INDEXER_TOL;
    let timer = GpuTimer::new(&ctx, 1);
    let time = |timer: &Option<GpuTimer>| -> ess_wgpu::Result<String> {
        Ok(match timer {
            Some(t) => format!("{:.1} us", t.read(&ctx)?[0] * 1e6),
            None => "n/a (no timestamps)".into(),
        })
    };

    let naive = IndexerNaive::new(&ctx, &cfg.indexer_shape())?;
    let got = problem.run_naive(&ctx, &naive, timer.as_ref())?;
    let err = compare("index_score", &got, &want, atol, rtol).map_err(ess_wgpu::Error::Gpu)?;
    println!(
        "version 1 (indexer_naive): GPU time {}, max abs error vs CPU reference {err:.2e} -> matches",
        time(&timer)?
    );

    let tuned = Indexer::new(&ctx, &cfg.indexer_shape())?;
    let got = problem.run(&ctx, &tuned, timer.as_ref())?;
    // (on the tensor cores: the reference of its f16-rounded q)
    let want = problem.reference_for(tuned.path);
    let err = compare("index_score", &got, &want, atol, rtol).map_err(ess_wgpu::Error::Gpu)?;
    println!(
        "tuned (indexer):           GPU time {}, max abs error vs CPU reference {err:.2e} -> matches",
        time(&timer)?
    );
    Ok(())
}
