//! The paper's observations, regenerated: each figure records top-k traces from GPU runs of the
//! engine (offload mode, a per-layer locality profile) and, where the figure is about the cache
//! policy, replays them through the plain-Rust LRU at every pool size asked for.
//!
//! | figure | paper | what it shows |
//! |---|---|---|
//! | `similarity` | Fig. 2 | per-layer step-to-step overlap across context lengths (heat map) |
//! | `warmup` | Fig. 4 | misses per decode step with and without LRU warm-up, ratio 0.2 |
//! | `misses-per-layer` | Figs. 5, 8 | misses per layer at ratios 0.2 … 0.9, and across contexts |
//! | `misses-vs-ratio` | Fig. 9 | mean misses against the sparse memory ratio, per context |
//! | `batch-throughput` | Fig. 1 | decode tokens/s against batch, both modes, one budget |
//! | `timeline` | Fig. 6 | one decode step's passes from GPU timestamps, both modes (with `--overlap`) |
//! | `overlap` | Fig. 7 | exposed transfer time per layer against misses, every `--overlap` schedule |

use crate::decode::{SweepPoint, sweep, sweep_csv, sweep_svg};
use crate::engine::{EngineOptions, Recording, record};
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::svg::{Series, heatmap, lines};
use crate::trace::Trace;
use std::fmt::Write as _;

/// A figure's outputs: CSV, SVG files, and a short table to print.
pub struct Figure {
    pub name: &'static str,
    pub csv: String,
    pub svgs: Vec<(String, String)>,
    pub table: String,
}

/// What the figures run: `base` gives the model, steps, seed, warm-up windows and per-layer
/// locality; `targets` the profile's target overlaps (for the tables), if any.
pub struct FigureOptions {
    pub base: EngineOptions,
    pub contexts: Vec<u32>,
    pub ratios: Vec<f64>,
    pub targets: Vec<f32>,
}

/// Mean misses per (step, layer, sequence) of a replay at `slots`.
fn mean_misses(trace: &Trace, slots: u32, warmup: bool) -> Result<(Vec<f64>, Vec<f64>)> {
    let r = trace.replay(slots, warmup)?;
    let per = |x: u64| x as f64 / (r.steps.len().max(1) as f64 * trace.batch as f64);
    let per_layer: Vec<f64> = r.misses_per_layer().into_iter().map(per).collect();
    let per_step: Vec<f64> = r
        .steps
        .iter()
        .map(|s| {
            s.iter().map(|c| c.1).sum::<u64>() as f64 / (trace.layers as f64 * trace.batch as f64)
        })
        .collect();
    Ok((per_layer, per_step))
}

/// Replay pool size for a ratio: ⌈ratio · capacity⌉ if it holds top-k + 1. (The CPU replay has no
/// upper limit; the GPU resolve's [`crate::kernels::resolve::MAX_SLOTS`] applies to runs only.)
fn slots_for(rec: &Recording, ratio: f64) -> Option<u32> {
    let slots = (ratio * rec.trace.capacity as f64).ceil() as u32;
    (ratio > 0.0 && slots > rec.trace.topk).then_some(slots)
}

pub fn similarity(ctx: &GpuContext, fo: &FigureOptions) -> Result<Figure> {
    if fo.base.steps < 2 {
        return Err(crate::Error::config(
            "steps",
            fo.base.steps,
            "≥ 2 (the overlap compares consecutive steps)",
        ));
    }
    let recs: Vec<Recording> = fo
        .contexts
        .iter()
        .map(|&c| record(ctx, &fo.base, c))
        .collect::<Result<_>>()?;
    let layers = fo.base.run.layers as usize;
    let mut csv = String::from("layer,target,context,overlap\n");
    let mut table = format!("{:>5} {:>7}", "layer", "target");
    for r in &recs {
        let _ = write!(table, " {:>9}", format!("T={}", r.context));
    }
    table.push('\n');
    let values: Vec<Vec<f64>> = (0..layers)
        .map(|l| recs.iter().map(|r| r.overlap[l]).collect())
        .collect();
    for (l, row) in values.iter().enumerate() {
        let target = fo
            .targets
            .get(l)
            .map_or(String::from("-"), |t| format!("{:.2}", t));
        let _ = write!(table, "{l:>5} {target:>7}");
        for (r, v) in recs.iter().zip(row) {
            let _ = writeln!(csv, "{l},{target},{},{v:.4}", r.context);
            let _ = write!(table, " {v:>9.2}");
        }
        table.push('\n');
    }
    let cols: Vec<String> = recs.iter().map(|r| format!("T = {}", r.context)).collect();
    let rows: Vec<String> = (0..layers).map(|l| format!("layer {l}")).collect();
    let svg = heatmap(
        "step-to-step top-k overlap |K(t-1) ∩ K(t)| / |K(t)|",
        "context length",
        "layer",
        &cols,
        &rows,
        &values,
    );
    Ok(Figure {
        name: "similarity",
        csv,
        svgs: vec![("similarity.svg".into(), svg)],
        table,
    })
}

pub fn warmup(ctx: &GpuContext, fo: &FigureOptions) -> Result<Figure> {
    let rec = record(ctx, &fo.base, fo.contexts[0])?;
    let slots = slots_for(&rec, 0.2).unwrap_or(rec.trace.topk + 1);
    let (_, with) = mean_misses(&rec.trace, slots, true)?;
    let (_, without) = mean_misses(&rec.trace, slots, false)?;
    let mut csv = String::from("step,misses_with_warmup,misses_without_warmup\n");
    for (i, (a, b)) in with.iter().zip(&without).enumerate() {
        let _ = writeln!(csv, "{},{a:.3},{b:.3}", i + 1);
    }
    let mut table = format!(
        "context {}, pool {slots} slots (ratio 0.2), top-k {}: misses per layer and sequence\n",
        rec.context, rec.trace.topk
    );
    let _ = writeln!(
        table,
        "{:>5} {:>12} {:>15}",
        "step", "with warm-up", "without warm-up"
    );
    for i in 0..with.len().min(5) {
        let _ = writeln!(table, "{:>5} {:>12.1} {:>15.1}", i + 1, with[i], without[i]);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let _ = writeln!(
        table,
        "{:>5} {:>12.1} {:>15.1}",
        "mean",
        mean(&with),
        mean(&without)
    );
    let series = [
        Series {
            name: "with LRU warm-up".into(),
            points: with
                .iter()
                .enumerate()
                .map(|(i, &y)| ((i + 1) as f64, y))
                .collect(),
            dashed: false,
        },
        Series {
            name: "without warm-up".into(),
            points: without
                .iter()
                .enumerate()
                .map(|(i, &y)| ((i + 1) as f64, y))
                .collect(),
            dashed: true,
        },
    ];
    let title = format!("misses per decode step, ratio 0.2, context {}", rec.context);
    let svg = lines(
        &title,
        "decode step",
        "misses per layer and sequence",
        &series,
        &[],
    );
    Ok(Figure {
        name: "warmup",
        csv,
        svgs: vec![("warmup.svg".into(), svg)],
        table,
    })
}

pub fn misses_per_layer(ctx: &GpuContext, fo: &FigureOptions) -> Result<Figure> {
    let recs: Vec<Recording> = fo
        .contexts
        .iter()
        .map(|&c| record(ctx, &fo.base, c))
        .collect::<Result<_>>()?;
    let mut csv = String::from("context,ratio,slots,layer,misses_per_step\n");
    let mut by_ratio = Vec::new();
    let mut table = format!(
        "misses per step per layer and sequence (top-k {})\n",
        recs[0].trace.topk
    );
    for r in &recs {
        for &ratio in &fo.ratios {
            let Some(slots) = slots_for(r, ratio) else {
                let _ = writeln!(
                    table,
                    "T={} ratio {ratio}: pool below top-k + 1, skipped",
                    r.context
                );
                continue;
            };
            let (per_layer, _) = mean_misses(&r.trace, slots, true)?;
            for (l, m) in per_layer.iter().enumerate() {
                let _ = writeln!(csv, "{},{ratio},{slots},{l},{m:.3}", r.context);
            }
            let row: Vec<String> = per_layer.iter().map(|m| format!("{m:.0}")).collect();
            let _ = writeln!(
                table,
                "T={:<7} ratio {ratio:<4}: {}",
                r.context,
                row.join(" ")
            );
            by_ratio.push((r.context, ratio, per_layer));
        }
    }
    let first = recs[0].context;
    let s1: Vec<Series> = by_ratio
        .iter()
        .filter(|(c, _, _)| *c == first)
        .map(|(_, ratio, pl)| Series {
            name: format!("ratio {ratio}"),
            points: pl.iter().enumerate().map(|(l, &m)| (l as f64, m)).collect(),
            dashed: false,
        })
        .collect();
    let low = fo.ratios.first().copied().unwrap_or(0.2);
    let s2: Vec<Series> = by_ratio
        .iter()
        .filter(|(_, r, _)| *r == low)
        .map(|(c, _, pl)| Series {
            name: format!("context {c}"),
            points: pl.iter().enumerate().map(|(l, &m)| (l as f64, m)).collect(),
            dashed: false,
        })
        .collect();
    let svg1 = lines(
        &format!("misses per layer, context {first}"),
        "layer",
        "misses per step and sequence",
        &s1,
        &[],
    );
    let svg2 = lines(
        &format!("misses per layer at ratio {low}, by context"),
        "layer",
        "misses per step and sequence",
        &s2,
        &[],
    );
    Ok(Figure {
        name: "misses-per-layer",
        csv,
        svgs: vec![
            ("misses_per_layer.svg".into(), svg1),
            ("misses_per_layer_contexts.svg".into(), svg2),
        ],
        table,
    })
}

pub fn misses_vs_ratio(ctx: &GpuContext, fo: &FigureOptions) -> Result<Figure> {
    let recs: Vec<Recording> = fo
        .contexts
        .iter()
        .map(|&c| record(ctx, &fo.base, c))
        .collect::<Result<_>>()?;
    let k = recs[0].trace.topk;
    let mut csv = String::from("context,ratio,slots,below_2k,mean_misses\n");
    let mut table = format!(
        "{:>8} {:>6} {:>7} {:>12}\n",
        "context", "ratio", "slots", "mean misses"
    );
    let mut series = Vec::new();
    let mut marks = Vec::new();
    for r in &recs {
        let mut pts = Vec::new();
        for &ratio in &fo.ratios {
            let Some(slots) = slots_for(r, ratio) else {
                continue;
            };
            let (per_layer, _) = mean_misses(&r.trace, slots, true)?;
            let mean = per_layer.iter().sum::<f64>() / per_layer.len() as f64;
            let below = slots < 2 * k;
            let _ = writeln!(csv, "{},{ratio},{slots},{below},{mean:.3}", r.context);
            let _ = writeln!(
                table,
                "{:>8} {ratio:>6} {slots:>7} {mean:>12.1}{}",
                r.context,
                if below { "  (pool < 2k)" } else { "" }
            );
            pts.push((ratio, mean));
        }
        marks.push((
            2.0 * k as f64 / r.trace.capacity as f64,
            format!("2k at T={}", r.context),
        ));
        series.push(Series {
            name: format!("context {}", r.context),
            points: pts,
            dashed: false,
        });
    }
    let marks_ref: Vec<(f64, &str)> = marks.iter().map(|(x, s)| (*x, s.as_str())).collect();
    let svg = lines(
        "mean misses against the sparse memory ratio",
        "sparse memory ratio (pool / full latent cache)",
        "misses per layer, step and sequence",
        &series,
        &marks_ref,
    );
    Ok(Figure {
        name: "misses-vs-ratio",
        csv,
        svgs: vec![("misses_vs_ratio.svg".into(), svg)],
        table,
    })
}

pub fn batch_throughput(
    ctx: &GpuContext,
    fo: &FigureOptions,
    batches: &[u32],
    budget: u64,
) -> Result<Figure> {
    let points: Vec<SweepPoint> = sweep(
        ctx,
        &fo.base,
        &fo.contexts,
        batches,
        1024,
        budget,
        None,
        |_| {},
        |_| Ok(()),
    )?;
    let mut table = String::new();
    for p in &points {
        let _ = writeln!(
            table,
            "T={:<7} {:<9} batch {:>4}{} {:>10.1} tokens/s",
            p.context,
            p.mode.to_string(),
            p.batch,
            if p.largest { "*" } else { " " },
            p.tokens_per_s()
        );
    }
    let title = format!(
        "decode tokens/s against batch at a {:.0} MiB budget",
        budget as f64 / 1048576.0
    );
    Ok(Figure {
        name: "batch-throughput",
        csv: sweep_csv(&points),
        svgs: vec![("batch_throughput.svg".into(), sweep_svg(&points, &title))],
        table,
    })
}

/// One decode step of each mode drawn from GPU timestamps: a lane per stage, a bar per layer's
/// pass (the last timed step of a run of `fo.base`). It shows where the transfers sit on the
/// critical path: without `--overlap`, offload's `gather` and `write_back` bars run between the
/// selection and the attention, alone on the GPU; with it, the overlapped part of each layer is
/// one `overlapped` bar (timestamps come at pass bounds).
pub fn timeline(ctx: &GpuContext, fo: &FigureOptions, budget: u64) -> Result<Figure> {
    use crate::engine::{Engine, Mode, Stage};
    use crate::engine::{LayerSchedule, TransferOverlap};
    let mut csv = String::from("mode,layer,stage,begin_us,end_us\n");
    let mut table = String::new();
    let mut svgs = Vec::new();
    // resident, then offload with each schedule (the CSV's mode: offload, offload/da, …)
    let runs = [
        (Mode::Resident, LayerSchedule::Serial),
        (Mode::Offload, LayerSchedule::Serial),
        (Mode::Offload, LayerSchedule::Da),
        (Mode::Offload, LayerSchedule::Dba(2)),
    ];
    for (mode, schedule) in runs {
        let opts = EngineOptions {
            mode,
            transfer_overlap: TransferOverlap::All(schedule),
            ..fo.base.clone()
        };
        let mode = match schedule {
            LayerSchedule::Serial => mode.to_string(),
            s => format!("{mode}/{s}"),
        };
        let mut e = Engine::new(ctx, &opts, budget)?;
        for _ in 0..opts.steps {
            e.step(ctx)?;
        }
        e.finish(ctx)?;
        let bars = &e.stats.timeline;
        if bars.is_empty() {
            return Err(crate::Error::Gpu(
                "no timestamps: the timeline needs an adapter with timestamp queries".into(),
            ));
        }
        for b in bars {
            let _ = writeln!(
                csv,
                "{mode},{},{},{:.3},{:.3}",
                b.layer,
                b.stage.name(),
                b.begin_s * 1e6,
                b.end_s * 1e6
            );
        }
        let span = bars.iter().map(|b| b.end_s).fold(0.0, f64::max) * 1e6;
        let busy = |s: Stage| -> f64 {
            bars.iter()
                .filter(|b| b.stage == s)
                .map(|b| (b.end_s - b.begin_s) * 1e6)
                .fold(0.0, |a, x| a + x)
        };
        let transfer = busy(Stage::Gather) + busy(Stage::WriteBack);
        let _ = writeln!(
            table,
            "{mode:<15} step span {span:>9.1} us; transfers alone on the GPU (gather + \
             write_back) {transfer:>8.1} us = {:.1}% of it; overlapped passes {:>8.1} us",
            100.0 * transfer / span.max(1e-9),
            busy(Stage::Overlapped)
        );
        svgs.push((
            format!("timeline_{}.svg", mode.replace(['/', ':'], "_")),
            step_timeline(&mode, &opts, bars),
        ));
    }
    Ok(Figure {
        name: "timeline",
        csv,
        svgs,
        table,
    })
}

/// One timed decode step's passes as a timeline (Fig. 6): a lane per stage, a bar per pass,
/// coloured by layer (`figures timeline` and the browser page).
pub fn step_timeline(
    mode: &str,
    opts: &EngineOptions,
    bars: &[crate::engine::TimelineBar],
) -> String {
    use crate::svg::{Bar, timeline};
    let stages: Vec<String> = crate::engine::Stage::ALL
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    let svg_bars: Vec<Bar> = bars
        .iter()
        .map(|b| Bar {
            row: b.stage as usize,
            begin: b.begin_s * 1e6,
            end: b.end_s * 1e6,
            color: b.layer as usize,
            label: format!("L{}", b.layer),
        })
        .collect();
    let title = format!(
        "one decode step, {mode} ({}, batch {}): passes by stage, colour = layer",
        opts.run.model.name, opts.run.batch
    );
    timeline(
        &title,
        "µs from the step's first timestamp",
        &stages,
        &svg_bars,
    )
}

/// The schedules `figures overlap` measures (`--overlap` values).
pub const OVERLAP_SCHEDULES: [crate::engine::LayerSchedule; 4] = [
    crate::engine::LayerSchedule::Serial,
    crate::engine::LayerSchedule::Da,
    crate::engine::LayerSchedule::Dba(2),
    crate::engine::LayerSchedule::Dba(4),
];

/// One point of `figures overlap`: a schedule at one locality, per layer and step.
#[derive(Clone, Debug)]
pub struct OverlapPoint {
    pub locality: f32,
    pub misses_per_seq: f64,
    pub schedule: crate::engine::LayerSchedule,
    /// GPU time of a layer's step with the schedule, by stage (µs).
    pub stages_us: crate::engine::StageTimes,
    /// The same with its gathers left out.
    pub no_transfer_us: f64,
    /// The step − the serial schedule's `no_transfer_us` (the same misses already resident).
    pub exposed_us: f64,
}

impl OverlapPoint {
    /// GPU time of a layer's step with the schedule (µs).
    pub fn step_us(&self) -> f64 {
        self.stages_us.total()
    }
}

/// Exposed transfer time per layer against misses per sequence, for every schedule (the paper's
/// Fig. 7). One offload run per (locality, schedule) with its gathers and one without: exposed =
/// the schedule's step − the serial step without gathers, i.e. what the step costs beyond the
/// same step with its misses already resident (a chunked schedule's extra dispatches count as
/// exposed; `no_transfer_us` shows them alone). Per layer: step GPU time (timestamps) / layers.
pub fn overlap(
    ctx: &GpuContext,
    fo: &FigureOptions,
    budget: u64,
    localities: &[f32],
) -> Result<(Figure, Vec<OverlapPoint>)> {
    use crate::engine::chunks::Measured;
    use crate::engine::{Engine, LayerSchedule, Mode, TransferOverlap};
    let context = fo.contexts.first().copied().unwrap_or(fo.base.run.context);
    let base = EngineOptions {
        mode: Mode::Offload,
        contexts: vec![context; fo.base.run.batch as usize],
        layer_locality: Vec::new(),
        time_every: 1,
        ..fo.base.clone()
    };
    let layers = base.run.layers as f64;
    let run = |locality: f32,
               schedule: LayerSchedule,
               omit: bool|
     -> Result<(crate::engine::StageTimes, f64)> {
        let opts = EngineOptions {
            locality,
            transfer_overlap: TransferOverlap::All(schedule),
            omit_gathers: omit,
            ..base.clone()
        };
        let mut e = Engine::new(ctx, &opts, budget)?;
        for _ in 0..opts.steps {
            e.step(ctx)?;
        }
        e.finish(ctx)?;
        if e.stats.timed_steps == 0 {
            return Err(crate::Error::Gpu(
                "no timestamps: the overlap figure needs an adapter with timestamp queries".into(),
            ));
        }
        let stages = e.stats.stage_s_per_step().scaled(1e6 / layers);
        let misses: u64 = e.stats.counters.iter().map(|c| c.misses).sum();
        let per_seq = misses as f64 / (e.stats.steps as f64 * layers * base.run.batch as f64);
        Ok((stages, per_seq))
    };
    let mut points = Vec::new();
    for &rho in localities {
        let serial_bare = run(rho, LayerSchedule::Serial, true)?.0.total();
        for &s in &OVERLAP_SCHEDULES {
            let (stages_us, misses) = run(rho, s, false)?;
            let no_transfer_us = match s {
                LayerSchedule::Serial => serial_bare,
                _ => run(rho, s, true)?.0.total(),
            };
            points.push(OverlapPoint {
                locality: rho,
                misses_per_seq: misses,
                schedule: s,
                no_transfer_us,
                exposed_us: stages_us.total() - serial_bare,
                stages_us,
            });
        }
    }
    let mut csv = String::from(
        "locality,misses_per_seq,schedule,step_us,no_transfer_us,exposed_us,exposed_of_serial",
    );
    for st in crate::engine::Stage::ALL {
        let _ = write!(csv, ",{}_us", st.name());
    }
    csv.push_str(",batch\n");
    let mut table = format!(
        "exposed transfer time per layer, µs ({}, batch {}, context {context}; exposed = step − \
         serial step without gathers)\n{:>8} {:>10}",
        base.run.model.name, base.run.batch, "locality", "misses/seq"
    );
    for s in &OVERLAP_SCHEDULES {
        let _ = write!(table, " {:>10}", s.to_string());
    }
    let _ = writeln!(table, " {:>8} {:>10} {:>9}", "best", "layerwise", "lw/best");
    let mut series: Vec<Series> = OVERLAP_SCHEDULES
        .iter()
        .map(|s| Series {
            name: s.to_string(),
            points: Vec::new(),
            dashed: false,
        })
        .collect();
    for row in points.chunks(OVERLAP_SCHEDULES.len()) {
        let serial = row[0].exposed_us;
        let misses = row[0].misses_per_seq;
        let _ = write!(table, "{:>8.3} {:>10.1}", row[0].locality, misses);
        for (i, p) in row.iter().enumerate() {
            let ratio = p.exposed_us / serial;
            let _ = write!(
                csv,
                "{},{:.2},{},{:.2},{:.2},{:.2},{:.4}",
                p.locality,
                p.misses_per_seq,
                p.schedule,
                p.step_us(),
                p.no_transfer_us,
                p.exposed_us,
                ratio
            );
            for (_, t) in p.stages_us.iter() {
                let _ = write!(csv, ",{t:.2}");
            }
            let _ = writeln!(csv, ",{}", base.run.batch);
            let _ = write!(table, " {:>10.1}", p.exposed_us);
            series[i]
                .points
                .push((p.misses_per_seq.max(0.5), p.exposed_us));
        }
        let best = row[1..]
            .iter()
            .min_by(|a, b| a.step_us().total_cmp(&b.step_us()))
            .expect("schedules");
        // the chooser as a run would use it, from the other miss counts' measurements alone
        let others: Vec<Measured> = points
            .iter()
            .filter(|p| p.locality != row[0].locality)
            .map(|p| Measured {
                misses: p.misses_per_seq,
                schedule: p.schedule,
                step_us: p.step_us(),
                batch: Some(base.run.batch),
            })
            .collect();
        let chosen = crate::engine::choose_schedule(misses, &others);
        let lw = row.iter().find(|p| p.schedule == chosen).unwrap_or(&row[0]);
        let _ = writeln!(
            table,
            " {:>7.0}% {:>10} {:>8.2}×",
            100.0 * best.exposed_us / serial,
            lw.schedule.to_string(),
            lw.step_us() / best.step_us().min(row[0].step_us())
        );
    }
    let _ = writeln!(
        table,
        "best: the fastest overlapped schedule's exposed time as a share of serial's; layerwise: \
         what the chooser picks for those misses from the other rows' measurements, its step \
         against the fastest schedule's"
    );
    let svg = lines(
        &format!(
            "exposed transfer time per layer ({}, batch {}, context {context})",
            base.run.model.name, base.run.batch
        ),
        "misses per sequence and step",
        "µs per layer",
        &series,
        &[],
    );
    Ok((
        Figure {
            name: "overlap",
            csv,
            svgs: vec![("overlap.svg".into(), svg)],
            table,
        },
        points,
    ))
}
