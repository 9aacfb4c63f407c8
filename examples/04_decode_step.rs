//! 04 — one decode step's kernels chained on the GPU: upload → bind → dispatch → read, by hand.
//!
//! One decode step's kernels chained on the GPU, for one batch of sequences with a resident cache:
//!
//!   indexer:    q_I, w, k_I (all T_b keys)  → index_score [B, T]
//!   top-k:      index_score                 → topk_indices [B, k] (token ids)
//!   sparse MLA: q_abs ‖ q_pe, topk_indices, latent rows c_kv ‖ k_pe → o_lat [B, H, KV], lse [B, H]
//!
//! The three dispatches go into one command buffer with no CPU round trip between them. Each
//! stage is then checked against its CPU reference fed with the previous *GPU* stage's output
//! (so a near-tie in the scores cannot make top-k sets differ for float-rounding reasons).
//!
//!     cargo run --release --example 04_decode_step [tiny|small|v32]

use ess_wgpu::compare::compare;
use ess_wgpu::config::Dtype;
use ess_wgpu::config::RunConfig;
use ess_wgpu::error::{Error, Result};
use ess_wgpu::gpu::{GpuContext, GpuTimer, MatrixPath};
use ess_wgpu::kernels::indexer::IndexerArgs;
use ess_wgpu::kernels::sparse_mla::SparseMlaArgs;
use ess_wgpu::kernels::topk::TopKArgs;
use ess_wgpu::kernels::{Indexer, SparseMla, TopK};
use ess_wgpu::problems::{
    INDEXER_TOL, POISON_F32, POISON_U32, SPARSE_MLA_LSE_TOL, pack_seqs, seq_table,
    sparse_mla_o_lat_tol,
};
use ess_wgpu::reference::{self, fp8};
use ess_wgpu::workload::{Rng, RowLayout, query_bytes, round_f16, storage_bytes, stored_values};
use std::io::Write;

fn main() -> Result<()> {
    let preset = std::env::args().nth(1).unwrap_or_else(|| "small".into());
    let cfg = RunConfig::preset(&preset)?;
    cfg.validate()?;
    let ctx = GpuContext::new()?;
    println!("{}\n{cfg}", ctx.report);
    run(&ctx, &cfg, &mut std::io::stdout())
}

fn run(ctx: &GpuContext, cfg: &RunConfig, out: &mut impl Write) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: "stdout".into(),
        source: e,
    };
    let (b, h, k) = (
        cfg.batch as usize,
        cfg.model.heads as usize,
        cfg.model.topk as usize,
    );
    let (ih, id, dq) = (
        cfg.model.index_heads as usize,
        cfg.model.index_head_dim as usize,
        cfg.model.row_dim() as usize,
    );
    // ragged contexts: the last sequence is the longest, at cfg.context
    let lens: Vec<usize> = (0..b)
        .map(|i| (cfg.context as usize) * (i + 1) / b)
        .collect();
    let seqs = pack_seqs(&lens, 0);
    let total: usize = lens.iter().sum();
    let stride = cfg.context as usize;

    let mut rng = Rng::new(2025);
    let q_i = rng.vec(b * ih * id); // [B, H_I, D_I]
    let w: Vec<f32> = rng
        .vec(b * ih)
        .iter()
        .map(|x| x / ((ih * id) as f32).sqrt())
        .collect(); // [B, H_I]
    let (key_layout, row_layout) = (
        RowLayout::Key { dim: id },
        RowLayout::Latent {
            kv: cfg.model.kv_lora_rank as usize,
            rope: cfg.model.qk_rope_head_dim as usize,
        },
    );
    let k_i = stored_values(&rng.vec(total * id), cfg.key_dtype, key_layout); // [ΣT, D_I]
    let q = rng.vec(b * h * dq); // [B, H, KV + ROPE]
    let latent = stored_values(&rng.vec(total * dq), cfg.latent_dtype, row_layout); // [ΣT, KV + ROPE]

    let indexer = Indexer::new(ctx, &cfg.indexer_shape())?;
    let topk = TopK::new(ctx, &cfg.topk_shape())?;
    let mla = SparseMla::new(ctx, &cfg.sparse_mla_shape())?;

    let seq = ctx.upload("seq", &seq_table(&seqs))?;
    let q_i_buf = ctx.upload("q_I", &query_bytes(&q_i, id, cfg.key_dtype))?;
    let w_buf = ctx.upload("w", &w)?;
    let keys = ctx.upload("k_I", &storage_bytes(&k_i, cfg.key_dtype, key_layout))?;
    let scores = ctx.storage("index_score", (b * stride * 4) as u64)?;
    let ids = ctx.storage("topk_indices", (b * k * 4) as u64)?;
    let q_buf = ctx.upload("q", &q)?;
    let rows = ctx.upload(
        "latent",
        &storage_bytes(&latent, cfg.latent_dtype, row_layout),
    )?;
    let o_lat = ctx.storage(
        "o_lat",
        (b * h * cfg.model.kv_lora_rank as usize * 4) as u64,
    )?;
    let lse = ctx.storage("lse", (b * h * 4) as u64)?;
    let scratch = mla.scratch(ctx, cfg.batch)?;
    for (buf, poison) in [
        (&scores, POISON_F32),
        (&ids, POISON_U32),
        (&o_lat, POISON_F32),
        (&lse, POISON_F32),
    ] {
        ctx.fill(buf, poison);
    }

    let batch = b as u32;
    let stages = [
        indexer.bind(
            ctx,
            &IndexerArgs {
                q: &q_i_buf,
                w: &w_buf,
                keys: &keys,
                seq: &seq,
                scores: &scores,
                b0: 0,
                batch,
                max_len: cfg.context,
                score_stride: cfg.context,
            },
        ),
        topk.bind(
            ctx,
            &TopKArgs {
                scratch: None,
                scores: &scores,
                seq: &seq,
                topk_indices: &ids,
                b0: 0,
                batch,
                score_stride: cfg.context,
            },
        )?,
        mla.bind(
            ctx,
            &SparseMlaArgs {
                q: &q_buf,
                ids: &ids,
                seq: &seq,
                rows: &rows,
                scratch: &scratch,
                o_lat: &o_lat,
                lse: &lse,
                b0: 0,
                batch,
            },
        ),
    ];
    // One command buffer, one pass per stage (so each gets its own timestamps).
    let timer = GpuTimer::new(ctx, 3);
    let t0 = std::time::Instant::now();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    for (i, stage) in stages.iter().enumerate() {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: timer.as_ref().map(|t| t.writes(i as u32)),
        });
        stage.record(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
    ctx.check()?;
    let wall = t0.elapsed().as_secs_f64();
    let times = match &timer {
        Some(t) => t.read(ctx)?,
        None => vec![f64::NAN; 3],
    };

    let got_scores: Vec<f32> = ctx.read(&scores)?;
    let got_ids: Vec<i32> = ctx.read(&ids)?;
    let (got_o, got_lse): (Vec<f32>, Vec<f32>) = (ctx.read(&o_lat)?, ctx.read(&lse)?);

    // the references of what the chosen kernels compute from these inputs: FP8 keys read q
    // quantised per head, the tensor cores round q to f16 (src/problems.rs says why, and the
    // tolerances)
    let q_i_used = match (cfg.key_dtype, indexer.path) {
        (Dtype::Fp8, _) => fp8::round_rows(&q_i, id, fp8::ScaleRule::Ue8m0),
        (_, MatrixPath::Coop) => round_f16(&q_i),
        _ => q_i.clone(),
    };
    let want_scores = reference::indexer(&q_i_used, &w, &k_i, &seqs, ih, id, stride);
    let (atol, rtol) = INDEXER_TOL;
    let e_idx =
        compare("index_score", &got_scores, &want_scores, atol, rtol).map_err(Error::Gpu)?;
    let want_ids: Vec<i32> = (0..b)
        .flat_map(|i| reference::topk(&got_scores[i * stride..][..lens[i]], k))
        .collect();
    let ids_match = got_ids[..b * k] == want_ids[..];
    let base: Vec<usize> = seqs.iter().map(|s| s.first_row).collect();
    let kv = cfg.model.kv_lora_rank as usize;
    let q_used = match mla.path {
        MatrixPath::Coop => round_f16(&q),
        MatrixPath::Fma => q.clone(),
    };
    let (want_o, want_lse) = reference::sparse_mla(
        &q_used,
        &got_ids,
        &base,
        &latent,
        b,
        h,
        kv,
        dq - kv,
        k,
        cfg.model.softmax_scale(),
    );
    let ((oa, or), (la, lr)) = (sparse_mla_o_lat_tol(mla.path, k), SPARSE_MLA_LSE_TOL);
    let e_o = compare("o_lat", &got_o, &want_o, oa, or).map_err(Error::Gpu)?;
    let e_l = compare("lse", &got_lse[..b * h], &want_lse, la, lr).map_err(Error::Gpu)?;

    writeln!(out, "contexts {lens:?}, {total} cached tokens").map_err(io)?;
    writeln!(
        out,
        "{:<12} {:>10}  check against the CPU reference",
        "stage", "GPU us"
    )
    .map_err(io)?;
    writeln!(
        out,
        "{:<12} {:>10.1}  max abs err {e_idx:.2e}",
        "indexer",
        times[0] * 1e6
    )
    .map_err(io)?;
    writeln!(
        out,
        "{:<12} {:>10.1}  {}",
        "topk",
        times[1] * 1e6,
        if ids_match {
            "indices identical"
        } else {
            "INDICES DIFFER"
        }
    )
    .map_err(io)?;
    writeln!(
        out,
        "{:<12} {:>10.1}  max abs err o_lat {e_o:.2e}, lse {e_l:.2e}",
        "sparse_mla",
        times[2] * 1e6
    )
    .map_err(io)?;
    writeln!(
        out,
        "one submit, wall clock {:.1} ms (first run: includes driver warm-up)",
        wall * 1e3
    )
    .map_err(io)?;
    if !ids_match {
        return Err(Error::Gpu("top-k indices differ from the reference".into()));
    }
    writeln!(out, "all stages match the reference").map_err(io)?;
    Ok(())
}
