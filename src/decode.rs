//! Running the engine as a user does: both modes side by side with a bit-for-bit comparison
//! (`decode`, the main job), and throughput at the largest batch each mode fits in a device
//! budget (`sweep`). No terminal code here: progress goes through a callback.

use crate::engine::{Engine, EngineOptions, MemoryPlan, Mode, Stage, StageTimes, Stats};
use crate::error::{Error, Result};
use crate::gpu::{AdapterReport, GpuContext};
use std::fmt;

/// What one mode's run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModeReport {
    pub mode: Mode,
    pub batch: u32,
    pub steps: u32,
    pub context: u32,
    pub tokens_per_s_gpu: f64,
    pub tokens_per_s_wall: f64,
    /// GPU milliseconds per step, per stage.
    pub stage_ms_per_step: StageTimes,
    pub device_bytes: u64,
    pub host_bytes: u64,
    /// Offload: the transfer path in use and where the host store lives.
    pub cache: Option<String>,
    /// Offload: per layer, (pool slots holding a row, slots) over the batch after the last step.
    pub pool_occupancy: Vec<(u64, u64)>,
    pub stats: Stats,
}

impl ModeReport {
    pub fn new(engine: &Engine) -> Self {
        let s = &engine.stats;
        let o = &engine.opts;
        ModeReport {
            mode: o.mode,
            batch: o.run.batch,
            steps: s.steps,
            context: o.contexts.iter().copied().max().unwrap_or(0),
            tokens_per_s_gpu: engine.tokens_per_gpu_s(),
            tokens_per_s_wall: engine.tokens_per_wall_s(),
            stage_ms_per_step: s.stage_s_per_step().scaled(1e3),
            device_bytes: engine.device_bytes(),
            host_bytes: MemoryPlan::host_bytes(o, o.run.batch),
            cache: engine.cache.as_ref().map(|c| {
                let fb = c
                    .fallback
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                format!(
                    "{} path{fb}; pool {} slots/layer/sequence; host store: {}",
                    c.path,
                    c.shape.slots,
                    c.host.describe()
                )
            }),
            pool_occupancy: Vec::new(),
            stats: s.clone(),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DecodeReport {
    pub adapter: AdapterReport,
    pub config: String,
    pub budget: u64,
    pub modes: Vec<ModeReport>,
    /// Some(true) when both modes ran and every o_lat and lse bit agreed at every layer and step.
    pub identical: Option<bool>,
    /// Per layer (target overlap, calibrated ρ) when a locality profile was used.
    pub profile: Vec<(f32, f32)>,
}

/// Run `modes` on the options (mode field ignored), one after the other, each at full speed.
/// With both modes and `verify`, each fingerprints every layer's `o_lat` and `lse` at every step
/// on the GPU (64-bit digests, [`crate::kernels::Digest`]) and the two runs' digests are compared
/// once at the end, as are the last step's outputs themselves, bit for bit.
pub fn decode(
    ctx: &GpuContext,
    opts: &EngineOptions,
    modes: &[Mode],
    verify: bool,
    budget: u64,
    progress: impl FnMut(&str, u32),
) -> Result<DecodeReport> {
    let run = decode_async(ctx, opts, modes, verify, budget, progress);
    crate::gpu::block_on("decode", run)
}

/// [`decode`] without blocking: the browser page's run (examples/web.rs). `progress` is called
/// after each step is submitted; the page's event loop runs wherever a step waits for the GPU.
pub async fn decode_async(
    ctx: &GpuContext,
    opts: &EngineOptions,
    modes: &[Mode],
    verify: bool,
    budget: u64,
    mut progress: impl FnMut(&str, u32),
) -> Result<DecodeReport> {
    let verify = verify && modes.len() == 2;
    let mut reports = Vec::new();
    let mut fingerprints = Vec::new();
    for &mode in modes {
        let o = EngineOptions {
            mode,
            digest_outputs: verify,
            ..opts.clone()
        };
        let mut e = Engine::new_async(ctx, &o, budget).await?;
        for step in 1..=opts.steps {
            e.step_async(ctx).await?;
            progress(&format!("{mode}"), step);
        }
        e.finish_async(ctx).await?;
        let mut report = ModeReport::new(&e);
        if let Some(cache) = &e.cache {
            for l in 0..opts.run.layers {
                report.pool_occupancy.push(cache.occupancy(ctx, l).await?);
            }
        }
        reports.push(report);
        if verify {
            let mut last = Vec::new();
            for l in 0..opts.run.layers {
                last.push(e.outputs_async(ctx, l).await?);
            }
            fingerprints.push((e.digests_async(ctx).await?, last));
        }
    }
    let identical = verify.then(|| fingerprints[0] == fingerprints[1]);
    Ok(DecodeReport {
        adapter: ctx.report.clone(),
        config: describe(opts),
        budget,
        modes: reports,
        identical,
        profile: Vec::new(),
    })
}

fn describe(o: &EngineOptions) -> String {
    let queries = match &o.model {
        Some(m) => format!("the model's queries ({}) over hashed contexts", m.what),
        None => format!("locality {}", o.locality),
    };
    format!(
        "{}\ncontexts {:?}, {} decode steps, {queries}, LRU warm-up {} windows, seed {}",
        o.run, o.contexts, o.steps, o.warmup_windows, o.seed
    )
}

/// A rate or ratio as table text: `n/a` where it is not a finite number (no GPU timestamps).
fn num(x: f64, width: usize, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:>width$.decimals$}")
    } else {
        format!("{:>width$}", "n/a")
    }
}

/// A CSV field: empty where the value is not a finite number.
fn csv_num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        String::new()
    }
}

impl SweepPoint {
    /// Tokens/s by GPU time where the adapter has timestamps, else by wall clock.
    pub fn tokens_per_s(&self) -> f64 {
        if self.tokens_per_s_gpu.is_finite() {
            self.tokens_per_s_gpu
        } else {
            self.tokens_per_s_wall
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

impl fmt::Display for DecodeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.adapter)?;
        writeln!(f, "{}", self.config)?;
        writeln!(f, "device budget {:.0} MiB", mib(self.budget))?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<9} {:>5} {:>14} {:>15} {:>9} {:>11} {:>10}",
            "mode",
            "batch",
            "tokens/s (GPU)",
            "tokens/s (wall)",
            "wall/GPU",
            "device MiB",
            "host MiB"
        )?;
        for m in &self.modes {
            writeln!(
                f,
                "{:<9} {:>5} {} {} {}% {:>11.1} {:>10.1}",
                m.mode.to_string(),
                m.batch,
                num(m.tokens_per_s_gpu, 14, 1),
                num(m.tokens_per_s_wall, 15, 1),
                num(100.0 * m.tokens_per_s_wall / m.tokens_per_s_gpu, 8, 1),
                mib(m.device_bytes),
                mib(m.host_bytes)
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "ms per step   GPU stages   GPU span (stages + gaps)   host recording   wall"
        )?;
        for m in &self.modes {
            let per = |x: f64| 1e3 * x / m.stats.steps.max(1) as f64;
            writeln!(
                f,
                "{:<13} {} {} {:>16.3} {:>6.3}",
                m.mode.to_string(),
                num(1e3 * m.stats.gpu_s_per_step(), 10, 3),
                num(1e3 * m.stats.span_s_per_step(), 26, 3),
                per(m.stats.host_s),
                per(m.stats.wall_s)
            )?;
        }
        writeln!(f)?;
        write!(f, "GPU ms per step {:<1}", "")?;
        for s in Stage::ALL {
            write!(f, "{:>11}", s.name())?;
        }
        writeln!(f, "{:>11}", "total")?;
        for m in &self.modes {
            write!(f, "{:<16}", m.mode.to_string())?;
            for (_, t) in m.stage_ms_per_step.iter() {
                write!(f, "{t:>11.3}")?;
            }
            writeln!(f, "{:>11.3}", m.stage_ms_per_step.total())?;
        }
        for m in &self.modes {
            if let Some(c) = &m.cache {
                writeln!(f, "\noffload cache: {c}")?;
                writeln!(
                    f,
                    "{:<6} {:>9} {:>13} {:>12} {:>12} {:>10}",
                    "layer", "hit rate", "misses/step", "H->D MiB", "D->H MiB", "pool used"
                )?;
                for (l, c) in m.stats.counters.iter().enumerate() {
                    let used = match m.pool_occupancy.get(l) {
                        Some(&(used, slots)) => {
                            format!("{:.1}%", 100.0 * used as f64 / slots as f64)
                        }
                        None => "-".into(),
                    };
                    writeln!(
                        f,
                        "{:<6} {:>8.1}% {:>13.1} {:>12.2} {:>12.2} {used:>10}",
                        l,
                        100.0 * c.hit_rate(),
                        c.misses as f64 / m.steps.max(1) as f64,
                        mib(c.bytes_h2d),
                        mib(c.bytes_d2h)
                    )?;
                }
            }
            if m.stats.overlap_steps > 0 {
                let o: Vec<String> = m
                    .stats
                    .overlap()
                    .iter()
                    .map(|x| format!("{:.0}%", 100.0 * x))
                    .collect();
                writeln!(
                    f,
                    "measured step-to-step top-k overlap per layer ({}): {}",
                    m.mode,
                    o.join(" ")
                )?;
                if !self.profile.is_empty() {
                    let t: Vec<String> = self
                        .profile
                        .iter()
                        .map(|(t, r)| format!("{:.0}% (ρ {r:.3})", 100.0 * t))
                        .collect();
                    writeln!(f, "target overlap per layer (profile): {}", t.join(" "))?;
                }
            }
        }
        match self.identical {
            Some(true) => writeln!(
                f,
                "\nverdict: resident and offload gave bit-identical o_lat and lse at every layer and step\n         (64-bit GPU digests of every step, and the last step's outputs read back)"
            ),
            Some(false) => writeln!(
                f,
                "\nverdict: MODES DISAGREE: resident and offload outputs differ"
            ),
            None => Ok(()),
        }
    }
}

/// One point of a sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepPoint {
    pub context: u32,
    pub mode: Mode,
    pub batch: u32,
    /// This is the largest batch of the mode (and pool) in the budget.
    pub largest: bool,
    /// Pool slots per layer and sequence (offload), 0 for resident.
    pub slots: u32,
    /// The pool was sized by working-set-aware admission.
    pub admission: bool,
    pub tokens_per_s_gpu: f64,
    pub tokens_per_s_wall: f64,
    pub hit_rate: f64,
    pub stage_ms_per_step: StageTimes,
    pub device_bytes: u64,
}

/// Options at one context and batch, derived from the sweep's options.
fn at(opts: &EngineOptions, mode: Mode, context: u32, batch: u32) -> EngineOptions {
    EngineOptions {
        mode,
        contexts: vec![context; batch as usize],
        run: crate::RunConfig {
            batch,
            ..opts.run.clone()
        },
        ..opts.clone()
    }
}

fn run_point(
    ctx: &GpuContext,
    o: &EngineOptions,
    largest: bool,
    admission: bool,
    budget: u64,
) -> Result<SweepPoint> {
    let mut e = Engine::new(ctx, o, budget)?;
    for _ in 0..o.steps {
        e.step(ctx)?;
    }
    e.finish(ctx)?;
    let r = ModeReport::new(&e);
    let mut total = crate::cache::CacheCounters::default();
    for c in &e.stats.counters {
        total += *c;
    }
    Ok(SweepPoint {
        context: o.contexts[0],
        mode: o.mode,
        batch: o.run.batch,
        largest,
        slots: e.cache.as_ref().map_or(0, |c| c.shape.slots),
        admission,
        tokens_per_s_gpu: r.tokens_per_s_gpu,
        tokens_per_s_wall: r.tokens_per_s_wall,
        hit_rate: if o.mode == Mode::Offload {
            total.hit_rate()
        } else {
            1.0
        },
        stage_ms_per_step: r.stage_ms_per_step,
        device_bytes: r.device_bytes,
    })
}

/// For each context: each mode at its largest batch under `budget` (capped at `max_batch`) and at
/// each of `batches` that fits; tokens/s over `opts.steps` steps (no verification).
///
/// With `admission = Some(w)` (working-set-aware admission, after SparseServe), offload also
/// runs with its pool sized to the working set: a probe run of `w` steps measures the largest
/// union of a sequence's selections over `w` consecutive steps, the pool gets that many slots + 1
/// (at least the configured pool), and the batch is the largest that fits the budget with it.
/// A pool below the working set thrashes; this trades batch for hit rate.
///
/// Every context and mode is checked against the budget before the first run. `measured` gets
/// the points so far after each run (a sweep of hours keeps what it measured if it stops: the
/// CLI writes its CSV there); its error ends the sweep.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    ctx: &GpuContext,
    opts: &EngineOptions,
    contexts: &[u32],
    batches: &[u32],
    max_batch: u32,
    budget: u64,
    admission: Option<u32>,
    mut progress: impl FnMut(&str),
    mut measured: impl FnMut(&[SweepPoint]) -> Result<()>,
) -> Result<Vec<SweepPoint>> {
    let largest = |mode: Mode, context: u32| -> Result<u32> {
        let b = MemoryPlan::largest_batch(&at(opts, mode, context, 1), budget, ctx.max_binding())?
            .min(max_batch);
        match b {
            0 => Err(Error::config(
                "device budget",
                budget,
                format!("enough for one {mode} sequence of context {context}"),
            )),
            b => Ok(b),
        }
    };
    for &context in contexts {
        for mode in [Mode::Resident, Mode::Offload] {
            largest(mode, context)?;
        }
    }
    let mut points = Vec::new();
    for &context in contexts {
        for mode in [Mode::Resident, Mode::Offload] {
            let largest = largest(mode, context)?;
            let mut list: Vec<u32> = batches.iter().copied().filter(|&b| b < largest).collect();
            list.push(largest);
            for batch in list {
                progress(&format!(
                    "context {context}, {mode}, batch {batch}{}",
                    if batch == largest { " (largest)" } else { "" }
                ));
                points.push(run_point(
                    ctx,
                    &at(opts, mode, context, batch),
                    batch == largest,
                    false,
                    budget,
                )?);
                measured(&points)?;
            }
        }
        if let Some(window) = admission {
            progress(&format!(
                "context {context}: probing the working set over {window} steps"
            ));
            let probe = EngineOptions {
                steps: window.max(1),
                run: crate::RunConfig {
                    batch: 2,
                    ..opts.run.clone()
                },
                ..opts.clone()
            };
            let ws = crate::engine::record(ctx, &probe, context)?
                .trace
                .working_set(window);
            let configured = opts.pool.slots(context + opts.steps, opts.run.model.topk)?;
            let slots = (ws + 1)
                .max(configured)
                .min(crate::kernels::resolve::MAX_SLOTS);
            let sized = EngineOptions {
                pool: crate::cache::PoolSize::Slots(slots),
                ..opts.clone()
            };
            let largest = MemoryPlan::largest_batch(
                &at(&sized, Mode::Offload, context, 1),
                budget,
                ctx.max_binding(),
            )?
            .min(max_batch);
            if largest == 0 {
                return Err(Error::config(
                    "device budget",
                    budget,
                    format!("one sequence with a {slots}-slot pool (working set {ws})"),
                ));
            }
            progress(&format!(
                "context {context}, offload with admission: working set {ws}, pool {slots}, batch {largest}"
            ));
            points.push(run_point(
                ctx,
                &at(&sized, Mode::Offload, context, largest),
                true,
                true,
                budget,
            )?);
            measured(&points)?;
        }
    }
    Ok(points)
}

/// A sweep's points, printed as a table with each context's gain.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(transparent)]
pub struct SweepReport {
    pub points: Vec<SweepPoint>,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let points = &self.points;
        writeln!(
            f,
            "{:>8} {:<17} {:>6} {:>7} {:>14} {:>15} {:>10} {:>9} {:>11}",
            "context",
            "mode",
            "batch",
            "slots",
            "tokens/s (GPU)",
            "tokens/s (wall)",
            "wall/GPU",
            "hit rate",
            "device MiB"
        )?;
        let name = |p: &SweepPoint| match (p.mode, p.admission) {
            (_, true) => "offload+admission".to_string(),
            (m, false) => m.to_string(),
        };
        for p in points {
            writeln!(
                f,
                "{:>8} {:<17} {:>6}{} {:>6} {} {} {}% {:>8.1}% {:>11.1}",
                p.context,
                name(p),
                p.batch,
                if p.largest { "*" } else { " " },
                p.slots,
                num(p.tokens_per_s_gpu, 14, 1),
                num(p.tokens_per_s_wall, 15, 1),
                num(100.0 * p.tokens_per_s_wall / p.tokens_per_s_gpu, 9, 1),
                100.0 * p.hit_rate,
                mib(p.device_bytes)
            )?;
        }
        let mut contexts: Vec<u32> = points.iter().map(|p| p.context).collect();
        contexts.dedup();
        for c in contexts {
            let best = |m: Mode, adm: bool| {
                points
                    .iter()
                    .find(|p| p.context == c && p.mode == m && p.largest && p.admission == adm)
            };
            let Some(r) = best(Mode::Resident, false) else {
                continue;
            };
            for (label, o) in [
                ("offload", best(Mode::Offload, false)),
                ("offload+admission", best(Mode::Offload, true)),
            ] {
                if let Some(o) = o {
                    writeln!(
                        f,
                        "context {c}: largest batch resident {} vs {label} {}; throughput gain {:+.1}%, hit rate {:.1}%",
                        r.batch,
                        o.batch,
                        100.0 * (o.tokens_per_s() / r.tokens_per_s() - 1.0),
                        100.0 * o.hit_rate
                    )?;
                }
            }
        }
        writeln!(f, "(* = the largest batch of the mode in the budget)")
    }
}

/// The sweep as CSV.
pub fn sweep_csv(points: &[SweepPoint]) -> String {
    let mut s = String::from(
        "context,mode,batch,largest,slots,admission,tokens_per_s_gpu,tokens_per_s_wall,hit_rate,device_bytes",
    );
    for st in Stage::ALL {
        s += &format!(",{}_ms_per_step", st.name());
    }
    s += "\n";
    for p in points {
        s += &format!(
            "{},{},{},{},{},{},{},{},{:.4},{}",
            p.context,
            p.mode,
            p.batch,
            p.largest,
            p.slots,
            p.admission,
            csv_num(p.tokens_per_s_gpu, 3),
            csv_num(p.tokens_per_s_wall, 3),
            p.hit_rate,
            p.device_bytes
        );
        for (_, t) in p.stage_ms_per_step.iter() {
            s += &format!(",{}", csv_num(t, 4));
        }
        s += "\n";
    }
    s
}

/// The sweep as an SVG: tokens/s against batch, one line per (mode, context).
pub fn sweep_svg(points: &[SweepPoint], title: &str) -> String {
    let mut contexts: Vec<u32> = points.iter().map(|p| p.context).collect();
    contexts.dedup();
    let mut series = Vec::new();
    for c in contexts {
        for mode in [Mode::Resident, Mode::Offload] {
            let mut pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.context == c && p.mode == mode && !p.admission)
                .map(|p| (p.batch as f64, p.tokens_per_s()))
                .filter(|p| p.1.is_finite())
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push(crate::svg::Series {
                name: format!("{mode}, context {c}"),
                points: pts,
                dashed: mode == Mode::Resident,
            });
        }
    }
    for p in points.iter().filter(|p| p.admission) {
        series.push(crate::svg::Series {
            name: format!(
                "offload + admission ({} slots), context {}",
                p.slots, p.context
            ),
            points: vec![(p.batch as f64, p.tokens_per_s())],
            dashed: false,
        });
    }
    let clock = if points.iter().all(|p| p.tokens_per_s_gpu.is_finite()) {
        "decode tokens/s (GPU time)"
    } else {
        "decode tokens/s (wall clock: no GPU timestamps)"
    };
    crate::svg::lines(title, "batch (sequences)", clock, &series, &[])
}
