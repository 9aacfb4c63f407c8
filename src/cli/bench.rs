//! `ess-wgpu bench kernels | transfer`.

use super::{PresetArg, parse_count_arg, preset_config, print_report};
use clap::Subcommand;
use ess_wgpu::bench::{self, BenchOptions};
use ess_wgpu::{GpuContext, Result};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time each kernel against the roofline of the measured copy bandwidth and FMA rate.
    Kernels {
        /// Presets to run (repeatable); default: v32 and small.
        #[arg(long = "preset", value_enum)]
        presets: Vec<PresetArg>,
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

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Kernels {
            presets,
            batch,
            context,
            reps,
            overrides,
            json,
        } => {
            let names = if presets.is_empty() {
                vec![PresetArg::V32, PresetArg::Small]
            } else {
                presets
            };
            let presets = names
                .into_iter()
                .map(|p| preset_config(p, &overrides))
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
        BenchCommand::Transfer {
            row_bytes,
            rows,
            reps,
            json,
        } => {
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
