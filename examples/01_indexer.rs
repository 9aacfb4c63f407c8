//! 01 — the lightning indexer.
//!
//! `index_score[b, s] = Σ_j w[b, j] · ReLU(q[b, j, :] · k_b[s, :])` for a ragged batch, on the
//! default adapter, compared with the plain-Rust reference.
//!
//!     cargo run --release --example 01_indexer

use ess_wgpu::compare::compare;
use ess_wgpu::gpu::GpuTimer;
use ess_wgpu::kernels::Indexer;
use ess_wgpu::problems::IndexerProblem;
use ess_wgpu::{Config, GpuContext};

fn main() -> ess_wgpu::Result<()> {
    let ctx = GpuContext::new()?;
    println!("{}", ctx.report);
    let cfg = Config::small();
    let lens = [4096, 1000, 2500, 17]; // ragged: one dispatch covers all four sequences
    let (heads, dim) = (cfg.index_heads, cfg.index_head_dim);
    println!(
        "indexer: {heads} heads x {dim} dims, {} keys, contexts {lens:?}",
        cfg.dtype
    );

    let kernel = Indexer::new(&ctx, heads, dim, cfg.dtype)?;
    let problem = IndexerProblem::random(heads as usize, dim as usize, cfg.dtype, &lens, 1);
    let timer = GpuTimer::new(&ctx, 1);
    let got = problem.run(&ctx, &kernel, timer.as_ref())?;
    let time = timer.map(|t| t.read(&ctx)).transpose()?.map(|t| t[0]);

    let err = compare("index_score", &got, &problem.reference(), 1e-4, 1e-4)
        .map_err(ess_wgpu::Error::Gpu)?;
    println!(
        "GPU time {}",
        time.map_or("n/a (no timestamps)".into(), |t| format!(
            "{:.1} us",
            t * 1e6
        ))
    );
    println!("max abs error vs CPU reference: {err:.2e}  -> matches");
    Ok(())
}
