//! 02 — exact top-k selection.
//!
//! The `k` highest scores of each row, higher first, ties to the lower index, `-1` past the row's
//! length. Rows here include one shorter than k and one full of ties; the GPU result must equal
//! the reference exactly.
//!
//!     cargo run --release --example 02_topk

use ess_wgpu::gpu::GpuTimer;
use ess_wgpu::kernels::TopK;
use ess_wgpu::problems::TopKProblem;
use ess_wgpu::{GpuContext, RunConfig};

fn main() -> ess_wgpu::Result<()> {
    let ctx = GpuContext::new()?;
    println!("{}", ctx.report);
    let k = RunConfig::small().model.topk as usize;
    let lens = [16384, 4096, k - 1, 300];
    println!("top-k: k = {k}, rows of length {lens:?}");

    let kernel = TopK::new(&ctx, &RunConfig::small().topk_shape())?;
    for (what, distinct) in [
        ("continuous scores", 0),
        ("only 7 distinct scores (ties)", 7),
    ] {
        let problem = TopKProblem::random(k, &lens, distinct, 2);
        let timer = GpuTimer::new(&ctx, 1);
        let got = problem.run(&ctx, &kernel, timer.as_ref())?;
        let time = timer.map(|t| t.read(&ctx)).transpose()?.map(|t| t[0]);
        let want = problem.reference();
        let mismatches = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        println!(
            "{what:<32} GPU time {:>10}   mismatches vs reference: {mismatches}",
            time.map_or("n/a".into(), |t| format!("{:.1} us", t * 1e6))
        );
        if mismatches != 0 {
            return Err(ess_wgpu::Error::Gpu(
                "top-k differs from the reference".into(),
            ));
        }
    }
    println!(
        "first row's top 8: {:?}",
        &TopKProblem::random(k, &lens, 0, 2).reference()[..8]
    );
    println!("all rows identical to the reference");
    Ok(())
}
