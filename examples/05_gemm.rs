//! 05 — the GEMM family, every kernel the adapter has (coop-f16, coop, fma), timed at square and
//! decoder-layer shapes (f16 operands, f32 accumulation), checked exactly on constant inputs and
//! set against the roofline of the probes (copy bandwidth; the FMA or tensor-core rate).
//!
//!     cargo run --release --example 05_gemm            # the context's path (ESS_MATRIX=auto)
//!
//! On an adapter without cooperative matrices only the FMA path runs.

use ess_wgpu::gpu::{GpuTimer, MatrixPath};
use ess_wgpu::kernels::Gemm;
use ess_wgpu::kernels::gemm::{GemmArgs, GemmKernel, GemmShape, Layout};
use ess_wgpu::{Dtype, GpuContext, Result};

fn main() -> Result<()> {
    let ctx = GpuContext::new()?;
    println!("{}", ctx.report);
    // the roofline: copy bandwidth, and the FLOP rate of the units each kernel uses
    let ceilings = ess_wgpu::bench::measure_ceilings(&ctx, 3)?;
    println!(
        "ceilings  copy {:.0} GB/s, f32 FMA {:.1} TFLOP/s, tensor cores {}",
        ceilings.copy_gb_per_s,
        ceilings.fma_gflop_per_s / 1e3,
        match ceilings.coop_gflop_per_s {
            Some(r) => format!("{:.1} TFLOP/s", r / 1e3),
            None => "absent".into(),
        }
    );
    let mut kernels = vec![GemmKernel::Fma];
    if ctx.matrix == MatrixPath::Coop {
        kernels.splice(0..0, [GemmKernel::CoopF16, GemmKernel::Coop]);
    }
    let timer = GpuTimer::new(&ctx, 1);
    // (M, N, K): square, then decode rows (batch 1, 16, 64, 256) against the decoder layer's
    // weights [out, in]: q down 7168 → 1536, q up 1536 → 24576, kv down 7168 → 576, o 16384 →
    // 7168, an expert's 7168 → 2048 (the shapes of docs/bench/torch_peer.py)
    let mut shapes = vec![(4096, 4096, 4096), (8192, 8192, 8192)];
    for m in [1, 16, 64, 256] {
        shapes.extend([
            (m, 1536, 7168),
            (m, 24576, 1536),
            (m, 576, 7168),
            (m, 7168, 16384),
            (m, 2048, 7168),
        ]);
    }
    for kernel in kernels {
        for &(m, n, k) in &shapes {
            let shape = GemmShape {
                m,
                n,
                k,
                batch: 1,
                a: Layout::row_major(Dtype::F16, m, k),
                b: Layout::transposed(Dtype::F16, k, n),
                accumulate: false,
            };
            let gemm = Gemm::with(&ctx, &shape, kernel)?;
            let a = ctx.storage("a", m as u64 * k as u64 * 2)?;
            let b = ctx.storage("b", k as u64 * n as u64 * 2)?;
            let c = ctx.storage("c", m as u64 * n as u64 * 4)?;
            ctx.fill(&a, 0x3c00_3c00); // 1.0 in f16 pairs
            ctx.fill(&b, 0x3800_3800); // 0.5
            let d = gemm.bind(
                &ctx,
                &GemmArgs {
                    a: &a,
                    b: &b,
                    c: &c,
                },
            )?;
            let mut times = Vec::new();
            for _ in 0..5 {
                let t0 = std::time::Instant::now();
                ctx.run_pass(timer.as_ref().map(|t| (t, 0)), |p| d.record(p))?;
                times.push(match &timer {
                    Some(t) => t.read(&ctx)?[0],
                    None => t0.elapsed().as_secs_f64(),
                });
            }
            times.sort_by(f64::total_cmp);
            let s = times[times.len() / 2];
            let got: Vec<f32> = ctx.read(&c)?;
            let want = 0.5 * k as f32;
            // the operands read once (f16) and C written once (f32): the bandwidth floor
            let bytes = (m as u64 * k as u64 + k as u64 * n as u64) * 2 + m as u64 * n as u64 * 4;
            let ok = got.iter().all(|&x| x == want);
            let rate = match kernel {
                GemmKernel::Fma => ceilings.fma_gflop_per_s,
                _ => ceilings
                    .coop_gflop_per_s
                    .unwrap_or(ceilings.fma_gflop_per_s),
            };
            let floor = (bytes as f64 / (ceilings.copy_gb_per_s * 1e9))
                .max(shape.flops() as f64 / (rate * 1e9));
            println!(
                "{:>8} gemm M {m:>5} N {n:>5} K {k:>5}: {:>9.1} us, {:>6.1} TFLOP/s, {:>5.0} GB/s, \
                 {:>5.1}% of roofline, splits {:>2}, C = {want}: {}",
                kernel.name(),
                s * 1e6,
                shape.flops() as f64 / s / 1e12,
                bytes as f64 / s / 1e9,
                100.0 * floor / s,
                gemm.splits,
                if ok { "exact" } else { "WRONG" }
            );
        }
    }
    Ok(())
}
