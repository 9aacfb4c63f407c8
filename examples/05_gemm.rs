//! 05 — the GEMM family, every kernel the adapter has (coop-f16, coop, fma), timed at square and
//! decoder-layer shapes (f16 operands, f32 accumulation), checked exactly on constant inputs and
//! set against the roofline of the probes (copy bandwidth; the FMA or tensor-core rate).
//!
//!     cargo run --release --example 05_gemm            # the context's path (ESS_MATRIX=auto)
//!
//! On an adapter without cooperative matrices only the FMA path runs.

use ess_wgpu::bench::gemm;
use ess_wgpu::{GpuContext, Result};

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
    // (M, N, K): square, then decode rows (batch 1, 16, 64, 256) against the decoder layer's
    // weights (`bench::gemm::decoder_shapes`)
    let mut shapes = vec![(4096, 4096, 4096), (8192, 8192, 8192)];
    shapes.extend(gemm::decoder_shapes());
    for kernel in gemm::kernels(&ctx) {
        for &(m, n, k) in &shapes {
            if !gemm::fits(&ctx, (m, n, k)) {
                println!(
                    "{:>8} gemm M {m:>5} N {n:>5} K {k:>5}: skipped, past the storage binding limit",
                    kernel.name()
                );
                continue;
            }
            let (t, exact) = gemm::time_gemm(&ctx, kernel, (m, n, k), &ceilings, 5)?;
            println!(
                "{:>8} gemm M {m:>5} N {n:>5} K {k:>5}: {:>9.1} us, {:>6.1} TFLOP/s, {:>5.0} GB/s, \
                 {:>5.1}% of roofline, C = {}: {}",
                kernel.name(),
                t.time_us,
                t.gflop_per_s / 1e3,
                t.gb_per_s,
                100.0 * t.roofline_fraction,
                0.5 * k as f32,
                if exact { "exact" } else { "WRONG" }
            );
        }
    }
    Ok(())
}
