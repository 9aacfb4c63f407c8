//! `bench transfer`: host ↔ device movement of latent rows, each path against the bus peak.
//!
//! For each row size (656 B = FP8 latent, 1152 B = 16-bit latent) and each number of missed rows
//! per dispatch, it builds a copy list of random host rows, checks the zero-copy gather byte for
//! byte (and the other paths against it), then times:
//! - `zero-copy`: one gather shader reading the rows from host RAM (GPU timestamps);
//! - `staging`: CPU packs the rows from process memory, one upload, one scatter shader (wall clock:
//!   the CPU work is part of the path);
//! - `per-row`: one `copy_buffer_to_buffer` per row from a host-RAM buffer (wall clock);
//! - `write-back`: rows written device → host by a shader (the write_back kernel, one row per
//!   "sequence", GPU timestamps).
//!
//! The peaks are one large `copy_buffer_to_buffer` host → device and device → host between a
//! host-RAM buffer and a device buffer (wall clock around submit-to-done, median).

use super::{median, time_pass};
use crate::error::{Error, Result};
use crate::gpu::{AdapterReport, GpuContext, GpuTimer};
use crate::kernels::Transfer;
use crate::kernels::transfer::{TransferArgs, WriteBackArgs};
use crate::workload::Rng;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct TransferOptions {
    pub row_bytes: Vec<u64>,
    pub rows: Vec<u32>,
    pub reps: u32,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            row_bytes: vec![656, 1152],
            rows: vec![64, 256, 1024, 4096, 16384, 65536],
            reps: 5,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TransferTiming {
    pub path: String,
    pub row_bytes: u64,
    pub rows: u32,
    pub time_us: f64,
    pub gb_per_s: f64,
    /// Of the host → device peak (device → host for write-back).
    pub fraction_of_peak: f64,
    pub clock: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TransferReport {
    pub adapter: AdapterReport,
    pub h2d_peak_gb_per_s: f64,
    pub d2h_peak_gb_per_s: f64,
    pub peak_bytes: u64,
    /// "gpu" (timestamps around the copy) or "wall".
    pub peak_clock: String,
    pub timings: Vec<TransferTiming>,
}

fn wall<F: FnMut() -> Result<()>>(reps: u32, mut f: F) -> Result<f64> {
    f()?; // warm-up
    let t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f().map(|_| t0.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    Ok(median(t))
}

/// Median seconds of one large buffer copy: GPU timestamps around the copy where the device
/// can write them inside an encoder (the same clock the shaders are timed with), else wall clock.
fn copy_time(
    ctx: &GpuContext,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    bytes: u64,
    reps: u32,
) -> Result<(f64, &'static str)> {
    let timer = GpuTimer::new(ctx, 1).filter(|_| ctx.encoder_timestamps());
    let mut gpu = Vec::new();
    let t = wall(reps, || {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        match &timer {
            Some(t) => t.around(&mut enc, 0, |e| {
                e.copy_buffer_to_buffer(src, 0, dst, 0, bytes)
            }),
            None => enc.copy_buffer_to_buffer(src, 0, dst, 0, bytes),
        }
        ctx.submit(enc);
        ctx.check()?;
        if let Some(t) = &timer {
            gpu.push(t.read(ctx)?[0]);
        }
        Ok(())
    })?;
    if gpu.is_empty() {
        return Ok((t, "wall"));
    }
    Ok((median(gpu), "gpu"))
}

pub fn run(
    ctx: &GpuContext,
    opts: &TransferOptions,
    mut progress: impl FnMut(&str),
) -> Result<TransferReport> {
    if !ctx.mappable {
        return Err(Error::Unsupported {
            what: "the transfer benchmark (host-RAM storage buffers)".into(),
            need: "feature MAPPABLE_PRIMARY_BUFFERS".into(),
            have: "not offered by this adapter".into(),
        });
    }
    // every (rows, row size) checked before anything is allocated: the pool of a measurement is one
    // storage binding, and its gather grid has at most 65,535 × 256 threads of 16 bytes
    let limit = ctx.max_binding().min(65535 * 256 * 16);
    for &rb in &opts.row_bytes {
        crate::limits::in_range("row-bytes", rb, 16, crate::limits::MAX_ROW_BYTES)?;
        if !rb.is_multiple_of(16) {
            return Err(Error::config("row-bytes", rb, "a multiple of 16"));
        }
        for &n in &opts.rows {
            let bytes = (n as u64 + 1) * rb;
            if n == 0 || bytes > limit {
                return Err(Error::config(
                    "rows × row-bytes",
                    format!("({n} + 1) × {rb} = {bytes} bytes"),
                    format!("1 ..= {limit} bytes (one storage binding and one dispatch grid)"),
                ));
            }
        }
    }
    progress("measuring the host <-> device copy peaks");
    let peak_bytes = (256u64 << 20).min(ctx.max_binding()) / 16 * 16;
    let host = ctx.host_buffer("peak host", peak_bytes)?;
    let dev = ctx.storage("peak device", peak_bytes)?;
    let (t_h2d, peak_clock) = copy_time(ctx, &host, &dev, peak_bytes, opts.reps)?;
    let (t_d2h, _) = copy_time(ctx, &dev, &host, peak_bytes, opts.reps)?;
    let (h2d, d2h) = (
        peak_bytes as f64 / t_h2d / 1e9,
        peak_bytes as f64 / t_d2h / 1e9,
    );
    drop((host, dev));

    let mut timings = Vec::new();
    for &rb in &opts.row_bytes {
        for &n in &opts.rows {
            progress(&format!("{n} rows of {rb} B"));
            timings.extend(time_rows(ctx, rb, n, opts.reps, h2d, d2h)?);
        }
    }
    Ok(TransferReport {
        adapter: ctx.report.clone(),
        h2d_peak_gb_per_s: h2d,
        d2h_peak_gb_per_s: d2h,
        peak_bytes,
        peak_clock: peak_clock.into(),
        timings,
    })
}

fn time_rows(
    ctx: &GpuContext,
    rb: u64,
    n: u32,
    reps: u32,
    h2d: f64,
    d2h: f64,
) -> Result<Vec<TransferTiming>> {
    let mut rng = Rng::new(n as u64 * 7 + rb);
    // host rows: 4 candidates per copied row (random gathers), as many as one binding allows
    let cap = ((4 * n as u64).min(ctx.max_binding() / rb)).max(n as u64) as u32;
    let host_bytes: Vec<u8> = (0..cap as u64 * rb)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let host = ctx.host_buffer("host rows", cap as u64 * rb)?;
    ctx.write(&host, 0, &host_bytes);
    // n distinct random tokens → slots 0 .. n
    let mut tokens: Vec<u32> = (0..cap).collect();
    for i in 0..n as usize {
        let j = i + rng.below((cap as usize - i) as u64) as usize;
        tokens.swap(i, j);
    }
    let copies: Vec<[u32; 2]> = (0..n).map(|i| [tokens[i as usize], i]).collect();
    let copies_buf = ctx.upload("copies", &copies)?;
    let counts = ctx.upload("counts", &[n, 0u32])?;
    let pool = ctx.storage("pool", (n as u64 + 1) * rb)?;
    let transfer = Transfer::new(ctx, rb, n, n + 1, cap)?;
    let targs = TransferArgs {
        copies: &copies_buf,
        counts: &counts,
        pool: &pool,
        b0: 0,
        batch: 1,
    };
    let payload = n as u64 * rb;
    let timing = |path: &str, (t, clock): (f64, &str), peak: f64| TransferTiming {
        path: path.into(),
        row_bytes: rb,
        rows: n,
        time_us: t * 1e6,
        gb_per_s: payload as f64 / t / 1e9,
        fraction_of_peak: payload as f64 / t / 1e9 / peak,
        clock: clock.into(),
    };
    let mut out = Vec::new();

    // zero-copy gather: check, then time
    ctx.fill(&pool, 0);
    let gather = transfer.gather(ctx, &targs, &host, 0);
    ctx.run_pass(None, |p| gather.record(p))?;
    let got: Vec<u8> = ctx.read(&pool)?;
    for (i, c) in copies.iter().enumerate() {
        let want = &host_bytes[(c[0] as u64 * rb) as usize..][..rb as usize];
        if &got[i * rb as usize..][..rb as usize] != want {
            return Err(Error::Gpu(format!(
                "zero-copy gather put the wrong bytes in slot {i}: not timing"
            )));
        }
    }
    out.push(timing("zero-copy", time_pass(ctx, &[&gather], reps)?, h2d));

    // staging: CPU pack + one upload + scatter
    let staging = ctx.storage("staging", payload)?;
    let scatter = transfer.scatter(ctx, &targs, &staging);
    let mut packed = Vec::with_capacity(payload as usize);
    let t = wall(reps, || {
        packed.clear();
        for c in &copies {
            packed.extend_from_slice(&host_bytes[(c[0] as u64 * rb) as usize..][..rb as usize]);
        }
        ctx.write(&staging, 0, &packed);
        ctx.run_pass(None, |p| scatter.record(p))
    })?;
    if ctx.read::<u8>(&pool)? != got {
        return Err(Error::Gpu(
            "staging left a different pool than zero-copy".into(),
        ));
    }
    out.push(timing("staging", (t, "wall"), h2d));

    // per-row: one buffer copy per row
    let t = wall(reps, || {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        for c in &copies {
            enc.copy_buffer_to_buffer(&host, c[0] as u64 * rb, &pool, c[1] as u64 * rb, rb);
        }
        ctx.submit(enc);
        ctx.check()
    })?;
    if ctx.read::<u8>(&pool)? != got {
        return Err(Error::Gpu(
            "per-row left a different pool than zero-copy".into(),
        ));
    }
    out.push(timing("per-row", (t, "wall"), h2d));

    // write-back: rows device → host by the write_back shader (one row per "sequence"). One dispatch
    // covers at most 65,535 sequences (the grid's y limit), and write_back indexes the host buffer
    // per dispatch, so this moves min(n, 65535) rows and reports that count.
    let nw = n.min(65535);
    let wb_bytes = nw as u64 * rb;
    let wb = Transfer::new(ctx, rb, 1, 1, 1)?;
    let seq: Vec<u32> = (0..nw).flat_map(|_| [0u32, 1]).collect();
    let seq = ctx.upload("seq", &seq)?;
    let dest = ctx.host_buffer("write-back dest", wb_bytes)?;
    let src_rows = ctx.storage("new rows", wb_bytes)?;
    ctx.write(&src_rows, 0, &host_bytes[..wb_bytes as usize]);
    let args = WriteBackArgs {
        pool: &pool,
        new_rows: &src_rows,
        seq: &seq,
        host: Some(&dest),
        b0: 0,
        batch: nw,
    };
    let write_back = wb.write_back(ctx, &args);
    let (t, clock) = time_pass(ctx, &[&write_back], reps)?;
    if ctx.read_host(&dest, 0, wb_bytes)? != host_bytes[..wb_bytes as usize] {
        return Err(Error::Gpu(
            "write-back put the wrong bytes in host memory".into(),
        ));
    }
    let gbs = wb_bytes as f64 / t / 1e9;
    out.push(TransferTiming {
        path: "write-back".into(),
        row_bytes: rb,
        rows: nw,
        time_us: t * 1e6,
        gb_per_s: gbs,
        fraction_of_peak: gbs / d2h,
        clock: clock.into(),
    });
    Ok(out)
}

impl std::fmt::Display for TransferReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.adapter)?;
        writeln!(
            f,
            "peaks ({} MiB copy_buffer_to_buffer with a host-RAM buffer, {} clock): host -> device {:.1} GB/s, device -> host {:.1} GB/s",
            self.peak_bytes >> 20,
            self.peak_clock,
            self.h2d_peak_gb_per_s,
            self.d2h_peak_gb_per_s
        )?;
        writeln!(
            f,
            "{:<11} {:>9} {:>7} {:>11} {:>8} {:>8}  clock",
            "path", "row bytes", "rows", "time us", "GB/s", "of peak"
        )?;
        for t in &self.timings {
            writeln!(
                f,
                "{:<11} {:>9} {:>7} {:>11.1} {:>8.2} {:>7.1}%  {}",
                t.path,
                t.row_bytes,
                t.rows,
                t.time_us,
                t.gb_per_s,
                100.0 * t.fraction_of_peak,
                t.clock
            )?;
        }
        Ok(())
    }
}
