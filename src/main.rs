//! The `ess-wgpu` command line. Runs nothing itself: it parses options, calls the library, and
//! prints (or writes JSON).

use clap::{Parser, Subcommand};
use ess_wgpu::bench::{self, BenchOptions};
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

fn parse_count_arg(s: &str) -> std::result::Result<u32, String> {
    parse_count(s).ok_or_else(|| format!("{s:?} is not a count (e.g. 4096 or 4K)"))
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
    let command = cli.command.unwrap_or(Command::Demo(PresetArgs {
        preset: "small".into(),
        overrides: vec![],
    }));
    match command {
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
