//! The `ess-wgpu` command line, one file per subcommand. It parses options, calls the library
//! and prints what the library's reports say (`Display`) or their JSON; no measurement or policy
//! lives here.

/// `println!` that returns an error instead of panicking (see [`out`]).
macro_rules! say {
    ($($t:tt)*) => { $crate::cli::out(format_args!("{}\n", format_args!($($t)*))) };
}

mod bench;
mod decode;
mod figures;
mod generate;
mod model;
mod simulate;
mod sweep;
mod trace;

use clap::{Parser, Subcommand, ValueEnum};
use ess_wgpu::cache::{PoolSize, TransferPath};
use ess_wgpu::engine::{EngineOptions, LayerSchedule, Mode, ModelRef, TransferOverlap};
use ess_wgpu::{Error, GpuContext, Result, RunConfig, limits};
use std::path::{Path, PathBuf};

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
    /// Print the adapter, its features and limits; with --preset, the caches' bytes per token
    /// and how many sequences fit a cache budget (the paper's arithmetic).
    Info(InfoArgs),
    /// Decode a batch of synthetic attention inputs in resident and/or offload mode and report.
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
    /// Generate greedily with a DeepSeek-V3.2 model (a checkpoint, or a built-in random one)
    /// through the engine, in resident and offload mode, compared bit for bit (the default
    /// command).
    Generate(generate::GenerateArgs),
    /// DeepSeek-V3.2 checkpoints in the Hugging Face layout: write a random one, or check one.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// The throughput simulator: a decode step from measured or roofline component costs, each
    /// mode's largest batch, the gain against batch, ratio and bus bandwidth, and (measured
    /// configs) the check against measured runs; CSV + SVG + tables. No GPU.
    Simulate(simulate::SimulateArgs),
    /// Serve the browser page (built by web/build.sh) on 127.0.0.1; see docs/WEB.md.
    Serve(ServeArgs),
}

/// Run the command line (no subcommand: `generate` with its defaults, the main job).
pub fn run(cli: Cli) -> Result<()> {
    let command = cli.command.unwrap_or_else(|| {
        Cli::parse_from(["ess-wgpu", "generate"])
            .command
            .expect("generate parses")
    });
    match command {
        Command::Info(args) => info(args),
        Command::Decode(args) => decode::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Figures(args) => figures::run(args),
        Command::Trace(cmd) => trace::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Generate(args) => generate::run(args),
        Command::Model(cmd) => model::run(cmd),
        Command::Simulate(args) => simulate::run(args),
        Command::Serve(args) => serve(args),
    }
}

#[derive(clap::Args, Clone)]
pub struct ServeArgs {
    /// The page's folder (web/, with its pkg/ built by web/build.sh).
    #[arg(default_value = "web")]
    dir: std::path::PathBuf,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

fn serve(args: ServeArgs) -> Result<()> {
    if !args.dir.join("pkg").join("web_bg.wasm").is_file() {
        return Err(ess_wgpu::Error::config(
            "serve",
            args.dir.join("pkg").display(),
            "the page's WebAssembly, built first: bash web/build.sh (docs/WEB.md)",
        ));
    }
    let server = ess_wgpu::serve::Server::bind(&args.dir, args.port)?;
    println!(
        "serving {} on http://127.0.0.1:{}/ (a browser with WebGPU; Ctrl-C stops)",
        args.dir.display(),
        server.port()
    );
    server.run();
    Ok(())
}

#[derive(clap::Args, Clone)]
pub struct InfoArgs {
    /// Also print this preset's cache sizes and the sequences that fit --cache-budget.
    #[arg(long, value_enum)]
    preset: Option<PresetArg>,
    /// Override a configuration field: --set latent_dtype=f16 (repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    overrides: Vec<String>,
    /// Bytes for the caches of every layer of the model, 1M ..= 64T (default: the paper's 82 × 10⁹
    /// bytes, an H200 less the weights and activations; BRIEF.md §5).
    #[arg(long, value_parser = budget_arg, default_value = "82000000000")]
    cache_budget: u64,
    /// Sparse memory ratio of the offload mode's pools, (0, 1].
    #[arg(long, default_value_t = 0.2, value_parser = ratio_arg, allow_negative_numbers = true)]
    sparse_memory_ratio: f64,
}

/// `info`: the adapter; with a preset, its caches' bytes per token and layer, and how many
/// sequences of its context fit the cache budget over all the model's layers, in each mode
/// ([`ess_wgpu::engine::MemoryPlan::sequences_in_cache_budget`]).
fn info(args: InfoArgs) -> Result<()> {
    if let Some(preset) = args.preset {
        let mut run = preset_config(preset, &args.overrides)?;
        run.layers = run.model.layers;
        say!("{run}")?;
        say!(
            "cache per token and layer: {} B latent row ({}) + {} B indexer key ({}) = {} B",
            run.row_bytes(),
            run.latent_dtype,
            run.key_bytes(),
            run.key_dtype,
            run.token_bytes()
        )?;
        let context = run.context;
        for (mode, what) in [
            (Mode::Resident, "resident".to_string()),
            (
                Mode::Offload,
                format!("offload at ratio {}", args.sparse_memory_ratio),
            ),
        ] {
            let opts = EngineOptions {
                mode,
                pool: PoolSize::Ratio(args.sparse_memory_ratio),
                ..EngineOptions::new(run.clone(), vec![context; run.batch as usize])
            };
            let n =
                ess_wgpu::engine::MemoryPlan::sequences_in_cache_budget(&opts, args.cache_budget)?;
            say!(
                "sequences of {context} tokens whose caches over {} layers fit {:.1} GB: {n} {what}",
                run.layers,
                args.cache_budget as f64 / 1e9
            )?;
        }
    }
    let ctx = GpuContext::new()?;
    say!("{}", ctx.report)
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
    /// With --model or --builtin the steps run that model (its dims replace the preset's;
    /// --set's batch, context and cache dtypes still apply) over hashed contexts.
    #[command(flatten)]
    pub model: generate::ModelArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Decode steps, 1 ..= 1024K (context + steps ≤ 1024K).
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = steps_arg)]
    pub steps: u32,
    /// Step-to-step similarity of the queries, 0 (independent) ..= 1 (identical).
    #[arg(long, default_value_t = 0.95, value_parser = locality_arg, allow_negative_numbers = true)]
    pub locality: f32,
    /// Per-layer target overlap instead of one --locality: `paper` (shaped like the paper's
    /// Fig. 2) or a file (JSON array or one number per line); calibrated to ρ on this adapter.
    /// `figures` use `paper` unless given `none`.
    #[arg(long)]
    pub profile: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Timestamp the stages of every N-th step, counted back from the last, 1 ..= 1024K (1 = every
    /// step; timestamps slow the steps that carry them).
    #[arg(long, default_value_t = 16, allow_negative_numbers = true, value_parser = time_every_arg)]
    pub time_every: u32,
    #[command(flatten)]
    pub overlap: OverlapArgs,
}

/// How transfers overlap compute: options of every command that runs the engine.
#[derive(clap::Args, Clone)]
pub struct OverlapArgs {
    /// How transfers overlap compute (offload, zero-copy): none; da (the misses gathered inside
    /// sparse MLA's scoring of the hits); dba (the batch in 2 chunks, each chunk's gather inside
    /// the next one's indexer dispatch); dba:N (N chunks, 1 ..= 64); layerwise:FILE (a schedule
    /// per layer from a miss profile, see `decode --miss-profile`). dba gives none's outputs bit
    /// for bit, da within the tolerance of a changed summation order.
    #[arg(long, default_value = "none")]
    pub overlap: String,
    /// layerwise: the schedules' step times against misses, measured on this GPU (`figures
    /// overlap`'s overlap.csv), from which each layer's chunks are chosen.
    #[arg(long)]
    pub overlap_table: Option<PathBuf>,
}

const DEFAULT_BUDGET: u64 = 2 << 30;

/// The offloaded cache's pool, its transfers and warm-up, and the device budget: options of
/// every command that runs the engine (`decode`, `sweep`, `figures`, `trace record`,
/// `generate`).
#[derive(clap::Args, Clone)]
pub struct CacheArgs {
    /// Pool slots per layer and sequence, top-k + 1 ..= 16384; overrides --sparse-memory-ratio
    /// (offload only).
    #[arg(long, allow_negative_numbers = true, value_parser = slots_arg)]
    pub pool_slots: Option<u32>,
    /// Sparse memory ratio: pool / full latent cache of a sequence (the paper's knob), (0, 1].
    #[arg(long, alias = "pool-ratio", default_value_t = 0.2, value_parser = ratio_arg, allow_negative_numbers = true)]
    pub sparse_memory_ratio: f64,
    /// How missed rows move host → device.
    #[arg(long, value_enum, default_value_t = TransferArg::ZeroCopy)]
    pub transfer: TransferArg,
    /// Prefill windows seeding the pools (LRU warm-up), 0 ..= 64; 0 turns it off.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = warmup_arg)]
    pub warmup: u32,
    /// Device memory the engine may use, 1M ..= 64T, e.g. 2G (default: 2 GiB, a conservative
    /// guess: wgpu cannot tell how much memory the adapter has).
    #[arg(long, value_parser = budget_arg, allow_negative_numbers = true)]
    pub device_budget: Option<u64>,
}

impl CacheArgs {
    /// `--pool-slots`, else the `--sparse-memory-ratio` pool.
    pub fn pool(&self) -> PoolSize {
        match self.pool_slots {
            Some(n) => PoolSize::Slots(n),
            None => PoolSize::Ratio(self.sparse_memory_ratio),
        }
    }

    /// `--device-budget`, else 2 GiB.
    pub fn budget(&self) -> u64 {
        self.device_budget.unwrap_or(DEFAULT_BUDGET)
    }
}

impl OverlapArgs {
    /// `--overlap`, with a layer-wise choice made from its miss profile and printed per layer.
    pub fn transfer_overlap(&self, (layers, batch): (u32, u32)) -> Result<TransferOverlap> {
        let Some(file) = self.overlap.trim().strip_prefix("layerwise:") else {
            return TransferOverlap::parse(&self.overlap);
        };
        let misses = ess_wgpu::engine::chunks::read_miss_profile(std::path::Path::new(file))?;
        if misses.len() != layers as usize {
            return Err(ess_wgpu::Error::config(
                "miss profile",
                format!("{} layers in {file}", misses.len()),
                format!("one per layer of the run ({layers})"),
            ));
        }
        let table = match &self.overlap_table {
            Some(t) => ess_wgpu::engine::chunks::read_overlap_table(t)?,
            None => Vec::new(),
        };
        let other: Vec<u32> = table.iter().filter_map(|m| m.batch).collect();
        if other.iter().any(|&b| b != batch) {
            eprintln!(
                "warning: the overlap table was measured at batch {}, this run has batch {batch}: \
                 the schedules' costs depend on the batch (docs/PERF.md)",
                other[0]
            );
        }
        let chosen: Vec<LayerSchedule> = misses
            .iter()
            .map(|&m| ess_wgpu::engine::choose_schedule(m, &table))
            .collect();
        match &self.overlap_table {
            Some(t) => eprintln!(
                "layer-wise overlap from {file}, schedules measured in {}:",
                t.display()
            ),
            None => eprintln!(
                "layer-wise overlap from {file}, no --overlap-table: serial everywhere (the \
                 H200's measurements, docs/PERF.md)"
            ),
        }
        eprintln!("{:>6} {:>16} {:>9}", "layer", "misses a seq.", "schedule");
        for (l, (m, c)) in misses.iter().zip(&chosen).enumerate() {
            eprintln!("{l:>6} {m:>16.1} {:>9}", c.to_string());
        }
        Ok(TransferOverlap::Layerwise(chosen))
    }
}

impl EngineArgs {
    pub fn options(
        &self,
        contexts: Option<Vec<u32>>,
        track_overlap: bool,
    ) -> Result<(EngineOptions, u64)> {
        let mut run = preset_config(self.preset, &self.overrides)?;
        let model = self
            .model
            .weights(self.seed, None)?
            .map(|(w, what)| ModelRef {
                weights: Box::leak(Box::new(w)),
                what,
            });
        if let Some(m) = &model {
            // the model's dims; the preset's (or --set's) batch, context and cache dtypes
            let r = ess_wgpu::model::generate::run_config(
                m.weights,
                run.batch,
                run.latent_dtype,
                run.key_dtype,
            );
            run = RunConfig {
                context: run.context,
                ..r
            };
        }
        let run_layers = (run.layers, run.batch);
        let contexts = contexts.unwrap_or_else(|| vec![run.context; run.batch as usize]);
        let pool = self.cache.pool();
        // each command sets the mode it runs (resident here); the pool is checked where
        // offload runs
        let opts = EngineOptions {
            steps: self.steps,
            pool,
            transfer: self.cache.transfer.into(),
            locality: self.locality,
            warmup_windows: self.cache.warmup,
            seed: self.seed,
            track_overlap,
            time_every: self.time_every,
            transfer_overlap: self.overlap.transfer_overlap(run_layers)?,
            model,
            ..EngineOptions::new(run, contexts)
        };
        opts.validate()?;
        Ok((opts, self.cache.budget()))
    }
}

// Parse-time checks: each concept's range is `ess_wgpu::limits`' (the library checks the same
// values again where it takes them, with the same message).

fn arg<T>(r: Result<T>) -> std::result::Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn number(field: &str, s: &str) -> std::result::Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| format!("{field} = {}: not a number", limits::shown(s)))
}

pub fn steps_arg(s: &str) -> std::result::Result<u32, String> {
    arg(limits::count("steps", s, 1, limits::MAX_STEPS))
}

pub fn context_arg(s: &str) -> std::result::Result<u32, String> {
    arg(limits::count("context", s, 1, limits::MAX_CONTEXT))
}

pub fn batch_arg(s: &str) -> std::result::Result<u32, String> {
    arg(limits::count("batch", s, 1, limits::MAX_BATCH))
}

pub fn warmup_arg(s: &str) -> std::result::Result<u32, String> {
    arg(limits::count("warmup", s, 0, limits::MAX_WARMUP))
}

pub fn reps_arg(s: &str) -> std::result::Result<u32, String> {
    arg(limits::count("reps", s, 1, limits::MAX_REPS))
}

pub fn time_every_arg(s: &str) -> std::result::Result<u32, String> {
    arg(limits::count("time-every", s, 1, limits::MAX_STEPS))
}

pub fn slots_arg(s: &str) -> std::result::Result<u32, String> {
    arg(limits::count(
        "pool-slots",
        s,
        2,
        ess_wgpu::kernels::resolve::MAX_SLOTS,
    ))
}

pub fn window_arg(s: &str) -> std::result::Result<u32, String> {
    arg(limits::count("admission", s, 1, 1024))
}

pub fn rows_arg(s: &str) -> std::result::Result<u32, String> {
    arg(limits::count("rows", s, 1, limits::MAX_TRANSFER_ROWS))
}

pub fn row_bytes_arg(s: &str) -> std::result::Result<u64, String> {
    let max = limits::MAX_ROW_BYTES as u32;
    let v = arg(limits::count("row-bytes", s, 16, max))?;
    if !v.is_multiple_of(16) {
        return Err(format!(
            "row-bytes = {v}: allowed 16 ..= {max}, a multiple of 16"
        ));
    }
    Ok(v as u64)
}

pub fn ratio_arg(s: &str) -> std::result::Result<f64, String> {
    arg(limits::ratio(
        "sparse-memory-ratio",
        number("sparse-memory-ratio", s)?,
    ))
}

pub fn locality_arg(s: &str) -> std::result::Result<f32, String> {
    Ok(arg(limits::unit("locality", number("locality", s)?))? as f32)
}

pub fn budget_arg(s: &str) -> std::result::Result<u64, String> {
    arg(limits::budget("device-budget", s))
}

/// `doc` with the field FIELD set from `kv` = `FIELD=VALUE`: FIELD dotted, a list's element by
/// its index (`scenarios.0.context`); VALUE a number, true/false, JSON, or else a word. `flag`
/// names the option in errors, `what` the document. Checking the result is the caller's.
pub(crate) fn with_json_field<T: serde::Serialize + serde::de::DeserializeOwned>(
    doc: &T,
    kv: &str,
    flag: &str,
    what: &str,
) -> Result<T> {
    let bad = |why: String| Error::config(flag, kv, why);
    let (path, v) = kv
        .split_once('=')
        .ok_or_else(|| bad("FIELD=VALUE".into()))?;
    let mut json = serde_json::to_value(doc).map_err(|e| bad(e.to_string()))?;
    let mut field = &mut json;
    for key in path.trim().split('.') {
        let next = match key.parse::<usize>() {
            Ok(i) if field.is_array() => field.get_mut(i),
            _ => field.get_mut(key),
        };
        field = next.ok_or_else(|| bad(format!("a field of {what} ({key} is not one)")))?;
    }
    *field = serde_json::from_str(v.trim()).unwrap_or(serde_json::Value::String(v.into()));
    serde_json::from_value(json).map_err(|e| bad(e.to_string()))
}

/// The folder a command will write into, created and checked writable before any GPU work, so
/// that a bad path fails in a second, not after the run.
pub fn output_dir(dir: &Path) -> Result<()> {
    let io = |e| Error::Io {
        path: dir.display().to_string(),
        source: e,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Io {
            path: dir.display().to_string(),
            source: std::io::Error::other("a file is in the way of the output folder"),
        });
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let probe = dir.join(format!(".ess-wgpu-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(io)?;
    std::fs::remove_file(&probe).map_err(io)
}

/// The file a command will write: its folder checked as [`output_dir`], and not a folder itself.
pub fn output_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::other("is a folder; give a file name"),
        });
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    output_dir(parent)
}

/// Write every file or none: each goes to a temporary file beside it first, and only when all
/// are written are they renamed into place. A full disk or a bad path leaves earlier files as
/// they were.
pub fn write_all_or_none(files: &[(PathBuf, Vec<u8>)]) -> Result<()> {
    let mut written: Vec<(PathBuf, &PathBuf)> = Vec::new();
    let result = (|| {
        for (path, bytes) in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
            let io = |e| Error::Io {
                path: path.display().to_string(),
                source: e,
            };
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            written.push((tmp, path));
            use std::io::Write;
            f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io)?;
        }
        for (tmp, path) in &written {
            std::fs::rename(tmp, path).map_err(|e| Error::Io {
                path: path.display().to_string(),
                source: e,
            })?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (tmp, _) in &written {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result
}

/// Write to stdout: a closed pipe or a full disk is an error (exit status 1), never a panic.
pub fn out(args: std::fmt::Arguments) -> Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_fmt(args)
        .and_then(|_| o.flush())
        .map_err(|e| Error::Io {
            path: "stdout".into(),
            source: e,
        })
}

/// A report as JSON (`--json`) or as its table.
pub fn print_report<R: serde::Serialize + std::fmt::Display>(report: &R, json: bool) -> Result<()> {
    if json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| Error::Gpu(format!("the report does not serialise: {e}")))?;
        say!("{text}")
    } else {
        out(format_args!("{report}"))
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
    if opts.model.is_some() {
        return Err(ess_wgpu::Error::config(
            "profile",
            spec,
            "none with --model or --builtin (a profile shapes synthetic queries; a model's \
             queries are its own)",
        ));
    }
    let targets = if spec == "paper" {
        ess_wgpu::locality::paper_profile(opts.run.layers)
    } else {
        let text = std::fs::read_to_string(spec).map_err(|e| ess_wgpu::Error::Io {
            path: spec.into(),
            source: e,
        })?;
        ess_wgpu::locality::parse_profile(&text, spec)?
    };
    eprintln!("... calibrating overlap -> rho on this adapter");
    pollster::block_on(ess_wgpu::locality::apply_targets(ctx, opts, &targets))
}
