//! The `ess-wgpu` command line, one file per subcommand. It parses options, calls the library
//! and prints what the library's reports say (`Display`) or their JSON; no measurement or policy
//! lives here.

mod bench;
mod decode;
mod figures;
mod sweep;
mod trace;

use clap::{Parser, Subcommand, ValueEnum};
use ess_wgpu::cache::{PoolSize, TransferPath};
use ess_wgpu::engine::{EngineOptions, Mode};
use ess_wgpu::{GpuContext, Result, RunConfig, config::parse_count};

#[derive(Parser)]
#[command(
    name = "ess-wgpu",
    version,
    about = "Sparse MLA attention with an offloaded latent cache, on wgpu"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the adapter, its features and limits.
    Info,
    /// Decode a batch in resident and/or offload mode and report (the default command).
    Decode(decode::DecodeArgs),
    /// For a device budget, run each mode at its largest batch (and at --batches) per context;
    /// writes sweep.csv and sweep.svg.
    Sweep(sweep::SweepArgs),
    /// Regenerate one of the paper's observations (CSV + SVG + table); see docs/FIGURES.md.
    Figures(figures::FiguresArgs),
    /// Record top-k traces from a run, or replay a trace through the LRU policy alone.
    #[command(subcommand)]
    Trace(trace::TraceCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Run the command line (no subcommand: `decode` with its defaults, the main job).
pub fn run(cli: Cli) -> Result<()> {
    let command = cli.command.unwrap_or_else(|| {
        Cli::parse_from(["ess-wgpu", "decode"])
            .command
            .expect("decode parses")
    });
    match command {
        Command::Info => {
            let ctx = GpuContext::new()?;
            println!("{}", ctx.report);
            Ok(())
        }
        Command::Decode(args) => decode::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Figures(args) => figures::run(args),
        Command::Trace(cmd) => trace::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

/// The presets (`ess_wgpu::config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    Tiny,
    Small,
    V32,
}

impl PresetArg {
    pub fn name(self) -> &'static str {
        match self {
            PresetArg::Tiny => "tiny",
            PresetArg::Small => "small",
            PresetArg::V32 => "v32",
        }
    }
}

/// The transfer paths ([`TransferPath`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransferArg {
    /// Shaders read the missed rows from host RAM (FlashTrans).
    ZeroCopy,
    /// The CPU packs the rows, one upload, a scatter shader.
    Staging,
    /// One buffer copy per row (the naive baseline).
    PerRow,
}

impl From<TransferArg> for TransferPath {
    fn from(t: TransferArg) -> Self {
        match t {
            TransferArg::ZeroCopy => TransferPath::ZeroCopy,
            TransferArg::Staging => TransferPath::Staging,
            TransferArg::PerRow => TransferPath::PerRow,
        }
    }
}

/// A preset with `--set FIELD=VALUE` overrides, validated.
pub fn preset_config(preset: PresetArg, overrides: &[String]) -> Result<RunConfig> {
    let cfg = RunConfig::preset(preset.name())?.with_overrides(overrides)?;
    cfg.validate()?;
    Ok(cfg)
}

/// Options shared by `decode`, `sweep`, `figures` and `trace record`.
#[derive(clap::Args, Clone)]
pub struct EngineArgs {
    #[arg(long, value_enum, default_value_t = PresetArg::Small)]
    pub preset: PresetArg,
    /// Override a configuration field: --set batch=8 (repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub overrides: Vec<String>,
    /// Decode steps.
    #[arg(long, default_value_t = 32)]
    pub steps: u32,
    /// Pool slots per layer and sequence (≥ top-k + 1); overrides --sparse-memory-ratio.
    #[arg(long)]
    pub pool_slots: Option<u32>,
    /// Sparse memory ratio: pool / full latent cache of a sequence (the paper's knob).
    #[arg(long, alias = "pool-ratio", default_value_t = 0.2)]
    pub sparse_memory_ratio: f64,
    /// How missed rows move host → device.
    #[arg(long, value_enum, default_value_t = TransferArg::ZeroCopy)]
    pub transfer: TransferArg,
    /// Step-to-step similarity of the queries (0 independent … 1 identical).
    #[arg(long, default_value_t = 0.95)]
    pub locality: f32,
    /// Per-layer target overlap instead of one --locality: `paper` (shaped like the paper's
    /// Fig. 2) or a file (JSON array or one number per line); calibrated to ρ on this adapter.
    /// `figures` use `paper` unless given `none`.
    #[arg(long)]
    pub profile: Option<String>,
    /// Prefill windows seeding the pools (LRU warm-up); 0 turns it off.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// Device memory the engine may use, e.g. 2G (default: 2 GiB, a conservative guess: wgpu
    /// cannot tell how much memory the adapter has).
    #[arg(long, value_parser = parse_bytes)]
    pub device_budget: Option<u64>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Timestamp the stages of every N-th step, counted back from the last (1 = every step;
    /// timestamps slow the steps that carry them).
    #[arg(long, default_value_t = 16)]
    pub time_every: u32,
}

const DEFAULT_BUDGET: u64 = 2 << 30;

impl EngineArgs {
    pub fn options(
        &self,
        contexts: Option<Vec<u32>>,
        track_overlap: bool,
    ) -> Result<(EngineOptions, u64)> {
        let run = preset_config(self.preset, &self.overrides)?;
        let contexts = contexts.unwrap_or_else(|| vec![run.context; run.batch as usize]);
        let pool = match self.pool_slots {
            Some(n) => PoolSize::Slots(n),
            None => PoolSize::Ratio(self.sparse_memory_ratio),
        };
        let opts = EngineOptions {
            run,
            contexts,
            steps: self.steps,
            mode: Mode::Offload,
            pool,
            transfer: self.transfer.into(),
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

pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
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

pub fn parse_count_arg(s: &str) -> std::result::Result<u32, String> {
    match parse_count(s) {
        Some(0) => Err("must be at least 1".into()),
        Some(n) => Ok(n),
        None => Err(format!("{s:?} is not a count (e.g. 4096 or 4K)")),
    }
}

/// A report as JSON (`--json`) or as its table.
pub fn print_report<R: serde::Serialize + std::fmt::Display>(report: &R, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("report serialises")
        );
    } else {
        print!("{report}");
    }
}

pub fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}")
            .expect("valid template"),
    );
    bar
}

/// With `--profile`: the per-layer target overlaps, calibrated to ρ on this adapter and set on
/// `opts`. Returns (target, ρ) per layer.
pub fn apply_profile(
    ctx: &GpuContext,
    spec: Option<&str>,
    opts: &mut EngineOptions,
) -> Result<Vec<(f32, f32)>> {
    let Some(spec) = spec else {
        return Ok(Vec::new());
    };
    let targets = if spec == "paper" {
        ess_wgpu::locality::paper_profile(opts.run.layers)
    } else {
        let text = std::fs::read_to_string(spec).map_err(|e| ess_wgpu::Error::Io {
            path: spec.into(),
            source: e,
        })?;
        ess_wgpu::locality::parse_profile(&text, spec)?
    };
    if targets.len() != opts.run.layers as usize {
        return Err(ess_wgpu::Error::config(
            "profile",
            format!("{} values", targets.len()),
            format!("one per layer ({})", opts.run.layers),
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
