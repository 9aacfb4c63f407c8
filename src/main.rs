//! The `ess-wgpu` command line. Runs nothing itself: it parses options, calls the library, and
//! prints (or writes JSON).

use clap::{Parser, Subcommand};
use ess_wgpu::bench::{self, BenchOptions};
use ess_wgpu::cache::PoolSize;
use ess_wgpu::engine::{EngineOptions, Mode};
use ess_wgpu::{Config, GpuContext, Result, config::parse_count};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ess-wgpu",
    version,
    about = "Sparse MLA attention with an offloaded latent cache, on wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the adapter, its features and limits.
    Info,
    /// Decode a batch in resident and/or offload mode and report (the default command).
    Decode(DecodeArgs),
    /// For a device budget, run each mode at its largest batch (and at --batches) per context;
    /// writes sweep.csv and sweep.svg.
    Sweep(SweepArgs),
    /// Regenerate one of the paper's observations (CSV + SVG + table); see docs/FIGURES.md.
    Figures(FiguresArgs),
    /// Record top-k traces from a run, or replay a trace through the LRU policy alone.
    #[command(subcommand)]
    Trace(TraceCommand),
    /// One decode step's kernels (indexer → top-k → sparse MLA) checked against the CPU reference.
    Demo(PresetArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(clap::Args, Clone)]
struct PresetArgs {
    /// tiny, small or v32.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Override a configuration field: --set topk=512 (repeatable; fields: heads, kv_lora_rank,
    /// qk_rope_head_dim, qk_nope_head_dim, index_heads, index_head_dim, topk, layers, context,
    /// batch, dtype).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    overrides: Vec<String>,
}

impl PresetArgs {
    fn config(&self, preset: &str) -> Result<Config> {
        let cfg = Config::preset(preset)?.with_overrides(&self.overrides)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time each kernel against the roofline of the measured copy bandwidth and FMA rate.
    Kernels {
        /// Presets to run (repeatable); default: v32 and small.
        #[arg(long = "preset")]
        presets: Vec<String>,
        /// Batches (comma list); default: the preset's (v32: 1,16,64; small: 1,4,16).
        #[arg(long, value_delimiter = ',', value_parser = parse_count_arg)]
        batch: Vec<u32>,
        /// Contexts (comma list, K = 1024); default: the preset's (v32: 8K,32K,128K; small: 4K,16K).
        #[arg(long, value_delimiter = ',', value_parser = parse_count_arg)]
        context: Vec<u32>,
        /// Timed repetitions per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: u32,
        /// Override a configuration field of every preset (repeatable).
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        overrides: Vec<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Move latent rows host <-> device by each transfer path, against the measured bus peaks.
    Transfer {
        /// Row sizes in bytes (comma list, multiples of 16).
        #[arg(long, value_delimiter = ',', default_values_t = [656u64, 1152])]
        row_bytes: Vec<u64>,
        /// Missed rows per dispatch (comma list, K = 1024).
        #[arg(long, value_delimiter = ',', value_parser = parse_count_arg,
              default_values_t = [64u32, 256, 1024, 4096, 16384, 65536])]
        rows: Vec<u32>,
        /// Timed repetitions per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: u32,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Options shared by `decode` and `sweep`.
#[derive(clap::Args, Clone)]
struct EngineArgs {
    /// tiny, small or v32.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Override a configuration field: --set batch=8 (repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    overrides: Vec<String>,
    /// Decode steps.
    #[arg(long, default_value_t = 32)]
    steps: u32,
    /// Pool slots per layer and sequence (≥ top-k + 1); overrides --sparse-memory-ratio.
    #[arg(long)]
    pool_slots: Option<u32>,
    /// Sparse memory ratio: pool / full latent cache of a sequence (the paper's knob).
    #[arg(long, alias = "pool-ratio", default_value_t = 0.2)]
    sparse_memory_ratio: f64,
    /// zero-copy, staging or per-row.
    #[arg(long, default_value = "zero-copy")]
    transfer: String,
    /// Step-to-step similarity of the queries (0 independent … 1 identical).
    #[arg(long, default_value_t = 0.95)]
    locality: f32,
    /// Per-layer target overlap instead of one --locality: `paper` (shaped like the paper's
    /// Fig. 2) or a file (JSON array or one number per line); calibrated to ρ on this adapter.
    /// `figures` use `paper` unless given `none`.
    #[arg(long)]
    profile: Option<String>,
    /// Prefill windows seeding the pools (LRU warm-up); 0 turns it off.
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// Device memory the engine may use, e.g. 2G (default: 2 GiB, a conservative guess: wgpu
    /// cannot tell how much memory the adapter has).
    #[arg(long, value_parser = parse_bytes)]
    device_budget: Option<u64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Timestamp the stages of every N-th step, counted back from the last (1 = every step;
    /// timestamps slow the steps that carry them).
    #[arg(long, default_value_t = 8)]
    time_every: u32,
}

const DEFAULT_BUDGET: u64 = 2 << 30;

impl EngineArgs {
    fn options(
        &self,
        contexts: Option<Vec<u32>>,
        track_overlap: bool,
    ) -> Result<(EngineOptions, u64)> {
        let model = Config::preset(&self.preset)?.with_overrides(&self.overrides)?;
        model.validate()?;
        let contexts = contexts.unwrap_or_else(|| vec![model.context; model.batch as usize]);
        let pool = match self.pool_slots {
            Some(n) => PoolSize::Slots(n),
            None => PoolSize::Ratio(self.sparse_memory_ratio),
        };
        let opts = EngineOptions {
            model,
            contexts,
            steps: self.steps,
            mode: Mode::Offload,
            pool,
            transfer: self.transfer.parse()?,
            locality: self.locality,
            layer_locality: Vec::new(),
            record_trace: false,
            warmup_windows: self.warmup,
            seed: self.seed,
            track_overlap,
            digest_outputs: false,
            time_every: self.time_every,
        };
        opts.validate()?;
        Ok((opts, self.device_budget.unwrap_or(DEFAULT_BUDGET)))
    }
}

#[derive(clap::Args, Clone)]
struct DecodeArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Context per sequence (comma list, one per sequence; K = 1024); default: the preset's.
    #[arg(long, value_delimiter = ',', value_parser = parse_count_arg)]
    contexts: Vec<u32>,
    /// both, resident or offload.
    #[arg(long, default_value = "both")]
    mode: String,
    /// With both modes: do not compare their outputs (saves the digest dispatches).
    #[arg(long)]
    no_verify: bool,
}

#[derive(clap::Args, Clone)]
struct SweepArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Contexts to sweep (comma list, K = 1024).
    #[arg(long, value_delimiter = ',', value_parser = parse_count_arg, default_values_t = [4096u32])]
    contexts: Vec<u32>,
    /// Extra batches to run below each mode's largest (comma list).
    #[arg(long, value_delimiter = ',')]
    batches: Vec<u32>,
    /// Cap on the batch.
    #[arg(long, default_value_t = 1024)]
    max_batch: u32,
    /// Working-set-aware admission: also run offload with its pool sized to the working set over
    /// this many steps (measured by a probe run), at the largest batch that then fits.
    #[arg(long)]
    admission: Option<u32>,
    /// Folder for sweep.csv and sweep.svg.
    #[arg(long, default_value = ".")]
    out: std::path::PathBuf,
}

#[derive(clap::Args, Clone)]
struct FiguresArgs {
    /// similarity, warmup, misses-per-layer, misses-vs-ratio or batch-throughput.
    figure: String,
    #[command(flatten)]
    engine: EngineArgs,
    /// Contexts (comma list, K = 1024); the first is used by `warmup`.
    #[arg(long, value_delimiter = ',', value_parser = parse_count_arg, default_values_t = [2048u32, 4096])]
    contexts: Vec<u32>,
    /// Sparse memory ratios to replay (comma list).
    #[arg(long, value_delimiter = ',', default_values_t = [0.05f64, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9])]
    ratios: Vec<f64>,
    /// batch-throughput: extra batches below each mode's largest.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2, 4])]
    batches: Vec<u32>,
    /// Folder for the CSV and SVG files.
    #[arg(long, default_value = "figures")]
    out: std::path::PathBuf,
}

#[derive(Subcommand)]
enum TraceCommand {
    /// Decode in offload mode and write every layer's top-k of every step (format ess-trace 1).
    Record {
        #[command(flatten)]
        engine: EngineArgs,
        /// Context per sequence (comma list); default: the preset's.
        #[arg(long, value_delimiter = ',', value_parser = parse_count_arg)]
        contexts: Vec<u32>,
        /// The trace file to write.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Replay a trace through exact LRU pools: hits and misses per layer, no GPU needed.
    Replay {
        /// The trace file (format in src/trace.rs and the README).
        file: std::path::PathBuf,
        /// Pool slots per layer and sequence.
        #[arg(long)]
        pool_slots: Option<u32>,
        /// Or a sparse memory ratio of the trace's capacity.
        #[arg(long, alias = "pool-ratio", default_value_t = 0.2)]
        sparse_memory_ratio: f64,
        /// Skip the warm-up windows.
        #[arg(long)]
        no_warmup: bool,
    },
}

fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<f64>()
        .map(|v| (v * mul as f64) as u64)
        .map_err(|_| format!("{s:?} is not a size (e.g. 8G, 512M)"))
}

fn parse_count_arg(s: &str) -> std::result::Result<u32, String> {
    match parse_count(s) {
        Some(0) => Err("must be at least 1".into()),
        Some(n) => Ok(n),
        None => Err(format!("{s:?} is not a count (e.g. 4096 or 4K)")),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // no subcommand: `decode` with its defaults (the main job)
    let command = cli.command.unwrap_or_else(|| {
        Cli::parse_from(["ess-wgpu", "decode"])
            .command
            .expect("decode parses")
    });
    match command {
        Command::Decode(args) => {
            let contexts = (!args.contexts.is_empty()).then(|| args.contexts.clone());
            let (mut opts, budget) = args.engine.options(None, true)?;
            if let Some(c) = contexts {
                opts.model.batch = c.len() as u32;
                opts.contexts = c;
                opts.validate()?;
            }
            let modes = match args.mode.as_str() {
                "both" => vec![Mode::Resident, Mode::Offload],
                "resident" => vec![Mode::Resident],
                "offload" => vec![Mode::Offload],
                m => {
                    return Err(ess_wgpu::Error::config(
                        "mode",
                        m,
                        "both, resident, offload",
                    ));
                }
            };
            let ctx = GpuContext::new()?;
            let profile = apply_profile(&ctx, args.engine.profile.as_deref(), &mut opts)?;
            let bar = progress_bar(opts.steps as u64);
            let report = ess_wgpu::decode::decode(
                &ctx,
                &opts,
                &modes,
                !args.no_verify,
                budget,
                |what, step| {
                    bar.set_message(what.to_string());
                    bar.set_position(step as u64);
                },
            );
            bar.finish_and_clear();
            let mut report = report?;
            report.profile = profile;
            print_report(&report, args.engine.json);
            if report.identical == Some(false) {
                return Err(ess_wgpu::Error::Gpu(
                    "resident and offload outputs differ".into(),
                ));
            }
        }
        Command::Sweep(args) => {
            let (mut opts, budget) = args.engine.options(None, false)?;
            let ctx = GpuContext::new()?;
            apply_profile(&ctx, args.engine.profile.as_deref(), &mut opts)?;
            let points = ess_wgpu::decode::sweep(
                &ctx,
                &opts,
                &args.contexts,
                &args.batches,
                args.max_batch,
                budget,
                args.admission,
                |what| eprintln!("... {what}"),
            )?;
            let io = |path: &std::path::Path, e| ess_wgpu::Error::Io {
                path: path.display().to_string(),
                source: e,
            };
            std::fs::create_dir_all(&args.out).map_err(|e| io(&args.out, e))?;
            let csv = args.out.join("sweep.csv");
            std::fs::write(&csv, ess_wgpu::decode::sweep_csv(&points)).map_err(|e| io(&csv, e))?;
            let svg = args.out.join("sweep.svg");
            let budget_text = if budget >= 1 << 30 {
                format!("{:.1} GiB", budget as f64 / (1u64 << 30) as f64)
            } else {
                format!("{:.0} MiB", budget as f64 / (1u64 << 20) as f64)
            };
            let title = format!(
                "{}: decode throughput at a {budget_text} device budget",
                opts.model.preset
            );
            std::fs::write(&svg, ess_wgpu::decode::sweep_svg(&points, &title))
                .map_err(|e| io(&svg, e))?;
            if args.engine.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&points).expect("points serialise")
                );
            } else {
                print_sweep(&points);
                println!("wrote {} and {}", csv.display(), svg.display());
            }
        }
        Command::Figures(args) => {
            let (mut base, budget) = args.engine.options(None, false)?;
            let ctx = GpuContext::new()?;
            let spec = args
                .engine
                .profile
                .clone()
                .unwrap_or_else(|| "paper".into());
            // the paper's profile unless asked otherwise (`--profile none`: one --locality)
            let profile = match spec.as_str() {
                "none" => Vec::new(),
                s => apply_profile(&ctx, Some(s), &mut base)?,
            };
            if profile.is_empty() {
                println!("locality: one ρ = {} for every layer", base.locality);
            } else {
                println!(
                    "locality profile {spec}: target overlap per layer, calibrated to ρ on this adapter"
                );
            }
            let fo = ess_wgpu::figures::FigureOptions {
                base,
                contexts: args.contexts.clone(),
                ratios: args.ratios.clone(),
                targets: profile.iter().map(|p| p.0).collect(),
            };
            use ess_wgpu::figures as f;
            let fig = match args.figure.as_str() {
                "similarity" => f::similarity(&ctx, &fo)?,
                "warmup" => f::warmup(&ctx, &fo)?,
                "misses-per-layer" => f::misses_per_layer(&ctx, &fo)?,
                "misses-vs-ratio" => f::misses_vs_ratio(&ctx, &fo)?,
                "batch-throughput" => f::batch_throughput(&ctx, &fo, &args.batches, budget)?,
                other => {
                    return Err(ess_wgpu::Error::config(
                        "figure",
                        other,
                        "similarity, warmup, misses-per-layer, misses-vs-ratio, batch-throughput",
                    ));
                }
            };
            let io = |path: &std::path::Path, e| ess_wgpu::Error::Io {
                path: path.display().to_string(),
                source: e,
            };
            std::fs::create_dir_all(&args.out).map_err(|e| io(&args.out, e))?;
            let csv = args.out.join(format!("{}.csv", fig.name.replace('-', "_")));
            std::fs::write(&csv, &fig.csv).map_err(|e| io(&csv, e))?;
            print!("{}", fig.table);
            println!("wrote {}", csv.display());
            for (name, svg) in &fig.svgs {
                let path = args.out.join(name);
                std::fs::write(&path, svg).map_err(|e| io(&path, e))?;
                println!("wrote {}", path.display());
            }
        }
        Command::Trace(TraceCommand::Record {
            engine,
            contexts,
            out,
        }) => {
            let (mut opts, budget) = engine.options(None, true)?;
            if !contexts.is_empty() {
                opts.model.batch = contexts.len() as u32;
                opts.contexts = contexts;
            }
            opts.record_trace = true;
            opts.validate()?;
            let ctx = GpuContext::new()?;
            apply_profile(&ctx, engine.profile.as_deref(), &mut opts)?;
            let mut e = ess_wgpu::engine::Engine::new(&ctx, &opts, budget)?;
            for _ in 0..opts.steps {
                e.step(&ctx)?;
            }
            e.finish(&ctx)?;
            let trace = e.trace.take().expect("recording");
            std::fs::write(&out, trace.to_text()).map_err(|e| ess_wgpu::Error::Io {
                path: out.display().to_string(),
                source: e,
            })?;
            let gpu: Vec<String> = e
                .stats
                .counters
                .iter()
                .map(|c| format!("{}/{}", c.hits, c.misses))
                .collect();
            println!(
                "wrote {} ({} records); GPU hits/misses per layer: {}",
                out.display(),
                trace.entries.len(),
                gpu.join(" ")
            );
        }
        Command::Trace(TraceCommand::Replay {
            file,
            pool_slots,
            sparse_memory_ratio,
            no_warmup,
        }) => {
            let trace = ess_wgpu::trace::Trace::read(&file)?;
            let slots = match pool_slots {
                Some(n) => n,
                None => PoolSize::Ratio(sparse_memory_ratio).slots(trace.capacity, trace.topk)?,
            };
            let r = trace.replay(slots, !no_warmup)?;
            println!(
                "{}: {} layers, {} sequences, top-k {}, capacity {}; pool {slots} slots; {} decode steps; warm-up misses {}",
                file.display(),
                trace.layers,
                trace.batch,
                trace.topk,
                trace.capacity,
                r.steps.len(),
                r.warmup_misses
            );
            println!(
                "{:>6} {:>10} {:>10} {:>9}",
                "layer", "hits", "misses", "hit rate"
            );
            for (l, (h, m)) in r
                .hits_per_layer()
                .iter()
                .zip(r.misses_per_layer())
                .enumerate()
            {
                println!(
                    "{l:>6} {h:>10} {m:>10} {:>8.1}%",
                    100.0 * *h as f64 / (h + m).max(1) as f64
                );
            }
        }
        Command::Info => {
            let ctx = GpuContext::new()?;
            println!("{}", ctx.report);
        }
        Command::Demo(args) => {
            let cfg = args.config(&args.preset)?;
            let ctx = GpuContext::new()?;
            println!("{}\n{cfg}", ctx.report);
            ess_wgpu::demo::run(&ctx, &cfg, &mut std::io::stdout())?;
        }
        Command::Bench(BenchCommand::Kernels {
            presets,
            batch,
            context,
            reps,
            overrides,
            json,
        }) => {
            let names = if presets.is_empty() {
                vec!["v32".to_string(), "small".to_string()]
            } else {
                presets
            };
            let args = PresetArgs {
                preset: String::new(),
                overrides,
            };
            let presets = names
                .iter()
                .map(|p| args.config(p))
                .collect::<Result<Vec<_>>>()?;
            let ctx = GpuContext::new()?;
            let opts = BenchOptions {
                presets,
                batches: batch,
                contexts: context,
                reps,
            };
            let report = bench::run(&ctx, &opts, |what| eprintln!("... {what}"))?;
            print_report(&report, json);
        }
        Command::Bench(BenchCommand::Transfer {
            row_bytes,
            rows,
            reps,
            json,
        }) => {
            let ctx = GpuContext::new()?;
            let opts = bench::transfer::TransferOptions {
                row_bytes,
                rows,
                reps,
            };
            let report = bench::transfer::run(&ctx, &opts, |what| eprintln!("... {what}"))?;
            print_report(&report, json);
        }
    }
    Ok(())
}

/// A report as JSON (`--json`) or as its table.
fn print_report<R: serde::Serialize + std::fmt::Display>(report: &R, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("report serialises")
        );
    } else {
        print!("{report}");
    }
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}")
            .expect("valid template"),
    );
    bar
}

fn print_sweep(points: &[ess_wgpu::decode::SweepPoint]) {
    println!(
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
    );
    let name = |p: &ess_wgpu::decode::SweepPoint| match (p.mode, p.admission) {
        (_, true) => "offload+admission".to_string(),
        (m, false) => m.to_string(),
    };
    for p in points {
        println!(
            "{:>8} {:<17} {:>6}{} {:>6} {:>14.1} {:>15.1} {:>9.1}% {:>8.1}% {:>11.1}",
            p.context,
            name(p),
            p.batch,
            if p.largest { "*" } else { " " },
            p.slots,
            p.tokens_per_s_gpu,
            p.tokens_per_s_wall,
            100.0 * p.tokens_per_s_wall / p.tokens_per_s_gpu,
            100.0 * p.hit_rate,
            p.device_bytes as f64 / 1048576.0
        );
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
                println!(
                    "context {c}: largest batch resident {} vs {label} {}; throughput gain {:+.1}%, hit rate {:.1}%",
                    r.batch,
                    o.batch,
                    100.0 * (o.tokens_per_s_gpu / r.tokens_per_s_gpu - 1.0),
                    100.0 * o.hit_rate
                );
            }
        }
    }
    println!("(* = the largest batch of the mode in the budget)");
}

/// With `--profile`: the per-layer target overlaps, calibrated to ρ on this adapter and set on
/// `opts`. Returns (target, ρ) per layer.
fn apply_profile(
    ctx: &GpuContext,
    spec: Option<&str>,
    opts: &mut EngineOptions,
) -> Result<Vec<(f32, f32)>> {
    let Some(spec) = spec else {
        return Ok(Vec::new());
    };
    let targets = if spec == "paper" {
        ess_wgpu::locality::paper_profile(opts.model.layers)
    } else {
        let text = std::fs::read_to_string(spec).map_err(|e| ess_wgpu::Error::Io {
            path: spec.into(),
            source: e,
        })?;
        ess_wgpu::locality::parse_profile(&text, spec)?
    };
    if targets.len() != opts.model.layers as usize {
        return Err(ess_wgpu::Error::config(
            "profile",
            format!("{} values", targets.len()),
            format!("one per layer ({})", opts.model.layers),
        ));
    }
    eprintln!("... calibrating overlap -> rho on this adapter");
    let table = ess_wgpu::locality::calibrate(ctx, opts, &ess_wgpu::locality::CALIBRATION_RHOS)?;
    let pairs: Vec<(f32, f32)> = targets
        .iter()
        .map(|&t| (t, ess_wgpu::locality::rho_for(t, &table)))
        .collect();
    opts.layer_locality = pairs.iter().map(|p| p.1).collect();
    Ok(pairs)
}
