//! 03 — sparse MLA decode (absorbed / MQA mode).
//!
//! Every head of a sequence attends to the same k latent rows named by an id list (-1 = skip);
//! outputs `o_lat` and `lse`. The kernel reads rows only through the ids, which is why the same
//! kernel later serves a resident cache and an offloaded pool.
//!
//!     cargo run --release --example 03_sparse_mla

use ess_wgpu::compare::compare;
use ess_wgpu::gpu::GpuTimer;
use ess_wgpu::kernels::SparseMla;
use ess_wgpu::problems::SparseMlaProblem;
use ess_wgpu::{Config, Error, GpuContext};

fn main() -> ess_wgpu::Result<()> {
    let ctx = GpuContext::new()?;
    println!("{}", ctx.report);
    let cfg = Config::small();
    println!("{cfg}");

    let kernel = SparseMla::new(&ctx, &cfg)?;
    // 4096 cached rows, 5% of ids invalid (-1), sequence 2 with no valid id at all
    let problem = SparseMlaProblem::random(&cfg, 4096, 0.05, &[2], 3);
    let timer = GpuTimer::new(&ctx, 1);
    let (o_lat, lse) = problem.run(&ctx, &kernel, timer.as_ref())?;
    let time = timer.map(|t| t.read(&ctx)).transpose()?.map(|t| t[0]);

    let (want_o, want_lse) = problem.reference();
    let e_o = compare("o_lat", &o_lat, &want_o, 2e-5, 1e-4).map_err(Error::Gpu)?;
    let e_l = compare("lse", &lse, &want_lse, 2e-5, 1e-5).map_err(Error::Gpu)?;
    println!(
        "GPU time {}",
        time.map_or("n/a (no timestamps)".into(), |t| format!(
            "{:.1} us",
            t * 1e6
        ))
    );
    println!(
        "sequence 2 (all ids -1): lse = {} (contract: -inf, o_lat = 0)",
        lse[2 * cfg.heads as usize]
    );
    println!("max abs error vs CPU reference: o_lat {e_o:.2e}, lse {e_l:.2e}  -> matches");
    Ok(())
}
