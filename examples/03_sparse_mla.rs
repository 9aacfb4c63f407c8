//! 03 — sparse MLA decode (absorbed / MQA mode), version 1 and the tuned kernel.
//!
//! Every head of a sequence attends to the same k latent rows named by an id list (-1 = skip);
//! outputs `o_lat` and `lse`. The kernels read rows only through the ids, which is why the same
//! kernel later serves a resident cache and an offloaded pool. First `sparse_mla_naive.wgsl`
//! (one workgroup per (sequence, head), online softmax), then `sparse_mla.wgsl` (scores GEMM,
//! flash-decoding attend, reduce: docs/PERF.md), each compared with the plain-Rust reference.
//!
//!     cargo run --release --example 03_sparse_mla

use ess_wgpu::compare::compare;
use ess_wgpu::gpu::GpuTimer;
use ess_wgpu::kernels::{SparseMla, SparseMlaNaive};
use ess_wgpu::problems::{SPARSE_MLA_LSE_TOL, SPARSE_MLA_O_LAT_TOL, SparseMlaProblem};
use ess_wgpu::{Error, GpuContext, RunConfig};

fn main() -> ess_wgpu::Result<()> {
    let ctx = GpuContext::new()?;
    println!("{}", ctx.report);
    let cfg = RunConfig::small();
    println!("{cfg}");
    // 4096 cached rows, 5% of ids invalid (-1), sequence 2 with no valid id at all
    let problem = SparseMlaProblem::random(&cfg, 4096, 0.05, &[2], 3);
    let (want_o, want_lse) = problem.reference();
    let ((oa, or), (la, lr)) = (SPARSE_MLA_O_LAT_TOL, SPARSE_MLA_LSE_TOL);
    let timer = GpuTimer::new(&ctx, 1);
    let time = |timer: &Option<GpuTimer>| -> ess_wgpu::Result<String> {
        Ok(match timer {
            Some(t) => format!("{:.1} us", t.read(&ctx)?[0] * 1e6),
            None => "n/a (no timestamps)".into(),
        })
    };

    let naive = SparseMlaNaive::new(&ctx, &cfg.sparse_mla_shape())?;
    let (o_lat, lse) = problem.run_naive(&ctx, &naive, timer.as_ref())?;
    let e_o = compare("o_lat", &o_lat, &want_o, oa, or).map_err(Error::Gpu)?;
    let e_l = compare("lse", &lse, &want_lse, la, lr).map_err(Error::Gpu)?;
    println!(
        "version 1 (sparse_mla_naive): GPU time {}, max abs error o_lat {e_o:.2e}, lse {e_l:.2e} -> matches",
        time(&timer)?
    );

    let tuned = SparseMla::new(&ctx, &cfg.sparse_mla_shape())?;
    let (o_lat, lse) = problem.run(&ctx, &tuned, timer.as_ref())?;
    let e_o = compare("o_lat", &o_lat, &want_o, oa, or).map_err(Error::Gpu)?;
    let e_l = compare("lse", &lse, &want_lse, la, lr).map_err(Error::Gpu)?;
    println!(
        "tuned (sparse_mla):           GPU time {}, max abs error o_lat {e_o:.2e}, lse {e_l:.2e} -> matches",
        time(&timer)?
    );
    println!(
        "sequence 2 (all ids -1): lse = {} (contract: -inf, o_lat = 0)",
        lse[2 * cfg.model.heads as usize]
    );
    Ok(())
}
