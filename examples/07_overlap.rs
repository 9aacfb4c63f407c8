//! 07 — the bus and the SMs at once on one wgpu queue: a zero-copy gather of missed latent rows
//! run inside the coop indexer's dispatch (`shaders/indexer_gather.wgsl`), against the two run
//! one after the other. The mechanism of ESS's DBA (issue 14): one half of a batch gathers its
//! misses while the other half's indexer runs.
//!
//!     cargo run --release --example 07_overlap [batch] [context]      # default 32 sequences × 32K
//!
//! For each number of misses per sequence: the indexer alone, the gather alone (random 656-byte
//! rows from a host-RAM buffer), both as two dispatches in one pass, and fused; "hidden" is the
//! share of the shorter job the fused dispatch saves, (indexer + gather − fused) / min of the
//! two. GPU timestamps, medians of 9. Needs the coop matrix path (an NVIDIA GPU through Vulkan).

use ess_wgpu::bench::time_pass;
use ess_wgpu::config::Dtype;
use ess_wgpu::gpu::MatrixPath;
use ess_wgpu::kernels::indexer::{FusedGather, IndexerArgs, IndexerShape};
use ess_wgpu::kernels::transfer::TransferArgs;
use ess_wgpu::kernels::{Indexer, Transfer};
use ess_wgpu::workload::Rng;
use ess_wgpu::{GpuContext, Result, limits};

fn main() -> Result<()> {
    let arg = |i: usize, field: &str, default: u32, max: u32| -> Result<u32> {
        match std::env::args().nth(i) {
            Some(s) => limits::count(field, &s, 1, max),
            None => Ok(default),
        }
    };
    let batch = arg(1, "batch", 32, limits::MAX_BATCH)?;
    let context = arg(2, "context", 32 << 10, limits::MAX_CONTEXT)?;
    let ctx = GpuContext::new()?;
    println!("{}", ctx.report);
    // the indexer: v32's 64 heads × 128, f16 keys (their values do not change the work)
    let shape = IndexerShape {
        heads: 64,
        dim: 128,
        dtype: Dtype::F16,
    };
    // (an error where the adapter has no coop matrix path)
    let indexer = Indexer::with(&ctx, &shape, MatrixPath::Coop)?;
    let keys = ctx.storage("keys", batch as u64 * context as u64 * shape.key_bytes())?;
    ctx.fill(&keys, 0x3C00_3C00); // f16 1.0 pairs
    let mut rng = Rng::new(7);
    let q = ctx.upload("q", &rng.vec((batch * 64 * 128) as usize))?;
    let w = ctx.upload("w", &rng.vec((batch * 64) as usize))?;
    let seq: Vec<u32> = (0..batch).flat_map(|b| [b * context, context]).collect();
    let seq = ctx.upload("seq", &seq)?;
    let scores = ctx.storage("scores", batch as u64 * context as u64 * 4)?;
    let args = IndexerArgs {
        q: &q,
        w: &w,
        keys: &keys,
        seq: &seq,
        scores: &scores,
        b0: 0,
        batch,
        max_len: context,
        score_stride: context,
    };
    // the other half's gather: 656-byte rows of `context` host rows a sequence, k = 2048
    let (rb, k, slots) = (656u64, 2048u32, 2049u32);
    let host = ctx.host_buffer("host rows", batch as u64 * context as u64 * rb)?;
    let pool = ctx.storage("pool", batch as u64 * slots as u64 * rb)?;
    let transfer = Transfer::new(&ctx, rb, k, slots, context)?;
    let plain = indexer.bind(&ctx, &args);
    let t_index = time_pass(&ctx, &[&plain], 9)?.0;
    println!(
        "indexer alone, {batch} × {context} keys: {:.1} µs",
        t_index * 1e6
    );
    println!(
        "{:>8} {:>10} {:>10} {:>12} {:>10} {:>8}",
        "misses", "gather µs", "GB/s", "two passes", "fused µs", "hidden"
    );
    for misses in [64u32, 256, 512, 1024, 2048] {
        let mut copies = vec![[0u32; 2]; (batch * k) as usize];
        for b in 0..batch as usize {
            for r in 0..misses as usize {
                copies[b * k as usize + r] = [rng.below(context as u64) as u32, r as u32];
            }
        }
        let counts: Vec<[u32; 2]> = (0..batch).map(|_| [misses, k - misses]).collect();
        let copies = ctx.upload("copies", &copies)?;
        let counts = ctx.upload("counts", &counts)?;
        let targs = TransferArgs {
            copies: &copies,
            counts: &counts,
            pool: &pool,
            b0: 0,
            batch,
        };
        let gather = transfer.gather(&ctx, &targs, &host, 0);
        let fused = indexer.bind_with_gather(
            &ctx,
            &args,
            &FusedGather {
                copies: &copies,
                counts: &counts,
                host: &host,
                host_b0: 0,
                pool: &pool,
                row_bytes: rb,
                k,
                slots,
                capacity: context,
                b0: 0,
                batch,
            },
        )?;
        let t_gather = time_pass(&ctx, &[&gather], 9)?.0;
        let t_two = time_pass(&ctx, &[&plain, &gather], 9)?.0;
        let t_fused = time_pass(&ctx, &[&fused], 9)?.0;
        let hidden = (t_index + t_gather - t_fused) / t_index.min(t_gather);
        let bytes = batch as f64 * misses as f64 * rb as f64;
        println!(
            "{misses:>8} {:>10.1} {:>10.1} {:>12.1} {:>10.1} {:>7.0}%",
            t_gather * 1e6,
            bytes / t_gather / 1e9,
            t_two * 1e6,
            t_fused * 1e6,
            100.0 * hidden
        );
    }
    Ok(())
}
