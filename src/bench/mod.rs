//! `bench kernels`: check each kernel against its reference on a small case, measure the device's
//! ceilings with the probe kernels, then time every kernel at the requested shapes and report it
//! against the roofline: `fraction = max(bytes / copy bandwidth, FLOPs / rate) / time`, the rate
//! of the units the kernel multiplies on (the f32 FMA probe's, or on the coop path the
//! cooperative-matrix probe's for the `coop` rows, which are timed beside the FMA kernels). With
//! the v32 preset it also times the GEMM family at 8192³ and the decoder layer's shapes.
//!
//! Inputs for the timed shapes are made on the GPU side cheaply (a random block tiled by buffer
//! copies) since their values do not change the work done; top-k gets truly random scores,
//! because its work depends on their distribution. Tests never time anything; this does.

use crate::compare::compare;
use crate::config::{Dtype, RunConfig};
use crate::error::{Error, Result};
use crate::gpu::{AdapterReport, GpuContext, GpuTimer, MatrixPath};
use crate::kernels::gemm::GemmKernel;
use crate::kernels::indexer::IndexerArgs;
use crate::kernels::indexer::IndexerShape;
use crate::kernels::lse_merge::LseMergeArgs;
use crate::kernels::probe::COOP_FLOPS_PER_TRIP;
use crate::kernels::sparse_mla::SparseMlaArgs;
use crate::kernels::sparse_mla::SparseMlaShape;
use crate::kernels::topk::{TopKArgs, TopKSplit, split_segments};
use crate::kernels::{Dispatch, Indexer, LseMerge, Probe, SparseMla, TopK, paths};
use crate::problems::{
    INDEXER_TOL, IndexerProblem, LseMergeProblem, SPARSE_MLA_LSE_TOL, SparseMlaProblem,
    TopKProblem, seq_table, sparse_mla_o_lat_tol,
};
use crate::reference::SeqRows;
use crate::workload::{Rng, RowLayout, query_bytes, storage_bytes};
use std::time::Instant;

pub mod gemm;
pub mod model;
pub mod transfer;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub presets: Vec<RunConfig>,
    /// Per preset: batches and contexts; empty = the preset's defaults (see [`default_shapes`]).
    pub batches: Vec<u32>,
    pub contexts: Vec<u32>,
    pub reps: u32,
}

/// The shapes the issue asks for: v32 at batch {1, 16, 64} × context {8K, 32K, 128K}; small at
/// batch {1, 4, 16} × context {4K, 16K}; tiny at its own size.
pub fn default_shapes(cfg: &RunConfig) -> (Vec<u32>, Vec<u32>) {
    match cfg.model.name.as_str() {
        "v32" => (vec![1, 16, 64], vec![8 << 10, 32 << 10, 128 << 10]),
        "small" => (vec![1, 4, 16], vec![4 << 10, 16 << 10]),
        _ => (vec![cfg.batch], vec![cfg.context]),
    }
}

/// Device ceilings measured by the probe kernels.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ceilings {
    /// (bytes read + bytes written) / time of a large device-to-device copy shader.
    pub copy_gb_per_s: f64,
    /// f32 FMA throughput, counting an FMA as 2 FLOPs.
    pub fma_gflop_per_s: f64,
    /// Cooperative-matrix f16 → f32 throughput (the tensor cores); `None` off the coop path.
    pub coop_gflop_per_s: Option<f64>,
}

/// Result of the check step for one kernel at one preset.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckResult {
    pub kernel: String,
    pub preset: String,
    pub case: String,
    pub max_abs_err: f32,
}

/// One timed kernel at one shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelTiming {
    pub kernel: String,
    pub preset: String,
    pub batch: u32,
    pub context: u32,
    pub time_us: f64,
    pub bytes: u64,
    pub flops: u64,
    pub gb_per_s: f64,
    pub gflop_per_s: f64,
    /// max(bytes / bandwidth, FLOPs / rate): the time a kernel at the ceiling would take.
    pub roofline_us: f64,
    pub roofline_fraction: f64,
    /// "gpu" (timestamps) or "wall" (submit-to-done on the CPU clock).
    pub clock: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub adapter: AdapterReport,
    pub ceilings: Ceilings,
    pub checks: Vec<CheckResult>,
    pub timings: Vec<KernelTiming>,
}

/// The middle value (upper middle for an even count) of a non-empty sample.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median time in seconds of one compute pass holding `dispatches`, after a warm-up of at
/// least three passes and 0.3 s: on the H200 the passes of the first tenths of a second after
/// a pause ran 3–5× slower than the same passes later (the clocks ramping up; measured in
/// `bench model`).
pub fn time_pass(
    ctx: &GpuContext,
    dispatches: &[&Dispatch],
    reps: u32,
) -> Result<(f64, &'static str)> {
    let timer = GpuTimer::new(ctx, 1);
    let record = |pass: &mut wgpu::ComputePass| dispatches.iter().for_each(|d| d.record(pass));
    let warm = Instant::now();
    let mut passes = 0;
    while passes < 3 || warm.elapsed().as_secs_f64() < 0.3 {
        ctx.run_pass(None, record)?;
        passes += 1;
    }
    let mut times = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        ctx.run_pass(timer.as_ref().map(|t| (t, 0)), record)?;
        let wall = t0.elapsed().as_secs_f64();
        times.push(match &timer {
            Some(t) => t.read(ctx)?[0],
            None => wall,
        });
    }
    Ok((median(times), if timer.is_some() { "gpu" } else { "wall" }))
}

/// A buffer of `rows` rows of `layout` holding random values in [-1, 1) stored as `dtype`,
/// tiled from a block of whole rows (FP8 keys: the key cache's two regions, values and scales,
/// each tiled from its block).
fn random_rows(
    ctx: &GpuContext,
    label: &str,
    rows: u64,
    dtype: Dtype,
    layout: RowLayout,
    seed: u64,
) -> Result<wgpu::Buffer> {
    let width = layout.width();
    let row_bytes = match layout {
        RowLayout::Latent { kv, rope } => dtype.row_bytes(kv as u32, rope as u32),
        RowLayout::Key { dim } => dtype.key_bytes(dim as u32),
    };
    let block_rows = ((4u64 << 20) / row_bytes).clamp(1, rows.max(1));
    let values = Rng::new(seed).vec(block_rows as usize * width);
    let block = storage_bytes(&values, dtype, layout);
    match (dtype, layout) {
        (Dtype::Fp8, RowLayout::Key { dim }) => {
            let split = block_rows as usize * dim;
            let size = (rows * row_bytes).next_multiple_of(16);
            let parts = [
                (0, rows * dim as u64, &block[..split]),
                (
                    rows * dim as u64,
                    rows * 4,
                    &block[split..][..block_rows as usize * 4],
                ),
            ];
            tiled_buffer(ctx, label, size, &parts)
        }
        _ => tiled_buffer(
            ctx,
            label,
            rows * row_bytes,
            &[(0, rows * row_bytes, &block)],
        ),
    }
}

/// One buffer of keys for sequences `b0 .. b0 + batch` (sequence b0 + i's `T` keys from row i·T)
/// and the `[B, 2]` table that says so.
struct KeyPart {
    b0: u32,
    batch: u32,
    keys: wgpu::Buffer,
    seq: wgpu::Buffer,
}

impl KeyPart {
    /// The indexer's arguments over this part: queries `q`, weights `w`, `[B, t]` `scores`.
    fn args<'a>(
        &'a self,
        q: &'a wgpu::Buffer,
        w: &'a wgpu::Buffer,
        scores: &'a wgpu::Buffer,
        t: u32,
    ) -> IndexerArgs<'a> {
        IndexerArgs {
            q,
            w,
            keys: &self.keys,
            seq: &self.seq,
            scores,
            b0: self.b0,
            batch: self.batch,
            max_len: t,
            score_stride: t,
        }
    }
}

/// `b` sequences of `t` keys of `key_bytes` each, in as few buffers as the binding limit allows;
/// `make(keys, seed)` makes a buffer of that many keys.
fn key_parts(
    ctx: &GpuContext,
    b: u32,
    t: u32,
    key_bytes: u64,
    make: impl Fn(u64, u64) -> Result<wgpu::Buffer>,
) -> Result<Vec<KeyPart>> {
    let per_buf = (ctx.max_binding() / (t as u64 * key_bytes))
        .max(1)
        .min(b as u64) as u32;
    let mut parts = Vec::new();
    let mut b0 = 0;
    while b0 < b {
        let batch = per_buf.min(b - b0);
        let keys = make(batch as u64 * t as u64, b0 as u64)?;
        let mut table = vec![0u32; 2 * b as usize];
        for i in 0..batch {
            table[2 * (b0 + i) as usize] = i * t;
            table[2 * (b0 + i) as usize + 1] = t;
        }
        let seq = ctx.upload("seq", &table)?;
        parts.push(KeyPart {
            b0,
            batch,
            keys,
            seq,
        });
        b0 += batch;
    }
    Ok(parts)
}

/// A buffer of `size` bytes whose regions `(offset, len, block)` hold `block` over and over (the
/// last copy cut short; blocks and regions in multiples of 4 bytes).
fn tiled_buffer(
    ctx: &GpuContext,
    label: &str,
    size: u64,
    regions: &[(u64, u64, &[u8])],
) -> Result<wgpu::Buffer> {
    let buf = ctx.storage(label, size)?;
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    let mut blocks = Vec::new();
    for &(start, len, block) in regions {
        let src = ctx.upload("block", block)?;
        let mut off = 0;
        while off < len {
            let n = (block.len() as u64).min(len - off);
            enc.copy_buffer_to_buffer(&src, 0, &buf, start + off, n);
            off += n;
        }
        blocks.push(src);
    }
    ctx.submit(enc);
    ctx.check()?;
    Ok(buf)
}

/// Measure copy bandwidth, the FMA rate and (on the coop path) the tensor cores' rate with the
/// probe kernels.
pub fn measure_ceilings(ctx: &GpuContext, reps: u32) -> Result<Ceilings> {
    let probe = Probe::new(ctx)?;
    let bytes = (256u64 << 20)
        .min(ctx.max_binding() / 2 * 2 / 16 * 16)
        .min(ctx.max_binding());
    let src = random_rows(
        ctx,
        "probe src",
        bytes / 1024,
        Dtype::F32,
        RowLayout::Key { dim: 256 },
        1,
    )?;
    let dst = ctx.storage("probe dst", bytes)?;
    let copy = probe.copy(
        ctx,
        &src,
        &dst,
        65535.min((bytes / 16).div_ceil(256)) as u32,
    );
    let (t_copy, _) = time_pass(ctx, &[&copy], reps)?;
    let copy_gb_per_s = 2.0 * bytes as f64 / t_copy / 1e9;

    // FMA and coop: grow the work until one pass takes ≥ 20 ms, so launch overhead does not count.
    let workgroups = 2048u32;
    let out = ctx.storage("probe out", workgroups as u64 * 256 * 16)?;
    let rate =
        |flops_per_iter: f64, make: &dyn Fn(u32) -> Option<Dispatch>| -> Result<Option<f64>> {
            let mut iters = 64u32;
            loop {
                let Some(d) = make(iters) else {
                    return Ok(None);
                };
                let (t, _) = time_pass(ctx, &[&d], reps)?;
                if t > 0.02 || iters >= 1 << 16 {
                    return Ok(Some(flops_per_iter * iters as f64 / t / 1e9));
                }
                iters *= if t < 0.002 { 8 } else { 2 };
            }
        };
    let threads = workgroups as f64 * 256.0;
    let fma = rate(2.0 * 64.0 * threads, &|n| {
        Some(probe.fma(ctx, &src, &out, workgroups, n))
    })?;
    let subgroups = workgroups as f64 * 8.0;
    let coop = rate(COOP_FLOPS_PER_TRIP * subgroups, &|n| {
        probe.coop(ctx, &src, &out, workgroups, n)
    })?;
    Ok(Ceilings {
        copy_gb_per_s,
        fma_gflop_per_s: fma.ok_or_else(|| Error::Gpu("the FMA probe made no dispatch".into()))?,
        coop_gflop_per_s: coop,
    })
}

/// Check each kernel at a reduced case of `cfg` against the CPU reference.
pub fn check_kernels(ctx: &GpuContext, cfg: &RunConfig) -> Result<Vec<CheckResult>> {
    let fail = |e: String| Error::Gpu(format!("check failed, not timing: {e}"));
    let mut out = Vec::new();
    let mut push = |kernel: &str, case: String, err: f32| {
        out.push(CheckResult {
            kernel: kernel.into(),
            preset: cfg.model.name.clone(),
            case,
            max_abs_err: err,
        });
    };
    let (ih, id) = (
        cfg.model.index_heads as usize,
        cfg.model.index_head_dim as usize,
    );
    for dtype in timed_dtypes(cfg.key_dtype) {
        let p = IndexerProblem::random(ih, id, dtype, &[1500, 333], 11);
        let shape = IndexerShape {
            dtype,
            ..cfg.indexer_shape()
        };
        for units in paths(ctx, dtype) {
            let got = p.run(ctx, &Indexer::with(ctx, &shape, units)?, None)?;
            let (atol, rtol) = INDEXER_TOL;
            let want = p.reference_for(units);
            let e = compare("index_score", &got, &want, atol, rtol).map_err(fail)?;
            push(
                &labelled("indexer", units, dtype),
                "T = 1500, 333".into(),
                e,
            );
        }
    }

    let k = cfg.model.topk as usize;
    let p = TopKProblem::random(k, &[4 * k + 7, k - 1], 0, 12);
    let got = p.run(ctx, &TopK::new(ctx, &cfg.topk_shape())?, None)?;
    if got != p.reference() {
        return Err(fail(format!(
            "top-k k = {k}: indices differ from the reference"
        )));
    }
    push("topk", format!("T = {}, {}", 4 * k + 7, k - 1), 0.0);

    let small = RunConfig {
        batch: 2,
        ..cfg.clone()
    };
    for dtype in timed_dtypes(cfg.latent_dtype) {
        let small = RunConfig {
            latent_dtype: dtype,
            ..small.clone()
        };
        let p = SparseMlaProblem::random(&small, 3 * k, 0.05, &[], 13);
        for units in paths(ctx, dtype) {
            let o_tol = sparse_mla_o_lat_tol(units, k);
            let mla = SparseMla::with(ctx, &small.sparse_mla_shape(), units)?;
            let (o, lse) = p.run(ctx, &mla, None)?;
            let (want_o, want_lse) = p.reference_for(units);
            let ((oa, or), (la, lr)) = (o_tol, SPARSE_MLA_LSE_TOL);
            let e = compare("o_lat", &o, &want_o, oa, or).map_err(fail)?;
            let e2 = compare("lse", &lse, &want_lse, la, lr).map_err(fail)?;
            let case = format!("batch 2, {} rows", 3 * k);
            push(&labelled("sparse_mla", units, dtype), case, e.max(e2));
        }
    }

    let p = LseMergeProblem::random(1000, cfg.model.kv_lora_rank as usize, &[3], &[3, 4], 14);
    let (o, lse) = p.run(ctx, &LseMerge::new(ctx)?)?;
    let (want_o, want_lse) = p.reference();
    let e = compare("o", &o, &want_o, 1e-6, 1e-5)
        .map_err(fail)?
        .max(compare("lse", &lse, &want_lse, 1e-6, 1e-6).map_err(fail)?);
    push("lse_merge", "1000 rows".into(), e);
    Ok(out)
}

struct Shape<'a> {
    cfg: &'a RunConfig,
    batch: u32,
    context: u32,
}

/// The FLOP rate of the units a kernel multiplies on (GFLOP/s): the FMA probe's, or the
/// cooperative-matrix probe's.
fn rate(c: &Ceilings, units: MatrixPath) -> f64 {
    match units {
        MatrixPath::Fma => c.fma_gflop_per_s,
        MatrixPath::Coop => c.coop_gflop_per_s.unwrap_or(c.fma_gflop_per_s),
    }
}

/// A kernel's name in the report: coop kernels carry their path, caches other than f16 their
/// dtype ("sparse_mla coop fp8").
fn labelled(kernel: &str, units: MatrixPath, dtype: Dtype) -> String {
    let mut name = kernel.to_string();
    if units == MatrixPath::Coop {
        name += " coop";
    }
    if dtype != Dtype::F16 {
        name = format!("{name} {dtype}");
    }
    name
}

/// The cache dtypes a benchmark checks and times for a configured one: FP8 beside f16 (what it
/// is measured against), any other alone.
fn timed_dtypes(dtype: Dtype) -> Vec<Dtype> {
    match dtype {
        Dtype::Fp8 => vec![Dtype::F16, Dtype::Fp8],
        other => vec![other],
    }
}

#[allow(clippy::too_many_arguments)]
fn timing(
    kernel: &str,
    s: &Shape,
    (t, clock): (f64, &str),
    bytes: u64,
    flops: u64,
    c: &Ceilings,
    (units, dtype): (MatrixPath, Dtype),
) -> KernelTiming {
    KernelTiming {
        preset: s.cfg.model.name.clone(),
        ..row(
            &labelled(kernel, units, dtype),
            s.batch,
            s.context,
            (t, clock),
            bytes,
            flops,
            c,
            units,
        )
    }
}

/// One row of the report, against the roofline of `units`.
#[allow(clippy::too_many_arguments)]
fn row(
    kernel: &str,
    batch: u32,
    context: u32,
    (t, clock): (f64, &str),
    bytes: u64,
    flops: u64,
    c: &Ceilings,
    units: MatrixPath,
) -> KernelTiming {
    let roof = (bytes as f64 / (c.copy_gb_per_s * 1e9)).max(flops as f64 / (rate(c, units) * 1e9));
    KernelTiming {
        kernel: kernel.into(),
        preset: String::new(),
        batch,
        context,
        time_us: t * 1e6,
        bytes,
        flops,
        gb_per_s: bytes as f64 / t / 1e9,
        gflop_per_s: flops as f64 / t / 1e9,
        roofline_us: roof * 1e6,
        roofline_fraction: roof / t,
        clock: clock.into(),
    }
}

/// Time all four kernels at one (preset, batch, context).
fn time_shape(ctx: &GpuContext, s: &Shape, c: &Ceilings, reps: u32) -> Result<Vec<KernelTiming>> {
    let cfg = s.cfg;
    let (b, t) = (s.batch, s.context);
    let mut rng = Rng::new(b as u64 * 1000 + t as u64);
    let mut out = Vec::new();

    // --- indexer: keys split into as many buffers as the binding limit needs; each path's
    // kernel on the same buffers
    let q_values = rng.vec((b * cfg.model.index_heads * cfg.model.index_head_dim) as usize);
    let w = ctx.upload("w", &rng.vec((b * cfg.model.index_heads) as usize))?;
    let scores = ctx.storage("scores", b as u64 * t as u64 * 4)?;
    let total_keys = b as u64 * t as u64;
    for dtype in timed_dtypes(cfg.key_dtype) {
        let shape = IndexerShape {
            dtype,
            ..cfg.indexer_shape()
        };
        let layout = RowLayout::Key {
            dim: shape.dim as usize,
        };
        let parts = key_parts(ctx, b, t, shape.key_bytes(), |n, b0| {
            random_rows(ctx, "keys", n, dtype, layout, b0)
        })?;
        let q = ctx.upload("q", &query_bytes(&q_values, shape.dim as usize, dtype))?;
        for units in paths(ctx, dtype) {
            let indexer = Indexer::with(ctx, &shape, units)?;
            let dispatches: Vec<Dispatch> = parts
                .iter()
                .map(|p| indexer.bind(ctx, &p.args(&q, &w, &scores, t)))
                .collect();
            out.push(timing(
                "indexer",
                s,
                time_pass(ctx, &dispatches.iter().collect::<Vec<_>>(), reps)?,
                indexer.bytes(total_keys),
                indexer.flops(total_keys),
                c,
                (units, dtype),
            ));
        }
    }

    // --- top-k over random scores
    let host_scores: Vec<f32> = (0..total_keys).map(|_| rng.range(-4.0, 4.0)).collect();
    ctx.write(&scores, 0, bytemuck::cast_slice(&host_scores));
    let seqs: Vec<SeqRows> = (0..b)
        .map(|_| SeqRows {
            first_row: 0,
            len: t as usize,
        })
        .collect();
    let seq = ctx.upload("seq", &seq_table(&seqs))?;
    let topk_indices = ctx.storage("topk_indices", b as u64 * cfg.model.topk as u64 * 4)?;
    // both kernels: one workgroup a row, and split over several (what `Auto` takes from
    // SPLIT_MIN_LEN on)
    let mut topk = TopK::new(ctx, &cfg.topk_shape())?;
    for (label, split) in [
        ("topk", TopKSplit::Never),
        ("topk split", TopKSplit::Segments(split_segments(b, t))),
    ] {
        topk.split = split;
        let args = TopKArgs {
            scratch: None,
            scores: &scores,
            seq: &seq,
            topk_indices: &topk_indices,
            b0: 0,
            batch: b,
            score_stride: t,
        };
        let d = topk.bind(ctx, &args)?;
        out.push(timing(
            label,
            s,
            time_pass(ctx, &[&d], reps)?,
            topk.bytes(total_keys, b as u64),
            0,
            c,
            (MatrixPath::Fma, Dtype::F16),
        ));
    }

    // --- sparse MLA: random ids into a row buffer of up to 1 GiB (its cost does not depend on T)
    let m = &cfg.model;
    let layout = RowLayout::Latent {
        kv: m.kv_lora_rank as usize,
        rope: m.qk_rope_head_dim as usize,
    };
    // as many rows as the widest timed format fits (FP8 is timed beside f16 rows)
    let widest = timed_dtypes(cfg.latent_dtype)
        .into_iter()
        .map(|d| d.row_bytes(m.kv_lora_rank, m.qk_rope_head_dim))
        .max()
        .unwrap_or(cfg.row_bytes());
    let rows_n = (total_keys.min((1u64 << 30).min(ctx.max_binding()) / widest)).max(m.topk as u64);
    let ids: Vec<i32> = (0..b as u64 * m.topk as u64)
        .map(|_| rng.below(rows_n) as i32)
        .collect();
    let ids = ctx.upload("ids", &ids)?;
    let zero_base = ctx.upload("seq", &vec![0u32; 2 * b as usize])?;
    let dq = m.row_dim() as u64;
    let q = ctx.upload("q", &rng.vec((b as u64 * m.heads as u64 * dq) as usize))?;
    let o_lat = ctx.storage(
        "o_lat",
        b as u64 * m.heads as u64 * m.kv_lora_rank as u64 * 4,
    )?;
    let lse = ctx.storage("lse", b as u64 * m.heads as u64 * 4)?;
    for dtype in timed_dtypes(cfg.latent_dtype) {
        let rows = random_rows(ctx, "rows", rows_n, dtype, layout, 7)?;
        let shape = SparseMlaShape {
            dtype,
            ..cfg.sparse_mla_shape()
        };
        for units in paths(ctx, dtype) {
            let mla = SparseMla::with(ctx, &shape, units)?;
            let scratch = mla.scratch(ctx, b)?;
            let args = SparseMlaArgs {
                q: &q,
                ids: &ids,
                seq: &zero_base,
                rows: &rows,
                scratch: &scratch,
                o_lat: &o_lat,
                lse: &lse,
                b0: 0,
                batch: b,
            };
            let d = mla.bind(ctx, &args);
            let (flops, bytes) = (mla.flops(b as u64), mla.bytes(b as u64));
            out.push(timing(
                "sparse_mla",
                s,
                time_pass(ctx, &[&d], reps)?,
                bytes,
                flops,
                c,
                (units, dtype),
            ));
            // The steps apart: `scores` reads every row and writes the scores; `attend` reads the scores
            // and the c_kv part of every row again and writes partial outputs; `reduce` sums those.
            let steps = d.steps();
            let score_flops = mla.score_flops(b as u64);
            let scores_bytes = b as u64 * cfg.model.heads as u64 * cfg.model.topk as u64 * 4;
            // With one slice `attend` writes o_lat itself (counted in `bytes`) and `reduce` is skipped.
            let partial_bytes = if steps.len() > 2 {
                scratch.splits as u64
                    * b as u64
                    * cfg.model.heads as u64
                    * cfg.model.kv_lora_rank as u64
                    * 4
            } else {
                0
            };
            let kv_share = cfg.model.kv_lora_rank as u64 * bytes / cfg.model.row_dim() as u64;
            let t = time_pass(ctx, &[&steps[0]], reps)?;
            out.push(timing(
                if mla.wide_scores(b) {
                    "  .scores"
                } else {
                    "  .scores_narrow"
                },
                s,
                t,
                bytes + scores_bytes,
                score_flops,
                c,
                (units, dtype),
            ));
            let t = time_pass(ctx, &[&steps[1]], reps)?;
            out.push(timing(
                "  .attend",
                s,
                t,
                kv_share + scores_bytes + partial_bytes,
                flops - score_flops,
                c,
                (units, dtype),
            ));
            if let Some(reduce) = steps.get(2) {
                let t = time_pass(ctx, &[reduce], reps)?;
                out.push(timing(
                    "  .reduce",
                    s,
                    t,
                    partial_bytes + partial_bytes / scratch.splits as u64,
                    0,
                    c,
                    (units, dtype),
                ));
            }
        }
    }

    // --- lse merge of two such results
    let merge = LseMerge::new(ctx)?;
    let (o2, lse2) = (
        ctx.storage("o", o_lat.size())?,
        ctx.storage("lse", lse.size())?,
    );
    let rows_bh = b * cfg.model.heads;
    let args = LseMergeArgs {
        o0: &o_lat,
        lse0: &lse,
        o1: &o_lat,
        lse1: &lse,
        o: &o2,
        lse: &lse2,
        rows: rows_bh,
        dim: cfg.model.kv_lora_rank,
    };
    let d = merge.bind(ctx, &args);
    let bytes = rows_bh as u64 * (cfg.model.kv_lora_rank as u64 * 12 + 12);
    out.push(timing(
        "lse_merge",
        s,
        time_pass(ctx, &[&d], reps)?,
        bytes,
        rows_bh as u64 * cfg.model.kv_lora_rank as u64 * 6,
        c,
        (MatrixPath::Fma, Dtype::F16),
    ));
    Ok(out)
}

/// The whole benchmark. `progress` is told what runs next.
pub fn run(
    ctx: &GpuContext,
    opts: &BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport> {
    progress("checking kernels against the CPU reference");
    let mut checks = Vec::new();
    for cfg in &opts.presets {
        checks.extend(check_kernels(ctx, cfg)?);
    }
    progress("measuring copy bandwidth and FLOP rates");
    let ceilings = measure_ceilings(ctx, opts.reps)?;
    let mut timings = Vec::new();
    for cfg in &opts.presets {
        let (db, dc) = default_shapes(cfg);
        let batches = if opts.batches.is_empty() {
            db
        } else {
            opts.batches.clone()
        };
        let contexts = if opts.contexts.is_empty() {
            dc
        } else {
            opts.contexts.clone()
        };
        for &batch in &batches {
            for &context in &contexts {
                progress(&format!(
                    "{} batch {batch} context {context}",
                    cfg.model.name
                ));
                timings.extend(time_shape(
                    ctx,
                    &Shape {
                        cfg,
                        batch,
                        context,
                    },
                    &ceilings,
                    opts.reps,
                )?);
            }
        }
    }
    // The GEMM family at 8192³ and at the decoder layer's shapes (the v32 model's), on each
    // path's kernel, its result checked exactly.
    if opts.presets.iter().any(|c| c.model.name == "v32") {
        let mut kernels = vec![GemmKernel::Fma];
        if ctx.matrix == MatrixPath::Coop {
            kernels.insert(0, GemmKernel::CoopF16);
        }
        let mut shapes = vec![(8192, 8192, 8192)];
        shapes.extend(gemm::decoder_shapes());
        for kernel in kernels {
            progress(&format!("gemm {}", kernel.name()));
            for &mnk in &shapes {
                if !gemm::fits(ctx, mnk) {
                    progress(&format!(
                        "gemm {mnk:?}: skipped, past the storage binding limit"
                    ));
                    continue;
                }
                let (mut t, exact) = gemm::time_gemm(ctx, kernel, mnk, &ceilings, opts.reps)?;
                if !exact {
                    return Err(Error::Gpu(format!("{}: C is not K / 2", t.kernel)));
                }
                t.preset = "v32".into();
                timings.push(t);
            }
        }
    }
    Ok(BenchReport {
        adapter: ctx.report.clone(),
        ceilings,
        checks,
        timings,
    })
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.adapter)?;
        for c in &self.checks {
            writeln!(
                f,
                "check  {:<20} {:<6} {:<22} max abs err {:.2e}",
                c.kernel, c.preset, c.case, c.max_abs_err
            )?;
        }
        writeln!(f, "All results match. Starting benchmarks.")?;
        writeln!(
            f,
            "ceilings: copy {:.1} GB/s (read + write), f32 FMA {:.1} GFLOP/s",
            self.ceilings.copy_gb_per_s, self.ceilings.fma_gflop_per_s
        )?;
        if let Some(coop) = self.ceilings.coop_gflop_per_s {
            writeln!(
                f,
                "          tensor cores (coop f16 → f32) {coop:.1} GFLOP/s"
            )?;
        }
        writeln!(
            f,
            "{:<22} {:<6} {:>5} {:>7} {:>10} {:>10} {:>9} {:>10} {:>10} {:>7}",
            "kernel",
            "preset",
            "batch",
            "context",
            "time us",
            "MB",
            "GB/s",
            "GFLOP/s",
            "roof us",
            "roof %"
        )?;
        for t in &self.timings {
            writeln!(
                f,
                "{:<22} {:<6} {:>5} {:>7} {:>10.1} {:>10.2} {:>9.1} {:>10.1} {:>10.1} {:>6.1}%{}",
                t.kernel,
                t.preset,
                t.batch,
                t.context,
                t.time_us,
                t.bytes as f64 / 1e6,
                t.gb_per_s,
                t.gflop_per_s,
                t.roofline_us,
                100.0 * t.roofline_fraction,
                if t.clock == "wall" {
                    " (wall clock)"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}
